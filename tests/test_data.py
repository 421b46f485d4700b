"""tarq.data: layouts, audio decoding/resampling and error messages, on tiny synthetic files."""
from __future__ import annotations

import json
import logging
from math import gcd
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tarq.data import Utterance, load_audio, load_dataset
from tarq.data.resample import resample_poly, resample_reference

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tone(sr: int, seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write(path: Path, x: np.ndarray, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr)
    return path


# -- resampling --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resample_poly_matches_literal_definition(sr):
    rng = np.random.default_rng(sr)
    x = rng.standard_normal(1500)
    g = gcd(16000, sr)
    fast = resample_poly(x, 16000 // g, sr // g)
    slow = resample_reference(x, 16000 // g, sr // g)
    assert fast.shape == slow.shape == (-(-len(x) * 16000 // sr),)
    np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_resample_poly_matches_scipy_when_available():
    signal = pytest.importorskip("scipy.signal")
    x = np.random.default_rng(1).standard_normal(4000)
    np.testing.assert_allclose(resample_poly(x, 160, 441), signal.resample_poly(x, 160, 441), atol=1e-5)


def test_resample_preserves_tone_and_removes_aliases():
    sr = 44100
    y = resample_poly(tone(sr, 1.0, 1000.0), 160, 441)
    ref = tone(16000, 1.0, 1000.0)[: len(y)]
    inner = slice(200, -200)  # edges see zero padding
    assert np.abs(y[inner] - ref[inner]).max() < 2e-3
    # A 12 kHz tone is above the new Nyquist (8 kHz): it must be suppressed, not aliased to 4 kHz.
    alias = resample_poly(tone(sr, 1.0, 12000.0), 160, 441)
    assert np.sqrt(np.mean(alias[inner] ** 2)) < 1e-3


# -- audio ---------------------------------------------------------------------------------------------------
def test_load_audio_downmix_and_resample(tmp_path):
    stereo = tone(48000, 0.5, channels=2)
    stereo[:, 1] *= 0.0  # mean of (x, 0) = x / 2
    p = write(tmp_path / "a.wav", stereo, 48000)
    y = load_audio(p)
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) == 8000
    ref = tone(16000, 0.5)[:8000] / 2
    assert np.abs(y[100:-100] - ref[100:-100]).max() < 2e-3


def test_load_audio_16k_flac_is_exact(tmp_path):
    x = (np.random.default_rng(0).integers(-2000, 2000, 1600) / 32768.0)
    y = load_audio(write(tmp_path / "a.flac", x))
    np.testing.assert_array_equal(y, x.astype(np.float32))


def test_load_audio_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.flac"):
        load_audio(tmp_path / "missing.flac")
    bad = tmp_path / "corrupt.flac"
    bad.write_bytes(b"fLaC not really" * 10)
    with pytest.raises(ValueError, match="corrupt.flac.*unreadable"):
        load_audio(bad)
    empty = write(tmp_path / "empty.wav", np.zeros(0))
    with pytest.raises(ValueError, match="empty.wav.*no samples"):
        load_audio(empty)


# -- layouts ---------------------------------------------------------------------------------------------
def test_manifest_jsonl(tmp_path):
    write(tmp_path / "audio" / "a.flac", tone(16000, 1.0))
    write(tmp_path / "audio" / "b.flac", tone(16000, 0.5))
    rows = [{"id": "a", "audio": "audio/a.flac", "text": " Hello  there. ", "duration": 1.0},
            {"audio": "audio/b.flac", "text": "Bye"}]
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    utts = load_dataset(tmp_path)
    assert utts == [Utterance("a", tmp_path / "audio" / "a.flac", "Hello  there.", 1.0),
                    Utterance("audio/b", tmp_path / "audio" / "b.flac", "Bye", None)]
    assert load_dataset(tmp_path / "manifest.jsonl", limit=1) == utts[:1]
    assert len(utts[0].load()) == 16000


def test_manifest_jsonl_errors(tmp_path):
    write(tmp_path / "a.flac", tone(16000, 0.2))
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"id": "x", "audio": "nope.flac", "text": "hi"}))
    with pytest.raises(FileNotFoundError, match=r"m.jsonl:1.*nope.flac"):
        load_dataset(m)
    m.write_text(json.dumps({"id": "x", "audio": "a.flac", "text": "   "}))
    with pytest.raises(ValueError, match=r"m.jsonl:1: empty transcript"):
        load_dataset(m)
    m.write_text(json.dumps({"id": "x", "audio": "a.flac", "text": "a"}) + "\n"
                 + json.dumps({"id": "x", "audio": "a.flac", "text": "b"}))
    with pytest.raises(ValueError, match="duplicate utterance id 'x'"):
        load_dataset(m)
    m.write_text('{"id": "x", "audio": ')
    with pytest.raises(ValueError, match=r"m.jsonl:1: invalid JSON"):
        load_dataset(m)
    m.write_text(json.dumps({"id": "x", "text": "a"}))
    with pytest.raises(ValueError, match="no audio path field"):
        load_dataset(m)
    (tmp_path / "c.flac").write_bytes(b"garbage")
    m.write_text(json.dumps({"id": "c", "audio": "c.flac", "text": "a"}))
    with pytest.raises(ValueError, match="c.flac: unreadable or corrupt"):
        load_dataset(m)


def test_manifest_duration_mismatch_warns(tmp_path, caplog):
    write(tmp_path / "a.flac", tone(16000, 1.0))
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"id": "a", "audio": "a.flac", "text": "t", "duration": 9.0}))
    with caplog.at_level(logging.WARNING, logger="tarq.data.datasets"):
        load_dataset(m)
    assert "manifest says 9.00 s but the file lasts 1.00 s" in caplog.text
    caplog.clear()
    m.write_text(json.dumps({"id": "a", "audio": "a.flac", "text": "t", "duration": 1.1}))
    with caplog.at_level(logging.WARNING, logger="tarq.data.datasets"):
        load_dataset(m)
    assert "manifest says" not in caplog.text


def test_manifest_tsv_and_common_voice_clips(tmp_path):
    write(tmp_path / "clips" / "x.wav", tone(16000, 0.3))
    write(tmp_path / "y.wav", tone(16000, 0.3))
    (tmp_path / "train.tsv").write_text("client_id\tpath\tsentence\n"
                                        "c1\tx.wav\tFirst one\n\n"
                                        "c2\ty.wav\tSecond \"quoted\" one\n")
    utts = load_dataset(tmp_path / "train.tsv")
    assert [(u.id, u.audio.name, u.text) for u in utts] == [("x", "x.wav", "First one"),
                                                            ("y", "y.wav", 'Second "quoted" one')]
    (tmp_path / "bad.tsv").write_text("foo\tsentence\na\tb\n")
    with pytest.raises(ValueError, match="bad.tsv: header row.*no audio column"):
        load_dataset(tmp_path / "bad.tsv")


def test_librispeech_layout(tmp_path):
    ch = tmp_path / "dev-clean" / "84" / "121123"
    write(ch / "84-121123-0000.flac", tone(16000, 0.2))
    write(ch / "84-121123-0001.flac", tone(16000, 0.2))
    (ch / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS THAN FIVE\n")
    utts = load_dataset(tmp_path)
    assert [(u.id, u.text) for u in utts] == [("84-121123-0000", "GO DO YOU HEAR"),
                                              ("84-121123-0001", "BUT IN LESS THAN FIVE")]
    assert utts[1].audio == ch / "84-121123-0001.flac"
    (ch / "84-121123.trans.txt").write_text("84-121123-0002 MISSING\n")
    with pytest.raises(FileNotFoundError, match="84-121123-0002.flac"):
        load_dataset(tmp_path)


def test_audio_folder_with_optional_transcripts(tmp_path):
    write(tmp_path / "b.wav", tone(16000, 0.2))
    write(tmp_path / "sub" / "a.flac", tone(22050, 0.2), 22050)
    (tmp_path / "b.txt").write_text("hello world\n")
    utts = load_dataset(tmp_path)
    assert [(u.id, u.text) for u in utts] == [("b", "hello world"), ("sub/a", None)]
    assert len(load_audio(utts[1].audio)) == 3200
    (tmp_path / "b.txt").write_text("\n")
    with pytest.raises(ValueError, match="b.txt: empty transcript"):
        load_dataset(tmp_path)


def test_unknown_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(ValueError, match="unknown dataset layout"):
        load_dataset(tmp_path)
    with pytest.raises(ValueError, match="notes.md: unknown dataset file type"):
        load_dataset(tmp_path / "notes.md")


@pytest.mark.skipif(not (SHARED / "asterisk-prompts" / "manifest.jsonl").is_file(),
                    reason=f"shared speech data not found at {SHARED}")
def test_shared_manifests():
    for name, n in (("asterisk-prompts", 551), ("austen-tts-calib", 128), ("austen-tts-dev", 480)):
        utts = load_dataset(SHARED / name, verify_audio=False)
        assert len(utts) == n and all(u.text and u.audio.is_file() for u in utts)
    utts = load_dataset(SHARED / "asterisk-prompts", limit=3)
    for u in utts:
        a = load_audio(u.audio)
        assert a.dtype == np.float32 and abs(len(a) / 16000 - u.duration) < 0.05
