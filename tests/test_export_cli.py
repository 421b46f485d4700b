"""``tarq export`` / ``tarq transcribe`` command lines."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_export_fixtures import random_quantized_dir, real_tokenizer, tiny_whisper
from tarq.cli.main import main
from tarq.export.gguf_writer import read_gguf
from tarq.export.whisper_cpp import read_whisper_cpp
from tarq.qmodel import load_quantized_dir

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def qdir(tmp_path_factory):
    return random_quantized_dir(tmp_path_factory.mktemp("cli") / "q", tiny_whisper(), real_tokenizer(), "q4_0", 32)


def test_export_whisper_cpp_and_gguf(tmp_path, qdir, capsys):
    assert main(["export", str(qdir), "--to", "whisper.cpp", "--out", str(tmp_path / "m.bin")]) == 0
    assert main(["export", str(qdir), "--to", "whisper.cpp", "--type", "q8_0", "--out", str(tmp_path / "m8.bin")]) == 0
    assert main(["export", str(qdir), "--to", "gguf", "--out", str(tmp_path / "m.gguf")]) == 0
    assert "wrote" in capsys.readouterr().out
    ckpt = load_quantized_dir(qdir)
    name = "model.encoder.layers.1.fc2.weight"
    want = ckpt.quantized[name].codes()
    assert read_whisper_cpp(tmp_path / "m.bin").wtype.name == "q4_0"
    t8 = read_whisper_cpp(tmp_path / "m8.bin").tensors["encoder.blocks.1.mlp.2.weight"]
    assert t8.ggml_type.name == "q8_0" and np.array_equal(t8.decode()[0], want)
    assert np.array_equal(read_gguf(tmp_path / "m.gguf").tensors[name].decode()[0], want)


def test_export_user_errors_are_one_line(tmp_path, qdir, capsys):
    assert main(["export", str(qdir), "--rtn", "q4_0", "--out", str(tmp_path / "x.bin")]) == 1
    assert "is a quantized directory" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.bin")]) == 1
    assert "not a quantized directory" in capsys.readouterr().err
    assert not (tmp_path / "x.bin").exists()


def test_transcribe_rejects_non_whisper_file(tmp_path, capsys):
    bad = tmp_path / "m.gguf"
    bad.write_bytes(b"GGUF" + bytes(100))
    wav = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(str(wav), np.zeros(1600, np.float32), 16000)
    assert main(["transcribe", str(bad), str(wav)]) == 1
    assert "not a whisper.cpp ggml model" in capsys.readouterr().err
