// Per-type lattice routines shared by the CPU sweep, the CUDA sweep and the native ggml quantizer (host+device).
// Float32 parts mirror ggml-quants.c (see search.h for the no-contraction rule); the Python reference is
// python/tarq/ggml/{legacy,iq4_nl,kquants,kquants_sym}.py. Adding a type: its TypeInfo and layout in layout.h,
// a fit (the solver's parameter choice, stored at file precision), its per-column (a, b) and ggml's quantizer.
#pragma once
#include <cmath>
#include <cstdint>

#include "kquants.h"
#include "layout.h"
#include "search.h"

namespace tarq {
namespace lattice {

// kvalues_iq4nl (ggml-common.h)
#if defined(__CUDACC__)
__device__ __constant__ static const int8_t kIq4nlDevice[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                                 1, 13, 25, 38, 53, 69, 89, 113};
#endif
static const int8_t kIq4nlHost[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

TARQ_HD inline const int8_t* iq4nl_values() {
#if defined(__CUDA_ARCH__)
    return kIq4nlDevice;
#else
    return kIq4nlHost;
#endif
}

// ---------------------------------------------------------------- IQ4_NL (quantize_row_iq4_nl_impl, ntry = 7)
// best_index_int8(16, kvalues, x) without branches: the number of table gaps k whose rule sends x to the upper
// entry, fl32(x - v[k]) >= fl32(v[k+1] - x). Equal to the binary search for every non-NaN x: a gap below x's
// bracket always counts (left side > 0 >= right side), a gap above never does, and the bracket's gap applies
// ggml's tie rule (ties go up). Vectorizes over the block's elements.
TARQ_HD inline int iq4nl_index(float x) {
    const int8_t* kv = iq4nl_values();
    int idx = 0;
    for (int k = 0; k < 15; ++k) idx += (x - static_cast<float>(kv[k])) >= (static_cast<float>(kv[k + 1]) - x);
    return idx;
}

// sum_j w_j q_j x_j and sum_j w_j q_j^2 (in index order) for the indices of x * id
TARQ_HD inline void iq4nl_sums(const float* x, const float* w, float id, float* sumqx, float* sumq2) {
    const int8_t* kv = iq4nl_values();
    float qx[32], q2[32];
    for (int j = 0; j < 32; ++j) {
        const float q = static_cast<float>(kv[iq4nl_index(id * x[j])]);
        qx[j] = w[j] * q * x[j];
        q2[j] = w[j] * q * q;
    }
    float a = 0.f, b = 0.f;
    for (int j = 0; j < 32; ++j) {
        a += qx[j];
        b += q2[j];
    }
    *sumqx = a;
    *sumq2 = b;
}

TARQ_SEARCH float iq4nl_scale(const float* x, const float* qw) {
    const int8_t* kv = iq4nl_values();
    float w[32];
    const float sigma2 = sum_squares(32, x) * (2.f / 32.f);
    if (qw) importance_weights(32, x, qw, sigma2, w);
    else for (int j = 0; j < 32; ++j) w[j] = x[j] * x[j];
    const float mx = signed_max(32, x);
    if (fabsf(mx) < kGroupMaxEps) return 0.f;
    float d = -mx / static_cast<float>(kv[0]);
    float sumqx, sumq2;
    iq4nl_sums(x, w, 1.f / d, &sumqx, &sumq2);
    d = sumq2 > 0.f ? sumqx / sumq2 : 0.f;
    float best = d * sumqx;
    for (int t = -7; t <= 7; ++t) {
        float sqx, sq2;
        iq4nl_sums(x, w, static_cast<float>(t + kv[0]) / mx, &sqx, &sq2);
        if (sq2 > 0.f && sqx * sqx > best * sq2) {
            d = sqx / sq2;
            best = d * sqx;
        }
    }
    return d;
}

// ---------------------------------------------------------------- legacy 32-element types
TARQ_HD inline int legacy_half(int id) { return id == Q4_0 ? 8 : 16; }     // Q4_0/Q5_0: codes in [-half, half)
TARQ_HD inline int legacy_levels(int id) { return id == Q4_1 ? 16 : 32; }  // Q4_1/Q5_1: codes in [0, levels)

// Solver fit of a G-column group of one row (G = 32, or 64/128 for Q4_0/Q5_0/Q8_0): G/32 param records.
TARQ_SEARCH void fit_legacy(int id, int G, int mode, const double* x64, const float* x32, const float* qw,
                               float sigma2, uint8_t* params) {
    float d = 0.f, m = 0.f;
    if (id == Q4_0 || id == Q5_0) {
        if (mode == kPlain) {  // signed max of the float64 weights (first of largest |w|), then float32 / -half
            double amax = 0.0, ext = 0.0;
            for (int k = 0; k < G; ++k) {
                const double a = fabs(x64[k]);
                if (a > amax) { amax = a; ext = x64[k]; }
            }
            d = static_cast<float>(ext) / static_cast<float>(-legacy_half(id));
        } else {
            float w[kMaxN];
            int8_t L[kMaxN];
            importance_weights(G, x32, qw, sigma2, w);
            d = make_qx_quants(G, legacy_half(id), x32, L, 1, w);
        }
    } else if (id == Q8_0) {  // quantize_q8_0 ignores importance weights
        double amax = 0.0;
        for (int k = 0; k < G; ++k) amax = fabs(x64[k]) > amax ? fabs(x64[k]) : amax;
        d = static_cast<float>(amax) / 127.f;
    } else {  // Q4_1 / Q5_1
        if (mode == kPlain) {
            float mn = x32[0], mx = x32[0];
            for (int k = 1; k < G; ++k) {
                mn = x32[k] < mn ? x32[k] : mn;
                mx = x32[k] > mx ? x32[k] : mx;
            }
            d = (mx - mn) / static_cast<float>(legacy_levels(id) - 1);
            m = mn;
        } else {
            float w[32], the_min;
            uint8_t L[32];
            importance_weights(32, x32, qw, sigma2, w);
            d = make_qkx_quants(32, legacy_levels(id) - 1, x32, w, L, &the_min, -0.9f, 0.05f, 36, false, true);
            m = -the_min;
        }
    }
    for (int b = 0; b < G / 32; ++b) {
        store_half(params + b * (id == Q4_1 || id == Q5_1 ? 4 : 2), d);
        if (id == Q4_1 || id == Q5_1) store_half(params + b * 4 + 2, m);
    }
}

// ggml_quantize_chunk for one 32-block of a legacy type: codes (type convention) and the param record.
TARQ_HD inline void ggml_legacy_block(int id, const float* x, const float* qw, float sigma2, int8_t* q, uint8_t* prm) {
    if (id == Q8_0) {
        float amax = 0.f;
        for (int j = 0; j < 32; ++j) amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
        const float d = amax / 127.f, id_ = d != 0.f ? 1.f / d : 0.f;
        for (int j = 0; j < 32; ++j) q[j] = static_cast<int8_t>(roundf(x[j] * id_));
        store_half(prm, d);
        return;
    }
    if (qw) {  // quantize_row_*_impl
        float w[32];
        importance_weights(32, x, qw, sigma2, w);
        if (id == Q4_0 || id == Q5_0) {
            const int half = legacy_half(id);
            const float d = make_qx_quants(32, half, x, q, 1, w);
            for (int j = 0; j < 32; ++j) q[j] = static_cast<int8_t>(q[j] - half);
            store_half(prm, d);
        } else {
            uint8_t L[32];
            float the_min;
            const float d = make_qkx_quants(32, legacy_levels(id) - 1, x, w, L, &the_min, -0.9f, 0.05f, 36, false, true);
            for (int j = 0; j < 32; ++j) q[j] = static_cast<int8_t>(L[j]);
            store_half(prm, d);
            store_half(prm + 2, -the_min);
        }
        return;
    }
    if (id == Q4_0 || id == Q5_0) {  // quantize_row_q{4,5}_0_ref
        const int half = legacy_half(id);
        const float d = signed_max(32, x) / static_cast<float>(-half), id_ = d != 0.f ? 1.f / d : 0.f;
        for (int j = 0; j < 32; ++j) {
            const int v = static_cast<int8_t>(x[j] * id_ + (static_cast<float>(half) + 0.5f));
            q[j] = static_cast<int8_t>(imin(2 * half - 1, v) - half);
        }
        store_half(prm, d);
    } else {  // quantize_row_q{4,5}_1_ref
        float mn = 3.402823466e+38f, mx = -3.402823466e+38f;
        for (int j = 0; j < 32; ++j) {
            if (x[j] < mn) mn = x[j];
            if (x[j] > mx) mx = x[j];
        }
        const int levels = legacy_levels(id);
        const float d = (mx - mn) / static_cast<float>(levels - 1), id_ = d != 0.f ? 1.f / d : 0.f;
        for (int j = 0; j < 32; ++j) {
            const int v = static_cast<int>((x[j] - mn) * id_ + 0.5f);
            q[j] = static_cast<int8_t>(levels == 16 ? imin(15, v) : (v & 0x1F));
        }
        store_half(prm, d);
        store_half(prm + 2, mn);
    }
}

// ---------------------------------------------------------------- values of a group's columns
// Per column of a G-column group: the float32 (a, b) of value(q) = fl32(fl32(a q) + b) (b unused without an
// offset; codebook types use value = fl32(a kvalues[q])). Exactly ggml's dequantize_row_* for the stored params.
TARQ_SEARCH void group_affine(int id, int G, const uint8_t* prm, float* a, float* b) {
    switch (id) {
        case Q4_0: case Q5_0: case Q8_0: case IQ4_NL:
            for (int k = 0; k < G; ++k) { a[k] = load_half(prm + 2 * (k / 32)); b[k] = 0.f; }
            return;
        case Q4_1: case Q5_1:
            for (int k = 0; k < G; ++k) { a[k] = load_half(prm + 4 * (k / 32)); b[k] = load_half(prm + 4 * (k / 32) + 2); }
            return;
        case Q2_K: {
            const float d = load_half(prm + 16), dmin = load_half(prm + 18);
            for (int k = 0; k < 256; ++k) {
                const int s = prm[k / 16];
                a[k] = d * static_cast<float>(s & 0xF);
                b[k] = -(dmin * static_cast<float>(s >> 4));
            }
            return;
        }
        case Q3_K: {
            const float d = load_half(prm + 12);
            for (int k = 0; k < 256; ++k) { a[k] = d * static_cast<float>(q3k_scale(prm, k / 16)); b[k] = 0.f; }
            return;
        }
        case Q4_K: case Q5_K: {
            const float d = load_half(prm), dmin = load_half(prm + 2);
            for (int k = 0; k < 256; ++k) {
                int sc, m;
                scale_min_k4(k / 32, prm + 4, &sc, &m);
                a[k] = d * static_cast<float>(sc);
                b[k] = -(dmin * static_cast<float>(m));
            }
            return;
        }
        case Q6_K: {
            const float d = load_half(prm + 16);
            for (int k = 0; k < 256; ++k) { a[k] = d * static_cast<float>(static_cast<int8_t>(prm[k / 16])); b[k] = 0.f; }
            return;
        }
        default:
            return;
    }
}

// ---------------------------------------------------------------- the solver's fit of one group
// x64: the current (error-updated) weights of one row's group; qw: importance of the group's columns (mode
// kWeighted); sigma2: the row's mean square (legacy types, kWeighted). Writes G / block param records.
TARQ_SEARCH void fit_group(int id, int G, int mode, const double* x64, const float* qw, float sigma2, uint8_t* prm) {
    float x32[256];
    for (int k = 0; k < G; ++k) x32[k] = static_cast<float>(x64[k]);
    const float* w = mode == kWeighted ? qw : nullptr;
    if (id == IQ4_NL) {
        store_half(prm, iq4nl_scale(x32, w));
    } else if (id == Q2_K || id == Q3_K || id == Q4_K || id == Q5_K || id == Q6_K) {
        int8_t codes[256];
        kq_search(id, x32, w, prm, codes);
    } else {
        fit_legacy(id, G, mode, x64, x32, w, sigma2, prm);
    }
}

// Nearest stored value of w given (a, b): q = clamp(floor((w - b) * (1/a)_f32 + 0.5)), value = fl32(fl32(a q) + b).
TARQ_HD inline int round_affine(double w, float a, float b, bool offset, int lo, int hi, double* value) {
    const double inv = a != 0.f ? static_cast<double>(1.f / a) : 0.0;
    const double t = offset ? w - static_cast<double>(b) : w;
    double q = floor(t * inv + 0.5);
    q = q < lo ? lo : q > hi ? hi : q;
    float v = a * static_cast<float>(q);
    if (offset) v = v + b;
    *value = v;
    return static_cast<int>(q);
}

// Nearest codebook entry of w / a (t = w * (1/a)_f32 in float64; ties to the larger entry), value = fl32(a kv[i]).
TARQ_HD inline int round_codebook(double w, float a, const int8_t* kv, int n, double* value) {
    const double t = w * (a != 0.f ? static_cast<double>(1.f / a) : 0.0);
    int i;
    if (t <= kv[0]) {
        i = 0;
    } else if (t >= kv[n - 1]) {
        i = n - 1;
    } else {
        int hi = 1;
        while (hi < n - 1 && !(t < kv[hi])) ++hi;
        i = (t - kv[hi - 1] < kv[hi] - t) ? hi - 1 : hi;
    }
    *value = a * static_cast<float>(kv[i]);
    return i;
}

}  // namespace lattice
}  // namespace tarq
