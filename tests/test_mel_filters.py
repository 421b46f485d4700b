"""The exported mel filter bank against an independent computation from the formula.

whisper.cpp reads the filters from the model file; openai/whisper's ``mel_filters.npz`` (which whisper.cpp's
converter copies) is ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=N)``: triangular filters on the Slaney mel
scale (linear below 1 kHz at 200/3 Hz per mel, logarithmic above with step ln(6.4)/27), area-normalised ("slaney"
norm: 2 / bandwidth). The oracle below implements those formulas directly in NumPy (float64); it shares no code with
the exporter, which takes the bank from transformers' WhisperFeatureExtractor.
"""
from __future__ import annotations

import numpy as np
import pytest

SR, N_FFT = 16000, 400


def slaney_hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def slaney_mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def slaney_filter_bank(n_mels: int) -> np.ndarray:
    fft_freqs = np.linspace(0, SR / 2, 1 + N_FFT // 2)
    mel_pts = slaney_mel_to_hz(np.linspace(slaney_hz_to_mel(0.0), slaney_hz_to_mel(SR / 2), n_mels + 2))
    bank = np.zeros((n_mels, fft_freqs.size))
    for i in range(n_mels):
        lo, mid, hi = mel_pts[i], mel_pts[i + 1], mel_pts[i + 2]
        rising = (fft_freqs - lo) / (mid - lo)
        falling = (hi - fft_freqs) / (hi - mid)
        bank[i] = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (hi - lo))
    return bank


def test_oracle_matches_hand_values():
    # 1 kHz is 15 mels on the Slaney scale, 6.4 kHz is 15 + 27 = 42
    assert slaney_hz_to_mel(1000.0) == pytest.approx(15.0)
    assert slaney_hz_to_mel(6400.0) == pytest.approx(42.0)
    assert slaney_mel_to_hz(slaney_hz_to_mel(3210.0)) == pytest.approx(3210.0)
    bank = slaney_filter_bank(80)
    widths = np.diff(slaney_mel_to_hz(np.linspace(0, slaney_hz_to_mel(8000.0), 82)))
    assert bank.shape == (80, 201) and np.all(bank >= 0)
    # area normalisation: each continuous triangle has area 1 (peak 2/(hi-lo) times half the base)
    assert np.allclose(0.5 * (widths[:-1] + widths[1:]) * (2.0 / (widths[:-1] + widths[1:])), 1.0)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_exported_filters_match_the_formula(n_mels):
    from tarq.export.whisper_assets import mel_filters

    ours = mel_filters(n_mels)
    want = slaney_filter_bank(n_mels)
    assert ours.shape == want.shape and ours.dtype == np.float32
    # the file stores float32: every value within one float32 step of the float64 formula (measured: identical
    # after rounding to float32), and the same support, bin for bin
    want32 = want.astype(np.float32)
    assert np.all(np.abs(ours - want32) <= np.spacing(np.abs(want32))), np.max(np.abs(ours - want32))
    assert np.array_equal(ours > 0, want > 1e-9)
