"""benchmarks/splice_halves.py: the spliced file is, byte for byte, the encoder file up to the first decoder tensor
record and the decoder file from there on (located from the legacy .bin record layout, not with tarq's reader), and
files that are not the same model on the same type get a one-line error and no output."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from test_export_fixtures import random_quantized_dir, real_tokenizer, tiny_whisper
from tarq.export.whisper_export import export_whisper_cpp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import splice_halves  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("splice")
    model, tok = tiny_whisper(d_model=64), real_tokenizer()
    out = {}
    for name, fmt, seed in [("a", "q4_0", 1), ("b", "q4_0", 2), ("c", "q8_0", 3)]:
        qdir = random_quantized_dir(root / name, model, tok, fmt, seed=seed)
        out[name] = export_whisper_cpp(qdir, root / f"{name}.bin")
    return out


def _first_decoder_record(data: bytes) -> int:
    """Offset of the record holding decoder.positional_embedding: n_dims, name length, type, ne[n_dims], name."""
    name = b"decoder.positional_embedding"
    at = data.index(name)
    start = at - 4 * (3 + 2)            # a 2-D tensor: three ints, two dims
    assert struct.unpack_from("<3i", data, start)[:2] == (2, len(name))
    return start


def _run(*args) -> int:
    return splice_halves.main([str(a) for a in args])


def test_spliced_bytes_are_the_encoder_file_then_the_decoder_file(tmp_path, files):
    a, b = files["a"].read_bytes(), files["b"].read_bytes()
    cut = _first_decoder_record(a)
    assert cut == _first_decoder_record(b) and a[:cut] != b[:cut] and a[cut:] != b[cut:]
    # every encoder tensor precedes the first decoder tensor, so the split is one cut
    assert b"encoder." not in a[cut:] and b"decoder." not in a[:cut]

    assert _run("--encoder", files["a"], "--decoder", files["b"], "--out", tmp_path / "ab.bin") == 0
    assert (tmp_path / "ab.bin").read_bytes() == a[:cut] + b[cut:]
    assert _run("--encoder", files["b"], "--decoder", files["a"], "--out", tmp_path / "ba.bin") == 0
    assert (tmp_path / "ba.bin").read_bytes() == b[:cut] + a[cut:]


@pytest.mark.parametrize("bad", ["other type", "missing"])
def test_mismatched_or_missing_input_is_a_one_line_error(tmp_path, files, bad, capsys):
    other = files["c"] if bad == "other type" else tmp_path / "nope.bin"
    assert _run("--encoder", files["a"], "--decoder", other, "--out", tmp_path / "x.bin") == 2
    assert not (tmp_path / "x.bin").exists()
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("splice_halves: error:") and str(other) in lines[0], err
