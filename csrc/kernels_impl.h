// Included once per ISA translation unit with TARQ_ISA_NS set (generic / avx2). Written as plain loops
// with fixed-size register tiles that GCC/Clang auto-vectorize (no intrinsics, so one source serves both).
#include <algorithm>
#include <cmath>
#include <vector>

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

}  // namespace

const Kernels kernels = {TARQ_ISA_NAME, &gemm_sub, &sweep_block};

}  // namespace TARQ_ISA_NS
}  // namespace tarq
