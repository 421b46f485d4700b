"""Method identities: TARQ(α=0) = rareBAL, rareBAL(λ→0) = GPTQ, QEP(δ=0) = GPTQ; RTN and imatrix RTN = libggml."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tarq.calib.stats import StatsAccumulator
from tarq.ggml import make_lattice
from tarq.methods import available_methods, get_method
from tarq.methods.base import rel_error

FMT = make_lattice("q4_0")


def _problem(seed=0, n=64, m=48, rows=400, tail_p=0.1, delta=0.05):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n, generator=g) * torch.linspace(0.3, 2.0, n)
    tail = torch.rand(rows, generator=g) < tail_p
    # make the tail slice distributional different so H_rB really differs from H
    x[tail] = x[tail] * torch.linspace(3.0, 0.2, n)
    x_fp = x + delta * torch.randn(rows, n, generator=g)
    acc = StatsAccumulator(n, track_delta=True)
    for i in range(0, rows, 100):
        acc.add(x[i:i + 100], x_fp[i:i + 100], tail[i:i + 100])
    W = {"a.weight": torch.randn(m, n, generator=g) * 0.1, "b.weight": torch.randn(m // 2, n, generator=g) * 0.1}
    return W, acc.finalize()


def _same(r1, r2):
    for k in r1:
        assert torch.equal(r1[k].data, r2[k].data), k


def test_registry_lists_all_methods():
    assert set(available_methods()) >= {"rtn", "imatrix", "gptq", "rarebal", "tarq", "qep"}
    with pytest.raises(ValueError, match="unknown method"):
        get_method("awq")


def test_tarq_alpha_zero_equals_rarebal():
    W, st = _problem()
    _same(get_method("tarq", alpha=0.0).quantize_group(W, st, FMT), get_method("rarebal").quantize_group(W, st, FMT))
    # and the closed-form α is not zero on this problem, so the identity is not vacuous
    r = get_method("tarq").quantize_group(W, st, FMT)
    assert all(abs(v.info["alpha"]) > 0 for v in r.values())


def test_rarebal_small_cost_ratio_on_all_common_set_equals_gptq():
    W, st = _problem(tail_p=0.0)
    _same(get_method("rarebal", cost_ratio=1e-12).quantize_group(W, st, FMT), get_method("gptq").quantize_group(W, st, FMT))
    # with a tail present, rareBAL differs from GPTQ (the test above can fail)
    W, st = _problem(tail_p=0.2)
    a, b = get_method("rarebal").quantize_group(W, st, FMT), get_method("gptq").quantize_group(W, st, FMT)
    assert any(not torch.equal(a[k].data, b[k].data) for k in a)


def test_qep_without_propagated_error_equals_gptq():
    W, st = _problem(delta=0.0)
    assert float(st.H_delta.abs().max()) == 0.0
    _same(get_method("qep").quantize_group(W, st, FMT), get_method("gptq").quantize_group(W, st, FMT))
    W, st = _problem(delta=0.05)
    a, b = get_method("qep").quantize_group(W, st, FMT), get_method("gptq").quantize_group(W, st, FMT)
    assert any(not torch.equal(a[k].data, b[k].data) for k in a)


def test_gptq_beats_rtn_and_rarebal_protects_tail():
    W, st = _problem(seed=3, rows=800)
    rtn = get_method("rtn").quantize_group(W, None, FMT)
    gptq = get_method("gptq").quantize_group(W, st, FMT)
    rb = get_method("rarebal").quantize_group(W, st, FMT)
    for k in W:
        assert rel_error(W[k], gptq[k].dequant, st.H) < rel_error(W[k], rtn[k].dequant, st.H)
        assert rel_error(W[k], rb[k].dequant, st.H_tail) < rel_error(W[k], gptq[k].dequant, st.H_tail)


@pytest.mark.parametrize("fmt", [make_lattice("q4_0"), make_lattice("q8_0"), make_lattice("q4_0", 128),
                                 make_lattice("q4_k"), make_lattice("iq4_nl", fit="weighted"),
                                 make_lattice("q3_k", fit="weighted")], ids=lambda f: f"{f.name}-g{f.group}-{f.fit}")
def test_bytes_on_lattice_and_dequant_exact(fmt):
    W, st = _problem(seed=4, n=256)
    t = fmt.qtype
    for name in ("rtn", "imatrix", "gptq", "rarebal", "tarq", "qep"):
        res = get_method(name).quantize_group(W, st if name != "rtn" else None, fmt)
        for k, r in res.items():
            assert r.qtype is t and r.data.dtype == torch.uint8 and tuple(r.data.shape) == (W[k].shape[0], t.row_bytes(256))
            assert np.array_equal(r.dequant.numpy(), t.dequantize(r.data.numpy(), 256)), (name, k)


@pytest.mark.parametrize("qtype", ["q4_0", "q5_1", "q3_k", "iq4_nl"])
def test_rtn_and_imatrix_rtn_are_libggml_bit_exact(qtype):
    """Checked against ggml itself (ctypes), never against tarq's own quantizer."""
    from tarq.export.ggml_oracle import find_ggml_base_libs, load_ggml

    if "pywhispercpp" not in find_ggml_base_libs():
        pytest.skip("pywhispercpp's libggml-base not installed")
    oracle = load_ggml("pywhispercpp")
    W, st = _problem(seed=5, n=256)
    w = W["a.weight"]
    f16 = w.numpy().astype(np.float16).astype(np.float32)   # what whisper.cpp's quantize reads from an F16 file
    r = get_method("rtn").quantize_group({"a.weight": w}, None, make_lattice(qtype))["a.weight"]
    assert np.array_equal(r.data.numpy(), oracle.quantize(qtype, f16))
    imx = (st.H.diagonal().double() / (st.n_common + st.n_tail)).float().numpy()   # per-column mean x^2
    r = get_method("imatrix").quantize_group({"a.weight": w}, st, make_lattice(qtype))["a.weight"]
    assert np.array_equal(r.data.numpy(), oracle.quantize(qtype, f16, imx))
    assert not np.array_equal(r.data.numpy(), oracle.quantize(qtype, f16))   # the importance does matter


def test_weighted_fit_uses_the_metric_diagonal():
    W, st = _problem(seed=6, n=256)
    a = get_method("gptq").quantize_group(W, st, make_lattice("q4_k", fit="plain"))
    b = get_method("gptq").quantize_group(W, st, make_lattice("q4_k", fit="weighted"))
    assert any(not torch.equal(a[k].data, b[k].data) for k in a)
    for k in W:   # both are GPTQ solutions on the same lattice family: far better than RTN in the metric
        rtn = get_method("rtn").quantize_group({k: W[k]}, None, make_lattice("q4_k"))[k]
        assert rel_error(W[k], b[k].dequant, st.H) < rel_error(W[k], rtn.dequant, st.H)


def test_nan_weight_error_names_layer():
    W, st = _problem()
    W["b.weight"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="b.weight"):
        get_method("gptq").quantize_group(W, st, FMT)


def test_non_pd_hessian_error_names_layer():
    from tarq.calib.stats import GroupStats

    n = 32
    st = GroupStats(-torch.eye(n, dtype=torch.float64), torch.zeros(n, n, dtype=torch.float64), None, 10, 0)
    with pytest.raises(ValueError, match=r"enc\.fc1\.weight.*positive definite"):
        get_method("gptq").quantize_group({"enc.fc1.weight": torch.randn(8, n)}, st, FMT)
