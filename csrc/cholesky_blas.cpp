// Recursive (2x2-block) Cholesky factor and triangular inverse on LAPACK/BLAS (docs/kernels.md "BLAS"), used by
// cholesky.cpp when the build linked OpenBLAS. Every split is fixed by n (halves rounded to 64, leaves of at most
// LEAF rows, 64-wide chunks), every BLAS/LAPACK call is single-threaded inside tarq's OpenMP pool, so the result
// is the same bits for any thread count.
//
//   factor   A = [A11 .; A21 A22]:  L11 = chol(A11),  L21 = A21 L11^-T,  A22 -= L21 L21^T,  L22 = chol(A22)
//   inverse  L = [A 0; B C]:        L^-1 = [A^-1 0; -C^-1 B A^-1  C^-1]   (the two halves are independent tasks)
#include <algorithm>
#include <stdexcept>

#include "blas.h"

#ifdef TARQ_HAVE_BLAS
#include <cblas.h>
#include <lapacke.h>
#endif

namespace tarq {
namespace blas {

#ifdef TARQ_HAVE_BLAS
namespace {

constexpr int64_t LEAF = 256;   // blocks this small go to LAPACK directly
constexpr int64_t CHUNK = 64;   // row / column chunks of the parallel level-3 steps

int64_t split(int64_t n) { return std::max<int64_t>(CHUNK, (n / 2 + CHUNK - 1) / CHUNK * CHUNK); }

bool factor(double* A, int64_t n, int64_t lda) {
    if (n <= LEAF)
        return scipy_LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', static_cast<lapack_int>(n), A,
                                    static_cast<lapack_int>(lda)) == 0;
    const int64_t h = split(n), r = n - h;
    if (!factor(A, h, lda)) return false;
    double* A21 = A + h * lda;
    double* A22 = A21 + h;
    const int64_t chunks = (r + CHUNK - 1) / CHUNK;
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int64_t c = 0; c < chunks; ++c) {  // L21 = A21 L11^-T, rows independent
            const int64_t r0 = c * CHUNK, rows = std::min(r, r0 + CHUNK) - r0;
            trsm_right_lower_trans(rows, h, A, lda, A21 + r0 * lda, lda);
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t c = chunks - 1; c >= 0; --c) {  // A22 -= L21 L21^T, lower triangle, one row band per task
            const int64_t r0 = c * CHUNK, rows = std::min(r, r0 + CHUNK) - r0;
            if (r0 > 0)
                scipy_cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(rows),
                                  static_cast<blasint>(r0), static_cast<blasint>(h), -1.0, A21 + r0 * lda,
                                  static_cast<blasint>(lda), A21, static_cast<blasint>(lda), 1.0, A22 + r0 * lda,
                                  static_cast<blasint>(lda));
            scipy_cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, static_cast<blasint>(rows),
                              static_cast<blasint>(h), -1.0, A21 + r0 * lda, static_cast<blasint>(lda), 1.0,
                              A22 + r0 * lda + r0, static_cast<blasint>(lda));
        }
    }
    return factor(A22, r, lda);
}

// In-place inverse of the lower-triangular L [n, n]; `parallel`: the top level may use the OpenMP pool.
void invert(double* A, int64_t n, int64_t lda, bool parallel) {
    if (n <= LEAF) {
        scipy_LAPACKE_dtrtri(LAPACK_ROW_MAJOR, 'L', 'N', static_cast<lapack_int>(n), A, static_cast<lapack_int>(lda));
        return;
    }
    const int64_t h = split(n), r = n - h;
    double* B = A + h * lda;
    double* C = B + h;
    if (parallel) {
#pragma omp parallel sections
        {
#pragma omp section
            invert(A, h, lda, false);
#pragma omp section
            invert(C, r, lda, false);
        }
    } else {
        invert(A, h, lda, false);
        invert(C, r, lda, false);
    }
    const int64_t row_chunks = (r + CHUNK - 1) / CHUNK, col_chunks = (h + CHUNK - 1) / CHUNK;
#pragma omp parallel if (parallel)
    {
#pragma omp for schedule(static)
        for (int64_t c = 0; c < row_chunks; ++c) {  // B := B A^-1 (rows independent)
            const int64_t r0 = c * CHUNK, rows = std::min(r, r0 + CHUNK) - r0;
            scipy_cblas_dtrmm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit,
                              static_cast<blasint>(rows), static_cast<blasint>(h), 1.0, A, static_cast<blasint>(lda),
                              B + r0 * lda, static_cast<blasint>(lda));
        }
#pragma omp for schedule(static)
        for (int64_t c = 0; c < col_chunks; ++c) {  // B := -C^-1 B (columns independent)
            const int64_t c0 = c * CHUNK, cols = std::min(h, c0 + CHUNK) - c0;
            scipy_cblas_dtrmm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit,
                              static_cast<blasint>(r), static_cast<blasint>(cols), -1.0, C, static_cast<blasint>(lda),
                              B + c0, static_cast<blasint>(lda));
        }
    }
}

}  // namespace

bool cholesky_lower_inplace(double* A, int64_t n) {
    init();
    return factor(A, n, n);
}

void invert_lower_inplace(double* A, int64_t n) {
    init();
    invert(A, n, n, true);
}
#else
bool cholesky_lower_inplace(double*, int64_t) { throw std::logic_error("tarq._C was built without BLAS"); }
void invert_lower_inplace(double*, int64_t) { throw std::logic_error("tarq._C was built without BLAS"); }
#endif

}  // namespace blas
}  // namespace tarq
