"""IQ4_NL: 32-element blocks of 4-bit indices into a fixed non-uniform table, one fp16 scale.

Layout (ggml-common.h block_iq4_nl): ``half d; uint8 qs[16]`` with byte j = index of element j (low nibble)
| index of element j + 16 (high nibble); value = d * kvalues_iq4nl[index].

ggml_quantize_chunk runs quantize_iq4_nl (ggml-quants.c), i.e. quantize_row_iq4_nl_impl(32, 32, ..., ntry=7)
for every block, with or without importance weights:
    sigma2 = 2 * sum(x^2) / 32;  w = qw ? qw * sqrtf(sigma2 + x^2) : x^2
    d0 = -max / kvalues[0] (max: signed element of largest |x|); indices by best_index_int8(x / d0);
    d = sum(w q x) / sum(w q^2); then for itry in -7..7: id = (itry + kvalues[0]) / max, indices, keep the d
    with the largest sumqx^2 / sumq2; store fp16(d); final indices = best_index_int8(x * (1/d)) with the
    float32 d. An all-zero block (amax < 1e-15) stores d = 0 and index 8 everywhere (best index of 0).
"""
from __future__ import annotations

import numpy as np

from .base import BlockType
from .legacy import QK, _nibbles, _unnibble
from .search import GROUP_MAX_EPS, F, best_index_int8, seq_sum, signed_max

KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)


def iq4nl_scale(xb: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """The float32 scale quantize_row_iq4_nl_impl chooses for each 32-block of ``xb`` [B, 32] (ntry = 7)."""
    xb = np.asarray(xb, dtype=F)
    vals = KVALUES.astype(F)
    sigma2 = (seq_sum((xb * xb).astype(F)) * (F(2) / F(QK))).astype(F)
    if qw is None:
        w = (xb * xb).astype(F)
    else:
        w = (np.broadcast_to(np.asarray(qw, F), xb.shape) *
             np.sqrt((sigma2[:, None] + (xb * xb).astype(F)).astype(F)).astype(F)).astype(F)
    mx = signed_max(xb)
    zero = np.abs(mx) < GROUP_MAX_EPS
    safe = np.where(zero, F(1), mx)

    def sums(idv):
        q = vals[best_index_int8(KVALUES, (idv[:, None] * xb).astype(F))]
        return seq_sum(((w * q).astype(F) * xb).astype(F)), seq_sum(((w * q).astype(F) * q).astype(F))

    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        d = ((-safe).astype(F) / vals[0]).astype(F)
        sumqx, sumq2 = sums((F(1) / d).astype(F))
        d = np.where(sumq2 > 0, (sumqx / np.where(sumq2 > 0, sumq2, F(1))).astype(F), F(0))
        best = (d * sumqx).astype(F)
        for itry in range(-7, 8):
            sqx, sq2 = sums((F(itry + int(KVALUES[0])) / safe).astype(F))
            better = (sq2 > 0) & ((sqx * sqx).astype(F) > (best * sq2).astype(F))
            nd = (sqx / np.where(sq2 > 0, sq2, F(1))).astype(F)
            d = np.where(better, nd, d)
            best = np.where(better, (nd * sqx).astype(F), best)
    return np.where(zero, F(0), d).astype(F)


class IQ4_NL(BlockType):
    name, type_id, ftype = "iq4_nl", 20, 19
    block_size = QK
    code_min, code_max = 0, 15
    solver_groups = (QK,)
    codebook = KVALUES
    block_dtype = np.dtype([("d", "<f2"), ("qs", "u1", 16)])

    def _store_codes(self, blocks, q):
        blocks["qs"] = _nibbles(q)

    def _load_codes(self, blocks):
        return _unnibble(blocks["qs"])

    def _dequantize_blocks(self, blocks, q):
        return (blocks["d"].astype(F)[:, None] * KVALUES.astype(F)[q]).astype(F)

    def _quantize_rows(self, x, imatrix, blocks):
        xb = x.reshape(-1, QK)
        qw = None if imatrix is None else np.tile(imatrix.reshape(-1, QK), (x.shape[0], 1))
        d = iq4nl_scale(xb, qw)
        with np.errstate(divide="ignore"):
            idv = np.where(d != 0, F(1) / d, F(0)).astype(F)
        blocks["d"] = d.astype(np.float16)
        self._store_codes(blocks, best_index_int8(KVALUES, (idv[:, None] * xb).astype(F)).astype(np.int16))

    def fit(self, x, importance=None, sigma2=None, mode="plain"):
        d = iq4nl_scale(x.astype(F), importance if mode == "weighted" else None)
        out = np.zeros((x.shape[0], 1), dtype=self.param_dtype)
        with np.errstate(over="ignore"):
            out["d"] = d.astype(np.float16)[:, None]
        return out

    def column_scales(self, params):
        return np.repeat(params["d"].astype(F), QK, axis=1), None
