// CUDA GPTQ sweep onto a ggml lattice. Per lazy block of B columns (B = 32*S, S <= 8; K-quants: B = 256):
//   1. sweep_block_kernel: one warp per row. The row's B columns live in registers (column c of the block
//      in lane c % 32, slot c / 32). At a group start the warp copies the group's current values to shared
//      memory and lane 0 runs the type's fit (csrc/lattice/types.h, the same code as the CPU) and expands the
//      stored params into per-column (a, b); then the warp walks the columns in order: the owning lane
//      broadcasts w_j, every lane computes the same code and value, and each lane applies e_j * U[j, k] to its
//      own later columns (Algorithm 2 inside the block).
//   2. the trailing update W[:, i2:] -= E[:, i1:i2] U[i1:i2, i2:] (gemm.cu).
// This file is compiled with --fmad=false (CMakeLists.txt): the fit is ggml's float32 search, bit-exact only
// without contraction, and the float64 steps then round like the CPU sweep (tests/test_kernels_cuda.py).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "../lattice/types.h"
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
    lattice::TypeInfo type;
    int group, mode;
    const float* importance;  // [n] or nullptr
    const float* sigma2;      // [m] row mean squares or nullptr
};

// sigma2[row] = mean over the row of fl32(W)^2, summed in order (the legacy weighted fits)
__global__ void row_sigma2_kernel(const double* __restrict__ W, int64_t m, int64_t n, float* __restrict__ out) {
    const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (row >= m) return;
    float s = 0.f;
    for (int64_t j = 0; j < n; ++j) {
        const float x = static_cast<float>(W[row * n + j]);
        s += x * x;
    }
    out[row] = s / static_cast<float>(n);
}

// Lane 0's part at a group start: the type's fit on the group's current values (shared memory) and the
// per-column (a, b). Not inlined: one copy serves every kernel instantiation (the fits are long).
__device__ __noinline__ void fit_and_expand(const LatticeArgs& lat, const double* x, int64_t row, int64_t j,
                                            uint8_t* prm, float* a, float* b) {
    lattice::fit_group(lat.type.id, lat.group, lat.mode, x, lat.importance ? lat.importance + j : nullptr,
                       lat.sigma2 ? lat.sigma2[row] : 0.f, prm);
    lattice::group_affine(lat.type.id, lat.group, prm, a, b);
}

template <int S>
__global__ void sweep_block_kernel(double* __restrict__ W, const double* __restrict__ U, int64_t m, int64_t n,
                                   int64_t i1, LatticeArgs lat, int8_t* __restrict__ codes,
                                   uint8_t* __restrict__ params, float* __restrict__ deq, double* __restrict__ E,
                                   double* __restrict__ row_err) {
    __shared__ double xs[kWarpsPerBlock][256];
    __shared__ float as[kWarpsPerBlock][256], bs[kWarpsPerBlock][256];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp;
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
    const lattice::TypeInfo& t = lat.type;
    const int G = lat.group, slots = G / 32;
    const int64_t nb = n / t.block;
    const int8_t* kv = lattice::iq4nl_values();
    double err = 0.0;
#pragma unroll
    for (int s = 0; s < S; ++s) {
        if (s * 32 >= width) break;
        for (int l = 0; l < 32; ++l) {
            const int c = s * 32 + l;
            const int64_t j = i1 + c;
            const int k = static_cast<int>(j % G);
            if (k == 0) {  // group start: slots s .. s + G/32 - 1 are fully updated
#pragma unroll
                for (int t2 = 0; t2 < S; ++t2)
                    if (t2 >= s && t2 < s + slots) xs[warp][(t2 - s) * 32 + lane] = w[t2];
                __syncwarp();
                if (lane == 0)
                    fit_and_expand(lat, xs[warp], row, j, params + (row * nb + j / t.block) * t.param_bytes, as[warp],
                                   bs[warp]);
                __syncwarp();
            }
            const double wj = __shfl_sync(kFull, w[s], l);
            double v;
            const int q = t.codebook ? lattice::round_codebook(wj, as[warp][k], kv, 16, &v)
                                     : lattice::round_affine(wj, as[warp][k], bs[warp][k], t.offset, t.code_min,
                                                             t.code_max, &v);
            const double e = (wj - v) / U[j * n + j];
            err += e * e;
            if (lane == l) {
                codes[row * n + j] = static_cast<int8_t>(q);
                deq[row * n + j] = static_cast<float>(v);
                E[row * B + c] = e;
            }
            const double* u = U + j * n + i1;
#pragma unroll
            for (int t2 = 0; t2 < S; ++t2) {
                const int ct = t2 * 32 + lane;
                if (t2 >= s && ct > c && ct < width) w[t2] -= e * __ldg(u + ct);
            }
        }
    }
    if (lane == 0) row_err[row] += err;
}

template <int S>
void launch_block(double* Wk, const double* U, int64_t m, int64_t n, int64_t i1, const LatticeArgs& lat, int8_t* codes,
                  uint8_t* params, float* deq, double* E, double* row_err, cudaStream_t st) {
    const unsigned grid = static_cast<unsigned>((m + kWarpsPerBlock - 1) / kWarpsPerBlock);
    sweep_block_kernel<S><<<grid, kWarpsPerBlock * 32, 0, st>>>(Wk, U, m, n, i1, lat, codes, params, deq, E, row_err);
}

}  // namespace

void sweep_device_ptrs(uintptr_t W, uintptr_t U, int64_t m, int64_t n, uintptr_t codes, uintptr_t params,
                       uintptr_t deq, uintptr_t row_err, int type_id, int group, int mode, uintptr_t importance,
                       int64_t block, uintptr_t stream) {
    lattice::TypeInfo t;
    if (!lattice::type_info(type_id, &t)) throw std::runtime_error("no native lattice for this ggml type");
    if (m <= 0 || n <= 0) throw std::runtime_error("empty weight matrix");
    if (group <= 0 || group % t.block != 0 || group > t.max_group || n % group != 0)
        throw std::runtime_error("bad group size for this type and width");
    if (mode == lattice::kWeighted && importance == 0) throw std::runtime_error("the weighted fit needs importance");
    if (block < 1) throw std::runtime_error("block_size must be >= 1");
    // Lazy block: a multiple of the group (as on the CPU), at most 256 columns so a row fits in registers.
    int64_t B = (block + group - 1) / group * group;
    if (B > 256) B = 256 / group * group;
    const int S = static_cast<int>(B / 32);
    cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
    double *Wk = nullptr, *E = nullptr;
    float* sigma2 = nullptr;
    check(cudaMallocAsync(&Wk, sizeof(double) * m * n, st), "cudaMallocAsync(W)");
    check(cudaMallocAsync(&E, sizeof(double) * m * B, st), "cudaMallocAsync(E)");
    check(cudaMemcpyAsync(Wk, reinterpret_cast<const double*>(W), sizeof(double) * m * n, cudaMemcpyDeviceToDevice, st),
          "copy W");
    check(cudaMemsetAsync(reinterpret_cast<double*>(row_err), 0, sizeof(double) * m, st), "memset row_err");
    const bool need_sigma2 = mode == lattice::kWeighted && t.block == 32 && !t.codebook;
    if (need_sigma2) {
        check(cudaMallocAsync(&sigma2, sizeof(float) * m, st), "cudaMallocAsync(sigma2)");
        row_sigma2_kernel<<<static_cast<unsigned>((m + 127) / 128), 128, 0, st>>>(Wk, m, n, sigma2);
        check(cudaGetLastError(), "row_sigma2_kernel");
    }
    const LatticeArgs lat{t, group, mode, reinterpret_cast<const float*>(importance), sigma2};
    auto* Ud = reinterpret_cast<const double*>(U);
    auto* cd = reinterpret_cast<int8_t*>(codes);
    auto* pd = reinterpret_cast<uint8_t*>(params);
    auto* dd = reinterpret_cast<float*>(deq);
    auto* ed = reinterpret_cast<double*>(row_err);
    for (int64_t i1 = 0; i1 < n; i1 += B) {
        switch (S) {
            case 1: launch_block<1>(Wk, Ud, m, n, i1, lat, cd, pd, dd, E, ed, st); break;
            case 2: launch_block<2>(Wk, Ud, m, n, i1, lat, cd, pd, dd, E, ed, st); break;
            case 3: launch_block<3>(Wk, Ud, m, n, i1, lat, cd, pd, dd, E, ed, st); break;
            case 4: launch_block<4>(Wk, Ud, m, n, i1, lat, cd, pd, dd, E, ed, st); break;
            case 5: launch_block<5>(Wk, Ud, m, n, i1, lat, cd, pd, dd, E, ed, st); break;
            case 6: launch_block<6>(Wk, Ud, m, n, i1, lat, cd, pd, dd, E, ed, st); break;
            case 7: launch_block<7>(Wk, Ud, m, n, i1, lat, cd, pd, dd, E, ed, st); break;
            default: launch_block<8>(Wk, Ud, m, n, i1, lat, cd, pd, dd, E, ed, st); break;
        }
        check(cudaGetLastError(), "sweep_block_kernel");
        const int64_t i2 = i1 + B < n ? i1 + B : n;
        if (i2 < n) check(launch_trailing_gemm(m, n - i2, i2 - i1, E, B, Ud + i1 * n + i2, n, Wk + i2, n, st),
                          "trailing_gemm_kernel");
    }
    if (sigma2) check(cudaFreeAsync(sigma2, st), "cudaFreeAsync(sigma2)");
    check(cudaFreeAsync(E, st), "cudaFreeAsync(E)");
    check(cudaFreeAsync(Wk, st), "cudaFreeAsync(W)");
}

}  // namespace cuda
}  // namespace tarq
