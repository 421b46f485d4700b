// ggml's parameter searches (ggml-quants.c, ggml 0.13.1) re-implemented for the native lattice, host and device.
// Bit-exact only in plain IEEE float32: every translation unit that includes this header is compiled without
// floating-point contraction (CMakeLists.txt: -ffp-contract=off; nvcc --fmad=false), because the shipped
// libggml-base is baseline x86-64 code without FMA. Sums run in index order, `a*b*c` is `(a*b)*c`.
// The NumPy reference of the same functions is python/tarq/ggml/search.py; tests compare both with libggml.
#pragma once
#include <cmath>
#include <cstdint>

#include "../fp16.h"

// The long searches are not inlined on the device: the CUDA sweep calls them from one lane at group starts only,
// and inlining them into every kernel instantiation makes ptxas slow for no gain.
#if defined(__CUDACC__)
#define TARQ_SEARCH __host__ __device__ inline __noinline__
#else
#define TARQ_SEARCH inline
#endif

namespace tarq {
namespace lattice {

constexpr float kGroupMaxEps = 1e-15f;
constexpr int kMaxN = 256;  // longest vector any search below is called with

// float32 x + 1.5*2^23 read back as bits: round half to even for |x| < 2^22 (ggml's nearest_int)
TARQ_HD inline int nearest_int(float x) {
    const float v = x + 12582912.f;
    return static_cast<int>(f32_bits(v) & 0x007fffffu) - 0x00400000;
}

TARQ_HD inline int imin(int a, int b) { return a < b ? a : b; }
TARQ_HD inline int imax(int a, int b) { return a > b ? a : b; }
TARQ_HD inline int clampi(int v, int lo, int hi) { return imax(lo, imin(hi, v)); }

// Index of the table entry nearest to x in a sorted int8 table; ties go to the larger entry (best_index_int8).
TARQ_HD inline int best_index_int8(int n, const int8_t* val, float x) {
    if (x <= static_cast<float>(val[0])) return 0;
    if (x >= static_cast<float>(val[n - 1])) return n - 1;
    int lo = 0, hi = n - 1;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (x < static_cast<float>(val[mid])) hi = mid; else lo = mid;
    }
    const float below = x - static_cast<float>(val[hi - 1]);
    const float above = static_cast<float>(val[hi]) - x;
    return below < above ? hi - 1 : hi;
}

// The first element of largest |x| with its sign (+0 when all are zero).
TARQ_HD inline float signed_max(int n, const float* x) {
    float amax = 0.f, mx = 0.f;
    for (int i = 0; i < n; ++i) {
        const float a = fabsf(x[i]);
        if (a > amax) { amax = a; mx = x[i]; }
    }
    return mx;
}

// Weight of element i in make_qx_quants: the given importance, or a function of x by rmse_type.
TARQ_HD inline float qx_weight(const float* qw, const float* x, int i, int rmse_type) {
    if (qw) return qw[i];
    switch (rmse_type) {
        case 1: return x[i] * x[i];
        case 2: return 1.f;
        case 3: return fabsf(x[i]);
        default: return sqrtf(fabsf(x[i]));
    }
}

// Symmetric scale search (make_qx_quants): L[i] = nmax + clamp(l_i, -nmax, nmax-1); returns the scale.
TARQ_SEARCH float make_qx_quants(int n, int nmax, const float* x, int8_t* L, int rmse_type, const float* qw) {
    const float mx = signed_max(n, x);
    if (fabsf(mx) < kGroupMaxEps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = static_cast<float>(-nmax) / mx;
    if (rmse_type == 0) {
        for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
        return 1.f / iscale;
    }
    const bool early = rmse_type < 0;
    if (early) rmse_type = -rmse_type;
    float sumlx = 0.f, suml2 = 0.f;
    for (int i = 0; i < n; ++i) {
        const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = static_cast<int8_t>(l + nmax);
        const float w = qx_weight(qw, x, i, rmse_type), lf = static_cast<float>(l);
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    float scale = suml2 != 0.f ? sumlx / suml2 : 0.f;
    if (early) return suml2 > 0.f ? 0.5f * (scale + 1.f / iscale) : 1.f / iscale;
    float best = scale * sumlx;
    for (int step = -9; step <= 9; ++step) {
        if (step == 0) continue;
        iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(step)) / mx;
        float slx = 0.f, sl2 = 0.f;
        for (int i = 0; i < n; ++i) {
            const float lf = static_cast<float>(clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
            const float w = qx_weight(qw, x, i, rmse_type);
            slx += w * x[i] * lf;
            sl2 += w * lf * lf;
        }
        if (sl2 > 0.f && slx * slx > best * sl2) {
            for (int i = 0; i < n; ++i)
                L[i] = static_cast<int8_t>(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = slx / sl2;
            best = scale * slx;
        }
    }
    return scale;
}

// Symmetric search with coordinate refinement (make_q3_quants, do_rmse = true): L[i] in [0, 2 nmax).
TARQ_SEARCH float make_q3_quants(int n, int nmax, const float* x, int8_t* L) {
    const float mx = signed_max(n, x);
    if (fabsf(mx) < kGroupMaxEps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    const float iscale = static_cast<float>(-nmax) / mx;
    float sumlx = 0.f, suml2 = 0.f;
    for (int i = 0; i < n; ++i) {
        const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = static_cast<int8_t>(l);
        const float w = x[i] * x[i], lf = static_cast<float>(l);
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for (int pass = 0; pass < 5; ++pass) {
        int changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = x[i] * x[i], li = static_cast<float>(L[i]);
            float slx = sumlx - w * x[i] * li;
            if (slx > 0.f) {
                float sl2 = suml2 - w * li * li;
                const int nl = clampi(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (nl != L[i]) {
                    const float nf = static_cast<float>(nl);
                    slx += w * x[i] * nf;
                    sl2 += w * nf * nf;
                    if (sl2 > 0.f && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = static_cast<int8_t>(nl);
                        sumlx = slx;
                        suml2 = sl2;
                        ++changed;
                    }
                }
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
    return suml2 > 0.f ? sumlx / suml2 : 0.f;
}

// Asymmetric scale + min search (make_qkx2_quants; x3 = make_qkx3_quants: weights default to x^2 and the
// degenerate test is max <= min). Returns the scale, *the_min = -min (>= 0), L[i] in [0, nmax].
TARQ_SEARCH float make_qkx_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                                     float rmin, float rdelta, int nstep, bool use_mad, bool x3) {
    uint8_t Laux[kMaxN];
    float mn = x[0], mx = x[0];
    float sum_w = weights ? weights[0] : x[0] * x[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < mn) mn = x[i];
        if (x[i] > mx) mx = x[i];
        const float w = weights ? weights[i] : x[i] * x[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (mn > 0.f) mn = 0.f;
    if (x3 ? (mx <= mn) : (mx == mn)) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -mn;
        return 0.f;
    }
    float iscale = static_cast<float>(nmax) / (mx - mn);
    float scale = 1.f / iscale;
    float best = 0.f;
    for (int i = 0; i < n; ++i) {
        L[i] = static_cast<uint8_t>(clampi(nearest_int(iscale * (x[i] - mn)), 0, nmax));
        float diff = scale * static_cast<float>(L[i]) + mn - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best += (weights ? weights[i] : x[i] * x[i]) * diff;
    }
    if (nstep >= 1) {
        for (int step = 0; step <= nstep; ++step) {
            iscale = (rmin + rdelta * static_cast<float>(step) + static_cast<float>(nmax)) / (mx - mn);
            float sum_l = 0.f, sum_l2 = 0.f, sum_xl = 0.f;
            for (int i = 0; i < n; ++i) {
                const int l = clampi(nearest_int(iscale * (x[i] - mn)), 0, nmax);
                Laux[i] = static_cast<uint8_t>(l);
                const float w = weights ? weights[i] : x[i] * x[i], lf = static_cast<float>(l);
                sum_l += w * lf;
                sum_l2 += w * lf * lf;
                sum_xl += w * lf * x[i];
            }
            const float D = sum_w * sum_l2 - sum_l * sum_l;
            if (D > 0.f) {
                float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
                float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
                if (this_min > 0.f) {
                    this_min = 0.f;
                    this_scale = sum_xl / sum_l2;
                }
                float cur = 0.f;
                for (int i = 0; i < n; ++i) {
                    float diff = this_scale * static_cast<float>(Laux[i]) + this_min - x[i];
                    diff = use_mad ? fabsf(diff) : diff * diff;
                    cur += (weights ? weights[i] : x[i] * x[i]) * diff;
                }
                if (cur < best) {
                    for (int i = 0; i < n; ++i) L[i] = Laux[i];
                    best = cur;
                    scale = this_scale;
                    mn = this_min;
                }
            }
        }
    }
    *the_min = -mn;
    return scale;
}

// Positive scale search for quantizing sub-block scales/mins (make_qp_quants): L[i] in [0, nmax] as uint8.
TARQ_SEARCH float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* qw) {
    float mx = 0.f;
    for (int i = 0; i < n; ++i) mx = mx > x[i] ? mx : x[i];
    if (mx < kGroupMaxEps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = static_cast<float>(nmax) / mx;
    for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
    const float scale = 1.f / iscale;
    float best = 0.f;
    for (int i = 0; i < n; ++i) {
        const float diff = x[i] - scale * static_cast<float>(L[i]);
        best += qw[i] * diff * diff;
    }
    for (int step = -4; step <= 4; ++step) {
        if (step == 0) continue;
        const float isc = (0.1f * static_cast<float>(step) + static_cast<float>(nmax)) / mx;
        const float sc = 1.f / isc;
        float mse = 0.f;
        for (int i = 0; i < n; ++i) {
            const int l = imin(nmax, nearest_int(isc * x[i]));
            const float diff = x[i] - sc * static_cast<float>(l);
            mse += qw[i] * diff * diff;
        }
        if (mse < best) {
            best = mse;
            iscale = isc;
        }
    }
    float sumlx = 0.f, suml2 = 0.f;
    for (int i = 0; i < n; ++i) {
        const int l = imin(nmax, nearest_int(iscale * x[i]));
        L[i] = static_cast<uint8_t>(l);
        const float lf = static_cast<float>(l);
        sumlx += qw[i] * x[i] * lf;
        suml2 += qw[i] * lf * lf;
    }
    for (int pass = 0; pass < 5; ++pass) {
        int changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = qw[i], li = static_cast<float>(L[i]);
            float slx = sumlx - w * x[i] * li;
            float sl2 = suml2 - w * li * li;
            if (slx > 0.f && sl2 > 0.f) {
                const int nl = imin(nmax, nearest_int(x[i] * sl2 / slx));
                if (nl != L[i]) {
                    const float nf = static_cast<float>(nl);
                    slx += w * x[i] * nf;
                    sl2 += w * nf * nf;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = static_cast<uint8_t>(nl);
                        sumlx = slx;
                        suml2 = sl2;
                        ++changed;
                    }
                }
            }
        }
        if (!changed) break;
    }
    return suml2 > 0.f ? sumlx / suml2 : 0.f;
}

}  // namespace lattice
}  // namespace tarq
