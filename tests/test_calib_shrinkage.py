"""Shrinkage of a group's H toward its diagonal (``--shrinkage diagonal``, docs/methods.md §2 "Shrinkage").

The oracle for the intensity is the estimator's definition evaluated directly: stack every utterance's own
S_u = X_uᵀX_u, take the unbiased variance of each off-diagonal entry's mean across utterances and divide by the
squared means (Schäfer & Strimmer 2005, target D) — no Gram-matrix identity, no streaming."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tarq.calib.pipeline import CalibConfig, run_calibration
from tarq.calib.stats import FoldedStatsAccumulator, StatsAccumulator, shrink_offdiagonal, shrinkage_intensity
from tarq.ggml import TypePlan
from tarq.methods import get_method
from tarq.models.whisper.adapter import WhisperAdapter

from test_pipeline import loaded, samples  # noqa: F401  (tiny random Whisper fixtures)


def _direct_intensity(units: list[torch.Tensor]) -> float:
    S = torch.stack([(x.double().T @ x.double()) for x in units])     # [U, n, n]
    U, n = S.shape[0], S.shape[1]
    off = ~torch.eye(n, dtype=torch.bool)
    var_of_mean = S.var(dim=0, unbiased=True) / U                     # Var̂ of the mean of each entry
    mean = S.mean(dim=0)
    rho = float(var_of_mean[off].sum() / mean[off].pow(2).sum())
    return min(1.0, max(0.0, rho))


def _accumulate(units, weights=None, flush_rows=2048):
    acc = StatsAccumulator(units[0].shape[1], track_delta=False, track_units=True, flush_rows=flush_rows)
    for k, x in enumerate(units):
        acc.add(x, weight=None if weights is None else weights[k])
    return acc.finalize()


@pytest.mark.parametrize("U,T,n", [(6, 3, 5), (12, 40, 8), (4, 9, 16)])   # rows below and above the width
def test_intensity_matches_its_definition(U, T, n):
    g = torch.Generator().manual_seed(U * 100 + T)
    mix = torch.randn(n, n, generator=g)
    units = [torch.randn(T, n, generator=g) @ mix + 0.3 for _ in range(U)]
    got = shrinkage_intensity(_accumulate(units, flush_rows=7))
    assert got == pytest.approx(_direct_intensity(units), rel=1e-6, abs=1e-9)


def test_weighted_rows_count_as_repeated_rows_of_the_same_utterance():
    g = torch.Generator().manual_seed(1)
    units = [torch.randn(5, 6, generator=g) for _ in range(7)]
    w = [torch.tensor([1.0, 4.0, 1.0, 2.0, 1.0])] * 7
    repeated = [torch.cat([x[i:i + 1].repeat(int(w[0][i]), 1) for i in range(5)]) for x in units]
    assert shrinkage_intensity(_accumulate(units, w)) == pytest.approx(_direct_intensity(repeated), rel=1e-6)


def test_identical_or_single_units_give_no_shrinkage():
    x = torch.randn(7, 5)
    assert shrinkage_intensity(_accumulate([x, x.clone(), x.clone()])) == pytest.approx(0.0, abs=1e-6)   # float32 Gram
    assert shrinkage_intensity(_accumulate([x])) == 0.0
    st = StatsAccumulator(5, track_delta=False).finalize()          # untracked: no units, no shrinkage
    assert st.n_units == 0 and shrinkage_intensity(st) == 0.0


def test_units_that_disagree_entirely_are_clipped_to_full_shrinkage():
    # two utterances with opposite off-diagonal parts: H's off-diagonal part sums to zero -> all noise
    a = torch.tensor([[1.0, 1.0]])
    b = torch.tensor([[1.0, -1.0]])
    assert shrinkage_intensity(_accumulate([a, b])) == 0.0           # off(H) = 0: nothing to shrink
    c = torch.tensor([[1.0, -0.9]])
    assert shrinkage_intensity(_accumulate([a, c])) == 1.0           # variance far above the squared mean


def test_shrinkage_helps_where_the_sample_is_short_and_vanishes_where_it_is_long():
    """Against the true second moment of a Gaussian source: few utterances -> a clear intensity that lowers the
    Frobenius error; many -> an intensity near zero (the estimate is already good)."""
    n = 24
    g = torch.Generator().manual_seed(0)
    A = torch.randn(n, n, generator=g) / n ** 0.5
    sigma = A @ A.T + 0.1 * torch.eye(n)
    L = torch.linalg.cholesky(sigma)
    for U, lo, hi in ((15, 0.1, 0.9), (3000, 0.0, 0.02)):
        units = [torch.randn(4, n, generator=g) @ L.T for _ in range(U)]
        st = _accumulate(units)
        rho = shrinkage_intensity(st)
        assert lo <= rho <= hi, (U, rho)
        scale = 1.0 / (4 * U)
        raw = float((st.H * scale - sigma).norm())
        shrunk = float((shrink_offdiagonal(st, rho).H * scale - sigma).norm())
        if U == 15:
            assert shrunk < 0.95 * raw


def test_shrink_keeps_the_diagonal_and_scales_the_rest_of_both_parts():
    g = torch.Generator().manual_seed(2)
    acc = StatsAccumulator(4, track_delta=True, track_units=True)
    for _ in range(3):
        x = torch.randn(6, 4, generator=g)
        acc.add(x, x + 0.1, tail=torch.tensor([True, False, False, True, False, False]))
    st = acc.finalize()
    sh = shrink_offdiagonal(st, 0.25)
    for M, S in ((st.H_common, sh.H_common), (st.H_tail, sh.H_tail), (st.H, sh.H)):
        assert torch.equal(S.diagonal(), M.diagonal())
        off = ~torch.eye(4, dtype=torch.bool)
        assert torch.allclose(S[off], 0.75 * M[off], rtol=1e-12, atol=0)
    assert sh.H_delta is st.H_delta and st.n_units == 3


def test_folded_statistics_carry_the_units_of_both_folds():
    g = torch.Generator().manual_seed(3)
    units = [torch.randn(5, 6, generator=g) for _ in range(6)]
    acc = FoldedStatsAccumulator(6, track_units=True)
    for i, x in enumerate(units):
        acc.add(x, x + 0.05, fold=i % 2)
    st = acc.finalize()
    assert st.n_units == 6
    assert shrinkage_intensity(st) == pytest.approx(_direct_intensity(units), rel=1e-6)


def test_zero_intensity_gives_the_unshrunk_codes_and_the_report_records_it(loaded, samples, monkeypatch):
    import tarq.calib.pipeline as pipeline

    cfg = CalibConfig(n_calib=2, progress=False)
    plain = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("gptq"), TypePlan("q4_0"), cfg)
    real = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("gptq"), TypePlan("q4_0"),
                           replace(cfg, shrinkage="diagonal"))
    rhos = {n: rep["shrinkage"] for n, rep in real.layers.items()}
    assert set(rhos) == set(plain.quantized) and all(0.0 <= r <= 1.0 for r in rhos.values())
    assert any(r > 0 for r in rhos.values())    # two utterances of a random model disagree
    assert any(not torch.equal(real.quantized[n].data, plain.quantized[n].data) for n in plain.quantized)
    monkeypatch.setattr(pipeline, "shrinkage_intensity", lambda stats: 0.0)
    zero = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("gptq"), TypePlan("q4_0"),
                           replace(cfg, shrinkage="diagonal"))
    for n, r in plain.quantized.items():
        assert torch.equal(r.data, zero.quantized[n].data), n
        assert zero.layers[n]["shrinkage"] == 0.0


def test_unknown_shrinkage_is_an_error():
    with pytest.raises(ValueError, match="shrinkage"):
        CalibConfig(shrinkage="ledoit")
