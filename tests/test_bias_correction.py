"""Bias correction (``--bias-correction mean``, docs/methods.md §2 "Bias correction").

Oracles: weighted means taken row by row in float64 (not the accumulator's streamed sums), the output error of a
Linear evaluated directly on its input rows, and a brute-force check that no other bias does better."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tarq.calib.pipeline import CalibConfig, corrected_bias, run_calibration
from tarq.calib.stats import FoldedStatsAccumulator, StatsAccumulator
from tarq.ggml import TypePlan
from tarq.methods import get_method
from tarq.models.whisper.adapter import WhisperAdapter

from test_pipeline import loaded, samples  # noqa: F401  (tiny random Whisper fixtures)


def _rows(g, T, n, shift):
    return torch.randn(T, n, generator=g) + shift


def test_first_moments_are_the_weighted_means_of_every_row():
    g = torch.Generator().manual_seed(0)
    n = 6
    acc = StatsAccumulator(n, track_delta=True, flush_rows=5)   # flushes inside and between utterances
    xs, fps, ws = [], [], []
    for u in range(4):
        x = _rows(g, 3 + u, n, 0.7)
        fp = x + 0.1 * torch.randn(x.shape, generator=g)
        w = torch.rand(x.shape[0], generator=g) * 3 + 0.5 if u % 2 else None
        tail = torch.arange(x.shape[0]) % 2 == 0 if u == 2 else None
        acc.add(x, fp, tail, w)
        xs.append(x.double()), fps.append(fp.double())
        ws.append(torch.ones(x.shape[0], dtype=torch.float64) if w is None else w.double())
    st = acc.finalize()
    X, FP, W = torch.cat(xs), torch.cat(fps), torch.cat(ws)
    mean_q = sum(W[t] * X[t] for t in range(X.shape[0])) / W.sum()
    mean_fp = sum(W[t] * FP[t] for t in range(X.shape[0])) / W.sum()
    torch.testing.assert_close(st.mean_q, mean_q, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(st.mean_fp, mean_fp, rtol=1e-6, atol=1e-7)
    assert st.weight_sum == pytest.approx(float(W.sum()), rel=1e-6)


def test_folded_and_untracked_first_moments():
    g = torch.Generator().manual_seed(1)
    units = [_rows(g, 4, 5, -0.3) for _ in range(5)]
    folded, plain = FoldedStatsAccumulator(5), StatsAccumulator(5, track_delta=False)
    for i, x in enumerate(units):
        folded.add(x, x + 0.2, fold=i % 2)
        plain.add(x)
    f, p = folded.finalize(), plain.finalize()
    want = torch.cat(units).double().mean(0)
    torch.testing.assert_close(f.mean_q, want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(f.mean_fp, want + 0.2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(p.mean_q, want, rtol=1e-6, atol=1e-7)
    assert p.mean_fp is None                       # no FP stream: GPTQ's correction uses x on both sides


@pytest.mark.parametrize("with_fp", [False, True])
def test_corrected_bias_cancels_the_mean_error_and_no_other_bias_does_better(with_fp):
    g = torch.Generator().manual_seed(2)
    T, n, m = 200, 8, 5
    X = _rows(g, T, n, 1.5).double()
    FP = X + 0.3 * torch.randn(T, n, generator=g).double() + 0.2 if with_fp else X
    W = torch.randn(m, n, generator=g).double()
    W_hat = torch.round(W * 2) / 2                               # a coarse "quantized" weight
    b = torch.randn(m, generator=g).double()
    new = corrected_bias(b, W, W_hat, X.mean(0), FP.mean(0) if with_fp else None)
    err = lambda bias: (FP @ W.T + b) - (X @ W_hat.T + bias)     # noqa: E731  per-row output error
    assert err(new).mean(0).abs().max() < 1e-10
    mse = float(err(new).pow(2).sum(1).mean())
    assert mse < float(err(b).pow(2).sum(1).mean())             # the mean error was not zero before
    for _ in range(20):                                         # the optimum of a convex quadratic in the bias
        other = new + 1e-2 * torch.randn(m, generator=g).double()
        assert float(err(other).pow(2).sum(1).mean()) > mse


def test_pipeline_corrects_the_biases_and_only_the_biases(loaded, samples):
    cfg = CalibConfig(n_calib=2, progress=False, encoder_frames="all")
    plain = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("gptq"), TypePlan("q4_0"), cfg)
    bc = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("gptq"), TypePlan("q4_0"),
                         replace(cfg, bias_correction="mean"))
    assert plain.floats == {}
    names = set(bc.floats)
    assert names and all(k.endswith(".bias") for k in names)
    assert not any(".k_proj." in k for k in names)              # Whisper's k projections have no bias
    assert "model.encoder.layers.0.self_attn.q_proj.bias" in names and "model.decoder.layers.1.fc2.bias" in names
    # the first group's codes do not depend on any bias; later layers see corrected inputs
    first = ["model.encoder.layers.0.self_attn.q_proj.weight", "model.encoder.layers.0.self_attn.v_proj.weight"]
    for n in first:
        assert torch.equal(plain.quantized[n].data, bc.quantized[n].data)
    assert any(not torch.equal(plain.quantized[n].data, bc.quantized[n].data) for n in plain.quantized)
    for n, rep in bc.layers.items():
        if n.replace(".weight", ".bias") in names:   # GPTQ: the removed part is the mean part of rel_err (Jensen)
            assert 0.0 <= rep["bias_rel_err_removed"] <= rep["rel_err"] + 1e-9, n
    # oracle on the first layer: its mean output error over every calibration frame is zero after correction
    ad, model = WhisperAdapter(), loaded.model
    block = ad.blocks(model)[0]
    group = block.stages[0].groups[0]
    with torch.inference_mode():
        xs = []
        for s in samples:
            st = ad.enter_block(model, block, ad.init_state(model, s), s)
            xs.append(ad.stage_inputs(model, block, 0, st, s, {group.key})[group.key].reshape(-1, model.config.d_model))
        X = torch.cat(xs).double()
        n = first[0]
        W, b = model.get_parameter(n).double(), model.get_parameter(n.replace(".weight", ".bias")).double()
        err = (X @ W.T + b) - (X @ bc.quantized[n].dequant.double().T + bc.floats[n.replace(".weight", ".bias")].double())
    assert float(err.mean(0).abs().max()) < 1e-4 * float(err.abs().mean())


def test_bias_correction_needs_statistics_and_a_known_mode(loaded, samples):
    with pytest.raises(ValueError, match="bias_correction"):
        CalibConfig(bias_correction="median")
    with pytest.raises(ValueError, match="data-free"):
        run_calibration(loaded.model, WhisperAdapter(), samples, get_method("rtn"), TypePlan("q4_0"),
                        CalibConfig(progress=False, bias_correction="mean"))


def test_corrected_biases_are_what_the_directory_stores(loaded, tmp_path):
    from tarq.calib.driver import quantize_loaded_model
    from tarq.data import load_dataset
    from tarq.qmodel import load_quantized_dir

    from test_pipeline import DEMO

    out = quantize_loaded_model(loaded, get_method("qep"), TypePlan("q4_0"), load_dataset(DEMO, limit=2),
                                tmp_path / "q", CalibConfig(n_calib=2, progress=False, bias_correction="mean"),
                                calib_name="demo")
    ck = load_quantized_dir(out)
    fp = dict(loaded.model.named_parameters())
    name = "model.decoder.layers.1.fc2.bias"
    assert not torch.equal(ck.floats[name], fp[name].detach().float())   # QEP: corrected toward the FP stream
    assert torch.equal(ck.floats["model.encoder.layers.0.self_attn_layer_norm.weight"],
                       fp["model.encoder.layers.0.self_attn_layer_norm.weight"].detach().float())
    rep = ck.report
    assert rep["calibration"]["bias_correction"] == "mean"
    assert rep["layers"]["model.decoder.layers.1.fc2.weight"]["bias_shift_norm"] > 0


def test_token_scope_corrects_only_the_decoder(loaded, samples):
    cfg = CalibConfig(n_calib=2, progress=False, bias_correction="mean-tokens")
    res = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("gptq"), TypePlan("q4_0"), cfg)
    assert res.floats and all(k.startswith("model.decoder.") for k in res.floats)
    assert "model.decoder.layers.0.encoder_attn.v_proj.bias" not in res.floats   # reads encoder frames
    assert "model.decoder.layers.0.encoder_attn.q_proj.bias" in res.floats
    assert not any("bias_shift_norm" in rep for n, rep in res.layers.items() if n.startswith("model.encoder."))
