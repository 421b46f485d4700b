"""The runtime backends (tarq.eval.runtimes) on a tiny random Whisper: validation before the runtime, crash
isolation in worker processes, decoding policies as whisper.cpp applies them, parallel workers, cache identity,
--verify, long-audio splitting and the one-line errors of `tarq transcribe` / `tarq eval`."""
from __future__ import annotations

import hashlib
import logging
import os
import struct

import numpy as np
import pytest
import torch

from test_export_fixtures import random_quantized_dir, real_tokenizer, tiny_whisper
from tarq.cli.main import main

os.environ.setdefault("GGML_NO_BACKTRACE", "1")
torch.set_num_threads(1)
pytestmark = pytest.mark.runtime
pytest.importorskip("pywhispercpp")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from tarq.export.gguf_writer import write_gguf
    from tarq.export.integrity import write_checksum
    from tarq.export.whisper_cpp import write_whisper_bin
    from tarq.export.whisper_export import float_to_whisper_file

    root = tmp_path_factory.mktemp("rt")
    model, tok = tiny_whisper(), real_tokenizer()
    sd, cfg = model.state_dict(), model.config.to_dict()
    out = {wt: write_whisper_bin(root / f"{wt}.bin", float_to_whisper_file(sd, cfg, tok, wtype=wt))
           for wt in ("q4_0", "f32")}
    out["gguf"] = write_gguf(random_quantized_dir(root / "q", model, tok), root / "m.gguf")
    write_checksum(out["q4_0"])
    return out


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(16000 * s)).astype(np.float32) for s in (1, 2, 3)]


def _wav(tmp_path, audio, name="a.wav"):
    import soundfile as sf

    p = tmp_path / name
    sf.write(str(p), audio, 16000)
    return p


def _mutated(tmp_path, src, offset, fmt, value, name="bad.bin"):
    raw = bytearray(src.read_bytes())
    struct.pack_into(fmt, raw, offset, value)
    p = tmp_path / name
    p.write_bytes(bytes(raw))
    return p


# --------------------------------------------------------------------------- validation before the runtime

def test_check_model_file_rejects_what_would_crash_the_runtime(tmp_path, files):
    from tarq.eval.runtimes import check_model_file

    assert check_model_file(files["q4_0"], "whisper.cpp").weight_type == "q4_0"
    cases = {  # header offset (after the 4-byte magic) -> value -> message
        (4 + 12, 3): "n_audio_head 3 does not divide n_audio_state 64",
        (4 + 4, 1499): "n_audio_ctx 1499",
        (4 + 0, 40000): "n_vocab 40000",
        (4 + 36, 81): "n_mels 81",
    }
    for (off, val), msg in cases.items():
        bad = _mutated(tmp_path, files["q4_0"], off, "<i", val)
        with pytest.raises(ValueError, match=msg) as e:
            check_model_file(bad, "whisper.cpp")
        assert str(bad) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="aborts in whisper.cpp"):
        check_model_file(files["f32"], "whisper.cpp")
    assert check_model_file(files["f32"], "crispasr").weight_type == "f32"     # CrispASR runs F32
    with pytest.raises(ValueError, match="GGUF file; whisper.cpp"):
        check_model_file(files["gguf"], "whisper.cpp")
    with pytest.raises(ValueError, match="architecture 'tarq' cannot be decoded"):
        check_model_file(files["gguf"], "crispasr")
    (tmp_path / "short.bin").write_bytes(files["gguf"].read_bytes()[:3000])
    with pytest.raises(ValueError, match="short.bin"):
        check_model_file(tmp_path / "short.bin", "crispasr")


def test_check_model_file_finds_nan_weights(tmp_path, files):
    from tarq.eval.runtimes import check_model_file
    from tarq.export.whisper_cpp import read_whisper_cpp

    raw = bytearray(files["q4_0"].read_bytes())
    mf = read_whisper_cpp(files["q4_0"])
    ln = mf.tensors["decoder.ln.weight"]                 # F32: find its data by content
    start = bytes(raw).rfind(ln.data.tobytes())
    raw[start:start + 4] = struct.pack("<f", float("nan"))
    (tmp_path / "nan.bin").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"nan.bin: tensor 'decoder.ln.weight' has 1 NaN/Inf"):
        check_model_file(tmp_path / "nan.bin", "whisper.cpp")


# --------------------------------------------------------------------------- isolation

def test_native_crash_becomes_one_line_error_naming_the_file(files, clips):
    from tarq.errors import RuntimeCrash
    from tarq.eval.runtimes.policy import get_policy
    from tarq.eval.runtimes.session import RuntimeWorker

    pol = get_policy("greedy")   # bypass validation: an F32 model aborts in whisper.cpp 1.8.5's im2col
    w = RuntimeWorker("whisper.cpp", files["f32"], 1, "en", pol.strategy, pol.whisper_cpp)
    with pytest.raises(RuntimeCrash) as e:
        w.transcribe(clips[0], "decoding clip.wav")
    msg = str(e.value)
    assert msg.startswith(f"{files['f32']}: whisper.cpp crashed (SIGABRT) while decoding clip.wav")
    assert "GGML_ASSERT" in msg and "\n" not in msg


def test_empty_model_warning_is_an_error(tmp_path, files):
    from tarq.errors import RuntimeCrash
    from tarq.eval.runtimes.policy import get_policy
    from tarq.eval.runtimes.session import RuntimeWorker

    from tarq.export.whisper_cpp import read_whisper_cpp

    mf = read_whisper_cpp(files["q4_0"])
    header_only = tmp_path / "header.bin"   # everything up to the first tensor: whisper.cpp "assumes an empty model"
    raw = files["q4_0"].read_bytes()
    first = raw.find(b"encoder.positional_embedding") - 12 - 4 * 2
    header_only.write_bytes(raw[:first])
    assert len(mf.tensors) > 0
    pol = get_policy("greedy")
    with pytest.raises(RuntimeCrash, match="header.bin: whisper.cpp could not use the model: .*assuming empty model"):
        RuntimeWorker("whisper.cpp", header_only, 1, "en", pol.strategy, pol.whisper_cpp)


# --------------------------------------------------------------------------- policies, workers, identity

def test_policies_reach_whisper_cpp_as_whisper_cli_sets_them(files):
    from tarq.eval import get_backend

    seen = {}
    for policy in ("greedy", "default"):   # parameters as read back from the loaded whisper.cpp context
        with get_backend("whisper.cpp", files["q4_0"], threads=1, workers=1, policy=policy).start() as b:
            seen[policy] = (b.description["strategy"], b.description["effective_params"])
            assert b.description["policy"] == policy
    strategy, p = seen["default"]   # whisper-cli with no flags (examples/cli/cli.cpp, whisper.cpp 1.8.5)
    assert strategy == "WHISPER_SAMPLING_BEAM_SEARCH" and p["beam_search"]["beam_size"] == 5
    assert p["greedy"]["best_of"] == 5 and p["temperature_inc"] == pytest.approx(0.2)
    assert (p["entropy_thold"], p["logprob_thold"], p["no_timestamps"]) == (pytest.approx(2.4), -1.0, False)
    strategy, p = seen["greedy"]    # whisper-cli -nt -bs 1 -nf
    assert strategy == "WHISPER_SAMPLING_GREEDY" and p["greedy"]["best_of"] == 1
    assert p["temperature_inc"] == 0.0 and p["no_timestamps"] is True


def test_parallel_workers_give_the_same_texts_and_identity(files, clips):
    from dataclasses import replace

    from tarq.eval import get_backend
    from tarq.eval.runtimes import POLICIES

    greedy = POLICIES["greedy"]   # the random model never says eot: stop after 8 tokens to keep the test short
    short = replace(greedy, whisper_cpp={**greedy.whisper_cpp, "max_tokens": 8})
    with get_backend("whisper.cpp", files["q4_0"], threads=1, workers=1, policy=short) as one, \
            get_backend("whisper.cpp", files["q4_0"], threads=2, workers=2, policy=short) as two:
        texts = one.transcribe(clips)
        assert texts == two.transcribe(clips) and all(texts)
        assert (two.description["workers"], two.description["threads_per_worker"]) == (2, 1)
        assert one.cache_identity() == two.cache_identity()       # thread/worker counts do not change text
    with get_backend("whisper.cpp", files["q4_0"]) as plain:
        ident = plain.cache_identity()
    assert ident["model_sha256"] == hashlib.sha256(files["q4_0"].read_bytes()).hexdigest()
    assert ident["policy"] == "greedy" and ident["language"] == "en" and "whisper.cpp" in ident["runtime_version"]
    with get_backend("whisper.cpp", files["q4_0"], policy="default") as d:
        assert d.cache_identity() != ident
    with get_backend("whisper.cpp", files["q4_0"], threads=2, workers=1) as two_threads:
        # ggml's thread count can change a transcript (measured on base), so it is part of the identity
        assert two_threads.cache_identity() == {**ident, "ggml_threads": 2}
        assert two_threads.description["threads_per_worker"] == 2


def test_long_audio_is_split_for_greedy_and_whole_for_default(files, monkeypatch):
    from tarq.eval import get_backend
    from tarq.eval.runtimes import session

    sizes = []
    monkeypatch.setattr(session.WorkerPool, "__init__", lambda self, *a, **k: setattr(self, "info", {}))
    monkeypatch.setattr(session.WorkerPool, "map", lambda self, pieces, names=None: sizes.append(
        [len(p) for p in pieces]) or ["w"] * len(pieces))
    monkeypatch.setattr(session.WorkerPool, "close", lambda self: None)
    audio = np.random.default_rng(1).standard_normal(16000 * 75).astype(np.float32) * 0.1
    get_backend("whisper.cpp", files["q4_0"], policy="greedy").transcribe([audio])
    get_backend("whisper.cpp", files["q4_0"], policy="default").transcribe([audio])
    split, whole = sizes
    assert len(split) == 3 and max(split) <= 30 * 16000 and sum(split) == len(audio)
    assert whole == [len(audio)]


def test_empty_transcript_of_non_silent_audio_is_reported(files, monkeypatch, caplog):
    from tarq.eval import get_backend
    from tarq.eval.runtimes import session

    monkeypatch.setattr(session.WorkerPool, "__init__", lambda self, *a, **k: setattr(self, "info", {}))
    monkeypatch.setattr(session.WorkerPool, "map", lambda self, pieces, names=None: [""] * len(pieces))
    monkeypatch.setattr(session.WorkerPool, "close", lambda self: None)
    loud = np.full(16000, 0.1, np.float32)
    with caplog.at_level(logging.WARNING):
        get_backend("whisper.cpp", files["q4_0"]).transcribe([np.zeros(16000, np.float32), loud], names=["q", "l"])
    assert "empty transcript for 1 non-silent clip(s) (l)" in caplog.text


# --------------------------------------------------------------------------- CLI

def test_transcribe_verify_and_one_line_errors(tmp_path, files, clips, capsys, caplog):
    wav = _wav(tmp_path, clips[0])
    assert main(["transcribe", str(files["q4_0"]), str(wav), "--verify", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{wav}\t") and len(out.splitlines()) == 1
    assert err == ""        # whisper.cpp's load log and "Transcribing ..." lines stay in the worker's pipe
    with caplog.at_level(logging.DEBUG, logger="tarq.runtime"):   # ... and are logged at DEBUG (shown by -v)
        assert main(["-v", "transcribe", str(files["q4_0"]), str(wav), "--threads", "1"]) == 0
    assert "whisper_model_load: n_vocab" in caplog.text
    capsys.readouterr()
    bad = _mutated(tmp_path, files["q4_0"], 200_000, "<B", 7, name="flipped.bin")
    (tmp_path / "flipped.bin.sha256").write_text(files["q4_0"].with_name("q4_0.bin.sha256").read_text())
    for argv, msg in [
        (["transcribe", str(bad), str(wav), "--verify"], "flipped.bin: checksum mismatch"),
        (["transcribe", str(files["gguf"]), str(wav)], "architecture 'tarq' cannot be decoded"),
        (["transcribe", str(files["gguf"]), str(wav), "--backend", "whisper.cpp"], "GGUF file; whisper.cpp"),
        (["transcribe", str(files["f32"]), str(wav), "--verify"], "f32.bin.sha256"),
        (["eval", str(files["gguf"]), "--data", str(tmp_path)], "m.gguf: GGUF architecture"),
        (["eval", str(files["q4_0"]), "--data", str(tmp_path), "--batch-size", "4"], "--batch-size does not apply"),
        (["eval", "tiny.en", "--data", str(tmp_path), "--policy", "default"], "--policy does not apply"),
    ]:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1 and err.startswith(f"tarq {argv[0]}: error:"), (argv, err)


def test_eval_gguf_via_torch_backend_is_one_line(tmp_path, files, capsys):
    wav = _wav(tmp_path, np.zeros(1600, np.float32))
    (tmp_path / "a.txt").write_text("hello")
    assert main(["eval", str(files["gguf"]), "--backend", "torch", "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "m.gguf" in err, err
    assert wav.exists()


def test_a_backend_left_open_at_exit_does_not_abort_the_interpreter(files, tmp_path):
    # Library users (and scripts) often never close a backend. Its worker's stderr reader thread is blocked in
    # readline(); closing that pipe from a finaliser during interpreter shutdown made CPython abort
    # ("Fatal Python error: ... could not acquire lock ... at interpreter shutdown") after a successful run.
    import subprocess
    import sys

    script = tmp_path / "left_open.py"
    script.write_text(
        "import numpy as np\n"
        "from dataclasses import replace\n"
        "from tarq.eval import get_backend\n"
        "from tarq.eval.runtimes import POLICIES\n"
        "g = POLICIES['greedy']\n"
        "short = replace(g, whisper_cpp={**g.whisper_cpp, 'max_tokens': 8})\n"
        f"backend = get_backend('whisper.cpp', {str(files['q4_0'])!r}, threads=1, workers=1, policy=short)\n"
        "print(len(backend.transcribe([0.1 * np.ones(16000, dtype=np.float32)])))\n")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "GGML_NO_BACKTRACE": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Fatal Python error" not in run.stderr and run.stdout.strip() == "1"
