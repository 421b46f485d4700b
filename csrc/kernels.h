// Hot loops of the CPU backend. kernels_impl.h is compiled twice (portable and AVX2+FMA, see
// CMakeLists.txt); pick_kernels() chooses at run time, so the wheel never needs -march=native.
#pragma once
#include <cstdint>

namespace tarq {

// Lattice of one ggml block type (tarq.formats.QuantFormat).
struct Lattice {
    int qmin, qmax;
    float divisor;    // Q4_0: -8 (applied to the signed max), Q8_0: 127 (applied to absmax)
    bool signed_max;
    int group;        // group size along the input dimension (multiple of 32)
};

struct Kernels {
    const char* isa;
    // C[M,N] -= A[M,K] * B[K,N]; all row-major with leading dimensions lda/ldb/ldc (float64).
    void (*gemm_sub)(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
                     int64_t ldb, double* C, int64_t ldc);
    // GPTQ sweep of columns [i1, i2) for `rows` rows of the working matrix W (row stride n). Writes codes,
    // fp16 scales (at group starts), dequantized values, the normalized errors E (row stride ldE, column
    // j - i1) and accumulates sum e^2 per row into row_err.
    void (*sweep_block)(int64_t rows, int64_t n, int64_t i1, int64_t i2, double* W, const double* U,
                        const Lattice& lat, int8_t* codes, uint16_t* scales, float* deq, double* E,
                        int64_t ldE, double* row_err);
};

const Kernels& pick_kernels();
namespace generic { extern const Kernels kernels; }
#if defined(TARQ_HAVE_AVX2_TU)
namespace avx2 { extern const Kernels kernels; }
#endif

}  // namespace tarq
