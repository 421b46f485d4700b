// Whole-matrix entry points of the native lattice (lattice_ops.cpp); the per-block routines are in lattice/.
#pragma once
#include <cstdint>

namespace tarq {

// ggml_quantize_chunk(type, x, out, 0, rows, n, qw): x float32 [rows, n], qw float32 [n] or nullptr.
void ggml_quantize_rows(int type_id, const float* x, int64_t rows, int64_t n, const float* qw, uint8_t* out);

// The solver's fit of one parameter group per row: x float64 [rows, group] -> params [rows, group/block, P].
void lattice_fit_rows(int type_id, int group, int mode, const double* x, int64_t rows, const float* qw,
                      const float* sigma2, uint8_t* params);

// mean(x^2) of a float32 row summed in order (ggml's sigma2 for the legacy importance quantizers)
float row_sigma2(const float* x, int64_t n);

}  // namespace tarq
