"""The ggml tensor-type base classes and the type registry.

One class per ggml type (gguf-py ``quants.py`` style): defining a subclass with a ``name`` registers it.
A type knows its block layout (``block_dtype``: the C struct of ggml-common.h as a packed NumPy
structured dtype), how integer codes and block parameters map to those bytes, ggml's ``to_float``, and
ggml's own quantizer (``ggml_quantize_chunk`` with or without importance weights, bit for bit). The
solver-side lattice (how the GPTQ sweep fits a group's parameters and rounds a column onto exactly the
values the file will hold) is described in :mod:`tarq.ggml.lattice`.

Codes are the integers a block stores for each element, in the type's own convention (``code_min`` ..
``code_max``, e.g. Q4_0 q in [-8, 7] with nibble q + 8, Q4_K L in [0, 15]); block parameters ("params") are
every other field of the block (d, dmin, sub-block scales), kept as a structured array with one record per
ggml block. ``encode(codes, params)`` and ``decode(raw)`` are exact inverses.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

_REGISTRY: dict[str, "GgmlType"] = {}
_BY_ID: dict[int, "GgmlType"] = {}
_BY_FTYPE: dict[int, "GgmlType"] = {}


class GgmlType:
    """One ggml tensor type. Subclasses with a ``name`` register an instance of themselves."""

    name: ClassVar[str] = ""
    type_id: ClassVar[int] = -1      # enum ggml_type
    ftype: ClassVar[int | None] = None  # enum ggml_ftype of a model whose weights are "mostly" this type
    block_size: ClassVar[int] = 1
    quantized: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            inst = cls()
            for table, key in ((_REGISTRY, cls.name), (_BY_ID, cls.type_id)):
                if key in table:
                    raise ValueError(f"ggml type {key!r} registered twice")
                table[key] = inst
            if cls.ftype is not None:
                _BY_FTYPE[cls.ftype] = inst

    # --- sizes --------------------------------------------------------------------------------------
    @property
    def type_size(self) -> int:
        raise NotImplementedError

    def fits(self, n_per_row: int) -> bool:
        return n_per_row > 0 and n_per_row % self.block_size == 0

    def row_bytes(self, n_per_row: int) -> int:
        if not self.fits(n_per_row):
            raise ValueError(f"{self.name}: rows of {n_per_row} do not tile {self.block_size}-element blocks")
        return n_per_row // self.block_size * self.type_size

    def nbytes(self, shape: tuple[int, ...]) -> int:
        rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
        return rows * self.row_bytes(int(shape[-1]))

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.type_size / self.block_size

    # --- data ----------------------------------------------------------------------------------------
    def dequantize(self, raw, n_per_row: int) -> np.ndarray:
        """float32 [rows, n_per_row], exactly what ggml's ``to_float`` gives for these bytes."""
        raise NotImplementedError

    def quantize(self, x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
        """float32 rows -> ggml bytes ``uint8 [rows, row_bytes]`` = ``ggml_quantize_chunk(type, x, ..., imatrix)``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<ggml type {self.name} ({self.type_id})>"

    def __reduce__(self):  # instances are singletons: pickle by name
        return (get_type, (self.name,))


class FloatType(GgmlType):
    """F32 / F16: one element per "block", stored as IEEE floats."""
    dtype: ClassVar[str] = "<f4"

    @property
    def type_size(self) -> int:
        return np.dtype(self.dtype).itemsize

    def pack(self, values) -> np.ndarray:
        """float array [..., n] -> uint8 [rows, n * itemsize] (fp16 conversion rounds to nearest even)."""
        v = np.ascontiguousarray(np.asarray(values).astype(self.dtype, copy=False))
        return v.reshape(-1, v.shape[-1] if v.ndim else 1).view(np.uint8)

    def unpack(self, raw, n_per_row: int) -> np.ndarray:
        return as_rows(raw, self.row_bytes(n_per_row), self.name).view(self.dtype).reshape(-1, n_per_row)

    def dequantize(self, raw, n_per_row: int) -> np.ndarray:
        return self.unpack(raw, n_per_row).astype(np.float32)

    def quantize(self, x, imatrix=None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"{self.name}: expected a 2-D [rows, n_per_row] array, got shape {x.shape}")
        with np.errstate(over="ignore"):
            return self.pack(x)


class F32(FloatType):
    name, type_id, ftype, dtype = "f32", 0, 0, "<f4"


class F16(FloatType):
    name, type_id, ftype, dtype = "f16", 1, 1, "<f2"


class BlockType(GgmlType):
    """A block-quantized type. Subclasses give ``block_dtype`` (the C struct), the code range, which fields
    are parameters, the code <-> field mapping and the quantizers."""
    quantized = True
    block_dtype: ClassVar[np.dtype]
    code_fields: ClassVar[tuple[str, ...]] = ("qs",)
    code_min: ClassVar[int]
    code_max: ClassVar[int]
    # solver-side lattice (tarq.ggml.lattice): parameter-group widths the sweep may use (first = default),
    # value form, and whether the importance-weighted fit needs the row's mean square (legacy types)
    solver_groups: ClassVar[tuple[int, ...]]
    has_offset: ClassVar[bool] = False          # value = fl32(fl32(a q) + b) rather than fl32(a q)
    codebook: ClassVar[np.ndarray | None] = None  # non-uniform levels (IQ4_NL): value = fl32(a codebook[q])
    row_sigma2_in_fit: ClassVar[bool] = False
    # the solver's fit when the plan says "auto": ggml's importance-weighted search measured better on every type
    # (docs/methods.md "Lattice fit"); Q4_0 keeps ggml's plain max/-8 rule so its codes equal earlier releases'
    default_fit: ClassVar[str] = "weighted"

    @property
    def type_size(self) -> int:
        return self.block_dtype.itemsize

    @property
    def param_fields(self) -> tuple[str, ...]:
        return tuple(f for f in self.block_dtype.names if f not in self.code_fields)

    @property
    def param_dtype(self) -> np.dtype:
        return np.dtype([(f, self.block_dtype.fields[f][0]) for f in self.param_fields])

    @property
    def refit_fields(self) -> tuple[str, ...]:
        """The block's fp16 parameters (d, Q4_1/Q5_1's m, the K-quants' dmin). ggml's to_float is linear in each
        of them with the codes and integer fields fixed, which the least-squares refit relies on
        (:mod:`tarq.ggml.refit`)."""
        return tuple(f for f in self.param_fields if self.block_dtype.fields[f][0] == np.dtype("<f2"))

    # --- per-type bit layout of the codes (blocks: structured [nb]; q: int16 [nb, block_size]) -----------
    def _store_codes(self, blocks: np.ndarray, q: np.ndarray) -> None:
        raise NotImplementedError

    def _load_codes(self, blocks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _dequantize_blocks(self, blocks: np.ndarray, q: np.ndarray) -> np.ndarray:
        """float32 [nb, block_size] from the blocks and their codes, in ggml's to_float arithmetic."""
        raise NotImplementedError

    # --- public layout API ---------------------------------------------------------------------------
    def encode(self, codes, params) -> np.ndarray:
        """codes int [rows, n] + params (``param_dtype`` [rows, n / block_size]) -> uint8 [rows, row_bytes]."""
        codes = np.asarray(codes)
        if codes.ndim != 2:
            raise ValueError(f"{self.name}: codes must be 2-D [rows, cols], got shape {codes.shape}")
        rows, cols = codes.shape
        nb = self.row_bytes(cols) // self.type_size
        if codes.size and (int(codes.min()) < self.code_min or int(codes.max()) > self.code_max):
            raise ValueError(f"{self.name}: codes out of range [{self.code_min}, {self.code_max}] "
                             f"(got [{codes.min()}, {codes.max()}])")
        params = np.asarray(params)
        if params.dtype != self.param_dtype or params.shape != (rows, nb):
            raise ValueError(f"{self.name}: params must be {self.param_dtype} [{rows}, {nb}], got "
                             f"{params.dtype} {params.shape}")
        blocks = np.zeros(rows * nb, dtype=self.block_dtype)
        for f in self.param_fields:
            blocks[f] = params[f].reshape(blocks[f].shape)
        self._store_codes(blocks, codes.astype(np.int16).reshape(rows * nb, self.block_size))
        return blocks.view(np.uint8).reshape(rows, nb * self.type_size)

    def decode(self, raw, n_per_row: int) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`encode`: (codes int8 [rows, n], params [rows, n / block_size])."""
        blocks = self.blocks(raw, n_per_row)
        rows = blocks.shape[0] // (n_per_row // self.block_size)
        codes = self._load_codes(blocks).astype(np.int8).reshape(rows, n_per_row)
        params = np.zeros(blocks.shape[0], dtype=self.param_dtype)
        for f in self.param_fields:
            params[f] = blocks[f]
        return codes, params.reshape(rows, -1)

    def blocks(self, raw, n_per_row: int) -> np.ndarray:
        """The bytes as a structured array of blocks [rows * n / block_size]."""
        rows = as_rows(raw, self.row_bytes(n_per_row), self.name)
        return np.ascontiguousarray(rows).view(self.block_dtype).reshape(-1)

    def dequantize(self, raw, n_per_row: int) -> np.ndarray:
        blocks = self.blocks(raw, n_per_row)
        y = self._dequantize_blocks(blocks, self._load_codes(blocks))
        return np.ascontiguousarray(y, dtype=np.float32).reshape(-1, n_per_row)

    # --- ggml's quantizer ------------------------------------------------------------------------------
    def quantize(self, x, imatrix=None) -> np.ndarray:
        """ggml_quantize_chunk(type, x, ..., imatrix) bit for bit (NumPy float32 emulation of ggml-quants.c)."""
        x, imatrix = check_quantize_input(self, x, imatrix)
        nb_row = x.shape[1] // self.block_size
        blocks = np.zeros(x.shape[0] * nb_row, dtype=self.block_dtype)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            self._quantize_rows(x, imatrix, blocks)
        return blocks.view(np.uint8).reshape(x.shape[0], nb_row * self.type_size)

    def _quantize_rows(self, x: np.ndarray, imatrix: np.ndarray | None, blocks: np.ndarray) -> None:
        raise NotImplementedError

    # --- solver-side lattice (see tarq.ggml.lattice) -------------------------------------------------------
    def fit(self, x: np.ndarray, importance: np.ndarray | None = None, sigma2: np.ndarray | None = None,
            mode: str = "plain") -> np.ndarray:
        """Parameters of one parameter group for every row: ``x`` float64 [rows, G] (current weights),
        ``importance`` float32 [G] (mode "weighted"), ``sigma2`` float32 [rows] (row mean square, legacy types
        in mode "weighted"). Returns ``param_dtype`` [rows, G / block_size] exactly as the file stores them."""
        raise NotImplementedError

    def column_scales(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """float32 (a, b) per column [rows, nb * block_size] from params [rows, nb] (b None without offset)."""
        raise NotImplementedError


def check_quantize_input(t: GgmlType, x, imatrix) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{t.name}: expected a 2-D [rows, n_per_row] array, got shape {x.shape}")
    if not t.fits(x.shape[1]):
        raise ValueError(f"{t.name}: rows of {x.shape[1]} do not tile {t.block_size}-element blocks")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
        if imatrix.shape[0] != x.shape[1]:
            raise ValueError(f"{t.name}: importance vector has {imatrix.shape[0]} entries for rows of {x.shape[1]}")
        if not np.isfinite(imatrix).all() or (imatrix < 0).any():
            raise ValueError(f"{t.name}: importance weights must be finite and >= 0")
    return x, imatrix


def as_rows(raw, row_bytes: int, what: str) -> np.ndarray:
    a = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray, memoryview)) else np.asarray(raw)
    if a.dtype != np.uint8:
        raise TypeError(f"{what}: raw data must be uint8, got {a.dtype}")
    if a.size % row_bytes:
        raise ValueError(f"{what}: {a.size} bytes is not a whole number of {row_bytes}-byte rows")
    return a.reshape(-1, row_bytes)


def get_type(t) -> GgmlType:
    """A type by name ("q4_k", case-insensitive), ggml_type id (12), or a GgmlType passed through."""
    if isinstance(t, GgmlType):
        return t
    try:
        if isinstance(t, str):
            return _REGISTRY[t.lower()]
        return _BY_ID[int(t)]
    except (KeyError, ValueError, TypeError):
        raise ValueError(f"unsupported ggml type {t!r}; supported: {', '.join(_REGISTRY)}") from None


def type_for_ftype(ftype: int) -> GgmlType:
    """ggml_ftype_to_ggml_type for the types tarq knows (ValueError otherwise)."""
    try:
        return _BY_FTYPE[int(ftype)]
    except KeyError:
        raise ValueError(f"unsupported ggml_ftype {ftype}") from None


def all_types() -> list[GgmlType]:
    """Every registered type, in ggml_type id order."""
    return sorted(_REGISTRY.values(), key=lambda t: t.type_id)
