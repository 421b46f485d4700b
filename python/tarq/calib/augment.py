"""Acoustic augmentation of the calibration audio: seeded copies of every calibration utterance with another
speaking rate, a synthetic room, telephone band limiting and coloured noise (docs/methods.md §2 "Augmented copies").

Why (issue 15, benchmarks/README.md "Held-out layer error"): GPTQ's encoder weights fit the calibration *voices*.
Their error relative to RTN is 0.46 on every TTS set (the calibration's own voices) and 0.75 on real voice acting;
the statistics describe eight TTS voices in clean conditions. Speed perturbation (Ko et al., 2015: a resampling that
moves pitch and formants together, like another vocal tract), reverberation and noise widen what the encoder's
second moments describe without any new recording. The text, and with it every decoder tag, is the original's.

Each copy draws from its own generator, ``numpy.random.default_rng([seed, copy, index])``, so a copy does not
depend on how many others are made, and the same seed gives the same audio on every machine.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from ..data.audio import SAMPLE_RATE
KINDS = ("speed", "reverb", "band", "noise")   # applied in this order
SPEED_FACTORS = (0.85, 0.9, 0.95, 1.05, 1.1, 1.15)
REVERB_PROBABILITY, RT60_RANGE_S = 0.5, (0.15, 0.6)
BAND_PROBABILITY, TELEPHONE_BAND_HZ = 0.3, (300.0, 3400.0)
NOISE_PROBABILITY, SNR_RANGE_DB, NOISE_COLORS = 0.8, (5.0, 25.0), ("white", "pink", "brown")
PEAK_RANGE = (0.3, 0.95)


def parse_augment(spec: str) -> tuple[str, ...]:
    """``--augment`` value -> the augmentations in application order: "none", "all", or a comma list of KINDS."""
    spec = (spec or "none").strip().lower()
    if spec == "none":
        return ()
    if spec == "all":
        return KINDS
    kinds = [k.strip() for k in spec.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"--augment {spec!r}: expected none, all, or a comma list of {', '.join(KINDS)}")
    return tuple(k for k in KINDS if k in kinds)


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster: resample by 1/factor and keep the sample rate (pitch moves with it)."""
    from ..data.resample import resample_poly

    ratio = Fraction(1.0 / factor).limit_denominator(40)
    return resample_poly(np.asarray(x, np.float64), ratio.numerator, ratio.denominator).astype(np.float64)


def synthetic_rir(rng: np.random.Generator, rt60_s: float) -> np.ndarray:
    """A room impulse response: the direct path, then Gaussian reflections under an envelope that falls 60 dB in
    ``rt60_s`` seconds (exp(−6.9 t / RT60) in amplitude, ln(10³) ≈ 6.9)."""
    n = max(int(rt60_s * SAMPLE_RATE), 1)
    t = np.arange(n) / SAMPLE_RATE
    h = rng.standard_normal(n) * np.exp(-np.log(1000.0) * t / rt60_s) * 0.3
    h[0] = 1.0
    return h


def fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Full linear convolution of x and h (length len(x) + len(h) − 1) through one zero-padded real FFT."""
    n = len(x) + len(h) - 1
    m = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, m) * np.fft.rfft(h, m), m)[:n]


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` through ``rir``, keeping half the tail, at ``x``'s RMS level."""
    y = fft_convolve(x, rir)[: len(x) + len(rir) // 2]
    return y * (np.sqrt(np.mean(x ** 2)) / (np.sqrt(np.mean(y ** 2)) + 1e-12))


def band_limit(x: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """Remove every frequency outside [low_hz, high_hz] (an ideal FFT mask)."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1.0 / SAMPLE_RATE)
    spec[(f < low_hz) | (f > high_hz)] = 0.0
    return np.fft.irfft(spec, len(x))


def colored_noise(rng: np.random.Generator, n: int, color: str) -> np.ndarray:
    """White, pink (power ∝ 1/f) or brown (∝ 1/f²) noise of ``n`` samples, shaped in the frequency domain."""
    w = rng.standard_normal(n)
    if color == "white":
        return w
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    f[0] = f[1] if n > 2 else 1.0
    return np.fft.irfft(np.fft.rfft(w) / (np.sqrt(f) if color == "pink" else f), n)


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """x + noise scaled so that 10·log10(Σx² / Σnoise²) = snr_db exactly."""
    scale = np.sqrt(np.sum(x ** 2) / (np.sum(noise ** 2) * 10.0 ** (snr_db / 10.0)))
    return x + noise * scale


def augment_audio(x: np.ndarray, rng: np.random.Generator, kinds: tuple[str, ...]
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """One augmented copy of ``x`` (float, 16 kHz) and a record of what was drawn."""
    y = np.asarray(x, np.float64)
    record: dict[str, Any] = {}
    if "speed" in kinds:
        record["speed"] = float(rng.choice(SPEED_FACTORS))
        y = speed_perturb(y, record["speed"])
    if "reverb" in kinds and rng.random() < REVERB_PROBABILITY:
        record["rt60_s"] = round(float(rng.uniform(*RT60_RANGE_S)), 3)
        y = reverberate(y, synthetic_rir(rng, record["rt60_s"]))
    if "band" in kinds and rng.random() < BAND_PROBABILITY:
        record["band_hz"] = list(TELEPHONE_BAND_HZ)
        y = band_limit(y, *TELEPHONE_BAND_HZ)
    if "noise" in kinds and rng.random() < NOISE_PROBABILITY:
        record["noise"] = str(rng.choice(NOISE_COLORS))
        record["snr_db"] = round(float(rng.uniform(*SNR_RANGE_DB)), 1)
        y = add_noise(y, colored_noise(rng, len(y), record["noise"]), record["snr_db"])
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > 0:   # a random level: Whisper's log-mel normalisation is per utterance, but not level-free
        y = y / peak * rng.uniform(*PEAK_RANGE)
    return y.astype(np.float32), record


def augmented_copies(audios: list[np.ndarray], kinds: tuple[str, ...], copies: int, seed: int
                     ) -> list[tuple[int, int, np.ndarray, dict[str, Any]]]:
    """[(copy, index of the source utterance, audio, record)] for copies 1..``copies`` of every utterance, copy by
    copy (all first copies, then all second copies)."""
    out = []
    for c in range(copies):
        for i, x in enumerate(audios):
            y, record = augment_audio(x, np.random.default_rng([seed, c, i]), kinds)
            out.append((c + 1, i, y, record))
    return out
