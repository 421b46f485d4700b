"""The product path of ggml's quantizer: the native routine (tarq._C, csrc/lattice/) when the extension is built,
the NumPy emulation (``BlockType.quantize``) otherwise. Both are bit-exact with ggml_quantize_chunk (tests compare
each with libggml); ``TARQ_KERNELS=reference`` forces the NumPy one."""
from __future__ import annotations

import os

import numpy as np

from .base import check_quantize_input, get_type

_native = None
_tried = False


def _extension():
    global _native, _tried
    if not _tried:
        _tried = True
        try:
            from .. import _C
            _native = _C if hasattr(_C, "ggml_quantize") else None
        except ImportError:
            _native = None
    return _native


def ggml_quantize(qtype, x, imatrix=None) -> np.ndarray:
    """float32 rows [rows, n] -> the bytes ggml_quantize_chunk(type, x, ..., imatrix) writes, uint8 [rows, row_bytes]."""
    t = get_type(qtype)
    if not t.quantized:
        return t.quantize(x)
    x, imatrix = check_quantize_input(t, x, imatrix)
    native = _extension()
    if native is not None and os.environ.get("TARQ_KERNELS", "").strip().lower() != "reference":
        return native.ggml_quantize(t.type_id, x, imatrix)
    return t.quantize(x, imatrix)


def as_f16_source(w) -> np.ndarray:
    """What whisper.cpp's ``quantize`` sees for a weight stored in an F16 file: fp16-rounded, widened to float32."""
    with np.errstate(over="ignore"):
        return np.asarray(w, dtype=np.float32).astype(np.float16).astype(np.float32)
