// Included once per ISA translation unit with TARQ_ISA_NS set (generic / avx2). Written as plain loops
// with fixed-size register tiles that GCC/Clang auto-vectorize (no intrinsics, so one source serves both).
#include <algorithm>
#include <cmath>

#include "fp16.h"
#include "kernels.h"

namespace tarq {
namespace TARQ_ISA_NS {
namespace {

constexpr int MR = 4;   // rows of the register tile
constexpr int NR = 8;   // columns of the register tile (2 AVX2 vectors of doubles)

// 4 doubles as a GCC/Clang vector (AVX2 ymm in the avx2 build, two SSE2 registers in the generic one);
// aligned(8) makes loads/stores through it unaligned-safe.
typedef double v4d __attribute__((vector_size(32), aligned(8)));

// C[MR x NR] -= A[MR x K] B[K x NR]: the 4 x 8 tile of sums stays in 8 vector registers for the K loop.
inline void micro_full(int64_t K, const double* A, int64_t lda, const double* B, int64_t ldb, double* C,
                       int64_t ldc) {
    static_assert(MR == 4 && NR == 8, "register tile is written out for 4 x 8");
    v4d c00 = {0, 0, 0, 0}, c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    const double *a0 = A, *a1 = A + lda, *a2 = A + 2 * lda, *a3 = A + 3 * lda;
    for (int64_t k = 0; k < K; ++k) {
        const v4d b0 = *reinterpret_cast<const v4d*>(B + k * ldb);
        const v4d b1 = *reinterpret_cast<const v4d*>(B + k * ldb + 4);
        const double x0 = a0[k], x1 = a1[k], x2 = a2[k], x3 = a3[k];
        c00 += x0 * b0; c01 += x0 * b1;
        c10 += x1 * b0; c11 += x1 * b1;
        c20 += x2 * b0; c21 += x2 * b1;
        c30 += x3 * b0; c31 += x3 * b1;
    }
    const v4d* acc[MR][2] = {{&c00, &c01}, {&c10, &c11}, {&c20, &c21}, {&c30, &c31}};
    for (int r = 0; r < MR; ++r)
        for (int h = 0; h < 2; ++h) {
            v4d* dst = reinterpret_cast<v4d*>(C + r * ldc + 4 * h);
            *dst = *dst - *acc[r][h];
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
    // sweeps the panel.
    const int64_t NC = std::max<int64_t>(NR, (int64_t(256) * 1024 / 8 / std::max<int64_t>(K, 1)) / NR * NR);
    for (int64_t j0 = 0; j0 < N; j0 += NC) {
        const int64_t j1 = std::min(N, j0 + NC);
        int64_t i = 0;
        for (; i + MR <= M; i += MR) {
            int64_t j = j0;
            for (; j + NR <= j1; j += NR) micro_full(K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc);
            if (j < j1) micro_edge(MR, j1 - j, K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc);
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
