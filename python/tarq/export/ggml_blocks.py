"""ggml block layouts: integer codes + fp16 scales <-> the exact bytes ggml stores (vectorised NumPy).

Layouts follow ggml/src/ggml-common.h (see ``shared/notes/formats.md`` §2). A tensor row of ``n``
elements is ``n / 32`` consecutive blocks; rows follow one another. In every 4/5-bit type byte ``j``
of a block holds element ``j`` in the low nibble and element ``j + 16`` in the high nibble.

Codes are what the solver produces, in each type's own range:

=======  ===============  ==========================  =====================================
type     codes            per-block parameters        dequantized value (ggml to_float)
=======  ===============  ==========================  =====================================
Q4_0     int [-8, 7]      d (fp16)                    d * q          (nibble = q + 8)
Q4_1     int [0, 15]      d, m (fp16)                 d * q + m
Q5_0     int [-16, 15]    d (fp16)                    d * q          (5-bit value = q + 16)
Q5_1     int [0, 31]      d, m (fp16)                 d * q + m
Q8_0     int [-128, 127]  d (fp16)                    d * q
=======  ===============  ==========================  =====================================

Scales (and mins) may be given per group of ``g`` columns with ``g`` a multiple of 32; the group's
value is then repeated for each of its 32-element blocks (a g=128 group is 4 blocks with equal d).
F16 and F32 are in the same table so callers can treat every tensor type uniformly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QK = 32  # elements per block for every type in this module


@dataclass(frozen=True)
class BlockData:
    """Decoded content of a quantized tensor (``rows x cols`` elements)."""
    codes: np.ndarray              # int8 [rows, cols], in the type's code range
    scales: np.ndarray             # float16 [rows, cols / 32], one d per block
    mins: np.ndarray | None = None  # float16 [rows, cols / 32] for Q4_1 / Q5_1, else None


class GgmlType:
    """One ggml tensor type. Subclasses register themselves in ``GGML_TYPES`` by name and by id."""
    name: str
    type_id: int          # enum ggml_type
    ftype: int            # enum ggml_ftype of a model whose weights are "mostly" this type
    block_size: int
    type_size: int        # bytes per block
    quantized: bool

    def row_bytes(self, n_per_row: int) -> int:
        if n_per_row % self.block_size:
            raise ValueError(f"{self.name}: row length {n_per_row} is not a multiple of {self.block_size}")
        return n_per_row // self.block_size * self.type_size

    def nbytes(self, shape: tuple[int, ...]) -> int:
        rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
        return rows * self.row_bytes(int(shape[-1]))

    def __repr__(self) -> str:
        return f"<ggml type {self.name} ({self.type_id})>"


class FloatType(GgmlType):
    quantized = False
    block_size = 1

    def __init__(self, name: str, type_id: int, ftype: int, dtype: str):
        self.name, self.type_id, self.ftype = name, type_id, ftype
        self.dtype = np.dtype(dtype)
        self.type_size = self.dtype.itemsize

    def pack(self, values: np.ndarray) -> np.ndarray:
        """float array [..., n] -> uint8 [rows, n * itemsize] (fp16 conversion rounds to nearest even)."""
        v = np.ascontiguousarray(np.asarray(values).astype(self.dtype, copy=False))
        return v.reshape(-1, v.shape[-1] if v.ndim else 1).view(np.uint8)

    def unpack(self, raw: np.ndarray, n_per_row: int) -> np.ndarray:
        return _as_rows(raw, self.row_bytes(n_per_row), self.name).view(self.dtype).reshape(-1, n_per_row)

    def dequantize(self, raw: np.ndarray, n_per_row: int) -> np.ndarray:
        return self.unpack(raw, n_per_row).astype(np.float32)


class QuantType(GgmlType):
    """A 32-element block type; subclasses define the block struct and the code <-> field mapping."""
    quantized = True
    block_size = QK
    qmin: int
    qmax: int
    has_min: bool = False
    block_dtype: np.dtype

    @property
    def type_size(self) -> int:  # type: ignore[override]
        return self.block_dtype.itemsize

    # --- per-type bit layout (blocks: structured array [nblocks]; q: [nblocks, 32]) ----------------
    def _store_codes(self, blocks: np.ndarray, q: np.ndarray) -> None:
        raise NotImplementedError

    def _load_codes(self, blocks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # --- public API --------------------------------------------------------------------------------
    def pack(self, codes: np.ndarray, scales: np.ndarray, mins: np.ndarray | None = None) -> np.ndarray:
        """codes [rows, cols] + scales [rows, G] (+ mins) -> uint8 [rows, cols/32 * type_size]."""
        codes = np.asarray(codes)
        if codes.ndim != 2:
            raise ValueError(f"{self.name}: codes must be 2-D [rows, cols], got shape {codes.shape}")
        rows, cols = codes.shape
        if cols % QK:
            raise ValueError(f"{self.name}: row length {cols} is not a multiple of {QK}")
        if codes.size and (codes.min() < self.qmin or codes.max() > self.qmax):
            raise ValueError(f"{self.name}: codes out of range [{self.qmin}, {self.qmax}] "
                             f"(got [{codes.min()}, {codes.max()}])")
        nb = cols // QK
        blocks = np.zeros(rows * nb, dtype=self.block_dtype)
        blocks["d"] = _per_block(scales, rows, nb, f"{self.name} scales").reshape(-1)
        if self.has_min:
            if mins is None:
                raise ValueError(f"{self.name}: needs mins (m) alongside the scales")
            blocks["m"] = _per_block(mins, rows, nb, f"{self.name} mins").reshape(-1)
        elif mins is not None:
            raise ValueError(f"{self.name}: has no min field; mins must be None")
        self._store_codes(blocks, codes.astype(np.int16).reshape(rows * nb, QK))
        return blocks.view(np.uint8).reshape(rows, nb * self.type_size)

    def unpack(self, raw: np.ndarray, n_per_row: int) -> BlockData:
        rows_raw = _as_rows(raw, self.row_bytes(n_per_row), self.name)
        rows, nb = rows_raw.shape[0], n_per_row // QK
        blocks = np.ascontiguousarray(rows_raw).view(self.block_dtype).reshape(-1)
        codes = self._load_codes(blocks).astype(np.int8).reshape(rows, n_per_row)
        scales = blocks["d"].astype(np.float16).reshape(rows, nb)
        mins = blocks["m"].astype(np.float16).reshape(rows, nb) if self.has_min else None
        return BlockData(codes, scales, mins)

    def dequantize(self, raw: np.ndarray, n_per_row: int) -> np.ndarray:
        """The float32 values ggml's ``to_float`` produces (d * q, or d * q + m; f32 arithmetic)."""
        bd = self.unpack(raw, n_per_row)
        d = np.repeat(bd.scales.astype(np.float32), QK, axis=1)
        y = bd.codes.astype(np.float32) * d
        if bd.mins is not None:
            y = y + np.repeat(bd.mins.astype(np.float32), QK, axis=1)
        return y


def _as_rows(raw: np.ndarray | bytes, row_bytes: int, what: str) -> np.ndarray:
    a = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray, memoryview)) else np.asarray(raw)
    if a.dtype != np.uint8:
        raise TypeError(f"{what}: raw data must be uint8, got {a.dtype}")
    if a.size % row_bytes:
        raise ValueError(f"{what}: {a.size} bytes is not a whole number of {row_bytes}-byte rows")
    return a.reshape(-1, row_bytes)


def _per_block(values: np.ndarray, rows: int, nb: int, what: str) -> np.ndarray:
    """Broadcast per-group values [rows, G] to per-block [rows, nb] (each group covers nb/G blocks)."""
    v = np.asarray(values)
    if v.ndim != 2 or v.shape[0] != rows or v.shape[1] == 0 or nb % v.shape[1]:
        raise ValueError(f"{what}: shape {v.shape} does not tile [{rows}, {nb}] blocks of {QK}")
    v = v.astype(np.float16, copy=False)  # float32 input is rounded to nearest fp16, as ggml does
    return np.repeat(v, nb // v.shape[1], axis=1)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """[n, 32] values 0..15 -> [n, 16] bytes: low nibble element j, high nibble element j + 16."""
    return (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)


def _unnibble(qs: np.ndarray) -> np.ndarray:
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int16)


_BIT = (np.uint32(1) << np.arange(32, dtype=np.uint32))


class _Q4(QuantType):
    offset: int  # stored nibble = code + offset

    def _store_codes(self, blocks, q):
        blocks["qs"] = _nibbles(q + self.offset)

    def _load_codes(self, blocks):
        return _unnibble(blocks["qs"]) - self.offset


class _Q5(QuantType):
    offset: int

    def _store_codes(self, blocks, q):
        u = (q + self.offset).astype(np.uint32)
        blocks["qs"] = _nibbles(u & 0x0F)
        # qh: little-endian uint32 whose bit j is the 5th bit of element j
        qh = (((u >> 4) & 1) * _BIT).sum(axis=1, dtype=np.uint32)
        blocks["qh"] = qh.astype("<u4").view(np.uint8).reshape(-1, 4)

    def _load_codes(self, blocks):
        qh = np.ascontiguousarray(blocks["qh"]).view("<u4").reshape(-1, 1)
        high = ((qh & _BIT) != 0).astype(np.int16) << 4
        return (_unnibble(blocks["qs"]) | high) - self.offset


class Q4_0(_Q4):
    name, type_id, ftype, qmin, qmax, offset = "q4_0", 2, 2, -8, 7, 8
    block_dtype = np.dtype([("d", "<f2"), ("qs", "u1", 16)])


class Q4_1(_Q4):
    name, type_id, ftype, qmin, qmax, offset, has_min = "q4_1", 3, 3, 0, 15, 0, True
    block_dtype = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", 16)])


class Q5_0(_Q5):
    name, type_id, ftype, qmin, qmax, offset = "q5_0", 6, 8, -16, 15, 16
    block_dtype = np.dtype([("d", "<f2"), ("qh", "u1", 4), ("qs", "u1", 16)])


class Q5_1(_Q5):
    name, type_id, ftype, qmin, qmax, offset, has_min = "q5_1", 7, 9, 0, 31, 0, True
    block_dtype = np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "u1", 4), ("qs", "u1", 16)])


class Q8_0(QuantType):
    name, type_id, ftype, qmin, qmax = "q8_0", 8, 7, -128, 127
    block_dtype = np.dtype([("d", "<f2"), ("qs", "i1", QK)])

    def _store_codes(self, blocks, q):
        blocks["qs"] = q.astype(np.int8)

    def _load_codes(self, blocks):
        return blocks["qs"].astype(np.int16)


F32 = FloatType("f32", 0, 0, "<f4")
F16 = FloatType("f16", 1, 1, "<f2")

_ALL: list[GgmlType] = [F32, F16, Q4_0(), Q4_1(), Q5_0(), Q5_1(), Q8_0()]
GGML_TYPES: dict[str, GgmlType] = {t.name: t for t in _ALL}
GGML_TYPES_BY_ID: dict[int, GgmlType] = {t.type_id: t for t in _ALL}
GGML_TYPES_BY_FTYPE: dict[int, GgmlType] = {t.ftype: t for t in _ALL}


def get_type(t: str | int | GgmlType) -> GgmlType:
    """Look a type up by name ("q4_0"), ggml_type id (2) or pass a GgmlType through."""
    if isinstance(t, GgmlType):
        return t
    try:
        return GGML_TYPES[t.lower()] if isinstance(t, str) else GGML_TYPES_BY_ID[int(t)]
    except KeyError:
        raise ValueError(f"unsupported ggml type {t!r}; supported: {sorted(GGML_TYPES)}") from None


def pack_blocks(qtype: str | int | GgmlType, codes: np.ndarray, scales: np.ndarray | None = None,
                mins: np.ndarray | None = None) -> np.ndarray:
    """Pack a 2-D tensor into ggml bytes ``uint8 [rows, row_bytes]``.

    For quantized types ``codes`` are integer codes and ``scales`` (``mins``) fp16 per group; for
    F16/F32 ``codes`` is the float array itself and scales must be None.
    """
    t = get_type(qtype)
    if isinstance(t, FloatType):
        if scales is not None or mins is not None:
            raise ValueError(f"{t.name} takes plain float values, not codes + scales")
        return t.pack(codes)
    return t.pack(codes, scales, mins)


def unpack_blocks(qtype: str | int | GgmlType, raw: np.ndarray | bytes, n_per_row: int) -> BlockData | np.ndarray:
    """Inverse of :func:`pack_blocks`: BlockData for quantized types, a float array for F16/F32."""
    return get_type(qtype).unpack(raw, n_per_row)


def dequantize_blocks(qtype: str | int | GgmlType, raw: np.ndarray | bytes, n_per_row: int) -> np.ndarray:
    """float32 [rows, n_per_row] exactly as ggml's ``to_float`` computes it."""
    return get_type(qtype).dequantize(raw, n_per_row)


def group_scales(block_scales: np.ndarray, group_size: int, what: str = "scales") -> np.ndarray:
    """Collapse per-block values [rows, cols/32] to per-group [rows, cols/g]; they must repeat exactly."""
    if group_size % QK:
        raise ValueError(f"group size {group_size} is not a multiple of {QK}")
    per = group_size // QK
    rows, nb = block_scales.shape
    if nb % per:
        raise ValueError(f"{what}: {nb} blocks per row do not split into groups of {per}")
    g = block_scales.reshape(rows, nb // per, per)
    bits = g.view(np.uint16)  # compare bit patterns so -0.0 / NaN payloads count as different
    if not (bits == bits[:, :, :1]).all():
        raise ValueError(f"{what}: blocks inside a {group_size}-column group carry different values")
    return np.ascontiguousarray(g[:, :, 0])
