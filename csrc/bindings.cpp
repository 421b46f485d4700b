// pybind11 module tarq._C: NumPy buffers in, NumPy buffers out; no libtorch. The Python wrapper
// (python/tarq/kernels/native.py) converts torch tensors and re-raises errors as tarq exceptions.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <vector>

#include "blas.h"
#include "cholesky.h"
#include "fp16.h"
#include "kernels.h"
#include "lattice_ops.h"
#include "sweep.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef TARQ_WITH_CUDA
#include "cuda/sweep_cuda.h"
#endif

namespace py = pybind11;
using f64_array = py::array_t<double, py::array::c_style | py::array::forcecast>;

namespace {

using f32_array = py::array_t<float, py::array::c_style | py::array::forcecast>;

tarq::lattice::TypeInfo type_or_throw(int type_id) {
    tarq::lattice::TypeInfo t;
    if (!tarq::lattice::type_info(type_id, &t))
        throw std::invalid_argument("no native lattice for ggml type id " + std::to_string(type_id));
    return t;
}

tarq::Lattice make_lattice(int type_id, int group, int mode, const float* importance) {
    const tarq::lattice::TypeInfo t = type_or_throw(type_id);
    if (group <= 0 || group % t.block != 0 || group > t.max_group)
        throw std::invalid_argument("group size " + std::to_string(group) + " is not available for this type");
    if (mode != tarq::lattice::kPlain && mode != tarq::lattice::kWeighted) throw std::invalid_argument("bad fit mode");
    if (mode == tarq::lattice::kWeighted && importance == nullptr)
        throw std::invalid_argument("the weighted fit needs per-column importance");
    return {t, group, mode, importance};
}

const float* optional_vector(const py::object& obj, int64_t n, const char* what, f32_array& keep) {
    if (obj.is_none()) return nullptr;
    keep = f32_array::ensure(obj);
    if (!keep || keep.ndim() != 1 || keep.shape(0) != n)
        throw std::invalid_argument(std::string(what) + " must be a float32 vector of length " + std::to_string(n));
    return keep.data();
}

void check_matrix(const f64_array& a, const char* name) {
    if (a.ndim() != 2) throw std::invalid_argument(std::string(name) + " must be 2-D");
}

py::tuple cholesky_py(const f64_array& H, double damp_frac, int max_tries) {
    check_matrix(H, "H");
    const int64_t n = H.shape(0);
    if (H.shape(1) != n) throw std::invalid_argument("H must be square");
    tarq::CholeskyOut out;
    {
        py::gil_scoped_release nogil;
        out = tarq::cholesky_inverse_upper(H.data(), n, damp_frac, max_tries);
    }
    py::array_t<float> U({n, n});
    std::memcpy(U.mutable_data(), out.U.data(), sizeof(float) * n * n);
    py::array_t<bool> dead(n);
    for (int64_t i = 0; i < n; ++i) dead.mutable_data()[i] = out.dead[i] != 0;
    return py::make_tuple(U, out.damp, dead, out.tries);
}

// Sweeps W_i under U_{u_index[i]} for every i in one OpenMP region (shared-U rows can be concatenated by the
// caller; independent pairs pass one U each). Returns [(codes int8 [m, n], params uint8 [m, n/block, P],
// dequant f32 [m, n], row_err f64 [m])] per W.
py::list sweep_multi_py(const std::vector<f64_array>& Ws, const std::vector<f64_array>& Us,
                        const std::vector<int>& u_index, int type_id, int group, int mode,
                        const py::object& importance, int64_t block) {
    if (Ws.empty()) throw std::invalid_argument("no weight matrices");
    if (u_index.size() != Ws.size()) throw std::invalid_argument("u_index must have one entry per W");
    for (const auto& U : Us) check_matrix(U, "U");
    const int64_t n = Ws[0].ndim() == 2 ? Ws[0].shape(1) : -1;
    f32_array imp;
    const tarq::Lattice lat = make_lattice(type_id, group, mode, optional_vector(importance, n, "importance", imp));
    if (n <= 0 || n % group != 0) throw std::invalid_argument("input width must be a multiple of the group size");
    std::vector<tarq::SweepJob> jobs;
    py::list results;
    const int64_t nb = n / lat.type.block;
    for (size_t i = 0; i < Ws.size(); ++i) {
        check_matrix(Ws[i], "W");
        if (Ws[i].shape(1) != n) throw std::invalid_argument("all W must have the same width");
        if (u_index[i] < 0 || static_cast<size_t>(u_index[i]) >= Us.size())
            throw std::invalid_argument("u_index out of range");
        const f64_array& U = Us[u_index[i]];
        if (U.shape(0) != n || U.shape(1) != n) throw std::invalid_argument("U must be [n, n]");
        const int64_t m = Ws[i].shape(0);
        py::array_t<int8_t> codes({m, n});
        py::array_t<uint8_t> params({m, nb, static_cast<int64_t>(lat.type.param_bytes)});
        py::array_t<float> deq({m, n});
        py::array_t<double> row_err(m);
        jobs.push_back({Ws[i].data(), m, U.data(), codes.mutable_data(), params.mutable_data(), deq.mutable_data(),
                        row_err.mutable_data()});
        results.append(py::make_tuple(codes, params, deq, row_err));
    }
    {
        py::gil_scoped_release nogil;
        tarq::gptq_sweep_jobs(jobs, n, lat, block);
    }
    return results;
}

// ggml_quantize_chunk(type, x, ..., imatrix): float32 [rows, n] -> uint8 [rows, row_bytes]
py::array_t<uint8_t> ggml_quantize_py(int type_id, const f32_array& x, const py::object& imatrix) {
    if (x.ndim() != 2) throw std::invalid_argument("x must be 2-D [rows, n_per_row]");
    const tarq::lattice::TypeInfo t = type_or_throw(type_id);
    const int64_t rows = x.shape(0), n = x.shape(1);
    if (n % t.block != 0) throw std::invalid_argument("rows do not tile the type's blocks");
    f32_array qw;
    const float* q = optional_vector(imatrix, n, "imatrix", qw);
    py::array_t<uint8_t> out({rows, n / t.block * t.type_size});
    {
        py::gil_scoped_release nogil;
        tarq::ggml_quantize_rows(type_id, x.data(), rows, n, q, out.mutable_data());
    }
    return out;
}

// The solver's group fit for every row of x float64 [rows, group] -> params uint8 [rows, group/block, P]
py::array_t<uint8_t> lattice_fit_py(int type_id, int group, int mode, const f64_array& x, const py::object& importance,
                                    const py::object& sigma2) {
    check_matrix(x, "x");
    f32_array imp, s2;
    const tarq::Lattice lat = make_lattice(type_id, group, mode, optional_vector(importance, group, "importance", imp));
    if (x.shape(1) != group) throw std::invalid_argument("x must have `group` columns");
    const int64_t rows = x.shape(0);
    const float* s = optional_vector(sigma2, rows, "sigma2", s2);
    py::array_t<uint8_t> out({rows, static_cast<int64_t>(group / lat.type.block), static_cast<int64_t>(lat.type.param_bytes)});
    tarq::lattice_fit_rows(type_id, group, mode, x.data(), rows, lat.importance, s, out.mutable_data());
    return out;
}

py::array_t<uint16_t> f32_to_f16_py(const py::array_t<float, py::array::c_style | py::array::forcecast>& x) {
    py::array_t<uint16_t> out(x.size());
    for (py::ssize_t i = 0; i < x.size(); ++i) out.mutable_data()[i] = tarq::f32_to_f16(x.data()[i]);
    return out;
}

py::array_t<float> f16_to_f32_py(const py::array_t<uint16_t, py::array::c_style | py::array::forcecast>& x) {
    py::array_t<float> out(x.size());
    for (py::ssize_t i = 0; i < x.size(); ++i) out.mutable_data()[i] = tarq::f16_to_f32(x.data()[i]);
    return out;
}

// H (float64 [n, n], C-contiguous, modified in place): lower triangle += alpha * X^T X for X float32 [T, n].
void syrk_lower_py(py::array_t<double, py::array::c_style> H, const py::array_t<float, py::array::c_style>& X,
                   double alpha) {
    if (X.ndim() != 2 || H.ndim() != 2) throw std::invalid_argument("syrk: X and H must be 2-D");
    const int64_t T = X.shape(0), n = X.shape(1);
    if (H.shape(0) != n || H.shape(1) != n) throw std::invalid_argument("syrk: H must be [n, n] for X [T, n]");
    if (!H.writeable()) throw std::invalid_argument("syrk: H is read-only");
    double* h = H.mutable_data();
    const float* x = X.data();
    py::gil_scoped_release nogil;
    tarq::blas::syrk_lower_accumulate(T, n, x, alpha, h);
}

int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "tarq native GPTQ kernels (C++/OpenMP; CUDA sweep when built with nvcc)";
    py::register_exception<tarq::NonPDError>(m, "NonPDHessianError", PyExc_ValueError);
    m.def("cholesky_inverse_upper", &cholesky_py, py::arg("H"), py::arg("damp_frac") = 0.01,
          py::arg("max_tries") = 8,
          "H f64 [n,n] -> (U f32 [n,n] upper with (H+λI)^-1 = U^T U, λ used, dead bool [n], tries)");
    m.def("gptq_sweep_multi", &sweep_multi_py, py::arg("Ws"), py::arg("Us"), py::arg("u_index"), py::arg("type_id"),
          py::arg("group"), py::arg("mode"), py::arg("importance") = py::none(), py::arg("block") = 128);
    m.def("ggml_quantize", &ggml_quantize_py, py::arg("type_id"), py::arg("x"), py::arg("imatrix") = py::none(),
          "ggml_quantize_chunk bit for bit: float32 [rows, n] (+ importance [n]) -> uint8 [rows, row_bytes]");
    m.def("lattice_fit", &lattice_fit_py, py::arg("type_id"), py::arg("group"), py::arg("mode"), py::arg("x"),
          py::arg("importance") = py::none(), py::arg("sigma2") = py::none(),
          "the solver's group fit: float64 [rows, group] -> param records uint8 [rows, group/block, P]");
    m.def("f32_to_f16_bits", &f32_to_f16_py, "float32 -> IEEE half bits (round to nearest even)");
    m.def("f16_bits_to_f32", &f16_to_f32_py);
    m.def("max_threads", &max_threads);
    m.def("set_num_threads", [](int n) {
#ifdef _OPENMP
        if (n > 0) omp_set_num_threads(n);
#endif
    }, "OpenMP threads for later calls (benchmarks match torch.set_num_threads)");
    m.def("isa", [] { return std::string(tarq::pick_kernels().isa); });
    m.def("blas", &tarq::blas::name, "the BLAS behind the solver's GEMMs and triangular solves (or 'built-in')");
    m.attr("has_blas") = tarq::blas::available();
    m.def("syrk_lower_accumulate", &syrk_lower_py, py::arg("H"), py::arg("X"), py::arg("alpha") = 1.0,
          "H[i,j] += alpha * (X^T X)[i,j] for j <= i; X float32 [T,n] (one utterance), H float64 [n,n] in place");
#ifdef TARQ_WITH_CUDA
    m.attr("has_cuda") = true;
    m.def("gptq_sweep_cuda", &tarq::cuda::sweep_device_ptrs, py::arg("W"), py::arg("U"), py::arg("m"), py::arg("n"),
          py::arg("codes"), py::arg("params"), py::arg("deq"), py::arg("row_err"), py::arg("type_id"),
          py::arg("group"), py::arg("mode"), py::arg("importance"), py::arg("block"), py::arg("stream") = 0,
          "CUDA sweep on device pointers (float64 W/U, f32 importance or 0, int8 codes, uint8 params, f32 dequant, "
          "f64 row_err)");
#else
    m.attr("has_cuda") = false;
#endif
}
