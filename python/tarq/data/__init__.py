"""Speech data: ``Utterance``, ``load_dataset`` (manifest JSONL/TSV, LibriSpeech, audio folder), ``load_audio``."""
from .audio import SAMPLE_RATE, load_audio
from .datasets import Utterance, dataset_name, load_dataset, require_transcripts

__all__ = ["SAMPLE_RATE", "Utterance", "dataset_name", "load_audio", "load_dataset", "require_transcripts"]
