"""The quantized-model directory: version-2 round trip with per-tensor types, version-1 directories still load."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_export_fixtures import random_tensor
from tarq.qmodel import QuantizedTensor, load_quantized_dir, save_quantized_model


def test_v2_round_trip_with_mixed_types(tmp_path):
    rng = np.random.default_rng(0)
    q = {"a.weight": random_tensor("q4_k", 4, 256, None, rng), "b.weight": random_tensor("iq4_nl", 3, 64, None, rng),
         "c.weight": random_tensor("q4_0", 2, 128, 128, rng)}
    out = save_quantized_model(tmp_path / "d", family="toy", config={"k": 1}, quantized=q,
                               floats={"a.bias": torch.ones(4)}, meta={"method": "test", "group_size": 128})
    meta = json.loads((out / "tarq.json").read_text())
    assert meta["tarq_meta_version"] == 2 and meta["tensor_types"] == {"a.weight": "q4_k", "b.weight": "iq4_nl",
                                                                       "c.weight": "q4_0"}
    ck = load_quantized_dir(out)
    assert ck.types == {"q4_k", "iq4_nl", "q4_0"} and ck.wtype is None
    for name, qt in q.items():
        got = ck.quantized[name]
        assert got.qtype is qt.qtype and got.shape == qt.shape and torch.equal(got.data, qt.data)
        assert torch.equal(ck.state_dict()[name], qt.dequantize())


def test_version_1_directory_still_loads(tmp_path):
    """codes int8 + one fp16 scale per 64 columns (tarq_meta_version 1) -> Q4_0 bytes with d repeated per block."""
    from safetensors.torch import save_file

    rng = np.random.default_rng(1)
    codes = torch.from_numpy(rng.integers(-8, 8, (3, 128)).astype(np.int8))
    scales = torch.from_numpy((rng.standard_normal((3, 2)) * 0.01).astype(np.float16))
    d = tmp_path / "v1"
    d.mkdir()
    save_file({"w.codes": codes, "w.scales": scales}, str(d / "quantized.safetensors"))
    save_file({"b": torch.zeros(2)}, str(d / "float.safetensors"))
    (d / "config.json").write_text("{}")
    (d / "tarq.json").write_text(json.dumps({"tarq_meta_version": 1, "family": "whisper", "format": "q4_0",
                                             "group_size": 64, "quantized_tensors": ["w"]}))
    ck = load_quantized_dir(d)
    qt = ck.quantized["w"]
    assert qt.qtype.name == "q4_0" and qt.shape == (3, 128)
    assert np.array_equal(qt.codes(), codes.numpy())
    want = codes.float() * scales.float().repeat_interleave(64, dim=1)   # v1 semantics: codes * group scale
    assert torch.equal(qt.dequantize(), want)


def test_bad_tensors_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"q4_0 \(2, 64\): data has shape \(2, 18\), expected \(2, 36\)"):
        QuantizedTensor("q4_0", torch.zeros(2, 18, dtype=torch.uint8), (2, 64))
    with pytest.raises(ValueError, match="rows of 96 do not tile"):
        QuantizedTensor("q4_k", torch.zeros(1, 1, dtype=torch.uint8), (1, 96))
    with pytest.raises(FileNotFoundError, match="missing tarq.json"):
        (tmp_path / "x").mkdir()
        load_quantized_dir(tmp_path / "x")
