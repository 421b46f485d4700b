"""Streamed statistics (eqs. 7, 11) and the rareBAL trace equalisation (eqs. 8-9)."""
from __future__ import annotations

import torch

from tarq.calib.stats import StatsAccumulator
from tarq.methods.rarebal import rarebal_lambda, rarebal_metric


def _stream(seed=0, n=24, chunks=5, rows=40, track=True, tail_p=0.1):
    g = torch.Generator().manual_seed(seed)
    acc = StatsAccumulator(n, track_delta=track)
    xs, fps, tails = [], [], []
    for _ in range(chunks):
        x = torch.randn(rows, n, generator=g) * torch.linspace(0.2, 3.0, n)
        fp = x + 0.05 * torch.randn(rows, n, generator=g)
        tail = torch.rand(rows, generator=g) < tail_p
        acc.add(x, fp if track else None, tail)
        xs.append(x); fps.append(fp); tails.append(tail)
    return acc.finalize(), torch.cat(xs).double(), torch.cat(fps).double(), torch.cat(tails)


def test_streamed_stats_equal_direct_sums():
    st, X, FP, T = _stream()
    assert st.n_common == int((~T).sum()) and st.n_tail == int(T.sum()) and st.n_tail > 0
    torch.testing.assert_close(st.H_common, X[~T].T @ X[~T], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(st.H_tail, X[T].T @ X[T], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(st.H_delta, (FP - X).T @ X, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(st.H, X.T @ X, rtol=1e-5, atol=1e-4)
    assert st.H_common.dtype == torch.float64


def test_lambda_equalises_traces_eq9():
    st, *_ = _stream(seed=1)
    for c in (0.25, 1.0, 4.0):
        lam = rarebal_lambda(st, cost_ratio=c)
        assert lam > 1.0   # tail is a ~10 % minority, so it is up-weighted
        torch.testing.assert_close(torch.trace(lam * st.H_tail), c * torch.trace(st.H_common), rtol=1e-9, atol=0)
    H_rb, lam = rarebal_metric(st)
    torch.testing.assert_close(H_rb, st.H_common + lam * st.H_tail)


def test_no_tail_degenerates_to_plain_metric():
    st, *_ = _stream(seed=2, tail_p=0.0, track=False)
    assert st.n_tail == 0 and st.H_delta is None
    H_rb, lam = rarebal_metric(st)
    assert lam == 0.0
    torch.testing.assert_close(H_rb, st.H)


def test_nonfinite_activations_rejected():
    acc = StatsAccumulator(4, track_delta=False)
    x = torch.ones(3, 4)
    x[1, 2] = float("nan")
    try:
        acc.add(x)
    except ValueError as e:
        assert "non-finite" in str(e)
    else:
        raise AssertionError("NaN activations were accepted")
