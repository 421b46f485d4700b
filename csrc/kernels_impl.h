// Included once per ISA translation unit with TARQ_ISA_NS set (generic / avx2). Written as plain loops
// with fixed-size register tiles that GCC/Clang auto-vectorize (no intrinsics, so one source serves both).
#include <algorithm>
#include <cmath>
#include <vector>

#include "fp16.h"
#include "kernels.h"

namespace tarq {
namespace TARQ_ISA_NS {
namespace {

// Register tile MR x NR of float64 sums: NV vectors of VW doubles per row. AVX2: 4 x 8 (8 ymm accumulators);
// portable SSE2: 4 x 4 (8 xmm accumulators). aligned(8) makes loads/stores through `vec` unaligned-safe.
constexpr int VW = TARQ_VEC_DOUBLES;
constexpr int NV = 2;
constexpr int NR = VW * NV;
constexpr int MR = 4;  // row groups and Cholesky tiles come in multiples of 4 rows
typedef double vec __attribute__((vector_size(VW * sizeof(double)), aligned(8)));

// C[MR x NR] -= A[MR x K] B[K x NR]; the tile of sums stays in registers for the whole K loop.
inline void micro_full(int64_t K, const double* A, int64_t lda, const double* B, int64_t ldb, double* C,
                       int64_t ldc) {
    vec acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) acc[r][v] = vec{};
    for (int64_t k = 0; k < K; ++k) {
        vec b[NV];
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) b[v] = *reinterpret_cast<const vec*>(B + k * ldb + v * VW);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
            const double x = A[r * lda + k];
#pragma GCC unroll 2
            for (int v = 0; v < NV; ++v) acc[r][v] += x * b[v];
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) {
            vec* dst = reinterpret_cast<vec*>(C + r * ldc + v * VW);
            *dst = *dst - acc[r][v];
        }
}

// Edge tiles (fewer rows/columns): same arithmetic order per element as micro_full.
inline void micro_edge(int64_t mr, int64_t nr, int64_t K, const double* A, int64_t lda, const double* B,
                       int64_t ldb, double* C, int64_t ldc) {
    for (int64_t r = 0; r < mr; ++r)
        for (int64_t c = 0; c < nr; ++c) {
            double acc = 0.0;
            for (int64_t k = 0; k < K; ++k) acc += A[r * lda + k] * B[k * ldb + c];
            C[r * ldc + c] -= acc;
        }
}

void gemm_sub(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B, int64_t ldb,
              double* C, int64_t ldc) {
    if (M <= 0 || N <= 0 || K <= 0) return;
    // Column panels of B sized for L2 (K x NC doubles); the A row tile (MR x K) stays in L1 while it
    // sweeps the panel. With enough rows to amortise it, the panel is first packed into contiguous
    // K x NR slices: the rows of U are n doubles apart, so unpacked slices touch K different pages.
    // Packing only moves data; every sum is formed in the same order either way.
    const int64_t NC = std::max<int64_t>(NR, (int64_t(256) * 1024 / 8 / std::max<int64_t>(K, 1)) / NR * NR);
    const bool pack = M >= 4 * MR;
    thread_local std::vector<double> packed;
    for (int64_t j0 = 0; j0 < N; j0 += NC) {
        const int64_t j1 = std::min(N, j0 + NC);
        const int64_t full = (j1 - j0) / NR * NR;  // columns covered by whole NR-wide slices
        if (pack && full > 0) {
            packed.resize(static_cast<size_t>(K * full));
            for (int64_t k = 0; k < K; ++k) {
                const double* src = B + k * ldb + j0;
                for (int64_t t = 0; t < full / NR; ++t)
                    for (int c = 0; c < NR; ++c) packed[(t * K + k) * NR + c] = src[t * NR + c];
            }
        }
        int64_t i = 0;
        for (; i + MR <= M; i += MR) {
            for (int64_t t = 0; t < full / NR; ++t) {
                const int64_t j = j0 + t * NR;
                if (pack)
                    micro_full(K, A + i * lda, lda, packed.data() + t * K * NR, NR, C + i * ldc + j, ldc);
                else
                    micro_full(K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc);
            }
            if (j0 + full < j1)
                micro_edge(MR, j1 - j0 - full, K, A + i * lda, lda, B + j0 + full, ldb, C + i * ldc + j0 + full, ldc);
        }
        if (i < M) micro_edge(M - i, j1 - j0, K, A + i * lda, lda, B + j0, ldb, C + i * ldc + j0, ldc);
    }
}

// Scale of one group by ggml's rule, returned as fp16 bits (docs/architecture.md "kernels").
inline uint16_t group_scale(const double* w, int g, const Lattice& lat) {
    double amax = 0.0, extreme = 0.0;
    for (int k = 0; k < g; ++k) {
        const double a = std::fabs(w[k]);
        if (a > amax) { amax = a; extreme = w[k]; }  // first element of largest |w| keeps its sign
    }
    const float base = lat.signed_max ? static_cast<float>(extreme) : static_cast<float>(amax);
    return f32_to_f16(base / lat.divisor);
}

void sweep_block(int64_t rows, int64_t n, int64_t i1, int64_t i2, double* W, const double* U,
                 const Lattice& lat, int8_t* codes, uint16_t* scales, float* deq, double* E, int64_t ldE,
                 double* row_err) {
    const int g = lat.group;
    const int64_t ng = n / g;
    const double qmin = lat.qmin, qmax = lat.qmax;
    for (int64_t r = 0; r < rows; ++r) {
        double* w = W + r * n;
        double* e_row = E + r * ldE;
        double d = 0.0, inv = 0.0, err = 0.0;
        for (int64_t j = i1; j < i2; ++j) {
            if (j % g == 0) {  // group start: its columns are fully updated (block is a multiple of g)
                const uint16_t h = group_scale(w + j, g, lat);
                scales[r * ng + j / g] = h;
                const float df = f16_to_f32(h);
                d = df;
                inv = df != 0.0f ? static_cast<double>(1.0f / df) : 0.0;  // 1/d in f32, as the contract says
            }
            const double q = std::min(qmax, std::max(qmin, std::floor(w[j] * inv + 0.5)));
            codes[r * n + j] = static_cast<int8_t>(q);
            const double wq = q * d;
            deq[r * n + j] = static_cast<float>(wq);  // exact: fp16 mantissa x small integer
            const double e = (w[j] - wq) / U[j * n + j];
            e_row[j - i1] = e;
            err += e * e;
            // Algorithm 2 propagation, restricted to the current lazy block
            const double* u = U + j * n;
            for (int64_t k = j + 1; k < i2; ++k) w[k] -= e * u[k];
        }
        row_err[r] += err;
    }
}

}  // namespace

const Kernels kernels = {TARQ_ISA_NAME, &gemm_sub, &sweep_block};

}  // namespace TARQ_ISA_NS
}  // namespace tarq
