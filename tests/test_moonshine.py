"""Moonshine end to end on a tiny random model (tarq.testing): stage-wise forward, calibration, torch decoding, and
the CrispASR GGUF + tokenizer.bin run by the real runtime (PyPI crispasr). Tolerances: encoder output within 3 %
relative L2 error and cosine >= 0.999 of the fake-quant PyTorch model, per-step probabilities of the runtime's tokens
within |log ratio| 0.35 of PyTorch's teacher-forced ones (ggml's Q8_0 activations); with the exact dequantized
weights as F32 (``--type f32``) both within 1e-4."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tarq.cli.main import main

DEMO = Path(__file__).resolve().parents[1] / "python" / "tarq" / "demo_data" / "calib"
torch.set_num_threads(1)


def _demo(n=1):
    import soundfile as sf

    rows = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text().splitlines() if line.strip()][:n]
    return [(r["id"], sf.read(str(DEMO / r["audio"]), dtype="float32")[0], r["text"]) for r in rows]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from tarq.testing import write_random_moonshine

    return write_random_moonshine(tmp_path_factory.mktemp("ms") / "hf")


@pytest.fixture(scope="module")
def loaded(hf_dir):
    from tarq.models import load_model

    return load_model(str(hf_dir))


@pytest.fixture(scope="module")
def qdir(hf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("msq") / "tarq"
    assert main(["quantize", str(hf_dir), "--method", "tarq", "--calib", str(DEMO), "--n-calib", "2",
                 "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def crisp_file(qdir, tmp_path_factory):
    out = tmp_path_factory.mktemp("msc") / "model.gguf"
    assert main(["export", str(qdir), "--to", "gguf", "--out", str(out)]) == 0   # crispasr: the default dialect
    return out


def test_stagewise_forward_matches_transformers(loaded):
    ad = loaded.spec.adapter()
    (uid, audio, text), = _demo()
    s = ad.prepare_sample(loaded, uid, audio, text, zipf_threshold=3.0, tag_by="target")
    with torch.inference_mode():
        st = ad.init_state(loaded.model, s)
        for b in ad.blocks(loaded.model):
            st = ad.enter_block(loaded.model, b, st, s)
            for i in range(len(b.stages)):
                st = ad.advance(loaded.model, b, i, st, s)
        ours = ad.logits(loaded.model, st)
        ref = loaded.model(input_values=s.features[None], decoder_input_ids=torch.tensor([s.tokens[:-1]])).logits[0]
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    assert s.tokens[0] == 1 and s.tokens[-1] == 2
    tagged = loaded.tokenizer.decode([t for t, r in zip(s.tokens[1:], s.tail.tolist()) if r])
    assert tagged.replace(" ", "") == "impropriety"       # "▁" word starts are recognised


def test_plan_covers_every_linear_once(loaded):
    ad = loaded.spec.adapter()
    names = [n for b in ad.blocks(loaded.model) for s in b.stages for g in s.groups for n in g.weights]
    linears = {f"{n}.weight" for n, m in loaded.model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert len(names) == len(set(names))
    assert set(names) == (linears - {"proj_out.weight"}) | {"model.decoder.embed_tokens.weight"}
    assert names[-1] == "model.decoder.embed_tokens.weight"


def test_decoder_matches_reference(loaded):
    from tarq.models.moonshine.decode import greedy_decode, greedy_decode_reference
    from tarq.models.moonshine.load import input_values

    for _, audio, _ in _demo(2):
        x = input_values(loaded, audio)
        fast = greedy_decode(loaded.model, x, 8)
        assert fast == greedy_decode_reference(loaded.model, x, 8) and len(fast) == 8


def _runtime_vs_torch(gguf_file, fq, audio, n_tokens=8):
    from crispasr_native import Moonshine, opened

    with opened(Moonshine, gguf_file) as rt:
        enc = rt.encode(audio)
        _, ids, probs = rt.transcribe_with_probs(audio, n_tokens)
    x = torch.from_numpy(audio)
    with torch.inference_mode():
        ref = fq.model.model.encoder(x[None]).last_hidden_state[0].numpy()
        steps = fq.model(input_values=x[None], decoder_input_ids=torch.tensor([[1] + ids])).logits[0].softmax(-1)
    assert enc.shape == ref.shape and len(ids) > 0
    err = float(np.linalg.norm(enc - ref) / np.linalg.norm(ref))
    cos = float((enc * ref).sum() / np.linalg.norm(enc) / np.linalg.norm(ref))
    torch_probs = np.array([float(steps[i, t]) for i, t in enumerate(ids)])
    return err, cos, np.array(probs), torch_probs, [int(steps[i].argmax()) == t for i, t in enumerate(ids)]


def test_crispasr_runs_the_fake_quant_model_exactly(qdir, tmp_path):
    """--type f32 writes the exact dequantized weights: the runtime's graph then reproduces PyTorch to float
    rounding (encoder and every decoding step), which pins names, layouts, RoPE, norms and the tokenizer file."""
    from tarq.models import load_model

    out = tmp_path / "f32.gguf"
    assert main(["export", str(qdir), "--to", "gguf", "--type", "f32", "--out", str(out)]) == 0
    fq = load_model(str(qdir))
    for _, audio, _ in _demo(2):
        err, cos, probs, torch_probs, agree = _runtime_vs_torch(out, fq, audio)
        assert err < 1e-4 and np.abs(probs - torch_probs).max() < 1e-4 and all(agree), (err, probs, torch_probs)


def test_crispasr_runs_tarqs_codes(crisp_file, qdir):
    """The file of quantize's default type (IQ4_NL): ggml quantizes activations to Q8_0 inside the matmuls, so
    outputs differ from PyTorch by ~1 % (encoder) and per-step token probabilities by up to ~17 % (|log ratio| 0.16
    measured on a Q4_0 file, 0.09 on IQ4_NL); wrong weights give unrelated outputs."""
    from tarq.models import load_model

    fq = load_model(str(qdir))
    assert (crisp_file.parent / "tokenizer.bin").is_file()
    for _, audio, _ in _demo(2):
        err, cos, probs, torch_probs, _ = _runtime_vs_torch(crisp_file, fq, audio)
        assert err < 0.03 and cos > 0.999, (err, cos)
        assert np.abs(np.log(probs / torch_probs)).max() < 0.35, (probs, torch_probs)


def test_gguf_layout_and_tokenizer_bin(crisp_file, qdir, loaded):
    from tarq.export.gguf_writer import read_gguf
    from tarq.qmodel import load_quantized_dir

    g, ck = read_gguf(crisp_file), load_quantized_dir(qdir)
    assert g.arch == "moonshine" and g.kv["moonshine.encoder.block_count"] == 2
    assert g.kv["moonshine.bos_token_id"] == 1 and g.kv["moonshine.eos_token_id"] == 2
    assert "decoder.output.weight" not in g.tensors                       # tied: the runtime uses the embedding
    assert g.tensors["encoder.conv1.weight"].shape == (64, 1, 127)
    name = "model.decoder.layers.1.mlp.fc1.weight"
    assert np.array_equal(g.tensors["decoder.layers.1.ffn.fc1.weight"].rows(), ck.quantized[name].numpy())
    # tokenizer.bin: id order, length-prefixed UTF-8 (decoded here independently of the writer)
    raw, pieces, i = (crisp_file.parent / "tokenizer.bin").read_bytes(), [], 0
    while i < len(raw):
        n = raw[i]
        if n >= 128:
            n, i = raw[i + 1] * 128 + n - 128, i + 1
        pieces.append(raw[i + 1:i + 1 + n].decode())
        i += 1 + n
    vocab = loaded.tokenizer.get_vocab()
    assert len(pieces) == g.kv["moonshine.vocab_size"]
    assert all(pieces[idx] == piece for piece, idx in vocab.items())


def test_tokenizer_bin_of_another_model_is_not_overwritten(crisp_file, qdir, tmp_path, capsys):
    out = tmp_path / "m.gguf"
    (tmp_path / "tokenizer.bin").write_bytes(b"\x03abc")
    assert main(["export", str(qdir), "--to", "gguf", "--out", str(out)]) == 1
    assert "tokenizer.bin: exists with another vocabulary" in capsys.readouterr().err
    assert not out.exists() and (tmp_path / "tokenizer.bin").read_bytes() == b"\x03abc"


@pytest.mark.parametrize("method", ["rtn", "gptq", "rarebal", "qep"])
def test_every_method_runs(loaded, method):
    from tarq.calib.pipeline import CalibConfig, run_calibration
    from tarq.ggml import TypePlan
    from tarq.methods import get_method

    ad = loaded.spec.adapter()
    samples = [ad.prepare_sample(loaded, u, a, t, zipf_threshold=3.0, tag_by="target") for u, a, t in _demo(1)]
    res = run_calibration(loaded.model, ad, samples, get_method(method), TypePlan("q4_0"),
                          CalibConfig(progress=False, threads=1))
    assert len(res.quantized) == 2 * 6 + 2 * 10 + 1
    kv = [L for n, L in res.layers.items() if "encoder_attn.k_proj" in n or "encoder_attn.v_proj" in n]
    assert len({L["group"] for L in kv}) == 1                        # cross k/v share one H


def test_torch_backend_via_get_backend(qdir):
    from tarq.eval import get_backend

    be = get_backend("torch", str(qdir), threads=1, max_new_tokens=4)
    texts = be.transcribe([a for _, a, _ in _demo(2)])
    assert len(texts) == 2 and all(isinstance(t, str) and t for t in texts)
