"""Symmetric K-quants Q3_K and Q6_K: 256-element super-blocks of 16-element sub-blocks, one fp16 d and a signed
integer scale per sub-block; value = fl32(fl32(d * sc) * q) (ggml-quants.c dequantize_row_q{3,6}_K).

ggml's quantizers (mirrored in float32):
* Q3_K, no importance (quantize_row_q3_K_ref): make_q3_quants(16, 4, x, L, do_rmse=true) per sub-block;
  6-bit signed scale l = clamp((int8)nearest_int(-32/max_scale * s), -32, 31), d = 1/iscale; codes re-rounded
  as nearest_int(x / (d*sc)) in [-4, 3]. With importance (_impl): sigma2 = 2 sum(x^2)/256, w = qw*sqrtf(sigma2
  + x^2), make_qx_quants(16, 4, x, L, 1, w); scales by make_qx_quants(16, 32, scales, Ls, 1, sum of w).
* Q6_K (quantize_row_q6_K_ref / _impl): make_qx_quants(16, 32, x, L, 1, qw or NULL); int8 scale
  min(127, nearest_int(-128/max_scale * s)), d = 1/iscale; codes nearest_int(x / (d*sc)) in [-32, 31];
  a super-block whose largest |scale| < 1e-15 is stored as all zero bytes.
"""
from __future__ import annotations

import numpy as np

from .kquants import QK_K, _KQuant, importance_tiles, requantize, superblocks
from .search import GROUP_MAX_EPS, F, make_q3_quants, make_qx_quants, nearest_int, seq_sum, signed_max


def _wrap_int8(v: np.ndarray) -> np.ndarray:
    return ((np.asarray(v).astype(np.int64) + 128) & 0xFF) - 128


class _KSymmetric(_KQuant):
    block_size = QK_K
    solver_groups = (QK_K,)
    sub = 16

    def _sub_scales(self, params) -> np.ndarray:
        raise NotImplementedError

    def _a(self, params) -> np.ndarray:
        return (params["d"].astype(F)[:, None] * self._sub_scales(params).astype(F)).astype(F)

    def _dequantize_blocks(self, blocks, q):
        a = self._a(blocks)
        return (a[..., None] * q.astype(F).reshape(a.shape + (self.sub,))).astype(F).reshape(q.shape)

    def column_scales(self, params):
        rows = params.shape[0]
        return np.repeat(self._a(params.reshape(-1)), self.sub, axis=1).reshape(rows, -1), None

    def _quantize_rows(self, x, imatrix, blocks):
        xs = superblocks(x, self.sub)
        params, L = self._search(xs, importance_tiles(imatrix, x.shape[0], self.sub))
        L = requantize(xs, L, self._a(params), None, self.code_min, self.code_max)
        for f in self.param_fields:
            blocks[f] = params[f]
        self._store_codes(blocks, L.reshape(-1, QK_K).astype(np.int16))


class Q3_K(_KSymmetric):
    name, type_id, ftype = "q3_k", 11, 11
    code_min, code_max = -4, 3
    code_fields = ("hmask", "qs")
    block_dtype = np.dtype([("hmask", "u1", 32), ("qs", "u1", 64), ("scales", "u1", 12), ("d", "<f2")])

    def _search(self, xs, qw):
        S = xs.shape[0]
        flat = xs.reshape(-1, 16)
        if qw is None:
            scales, L = make_q3_quants(flat, 4, True)
            scales = scales.reshape(S, 16)
            mx = signed_max(scales)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                iscale = (F(-32) / np.where(mx != 0, mx, F(1))).astype(F)
                l = np.clip(_wrap_int8(nearest_int((iscale[:, None] * scales).astype(F))), -32, 31) + 32
                d = np.where(mx != 0, (F(1) / iscale).astype(F), F(0))
            l = np.where((mx != 0)[:, None], l, -1)   # -1: leave the scale bytes at zero (no scale stored)
        else:
            s2 = ((F(2) * seq_sum((xs * xs).astype(F).reshape(S, -1))).astype(F) / F(QK_K)).astype(F)
            w = (qw * np.sqrt((s2[:, None, None] + (xs * xs).astype(F)).astype(F)).astype(F)).astype(F)
            scales, L = make_qx_quants(flat, 4, 1, w.reshape(-1, 16))
            sw = seq_sum(w.reshape(-1, 16)).reshape(S, 16)
            d, l = make_qx_quants(scales.reshape(S, 16), 32, 1, sw)
        params = np.zeros(S, dtype=self.param_dtype)
        params["scales"] = self._pack_scales(l)
        with np.errstate(over="ignore"):
            params["d"] = d.astype(np.float16)
        return params, (L - 4).reshape(S, 16, 16)

    @staticmethod
    def _pack_scales(l: np.ndarray) -> np.ndarray:
        """16 six-bit values [S, 16] (-1 = absent) -> the 12 scale bytes (low nibbles, then 2-bit high parts)."""
        present = l >= 0
        v = np.where(present, l, 0).astype(np.uint8)
        out = np.zeros((l.shape[0], 12), np.uint8)
        out[:, 0:8] = (v[:, 0:8] & 0xF) | ((v[:, 8:16] & 0xF) << 4)
        hi = (v >> 4) << (2 * (np.arange(16) // 4)).astype(np.uint8)
        out[:, 8:12] = np.bitwise_or.reduce(hi.reshape(-1, 4, 4), axis=1)
        return out

    def _sub_scales(self, params):
        s = params["scales"].reshape(-1, 12).astype(np.int16)
        j = np.arange(16)
        low = np.where(j < 8, s[:, j % 8] & 0xF, s[:, j % 8] >> 4)
        high = (s[:, 8 + j % 4] >> (2 * (j // 4))) & 3
        return (low | (high << 4)) - 32

    def _store_codes(self, blocks, q):
        L = (q + 4).astype(np.uint8)
        low = (L & 3).reshape(-1, 2, 4, 32)
        blocks["qs"] = (low[:, :, 0] | (low[:, :, 1] << 2) | (low[:, :, 2] << 4) | (low[:, :, 3] << 6)).reshape(-1, 64)
        hb = (L >> 2).reshape(-1, 8, 32) << np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
        blocks["hmask"] = np.bitwise_or.reduce(hb, axis=1)

    def _load_codes(self, blocks):
        qs = blocks["qs"].reshape(-1, 2, 1, 32)
        low = ((qs >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3).reshape(-1, QK_K)
        hb = ((blocks["hmask"].reshape(-1, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1)
        return (low | (hb.reshape(-1, QK_K) << 2)).astype(np.int16) - 4


class Q6_K(_KSymmetric):
    name, type_id, ftype = "q6_k", 14, 14
    code_min, code_max = -32, 31
    code_fields = ("ql", "qh")
    block_dtype = np.dtype([("ql", "u1", 128), ("qh", "u1", 64), ("scales", "i1", 16), ("d", "<f2")])

    def _search(self, xs, qw):
        S = xs.shape[0]
        scales, L = make_qx_quants(xs.reshape(-1, 16), 32, 1, None if qw is None else qw.reshape(-1, 16))
        scales = scales.reshape(S, 16)
        mx = signed_max(scales)
        zero = np.abs(mx) < GROUP_MAX_EPS
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            iscale = (F(-128) / np.where(zero, F(1), mx)).astype(F)
            sc = _wrap_int8(np.minimum(127, nearest_int((iscale[:, None] * scales).astype(F))))
            d = (F(1) / iscale).astype(F)
        params = np.zeros(S, dtype=self.param_dtype)
        params["scales"] = np.where(zero[:, None], 0, sc).astype(np.int8)
        with np.errstate(over="ignore"):
            params["d"] = np.where(zero, F(0), d).astype(np.float16)
        L = np.where(zero[:, None, None], 0, L.reshape(S, 16, 16))    # memset(&y[i], 0, ...): q = -32
        return params, L - 32

    def _sub_scales(self, params):
        return params["scales"].reshape(-1, 16)

    def _store_codes(self, blocks, q):
        L = (q + 32).astype(np.uint8).reshape(-1, 2, 4, 32)     # [half, quarter k, l]: element 128h + 32k + l
        blocks["ql"] = np.concatenate([(L[:, :, 0] & 0xF) | ((L[:, :, 2] & 0xF) << 4),
                                       (L[:, :, 1] & 0xF) | ((L[:, :, 3] & 0xF) << 4)], axis=2).reshape(-1, 128)
        blocks["qh"] = ((L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4) |
                        ((L[:, :, 3] >> 4) << 6)).reshape(-1, 64)

    def _load_codes(self, blocks):
        ql = blocks["ql"].reshape(-1, 2, 2, 32)                   # [half, first/second 32 bytes, l]
        qh = blocks["qh"].reshape(-1, 2, 1, 32)
        low = np.stack([ql[:, :, 0] & 0xF, ql[:, :, 1] & 0xF, ql[:, :, 0] >> 4, ql[:, :, 1] >> 4], axis=2)
        high = (qh >> (2 * np.arange(4, dtype=np.uint8)).reshape(1, 1, 4, 1)) & 3
        return (low | (high << 4)).reshape(-1, QK_K).astype(np.int16) - 32
