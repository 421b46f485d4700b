// K-quant super-blocks (Q2_K..Q6_K): ggml's parameter search of quantize_row_*_ref / _impl and its final
// re-rounding, shared by the solver's fit (types.h fit_group) and the native ggml quantizer (lattice_ops.cpp).
// Python reference: python/tarq/ggml/kquants.py, kquants_sym.py. Same no-contraction rule as search.h.
#pragma once
#include <cmath>
#include <cstdint>

#include "layout.h"
#include "search.h"

namespace tarq {
namespace lattice {

// w_j = qw_j * sqrtf(sigma2 + x_j^2) (ggml's importance weights)
TARQ_HD inline void importance_weights(int n, const float* x, const float* qw, float sigma2, float* w) {
    for (int j = 0; j < n; ++j) w[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
}

TARQ_HD inline float sum_squares(int n, const float* x) {
    float s = 0.f;
    for (int j = 0; j < n; ++j) s += x[j] * x[j];
    return s;
}

// ---------------------------------------------------------------- K-quants: the search of one super-block
// Writes the param record and the search's own codes (type convention) for one 256-element super-block.
// qw == nullptr: quantize_row_*_ref's search; else quantize_row_*_impl's with importance qw.
TARQ_SEARCH void kq_search(int id, const float* x, const float* qw, uint8_t* prm, int8_t* q) {
    float w[256], scales[16], mins[16], sw[16];
    uint8_t L[256];
    if (id == Q2_K || id == Q4_K || id == Q5_K) {
        const int sub = id == Q2_K ? 16 : 32, nsub = 256 / sub;
        const int nmax = id == Q2_K ? 3 : id == Q4_K ? 15 : 31;
        uint8_t ls[16], lm[16];
        float d, dmin;
        if (!qw) {
            for (int j = 0; j < nsub; ++j) {
                const float* xs = x + sub * j;
                if (id == Q2_K) {
                    for (int l = 0; l < sub; ++l) w[l] = fabsf(xs[l]);
                    scales[j] = make_qkx_quants(16, 3, xs, w, L + sub * j, &mins[j], -0.5f, 0.1f, 15, true, false);
                } else {
                    const float av = sqrtf(sum_squares(32, xs) / 32.f);
                    for (int l = 0; l < 32; ++l) w[l] = av + fabsf(xs[l]);
                    scales[j] = id == Q4_K
                        ? make_qkx_quants(32, 15, xs, w, L + sub * j, &mins[j], -1.f, 0.1f, 20, false, false)
                        : make_qkx_quants(32, 31, xs, w, L + sub * j, &mins[j], -0.5f, 0.1f, 15, false, false);
                }
            }
            float max_scale = 0.f, max_min = 0.f;
            for (int j = 0; j < nsub; ++j) {
                if (scales[j] > max_scale) max_scale = scales[j];
                if (mins[j] > max_min) max_min = mins[j];
            }
            if (id == Q2_K) {
                const float is = max_scale > 0.f ? 15.f / max_scale : 0.f, im = max_min > 0.f ? 15.f / max_min : 0.f;
                for (int j = 0; j < 16; ++j) {
                    ls[j] = max_scale > 0.f ? static_cast<uint8_t>(nearest_int(is * scales[j])) : 0;
                    lm[j] = max_min > 0.f ? static_cast<uint8_t>(nearest_int(im * mins[j])) : 0;
                }
                d = max_scale > 0.f ? max_scale / 15.f : 0.f;
                dmin = max_min > 0.f ? max_min / 15.f : 0.f;
            } else {
                const float is = max_scale > 0.f ? 63.f / max_scale : 0.f, im = max_min > 0.f ? 63.f / max_min : 0.f;
                for (int j = 0; j < 8; ++j) {
                    ls[j] = static_cast<uint8_t>(imin(63, static_cast<uint8_t>(nearest_int(is * scales[j]))));
                    lm[j] = static_cast<uint8_t>(imin(63, static_cast<uint8_t>(nearest_int(im * mins[j]))));
                }
                d = max_scale / 63.f;
                dmin = max_min / 63.f;
            }
        } else {
            const float sigma2 = (id == Q2_K ? 1.f : 2.f) * sum_squares(256, x) / 256.f;
            importance_weights(256, x, qw, sigma2, w);
            for (int j = 0; j < nsub; ++j) {
                float s = 0.f;
                for (int l = 0; l < sub; ++l) s += w[sub * j + l];
                sw[j] = s;
                uint8_t Lb[32];
                scales[j] = make_qkx_quants(sub, nmax, x + sub * j, w + sub * j, Lb, &mins[j], -0.9f, 0.05f, 36,
                                            false, true);
                for (int l = 0; l < sub; ++l) L[sub * j + l] = Lb[l];
            }
            const int smax = id == Q2_K ? 15 : 63;
            d = make_qp_quants(nsub, smax, scales, ls, sw);
            dmin = make_qp_quants(nsub, smax, mins, lm, sw);
        }
        if (id == Q2_K) {
            for (int j = 0; j < 16; ++j) prm[j] = static_cast<uint8_t>(ls[j] | (lm[j] << 4));
            store_half(prm + 16, d);
            store_half(prm + 18, dmin);
        } else {
            store_half(prm, d);
            store_half(prm + 2, dmin);
            pack_scale_min_k4(ls, lm, prm + 4);
        }
        for (int k = 0; k < 256; ++k) q[k] = static_cast<int8_t>(L[k]);
        return;
    }
    int8_t Ls[256];
    if (id == Q3_K) {
        int l6[16];
        float d = 0.f;
        if (!qw) {
            for (int j = 0; j < 16; ++j) scales[j] = make_q3_quants(16, 4, x + 16 * j, Ls + 16 * j);
            const float max_scale = signed_max(16, scales);
            for (int j = 0; j < 16; ++j) l6[j] = 0;
            if (max_scale != 0.f) {
                const float iscale = -32.f / max_scale;
                for (int j = 0; j < 16; ++j) l6[j] = clampi(static_cast<int8_t>(nearest_int(iscale * scales[j])), -32, 31) + 32;
                d = 1.f / iscale;
            }
        } else {
            const float sigma2 = 2.f * sum_squares(256, x) / 256.f;
            importance_weights(256, x, qw, sigma2, w);
            for (int j = 0; j < 16; ++j) {
                float s = 0.f;
                for (int l = 0; l < 16; ++l) s += w[16 * j + l];
                sw[j] = s;
                scales[j] = make_qx_quants(16, 4, x + 16 * j, Ls + 16 * j, 1, w + 16 * j);
            }
            int8_t lq[16];
            d = make_qx_quants(16, 32, scales, lq, 1, sw);
            for (int j = 0; j < 16; ++j) l6[j] = lq[j];
        }
        q3k_pack_scales(l6, prm);
        store_half(prm + 12, d);
        for (int k = 0; k < 256; ++k) q[k] = static_cast<int8_t>(Ls[k] - 4);
        return;
    }
    // Q6_K
    for (int j = 0; j < 16; ++j) scales[j] = make_qx_quants(16, 32, x + 16 * j, Ls + 16 * j, 1, qw ? qw + 16 * j : nullptr);
    const float max_scale = signed_max(16, scales);
    if (fabsf(max_scale) < kGroupMaxEps) {
        for (int k = 0; k < 18; ++k) prm[k] = 0;
        for (int k = 0; k < 256; ++k) q[k] = -32;
        return;
    }
    const float iscale = -128.f / max_scale;
    for (int j = 0; j < 16; ++j) prm[j] = static_cast<uint8_t>(static_cast<int8_t>(imin(127, nearest_int(iscale * scales[j]))));
    store_half(prm + 16, 1.f / iscale);
    for (int k = 0; k < 256; ++k) q[k] = static_cast<int8_t>(Ls[k] - 32);
}

// ggml's final step after the K-quant search: codes re-rounded against the stored d*sc (and dmin*m); a sub-block
// whose stored scale is zero keeps the search's codes (`if (!d) continue;`).
TARQ_HD inline void kq_requantize(int id, const float* x, const uint8_t* prm, int8_t* q) {
    switch (id) {
        case Q2_K: {
            const float d = load_half(prm + 16), dmin = load_half(prm + 18);
            for (int j = 0; j < 16; ++j) {
                const float dl = d * static_cast<float>(prm[j] & 0xF);
                if (dl == 0.f) continue;
                const float ml = dmin * static_cast<float>(prm[j] >> 4);
                for (int i = 16 * j; i < 16 * j + 16; ++i) q[i] = static_cast<int8_t>(clampi(nearest_int((x[i] + ml) / dl), 0, 3));
            }
            return;
        }
        case Q4_K: case Q5_K: {
            const float d = load_half(prm), dmin = load_half(prm + 2);
            const int nmax = id == Q4_K ? 15 : 31;
            for (int j = 0; j < 8; ++j) {
                int sc, m;
                scale_min_k4(j, prm + 4, &sc, &m);
                const float dl = d * static_cast<float>(sc);
                if (dl == 0.f) continue;
                const float ml = dmin * static_cast<float>(m);
                for (int i = 32 * j; i < 32 * j + 32; ++i) q[i] = static_cast<int8_t>(clampi(nearest_int((x[i] + ml) / dl), 0, nmax));
            }
            return;
        }
        case Q3_K: case Q6_K: {
            const float d = load_half(prm + (id == Q3_K ? 12 : 16));
            const int lo = id == Q3_K ? -4 : -32, hi = id == Q3_K ? 3 : 31;
            for (int j = 0; j < 16; ++j) {
                const int sc = id == Q3_K ? q3k_scale(prm, j) : static_cast<int8_t>(prm[j]);
                const float dl = d * static_cast<float>(sc);
                if (dl == 0.f) continue;
                for (int i = 16 * j; i < 16 * j + 16; ++i) q[i] = static_cast<int8_t>(clampi(nearest_int(x[i] / dl), lo, hi));
            }
            return;
        }
        default:
            return;
    }
}

}  // namespace lattice
}  // namespace tarq
