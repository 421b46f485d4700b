// U = J L^-1 J where L L^T = J H_d J and J reverses the index order: then U is upper-triangular with a
// positive diagonal and U^T U = J L^-T L^-1 J = (J L L^T J)^-1 = H_d^-1. This is the same unique factor
// GPTQ gets from cholesky -> cholesky_inverse -> cholesky(upper), with one factorisation instead of two.
#include "cholesky.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "blas.h"
#include "kernels.h"

namespace tarq {

double damp_schedule(double damp_frac, double mean_diag, int attempt) {
    const double lam0 = damp_frac * mean_diag;
    if (lam0 > 0) return lam0 * std::pow(10.0, attempt);
    return attempt == 0 ? 0.0 : 1e-6 * mean_diag * std::pow(10.0, attempt - 1);
}

namespace {

// Built-in path (no BLAS at build time; with BLAS see cholesky_blas.cpp). Panel width 64, trailing-update
// row tiles of 4 rows (the micro-kernel's tile).
constexpr int64_t NB = 64, TR = 4;

// In-place lower Cholesky of A [n, n] (row-major). Returns false on a non-positive or non-finite pivot.
// Right-looking blocked: factor the diagonal block, solve the panel below it (one triangular solve per
// 64-row chunk), then update the trailing lower triangle with one GEMM per row tile against the transposed
// panel. Every split is fixed by n alone, so the result does not depend on the thread count.
bool cholesky_lower(std::vector<double>& Av, int64_t n, const Kernels& K) {
    double* A = Av.data();
    std::vector<double> PT;
    for (int64_t k0 = 0; k0 < n; k0 += NB) {
        const int64_t k1 = std::min(n, k0 + NB), kb = k1 - k0;
        for (int64_t j = k0; j < k1; ++j) {  // diagonal block, unblocked (dot-product form)
            double s = A[j * n + j];
            for (int64_t p = k0; p < j; ++p) s -= A[j * n + p] * A[j * n + p];
            if (!(s > 0.0) || !std::isfinite(s)) return false;
            const double ljj = std::sqrt(s);
            A[j * n + j] = ljj;
            for (int64_t i = j + 1; i < k1; ++i) {
                double t = A[i * n + j];
                for (int64_t p = k0; p < j; ++p) t -= A[i * n + p] * A[j * n + p];
                A[i * n + j] = t / ljj;
            }
        }
        const int64_t rest = n - k1;
        if (rest == 0) break;
        const int64_t chunks = (rest + 63) / 64;
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t c = 0; c < chunks; ++c) {  // panel: L21 = A21 L11^-T
            const int64_t r0 = k1 + c * 64, r1 = std::min(n, r0 + 64);
            blas::trsm_right_lower_trans(r1 - r0, kb, A + k0 * n + k0, n, A + r0 * n + k0, n);
        }
        PT.assign(static_cast<size_t>(kb * rest), 0.0);  // panel transposed: [kb, rest]
#pragma omp parallel for schedule(static)
        for (int64_t p = 0; p < kb; ++p)
            for (int64_t i = 0; i < rest; ++i) PT[p * rest + i] = A[(k1 + i) * n + k0 + p];
        // trailing update A22 -= L21 L21^T on the lower triangle, in row tiles (each tile up to the diagonal)
        const int64_t tiles = (rest + TR - 1) / TR;
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t t = tiles - 1; t >= 0; --t) {  // widest tiles first
            const int64_t r0 = t * TR, r1 = std::min(rest, r0 + TR);
            blas::gemm_sub(K, r1 - r0, r1, kb, A + (k1 + r0) * n + k0, n, PT.data(), rest, A + (k1 + r0) * n + k1, n);
        }
    }
    return true;
}

// X = L^-1 for lower-triangular L (row-major). Column blocks of X are independent (one task each); inside
// a column block, row block r is  X_rc = L_rr^-1 (δ_rc I - L[r, c0:r0] X[c0:r0, c]):  one GEMM with the
// blocks above, then forward substitution with the small diagonal block.
void invert_lower(const std::vector<double>& Lv, int64_t n, const Kernels& K, std::vector<double>& Xv) {
    constexpr int64_t CB = 64;
    Xv.assign(static_cast<size_t>(n * n), 0.0);
    const double* L = Lv.data();
    double* X = Xv.data();
    const int64_t nblocks = (n + CB - 1) / CB;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t b = 0; b < nblocks; ++b) {
        const int64_t c0 = b * CB, c1 = std::min(n, c0 + CB), cw = c1 - c0;
        for (int64_t r0 = c0; r0 < n; r0 += CB) {
            const int64_t r1 = std::min(n, r0 + CB);
            if (r0 == c0)
                for (int64_t i = r0; i < r1; ++i) X[i * n + i] = 1.0;
            else
                K.gemm_sub(r1 - r0, cw, r0 - c0, L + r0 * n + c0, n, X + c0 * n + c0, n, X + r0 * n + c0, n);
            for (int64_t i = r0; i < r1; ++i) {
                double* xi = X + i * n + c0;
                for (int64_t k = r0; k < i; ++k) {
                    const double l = L[i * n + k];
                    const double* xk = X + k * n + c0;
                    for (int64_t c = 0; c < cw; ++c) xi[c] -= l * xk[c];
                }
                const double inv = 1.0 / L[i * n + i];
                for (int64_t c = 0; c < cw; ++c) xi[c] *= inv;
            }
        }
    }
}

}  // namespace

CholeskyOut cholesky_inverse_upper(const double* H, int64_t n, double damp_frac, int max_tries) {
    if (n <= 0) throw std::invalid_argument("H must be a non-empty square matrix");
    if (!(damp_frac >= 0.0)) throw std::invalid_argument("damp_frac must be >= 0");
    if (max_tries < 1) throw std::invalid_argument("max_tries must be >= 1");
    CholeskyOut out;
    out.dead.assign(static_cast<size_t>(n), 0);
    std::vector<double> diag(static_cast<size_t>(n));
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        double d = H[i * n + i];
        if (d == 0.0) { out.dead[i] = 1; d = 1.0; }  // GPTQ: never-excited column gets H_ii = 1
        diag[i] = d;
        sum += d;
    }
    const double mean_diag = sum / static_cast<double>(n);
    if (!(mean_diag > 0.0) || !std::isfinite(mean_diag)) {
        std::ostringstream msg;
        msg << "mean(diag H) = " << mean_diag << " is not positive; H is not a second moment";
        throw NonPDError(msg.str());
    }
    const Kernels& K = pick_kernels();
    std::vector<double> A(static_cast<size_t>(n * n)), X;
    double lam = 0.0;
    for (int attempt = 0; attempt < max_tries; ++attempt) {
        lam = damp_schedule(damp_frac, mean_diag, attempt);
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; ++i) {  // A = J (H + λI) J, lower triangle
            const int64_t ri = n - 1 - i;
            for (int64_t j = 0; j < i; ++j) A[i * n + j] = H[(n - 1 - j) * n + ri];
            A[i * n + i] = diag[ri] + lam;
        }
        if (blas::available()) {  // recursive LAPACK/BLAS factor and in-place inverse (cholesky_blas.cpp)
            if (!blas::cholesky_lower_inplace(A.data(), n)) continue;
            blas::invert_lower_inplace(A.data(), n);
            X.swap(A);                                   // only the lower triangle of X is read below
            A.assign(static_cast<size_t>(n * n), 0.0);   // the next try rebuilds A's lower triangle
        } else {  // built-in kernels (no BLAS at build time)
            if (!cholesky_lower(A, n, K)) continue;
#pragma omp parallel for schedule(static)
            for (int64_t i = 0; i < n; ++i)
                for (int64_t j = i + 1; j < n; ++j) A[i * n + j] = 0.0;  // clear the GEMM scratch above the diagonal
            invert_lower(A, n, K, X);
        }
        out.U.assign(static_cast<size_t>(n * n), 0.0f);
        bool ok = true;
#pragma omp parallel for schedule(static) reduction(&& : ok)
        for (int64_t i = 0; i < n; ++i)
            for (int64_t j = i; j < n; ++j) {
                const double v = X[(n - 1 - i) * n + (n - 1 - j)];
                ok = ok && std::isfinite(v);
                out.U[i * n + j] = static_cast<float>(v);
            }
        if (!ok) continue;
        out.damp = lam;
        out.tries = attempt + 1;
        return out;
    }
    std::ostringstream msg;
    msg << "H + lambda*I is not positive definite for any lambda tried (last lambda = " << lam << " after "
        << max_tries << " tries, damp_frac = " << damp_frac << ", mean diag = " << mean_diag << ")";
    throw NonPDError(msg.str());
}

}  // namespace tarq
