"""K-quants with a min (Q2_K, Q4_K, Q5_K): 256-element super-blocks, fp16 d and dmin, quantized sub-block
scales and mins; value = fl32(fl32(d*sc) * q) - fl32(dmin*m) (ggml-quants.c dequantize_row_q{2,4,5}_K).

ggml's quantizers (ggml-quants.c, mirrored in float32; see search.py for the helpers):
* Q2_K, no importance (quantize_row_q2_K_ref): 16 sub-blocks of 16, make_qkx2_quants(16, 3, x, |x|, -0.5,
  0.1, 15, use_mad=true); 4-bit scale = nearest_int(15/max_scale * scale), d = max_scale/15 (same for mins);
  codes re-rounded against the stored d*sc, dmin*m (a sub-block with d*sc == 0 keeps the search's codes).
* Q2_K with importance (quantize_row_q2_K_impl): sigma2 = sum(x^2)/256, w = qw*sqrtf(sigma2 + x^2),
  make_qkx3_quants(16, 3, ..., -0.9, 0.05, 36), scales and mins by make_qp_quants(16, 15, ., sum of w).
* Q4_K / Q5_K, no importance (quantize_row_q{4,5}_K_ref): 8 sub-blocks of 32, w = sqrtf(sum x^2/32) + |x|,
  make_qkx2_quants(32, 15|31, ..., -1|-0.5, 0.1, 20|15); 6-bit scale = min(63, nearest_int(63/max * s)),
  d = max/63. With importance (_impl): sigma2 = 2 sum(x^2)/256, w = qw*sqrtf(sigma2 + x^2),
  make_qkx3_quants(32, nmax, ..., -0.9, 0.05, 36), make_qp_quants(8, 63, ., sum of w) for scales and mins.
"""
from __future__ import annotations

import numpy as np

from .base import BlockType
from .search import F, make_qkx_quants, make_qp_quants, nearest_int, seq_sum

QK_K = 256


def superblocks(x: np.ndarray, sub: int) -> np.ndarray:
    """[rows, n] -> [rows * n/256, 256/sub, sub] (super-blocks, their sub-blocks)."""
    return np.asarray(x, dtype=F).reshape(-1, QK_K // sub, sub)


def importance_tiles(imatrix: np.ndarray | None, rows: int, sub: int) -> np.ndarray | None:
    """Per-column importance laid out like superblocks(x) (the same vector for every row)."""
    if imatrix is None:
        return None
    return np.tile(np.asarray(imatrix, F).reshape(-1, QK_K // sub, sub), (rows, 1, 1))


def requantize(xs: np.ndarray, L: np.ndarray, dl: np.ndarray, ml: np.ndarray | None, lo: int, hi: int
               ) -> np.ndarray:
    """Codes re-rounded against the stored scales: nearest_int((x + ml) / dl) (or x / dl), clamped; sub-blocks
    with dl == 0 keep the search's codes (``if (!d) continue;``). Shapes [S, nsub, sub] / [S, nsub]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        num = xs if ml is None else (xs + ml[..., None]).astype(F)
        l = np.clip(nearest_int((num / np.where(dl != 0, dl, F(1))[..., None]).astype(F)), lo, hi)
    return np.where((dl != 0)[..., None], l, L)


def pack_scale_min_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """8 six-bit scales and mins per super-block [S, 8] -> the 12 scale bytes of Q4_K / Q5_K."""
    ls, lm = ls.astype(np.uint8), lm.astype(np.uint8)
    out = np.zeros((ls.shape[0], 12), np.uint8)
    out[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    out[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    return out


def unpack_scale_min_k4(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """get_scale_min_k4 for j = 0..7: the 12 scale bytes [S, 12] -> (sc [S, 8], m [S, 8])."""
    q = q.astype(np.uint8)
    sc = np.concatenate([q[:, 0:4] & 63, (q[:, 8:12] & 0xF) | ((q[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([q[:, 4:8] & 63, (q[:, 8:12] >> 4) | ((q[:, 4:8] >> 6) << 4)], axis=1)
    return sc, m


def _running_max(v: np.ndarray) -> np.ndarray:
    """``float m = 0; if (v > m) m = v;`` over the last axis."""
    return np.maximum(v.max(axis=-1), F(0)).astype(F)


def _sigma2(xs: np.ndarray, factor: float) -> np.ndarray:
    s = seq_sum((xs * xs).astype(F).reshape(xs.shape[0], -1))
    return ((F(factor) * s).astype(F) / F(QK_K)).astype(F)


class _KQuant(BlockType):
    """What every K-quant shares: the solver's group fit is the type's own super-block search (``_search``) on the
    current weights, with the importance tiled over the sub-blocks for the weighted fit."""

    def fit(self, x, importance=None, sigma2=None, mode="plain"):
        xs = superblocks(x.astype(F), self.sub)
        qw = None if mode == "plain" else np.broadcast_to(np.asarray(importance, F).reshape(1, *xs.shape[1:]),
                                                          xs.shape)
        return self._search(xs, qw)[0].reshape(x.shape[0], 1)


class _KWithMin(_KQuant):
    """Shared code of Q2_K, Q4_K, Q5_K: value = d*sc*q - dmin*m per sub-block."""
    block_size = QK_K
    has_offset = True
    solver_groups = (QK_K,)
    sub: int            # sub-block width
    nmax: int           # largest code
    ref_search: tuple   # (rmin, rdelta, nstep, use_mad) of make_qkx2_quants in the _ref quantizer
    scale_max: int      # 15 (Q2_K, 4-bit) or 63 (Q4_K/Q5_K, 6-bit)

    # scale/min bytes <-> per-sub-block integers
    def _scales_mins(self, params) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _set_scales_mins(self, params, ls, lm) -> None:
        raise NotImplementedError

    def _dequantize_blocks(self, blocks, q):
        a, b = self._affine(blocks)
        return ((a * q.astype(F).reshape(a.shape)).astype(F) + b).astype(F).reshape(q.shape)

    def _affine(self, params) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) per element [S, nsub, sub]: a = fl32(d * sc), b = -fl32(dmin * m)."""
        sc, m = self._scales_mins(params)
        a = (params["d"].astype(F)[:, None] * sc.astype(F)).astype(F)
        b = -(params["dmin"].astype(F)[:, None] * m.astype(F)).astype(F)
        shape = a.shape + (self.sub,)
        return np.broadcast_to(a[..., None], shape), np.broadcast_to(b[..., None], shape)

    def column_scales(self, params):
        rows = params.shape[0]
        a, b = self._affine(params.reshape(-1))
        return a.reshape(rows, -1).copy(), b.reshape(rows, -1).copy()

    # --- the parameter search of _ref / _impl ------------------------------------------------------------
    def _search(self, xs: np.ndarray, qw: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """xs [S, nsub, sub] -> (params [S], codes [S, nsub, sub] of the search) before the re-rounding."""
        S, nsub, sub = xs.shape
        flat = xs.reshape(-1, sub)
        params = np.zeros(S, dtype=self.param_dtype)
        if qw is None:
            scales, mins, L = make_qkx_quants(flat, self.nmax, self._ref_weights(xs).reshape(-1, sub),
                                              *self.ref_search)
            scales, mins = scales.reshape(S, nsub), mins.reshape(S, nsub)
            max_scale, max_min = _running_max(scales), _running_max(mins)
            ls, d = self._linear_scales(scales, max_scale)
            lm, dmin = self._linear_scales(mins, max_min)
        else:
            w = self._impl_weights(xs, qw)
            scales, mins, L = make_qkx_quants(flat, self.nmax, w.reshape(-1, sub), -0.9, 0.05, 36, False, x3=True)
            sw = seq_sum(w.reshape(-1, sub)).reshape(S, nsub)
            d, ls = make_qp_quants(scales.reshape(S, nsub), self.scale_max, sw)
            dmin, lm = make_qp_quants(mins.reshape(S, nsub), self.scale_max, sw)
        with np.errstate(over="ignore"):
            params["d"] = d.astype(np.float16)
            params["dmin"] = dmin.astype(np.float16)
        self._set_scales_mins(params, ls, lm)
        return params, L.reshape(S, nsub, sub)

    def _quantize_rows(self, x, imatrix, blocks):
        xs = superblocks(x, self.sub)
        params, L = self._search(xs, importance_tiles(imatrix, x.shape[0], self.sub))
        sc, m = self._scales_mins(params)
        dl = (params["d"].astype(F)[:, None] * sc.astype(F)).astype(F)
        ml = (params["dmin"].astype(F)[:, None] * m.astype(F)).astype(F)
        L = requantize(xs, L, dl, ml, 0, self.nmax)
        for f in self.param_fields:
            blocks[f] = params[f]
        self._store_codes(blocks, L.reshape(-1, QK_K).astype(np.int16))


class Q2_K(_KWithMin):
    name, type_id, ftype = "q2_k", 10, 10
    sub, nmax, scale_max = 16, 3, 15
    ref_search = (-0.5, 0.1, 15, True)
    code_min, code_max = 0, 3
    block_dtype = np.dtype([("scales", "u1", 16), ("qs", "u1", 64), ("d", "<f2"), ("dmin", "<f2")])

    def _ref_weights(self, xs):
        return np.abs(xs)

    def _impl_weights(self, xs, qw):
        s2 = _sigma2(xs, 1.0)
        return (qw * np.sqrt((s2[:, None, None] + (xs * xs).astype(F)).astype(F)).astype(F)).astype(F)

    def _linear_scales(self, v, vmax):
        """Q2_K _ref: l = nearest_int(15/max * v) (4 bits), stored scale max/15 (0 when max == 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            isc = (F(15) / np.where(vmax > 0, vmax, F(1))).astype(F)
            l = nearest_int((isc[:, None] * v).astype(F))
        return np.where((vmax > 0)[:, None], l, 0), np.where(vmax > 0, (vmax / F(15)).astype(F), F(0))

    def _scales_mins(self, params):
        s = params["scales"]
        return s & 0xF, s >> 4

    def _set_scales_mins(self, params, ls, lm):
        params["scales"] = ((ls & 0xFF) | ((lm << 4) & 0xFF)).astype(np.uint8)

    def _store_codes(self, blocks, q):
        L = q.reshape(-1, 2, 4, 32).astype(np.uint8)
        blocks["qs"] = (L[:, :, 0] | (L[:, :, 1] << 2) | (L[:, :, 2] << 4) | (L[:, :, 3] << 6)).reshape(-1, 64)

    def _load_codes(self, blocks):
        qs = blocks["qs"].reshape(-1, 2, 1, 32)
        return ((qs >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3).reshape(-1, QK_K).astype(np.int16)


class _Q45_K(_KWithMin):
    sub, scale_max = 32, 63

    def _ref_weights(self, xs):
        av = np.sqrt((seq_sum((xs * xs).astype(F).reshape(-1, self.sub)) / F(32)).astype(F)).astype(F)
        return (av.reshape(xs.shape[:2])[..., None] + np.abs(xs)).astype(F)

    def _impl_weights(self, xs, qw):
        s2 = _sigma2(xs, 2.0)
        return (qw * np.sqrt((s2[:, None, None] + (xs * xs).astype(F)).astype(F)).astype(F)).astype(F)

    def _linear_scales(self, v, vmax):
        """_ref: l = min(63, (uint8)nearest_int(63/max * v)), stored max/63."""
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(vmax > 0, (F(63) / np.where(vmax > 0, vmax, F(1))).astype(F), F(0))
            l = np.minimum(63, nearest_int((inv[:, None] * v).astype(F)) & 0xFF)
        return l, (vmax / F(63)).astype(F)

    def _scales_mins(self, params):
        return unpack_scale_min_k4(params["scales"].reshape(-1, 12))

    def _set_scales_mins(self, params, ls, lm):
        params["scales"] = pack_scale_min_k4(ls, lm)


class Q4_K(_Q45_K):
    name, type_id, ftype = "q4_k", 12, 12
    nmax, code_min, code_max = 15, 0, 15
    ref_search = (-1.0, 0.1, 20, False)
    block_dtype = np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qs", "u1", 128)])

    def _store_codes(self, blocks, q):
        L = q.reshape(-1, 4, 2, 32).astype(np.uint8)
        blocks["qs"] = (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(-1, 128)

    def _load_codes(self, blocks):
        qs = blocks["qs"].reshape(-1, 4, 1, 32)
        return np.concatenate([qs & 0xF, qs >> 4], axis=2).reshape(-1, QK_K).astype(np.int16)


class Q5_K(_Q45_K):
    name, type_id, ftype = "q5_k", 13, 13
    nmax, code_min, code_max = 31, 0, 31
    ref_search = (-0.5, 0.1, 15, False)
    code_fields = ("qh", "qs")
    block_dtype = np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qh", "u1", 32),
                            ("qs", "u1", 128)])

    def _store_codes(self, blocks, q):
        L = q.reshape(-1, 4, 2, 32).astype(np.uint8)
        blocks["qs"] = ((L[:, :, 0] & 0xF) | ((L[:, :, 1] & 0xF) << 4)).reshape(-1, 128)
        hi = (L >> 4) << np.arange(8, dtype=np.uint8).reshape(1, 4, 2, 1)   # bit 2c (low half), 2c+1 (high)
        blocks["qh"] = np.bitwise_or.reduce(hi.reshape(-1, 8, 32), axis=1)

    def _load_codes(self, blocks):
        qs = blocks["qs"].reshape(-1, 4, 1, 32)
        low = np.concatenate([qs & 0xF, qs >> 4], axis=2)
        bits = (blocks["qh"].reshape(-1, 1, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 4, 2, 1)) & 1
        return (low | (bits << 4)).reshape(-1, QK_K).astype(np.int16)

