// BLAS bindings (see blas.h). The fallbacks are plain loops with the same meaning; they are only used when
// the build found no BLAS (TARQ_HAVE_BLAS undefined) and are checked against the BLAS path by the tests
// through the sweep and Cholesky references (tests/test_kernels.py).
#include "blas.h"

#include <algorithm>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef TARQ_HAVE_BLAS
#include <cblas.h>   // scipy-openblas32: every symbol carries the scipy_ prefix
#endif

namespace tarq {
namespace blas {

namespace {
#ifdef TARQ_HAVE_BLAS
// OpenBLAS's own pthread pool is switched off once: every call runs in the calling (OpenMP) thread.
struct SingleThreaded {
    SingleThreaded() { scipy_openblas_set_num_threads(1); }
};
const SingleThreaded& single_threaded() {
    static const SingleThreaded once;
    return once;
}
#endif
}  // namespace

void init() {
#ifdef TARQ_HAVE_BLAS
    single_threaded();
#endif
}

bool available() {
#ifdef TARQ_HAVE_BLAS
    return true;
#else
    return false;
#endif
}

std::string name() {
#ifdef TARQ_HAVE_BLAS
    single_threaded();
    std::string s = "OpenBLAS (scipy-openblas32): ";
    s += scipy_openblas_get_config();
    s += ", core ";
    s += scipy_openblas_get_corename();
    return s;
#else
    return "built-in (no BLAS at build time)";
#endif
}

int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void set_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

void gemm_sub(const Kernels& K, int64_t M, int64_t N, int64_t Kd, const double* A, int64_t lda,
              const double* B, int64_t ldb, double* C, int64_t ldc) {
    if (M <= 0 || N <= 0 || Kd <= 0) return;
#ifdef TARQ_HAVE_BLAS
    single_threaded();
    scipy_cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(M), static_cast<blasint>(N),
                      static_cast<blasint>(Kd), -1.0, A, static_cast<blasint>(lda), B, static_cast<blasint>(ldb),
                      1.0, C, static_cast<blasint>(ldc));
#else
    K.gemm_sub(M, N, Kd, A, lda, B, ldb, C, ldc);
#endif
}

void trsm_right_lower_trans(int64_t M, int64_t N, const double* L, int64_t ldl, double* B, int64_t ldb) {
    if (M <= 0 || N <= 0) return;
#ifdef TARQ_HAVE_BLAS
    single_threaded();
    scipy_cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, static_cast<blasint>(M),
                      static_cast<blasint>(N), 1.0, L, static_cast<blasint>(ldl), B, static_cast<blasint>(ldb));
#else
    for (int64_t i = 0; i < M; ++i) {  // row i of B: solve x L^T = b, i.e. L x^T = b^T (forward substitution)
        double* b = B + i * ldb;
        for (int64_t j = 0; j < N; ++j) {
            double t = b[j];
            for (int64_t p = 0; p < j; ++p) t -= b[p] * L[j * ldl + p];
            b[j] = t / L[j * ldl + j];
        }
    }
#endif
}

void syrk_lower_accumulate(int64_t T, int64_t n, const float* X, double alpha, double* H) {
    if (T <= 0 || n <= 0) return;
    constexpr int64_t BAND = 128;
    const int64_t bands = (n + BAND - 1) / BAND;
    // small updates (decoder positions: T ~ 20) run in the calling thread: a parallel region costs more than
    // the work, and far more when other processes hold the cores
    const bool parallel = T * n * n >= (int64_t(1) << 23);
#pragma omp parallel if (parallel)
    {
        std::vector<float> C;  // per-thread scratch: one band [rows, i1] of X^T X
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = bands - 1; b >= 0; --b) {  // widest bands (bottom of H) first
            const int64_t i0 = b * BAND, i1 = std::min(n, i0 + BAND), rows = i1 - i0;
            C.assign(static_cast<size_t>(rows * i1), 0.0f);
#ifdef TARQ_HAVE_BLAS
            single_threaded();
            if (i0 > 0)  // C[:, :i0] = X[:, i0:i1]^T X[:, :i0]
                scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<blasint>(rows),
                                  static_cast<blasint>(i0), static_cast<blasint>(T), 1.0f, X + i0,
                                  static_cast<blasint>(n), X, static_cast<blasint>(n), 0.0f, C.data(),
                                  static_cast<blasint>(i1));
            // C[:, i0:i1] (lower) = X[:, i0:i1]^T X[:, i0:i1]
            scipy_cblas_ssyrk(CblasRowMajor, CblasLower, CblasTrans, static_cast<blasint>(rows),
                              static_cast<blasint>(T), 1.0f, X + i0, static_cast<blasint>(n), 0.0f, C.data() + i0,
                              static_cast<blasint>(i1));
#else
            for (int64_t t = 0; t < T; ++t) {  // plain rank-1 updates, float32 sums like the BLAS path
                const float* x = X + t * n;
                for (int64_t r = 0; r < rows; ++r) {
                    const float xi = x[i0 + r];
                    float* c = C.data() + r * i1;
                    for (int64_t j = 0; j <= i0 + r; ++j) c[j] += xi * x[j];
                }
            }
#endif
            for (int64_t r = 0; r < rows; ++r) {
                double* h = H + (i0 + r) * n;
                const float* c = C.data() + r * i1;
                for (int64_t j = 0; j <= i0 + r; ++j) h[j] += alpha * static_cast<double>(c[j]);
            }
        }
    }
}

}  // namespace blas
}  // namespace tarq
