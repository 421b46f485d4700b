"""Issue 15's pieces, each on its defining property: encoder-frame tags, loss-sensitivity weights (`fisher`),
FADE's layer-adaptive α, mixed / rare-biased calibration selection, and the embedding order."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tarq.calib.frame_tags import alignment_heads_or_upper, frames_from_attention
from tarq.calib.pipeline import CalibConfig, run_calibration
from tarq.calib.selection import combine_sources, rare_density, select_calibration
from tarq.calib.stats import FoldedStatsAccumulator, StatsAccumulator
from tarq.ggml import TypePlan, make_lattice
from tarq.methods import get_method
from tarq.methods.fade import fade_alpha, held_out_alpha, reliability, robust_z, stable_rank_gain
from tarq.models.whisper.adapter import WhisperAdapter

from test_pipeline import loaded, samples  # noqa: F401  (tiny random Whisper fixtures)

FMT = TypePlan("q4_0")          # run_calibration takes a plan
LAT = make_lattice("q4_0")      # a method's quantize_group takes one lattice


# ------------------------------------------------------------------------------------------------ frame tags

def test_frame_tags_land_where_the_attention_points():
    T, F = 6, 200
    attn = torch.full((T, F), 1e-4)
    attn[2, 100:104] = 1.0            # tail position 2 reads frames 100-103
    attn[2, 150] = 0.4                # below half the peak: not tagged
    attn[4, 20] = 1.0                 # position 4 is common: its peak must not be tagged
    tail = torch.tensor([False, False, True, False, False, False])
    m = frames_from_attention(attn, tail, rel_threshold=0.5, dilation=2)
    assert m.nonzero().reshape(-1).tolist() == list(range(98, 106))
    assert not frames_from_attention(attn, torch.zeros(T, dtype=torch.bool)).any()
    assert frames_from_attention(attn, tail, dilation=0, n_frames=250).nonzero().reshape(-1).tolist() == \
        [100, 101, 102, 103]


def test_alignment_heads_fallback_is_the_upper_half():
    assert alignment_heads_or_upper([[1, 0], [2, 3]], 4, 6) == [(1, 0), (2, 3)]
    assert alignment_heads_or_upper(None, 4, 2) == [(2, 0), (2, 1), (3, 0), (3, 1)]
    with pytest.raises(ValueError, match="outside"):
        alignment_heads_or_upper([[4, 0]], 4, 6)


def test_frame_tags_on_a_real_forward(loaded, samples):
    """The analysis pass tags frames only when the sample has tail positions, and only speech-region frames."""
    from tarq.calib.analysis import AnalysisOptions, analyse

    ss = [replace(s, frame_tail=None, extra={}) for s in samples]
    ss[0] = replace(ss[0], tail=torch.ones_like(ss[0].tail))      # pretend every position is rare
    ss[1] = replace(ss[1], tail=torch.zeros_like(ss[1].tail))
    rep = analyse(loaded.model, WhisperAdapter(), ss, AnalysisOptions(frame_tags="attention"))
    assert ss[0].frame_tail.shape == (1500,) and ss[0].frame_tail.any()
    assert not ss[1].frame_tail.any()
    assert rep["frame_tags"]["tagged_frames"] == int(ss[0].frame_tail.sum())


# ------------------------------------------------------------------------------------------------ fisher

def test_uniform_sensitivities_reduce_fisher_to_gptq(loaded, samples, monkeypatch):
    """Constant loss sensitivities normalise to w = 1 exactly: `fisher` then gives GPTQ's codes."""
    import tarq.calib.analysis as analysis

    def constant(model, adapter, sample, module_names, heads, opts, gen):
        n_frames, n_tok = sample.features.shape[-1] // 2, len(sample.tokens) - 1
        out = {}
        for m in module_names:
            enc = ".encoder." in m or "encoder_attn.k_proj" in m or "encoder_attn.v_proj" in m
            out[m] = torch.full((n_frames if enc else n_tok,), 3.7)
        return out, None

    monkeypatch.setattr(analysis, "_one_sample", constant)
    cfg = CalibConfig(n_calib=2, progress=False)
    ref = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("gptq"), FMT, cfg)
    fis = run_calibration(loaded.model, WhisperAdapter(), [replace(s, extra={}) for s in samples],
                          get_method("fisher"), FMT, cfg)
    assert fis.analysis["position_weights"]
    for n, r in ref.quantized.items():
        assert torch.equal(r.data, fis.quantized[n].data), n


def test_fisher_weights_are_real_gradients(loaded, samples):
    from tarq.calib.analysis import POSITION_WEIGHTS_KEY, AnalysisOptions, analyse

    ss = [replace(s, extra={}) for s in samples]
    flags = [p.requires_grad for p in loaded.model.parameters()]
    rep = analyse(loaded.model, WhisperAdapter(), ss, AnalysisOptions(sensitivity="fisher", sensitivity_mix=0.5))
    w = ss[0].extra[POSITION_WEIGHTS_KEY]
    assert set(w) == set(rep["position_weights"])
    allw = torch.cat([s.extra[POSITION_WEIGHTS_KEY]["model.decoder.layers.0.fc1"] for s in ss])
    assert torch.isclose(allw.double().mean(), torch.tensor(1.0, dtype=torch.float64), atol=1e-5)
    assert bool((allw >= 0.5 - 1e-6).all()) and float(allw.std()) > 0   # the floor 1 - β, and real variation
    assert w["model.encoder.layers.0.fc1"].shape == (1500,)
    assert [p.requires_grad for p in loaded.model.parameters()] == flags   # restored after the backward passes
    assert all(p.grad is None for p in loaded.model.parameters())    # and no gradient landed on the weights


def test_stop_decision_loss_matches_a_hand_computed_sum():
    """L_stop = −Σ_t [y_t log p_t + (1 − y_t) log(1 − p_t)], p_t the softmax's end-token probability, computed
    here position by position with math (no torch softmax)."""
    from tarq.calib.analysis import stop_decision_loss

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 9, generator=g, dtype=torch.float64) * 2
    targets = torch.tensor([4, 1, 7, 2, 0, 5])          # the last target (5) is the end token
    want = 0.0
    for t in range(6):
        z = logits[t].tolist()
        p = math.exp(z[5]) / sum(math.exp(v) for v in z)
        want -= math.log(p) if t == 5 else math.log(1 - p)
    got = float(stop_decision_loss(logits, targets))
    assert math.isclose(got, want, rel_tol=1e-6)
    # a position certain to stop that is not the end stays finite (the log(1 − p) floor)
    sure = torch.zeros(2, 3)
    sure[0, 2] = 200.0
    assert math.isfinite(float(stop_decision_loss(sure, torch.tensor([0, 2]))))


def test_stop_weights_peak_where_the_utterance_ends(loaded, samples):
    """The last decoder block's output at position t reaches only position t's logits, so its stop sensitivity is
    |p_t − y_t| times the end token's softmax gradient: on a random model (p_t ≈ 1/V everywhere) the end position
    carries almost all of it — and the token loss (`fisher`) does not single it out."""
    from tarq.calib.analysis import POSITION_WEIGHTS_KEY, AnalysisOptions, analyse

    last = f"model.decoder.layers.{len(loaded.model.model.decoder.layers) - 1}.fc2"
    ss = [replace(s, extra={}) for s in samples]
    analyse(loaded.model, WhisperAdapter(), ss, AnalysisOptions(sensitivity="stop"))
    ff = [replace(s, extra={}) for s in samples]
    analyse(loaded.model, WhisperAdapter(), ff, AnalysisOptions(sensitivity="fisher", sensitivity_labels="reference"))
    for s, f in zip(ss, ff):
        w = s.extra[POSITION_WEIGHTS_KEY][last]
        assert int(w.argmax()) == w.numel() - 1, s.id
        assert float(w[-1]) > 10 * float(w[:-1].max())
        wf = f.extra[POSITION_WEIGHTS_KEY][last]
        assert float(wf[-1]) < 10 * float(wf[:-1].max())


def test_method_overrides_apply_and_conflicts_are_errors():
    from tarq.calib.pipeline import apply_method_overrides

    class Dummy:
        name = "dummy"
        calib_overrides = {"sensitivity": "fisher", "sensitivity_mix": 0.3}

    cfg = apply_method_overrides(CalibConfig(), Dummy())
    assert (cfg.sensitivity, cfg.sensitivity_mix) == ("fisher", 0.3)
    with pytest.raises(ValueError, match="dummy"):
        apply_method_overrides(CalibConfig(sensitivity_mix=0.7), Dummy())


# ------------------------------------------------------------------------------------------------ FADE

def _random_stats(n=64, seed=0, folds=True, learnable=True):
    """Six utterances of 40 positions; δ = x_fp − x is a fixed linear map of x (learnable from either fold) or
    independent noise (a correction fitted on one fold does not carry over). One update per utterance
    (flush_rows=1), so folded and plain accumulation sum the same float32 blocks, in a different order."""
    g = torch.Generator().manual_seed(seed)
    A = 0.05 * torch.randn(n, n, generator=g) / math.sqrt(n)
    acc = FoldedStatsAccumulator(n, flush_rows=1) if folds else StatsAccumulator(n, track_delta=True, flush_rows=1)
    for u in range(6):
        x = torch.randn(40, n, generator=g)
        delta = x @ A if learnable else 0.05 * torch.randn(40, n, generator=g)
        if folds:
            acc.add(x, x + delta, fold=u % 2)
        else:
            acc.add(x, x + delta)
    return acc.finalize()


def test_zero_scores_reduce_fade_to_qep():
    stats = _random_stats()
    W = {"l.weight": torch.randn(32, 64, generator=torch.Generator().manual_seed(3))}
    qep = get_method("qep", qep_alpha=0.3).quantize_group(dict(W), stats, LAT)
    fade = get_method("fade", qep_alpha=0.3, use_vulnerability=False, use_reliability=False)
    out = fade.quantize_group(dict(W), stats, LAT)
    assert out["l.weight"].info["alpha"] == pytest.approx(0.3, abs=1e-12)
    assert torch.equal(out["l.weight"].data, qep["l.weight"].data)


def test_fade_alpha_is_centred_on_the_configured_alpha():
    assert fade_alpha(0.0, 0.5) == pytest.approx(0.5)
    assert fade_alpha(0.0, 0.3, 0.1, 0.9) == pytest.approx(0.3)
    assert fade_alpha(10.0, 0.5) > 0.99 and fade_alpha(-10.0, 0.5) < 0.01
    assert 0.25 <= fade_alpha(-50.0, 0.5, 0.25, 0.75) < 0.2501


def test_folded_statistics_sum_to_the_plain_ones():
    a, b = _random_stats(folds=True), _random_stats(folds=False)
    torch.testing.assert_close(a.H, b.H, rtol=1e-9, atol=1e-6)
    torch.testing.assert_close(a.H_delta, b.H_delta, rtol=1e-9, atol=1e-6)
    torch.testing.assert_close(a.folds[0].H + a.folds[1].H, a.H, rtol=1e-12, atol=1e-9)


def test_reliability_separates_learnable_from_noise_and_is_zero_without_error():
    stats = _random_stats()
    W = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    R, rho = reliability(W, stats.folds, 0.01)
    assert rho is not None and rho > 0.9 and R > 0        # a linear δ = x A is learnable from the other fold
    R_noise, rho_noise = reliability(W, _random_stats(learnable=False).folds, 0.01)
    assert rho_noise < 0 and R_noise < 0                  # fitted noise does not generalise: α is pulled down
    zero = [replace(f, C=torch.zeros_like(f.C), D=torch.zeros_like(f.D)) for f in stats.folds]
    assert reliability(W, zero, 0.01) == (0.0, None)


def test_held_out_alpha_is_the_brute_force_minimiser_of_the_other_folds_residual():
    """Oracle: the raw activations, fold A's least-squares correction by lstsq, and the pooled held-out residual
    ‖W δ_B − α ΔW_A x̂_B‖² scanned over a grid of α — no statistics, no closed form."""
    g = torch.Generator().manual_seed(7)
    n, rows = 24, 150
    A = 0.2 * torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n)
    W = torch.randn(8, n, generator=g, dtype=torch.float64)
    acc, data = FoldedStatsAccumulator(n, flush_rows=1), []
    for fold in (0, 1):
        x = torch.randn(rows, n, generator=g, dtype=torch.float64)
        delta = x @ A + 0.3 * torch.randn(rows, n, generator=g, dtype=torch.float64)   # learnable part + noise
        acc.add(x.float(), (x + delta).float(), fold=fold)
        data.append((x.float().double(), ((x + delta).float() - x.float()).double()))
    alpha, removed = held_out_alpha(W, acc.finalize().folds, damp=0.0)

    grid = torch.linspace(-0.5, 1.5, 4001, dtype=torch.float64)
    resid = torch.zeros_like(grid)
    base = 0.0
    for (xa, da), (xb, db) in ((data[0], data[1]), (data[1], data[0])):
        M = torch.linalg.lstsq(xa, da @ W.T).solution.T          # ΔW_A: x̂_A ΔW_Aᵀ ≈ δ_A Wᵀ
        target, pred = db @ W.T, xb @ M.T
        resid += torch.stack([((target - a * pred) ** 2).sum() for a in grid])
        base += float((target ** 2).sum())
    best = int(resid.argmin())
    assert alpha == pytest.approx(float(grid[best]), abs=1e-3)
    assert 0.05 < alpha < 0.95                                   # noise shrinks the correction, signal keeps it
    assert removed == pytest.approx(1 - float(resid[best]) / base, abs=1e-4)


def test_held_out_alpha_limits():
    stats = _random_stats()                                       # δ = x A exactly: both folds agree
    W = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    alpha, removed = held_out_alpha(W, stats.folds, damp=0.0)
    assert alpha == pytest.approx(1.0, abs=0.02) and removed > 0.95
    noise, _ = held_out_alpha(W, _random_stats(learnable=False).folds, damp=0.0)
    assert abs(noise) < 0.2                                       # fitted noise: next to no correction carries over
    zero = [replace(f, C=torch.zeros_like(f.C), D=torch.zeros_like(f.D)) for f in stats.folds]
    assert held_out_alpha(W, zero, 0.01) == (None, None)
    fade = get_method("fade", qep_alpha=0.3, alpha_fit="held-out")
    out = fade.quantize_group({"l.weight": W}, replace(stats, folds=zero, H_delta=torch.zeros_like(stats.H_delta)),
                              LAT)
    assert out["l.weight"].info["alpha"] == 0.3                   # no error reaches the layer: α₀ (ΔW = 0 anyway)
    with pytest.raises(ValueError, match="alpha_fit"):
        get_method("fade", alpha_fit="best")


def test_vulnerability_scores():
    Q, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(0)))
    assert stable_rank_gain(Q) == pytest.approx(0.0, abs=1e-6)               # flat spectrum
    spiky = Q.clone()
    spiky[:, 0] *= 20
    assert stable_rank_gain(spiky) > 1.0
    z = robust_z({"a": 1.0, "b": 2.0, "c": 3.0, "d": 10.0})
    assert z["b"] == pytest.approx(0.0) and z["d"] > z["c"] > 0 > z["a"]
    assert robust_z({"a": 1.0}) == {"a": 0.0}


def test_fade_and_tarq_fade_run_end_to_end(loaded, samples):
    cfg = CalibConfig(n_calib=2, progress=False)
    for name, opts in (("fade", {}), ("fade", {"alpha_fit": "held-out"}), ("tarq", {"alpha_rule": "fade"})):
        res = run_calibration(loaded.model, WhisperAdapter(), samples, get_method(name, **opts), FMT, cfg)
        infos = [l for l in res.layers.values() if "v_int" in l]
        assert infos and all(0.0 <= l["alpha"] <= 1.0 for l in infos), name
        key = "alpha_held_out" if opts.get("alpha_fit") == "held-out" else "rho"
        assert any(l[key] is not None for l in infos), name       # later layers see propagated error


# ------------------------------------------------------------------------------------------------ selection

class _U:
    def __init__(self, id, text):
        self.id, self.text = id, text

    def __eq__(self, other):
        return (self.id, self.text) == (other.id, other.text)


def _replace_ok(monkeypatch):
    import tarq.calib.selection as sel

    monkeypatch.setattr(sel, "replace", lambda u, id: _U(id, u.text))


def test_mixed_calibration_equals_concatenated_data(monkeypatch):
    _replace_ok(monkeypatch)
    a = [_U(f"a{i}", "the cat sat") for i in range(5)]
    b = [_U(f"b{i}", "the dog ran") for i in range(7)]
    mixed, origin = combine_sources([("A", a), ("B", b)])
    concat = [_U(f"A/{u.id}", u.text) for u in a] + [_U(f"B/{u.id}", u.text) for u in b]
    assert mixed == concat and origin == ["A"] * 5 + ["B"] * 7
    assert select_calibration(mixed, 6, 0) == select_calibration(concat, 6, 0)


def test_rare_biased_pools():
    texts = ["the cat sat on the mat", "zyxel quokka fnord", "the quokka sat", "a b c", "xylograph the day"]
    utts = [_U(str(i), t) for i, t in enumerate(texts)]
    rho = [rare_density(t, 3.0) for t in texts]
    assert rho[1] == 1.0 and rho[0] == 0.0
    assert [u.id for u in select_calibration(utts, 2, 0, "r-top")] == ["1", "4"] or \
        [u.id for u in select_calibration(utts, 2, 0, "r-top")] == ["1", "2"]
    top = select_calibration(utts, 2, 0, "r-top")
    assert all(rare_density(u.text, 3.0) >= max(r for i, r in enumerate(rho) if str(i) not in {x.id for x in top})
               for u in top)
    mix = select_calibration(utts, 4, 0, "r-mix")
    assert len(mix) == 4 and utts[1] in mix
    cross = select_calibration(utts, 2, 0, "r-cross", origin=["A", "A", "B", "B", "B"])
    assert utts[1] in cross
    with pytest.raises(ValueError, match="selection"):
        select_calibration(utts, 2, 0, "nope")


# ------------------------------------------------------------------------------------------------ embedding order

def test_embedding_first_quantizes_it_before_the_decoder(loaded, samples):
    cfg = CalibConfig(n_calib=2, progress=False)
    last = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("gptq"), FMT, cfg)
    first = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("gptq"), FMT,
                            replace(cfg, embedding_order="first"))
    names = list(first.quantized)
    emb = "model.decoder.embed_tokens.weight"
    assert names.index(emb) < names.index("model.decoder.layers.0.self_attn.q_proj.weight")
    assert set(names) == set(last.quantized)
    # encoder untouched by the order; the decoder's statistics now see the quantized lookup
    assert torch.equal(first.quantized["model.encoder.layers.1.fc2.weight"].data,
                       last.quantized["model.encoder.layers.1.fc2.weight"].data)
    assert not torch.equal(first.quantized["model.decoder.layers.0.self_attn.q_proj.weight"].data,
                           last.quantized["model.decoder.layers.0.self_attn.q_proj.weight"].data)
