// The per-column part of the GPTQ sweep (Algorithm 2 of the TARQ paper, App. C) onto a ggml lattice. Included
// once per ISA translation unit (sweep_generic.cpp / sweep_avx2.cpp, TARQ_ISA_NS set), all compiled with
// -ffp-contract=off: the group fit is ggml's float32 search (bit-exact only without contraction) and every
// float64 step then rounds exactly like the PyTorch reference (tarq.kernels.reference), mul and sub separately.
#include <algorithm>
#include <cmath>

#include "kernels.h"
#include "lattice/types.h"

namespace tarq {
namespace TARQ_ISA_NS {

void sweep_block(int64_t rows, int64_t n, int64_t i1, int64_t i2, double* W, const double* U, const Lattice& lat,
                 const float* sigma2, int8_t* codes, uint8_t* params, float* deq, double* E, int64_t ldE,
                 double* row_err) {
    const lattice::TypeInfo& t = lat.type;
    const int G = lat.group;
    const int64_t nb = n / t.block;
    const int8_t* kv = lattice::iq4nl_values();
    float a[256], b[256];
    for (int64_t r = 0; r < rows; ++r) {
        double* w = W + r * n;
        double* e_row = E + r * ldE;
        double err = 0.0;
        for (int64_t j = i1; j < i2; ++j) {
            const int k = static_cast<int>(j % G);
            if (k == 0) {  // group start: its columns are fully updated (the lazy block is a multiple of G)
                uint8_t* prm = params + (r * nb + j / t.block) * t.param_bytes;
                lattice::fit_group(t.id, G, lat.mode, w + j, lat.importance ? lat.importance + j : nullptr,
                                   sigma2 ? sigma2[r] : 0.f, prm);
                lattice::group_affine(t.id, G, prm, a, b);
            }
            double v;
            const int q = t.codebook ? lattice::round_codebook(w[j], a[k], kv, 16, &v)
                                     : lattice::round_affine(w[j], a[k], b[k], t.offset, t.code_min, t.code_max, &v);
            codes[r * n + j] = static_cast<int8_t>(q);
            deq[r * n + j] = static_cast<float>(v);  // exact: v is a float32 value
            const double e = (w[j] - v) / U[j * n + j];
            e_row[j - i1] = e;
            err += e * e;
            // Algorithm 2 propagation, restricted to the current lazy block
            const double* u = U + j * n;
            for (int64_t c = j + 1; c < i2; ++c) w[c] -= e * u[c];
        }
        row_err[r] += err;
    }
}

}  // namespace TARQ_ISA_NS
}  // namespace tarq
