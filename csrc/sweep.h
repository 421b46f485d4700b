// GPTQ column sweep on the CPU (float64 working precision; see docs/kernels.md).
#pragma once
#include <cstdint>
#include <vector>

#include "kernels.h"

namespace tarq {

// One (W, U) pair: W [m, n] and U [n, n] row-major float64 (U upper-triangular, H_d^-1 = U^T U).
struct SweepJob {
    const double* W;
    int64_t m;
    const double* U;
    int8_t* codes;     // [m, n] integer codes in the type's convention
    uint8_t* params;   // [m, n / block, param_bytes] param records (tarq.ggml BlockType.param_dtype)
    float* deq;        // [m, n] the values ggml's to_float gives for those codes and params
    double* row_err;   // [m] sum_j e_j^2 per row
};

// Sweeps every job (all of width n) in one OpenMP region. Rows are independent in GPTQ, so work is split
// into row groups that each run the whole sweep: lazy blocks of `block` columns, then one GEMM per block.
void gptq_sweep_jobs(const std::vector<SweepJob>& jobs, int64_t n, const Lattice& lat, int64_t block);

int64_t effective_block(int64_t block, int group);

}  // namespace tarq
