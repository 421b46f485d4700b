"""ggml itself, through ctypes, as the oracle for tarq.ggml (tests and benchmarks only; never the product path).

The runtime wheels ship ``libggml-base``: pywhispercpp (ggml 0.13.1, the library whisper.cpp 1.8.5
runs on) and crispasr (its own ggml 0.26.0). Both export ``ggml_quantize_chunk`` (which for the
legacy types without an importance matrix is ``quantize_row_*_ref``, the code whisper.cpp's
``quantize`` tool runs) and ``ggml_get_type_traits(type)->to_float``.
"""
from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..ggml import get_type


class _TypeTraits(ctypes.Structure):
    # struct ggml_type_traits (ggml.h, unchanged from ggml 0.13 through 0.26)
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent


def find_ggml_base_libs() -> dict[str, Path]:
    """``{"pywhispercpp": path, "crispasr": path}`` for the wheels that are installed."""
    found: dict[str, Path] = {}
    pw = _package_dir("pywhispercpp")
    if pw is not None:
        site = pw.parent
        cands = sorted(glob.glob(str(site / "pywhispercpp.libs" / "libggml-base*.so*"))) + \
            sorted(glob.glob(str(site / "libggml-base.so*")))
        if cands:
            found["pywhispercpp"] = Path(cands[0])
    ca = _package_dir("crispasr")
    if ca is not None and (ca / "libggml-base.so").exists():
        found["crispasr"] = ca / "libggml-base.so"
    return found


class GgmlLib:
    """Minimal ctypes view of one libggml-base: quantize rows and dequantize blocks."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lib = ctypes.CDLL(str(self.path))
        self.lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                 ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        self.lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
        self.lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        self.lib.ggml_quantize_init.argtypes = [ctypes.c_int]
        self.lib.ggml_quantize_init.restype = None

    def traits(self, qtype) -> _TypeTraits:
        return self.lib.ggml_get_type_traits(get_type(qtype).type_id).contents

    def quantize(self, qtype, x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
        """float32 [rows, n] -> ggml bytes uint8 [rows, row_bytes]; ``imatrix`` (float32 [n], per-column
        importance) is passed as ggml_quantize_chunk's last argument (quant_weights)."""
        t = get_type(qtype)
        x = np.ascontiguousarray(x, dtype=np.float32)
        rows, n = x.shape
        tr = self.traits(t)
        assert tr.type_size == t.type_size and tr.blck_size == t.block_size, f"{t.name}: struct mismatch"
        out = np.zeros((rows, t.row_bytes(n)), dtype=np.uint8)
        qw = None
        if imatrix is not None:
            imatrix = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
            assert imatrix.shape[0] == n, f"imatrix has {imatrix.shape[0]} entries for rows of {n}"
            qw = imatrix.ctypes.data
        self.lib.ggml_quantize_init(t.type_id)
        written = self.lib.ggml_quantize_chunk(t.type_id, x.ctypes.data, out.ctypes.data, 0, rows, n, qw)
        assert written == out.nbytes, f"ggml_quantize_chunk wrote {written} bytes, expected {out.nbytes}"
        return out

    def to_float(self, qtype, raw: np.ndarray, n_per_row: int) -> np.ndarray:
        t = get_type(qtype)
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        rows = raw.size // t.row_bytes(n_per_row)
        out = np.zeros((rows, n_per_row), dtype=np.float32)
        fn = _TO_FLOAT(self.traits(t).to_float)
        fn(raw.ctypes.data, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), rows * n_per_row)
        return out


@lru_cache(maxsize=None)
def load_ggml(which: str = "pywhispercpp") -> GgmlLib:
    libs = find_ggml_base_libs()
    if which not in libs:
        raise FileNotFoundError(f"libggml-base from {which!r} not found (installed: {sorted(libs)})")
    return GgmlLib(libs[which])
