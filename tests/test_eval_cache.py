"""The decode cache: reruns decode nothing new, keys follow content, concurrent writers, backends without an
identity, and the torch backend's identity (tarq.eval.cache, docs/evaluation.md "Decode cache")."""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import types

import numpy as np
import pytest

from tarq.eval.cache import DecodeCache, decode_with_cache, model_dir_sha256
from tarq.eval.runner import evaluate


def _manifest(tmp_path, n=5):
    sf = pytest.importorskip("soundfile")
    (tmp_path / "audio").mkdir(parents=True)
    lines = []
    for i in range(n):
        sig = np.sin(np.arange(4000 * (i + 1)) * (0.01 * (i + 1))).astype(np.float32) * 0.1
        sf.write(tmp_path / "audio" / f"u{i}.flac", sig, 16000)
        lines.append(json.dumps({"id": f"u{i}", "audio": f"audio/u{i}.flac", "text": f"word number {i}"}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "manifest.jsonl"


class Counting:
    """Names each clip by its length; counts what it was asked to decode."""
    name, batch_size = "counting", 2

    def __init__(self, identity=("model-a",)):
        self.calls = 0
        self.identity = identity
        self.description = {"backend": self.name}

    def cache_identity(self):
        return None if self.identity is None else {"backend": self.name, "model_sha256": self.identity[0]}

    def transcribe(self, audios):
        self.calls += len(audios)
        return [f"word number {len(a) // 4000 - 1}" for a in audios]


def test_rerun_decodes_nothing_and_a_larger_set_only_what_is_new(tmp_path):
    data = _manifest(tmp_path / "d", n=5)
    cache = DecodeCache(tmp_path / "cache")
    be = Counting()
    r1 = evaluate(be, [data], limit=3, progress=False, cache=cache)
    assert be.calls == 3 and r1.datasets[0].cache_hits == 0 and r1.datasets[0].scores.wer == 0
    r2 = evaluate(be, [data], limit=3, progress=False, cache=cache)
    assert be.calls == 3 and r2.datasets[0].cache_hits == 3
    assert r2.datasets[0].hyps == r1.datasets[0].hyps
    assert r2.datasets[0].seconds == r1.datasets[0].seconds            # the original decode's timing is kept
    assert r2.datasets[0].durations == pytest.approx(r1.datasets[0].durations)
    evaluate(be, [data], progress=False, cache=cache)                   # all 5: only 2 are new
    assert be.calls == 5
    # another model is another key
    other = Counting(identity=("model-b",))
    evaluate(other, [data], limit=3, progress=False, cache=cache)
    assert other.calls == 3
    # no cache: everything decoded
    evaluate(be, [data], limit=3, progress=False, cache=None)
    assert be.calls == 8
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_audio_content_is_part_of_the_key(tmp_path):
    sf = pytest.importorskip("soundfile")
    data = _manifest(tmp_path / "d", n=2)
    cache = DecodeCache(tmp_path / "cache")
    be = Counting()
    evaluate(be, [data], progress=False, cache=cache)
    sig = np.zeros(4000, dtype=np.float32)             # same length, other samples: a new decode
    sf.write(tmp_path / "d" / "audio" / "u0.flac", sig, 16000)
    r = evaluate(be, [data], progress=False, cache=cache)
    assert be.calls == 3 and r.datasets[0].cache_hits == 1


def test_backend_without_identity_is_not_cached(tmp_path, caplog):
    data = _manifest(tmp_path / "d", n=2)
    cache = DecodeCache(tmp_path / "cache")
    be = Counting(identity=None)
    with caplog.at_level(logging.INFO, logger="tarq.eval.cache"):
        evaluate(be, [data], progress=False, cache=cache)
        evaluate(be, [data], progress=False, cache=cache)
    assert be.calls == 4 and "no cache identity" in caplog.text
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.json"))

    class Plain:                                      # no cache_identity method at all
        name, batch_size, description = "plain", 4, {}

        def transcribe(self, audios):
            return ["x"] * len(audios)
    evaluate(Plain(), [data], progress=False, cache=cache)


def test_corrupt_entry_is_a_miss_and_rewritten(tmp_path):
    data = _manifest(tmp_path / "d", n=1)
    cache = DecodeCache(tmp_path / "cache")
    be = Counting()
    evaluate(be, [data], progress=False, cache=cache)
    (entry,) = list((tmp_path / "cache").rglob("*.json"))
    entry.write_text("{trunc")
    evaluate(be, [data], progress=False, cache=cache)
    assert be.calls == 2 and json.loads(entry.read_text())["text"] == "word number 0"


def _writer(root, worker, n):
    cache = DecodeCache(root)
    ident = {"backend": "x", "model_sha256": "m"}
    for i in range(n):
        cache.put(ident, f"{i:064x}", f"text {i}", 0.1 * worker)
        got = cache.get(ident, f"{(i * 7) % n:064x}")
        assert got is None or got["text"] == f"text {(i * 7) % n}"


def test_concurrent_writers_never_leave_partial_entries(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 150)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    cache = DecodeCache(tmp_path)
    ident = {"backend": "x", "model_sha256": "m"}
    assert all(cache.get(ident, f"{i:064x}")["text"] == f"text {i}" for i in range(150))
    assert not list(tmp_path.rglob("*.tmp"))


def test_decode_with_cache_stores_chunk_by_chunk(tmp_path):
    """A decode that dies half-way keeps the chunks it finished (a killed grid resumes from them)."""
    data = _manifest(tmp_path / "d", n=5)
    from tarq.data import load_dataset
    utts = load_dataset(data)
    cache = DecodeCache(tmp_path / "cache")
    seen = []

    def dying_decode(backend, part, **kw):
        if seen:
            raise KeyboardInterrupt
        seen.append(len(part))
        return ["t"] * len(part), [0.1] * len(part), [1.0] * len(part)
    be = Counting()
    be.batch_size = 0
    with pytest.raises(KeyboardInterrupt):
        decode_with_cache(be, _many(utts, 40), cache, decode=dying_decode, progress=False)
    assert seen == [32] and len(list((tmp_path / "cache").rglob("*.json"))) == 5   # 5 distinct audio files


def _many(utts, n):
    import dataclasses
    return [dataclasses.replace(utts[i % len(utts)], id=f"c{i}") for i in range(n)]


# ----------------------------------------------------------------------------------------------- torch backend

def _fake_loaded(path):
    torch = pytest.importorskip("torch")
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8,
        max_source_positions=20, max_target_positions=20, pad_token_id=50, bos_token_id=50, eos_token_id=50,
        decoder_start_token_id=60)).eval()
    model.generation_config.suppress_tokens = [3]
    model.generation_config.begin_suppress_tokens = [4]
    tok = types.SimpleNamespace(convert_tokens_to_ids=lambda t: 5, unk_token_id=0)
    return types.SimpleNamespace(model=model, tokenizer=tok, feature_extractor=None, name="fake",
                                 source={"kind": "tarq", "path": str(path)} if path else {},
                                 eot_id=10, decoder_prompt_ids=lambda: [1, 2])


def test_torch_backend_identity_follows_the_model_files(tmp_path):
    from tarq.eval.backends import TorchBackend

    d = tmp_path / "qdir"
    d.mkdir()
    (d / "quantized.safetensors").write_bytes(b"codes-1")
    (d / "config.json").write_text("{}")
    (d / "report.json").write_text('{"wall_s": 1}')
    a = TorchBackend(_fake_loaded(d), threads=None).cache_identity()
    assert a["backend"] == "torch" and a["policy"] == "greedy" and a["model_sha256"] == model_dir_sha256(d)
    (d / "report.json").write_text('{"wall_s": 2}')              # diagnostics do not change a decode
    assert TorchBackend(_fake_loaded(d), threads=None).cache_identity() == a
    b = TorchBackend(_fake_loaded(d), threads=None, max_new_tokens=64).cache_identity()
    assert b != a and b["options"]["max_new_tokens"] == 64
    (d / "quantized.safetensors").write_bytes(b"codes-2")
    assert TorchBackend(_fake_loaded(d), threads=None).cache_identity()["model_sha256"] != a["model_sha256"]
    assert TorchBackend(_fake_loaded(None), threads=None).cache_identity() is None   # in-memory: no caching


def test_default_cache_root_follows_the_environment(tmp_path, monkeypatch):
    """No --cache-dir: $TARQ_CACHE_DIR, else tarq's cache root ($TARQ_CACHE, $XDG_CACHE_HOME/tarq)."""
    from tarq.eval.cache import default_cache_dir

    monkeypatch.delenv("TARQ_CACHE_DIR", raising=False)
    monkeypatch.delenv("TARQ_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert DecodeCache().root == tmp_path / "xdg" / "tarq"
    monkeypatch.setenv("TARQ_CACHE", str(tmp_path / "tc"))
    assert default_cache_dir() == tmp_path / "tc"
    monkeypatch.setenv("TARQ_CACHE_DIR", str(tmp_path / "d"))
    assert DecodeCache().dir == tmp_path / "d" / "decodes" / "v1"


def test_empty_transcripts_from_the_cache_are_reported(tmp_path, caplog):
    """A backend warns about an empty transcript when it decodes; served from the cache it must still be said."""
    class Silent(Counting):
        def transcribe(self, audios):
            self.calls += len(audios)
            return ["" if len(a) == 4000 else "word" for a in audios]

    data = _manifest(tmp_path / "d", n=2)
    cache = DecodeCache(tmp_path / "cache")
    evaluate(Silent(), [data], progress=False, cache=cache)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tarq.eval.cache"):
        r = evaluate(Silent(), [data], progress=False, cache=cache)
    assert r.datasets[0].cache_hits == 2
    assert "empty transcript for 1 clip(s) from the decode cache (u0)" in caplog.text
