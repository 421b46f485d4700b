"""Lossless moves of quantized data into a wider container type (e.g. Q4_0 codes into Q5_0, Q8_0 or Q4_1).

Only symmetric sources (value = d * q: Q4_0, Q5_0, Q8_0) move, into a target whose code range holds theirs:
Q4_0/Q5_0/Q8_0 keep d and q; Q4_1/Q5_1 store d and m = -offset * d with code q + offset. The result is checked:
the target's to_float must equal the source's bit for bit (up to the sign of zero), else ValueError.
"""
from __future__ import annotations

import numpy as np

from .base import get_type

_SYMMETRIC = ("q4_0", "q5_0", "q8_0")
_OFFSET = {"q4_1": 8, "q5_1": 16}


def convert_exact(src, data: np.ndarray, n_per_row: int, target) -> np.ndarray:
    src, target = get_type(src), get_type(target)
    if src is target:
        return np.asarray(data)
    if src.name not in _SYMMETRIC or target.name not in (*_SYMMETRIC, *_OFFSET) or target.block_size != 32:
        raise ValueError(f"{src.name} data cannot be stored exactly as {target.name}")
    codes, params = src.decode(data, n_per_row)
    off = _OFFSET.get(target.name, 0)
    q = codes.astype(np.int16) + off
    if q.min(initial=0) < target.code_min or q.max(initial=0) > target.code_max:
        raise ValueError(f"{src.name} codes do not fit {target.name}'s range [{target.code_min}, {target.code_max}]")
    out = np.zeros(params.shape, dtype=target.param_dtype)
    out["d"] = params["d"]
    if off:
        with np.errstate(over="ignore"):
            out["m"] = (params["d"].astype(np.float32) * np.float32(-off)).astype(np.float16)
    raw = target.encode(q, out)
    if not np.array_equal(target.dequantize(raw, n_per_row), src.dequantize(data, n_per_row)):
        raise ValueError(f"{src.name} data cannot be stored exactly as {target.name} (a scale times -{off} "
                         f"is not representable in fp16)")
    return raw
