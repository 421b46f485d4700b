"""GGUF export (generic family): round trip of the ggml bytes (every type, mixed types), gguf-py reads them the
same, bad files, atomicity."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from test_export_fixtures import random_quantized_dir, random_tensor, real_tokenizer, tiny_whisper
from tarq.export.gguf_writer import FAMILIES, GgufFamily, read_gguf, register_family, write_gguf
from tarq.qmodel import load_quantized_dir

gguf = pytest.importorskip("gguf")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def qdirs(tmp_path_factory):
    tok, model = real_tokenizer(), tiny_whisper(d_model=128)
    root = tmp_path_factory.mktemp("gguf")
    return {k: random_quantized_dir(root / f"{k[0]}-{k[1]}", model, tok, *k, seed=7)
            for k in [("q4_0", 128), ("q8_0", 32)]}


@pytest.mark.parametrize("key", [("q4_0", 128), ("q8_0", 32)])
def test_round_trip(tmp_path, qdirs, key):
    ckpt = load_quantized_dir(qdirs[key])
    g = read_gguf(write_gguf(ckpt, tmp_path / "m.gguf"))
    assert g.arch == "tarq" and g.kv["tarq.format"] == key[0] and g.kv["tarq.group_size"] == key[1]
    assert g.kv["general.quantization_version"] == 2
    back = g.quantized_tensors()
    assert set(back) == set(ckpt.quantized)
    sd = ckpt.state_dict()
    for name, qt in ckpt.quantized.items():
        assert back[name].qtype is qt.qtype and torch.equal(back[name].data, qt.data)
        t = g.tensors[name]
        assert t.ggml_type.name == key[0] and t.shape == qt.shape
        assert np.array_equal(t.to_float(), sd[name].numpy())
        # gguf-py's own dequantizer agrees with the directory's weights
        ref = gguf.quants.dequantize(t.data.reshape(qt.shape[0], -1), gguf.GGMLQuantizationType[key[0].upper()])
        assert np.array_equal(ref, sd[name].numpy())
    for name, v in ckpt.floats.items():
        assert np.array_equal(g.tensors[name].to_float().reshape(v.shape), v.numpy())


def test_every_type_and_mixed_types_round_trip(tmp_path):
    """A directory whose tensors each have a different type (GGUF allows it): bytes verbatim, gguf-py agrees."""
    from tarq.ggml import QUANT_TYPES
    from tarq.qmodel import save_quantized_model

    rng = np.random.default_rng(3)
    quantized = {f"layer.{name}.weight": random_tensor(name, 8, 512, None, rng) for name in QUANT_TYPES}
    d = save_quantized_model(tmp_path / "mixed", family="toy", config={"x": 1}, quantized=quantized,
                             floats={"layer.bias": torch.zeros(4)}, meta={"method": "random"})
    ckpt = load_quantized_dir(d)
    assert ckpt.wtype is None and ckpt.types == set(QUANT_TYPES)
    g = read_gguf(write_gguf(ckpt, tmp_path / "m.gguf"))
    for name, qt in ckpt.quantized.items():
        t = g.tensors[name]
        assert t.ggml_type is qt.qtype and np.array_equal(t.data, qt.numpy().reshape(-1))
        ref = gguf.quants.dequantize(t.data.reshape(8, -1), gguf.GGMLQuantizationType[qt.qtype.name.upper()])
        assert np.array_equal(ref, qt.dequantize().numpy()), name


def test_container_type_and_family_registry(tmp_path, qdirs):
    calls = []

    def keys(w, ckpt):
        calls.append(ckpt.family)
        w.add_uint32("toy.n_layers", ckpt.config["encoder_layers"])

    register_family("toy", GgufFamily("toy", keys, lambda hf: None if "embed_positions" in hf else
                                      hf.replace("model.", "").replace("layers.", "blk.")))
    try:
        g = read_gguf(write_gguf(qdirs[("q4_0", 128)], tmp_path / "t.gguf", family="toy", qtype="q8_0"))
    finally:
        FAMILIES.pop("toy")
    assert calls == ["whisper"] and g.arch == "toy" and g.kv["toy.n_layers"] == 2
    assert "encoder.blk.0.fc1.weight" in g.tensors and not any("embed_positions" in n for n in g.tensors)
    assert g.tensors["encoder.blk.0.fc1.weight"].ggml_type.name == "q8_0"
    with pytest.raises(ValueError, match="unknown GGUF family 'nope'"):
        write_gguf(qdirs[("q4_0", 128)], tmp_path / "x.gguf", family="nope")


def test_long_names_are_rejected(tmp_path, qdirs):
    register_family("long", GgufFamily("long", lambda w, c: None, lambda hf: "x" * 70))
    try:
        with pytest.raises(ValueError, match="longer than ggml's 63 bytes"):
            write_gguf(qdirs[("q4_0", 128)], tmp_path / "l.gguf", family="long")
    finally:
        FAMILIES.pop("long")
    assert os.listdir(tmp_path) == []


def test_failed_write_leaves_no_file(tmp_path, qdirs, monkeypatch):
    def boom(self):
        raise OSError("injected failure")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(OSError, match="injected"):
        write_gguf(qdirs[("q4_0", 128)], tmp_path / "m.gguf")
    assert os.listdir(tmp_path) == []


def test_reader_errors(tmp_path, qdirs):
    good = write_gguf(qdirs[("q8_0", 32)], tmp_path / "good.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"lmgg" + good[4:])
    with pytest.raises(ValueError, match="bad.gguf: bad magic"):
        read_gguf(bad)
    bad.write_bytes(good[: len(good) // 3])
    with pytest.raises(ValueError, match="bad.gguf: corrupt or truncated"):
        read_gguf(bad)
    with pytest.raises(FileNotFoundError):
        read_gguf(tmp_path / "none.gguf")
