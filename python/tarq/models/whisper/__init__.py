"""Whisper: loaders (HF, CTranslate2, aliases), calibration adapter, tokenizer repairs. ``FAMILY`` is the registry entry."""
from .family import WhisperFamily

FAMILY = WhisperFamily()

__all__ = ["FAMILY", "WhisperFamily"]
