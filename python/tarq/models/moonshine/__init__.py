"""Moonshine: loader, calibration adapter, torch decoder and CrispASR's GGUF dialect. ``FAMILY`` is the registry entry."""
from .family import MoonshineFamily

FAMILY = MoonshineFamily()

__all__ = ["FAMILY", "MoonshineFamily"]
