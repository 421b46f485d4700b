#include "sweep.h"

#include "blas.h"

#include <algorithm>

#include "lattice_ops.h"
#include <cstring>
#include <stdexcept>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tarq {

int64_t effective_block(int64_t block, int group) {
    if (block < 1) throw std::invalid_argument("block_size must be >= 1");
    return (block + group - 1) / group * group;  // a group never straddles two lazy blocks
}

namespace {

struct RowGroup {
    int job;
    int64_t r0, r1;
};

// Rows per task: at most 64 (64 x n working rows + 64 x block errors per thread), fewer when there are
// few rows so that there are at least 16 tasks; a multiple of the 4-row GEMM tile. It depends on the row
// count only, never on the thread count, so every GEMM call (and its rounding) is the same at any --threads.
int64_t row_group_size(int64_t total_rows) {
    int64_t rg = (total_rows + 15) / 16;
    rg = (rg + 3) / 4 * 4;
    return std::max<int64_t>(4, std::min<int64_t>(64, rg));
}

void sweep_group(const Kernels& K, const SweepJob& job, int64_t r0, int64_t r1, int64_t n, const Lattice& lat,
                 int64_t B, std::vector<double>& Wk, std::vector<double>& E, std::vector<float>& sigma2) {
    const int64_t rows = r1 - r0;
    Wk.assign(job.W + r0 * n, job.W + r1 * n);
    E.assign(static_cast<size_t>(rows * B), 0.0);
    std::fill(job.row_err + r0, job.row_err + r1, 0.0);
    const bool need_sigma2 = lat.mode == lattice::kWeighted && lat.type.block == 32 && !lat.type.codebook;
    if (need_sigma2) {  // the legacy importance fits weigh by the row's mean square (of the input weights)
        sigma2.resize(static_cast<size_t>(rows));
        std::vector<float> x32(static_cast<size_t>(n));
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t j = 0; j < n; ++j) x32[j] = static_cast<float>(Wk[r * n + j]);
            sigma2[r] = row_sigma2(x32.data(), n);
        }
    }
    const int64_t pb = n / lat.type.block * lat.type.param_bytes;
    for (int64_t i1 = 0; i1 < n; i1 += B) {
        const int64_t i2 = std::min(n, i1 + B);
        K.sweep_block(rows, n, i1, i2, Wk.data(), job.U, lat, need_sigma2 ? sigma2.data() : nullptr,
                      job.codes + r0 * n, job.params + r0 * pb, job.deq + r0 * n, E.data(), B, job.row_err + r0);
        // lazy-batch update of all later columns: W[:, i2:] -= E[:, i1:i2] U[i1:i2, i2:]
        blas::gemm_sub(K, rows, n - i2, i2 - i1, E.data(), B, job.U + i1 * n + i2, n, Wk.data() + i2, n);
    }
}

}  // namespace

void gptq_sweep_jobs(const std::vector<SweepJob>& jobs, int64_t n, const Lattice& lat, int64_t block) {
    if (n % lat.group != 0 || lat.group % lat.type.block != 0 || lat.group > 256)
        throw std::invalid_argument("input width is not a multiple of the group size");
    const int64_t B = effective_block(block, lat.group);
    int64_t total_rows = 0;
    for (const auto& job : jobs) total_rows += job.m;
    const int64_t rg = row_group_size(total_rows);
    std::vector<RowGroup> groups;
    for (size_t j = 0; j < jobs.size(); ++j)
        for (int64_t r = 0; r < jobs[j].m; r += rg)
            groups.push_back({static_cast<int>(j), r, std::min(jobs[j].m, r + rg)});
    const Kernels& K = pick_kernels();
    const int64_t ngroups = static_cast<int64_t>(groups.size());
#pragma omp parallel
    {
        std::vector<double> Wk, E;  // per-thread scratch, reused across row groups
        std::vector<float> sigma2;
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < ngroups; ++t) {
            const RowGroup& rg = groups[t];
            sweep_group(K, jobs[rg.job], rg.r0, rg.r1, n, lat, B, Wk, E, sigma2);
        }
    }
}

}  // namespace tarq
