// Optimised BLAS for the solver's GEMMs and triangular solves (docs/kernels.md, "BLAS").
//
// The build links OpenBLAS from the `scipy-openblas32` wheel when it is installed (CMake option TARQ_BLAS,
// CMakeLists.txt); without it every call below falls back to the built-in kernels (kernels_impl.h), so the
// extension still builds and gives the same codes, only slower. BLAS always runs single-threaded inside the
// caller's thread: all parallelism is tarq's own OpenMP pool (`--threads`), so there is one thread pool and
// each result depends only on the shapes of the call, never on the thread count.
#pragma once
#include <cstdint>
#include <string>

#include "kernels.h"

namespace tarq {
namespace blas {

bool available();                  // built against a BLAS library
std::string name();                // e.g. "OpenBLAS 0.3.34 (SkylakeX)" or "built-in (no BLAS at build time)"
int max_threads();                 // tarq's OpenMP pool size (what `--threads` sets)
void set_threads(int n);           // tarq's OpenMP pool; BLAS itself stays single-threaded

// C[M,N] -= A[M,K] B[K,N]  (row-major, float64, leading dimensions lda/ldb/ldc).
void gemm_sub(const Kernels& K, int64_t M, int64_t N, int64_t Kd, const double* A, int64_t lda,
              const double* B, int64_t ldb, double* C, int64_t ldc);

// B[M,N] := B L^-T for lower-triangular L [N,N] (row-major): the panel solve of a right-looking Cholesky.
void trsm_right_lower_trans(int64_t M, int64_t N, const double* L, int64_t ldl, double* B, int64_t ldb);

// In-place lower Cholesky factor of A [n, n] (row-major, lower triangle read and written; false when not positive
// definite) and in-place inverse of a lower-triangular L. Only with BLAS (cholesky_blas.cpp); otherwise throw.
bool cholesky_lower_inplace(double* A, int64_t n);
void invert_lower_inplace(double* A, int64_t n);

// Switch OpenBLAS's own pool to one thread (once); every entry point above calls it.
void init();

// H[i, j] += alpha * sum_t X[t, i] X[t, j] for j <= i (lower triangle; the upper one is not touched):
// the symmetric rank-k update of the calibration statistics (TARQ paper eq. 7). X is [T, n] row-major float32,
// H [n, n] row-major float64. Products are summed in float32 per call (one utterance: the same precision as
// a float32 GEMM) and added into the float64 accumulator. Work is split into fixed 128-row bands of H (one
// BLAS ssyrk + one sgemm each, OpenMP over bands), so the result does not depend on the thread count.
void syrk_lower_accumulate(int64_t T, int64_t n, const float* X, double alpha, double* H);

}  // namespace blas
}  // namespace tarq
