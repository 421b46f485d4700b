"""Native GPTQ kernels (tarq._C) against the PyTorch reference, plus lattice and damping properties."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tarq.formats import get_format
from tarq.kernels import NonPDHessianError, reference as ref

try:
    from tarq import _C
    from tarq.kernels import native
except ImportError:  # extension not built: the reference-only tests still run
    _C = native = None
needs_native = pytest.mark.skipif(native is None, reason="tarq._C is not built (see docs/kernels.md)")
IMPLS = [pytest.param(native, id="native", marks=needs_native), pytest.param(ref, id="reference")]

torch.set_num_threads(1)
Q4 = get_format("q4_0")


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


def assert_same_sweep(a, b, min_equal=0.999, err_rtol=1e-5):
    equal = float((a.codes == b.codes).double().mean())
    assert equal >= min_equal, f"only {equal:.6f} of the codes agree"
    assert a.scales.shape == b.scales.shape and a.scales.dtype == b.scales.dtype == torch.float16
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


@pytest.mark.parametrize("impl", IMPLS)
def test_dead_columns_are_flagged_and_stay_zero(impl):
    n = 96
    H = random_hessian(n, seed=3)
    dead_idx = torch.tensor([0, 17, 95])
    H[dead_idx, :] = 0
    H[:, dead_idx] = 0
    res = impl.cholesky_inverse_upper(H)
    assert res.dead.dtype == torch.bool and res.dead.nonzero().flatten().tolist() == dead_idx.tolist()
    assert bool(torch.isfinite(res.U).all())
    W = random_weight(64, n, seed=4)
    W[:, dead_idx] = 0  # the caller's job (docs/architecture.md)
    out = impl.gptq_sweep(W, res.U, Q4)
    # GPTQ may move error into a dead column (its H row is 0, so it costs nothing); it must stay on-lattice
    assert bool(torch.isfinite(out.dequant).all())


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
    assert_same_sweep(native.gptq_sweep(W, b.U, Q4), ref.gptq_sweep(W, b.U, Q4), min_equal=1.0)


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


@needs_native
@pytest.mark.parametrize("fmt_name,group", [("q8_0", 32), ("q4_0", 64), ("q4_0", 128), ("q8_0", 128)])
def test_sweep_formats_and_group_sizes(fmt_name, group):
    fmt = get_format(fmt_name, group)
    n = 384
    H = random_hessian(n, seed=11)
    U = ref.cholesky_inverse_upper(H).U
    W = random_weight(256, n, seed=12)
    a, b = native.gptq_sweep(W, U, fmt), ref.gptq_sweep(W, U, fmt)
    assert_same_sweep(a, b)
    assert a.scales.shape == (256, n // group)
    assert int(a.codes.min()) >= fmt.qmin and int(a.codes.max()) <= fmt.qmax
    expanded = a.scales.float().repeat_interleave(group, dim=1)
    assert torch.equal(a.dequant, a.codes.float() * expanded)


@needs_native
@pytest.mark.parametrize("n,group,block", [(416, 32, 128), (448, 64, 128), (384, 128, 96)])
def test_partial_last_block_and_rounded_block_size(n, group, block):
    fmt = get_format("q4_0", group)
    U = ref.cholesky_inverse_upper(random_hessian(n, seed=n)).U
    W = random_weight(72, n, seed=n + 1)  # 72 rows: not a multiple of the 64-row task size
    assert_same_sweep(native.gptq_sweep(W, U, fmt, block_size=block), ref.gptq_sweep(W, U, fmt, block_size=block),
                      min_equal=1.0)


@needs_native
def test_q4_0_lattice_property_and_ggml_scale_rule():
    n = 512
    H = random_hessian(n, seed=21)
    U = ref.cholesky_inverse_upper(H).U
    W = random_weight(128, n, seed=22)
    out = native.gptq_sweep(W, U, Q4)
    nib = out.codes.to(torch.int32) + 8
    assert int(nib.min()) >= 0 and int(nib.max()) <= 15
    blocks_d = out.scales.float().repeat_interleave(32, dim=1)
    assert torch.equal(out.dequant, (nib - 8).float() * blocks_d)  # ggml Q4_0 dequant, exactly
    # the first group sees no error feedback: its scale is ggml's rule on the raw weights
    g0 = W[:, :32].double()
    signed_max = g0.gather(1, g0.abs().argmax(dim=1, keepdim=True)).squeeze(1)
    want = (signed_max.float() / -8.0).half()
    assert torch.equal(out.scales[:, 0].view(torch.int16), want.view(torch.int16))
    # and the element of largest magnitude lands on code -8 (or within one step after the fp16 rounding)
    arg = g0.abs().argmax(dim=1)
    assert bool((out.codes[torch.arange(128), arg] <= -7).all())


@needs_native
def test_sweep_is_block_size_invariant():
    n = 256
    H = random_hessian(n, seed=31)
    U = ref.cholesky_inverse_upper(H).U
    W = random_weight(128, n, seed=32)
    base = native.gptq_sweep(W, U, Q4, block_size=128)
    for bs in (32, 100, 256):  # 100 rounds up to 128: groups never straddle blocks
        assert_same_sweep(native.gptq_sweep(W, U, Q4, block_size=bs), base)


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
        assert torch.equal(b.codes, single.codes) and torch.equal(b.scales, single.scales)
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
        "import torch, sys; from tarq.kernels import native, reference as ref; from tarq.formats import get_format;"
        "g=torch.Generator().manual_seed(1); X=torch.randn(400,192,generator=g); H=X.T@X;"
        "U=ref.cholesky_inverse_upper(H).U; W=torch.randn(64,192,generator=g);"
        "torch.save(native.gptq_sweep(W,U,get_format('q4_0')).codes, sys.argv[1])")
    import tarq
    # the child must import the same tarq (and extension) as this process, whatever else is on sys.path
    root = os.path.dirname(os.path.dirname(os.path.abspath(tarq.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *sys.path]))
    outs = []
    for isa in ("generic", "auto"):
        path = tmp_path / f"{isa}.pt"
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=dict(env, TARQ_ISA=isa))
        outs.append(torch.load(path))
    assert float((outs[0] == outs[1]).double().mean()) >= 0.999


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
