"""End-to-end float tuning (``--scale-tune kl``, tarq.calib.scale_tune).

Oracles: ggml's to_float of the bytes (the NumPy emulation checked byte-exact against libggml elsewhere) and a Q4_0
block laid out by hand; a KL divergence computed by hand; direct autograd through eq. (1) for the leaf trick the
tuner uses; the decoded codes and integer fields of the bytes it writes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tarq.calib.pipeline import CalibConfig, run_calibration
from tarq.calib.scale_tune import BlockFloats, ScaleTuneOptions, _install, token_kl, tune_block_floats
from tarq.ggml import TypePlan, get_type
from tarq.methods import get_method
from tarq.models.whisper.adapter import WhisperAdapter

from test_pipeline import DEMO, loaded  # noqa: F401  (tiny random Whisper fixture)


@pytest.mark.parametrize("name", ["q4_0", "q4_1", "q5_1", "iq4_nl", "q8_0", "q3_k", "q4_k", "q6_k"])
def test_block_floats_at_zero_offset_are_the_files_values(name):
    t = get_type(name)
    W = np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32)
    data = t.quantize(W)
    got = BlockFloats(t, data, 512).weight().detach().numpy()
    want = t.dequantize(data, 512)
    if name.endswith("_k"):    # ggml multiplies d by the sub-block scale first; (1) multiplies the unit values
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    else:
        np.testing.assert_array_equal(got, want)


def test_block_floats_of_a_hand_laid_q4_0_block():
    # Q4_0: fp16 d, then 16 bytes; byte j holds element j in its low nibble and element j + 16 in its high one;
    # value = (nibble − 8) · d
    nib = np.arange(32) % 16
    block = np.zeros(18, np.uint8)
    block[:2] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)
    block[2:] = (nib[:16] | (nib[16:] << 4)).astype(np.uint8)
    b = BlockFloats(get_type("q4_0"), block[None, :], 32)
    np.testing.assert_array_equal(b.weight().detach().numpy()[0], (nib - 8) * 0.5)
    with torch.no_grad():
        b.offset.fill_(0.5)                        # d = 0.75, exact at fp16
    np.testing.assert_array_equal(b.weight(rounded=True).detach().numpy()[0], (nib - 8) * 0.75)
    data, summary = b.stored()
    assert np.frombuffer(data[0, :2].tobytes(), np.float16)[0] == np.float16(0.75)
    assert np.array_equal(data[0, 2:], block[2:]) and summary["blocks_changed"] == 1


@pytest.mark.parametrize("name", ["q4_1", "iq4_nl", "q4_k", "q6_k"])
def test_stored_bytes_keep_codes_and_integer_fields_and_round_the_floats_to_fp16(name):
    t = get_type(name)
    W = np.random.default_rng(1).standard_normal((4, 512)).astype(np.float32)
    data = t.quantize(W)
    b = BlockFloats(t, data, 512)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        b.offset.copy_(0.05 * torch.randn(b.offset.shape, generator=g))
    new, summary = b.stored()
    codes0, params0 = t.decode(data, 512)
    codes1, params1 = t.decode(new, 512)
    np.testing.assert_array_equal(codes1, codes0)
    for f in t.param_fields:
        if f in t.refit_fields:
            want = (params0[f].astype(np.float32) * (1 + b.offset.detach().numpy()[t.refit_fields.index(f)]))
            np.testing.assert_array_equal(params1[f], want.astype(np.float16))
        else:
            np.testing.assert_array_equal(params1[f], params0[f])       # K-quant sub-block scales untouched
    assert summary["blocks_changed"] > 0.9 * summary["blocks"] and 0 < summary["median_rel_change"] < 0.2
    # what the bytes hold is what eq. (1) computed at fp16
    np.testing.assert_allclose(t.dequantize(new, 512), b.weight(rounded=True).detach().numpy(), rtol=1e-6, atol=1e-6)


def test_token_kl_by_hand():
    teacher = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    student = torch.log(torch.tensor([[0.25, 0.75], [0.9, 0.1]])) + 3.0    # logits: any offset, same softmax
    want = (0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75) + 0.0) / 2
    assert float(token_kl(teacher, student)) == pytest.approx(want, rel=1e-6)
    assert float(token_kl(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)


def test_gradients_through_installed_weights_equal_direct_autograd():
    # the tuner installs detached leaves, backpropagates each utterance into them and then carries the summed
    # leaf gradients through eq. (1) once; that must equal autograd straight through (1)
    t = get_type("iq4_nl")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 8))
    W = net[0].weight.detach().numpy()
    xs = [torch.randn(5, 64) for _ in range(3)]

    def loss_of(x):
        return net(x).pow(2).sum()

    direct = BlockFloats(t, t.quantize(W), 64)
    _install(net, ["0.weight"], direct.weight())
    sum(loss_of(x) for x in xs).backward()
    tuned = BlockFloats(t, t.quantize(W), 64)
    w = tuned.weight()
    leaf = w.detach().requires_grad_(True)
    _install(net, ["0.weight"], leaf)
    for x in xs:
        loss_of(x).backward()
    torch.autograd.backward([w], [leaf.grad])
    torch.testing.assert_close(tuned.offset.grad, direct.offset.grad, rtol=1e-5, atol=1e-7)
    assert direct.offset.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def tune_samples(loaded):  # noqa: F811
    import soundfile as sf

    rows = [json.loads(l) for l in (DEMO / "manifest.jsonl").read_text().splitlines() if l.strip()][:6]
    ad = WhisperAdapter()
    out = []
    for r in rows:
        audio, _ = sf.read(str(DEMO / r["audio"]), dtype="float32")
        out.append(ad.prepare_sample(loaded, r["id"], audio, r["text"], zipf_threshold=3.0, tag_by="target"))
    return out


@pytest.fixture(scope="module")
def solved(loaded, tune_samples):  # noqa: F811
    res = run_calibration(loaded.model, WhisperAdapter(), tune_samples, get_method("gptq"), TypePlan("q4_0"),
                          CalibConfig(progress=False))
    return {n: (r.qtype, r.data.numpy()) for n, r in res.quantized.items()}, res.floats


def test_tuning_lowers_the_training_kl_keeps_every_code_and_never_ships_a_worse_held_out_kl(loaded, tune_samples,
                                                                                            solved):  # noqa: F811
    quantized, floats = solved
    opts = ScaleTuneOptions(mode="kl", epochs=2, lr=3e-3, batch=1, holdout=0.2)
    new, rep = tune_block_floats(loaded.model, WhisperAdapter(), tune_samples, quantized, floats, opts)
    hist = rep["history"]
    assert [h["epoch"] for h in hist] == [0, 1, 2] and rep["n_train"] == 5 and rep["n_held_out"] == 1
    assert hist[-1]["train_kl"] < hist[0]["train_kl"]        # it fits what it trains on
    chosen = hist[rep["chosen_epoch"]]["held_out_kl"]
    assert chosen == min(h["held_out_kl"] for h in hist) <= hist[0]["held_out_kl"]
    for n, (t, data) in quantized.items():
        np.testing.assert_array_equal(t.decode(new[n], data.shape[1] // t.type_size * t.block_size)[0],
                                      t.decode(data, data.shape[1] // t.type_size * t.block_size)[0])
    changed = sum(v["blocks_changed"] for v in rep["layers"].values())
    assert (changed > 0) == (rep["chosen_epoch"] > 0)
    assert loaded.model.model.decoder.embed_tokens.weight.requires_grad      # the caller's model is untouched


def test_zero_epochs_ship_the_solvers_bytes(loaded, tune_samples, solved):  # noqa: F811
    quantized, floats = solved
    new, rep = tune_block_floats(loaded.model, WhisperAdapter(), tune_samples, quantized, floats,
                                 ScaleTuneOptions(mode="kl", epochs=0))
    assert rep["chosen_epoch"] == 0 and len(rep["history"]) == 1
    assert all(np.array_equal(new[n], d) for n, (_, d) in quantized.items())


def test_options_are_checked():
    for bad in ({"mode": "mse"}, {"epochs": -1}, {"lr": 0.0}, {"batch": 0}, {"holdout": 1.0}):
        with pytest.raises(ValueError):
            ScaleTuneOptions(**bad)
    with pytest.raises(ValueError, match="at least 2 calibration utterances"):
        tune_block_floats(None, None, [object()], {}, {}, ScaleTuneOptions(mode="kl"))
    with pytest.raises(ValueError, match="scale tuning"):
        CalibConfig(scale_tune="adam")


def test_quantize_writes_the_tuned_bytes_and_the_report_section(loaded, tmp_path):  # noqa: F811
    from tarq.calib.driver import quantize_loaded_model
    from tarq.data import load_dataset
    from tarq.qmodel import load_quantized_dir

    utts = load_dataset(DEMO, limit=4)
    cfg = CalibConfig(n_calib=4, progress=False, threads=1, scale_tune="kl", scale_tune_epochs=1,
                      scale_tune_lr=3e-3, scale_tune_holdout=0.25)
    ck = load_quantized_dir(quantize_loaded_model(loaded, get_method("rtn"), TypePlan("q4_0"), utts, tmp_path / "q",
                                                  cfg))
    rep = ck.report["scale_tune"]
    assert rep["n_train"] == 3 and rep["n_held_out"] == 1 and len(rep["history"]) == 2
    assert ck.report["calibration"]["scale_tune"] == "kl" and "scale_tune" in ck.report["timing_s"]
    # whisper.cpp quantizes from the F16 file, so tarq's RTN rounds the weights to fp16 first
    rtn = get_type("q4_0").quantize(loaded.model.model.decoder.layers[0].fc1.weight.detach().half().float().numpy())
    stored = ck.quantized["model.decoder.layers.0.fc1.weight"].numpy()
    np.testing.assert_array_equal(get_type("q4_0").decode(stored, 64)[0], get_type("q4_0").decode(rtn, 64)[0])
    assert np.array_equal(stored, rtn) == (rep["chosen_epoch"] == 0)    # RTN's codes, floats tuned or not


def test_scale_tune_without_calibration_data_is_a_one_line_error(tmp_path, capsys):
    from tarq.cli.main import main

    rc = main(["quantize", "tiny.en", "--method", "rtn", "--scale-tune", "kl", "--out", str(tmp_path / "q")])
    assert rc == 1 and "--scale-tune kl needs calibration data: pass --calib DATA" in capsys.readouterr().err
    rc = main(["quantize", "tiny.en", "--scale-tune", "kl", "--scale-tune-holdout", "1", "--calib", str(DEMO),
               "--out", str(tmp_path / "q")])
    assert rc == 1 and "holdout must be in (0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
