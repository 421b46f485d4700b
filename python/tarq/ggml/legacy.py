"""The 32-element legacy types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (ggml-common.h; ggml-quants.c).

Layout: byte j of a 4/5-bit block holds element j in the low nibble and element j + 16 in the high nibble;
Q5 adds a little-endian uint32 ``qh`` whose bit j is element j's fifth bit.

ggml's quantizers, mirrored in float32 (ggml_quantize_chunk -> quantize_qX_Y):
* without importance: quantize_row_*_ref. Q4_0/Q5_0: d = max/-8 (-16) with max the signed element of
  largest magnitude, id = 1/d from the unrounded d, q = min(15, (int8)(x*id + 8.5f)) (16.5f, 31).
  Q4_1/Q5_1: d = (max-min)/15 (31), m = min, q = (int8)((x-min)*id + 0.5f). Q8_0: d = amax/127, roundf.
* with importance (quantize_row_*_impl): sigma2 = mean x^2 of the whole row, w = qw*sqrtf(sigma2 + x^2);
  Q4_0/Q5_0 make_qx_quants(32, 8|16, x, L, 1, w); Q4_1/Q5_1 make_qkx3_quants(32, 15|31, ..., -0.9, 0.05, 36).
  Q8_0 ignores importance.
"""
from __future__ import annotations

import numpy as np

from .base import BlockType
from .search import F, make_qkx_quants, make_qx_quants, seq_sum, signed_max

QK = 32
_BIT = (np.uint32(1) << np.arange(32, dtype=np.uint32))


def _nibbles(q: np.ndarray) -> np.ndarray:
    """[n, 32] values 0..15 -> [n, 16] bytes: low nibble element j, high nibble element j + 16."""
    return (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)


def _unnibble(qs: np.ndarray) -> np.ndarray:
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int16)


def _trunc(v: np.ndarray) -> np.ndarray:
    """C's float -> int8_t conversion for the in-range values that occur: truncation toward zero."""
    return np.trunc(v).astype(np.int16)


def _inverse(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d != 0, F(1.0) / d, F(0.0)).astype(F)


def _first_extreme(x: np.ndarray, fn) -> np.ndarray:
    """The first element reaching min (fn=argmin) / max along a row, as `if (v < min) min = v` keeps it."""
    return x[np.arange(x.shape[0]), fn(x, axis=1)]


def _row_weights(xb: np.ndarray, qw: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """w_j = qw_j * sqrtf(sigma2 + x_j^2) for blocks xb [rows*nb, 32] with sigma2 per block."""
    return (qw * np.sqrt((sigma2[:, None] + (xb * xb).astype(F)).astype(F)).astype(F)).astype(F)


class _Legacy(BlockType):
    block_size = QK
    offset: int = 0          # stored unsigned value = code + offset
    levels: int              # code range of the ref quantizer: 16 (4-bit) or 32 (5-bit)

    def _dequantize_blocks(self, blocks, q):
        y = (blocks["d"].astype(F)[:, None] * q.astype(F)).astype(F)
        if self.has_offset:
            y = (y + blocks["m"].astype(F)[:, None]).astype(F)
        return y

    def column_scales(self, params):
        a = np.repeat(params["d"].astype(F), QK, axis=1)
        b = np.repeat(params["m"].astype(F), QK, axis=1) if self.has_offset else None
        return a, b

    # blocks of a row-major [rows, n] array as [rows * n/32, 32]
    @staticmethod
    def _blocks_of(x):
        return x.reshape(-1, QK)


class _Symmetric(_Legacy):
    """Q4_0 / Q5_0: d = max / -half, codes q in [-half, half - 1]."""
    row_sigma2_in_fit = True

    @property
    def half(self) -> int:
        return self.levels // 2

    def _quantize_rows(self, x, imatrix, blocks):
        xb = self._blocks_of(x)
        if imatrix is None:
            d = (signed_max(xb) / F(-self.half)).astype(F)
            v = ((xb * _inverse(d)[:, None]).astype(F) + F(self.half + 0.5)).astype(F)
            q = np.minimum(self.levels - 1, _trunc(v)) - self.half
        else:
            sigma2 = np.repeat((seq_sum((x * x).astype(F)) / F(x.shape[1])).astype(F), x.shape[1] // QK)
            w = _row_weights(xb, np.tile(imatrix.reshape(-1, QK), (x.shape[0], 1)), sigma2)
            d, L = make_qx_quants(xb, self.half, 1, w)
            q = L - self.half
        blocks["d"] = d.astype(np.float16)
        self._store_codes(blocks, q.astype(np.int16))

    def fit(self, x, importance=None, sigma2=None, mode="plain"):
        rows, G = x.shape
        if mode == "plain":
            # the signed max is taken on the float64 weights (first element of largest |w|), then rounded to f32
            ax = np.abs(x)
            idx = np.argmax(ax, axis=1)
            ext = np.where(ax[np.arange(rows), idx] > 0, x[np.arange(rows), idx], 0.0).astype(F)
            d = (ext / F(-self.half)).astype(F)
        else:
            x32 = x.astype(F)
            w = _row_weights(x32, np.broadcast_to(np.asarray(importance, F), x32.shape), np.asarray(sigma2, F))
            d, _ = make_qx_quants(x32, self.half, 1, w)
        out = np.zeros((rows, G // QK), dtype=self.param_dtype)
        with np.errstate(over="ignore"):
            out["d"] = d.astype(np.float16)[:, None]
        return out


class _Asymmetric(_Legacy):
    """Q4_1 / Q5_1: value = d*q + m, codes q in [0, levels - 1]."""
    has_offset = True
    row_sigma2_in_fit = True
    solver_groups = (QK,)

    def _quantize_rows(self, x, imatrix, blocks):
        xb = self._blocks_of(x)
        if imatrix is None:
            mn = _first_extreme(xb, np.argmin)
            mx = _first_extreme(xb, np.argmax)
            d = ((mx - mn).astype(F) / F(self.levels - 1)).astype(F)
            v = (((xb - mn[:, None]).astype(F) * _inverse(d)[:, None]).astype(F) + F(0.5)).astype(F)
            q = _trunc(v)
            q = np.minimum(self.levels - 1, q) if self.levels == 16 else q & 0x1F
            m = mn
        else:
            sigma2 = np.repeat((seq_sum((x * x).astype(F)) / F(x.shape[1])).astype(F), x.shape[1] // QK)
            w = _row_weights(xb, np.tile(imatrix.reshape(-1, QK), (x.shape[0], 1)), sigma2)
            d, the_min, q = make_qkx_quants(xb, self.levels - 1, w, -0.9, 0.05, 36, False, x3=True)
            m = -the_min
        blocks["d"] = d.astype(np.float16)
        blocks["m"] = m.astype(np.float16)
        self._store_codes(blocks, q.astype(np.int16))

    def fit(self, x, importance=None, sigma2=None, mode="plain"):
        x32 = x.astype(F)
        if mode == "plain":
            mn, mx = _first_extreme(x32, np.argmin), _first_extreme(x32, np.argmax)   # first of equal (+0 vs -0)
            d = ((mx - mn).astype(F) / F(self.levels - 1)).astype(F)
            m = mn
        else:
            w = _row_weights(x32, np.broadcast_to(np.asarray(importance, F), x32.shape), np.asarray(sigma2, F))
            d, the_min, _ = make_qkx_quants(x32, self.levels - 1, w, -0.9, 0.05, 36, False, x3=True)
            m = -the_min
        out = np.zeros((x.shape[0], 1), dtype=self.param_dtype)
        with np.errstate(over="ignore"):
            out["d"] = d.astype(np.float16)[:, None]
            out["m"] = m.astype(np.float16)[:, None]
        return out


class _Nibbles:
    def _store_codes(self, blocks, q):
        blocks["qs"] = _nibbles(q + self.offset)

    def _load_codes(self, blocks):
        return _unnibble(blocks["qs"]) - self.offset


class _FiveBit:
    code_fields = ("qh", "qs")

    def _store_codes(self, blocks, q):
        u = (q + self.offset).astype(np.uint32)
        blocks["qs"] = _nibbles(u & 0x0F)
        qh = (((u >> 4) & 1) * _BIT).sum(axis=1, dtype=np.uint32)
        blocks["qh"] = qh.astype("<u4").view(np.uint8).reshape(-1, 4)

    def _load_codes(self, blocks):
        qh = np.ascontiguousarray(blocks["qh"]).view("<u4").reshape(-1, 1)
        high = ((qh & _BIT) != 0).astype(np.int16) << 4
        return (_unnibble(blocks["qs"]) | high) - self.offset


class Q4_0(_Nibbles, _Symmetric):
    name, type_id, ftype = "q4_0", 2, 2
    default_fit = "plain"      # the pre-issue-10 solver rule; `--lattice-fit weighted` is ~5 % lower H-error
    code_min, code_max, offset, levels = -8, 7, 8, 16
    solver_groups = (32, 64, 128)
    block_dtype = np.dtype([("d", "<f2"), ("qs", "u1", 16)])


class Q4_1(_Nibbles, _Asymmetric):
    name, type_id, ftype = "q4_1", 3, 3
    code_min, code_max, levels = 0, 15, 16
    block_dtype = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", 16)])


class Q5_0(_FiveBit, _Symmetric):
    name, type_id, ftype = "q5_0", 6, 8
    code_min, code_max, offset, levels = -16, 15, 16, 32
    solver_groups = (32, 64, 128)
    block_dtype = np.dtype([("d", "<f2"), ("qh", "u1", 4), ("qs", "u1", 16)])


class Q5_1(_FiveBit, _Asymmetric):
    name, type_id, ftype = "q5_1", 7, 9
    code_min, code_max, levels = 0, 31, 32
    block_dtype = np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "u1", 4), ("qs", "u1", 16)])


class Q8_0(_Legacy):
    name, type_id, ftype = "q8_0", 8, 7
    code_min, code_max = -128, 127
    solver_groups = (32, 64, 128)
    block_dtype = np.dtype([("d", "<f2"), ("qs", "i1", QK)])

    def _store_codes(self, blocks, q):
        blocks["qs"] = q.astype(np.int8)

    def _load_codes(self, blocks):
        return blocks["qs"].astype(np.int16)

    def _quantize_rows(self, x, imatrix, blocks):      # quantize_q8_0 ignores the importance weights
        xb = self._blocks_of(x)
        d = (np.abs(xb).max(axis=1) / F(127)).astype(F)
        v = (xb * _inverse(d)[:, None]).astype(F).astype(np.float64)
        q = np.sign(v) * np.floor(np.abs(v) + 0.5)   # roundf: half away from zero (exact in float64)
        blocks["d"] = d.astype(np.float16)
        self._store_codes(blocks, q.astype(np.int16))

    def fit(self, x, importance=None, sigma2=None, mode="plain"):
        d = (np.abs(x).max(axis=1).astype(F) / F(127)).astype(F)   # the rule of quantize_row_q8_0_ref
        out = np.zeros((x.shape[0], x.shape[1] // QK), dtype=self.param_dtype)
        with np.errstate(over="ignore"):
            out["d"] = d.astype(np.float16)[:, None]
        return out

