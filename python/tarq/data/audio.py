"""Audio decoding: any soundfile-readable file -> float32 mono at 16 kHz."""
from __future__ import annotations

import logging
import os
from math import gcd
from pathlib import Path

import numpy as np

from .resample import resample_poly

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


def _soundfile():
    import soundfile as sf

    return sf


def audio_info(path: str | os.PathLike) -> tuple[int, float]:
    """(sample rate, duration in seconds) from the file header; clear errors naming the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: audio file not found")
    sf = _soundfile()
    try:
        info = sf.info(str(p))
    except Exception as e:  # soundfile.LibsndfileError / RuntimeError / TypeError on garbage
        raise ValueError(f"{p}: unreadable or corrupt audio ({e})") from None
    return int(info.samplerate), float(info.frames) / float(info.samplerate or 1)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode ``path`` to a 1-D float32 array at ``sample_rate`` (channels averaged; resampled if needed)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: audio file not found")
    sf = _soundfile()
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:
        raise ValueError(f"{p}: unreadable or corrupt audio ({e})") from None
    if data.shape[0] == 0:
        raise ValueError(f"{p}: audio file contains no samples")
    if not np.isfinite(data).all():   # float WAV/FLAC can hold them; every decoder would turn them into garbage
        raise ValueError(f"{p}: audio contains NaN or Inf samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sr != sample_rate:
        log.debug("%s: resampling %d Hz -> %d Hz", p, sr, sample_rate)
        g = gcd(sample_rate, int(sr))
        mono = resample_poly(mono, sample_rate // g, int(sr) // g)
    return np.ascontiguousarray(mono, dtype=np.float32)
