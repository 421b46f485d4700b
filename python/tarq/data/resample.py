"""Rational-ratio polyphase resampling with a Kaiser-windowed sinc low-pass (NumPy only).

For ``y = resample_poly(x, up, down)``: conceptually zero-stuff x by ``up``, low-pass at
``min(1/up, 1/down)`` of the upsampled Nyquist rate, keep every ``down``-th sample. The filter is the
windowed-sinc design of scipy.signal.firwin (Kaiser window, beta 5, half-length 10 * max(up, down)),
scaled by ``up`` to keep unit gain; the output has ``ceil(len(x) * up / down)`` samples and zero delay.

Only the taps that touch non-zero (original) samples are evaluated: output n sits at upsampled position
t = n * down + half_len and needs x[t // up - r] * h[t % up + r * up] for r = 0, 1, ...
"""
from __future__ import annotations

from math import gcd

import numpy as np

KAISER_BETA = 5.0
HALF_LEN_PER_RATE = 10


def design_lowpass(up: int, down: int) -> np.ndarray:
    """Kaiser-windowed sinc, length 2 * half_len + 1, cutoff 1 / max(up, down) (of Nyquist), DC gain ``up``."""
    max_rate = max(up, down)
    cutoff = 1.0 / max_rate
    half_len = HALF_LEN_PER_RATE * max_rate
    m = np.arange(-half_len, half_len + 1, dtype=np.float64)
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(2 * half_len + 1, KAISER_BETA)
    return h * (up / h.sum())


def resample_poly(x: np.ndarray, up: int, down: int, chunk: int = 1 << 15) -> np.ndarray:
    """Resample the 1-D signal ``x`` by ``up / down``; returns float32."""
    if x.ndim != 1:
        raise ValueError(f"resample_poly expects a 1-D signal, got shape {x.shape}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be positive integers, got {up}/{down}")
    g = gcd(up, down)
    up, down = up // g, down // g
    x = np.asarray(x, dtype=np.float64)
    if up == down == 1:
        return x.astype(np.float32)
    h = design_lowpass(up, down)
    half_len = (len(h) - 1) // 2
    n_taps = -(-len(h) // up)                      # taps per polyphase branch
    h_pad = np.zeros(n_taps * up)
    h_pad[:len(h)] = h
    n_out = -(-len(x) * up // down)
    # Zero padding on the left covers x[j] for j < 0 (r up to n_taps - 1); on the right, t // up can exceed len(x).
    left = n_taps
    xp = np.concatenate([np.zeros(left), x, np.zeros(half_len // up + 2)])
    r = np.arange(n_taps)
    y = np.empty(n_out, dtype=np.float64)
    for s in range(0, n_out, chunk):
        n = np.arange(s, min(s + chunk, n_out))
        t = n * down + half_len
        j = t // up
        phase = t % up
        taps = h_pad[phase[:, None] + r[None, :] * up]             # [chunk, n_taps]
        samples = xp[left + j[:, None] - r[None, :]]               # [chunk, n_taps]
        y[s:s + len(n)] = np.einsum("ij,ij->i", taps, samples)
    return y.astype(np.float32)


def resample_reference(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Slow, literal definition (zero-stuff, full convolution, decimate) used to test ``resample_poly``."""
    g = gcd(up, down)
    up, down = up // g, down // g
    h = design_lowpass(up, down)
    half_len = (len(h) - 1) // 2
    stuffed = np.zeros(len(x) * up)
    stuffed[::up] = x
    full = np.convolve(stuffed, h)                 # full[t] = sum_k stuffed[t - k] h[k]
    n_out = -(-len(x) * up // down)
    idx = np.arange(n_out) * down + half_len
    out = np.zeros(n_out)
    ok = idx < len(full)
    out[ok] = full[idx[ok]]
    return out.astype(np.float32)
