// Stand-alone validation of the CUDA sweep against the CPU kernels (llm.c dev/cuda style: one file,
// a CPU reference, the kernel, a comparison and a timing). Build and run on a machine with a GPU:
//   nvcc -O3 -std=c++17 --fmad=false -Xcompiler -fopenmp,-ffp-contract=off -I csrc csrc/cuda/validate_sweep.cu \
//        csrc/cuda/sweep.cu csrc/cuda/gemm.cu csrc/sweep.cpp csrc/sweep_generic.cpp csrc/lattice_ops.cpp \
//        csrc/cholesky.cpp csrc/dispatch.cpp csrc/kernels_generic.cpp -o validate_sweep
//   ./validate_sweep [m n type_id group block]  (defaults: 1536 384 2 (Q4_0) 32 128; exit code 0 = agreement)
#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "../cholesky.h"
#include "../sweep.h"
#include "sweep_cuda.h"

#define CUDA_OK(x)                                                                     \
    do {                                                                               \
        cudaError_t e_ = (x);                                                          \
        if (e_ != cudaSuccess) {                                                       \
            std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
            std::exit(2);                                                              \
        }                                                                              \
    } while (0)

int main(int argc, char** argv) {
    const int64_t m = argc > 1 ? std::atoll(argv[1]) : 1536;
    const int64_t n = argc > 2 ? std::atoll(argv[2]) : 384;
    const int type_id = argc > 3 ? std::atoi(argv[3]) : 2;
    const int group = argc > 4 ? std::atoi(argv[4]) : 32;
    const int64_t block = argc > 5 ? std::atoll(argv[5]) : 128;
    tarq::lattice::TypeInfo info;
    if (!tarq::lattice::type_info(type_id, &info)) {
        std::fprintf(stderr, "unknown type id %d\n", type_id);
        return 2;
    }
    const tarq::Lattice lat{info, group, tarq::lattice::kPlain, nullptr};
    const int64_t np = m * (n / info.block) * info.param_bytes;

    std::mt19937_64 rng(1234);
    std::normal_distribution<double> normal;
    std::vector<double> X(2 * n * n), H(n * n, 0.0), W(m * n);
    for (auto& x : X) x = normal(rng);
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) {
            double s = 0;
            for (int64_t t = 0; t < 2 * n; ++t) s += X[t * n + i] * X[t * n + j];
            H[i * n + j] = s;
        }
    for (auto& w : W) w = 0.05 * normal(rng);
    const tarq::CholeskyOut chol = tarq::cholesky_inverse_upper(H.data(), n, 0.01, 8);
    std::vector<double> U(chol.U.begin(), chol.U.end());

    // CPU reference (the tested OpenMP kernels)
    std::vector<int8_t> codes_cpu(m * n);
    std::vector<uint8_t> params_cpu(np);
    std::vector<float> deq_cpu(m * n);
    std::vector<double> err_cpu(m);
    tarq::gptq_sweep_jobs({{W.data(), m, U.data(), codes_cpu.data(), params_cpu.data(), deq_cpu.data(), err_cpu.data()}},
                          n, lat, block);

    // GPU
    double *dW, *dU, *derr;
    int8_t* dcodes;
    uint8_t* dparams;
    float* ddeq;
    CUDA_OK(cudaMalloc(&dW, sizeof(double) * m * n));
    CUDA_OK(cudaMalloc(&dU, sizeof(double) * n * n));
    CUDA_OK(cudaMalloc(&derr, sizeof(double) * m));
    CUDA_OK(cudaMalloc(&dcodes, m * n));
    CUDA_OK(cudaMalloc(&dparams, np));
    CUDA_OK(cudaMalloc(&ddeq, sizeof(float) * m * n));
    CUDA_OK(cudaMemcpy(dW, W.data(), sizeof(double) * m * n, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dU, U.data(), sizeof(double) * n * n, cudaMemcpyHostToDevice));
    auto run = [&] {
        tarq::cuda::sweep_device_ptrs(reinterpret_cast<uintptr_t>(dW), reinterpret_cast<uintptr_t>(dU), m, n,
                                      reinterpret_cast<uintptr_t>(dcodes), reinterpret_cast<uintptr_t>(dparams),
                                      reinterpret_cast<uintptr_t>(ddeq), reinterpret_cast<uintptr_t>(derr), type_id,
                                      group, tarq::lattice::kPlain, 0, block, 0);
        CUDA_OK(cudaDeviceSynchronize());
    };
    run();
    std::vector<int8_t> codes_gpu(m * n);
    std::vector<uint8_t> params_gpu(np);
    std::vector<double> err_gpu(m);
    CUDA_OK(cudaMemcpy(codes_gpu.data(), dcodes, m * n, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(params_gpu.data(), dparams, np, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(err_gpu.data(), derr, sizeof(double) * m, cudaMemcpyDeviceToHost));

    int64_t same = 0, same_params = 0;
    for (int64_t i = 0; i < m * n; ++i) same += codes_cpu[i] == codes_gpu[i];
    for (int64_t i = 0; i < np; ++i) same_params += params_cpu[i] == params_gpu[i];
    double ec = 0, eg = 0;
    for (int64_t i = 0; i < m; ++i) { ec += err_cpu[i]; eg += err_gpu[i]; }
    const double frac = double(same) / double(m * n), rel = std::fabs(ec - eg) / ec;

    const int reps = 10;
    auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) run();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
    std::printf("m=%lld n=%lld type=%d g=%d: codes equal %.6f, param bytes equal %.6f, err cpu %.9g gpu %.9g "
                "(rel %.2e), %.3f ms\n", (long long)m, (long long)n, type_id, group, frac,
                double(same_params) / double(np), ec, eg, rel, ms);
    const bool ok = frac >= 0.999 && rel <= 1e-5;
    std::printf("%s\n", ok ? "OK" : "MISMATCH");
    return ok ? 0 : 1;
}
