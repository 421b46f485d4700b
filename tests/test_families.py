"""The model-family seam: registry, loader dispatch, one-line errors for bad checkpoints, export targets, the type
policy, and the real releases' shapes (built on the meta device, no weights) against adapters and GGUF writers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tarq.cli.main import main


def test_registry_lists_the_families():
    from tarq.models import families, family_names, get_family

    assert family_names() == ["whisper", "qwen3_asr", "moonshine"]
    assert [f.name for f in families()] == family_names()
    assert get_family("qwen3_asr").model_types == ("qwen3_asr",)
    assert {t.dialect for t in get_family("qwen3_asr").export_targets} == {"crispasr", "qwen3-asr.cpp"}
    with pytest.raises(ValueError, match="model family 'wav2vec2' is not supported"):
        get_family("wav2vec2")


def _write_config(d, **cfg):
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_unknown_architecture_is_one_line(tmp_path, capsys):
    d = _write_config(tmp_path / "m", model_type="wav2vec2", architectures=["Wav2Vec2ForCTC"])
    assert main(["quantize", str(d), "--method", "rtn", "--out", str(tmp_path / "q")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "config.json" in err and "model_type='wav2vec2'" in err and "qwen3_asr" in err and "moonshine" in err


def test_original_qwen3_asr_layout_is_refused(tmp_path):
    from tarq.models import load_model

    d = _write_config(tmp_path / "m", model_type="qwen3_asr", thinker_config={})
    with pytest.raises(ValueError, match=r"config.json: original Qwen3-ASR release layout .*-hf"):
        load_model(str(d))


@pytest.fixture(scope="module")
def moonshine_dir(tmp_path_factory):
    from tarq.testing import write_random_moonshine

    return write_random_moonshine(tmp_path_factory.mktemp("fam") / "ms")


def _rewrite_weights(src, dst, edit):
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    sd = load_file(str(dst / "model.safetensors"))
    edit(sd)
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_missing_tensor_is_one_line(moonshine_dir, tmp_path, capsys):
    bad = _rewrite_weights(moonshine_dir, tmp_path / "bad", lambda sd: sd.pop("model.decoder.layers.1.mlp.fc2.weight"))
    assert main(["quantize", str(bad), "--method", "rtn", "--out", str(tmp_path / "q")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err
    assert "missing tensor(s) model.decoder.layers.1.mlp.fc2.weight" in err


def test_unexpected_tensor_is_one_line(moonshine_dir, tmp_path, capsys):
    def edit(sd):
        sd["model.encoder.layers.2.mlp.fc1.weight"] = torch.zeros(256, 64)   # a third layer the config lacks

    bad = _rewrite_weights(moonshine_dir, tmp_path / "bad", edit)
    assert main(["quantize", str(bad), "--method", "rtn", "--out", str(tmp_path / "q")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unexpected tensor(s) model.encoder.layers.2.mlp.fc1.weight" in err


def test_wrong_shape_is_one_line(moonshine_dir, tmp_path, capsys):
    def edit(sd):
        sd["model.encoder.layers.0.self_attn.k_proj.weight"] = torch.zeros(32, 64)

    bad = _rewrite_weights(moonshine_dir, tmp_path / "bad", edit)
    assert main(["quantize", str(bad), "--method", "rtn", "--out", str(tmp_path / "q")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{bad / 'model.safetensors'}: tensor model.encoder.layers.0.self_attn.k_proj.weight has shape (32, 64), " \
           f"the config expects (64, 64)" in err


def test_damaged_quantized_directory_is_one_line(moonshine_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from tarq.models import load_model

    q = tmp_path / "q"
    assert main(["quantize", str(moonshine_dir), "--method", "rtn", "--out", str(q), "--no-progress"]) == 0
    fl = load_file(str(q / "float.safetensors"))
    fl.pop("model.encoder.groupnorm.bias")
    save_file(fl, str(q / "float.safetensors"))
    with pytest.raises(ValueError, match=r"missing tensor\(s\) model.encoder.groupnorm.bias"):
        load_model(str(q))


def test_whisper_gguf_needs_an_explicit_internal_dialect(tmp_path, capsys):
    from tarq.models import get_family

    fam = get_family("whisper")
    with pytest.raises(ValueError, match="no runtime loads whisper as gguf"):
        fam.export_target("gguf")
    assert fam.export_target("gguf", "generic").runtime_loads_it is False
    assert fam.export_target("whisper.cpp").suffix == ".bin"
    with pytest.raises(ValueError, match="unknown --dialect 'crispasr'"):
        fam.export_target("gguf", "crispasr")


def test_type_plan_for_families():
    """The per-tensor type plan as the families use it: an audio-tower override keeps the group setting, groups
    solved together must share a type, and bad overrides fail before any work."""
    from tarq.ggml import TypePlan

    p = TypePlan("q4_0", {r"^model\.audio_tower\.": "q8_0"}, group_size=64)
    assert p.type_for("model.audio_tower.layers.0.fc1.weight").name == "q8_0"
    assert p.lattice_for("model.audio_tower.layers.0.fc1.weight").group == 64
    assert p.type_for("model.language_model.layers.0.mlp.up_proj.weight").name == "q4_0"
    with pytest.raises(ValueError, match="must share one type"):
        TypePlan("q4_0", {"k_proj": "q8_0"}).check([[("a.q_proj.weight", (8, 64)), ("a.k_proj.weight", (8, 64))]])
    with pytest.raises(ValueError, match="not a regular expression"):
        TypePlan("q4_0", {"(": "q8_0"})
    with pytest.raises(ValueError, match="unsupported ggml type 'q9_9'"):
        TypePlan("q4_0", {"x": "q9_9"})
    with pytest.raises(ValueError, match="w: rows of 48 do not tile Q4_0"):
        TypePlan("q4_0").check([[("w", (8, 48))]])


# ----------------------------------------------------------------------------------- real shapes, no weights
def _meta_model(family: str, real: str):
    from tarq.testing import REAL_CONFIGS, moonshine_config, qwen3_asr_config

    if family == "qwen3_asr":
        from transformers import Qwen3ASRForConditionalGeneration as M
        cfg = qwen3_asr_config(real, tiny=False)
    else:
        from transformers import MoonshineForConditionalGeneration as M
        cfg = moonshine_config(real, tiny=False)
    assert real in REAL_CONFIGS
    with torch.device("meta"):
        return M(cfg)


@pytest.mark.parametrize("family,real", [("qwen3_asr", "qwen3_asr-0.6b"), ("qwen3_asr", "qwen3_asr-1.7b"),
                                         ("moonshine", "moonshine-tiny"), ("moonshine", "moonshine-base")])
def test_real_configs_plan_and_gguf_names(family, real):
    """Every Linear of the released architecture is planned once, tiles Q4_0, and has a runtime tensor name."""
    from tarq.ggml import TypePlan
    from tarq.models import get_family

    model = _meta_model(family, real)
    fam = get_family(family)
    blocks = fam.adapter().blocks(model)
    names = [n for b in blocks for s in b.stages for g in s.groups for n in g.weights]
    tied = fam.tied_parameters(model.config.to_dict())
    linears = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert len(names) == len(set(names)) and set(names) == (linears - set(tied)) | set(tied.values())
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters(remove_duplicate=False)}
    group = 128 if family == "qwen3_asr" else 32      # Moonshine's 288/416 widths tile Q4_0 blocks, not 128-groups
    TypePlan("q4_0", group_size=group).check([[(n, shapes[n]) for n in g.weights]
                                              for b in blocks for s in b.stages for g in s.groups])
    if family == "qwen3_asr":
        from tarq.models.qwen3_asr.gguf import gguf_name
        dialects = ("crispasr", "qwen3-asr.cpp")
        mapped = {d: {gguf_name(n, d) for n in shapes if n not in tied} for d in dialects}
        assert "audio.blk.17.attn_k.bias" in mapped["crispasr"] or real.endswith("1.7b")
        assert "audio.encoder.conv_out.weight" in mapped["qwen3-asr.cpp"] and "token_embd.weight" in mapped["crispasr"]
    else:
        from tarq.models.moonshine.gguf import gguf_name
        mapped = {gguf_name(n) for n in shapes if n not in tied}
        assert "decoder.layers.5.cross_attn.k.weight" in mapped and "encoder.groupnorm.bias" in mapped


@pytest.mark.parametrize("real", ["qwen3_asr-0.6b", "qwen3_asr-1.7b"])
def test_real_shapes_pass_the_qwen3_asr_cpp_loader_check(real):
    """A virtual file with the released shapes (Q4_0 LLM, Q8_0 audio tower, F32 rest; no data) against
    qwen3-asr.cpp's loaders: tarq's keys make 1.7B load with its own shapes, and the tensor order avoids reads past
    the end of the file."""
    from tarq.ggml import get_type
    from tarq.models.qwen3_asr.cpp_loader import FileTensor, check

    model = _meta_model("qwen3_asr", real)
    a, t = model.config.audio_config, model.config.text_config
    from tarq.models.qwen3_asr.gguf import gguf_name

    kv = {"audio.encoder_layers": ("u32", a.encoder_layers), "audio.d_model": ("u32", a.d_model),
          "audio.attention_heads": ("u32", a.encoder_attention_heads), "audio.ffn_dim": ("u32", a.encoder_ffn_dim),
          "audio.conv_channels": ("u32", a.downsample_hidden_size), "text.hidden_size": ("u32", t.hidden_size),
          "qwen3-asr.embedding_length": ("u32", t.hidden_size), "qwen3-asr.block_count": ("u32", t.num_hidden_layers),
          "qwen3-asr.vocab_size": ("u32", t.vocab_size), "qwen3-asr.attention.head_count": ("u32", 16),
          "qwen3-asr.attention.head_count_kv": ("u32", 8), "qwen3-asr.feed_forward_length": ("u32", t.intermediate_size),
          "qwen3-asr.attention.key_length": ("u32", 128), "tokenizer.ggml.tokens": ("array", ["a"])}
    entries = []
    for n, p in model.named_parameters():
        name = gguf_name(n, "qwen3-asr.cpp")
        ty = get_type("q8_0" if name.startswith("audio.") else "q4_0") if p.ndim == 2 else get_type("f32")
        entries.append((name, ty, tuple(reversed(p.shape))))
    emb = next(e for e in entries if e[0] == "token_embd.weight")
    entries.append(("output.weight", emb[1], emb[2]))
    entries.sort(key=lambda e: (e[0].startswith("audio."), e[0]))      # the writer's order: LLM first, audio last
    tensors, offset = [], 0
    for name, ty, ne in entries:
        nbytes = ty.nbytes(tuple(reversed(ne)))
        tensors.append(FileTensor(name, ty.name, ty.block_size, ty.type_size, ne, offset, nbytes))
        offset += (nbytes + 31) // 32 * 32
    assert check(tensors, kv, offset) == []
    without = {k: v for k, v in kv.items() if not k.startswith(("audio.", "text."))}
    problems = check(tensors, without, offset)
    assert bool(problems) == real.endswith("1.7b"), problems    # 0.6B shapes are the loader's defaults


def test_mixed_format_directory_round_trip_and_whisper_cpp_refuses_it(tmp_path):
    """A directory with per-tensor formats saves and loads each tensor's own lattice; whisper.cpp's .bin (one weight
    type) refuses it with one line, naming the directory."""
    from test_export_fixtures import random_quantized_dir, real_tokenizer, tiny_whisper
    from tarq.ggml import convert_exact
    from tarq.models import get_family
    from tarq.qmodel import QuantizedTensor, load_quantized_dir, save_quantized_model

    src = load_quantized_dir(random_quantized_dir(tmp_path / "q4", tiny_whisper(), real_tokenizer(), "q4_0", 32))
    name = "model.encoder.layers.0.fc1.weight"
    quantized = dict(src.quantized)
    q4 = quantized[name]
    quantized[name] = QuantizedTensor("q8_0", convert_exact("q4_0", q4.numpy(), q4.shape[1], "q8_0"), q4.shape)
    out = save_quantized_model(tmp_path / "mixed", family="whisper", config=src.config, quantized=quantized,
                               floats=src.floats, meta={"method": "random"})
    back = load_quantized_dir(out)
    assert back.meta["format"] == "q4_0" and not back.uniform and back.types == {"q4_0", "q8_0"}
    assert back.meta["tensor_types"][name] == "q8_0" and back.quantized[name].qtype.name == "q8_0"
    assert torch.equal(back.quantized[name].data, quantized[name].data)
    assert torch.equal(back.quantized[name].dequantize(), q4.dequantize())   # the same values in the wider container
    with pytest.raises(ValueError, match=r"mixed: tensors are quantized to several types \(q4_0, q8_0\)"):
        get_family("whisper").export_target("whisper.cpp").write(back, tmp_path / "m.bin")
    assert not (tmp_path / "m.bin").exists()


@pytest.mark.parametrize("family", ["qwen3_asr", "moonshine"])
def test_rtn_encoder_pins_exactly_the_audio_tower(family, tmp_path):
    """`tarq quantize --encoder rtn`: the audio tower's weights (the family's audio_tower_pattern) carry exactly the
    codes of `--method rtn`; the rest stays calibrated; report.json says which layers were pinned."""
    from pathlib import Path

    from tarq import testing
    from tarq.qmodel import load_quantized_dir

    writer = {"qwen3_asr": testing.write_random_qwen3_asr, "moonshine": testing.write_random_moonshine}[family]
    hf = writer(tmp_path / "hf")
    demo = Path(__file__).resolve().parents[1] / "python" / "tarq" / "demo_data" / "calib"
    common = ["--format", "q4_0", "--n-calib", "1", "--no-progress", "--threads", "1"]
    assert main(["quantize", str(hf), "--method", "rtn", "--out", str(tmp_path / "rtn"), *common]) == 0
    assert main(["quantize", str(hf), "--method", "qep", "--encoder", "rtn", "--calib", str(demo),
                 "--out", str(tmp_path / "enc"), *common]) == 0
    rtn, enc = load_quantized_dir(tmp_path / "rtn"), load_quantized_dir(tmp_path / "enc")
    pinned = {n for n, L in enc.report["layers"].items() if L.get("method") == "rtn"}
    assert pinned and len(pinned) < len(enc.quantized) and set(enc.quantized) == set(rtn.quantized)
    assert enc.report["calibration"]["encoder"] == "rtn"
    tower = {"qwen3_asr": ("model.audio_tower.", "model.multi_modal_projector."), "moonshine": ("model.encoder.",)}
    assert pinned == {n for n in enc.quantized if n.startswith(tower[family])}
    assert all(np.array_equal(enc.quantized[n].numpy(), rtn.quantized[n].numpy()) for n in pinned)
    assert any(not np.array_equal(q.numpy(), rtn.quantized[n].numpy()) for n, q in enc.quantized.items()
               if n not in pinned)
