"""Qwen3-ASR end to end on a tiny random model (tarq.testing): stage-wise forward, calibration, torch decoding, the
CrispASR GGUF read back by the real runtime (PyPI crispasr), and the qwen3-asr.cpp GGUF checked against that
project's loader rules. Tolerances: runtime vs fake-quant PyTorch outputs within 3 % relative L2 error and cosine
>= 0.999 (ggml quantizes activations to Q8_0 inside IQ4_NL/Q4_0/Q8_0 matmuls; measured ~1 %). The LLM's weights are
on quantize's default format (IQ4_NL), the audio tower on Q8_0."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tarq.cli._choices import DEFAULT_FORMAT
from tarq.cli.main import main

DEMO = Path(__file__).resolve().parents[1] / "python" / "tarq" / "demo_data" / "calib"
torch.set_num_threads(1)


def _demo(n=1):
    import soundfile as sf

    rows = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text().splitlines() if line.strip()][:n]
    return [(r["id"], sf.read(str(DEMO / r["audio"]), dtype="float32")[0], r["text"]) for r in rows]


def rel_err(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def cosine(a, b) -> float:
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from tarq.testing import write_random_qwen3_asr

    return write_random_qwen3_asr(tmp_path_factory.mktemp("q3") / "hf")


@pytest.fixture(scope="module")
def loaded(hf_dir):
    from tarq.models import load_model

    return load_model(str(hf_dir))


@pytest.fixture(scope="module")
def qdir(hf_dir, tmp_path_factory):
    """`tarq quantize ... --method tarq` (2 calibration utterances, the default --format) with the audio tower kept
    at Q8_0."""
    out = tmp_path_factory.mktemp("q3q") / "tarq"
    assert main(["quantize", str(hf_dir), "--method", "tarq", "--calib", str(DEMO), "--n-calib", "2",
                 "--audio-tower-type", "q8_0", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def crisp_file(qdir, tmp_path_factory):
    out = tmp_path_factory.mktemp("q3c") / "model.gguf"
    assert main(["export", str(qdir), "--to", "gguf", "--dialect", "crispasr", "--out", str(out)]) == 0
    return out


def test_stagewise_forward_matches_transformers(loaded):
    ad = loaded.spec.adapter()
    (uid, audio, text), = _demo()
    s = ad.prepare_sample(loaded, uid, audio, text, zipf_threshold=3.0, tag_by="target")
    model = loaded.model
    with torch.inference_mode():
        st = ad.init_state(model, s)
        for b in ad.blocks(model):
            st = ad.enter_block(model, b, st, s)
            for i in range(len(b.stages)):
                st = ad.advance(model, b, i, st, s)
        ours = ad.logits(model, st)
        from tarq.models.qwen3_asr.prompt import feature_mask

        mask = feature_mask(s.features.shape[-1], s.extra["n_mel_frames"])[None]
        ref = model(input_ids=torch.tensor([s.tokens[:-1]]), input_features=s.features[None],
                    input_features_mask=mask).logits[0]
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    # the prompt: audio pads = encoder frames; rare tags only on transcript targets ("impropriety")
    assert s.tokens.count(model.config.audio_token_id) == s.n_speech_frames > 0
    tagged = loaded.tokenizer.decode([t for t, r in zip(s.tokens[1:], s.tail.tolist()) if r])
    assert "impropriety" in tagged.replace(" ", "") and "English" not in tagged


def test_plan_covers_every_linear_once(loaded):
    ad = loaded.spec.adapter()
    names = [n for b in ad.blocks(loaded.model) for s in b.stages for g in s.groups for n in g.weights]
    linears = {f"{n}.weight" for n, m in loaded.model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert len(names) == len(set(names))
    assert set(names) == (linears - {"lm_head.weight"}) | {"model.language_model.embed_tokens.weight"}
    assert names[-1] == "model.language_model.embed_tokens.weight"   # the tied output projection, last
    assert ad.tied_parameters(loaded.model) == {"lm_head.weight": "model.language_model.embed_tokens.weight"}


def test_cached_decoder_matches_reference(loaded):
    from tarq.models.qwen3_asr.decode import greedy_decode, greedy_decode_reference
    from tarq.models.qwen3_asr.prompt import audio_features, prompt_ids

    ids = prompt_ids(loaded.tokenizer, "en")
    for _, audio, _ in _demo(2):
        feats, n = audio_features(loaded.feature_extractor, audio)
        fast = greedy_decode(loaded.model, feats, n, ids, 6)
        assert fast == greedy_decode_reference(loaded.model, feats, n, ids, 6) and len(fast) > 0


def test_quantized_directory_types_and_fake_quant_model(qdir, loaded):
    from tarq.models import load_model
    from tarq.qmodel import load_quantized_dir

    ck = load_quantized_dir(qdir)
    assert ck.family == "qwen3_asr" and not ck.uniform
    types = {n: qt.qtype.name for n, qt in ck.quantized.items()}
    assert all(t == "q8_0" for n, t in types.items() if n.startswith(("model.audio_tower.", "model.multi_modal")))
    assert all(t == DEFAULT_FORMAT for n, t in types.items() if n.startswith("model.language_model."))
    assert "lm_head.weight" not in ck.floats and "model.audio_tower.conv2d1.weight" in ck.floats
    fq = load_model(str(qdir))
    assert fq.family == "qwen3_asr" and fq.source["kind"] == "tarq"
    assert fq.model.lm_head.weight is fq.model.model.language_model.embed_tokens.weight
    for n, qt in ck.quantized.items():
        assert torch.equal(fq.model.get_parameter(n).detach(), qt.dequantize()), n
    rep = json.loads((qdir / "report.json").read_text())
    assert rep["format"]["overrides"] and rep["tied_parameters"] == {
        "lm_head.weight": "model.language_model.embed_tokens.weight"}


def test_crispasr_reads_exactly_tarqs_codes(crisp_file, qdir):
    """Bit-exact read-back through the runtime: qwen3_asr_embed_tokens returns scale * q for every vocabulary row."""
    from crispasr_native import Qwen3Asr, opened
    from tarq.qmodel import load_quantized_dir

    ck = load_quantized_dir(qdir)
    want = ck.quantized["model.language_model.embed_tokens.weight"].dequantize().numpy()
    with opened(Qwen3Asr, crisp_file) as rt:
        got = rt.embed_tokens(np.arange(want.shape[0]), want.shape[1])
    assert np.array_equal(got, want)


def _runtime_vs_torch(gguf_file, qdir):
    from crispasr_native import Qwen3Asr, opened
    from tarq.models import load_model
    from tarq.models.qwen3_asr.prompt import audio_features, feature_mask, prompt_ids

    fq = load_model(str(qdir))
    (_, audio, text), = _demo()
    feats, n_mel = audio_features(fq.feature_extractor, audio)
    with opened(Qwen3Asr, gguf_file) as rt:
        mel = rt.compute_mel(audio)
        enc = rt.run_encoder(feats[:, :n_mel].numpy())
        ids = prompt_ids(fq.tokenizer, "en").full(enc.shape[0], fq.tokenizer.encode(" " + text,
                                                                                    add_special_tokens=False))
        logits = rt.run_llm(ids)
    with torch.inference_mode():
        ref_enc = fq.model.model.get_audio_features(feats[None], feature_mask(feats.shape[-1], n_mel)[None]).pooler_output
        ref_logits = fq.model(input_ids=torch.tensor([ids])).logits[0]
    assert mel.shape == (128, n_mel) and np.abs(mel - feats[:, :n_mel].numpy()).max() < 1e-3   # same log-mel
    assert enc.shape == tuple(ref_enc.shape)
    return enc, ref_enc.numpy(), logits, ref_logits.numpy()


def test_crispasr_runs_the_fake_quant_model_exactly(qdir, tmp_path):
    """--type f32 writes the exact dequantized weights: the runtime's audio tower and LLM then reproduce PyTorch to
    float rounding, which pins names, layouts, windows, RoPE, norms and the mel front end."""
    out = tmp_path / "f32.gguf"
    assert main(["export", str(qdir), "--to", "gguf", "--dialect", "crispasr", "--type", "f32", "--out", str(out)]) == 0
    enc, ref_enc, logits, ref_logits = _runtime_vs_torch(out, qdir)
    assert rel_err(enc, ref_enc) < 1e-4 and rel_err(logits, ref_logits) < 1e-4


def test_crispasr_outputs_match_fake_quant_model(crisp_file, qdir):
    """The quantized file: ggml quantizes activations to Q8_0 inside Q4_0/Q8_0 matmuls (~1 % measured)."""
    enc, ref_enc, logits, ref_logits = _runtime_vs_torch(crisp_file, qdir)
    assert rel_err(enc, ref_enc) < 0.03 and cosine(enc, ref_enc) > 0.999
    assert rel_err(logits, ref_logits) < 0.03 and cosine(logits, ref_logits) > 0.999


def test_crispasr_session_transcribes(crisp_file):
    crispasr = pytest.importorskip("crispasr")

    (_, audio, _), = _demo()
    assert crispasr.detect_backend_from_gguf(str(crisp_file)) == "qwen3"
    s = crispasr.Session(str(crisp_file), n_threads=1)
    try:
        s.set_max_new_tokens(8)
        segments = s.transcribe(audio, 16000, language="en")
    finally:
        s.close()
    assert isinstance(segments, list)


def test_gguf_metadata_and_names(crisp_file, qdir):
    from tarq.export.gguf_writer import read_gguf
    from tarq.qmodel import load_quantized_dir

    g, ck = read_gguf(crisp_file), load_quantized_dir(qdir)
    assert g.arch == "qwen3asr" and g.kv["qwen3asr.audio.n_layers"] == 2 and g.kv["qwen3asr.llm.n_kv_heads"] == 1
    assert g.kv["tokenizer.ggml.model"] == "gpt2" and g.kv["qwen3asr.audio_pad_token_id"] == ck.config["audio_token_id"]
    assert g.tensors["audio.mel_filters"].shape == (201, 128) and g.tensors["audio.mel_window"].shape == (400,)
    # each tensor keeps its type; q/k/v of a layer share one (CrispASR fuses QKV only then)
    assert g.tensors["audio.blk.0.attn_q.weight"].ggml_type.name == "q8_0"
    assert {g.tensors[f"blk.1.attn_{x}.weight"].ggml_type.name for x in "qkv"} == {DEFAULT_FORMAT}
    assert g.tensors["audio.conv.1.weight"].ggml_type.name == "f32"
    emb = g.tensors["token_embd.weight"]
    assert np.array_equal(g.tensors["output.weight"].data, emb.data)          # tied lm_head
    assert np.array_equal(emb.rows(), ck.quantized["model.language_model.embed_tokens.weight"].numpy())   # bytes verbatim


def test_qwen3_asr_cpp_dialect_passes_its_loader_check(qdir, tmp_path):
    from tarq.export.gguf_writer import read_gguf
    from tarq.models.qwen3_asr.cpp_loader import check, read_file

    out = tmp_path / "m.gguf"
    assert main(["export", str(qdir), "--to", "gguf", "--dialect", "qwen3-asr.cpp", "--out", str(out)]) == 0
    g = read_gguf(out)
    assert g.arch == "qwen3-asr" and g.kv["qwen3-asr.block_count"] == 2 and g.kv["audio.d_model"] == 64
    assert "audio.encoder.blk.1.ffn_down.bias" in g.tensors and "audio.encoder.proj2.weight" in g.tensors
    tensors, kv, size = read_file(out)
    assert check(tensors, kv, size) == []
    # the checker is not vacuous: the same file without the unprefixed audio keys is read with 0.6B shapes
    kv_06b = {k: v for k, v in kv.items() if not k.startswith(("audio.", "text."))}
    problems = check(tensors, kv_06b, size)
    assert any("audio.encoder.blk.0.attn_q.weight" in p and "896" in p for p in problems), problems
    assert any("runs past the end of the file" in p for p in problems)
    assert any("no tensor output.weight" in p for p in check([t for t in tensors if t.name != "output.weight"],
                                                               kv, size))


@pytest.mark.parametrize("method", ["rtn", "gptq", "rarebal", "qep"])
def test_every_method_runs(loaded, method):
    from tarq.calib.pipeline import CalibConfig, run_calibration
    from tarq.ggml import TypePlan
    from tarq.methods import get_method

    ad = loaded.spec.adapter()
    samples = [ad.prepare_sample(loaded, u, a, t, zipf_threshold=3.0, tag_by="target") for u, a, t in _demo(1)]
    res = run_calibration(loaded.model, ad, samples, get_method(method), TypePlan("q4_0"),
                          CalibConfig(progress=False, threads=1))
    assert len(res.quantized) == 30
    assert all(r.qtype.name == "q4_0" and torch.isfinite(r.dequant).all() for r in res.quantized.values())


def test_type_override_that_splits_qkv_is_an_error(hf_dir, tmp_path, capsys):
    assert main(["quantize", str(hf_dir), "--method", "rtn", "--tensor-type", r"q_proj=q8_0",
                 "--out", str(tmp_path / "q")]) == 1
    err = capsys.readouterr().err
    assert "q_proj" in err and "share one type" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "q").exists()


def test_torch_backend_via_get_backend(qdir):
    from tarq.eval import get_backend

    be = get_backend("torch", str(qdir), threads=1, max_new_tokens=4)
    texts = be.transcribe([a for _, a, _ in _demo(2)])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert be.description["family"] == "qwen3_asr"
