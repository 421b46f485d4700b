"""Speech data: ``Utterance``, ``load_dataset`` (manifest JSONL/TSV, LibriSpeech, audio folder), ``load_audio``."""
from .audio import SAMPLE_RATE, load_audio
from .datasets import Utterance, load_dataset

__all__ = ["SAMPLE_RATE", "Utterance", "load_audio", "load_dataset"]
