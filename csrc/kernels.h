// Hot loops of the CPU backend, compiled once per ISA (portable and AVX2+FMA, see CMakeLists.txt);
// pick_kernels() chooses at run time, so the wheel never needs -march=native. gemm_sub lives in kernels_impl.h
// (FMA contraction allowed); sweep_block in sweep_impl.h (contraction off: the lattice is float32-exact ggml).
#pragma once
#include <cstdint>

#include "lattice/layout.h"

namespace tarq {

// The solver-side lattice of one sweep (tarq.ggml.Lattice): a ggml type, its parameter-group width and fit mode.
struct Lattice {
    lattice::TypeInfo type;
    int group;                 // columns that share one fit (a multiple of the type's block, <= 256)
    int mode;                  // lattice::kPlain / kWeighted
    const float* importance;   // [n] per-column importance for kWeighted (nullptr otherwise)
};

struct Kernels {
    const char* isa;
    // C[M,N] -= A[M,K] * B[K,N]; all row-major with leading dimensions lda/ldb/ldc (float64).
    void (*gemm_sub)(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
                     int64_t ldb, double* C, int64_t ldc);
    // GPTQ sweep of columns [i1, i2) for `rows` rows of the working matrix W (row stride n). At each group start
    // it fits the group's parameters from the current weights (param records [rows, n/block, P]); writes codes,
    // dequantized values, the normalized errors E (row stride ldE, column j - i1) and accumulates sum e^2 per
    // row into row_err. sigma2: per-row mean square of the input weights (legacy weighted fits).
    void (*sweep_block)(int64_t rows, int64_t n, int64_t i1, int64_t i2, double* W, const double* U,
                        const Lattice& lat, const float* sigma2, int8_t* codes, uint8_t* params, float* deq,
                        double* E, int64_t ldE, double* row_err);
};

const Kernels& pick_kernels();
namespace generic {
extern const Kernels kernels;
void sweep_block(int64_t rows, int64_t n, int64_t i1, int64_t i2, double* W, const double* U, const Lattice& lat,
                 const float* sigma2, int8_t* codes, uint8_t* params, float* deq, double* E, int64_t ldE,
                 double* row_err);
}  // namespace generic
#if defined(TARQ_HAVE_AVX2_TU)
namespace avx2 {
extern const Kernels kernels;
void sweep_block(int64_t rows, int64_t n, int64_t i1, int64_t i2, double* W, const double* U, const Lattice& lat,
                 const float* sigma2, int8_t* codes, uint8_t* params, float* deq, double* E, int64_t ldE,
                 double* row_err);
}  // namespace avx2
#endif

}  // namespace tarq
