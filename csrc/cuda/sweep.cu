// CUDA GPTQ sweep. Per lazy block of B columns (B = 32*S, S <= 8):
//   1. sweep_block_kernel: one warp per row. The row's B columns live in registers (column c of the block
//      in lane c % 32, slot c / 32). The warp walks the columns in order: the owning lane broadcasts w_j,
//      every lane computes the same code (group scales come from a warp argmax at group starts), and each
//      lane applies e_j * U[j, k] to its own later columns (Algorithm 2 inside the block).
//   2. trailing_gemm_kernel: W[:, i2:] -= E[:, i1:i2] U[i1:i2, i2:] as a shared-memory tiled GEMM.
// See docs/kernels.md for the validation recipe (tests/test_kernels_cuda.py, csrc/cuda/validate_sweep.cu).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "../fp16.h"
#include "sweep_cuda.h"

namespace tarq {
namespace cuda {
namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kWarpsPerBlock = 4;

void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

struct LatticeArgs {
    double qmin, qmax;
    float divisor;
    bool signed_max;
    int group;
};

// Warp argmax of |v| with ties to the lower column index (= the CPU's "first element wins").
__device__ inline void warp_argmax(double& a, double& v, int& col) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const double a2 = __shfl_down_sync(kFull, a, off);
        const double v2 = __shfl_down_sync(kFull, v, off);
        const int c2 = __shfl_down_sync(kFull, col, off);
        if (a2 > a || (a2 == a && c2 < col)) { a = a2; v = v2; col = c2; }
    }
    a = __shfl_sync(kFull, a, 0);
    v = __shfl_sync(kFull, v, 0);
}

template <int S>
__global__ void sweep_block_kernel(double* __restrict__ W, const double* __restrict__ U, int64_t m, int64_t n,
                                   int64_t i1, LatticeArgs lat, int8_t* __restrict__ codes,
                                   uint16_t* __restrict__ scales, float* __restrict__ deq, double* __restrict__ E,
                                   double* __restrict__ row_err) {
    const int lane = threadIdx.x & 31;
    const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
    if (row >= m) return;  // whole warp exits together
    constexpr int B = 32 * S;
    const int64_t i2 = i1 + B <= n ? i1 + B : n;
    const int width = static_cast<int>(i2 - i1);
    double w[S];
#pragma unroll
    for (int s = 0; s < S; ++s) {
        const int c = s * 32 + lane;
        w[s] = c < width ? W[row * n + i1 + c] : 0.0;
    }
    const int64_t ng = n / lat.group;
    const int slots_per_group = lat.group / 32;
    double d = 0.0, inv = 0.0, err = 0.0;
#pragma unroll
    for (int s = 0; s < S; ++s) {
        if (s * 32 >= width) break;
        for (int l = 0; l < 32; ++l) {
            const int c = s * 32 + l;
            const int64_t j = i1 + c;
            if (j % lat.group == 0) {  // group start: slots s .. s + group/32 - 1 are fully updated
                double a = -1.0, v = 0.0;
                int col = 1 << 30;
#pragma unroll
                for (int t = 0; t < S; ++t) {
                    if (t >= s && t < s + slots_per_group) {
                        const double at = fabs(w[t]);
                        if (at > a) { a = at; v = w[t]; col = t * 32 + lane; }
                    }
                }
                warp_argmax(a, v, col);
                const float base = lat.signed_max ? static_cast<float>(v) : static_cast<float>(a);
                const uint16_t h = f32_to_f16(base / lat.divisor);
                if (lane == 0) scales[row * ng + j / lat.group] = h;
                const float df = f16_to_f32(h);
                d = df;
                inv = df != 0.0f ? static_cast<double>(1.0f / df) : 0.0;
            }
            const double wj = __shfl_sync(kFull, w[s], l);
            const double q = fmin(lat.qmax, fmax(lat.qmin, floor(wj * inv + 0.5)));
            const double wq = q * d;
            const double e = (wj - wq) / U[j * n + j];
            err += e * e;
            if (lane == l) {
                codes[row * n + j] = static_cast<int8_t>(q);
                deq[row * n + j] = static_cast<float>(wq);
                E[row * B + c] = e;
            }
            const double* u = U + j * n + i1;
#pragma unroll
            for (int t = 0; t < S; ++t) {
                const int ct = t * 32 + lane;
                if (t >= s && ct > c && ct < width) w[t] -= e * __ldg(u + ct);
            }
        }
    }
    if (lane == 0) row_err[row] += err;
}

constexpr int TM = 64, TN = 64, TK = 16;  // output tile 64x64, 256 threads x (4x4) each

// C[M,N] -= A[M,K] B[K,N] (row-major, leading dims lda/ldb/ldc), K <= B of the lazy block.
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

template <int S>
void launch_block(double* Wk, const double* U, int64_t m, int64_t n, int64_t i1, const LatticeArgs& lat, int8_t* codes,
                  uint16_t* scales, float* deq, double* E, double* row_err, cudaStream_t st) {
    const unsigned grid = static_cast<unsigned>((m + kWarpsPerBlock - 1) / kWarpsPerBlock);
    sweep_block_kernel<S><<<grid, kWarpsPerBlock * 32, 0, st>>>(Wk, U, m, n, i1, lat, codes, scales, deq, E, row_err);
}

}  // namespace

void sweep_device_ptrs(uintptr_t W, uintptr_t U, int64_t m, int64_t n, uintptr_t codes, uintptr_t scales,
                       uintptr_t deq, uintptr_t row_err, int qmin, int qmax, float divisor, bool signed_max,
                       int group, int64_t block, uintptr_t stream) {
    if (m <= 0 || n <= 0) throw std::runtime_error("empty weight matrix");
    if (group <= 0 || group % 32 != 0 || n % group != 0) throw std::runtime_error("bad group size for this width");
    if (block < 1) throw std::runtime_error("block_size must be >= 1");
    // Lazy block: a multiple of the group (as on the CPU), at most 256 columns so a row fits in registers.
    int64_t B = (block + group - 1) / group * group;
    if (B > 256) B = 256 / group * group;
    const int S = static_cast<int>(B / 32);
    cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
    const LatticeArgs lat{static_cast<double>(qmin), static_cast<double>(qmax), divisor, signed_max, group};
    double *Wk = nullptr, *E = nullptr;
    check(cudaMallocAsync(&Wk, sizeof(double) * m * n, st), "cudaMallocAsync(W)");
    check(cudaMallocAsync(&E, sizeof(double) * m * B, st), "cudaMallocAsync(E)");
    check(cudaMemcpyAsync(Wk, reinterpret_cast<const double*>(W), sizeof(double) * m * n, cudaMemcpyDeviceToDevice, st),
          "copy W");
    check(cudaMemsetAsync(reinterpret_cast<double*>(row_err), 0, sizeof(double) * m, st), "memset row_err");
    auto* Ud = reinterpret_cast<const double*>(U);
    auto* cd = reinterpret_cast<int8_t*>(codes);
    auto* sd = reinterpret_cast<uint16_t*>(scales);
    auto* dd = reinterpret_cast<float*>(deq);
    auto* ed = reinterpret_cast<double*>(row_err);
    for (int64_t i1 = 0; i1 < n; i1 += B) {
        switch (S) {
            case 1: launch_block<1>(Wk, Ud, m, n, i1, lat, cd, sd, dd, E, ed, st); break;
            case 2: launch_block<2>(Wk, Ud, m, n, i1, lat, cd, sd, dd, E, ed, st); break;
            case 3: launch_block<3>(Wk, Ud, m, n, i1, lat, cd, sd, dd, E, ed, st); break;
            case 4: launch_block<4>(Wk, Ud, m, n, i1, lat, cd, sd, dd, E, ed, st); break;
            case 5: launch_block<5>(Wk, Ud, m, n, i1, lat, cd, sd, dd, E, ed, st); break;
            case 6: launch_block<6>(Wk, Ud, m, n, i1, lat, cd, sd, dd, E, ed, st); break;
            case 7: launch_block<7>(Wk, Ud, m, n, i1, lat, cd, sd, dd, E, ed, st); break;
            default: launch_block<8>(Wk, Ud, m, n, i1, lat, cd, sd, dd, E, ed, st); break;
        }
        check(cudaGetLastError(), "sweep_block_kernel");
        const int64_t i2 = i1 + B < n ? i1 + B : n;
        if (i2 < n) {
            const dim3 grid(static_cast<unsigned>((n - i2 + TN - 1) / TN), static_cast<unsigned>((m + TM - 1) / TM));
            trailing_gemm_kernel<<<grid, 256, 0, st>>>(m, n - i2, i2 - i1, E, B, Ud + i1 * n + i2, n, Wk + i2, n);
            check(cudaGetLastError(), "trailing_gemm_kernel");
        }
    }
    check(cudaFreeAsync(E, st), "cudaFreeAsync(E)");
    check(cudaFreeAsync(Wk, st), "cudaFreeAsync(W)");
}

}  // namespace cuda
}  // namespace tarq
