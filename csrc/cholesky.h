// Upper Cholesky factor of the damped inverse Hessian (GPTQ's "Cholesky reformulation").
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace tarq {

class NonPDError : public std::runtime_error {
   public:
    using std::runtime_error::runtime_error;
};

struct CholeskyOut {
    std::vector<float> U;     // [n, n] upper-triangular, (H + damp I)^-1 = U^T U
    double damp = 0.0;        // λ actually used
    std::vector<uint8_t> dead;  // diag(H) == 0 (set to 1 before damping)
    int tries = 0;
};

// H: [n, n] row-major float64 (symmetric; only the lower triangle is read).
// λ_k = damp_frac * mean(diag H) * 10^k for try k (damp_frac == 0: 0, then 1e-6 * mean * 10^(k-1)),
// identical to tarq.kernels.validate.damp_schedule. Throws NonPDError after max_tries failures.
CholeskyOut cholesky_inverse_upper(const double* H, int64_t n, double damp_frac, int max_tries);

double damp_schedule(double damp_frac, double mean_diag, int attempt);

}  // namespace tarq
