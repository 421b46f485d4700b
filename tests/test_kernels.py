"""Native GPTQ kernels (tarq._C) against the PyTorch reference, plus lattice and damping properties.

Tolerance, stated truthfully: on every test shape below the native sweep gives the *same* codes and param bytes as
the reference for every type (asserted with min_equal=1.0). This is exact by construction in the lattice (ggml's
float32 searches and the per-column rounding are the same operations in the same order in C++ and PyTorch, C++
compiled without FP contraction) but only empirical for the float64 error feedback: the lazy-batch GEMM sums in a
different order than PyTorch's BLAS (~1e-16 relative), so a weight within that distance of a rounding boundary
could flip one code and change the rest of its row. Such ties have not occurred on these shapes; the sweep's
float64 precision is what keeps them that rare (docs/kernels.md "Precision")."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tarq.ggml import QUANT_TYPES, make_lattice
from tarq.ggml.lattice import round_affine, round_codebook
from tarq.kernels import NonPDHessianError, reference as ref

try:
    from tarq import _C
    from tarq.kernels import native
except ImportError:  # extension not built: the reference-only tests still run
    _C = native = None
needs_native = pytest.mark.skipif(native is None, reason="tarq._C is not built (see docs/kernels.md)")
IMPLS = [pytest.param(native, id="native", marks=needs_native), pytest.param(ref, id="reference")]

torch.set_num_threads(1)
Q4 = make_lattice("q4_0")


def get_format(name: str, group: int | None = None, fit: str = "plain"):
    return make_lattice(name, group, fit)


def random_hessian(n: int, seed: int, rows: int | None = None) -> torch.Tensor:
    """SPD second moment with uneven feature scales, like real activations."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(rows or 2 * n, n, generator=g, dtype=torch.float64)
    X *= torch.rand(n, generator=g, dtype=torch.float64) * 3 + 0.1
    return (X.T @ X).to(torch.float32)


def random_weight(m: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g) * 0.05


def weighted_error(W, Wq, H, damp):
    D = W.double() - Wq.double()
    Hd = H.double() + damp * torch.eye(H.shape[0], dtype=torch.float64)
    return float(torch.einsum("ij,jk,ik->", D, Hd, D))


def assert_same_sweep(a, b, min_equal=1.0, err_rtol=1e-9):
    equal = float((a.codes == b.codes).double().mean())
    assert equal >= min_equal, f"only {equal:.6f} of the codes agree"
    assert a.params.shape == b.params.shape and a.params.dtype == b.params.dtype == torch.uint8
    if min_equal == 1.0:
        assert torch.equal(a.params, b.params) and torch.equal(a.dequant, b.dequant)
    assert float(a.err) == pytest.approx(float(b.err), rel=err_rtol)


# ---- fp16 conversion ---------------------------------------------------------------------------------
@needs_native
def test_fp16_rounding_matches_numpy_on_random_and_edge_values():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=300_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    edges = np.array([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e6, -1e6, np.inf, -np.inf, 6.1035156e-05,
                      6.097555e-05, 5.9604645e-08, 2.9802322e-08, 2.9802326e-08, 8.940697e-08, 1e-10,
                      1.00048828125, 1.000732421875, 2049.0, 2051.0], dtype=np.float32)
    # ties at every half-ulp in the normal and the subnormal range
    ties = (np.arange(1, 4000, dtype=np.float32) + 0.5) * np.float32(2.0 ** -24)
    x = np.concatenate([x, edges, -edges, ties, ties * 1024])
    got = _C.f32_to_f16_bits(x)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    finite = ~np.isnan(x)
    np.testing.assert_array_equal(got[finite], want[finite])
    assert np.isnan(got[~finite].view(np.float16)).all()


@needs_native
def test_fp16_decode_matches_numpy_for_every_half():
    h = np.arange(2**16, dtype=np.uint16)
    got = _C.f16_bits_to_f32(h)
    want = h.view(np.float16).astype(np.float32)
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    assert same.all()


# ---- Cholesky of the damped inverse --------------------------------------------------------------------
@needs_native
@pytest.mark.parametrize("n", [384, 130])
def test_cholesky_inverse_upper_matches_reference(n):
    H = random_hessian(n, seed=n)
    a = native.cholesky_inverse_upper(H, damp_frac=0.01)
    b = ref.cholesky_inverse_upper(H, damp_frac=0.01)
    assert a.damp == pytest.approx(b.damp, rel=1e-12)
    assert a.U.dtype == torch.float32 and torch.equal(a.U, a.U.triu())
    assert float((a.U - b.U).abs().max() / b.U.abs().max()) < 1e-5
    Hd = H.double() + a.damp * torch.eye(n, dtype=torch.float64)
    prod = a.U.double().T @ a.U.double() @ Hd
    assert float((prod - torch.eye(n, dtype=torch.float64)).abs().max()) < 1e-3


def _nearest_to_zero(res, cols):
    """The lattice value nearest 0 in columns ``cols`` given each row's stored params (what a column whose working
    value stayed exactly 0 must dequantize to)."""
    t = res.lattice.qtype
    a, b = t.column_scales(res.param_records())
    a = torch.from_numpy(a[:, cols])
    zero = torch.zeros(a.shape, dtype=torch.float64)
    if t.codebook is not None:
        return round_codebook(zero, a, torch.from_numpy(t.codebook))[1].float()
    bb = None if b is None else torch.from_numpy(b[:, cols])
    return round_affine(zero, a, bb, t.code_min, t.code_max)[1].float()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", ["q4_0", "q6_k", "q4_1", "q4_k", "iq4_nl"])
def test_dead_columns_are_flagged_and_stay_zero(impl, name):
    n = 256
    H = random_hessian(n, seed=3)
    dead_idx = torch.tensor([0, 17, 95, 255])
    H[dead_idx, :] = 0
    H[:, dead_idx] = 0
    res = impl.cholesky_inverse_upper(H)
    assert res.dead.dtype == torch.bool and res.dead.nonzero().flatten().tolist() == dead_idx.tolist()
    assert bool(torch.isfinite(res.U).all())
    # U has no coupling into a dead column, so no error can reach it
    U = res.U.clone()
    U.diagonal().zero_()
    assert torch.count_nonzero(U[:, dead_idx]) == 0 and torch.count_nonzero(U[dead_idx, :]) == 0
    W = random_weight(64, n, seed=4)
    W[:, dead_idx] = 0  # the caller's job (docs/architecture.md)
    out = impl.gptq_sweep(W, res.U, make_lattice(name))
    got = out.dequant[:, dead_idx]
    # the working value of a dead column stays exactly 0: it dequantizes to the lattice value nearest 0 ...
    assert torch.equal(got, _nearest_to_zero(out, dead_idx))
    # ... which is exactly 0 on lattices with a zero level (symmetric types)
    if name in ("q4_0", "q6_k"):
        assert torch.equal(got, torch.zeros_like(got)) and torch.count_nonzero(out.codes[:, dead_idx]) == 0


@needs_native
def test_dead_columns_native_equals_reference():
    n = 96
    H = random_hessian(n, seed=5)
    H[:, 40] = 0
    H[40, :] = 0
    a, b = native.cholesky_inverse_upper(H), ref.cholesky_inverse_upper(H)
    assert torch.equal(a.dead, b.dead)
    W = random_weight(64, n, seed=6)
    W[:, 40] = 0
    assert_same_sweep(native.gptq_sweep(W, b.U, Q4), ref.gptq_sweep(W, b.U, Q4))


@pytest.mark.parametrize("impl", IMPLS)
def test_damping_escalates_on_singular_hessian(impl):
    n = 64
    H = torch.full((n, n), 4.0)  # rank 1: the undamped factorisation hits an exact zero pivot
    res = impl.cholesky_inverse_upper(H, damp_frac=0.0)
    assert res.damp == pytest.approx(4e-6)  # second try: 1e-6 * mean(diag H)
    Hinv = torch.linalg.inv(H.double() + res.damp * torch.eye(n, dtype=torch.float64))
    rel = (res.U.double().T @ res.U.double() - Hinv).abs().max() / Hinv.abs().max()
    assert float(rel) < 1e-4  # condition number ~1e8: compare the inverse relatively


@pytest.mark.parametrize("impl", IMPLS)
def test_damping_escalates_past_negative_eigenvalues(impl):
    n = 48
    g = torch.Generator().manual_seed(7)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    ev = torch.ones(n, dtype=torch.float64)
    ev[5] = -0.5  # indefinite: λ = 0.01, 0.1 mean(diag) fail, λ = 1·mean(diag) succeeds
    H = (Q * ev) @ Q.T
    mean = float(H.diagonal().mean())
    res = impl.cholesky_inverse_upper(H.to(torch.float32), damp_frac=0.01)
    assert res.damp == pytest.approx(mean, rel=1e-5)
    with pytest.raises(NonPDHessianError, match="not positive definite"):
        impl.cholesky_inverse_upper(H.to(torch.float32), damp_frac=0.01, max_tries=2)
    with pytest.raises(ValueError):  # NonPDHessianError is a ValueError
        impl.cholesky_inverse_upper(-torch.eye(n))


# ---- the sweep ------------------------------------------------------------------------------------------
WHISPER_SHAPES = [(384, 384), (1536, 384), (384, 1536), (512, 2048)]


@needs_native
@pytest.mark.parametrize("m,n", WHISPER_SHAPES, ids=[f"{m}x{n}" for m, n in WHISPER_SHAPES])
def test_sweep_native_matches_reference_on_whisper_shapes(m, n):
    H = random_hessian(n, seed=n + 1)
    chol = ref.cholesky_inverse_upper(H)
    W = random_weight(m, n, seed=m * 7 + n)
    a, b = native.gptq_sweep(W, chol.U, Q4), ref.gptq_sweep(W, chol.U, Q4)
    assert_same_sweep(a, b)
    ea, eb = weighted_error(W, a.dequant, H, chol.damp), weighted_error(W, b.dequant, H, chol.damp)
    assert ea == pytest.approx(eb, rel=1e-5)
    # the sweep's own error is tr((W-Ŵ) H_d (W-Ŵ)^T) (U is stored in f32, hence the loose tolerance)
    assert float(a.err) == pytest.approx(ea, rel=1e-3)


LATTICES = [(name, g) for name, t in QUANT_TYPES.items() for g in t.solver_groups]


@needs_native
@pytest.mark.parametrize("fit", ["plain", "weighted"])
@pytest.mark.parametrize("name,group", LATTICES, ids=[f"{n}-g{g}" for n, g in LATTICES])
def test_sweep_native_matches_reference_for_every_type(name, group, fit):
    """Identical codes and param bytes (asserted exactly), for every type, group width and fit mode."""
    n = 512
    H = random_hessian(n, seed=11)
    U = ref.cholesky_inverse_upper(H).U
    W = random_weight(96, n, seed=12)
    lat = make_lattice(name, group, fit)
    imp = H.diagonal() / H.diagonal().mean()
    a, b = native.gptq_sweep(W, U, lat, importance=imp), ref.gptq_sweep(W, U, lat, importance=imp)
    assert_same_sweep(a, b)
    t = lat.qtype
    assert tuple(a.params.shape) == (96, n // t.block_size, t.param_dtype.itemsize)
    assert int(a.codes.min()) >= t.code_min and int(a.codes.max()) <= t.code_max
    # the swept values are exactly what ggml's to_float gives for the bytes the file will hold
    assert np.array_equal(a.dequant.numpy(), t.dequantize(a.data(), n))


@needs_native
@pytest.mark.parametrize("name", ["q4_0", "q4_1", "q5_1", "iq4_nl", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"])
def test_first_group_params_are_ggmls_own_choice(name):
    """The first group sees no error feedback, so the plain fit stores exactly the params ggml's quantizer picks for
    those weights (checked against libggml's ggml_quantize_chunk bytes)."""
    from tarq.export.ggml_oracle import find_ggml_base_libs, load_ggml

    if "pywhispercpp" not in find_ggml_base_libs():
        pytest.skip("pywhispercpp's libggml-base not installed")
    t = make_lattice(name).qtype
    n = 512
    U = ref.cholesky_inverse_upper(random_hessian(n, seed=23)).U
    W = random_weight(64, n, seed=24)
    out = native.gptq_sweep(W, U, make_lattice(name))
    ggml = load_ggml("pywhispercpp").quantize(name, W.numpy())
    _, want = t.decode(ggml, n)
    got = out.param_records()
    if name == "q4_0":   # ggml computes the codes from the unrounded d, the stored d is the same fp16 value
        assert np.array_equal(got[:, 0].view(np.uint16), want[:, 0].view(np.uint16))
    else:
        assert got[:, 0].tobytes() == want[:, 0].tobytes()


@needs_native
@pytest.mark.parametrize("n,group,block", [(416, 32, 128), (448, 64, 128), (384, 128, 96)])
def test_partial_last_block_and_rounded_block_size(n, group, block):
    fmt = get_format("q4_0", group)
    U = ref.cholesky_inverse_upper(random_hessian(n, seed=n)).U
    W = random_weight(72, n, seed=n + 1)  # 72 rows: not a multiple of the 64-row task size
    assert_same_sweep(native.gptq_sweep(W, U, fmt, block_size=block), ref.gptq_sweep(W, U, fmt, block_size=block))


@needs_native
def test_q4_0_lattice_property_and_ggml_scale_rule():
    n = 512
    H = random_hessian(n, seed=21)
    U = ref.cholesky_inverse_upper(H).U
    W = random_weight(128, n, seed=22)
    out = native.gptq_sweep(W, U, Q4)
    nib = out.codes.to(torch.int32) + 8
    assert int(nib.min()) >= 0 and int(nib.max()) <= 15
    d = torch.from_numpy(out.param_records()["d"].astype(np.float32))
    blocks_d = d.repeat_interleave(32, dim=1)
    assert torch.equal(out.dequant, (nib - 8).float() * blocks_d)  # ggml Q4_0 dequant, exactly
    # the first group sees no error feedback: its scale is ggml's rule on the raw weights
    g0 = W[:, :32].double()
    signed_max = g0.gather(1, g0.abs().argmax(dim=1, keepdim=True)).squeeze(1)
    want = (signed_max.float() / -8.0).half()
    assert torch.equal(torch.from_numpy(out.param_records()["d"][:, 0].copy()).view(torch.int16), want.view(torch.int16))
    # and the element of largest magnitude lands on code -8 (or within one step after the fp16 rounding)
    arg = g0.abs().argmax(dim=1)
    assert bool((out.codes[torch.arange(128), arg] <= -7).all())


@needs_native
@pytest.mark.parametrize("name", ["q4_0", "q4_k"])
def test_sweep_is_block_size_invariant(name):
    n = 512
    H = random_hessian(n, seed=31)
    U = ref.cholesky_inverse_upper(H).U
    W = random_weight(128, n, seed=32)
    lat = make_lattice(name)
    base = native.gptq_sweep(W, U, lat, block_size=128)
    for bs in (32, 100, 256, 512):  # rounded up to a multiple of the group (256 for K-quants)
        assert_same_sweep(native.gptq_sweep(W, U, lat, block_size=bs), base, err_rtol=1e-6)


@needs_native
def test_gptq_beats_rtn_in_the_hessian_metric():
    n = 384
    H = random_hessian(n, seed=41, rows=n // 2)  # low-rank-ish, strongly correlated inputs
    chol = ref.cholesky_inverse_upper(H)
    W = random_weight(128, n, seed=42)
    g = native.gptq_sweep(W, chol.U, Q4)
    r = native.quantize_rtn(W, Q4)
    assert weighted_error(W, g.dequant, H, chol.damp) < 0.9 * weighted_error(W, r.dequant, H, chol.damp)


@needs_native
def test_batched_shared_u_equals_unbatched():
    n = 384
    U = ref.cholesky_inverse_upper(random_hessian(n, seed=51)).U
    Ws = [random_weight(m, n, seed=52 + m) for m in (384, 384, 128)]
    batched = native.gptq_sweep_batched(Ws, U, Q4)
    for W, b in zip(Ws, batched):
        single = native.gptq_sweep(W, U, Q4)
        assert torch.equal(b.codes, single.codes) and torch.equal(b.params, single.params)
        assert torch.equal(b.dequant, single.dequant) and float(b.err) == pytest.approx(float(single.err), rel=1e-6)
    for b, r in zip(batched, ref.gptq_sweep_batched(Ws, U, Q4)):
        assert_same_sweep(b, r)


@needs_native
def test_batched_independent_pairs_equals_unbatched():
    n = 128
    Us = torch.stack([ref.cholesky_inverse_upper(random_hessian(n, seed=60 + i)).U for i in range(4)])
    Ws = torch.stack([random_weight(96, n, seed=70 + i) for i in range(4)])
    fmt = get_format("q4_0", 64)
    for b, W, U in zip(native.gptq_sweep_batched(Ws, Us, fmt), Ws, Us):
        single = native.gptq_sweep(W, U, fmt)
        assert torch.equal(b.codes, single.codes) and torch.equal(b.dequant, single.dequant)
    # lists of different heights work too
    mixed = [random_weight(m, n, seed=m) for m in (32, 64, 200, 8)]
    for b, W, U in zip(native.gptq_sweep_batched(mixed, Us, fmt), mixed, Us):
        assert torch.equal(b.codes, native.gptq_sweep(W, U, fmt).codes)


@needs_native
def test_generic_isa_matches_dispatched(tmp_path):
    """The portable build of the kernels gives the same codes as the AVX2 one (run in a subprocess)."""
    import os
    import subprocess
    import sys
    script = (
        "import torch, sys; from tarq.kernels import native, reference as ref; from tarq.ggml import make_lattice;"
        "g=torch.Generator().manual_seed(1); X=torch.randn(600,256,generator=g); H=X.T@X;"
        "U=ref.cholesky_inverse_upper(H).U; W=torch.randn(64,256,generator=g);"
        "torch.save([native.gptq_sweep(W,U,make_lattice(t)).codes for t in ('q4_0','q4_k','iq4_nl')], sys.argv[1])")
    import tarq
    # the child must import the same tarq (and extension) as this process, whatever else is on sys.path
    root = os.path.dirname(os.path.dirname(os.path.abspath(tarq.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *sys.path]))
    outs = []
    for isa in ("generic", "auto"):
        path = tmp_path / f"{isa}.pt"
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=dict(env, TARQ_ISA=isa))
        outs.append(torch.load(path))
    for a, b in zip(*outs):   # same float64 arithmetic per element (the GEMM tiles differ only in width)
        assert torch.equal(a, b)


@needs_native
def test_bad_inputs_raise_value_error():
    U = torch.eye(48)
    with pytest.raises(ValueError, match="multiple of the group size"):
        native.gptq_sweep(torch.zeros(4, 48), U, Q4)
    with pytest.raises(ValueError, match="U must be"):
        native.gptq_sweep(torch.zeros(4, 64), U, Q4)
    with pytest.raises(ValueError, match="NaN"):
        native.cholesky_inverse_upper(torch.full((4, 4), float("nan")))


@needs_native
def test_env_forces_reference_backend(monkeypatch):
    import tarq.kernels as K
    monkeypatch.setenv("TARQ_KERNELS", "reference")
    assert K.backend_name() == "reference"
    monkeypatch.setenv("TARQ_KERNELS", "native")
    assert K.backend_name().startswith("native")


def test_missing_extension_falls_back_to_reference_with_warning(monkeypatch, caplog):
    import tarq.kernels as K
    monkeypatch.delenv("TARQ_KERNELS", raising=False)
    monkeypatch.setattr(K, "_native", None)
    monkeypatch.setattr(K, "_native_error", "simulated: no module named tarq._C")
    monkeypatch.setattr(K, "_warned", False)
    with caplog.at_level("WARNING", logger="tarq.kernels"):
        assert K.backend_name() == "reference"
        res = K.gptq_sweep(torch.randn(4, 32), torch.eye(32), Q4)
    assert "falling back" in caplog.text and res.codes.shape == (4, 32)
    monkeypatch.setenv("TARQ_KERNELS", "native")
    with pytest.raises(ImportError, match="simulated"):
        K.backend_name()


@needs_native
def test_native_results_do_not_depend_on_the_thread_count():
    """Fixed row groups / tiles / bands (csrc/sweep.cpp, cholesky.cpp, blas.cpp): --threads 1 and 2 agree bitwise."""
    H = random_hessian(384, seed=11)
    W = random_weight(600, 384, seed=12)
    X = torch.randn(700, 384, generator=torch.Generator().manual_seed(13))
    out = {}
    for t in (1, 2):
        _C.set_num_threads(t)
        chol = native.cholesky_inverse_upper(H)
        res = native.gptq_sweep(W, chol.U, Q4)
        S = np.zeros((384, 384))
        _C.syrk_lower_accumulate(S, X.numpy(), 1.0)
        out[t] = (chol.U, res.codes, res.dequant, S)
    _C.set_num_threads(1)
    for a, b in zip(out[1], out[2]):
        assert np.array_equal(np.asarray(a), np.asarray(b))


@needs_native
def test_native_info_and_thread_setting():
    from tarq.kernels import native_info, set_num_threads

    set_num_threads(2)
    info = native_info()
    assert info["native_threads"] == 2 == torch.get_num_threads()
    assert info["native_isa"] in ("avx2+fma", "generic")
    assert info["native_blas"] == _C.blas() and ("OpenBLAS" in info["native_blas"]) == bool(_C.has_blas)
    set_num_threads(1)
    assert _C.max_threads() == 1


@needs_native
def test_syrk_lower_accumulate_matches_float64_sums():
    g = torch.Generator().manual_seed(5)
    X = (torch.randn(333, 200, generator=g) * torch.linspace(0.1, 4.0, 200)).numpy()
    H = np.full((200, 200), 7.0)   # accumulates into what is there; the upper triangle is left alone
    _C.syrk_lower_accumulate(H, X, 2.5)
    want = 7.0 + 2.5 * (X.astype(np.float64).T @ X.astype(np.float64))
    low = np.tril_indices(200)
    # float32 sums per call (like a float32 GEMM): error relative to the products' scale, not to each entry
    scale = np.abs(X.astype(np.float64)).T @ np.abs(X.astype(np.float64)) * 2.5
    assert np.max(np.abs(H[low] - want[low]) / scale[low]) < 1e-6
    assert np.all(H[np.triu_indices(200, 1)] == 7.0)
    with pytest.raises(ValueError):
        _C.syrk_lower_accumulate(np.zeros((10, 10)), X, 1.0)
