"""Method identities: TARQ(α=0) = rareBAL, rareBAL(λ→0) = GPTQ, QEP(δ=0) = GPTQ, RTN = ggml reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tarq.calib.stats import StatsAccumulator
from tarq.formats import get_format
from tarq.methods import available_methods, get_method
from tarq.methods.base import rel_error

FMT = get_format("q4_0")


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
        assert torch.equal(r1[k].codes, r2[k].codes), k
        assert torch.equal(r1[k].scales, r2[k].scales), k


def test_registry_lists_all_methods():
    assert set(available_methods()) >= {"rtn", "gptq", "rarebal", "tarq", "qep"}
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
    assert any(not torch.equal(a[k].codes, b[k].codes) for k in a)


def test_qep_without_propagated_error_equals_gptq():
    W, st = _problem(delta=0.0)
    assert float(st.H_delta.abs().max()) == 0.0
    _same(get_method("qep").quantize_group(W, st, FMT), get_method("gptq").quantize_group(W, st, FMT))
    W, st = _problem(delta=0.05)
    a, b = get_method("qep").quantize_group(W, st, FMT), get_method("gptq").quantize_group(W, st, FMT)
    assert any(not torch.equal(a[k].codes, b[k].codes) for k in a)


def test_gptq_beats_rtn_and_rarebal_protects_tail():
    W, st = _problem(seed=3, rows=800)
    rtn = get_method("rtn").quantize_group(W, None, FMT)
    gptq = get_method("gptq").quantize_group(W, st, FMT)
    rb = get_method("rarebal").quantize_group(W, st, FMT)
    for k in W:
        assert rel_error(W[k], gptq[k].dequant, st.H) < rel_error(W[k], rtn[k].dequant, st.H)
        assert rel_error(W[k], rb[k].dequant, st.H_tail) < rel_error(W[k], gptq[k].dequant, st.H_tail)


@pytest.mark.parametrize("fmt", [get_format("q4_0"), get_format("q8_0"), get_format("q4_0", 128)])
def test_codes_on_lattice_and_dequant_exact(fmt):
    W, st = _problem(seed=4, n=128)
    for name in ("rtn", "gptq", "rarebal", "tarq", "qep"):
        res = get_method(name).quantize_group(W, st if name != "rtn" else None, fmt)
        for k, r in res.items():
            assert r.codes.dtype == torch.int8 and r.scales.dtype == torch.float16
            assert int(r.codes.min()) >= fmt.qmin and int(r.codes.max()) <= fmt.qmax
            d = r.scales.float().repeat_interleave(fmt.group_size, dim=1)
            assert torch.equal(r.dequant, r.codes.float() * d), (name, k)


def test_rtn_is_ggml_reference_bit_exact():
    from tarq.export.ggml_rtn import as_f16_source, ggml_reference_quantize

    W, _ = _problem(seed=5)
    w = W["a.weight"]
    r = get_method("rtn").quantize_group({"a.weight": w}, None, FMT)["a.weight"]
    bd = ggml_reference_quantize("q4_0", as_f16_source(w.numpy()))
    assert np.array_equal(r.codes.numpy(), bd.codes) and np.array_equal(r.scales.numpy(), bd.scales)


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
