"""Qwen3-ASR: loader, calibration adapter, torch decoder and the two GGUF dialects. ``FAMILY`` is the registry entry."""
from .family import Qwen3AsrFamily

FAMILY = Qwen3AsrFamily()

__all__ = ["FAMILY", "Qwen3AsrFamily"]
