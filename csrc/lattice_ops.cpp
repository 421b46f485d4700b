// Native ggml quantizer (ggml_quantize_chunk with or without importance weights, bit for bit) and the solver's
// lattice fit for whole matrices. Compiled with -ffp-contract=off (CMakeLists.txt): see lattice/search.h.
#include "lattice_ops.h"

#include <cstring>
#include <stdexcept>

#include "lattice/types.h"

namespace tarq {

using namespace lattice;

float row_sigma2(const float* x, int64_t n) {
    float s = 0.f;
    for (int64_t j = 0; j < n; ++j) s += x[j] * x[j];
    return s / static_cast<float>(n);
}

static void encode_block(int id, const int8_t* q, const uint8_t* prm, uint8_t* blk) {
    Segment seg[2];
    const int ns = param_segments(id, seg);
    for (int s = 0; s < ns; ++s) std::memcpy(blk + seg[s].b, prm + seg[s].p, static_cast<size_t>(seg[s].len));
    store_codes(id, q, blk);
}

void ggml_quantize_rows(int id, const float* x, int64_t rows, int64_t n, const float* qw, uint8_t* out) {
    TypeInfo t;
    if (!type_info(id, &t)) throw std::invalid_argument("ggml_quantize: unsupported type id " + std::to_string(id));
    if (n % t.block != 0) throw std::invalid_argument("ggml_quantize: rows do not tile the type's blocks");
    const int64_t nb = n / t.block;
#pragma omp parallel for schedule(dynamic, 16) if (rows * n >= (int64_t(1) << 16))
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * n;
        uint8_t* orow = out + r * nb * t.type_size;
        const float sigma2 = qw ? row_sigma2(xr, n) : 0.f;
        int8_t q[256];
        uint8_t prm[32] = {0};
        for (int64_t b = 0; b < nb; ++b) {
            const float* xb = xr + b * t.block;
            const float* qb = qw ? qw + b * t.block : nullptr;
            uint8_t* blk = orow + b * t.type_size;
            if (t.block == 256) {
                kq_search(id, xb, qb, prm, q);
                kq_requantize(id, xb, prm, q);
            } else if (id == IQ4_NL) {
                const float d = iq4nl_scale(xb, qb);
                const float inv = d != 0.f ? 1.f / d : 0.f;
                for (int j = 0; j < 32; ++j) q[j] = static_cast<int8_t>(iq4nl_index(inv * xb[j]));
                store_half(prm, d);
            } else {
                ggml_legacy_block(id, xb, qb, sigma2, q, prm);
            }
            encode_block(id, q, prm, blk);
        }
    }
}

void lattice_fit_rows(int id, int group, int mode, const double* x, int64_t rows, const float* qw,
                      const float* sigma2, uint8_t* params) {
    TypeInfo t;
    if (!type_info(id, &t)) throw std::invalid_argument("lattice_fit: unsupported type id " + std::to_string(id));
    const int64_t per_row = static_cast<int64_t>(group / t.block) * t.param_bytes;
#pragma omp parallel for schedule(static) if (rows * group >= (int64_t(1) << 16))
    for (int64_t r = 0; r < rows; ++r)
        fit_group(id, group, mode, x + r * group, qw, sigma2 ? sigma2[r] : 0.f, params + r * per_row);
}

}  // namespace tarq
