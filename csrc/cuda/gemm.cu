// The lazy-batch trailing update of the CUDA sweep, C[M,N] -= A[M,K] B[K,N] (float64, row-major), as a
// shared-memory tiled GEMM. Its own translation unit so that it may use FMA (--fmad=true) while the lattice
// kernels in sweep.cu are compiled with --fmad=false (float32-exact ggml searches).
#include <cuda_runtime.h>

#include "sweep_cuda.h"

namespace tarq {
namespace cuda {
namespace {

constexpr int TM = 64, TN = 64, TK = 16;  // output tile 64x64, 256 threads x (4x4) each

__global__ void trailing_gemm_kernel(int64_t M, int64_t N, int64_t K, const double* __restrict__ A, int64_t lda,
                                     const double* __restrict__ Bm, int64_t ldb, double* __restrict__ C,
                                     int64_t ldc) {
    __shared__ double As[TK][TM];
    __shared__ double Bs[TK][TN];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int64_t r0 = static_cast<int64_t>(blockIdx.y) * TM, c0 = static_cast<int64_t>(blockIdx.x) * TN;
    double acc[4][4] = {};
    for (int64_t k0 = 0; k0 < K; k0 += TK) {
        for (int idx = threadIdx.x; idx < TK * TM; idx += blockDim.x) {
            const int kk = idx % TK, rr = idx / TK;       // A tile, k fastest (A rows are contiguous in k)
            const int64_t r = r0 + rr, k = k0 + kk;
            As[kk][rr] = (r < M && k < K) ? A[r * lda + k] : 0.0;
            const int cc = idx % TN, kb = idx / TN;       // B tile, columns fastest (coalesced)
            const int64_t c = c0 + cc, k2 = k0 + kb;
            Bs[kb][cc] = (c < N && k2 < K) ? Bm[k2 * ldb + c] : 0.0;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TK; ++kk) {
            double a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) b[jj] = Bs[kk][tx + 16 * jj];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int jj = 0; jj < 4; ++jj) acc[i][jj] += a[i] * b[jj];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int64_t r = r0 + ty + 16 * i;
        if (r >= M) continue;
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) {
            const int64_t c = c0 + tx + 16 * jj;
            if (c < N) C[r * ldc + c] -= acc[i][jj];
        }
    }
}

}  // namespace

cudaError_t launch_trailing_gemm(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
                                 int64_t ldb, double* C, int64_t ldc, cudaStream_t st) {
    const dim3 grid(static_cast<unsigned>((N + TN - 1) / TN), static_cast<unsigned>((M + TM - 1) / TM));
    trailing_gemm_kernel<<<grid, 256, 0, st>>>(M, N, K, A, lda, B, ldb, C, ldc);
    return cudaGetLastError();
}

}  // namespace cuda
}  // namespace tarq
