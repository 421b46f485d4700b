// CUDA GPTQ sweep (float64 working precision, the same lattice routines (csrc/lattice/) and per-column arithmetic
// as the CPU kernels). Host-callable with raw device pointers so the extension needs no libtorch.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#include <cuda_runtime.h>
#endif

namespace tarq {
namespace cuda {

// W [m,n] f64, U [n,n] f64 (read only), importance [n] f32 (mode 1) or 0; outputs: codes int8 [m,n], params
// uint8 [m, n/block, P], deq f32 [m,n], row_err f64 [m]. All device pointers; stream is a cudaStream_t as an
// integer (0 = default). Throws std::runtime_error on bad arguments or CUDA errors.
void sweep_device_ptrs(uintptr_t W, uintptr_t U, int64_t m, int64_t n, uintptr_t codes, uintptr_t params,
                       uintptr_t deq, uintptr_t row_err, int type_id, int group, int mode, uintptr_t importance,
                       int64_t block, uintptr_t stream);

#ifdef __CUDACC__
// C[M,N] -= A[M,K] B[K,N] (gemm.cu)
cudaError_t launch_trailing_gemm(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
                                 int64_t ldb, double* C, int64_t ldc, cudaStream_t st);
#endif

}  // namespace cuda
}  // namespace tarq
