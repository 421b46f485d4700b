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


def test_weighted_rows_and_symmetry():
    """weight w counts a row w times; the native lower-triangle update is mirrored to an exactly symmetric H."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(50, 16, generator=g)
    a, b = StatsAccumulator(16, track_delta=True), StatsAccumulator(16, track_delta=True)
    fp = x + 0.1
    a.add(x, fp, weight=3.0)
    for _ in range(3):
        b.add(x, fp)
    sa, sb = a.finalize(), b.finalize()
    assert sa.n_common == sb.n_common == 150 and sa.n_tail == 0
    torch.testing.assert_close(sa.H_common, sb.H_common, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(sa.H_delta, sb.H_delta, rtol=1e-6, atol=1e-5)
    assert torch.equal(sa.H_common, sa.H_common.T)
    assert torch.count_nonzero(sa.H_tail) == 0
    torch.testing.assert_close(sa.H_common, 3 * x.double().T @ x.double(), rtol=1e-5, atol=1e-4)


def test_padding_subsample_weights_cover_the_padding_once():
    from tarq.calib.pipeline import padding_subsample

    for first, stride, pick in ((300, 8, "golden"), (1493, 8, "middle"), (0, 5, "golden"), (1500, 8, "golden")):
        parts = padding_subsample(1500, first, stride, pick)
        idx = torch.cat([i for i, _ in parts]) if parts else torch.empty(0, dtype=torch.long)
        total = sum(w * i.numel() for i, w in parts)
        assert total == 1500 - first
        assert idx.unique().numel() == idx.numel() and (idx >= first).all() and (idx < 1500).all()
        # one kept frame per run of `stride` frames
        assert torch.equal(torch.sort((idx - first) // stride).values, torch.arange(idx.numel()))
    golden = torch.cat([i for i, _ in padding_subsample(1500, 0, 8, "golden")])
    assert len(set((golden % 8).tolist())) == 8   # no fixed phase (a fixed stride aliases with position embeddings)


def test_sampled_encoder_rows_weigh_the_whole_window():
    from tarq.calib.pipeline import CalibConfig, _select_rows
    from tarq.models.adapter import FRAMES, CalibSample

    s = CalibSample("u", torch.zeros(1), [0, 1], torch.zeros(1, dtype=torch.bool), n_speech_frames=270)
    x = torch.arange(1500.0)[:, None].repeat(1, 4)
    rows, _, tail, w = _select_rows(x, None, s, FRAMES, CalibConfig(encoder_frames="sampled", pad_stride=8,
                                                                     pad_margin=16))
    assert float(w.sum()) == 1500 and tail is None
    assert torch.equal(rows[:286], x[:286]) and bool((w[:286] == 1).all())
    assert rows.shape[0] == 286 + (1500 - 286 + 7) // 8
    assert _select_rows(x, None, s, FRAMES, CalibConfig(encoder_frames="all"))[0] is x
    assert _select_rows(x, None, s, FRAMES, CalibConfig(encoder_frames="speech"))[0].shape[0] == 270


def test_weighted_rows_equal_repeated_rows_in_one_call():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(12, 8, generator=g)
    fp = x + 0.2 * torch.randn(12, 8, generator=g)
    w = torch.tensor([1.0] * 6 + [4.0] * 5 + [3.0])
    a = StatsAccumulator(8, track_delta=True)
    a.add(x, fp, None, w)
    rep = w.long()
    b = StatsAccumulator(8, track_delta=True)
    b.add(x.repeat_interleave(rep, 0), fp.repeat_interleave(rep, 0))
    sa, sb = a.finalize(), b.finalize()
    assert sa.n_common == sb.n_common == 29
    torch.testing.assert_close(sa.H_common, sb.H_common, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sa.H_delta, sb.H_delta, rtol=1e-5, atol=1e-5)


def test_buffered_updates_equal_per_utterance_updates_and_the_float64_sums():
    """Rows are buffered and folded in every flush_rows rows: the statistics are those of per-utterance updates
    (to float32 rounding) and of the float64 definition, whatever the flush size; tail, weights and H_Δ included."""
    g = torch.Generator().manual_seed(5)
    n = 24
    utts = []
    for u in range(7):
        x = torch.randn(30 + 7 * u, n, generator=g)
        utts.append((x, x + 0.1 * torch.randn(x.shape, generator=g), torch.rand(x.shape[0], generator=g) < 0.3,
                     torch.where(torch.rand(x.shape[0], generator=g) < 0.5, 1.0, 4.0)))
    results = []
    for flush in (1, 50, 100_000):
        acc = StatsAccumulator(n, track_delta=True, flush_rows=flush)
        for x, fp, tail, w in utts:
            mine = x.clone()
            acc.add(mine, fp, tail, w)
            mine.fill_(1e3)   # the accumulator keeps copies: overwriting the caller's rows changes nothing
        results.append(acc.finalize())
    X = torch.cat([u[0] for u in utts]).double()
    D = torch.cat([u[1] for u in utts]).double() - X
    T = torch.cat([u[2] for u in utts])
    W = torch.cat([u[3] for u in utts]).double()
    want_c = (X[~T] * W[~T, None]).T @ X[~T]
    want_t = (X[T] * W[T, None]).T @ X[T]
    want_d = (D * W[:, None]).T @ X
    for st in results:
        assert st.n_common == int(W[~T].sum()) and st.n_tail == int(W[T].sum())
        torch.testing.assert_close(st.H_common, want_c, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(st.H_tail, want_t, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(st.H_delta, want_d, rtol=1e-5, atol=1e-4)
        assert torch.equal(st.H_common, st.H_common.T)


def test_rotating_padding_pick_covers_every_position_across_utterances():
    """pick="rotate": each utterance keeps one phase of every run, the phase advancing every second utterance, so
    over 2·stride utterances every padding position is kept exactly twice (once per cross-fitting fold)."""
    from tarq.calib.pipeline import padding_subsample

    stride, first = 8, 301
    kept = torch.zeros(1500, dtype=torch.long)
    per_fold = [torch.zeros(1500, dtype=torch.long), torch.zeros(1500, dtype=torch.long)]
    for u in range(2 * stride):
        parts = padding_subsample(1500, first, stride, "rotate", utterance=u)
        assert sum(w * i.numel() for i, w in parts) == 1500 - first   # weights still cover this utterance's padding
        idx = torch.cat([i for i, _ in parts])
        kept[idx] += 1
        per_fold[u % 2][idx] += 1
    full_runs_end = first + (1500 - first) // stride * stride
    assert bool((kept[first:full_runs_end] == 2).all()) and int(kept[:first].sum()) == 0
    assert bool((per_fold[0][first:full_runs_end] == 1).all()) and bool((per_fold[1][first:full_runs_end] == 1).all())
    # the last, shorter run (3 frames here) keeps a frame inside it whatever the phase
    assert bool((kept[full_runs_end:] > 0).any()) and kept[full_runs_end:].sum() == 2 * stride
