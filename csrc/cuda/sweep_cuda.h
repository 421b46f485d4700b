// CUDA GPTQ sweep (float64 working precision, same lattice rule and arithmetic order per column as the
// CPU kernels). Host-callable with raw device pointers so the extension needs no libtorch.
#pragma once
#include <cstdint>

namespace tarq {
namespace cuda {

// W [m,n] f64, U [n,n] f64 (read only), outputs: codes int8 [m,n], scales fp16 bits [m,n/group],
// deq f32 [m,n], row_err f64 [m]. All device pointers; stream is a cudaStream_t as an integer (0 = default).
// Throws std::runtime_error on bad arguments or CUDA errors.
void sweep_device_ptrs(uintptr_t W, uintptr_t U, int64_t m, int64_t n, uintptr_t codes, uintptr_t scales,
                       uintptr_t deq, uintptr_t row_err, int qmin, int qmax, float divisor, bool signed_max,
                       int group, int64_t block, uintptr_t stream);

}  // namespace cuda
}  // namespace tarq
