"""A bit-exact NumPy clone of ggml's reference quantizers (``quantize_row_*_ref`` in ggml-quants.c).

whisper.cpp's ``quantize`` tool reads the F16 model, widens every 2-D weight to float32 and calls
``ggml_quantize_chunk`` without an importance matrix, which for these legacy types is the reference
row quantizer. Reproducing it here gives the "whisper.cpp q4_0" baseline (codes + fp16 scales, or
the exact bytes) without the C++ binary. Every step mirrors the C float32 arithmetic:

* Q4_0: ``max`` = the signed element of largest magnitude (first one on ties); ``d = max / -8``;
  ``id = 1/d`` (0 if d == 0) from the *unrounded* f32 d; ``q = min(15, (int8)(x*id + 8.5f))`` with
  ``x*id`` and ``+ 8.5f`` rounded separately (the C is compiled without FMA contraction here, which
  the ctypes oracle tests confirm) and the cast truncating toward zero; stored ``d`` = fp16(d).
* Q5_0: the same with ``max / -16``, ``+ 16.5f`` and ``min(31, ...)``.
* Q4_1 / Q5_1: ``d = (max - min) / 15`` (31), ``m = min``, ``q = min(15, (int8)((x - min)*id + 0.5f))``.
* Q8_0: ``d = amax / 127``, ``q = roundf(x*id)`` (round half away from zero).
"""
from __future__ import annotations

import numpy as np

from .ggml_blocks import QK, BlockData, QuantType, get_type

_F = np.float32


def _blocks(x: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D [rows, n_per_row] array, got shape {x.shape}")
    if x.shape[1] % QK:
        raise ValueError(f"row length {x.shape[1]} is not a multiple of {QK}")
    return np.ascontiguousarray(x, dtype=_F).reshape(-1, QK), x.shape


def _inverse(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d != 0, _F(1.0) / d, _F(0.0)).astype(_F)


def _signed_max(xb: np.ndarray) -> np.ndarray:
    # `if (amax < fabsf(v))` keeps the first element of largest magnitude; argmax does the same
    idx = np.argmax(np.abs(xb), axis=1)
    return xb[np.arange(xb.shape[0]), idx]


def _trunc_to_int(v: np.ndarray) -> np.ndarray:
    """C's float -> int8_t conversion for the in-range values that occur here: truncate toward zero."""
    return np.trunc(v).astype(np.int16)


def _symmetric(xb: np.ndarray, divisor: float, half: int) -> tuple[np.ndarray, np.ndarray]:
    d = (_signed_max(xb) / _F(divisor)).astype(_F)
    idx = _inverse(d)
    v = (xb * idx[:, None]).astype(_F) + _F(half + 0.5)
    q = np.minimum(2 * half - 1, _trunc_to_int(v)) - half
    return q, d


def _asymmetric(xb: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mn = xb.min(axis=1)
    mx = xb.max(axis=1)
    d = ((mx - mn) / _F(levels)).astype(_F)
    idx = _inverse(d)
    v = ((xb - mn[:, None]).astype(_F) * idx[:, None]).astype(_F) + _F(0.5)
    q = np.minimum(levels, _trunc_to_int(v))
    return q, d, mn


def _roundf(v: np.ndarray) -> np.ndarray:
    # roundf: half away from zero; exact in float64 because |v| < 2^24 and v has a 24-bit significand
    v64 = v.astype(np.float64)
    return (np.sign(v64) * np.floor(np.abs(v64) + 0.5)).astype(np.int16)


def ggml_reference_quantize(qtype, x: np.ndarray) -> BlockData:
    """Quantize float32 rows exactly as ``ggml_quantize_chunk(qtype, x, ..., imatrix=NULL)``.

    Returns per-32-block codes (in the type's code range, see ggml_blocks) and fp16 d (and m).
    """
    t = get_type(qtype)
    if not isinstance(t, QuantType):
        raise ValueError(f"{t.name} is not a block-quantized type")
    xb, (rows, n) = _blocks(x)
    mins = None
    if t.name == "q4_0":
        q, d = _symmetric(xb, -8.0, 8)
    elif t.name == "q5_0":
        q, d = _symmetric(xb, -16.0, 16)
    elif t.name in ("q4_1", "q5_1"):
        q, d, mn = _asymmetric(xb, 15 if t.name == "q4_1" else 31)
        with np.errstate(over="ignore"):  # like ggml, |min| > 65504 becomes inf
            mins = mn.astype(np.float16).reshape(rows, n // QK)
    elif t.name == "q8_0":
        d = (np.abs(xb).max(axis=1) / _F(127.0)).astype(_F)
        q = _roundf((xb * _inverse(d)[:, None]).astype(_F))
    else:  # pragma: no cover - every QuantType is handled above
        raise ValueError(f"no reference quantizer for {t.name}")
    with np.errstate(over="ignore"):
        scales = d.astype(np.float16).reshape(rows, n // QK)
    return BlockData(q.astype(np.int8).reshape(rows, n), scales, mins)


def ggml_reference_quantize_bytes(qtype, x: np.ndarray) -> np.ndarray:
    """The bytes ggml would write: ``pack_blocks`` of :func:`ggml_reference_quantize`."""
    t = get_type(qtype)
    bd = ggml_reference_quantize(t, x)
    return t.pack(bd.codes, bd.scales, bd.mins)


def as_f16_source(w: np.ndarray) -> np.ndarray:
    """What ``quantize`` sees for a weight stored in an F16 file: fp16-rounded, widened to float32."""
    return np.asarray(w, dtype=np.float32).astype(np.float16).astype(np.float32)
