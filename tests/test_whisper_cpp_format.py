"""whisper.cpp .bin writer/reader on a random tiny Whisper: round trips, layout, validation, bad files."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import torch

from test_export_fixtures import random_quantized_dir, real_tokenizer, tiny_whisper
from tarq.export import whisper_cpp
from tarq.export import whisper_names as names
from tarq.export.ggml_tensor import GgmlTensor
from tarq.ggml import F16, F32
from tarq.export.whisper_cpp import quantize_whisper_file, read_whisper_cpp, validate_for_whisper_cpp, write_whisper_bin
from tarq.export.whisper_export import (checkpoint_to_whisper_file, export_whisper_cpp, float_to_whisper_file,
                                        save_rtn_quantized_dir)
from tarq.qmodel import load_quantized_dir

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok():
    return real_tokenizer()


@pytest.fixture(scope="module")
def model():
    return tiny_whisper(d_model=128)  # 128 so that g=128 groups fit


@pytest.fixture(scope="module")
def qdirs(tmp_path_factory, model, tok):
    root = tmp_path_factory.mktemp("qdirs")
    return {(f, g): random_quantized_dir(root / f"{f}-g{g}", model, tok, f, g, seed=g)
            for f, g in [("q4_0", 32), ("q4_0", 64), ("q4_0", 128), ("q8_0", 32), ("q8_0", 128)]}


ROUND_TRIPS = [("q4_0", 32, "q4_0"), ("q4_0", 64, "q4_0"), ("q4_0", 128, "q4_0"), ("q4_0", 128, "q4_1"),
               ("q4_0", 128, "q5_0"), ("q4_0", 64, "q5_1"), ("q4_0", 32, "q8_0"), ("q8_0", 32, "q8_0"),
               ("q8_0", 128, "q8_0")]


@pytest.mark.parametrize("fmt,g,container", ROUND_TRIPS)
def test_round_trip_bytes_and_exact_weights(tmp_path, qdirs, fmt, g, container):
    ckpt = load_quantized_dir(qdirs[(fmt, g)])
    out = export_whisper_cpp(ckpt, tmp_path / "m.bin", qtype=container)
    mf = read_whisper_cpp(out)
    assert mf.hparams.ftype == 2000 + {"q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q8_0": 7}[container]
    assert mf.wtype.name == container
    sd = ckpt.state_dict()
    for hf, qt in ckpt.quantized.items():
        t = mf.tensors[names.hf_to_cpp(hf)]
        assert t.ggml_type.name == container and t.shape == qt.shape
        if container == fmt:
            assert np.array_equal(t.data, qt.numpy().reshape(-1))    # verbatim
        else:   # same codes in the wider container (offset types: code + 8 or 16, m = -offset * d)
            codes, params = t.decode()
            off = {"q4_1": 8, "q5_1": 16}.get(container, 0)
            assert np.array_equal(codes.astype(np.int16) - off, qt.codes())
        # the weight whisper.cpp computes with equals the directory's dequantized weight exactly
        # (d*q + m can only turn -0.0 into +0.0 where q + offset == offset)
        assert np.array_equal(t.to_float(), sd[hf].numpy()), hf
    for hf, v in ckpt.floats.items():
        cpp = names.hf_to_cpp(hf)
        t = mf.tensors[cpp]
        if names.role(cpp, v.ndim) == "conv":
            assert t.ggml_type is F16 and np.array_equal(t.to_float(), v.numpy().astype(np.float16).astype(np.float32))
        else:
            assert t.ggml_type is F32 and np.array_equal(t.to_float().reshape(v.shape), v.numpy())


def test_header_vocab_and_mel(tmp_path, qdirs, model):
    from transformers import WhisperFeatureExtractor

    mf = read_whisper_cpp(export_whisper_cpp(qdirs[("q4_0", 32)], tmp_path / "m.bin"))
    hp, cfg = mf.hparams, model.config
    assert (hp.n_vocab, hp.n_audio_state, hp.n_audio_head, hp.n_audio_layer, hp.n_text_layer, hp.n_mels) == \
        (cfg.vocab_size, cfg.d_model, cfg.encoder_attention_heads, cfg.encoder_layers, cfg.decoder_layers, 80)
    assert (hp.n_audio_ctx, hp.n_text_ctx) == (cfg.max_source_positions, cfg.max_target_positions)
    assert hp.ftype == 2002 and hp.qntvr == 2
    assert len(mf.vocab) == 50257 and mf.vocab[220] == b" " and mf.vocab[262] == b" the"
    assert mf.vocab[50256] == b"<|endoftext|>"
    # GPT-2 byte tokens: ids 0-93 are '!'..'~', 94 is 0xA1, 188 is byte 0 (bytes_to_unicode order)
    assert (mf.vocab[0], mf.vocab[94], mf.vocab[188]) == (b"!", b"\xa1", b"\x00")
    want = WhisperFeatureExtractor(feature_size=80).mel_filters.T.astype(np.float32)
    assert mf.mel_filters.shape == (80, 201) and np.array_equal(mf.mel_filters, want)
    assert list(mf.tensors) == names.expected_names(hp.n_audio_layer, hp.n_text_layer)
    assert mf.tensors["encoder.conv1.bias"].shape == (cfg.d_model, 1)
    assert not any(n.endswith("attn.key.bias") for n in mf.tensors)


def test_file_layout_first_tensor_record(tmp_path, qdirs):
    path = export_whisper_cpp(qdirs[("q4_0", 32)], tmp_path / "m.bin")
    mf = read_whisper_cpp(path)
    raw = path.read_bytes()
    assert raw[:4] == b"lmgg"
    hdr_len = 4 + 44 + 8 + 4 * 80 * 201 + 4 + sum(4 + len(t) for t in mf.vocab)
    n_dims, name_len, ttype = struct.unpack_from("<3i", raw, hdr_len)
    ne = struct.unpack_from(f"<{n_dims}i", raw, hdr_len + 12)
    name = raw[hdr_len + 12 + 4 * n_dims: hdr_len + 12 + 4 * n_dims + name_len].decode()
    assert (name, ttype, ne) == ("encoder.positional_embedding", 0, (128, 1500))  # dims reversed


def test_float_exports(tmp_path, model, tok):
    sd = model.state_dict()
    for wt in ("f16", "f32"):
        mf = read_whisper_cpp(write_whisper_bin(tmp_path / f"{wt}.bin",
                                                float_to_whisper_file(sd, model.config.to_dict(), tok, wtype=wt)))
        assert mf.hparams.ftype == (1 if wt == "f16" else 0)
        w = sd["model.encoder.layers.0.fc1.weight"].numpy()
        got = mf.tensors["encoder.blocks.0.mlp.0.weight"].to_float()
        assert np.array_equal(got, w.astype(np.float16).astype(np.float32) if wt == "f16" else w)
        assert mf.tensors["encoder.conv2.weight"].ggml_type is (F16 if wt == "f16" else F32)


def test_rtn_export_equals_libggml_on_the_f16_file_and_the_rtn_directory(tmp_path, model, tok):
    """--rtn TYPE == whisper.cpp's quantize: libggml's ggml_quantize_chunk on the F16 file's tensors (the oracle
    is ggml itself via ctypes), whole file byte for byte, for every type that fits d_model 128."""
    from tarq.export.ggml_oracle import find_ggml_base_libs, load_ggml

    if "pywhispercpp" not in find_ggml_base_libs():
        pytest.skip("pywhispercpp's libggml-base not installed")
    oracle = load_ggml("pywhispercpp")
    sd, cfg = model.state_dict(), model.config.to_dict()
    f16 = float_to_whisper_file(sd, cfg, tok, wtype="f16")
    for q in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl"):
        direct = write_whisper_bin(tmp_path / f"{q}.bin", float_to_whisper_file(sd, cfg, tok, wtype=q))
        tool = write_whisper_bin(tmp_path / f"{q}-tool.bin", quantize_whisper_file(f16, q, quantizer=oracle.quantize))
        assert direct.read_bytes() == tool.read_bytes(), q
    qdir = save_rtn_quantized_dir(model, tmp_path / "rtn", "q4_0", save_extras=lambda d: tok.save_pretrained(str(d)))
    via_dir = export_whisper_cpp(qdir, tmp_path / "via-dir.bin")
    assert via_dir.read_bytes() == (tmp_path / "q4_0.bin").read_bytes()


def test_names_round_trip(model):
    for hf in model.state_dict():
        cpp = names.hf_to_cpp(hf)
        if cpp is None:
            assert hf == "proj_out.weight"
        else:
            assert names.cpp_to_hf(cpp) == hf
    with pytest.raises(ValueError, match="no whisper.cpp name"):
        names.hf_to_cpp("model.encoder.layers.0.mystery.weight")


# --------------------------------------------------------------------------- failures and bad input

def test_failed_write_leaves_no_partial_file(tmp_path, qdirs, monkeypatch):
    mf = checkpoint_to_whisper_file(qdirs[("q4_0", 32)])
    out = tmp_path / "m.bin"
    out.write_bytes(b"previous model")
    calls = {"n": 0}
    real = whisper_cpp._write_tensor

    def failing(f, t):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full (injected)")
        real(f, t)

    monkeypatch.setattr(whisper_cpp, "_write_tensor", failing)
    with pytest.raises(OSError, match="injected"):
        write_whisper_bin(out, mf)
    assert calls["n"] == 5
    assert out.read_bytes() == b"previous model"
    assert sorted(os.listdir(tmp_path)) == ["m.bin"]  # no temp file left behind
    monkeypatch.undo()
    (tmp_path / "m.bin").unlink()
    with pytest.raises(OSError, match="injected"):
        monkeypatch.setattr(whisper_cpp, "_write_tensor", failing)
        calls["n"] = 0
        write_whisper_bin(out, mf)
    assert os.listdir(tmp_path) == []


def test_validation_rejects_what_whisper_cpp_rejects(qdirs):
    mf = checkpoint_to_whisper_file(qdirs[("q4_0", 32)])
    emb = mf.tensors[names.TOKEN_EMBEDDING]
    mf.tensors[names.TOKEN_EMBEDDING] = GgmlTensor.from_float(emb.name, emb.to_float(), F16)
    with pytest.raises(ValueError, match="decoder.token_embedding.weight: type f16, whisper.cpp needs q4_0"):
        validate_for_whisper_cpp(mf)
    mf.tensors[names.TOKEN_EMBEDDING] = emb
    del mf.tensors["decoder.ln.bias"]
    mf.tensors["encoder.blocks.0.attn.key.bias"] = GgmlTensor.from_float("encoder.blocks.0.attn.key.bias",
                                                                          np.zeros(128, np.float32), F32)
    with pytest.raises(ValueError, match=r"missing tensors: \['decoder.ln.bias'\].*does not know"):
        validate_for_whisper_cpp(mf)


def test_float_weight_in_quantized_dir_is_an_error(tmp_path, qdirs):
    ckpt = load_quantized_dir(qdirs[("q4_0", 32)])
    hf = "model.decoder.embed_tokens.weight"
    ckpt.floats[hf] = ckpt.quantized.pop(hf).dequantize()
    with pytest.raises(ValueError, match="embed_tokens.weight is a float tensor"):
        checkpoint_to_whisper_file(ckpt)


def test_q8_codes_do_not_fit_q4(tmp_path, qdirs):
    with pytest.raises(ValueError, match="q8_0 codes do not fit q4_0"):
        export_whisper_cpp(qdirs[("q8_0", 32)], tmp_path / "x.bin", qtype="q4_0")
    assert not (tmp_path / "x.bin").exists()


@pytest.fixture(scope="module")
def good_file(tmp_path_factory, qdirs):
    return export_whisper_cpp(qdirs[("q4_0", 32)], tmp_path_factory.mktemp("good") / "m.bin")


def _variant(tmp_path, data: bytes, name="bad.bin"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_reader_bad_magic(tmp_path, good_file):
    raw = good_file.read_bytes()
    with pytest.raises(ValueError, match=r"bad.bin: bad magic 0x12345678"):
        read_whisper_cpp(_variant(tmp_path, struct.pack("<I", 0x12345678) + raw[4:]))
    with pytest.raises(ValueError, match="GGUF file"):
        read_whisper_cpp(_variant(tmp_path, b"GGUF" + raw[4:]))
    with pytest.raises(FileNotFoundError, match="no such model file"):
        read_whisper_cpp(tmp_path / "missing.bin")


@pytest.mark.parametrize("where", ["hparams", "mel", "vocab", "tensor_header", "tensor_data"])
def test_reader_truncated(tmp_path, good_file, where):
    raw = good_file.read_bytes()
    mel_end = 4 + 44 + 8 + 4 * 80 * 201
    cut = {"hparams": 20, "mel": mel_end - 10, "vocab": mel_end + 100, "tensor_header": None,
           "tensor_data": len(raw) - 7}[where]
    if cut is None:
        mf = read_whisper_cpp(good_file)
        cut = mel_end + 4 + sum(4 + len(t) for t in mf.vocab) + 6
    with pytest.raises(ValueError, match="bad.bin: truncated file"):
        read_whisper_cpp(_variant(tmp_path, raw[:cut]))


def test_reader_unknown_type_and_bad_records(tmp_path, good_file):
    raw = bytearray(good_file.read_bytes())
    mf = read_whisper_cpp(good_file)
    first = 4 + 44 + 8 + 4 * 80 * 201 + 4 + sum(4 + len(t) for t in mf.vocab)
    bad_type = bytearray(raw)
    struct.pack_into("<i", bad_type, first + 8, 4)  # ggml type 4 (removed Q4_2)
    with pytest.raises(ValueError, match="'encoder.positional_embedding' has unknown or unsupported ggml type 4"):
        read_whisper_cpp(_variant(tmp_path, bytes(bad_type)))
    bad_dims = bytearray(raw)
    struct.pack_into("<i", bad_dims, first, 7)
    with pytest.raises(ValueError, match="n_dims 7"):
        read_whisper_cpp(_variant(tmp_path, bytes(bad_dims)))
    bad_size = bytearray(raw)
    struct.pack_into("<i", bad_size, first + 12, 129)  # ne[0] 128 -> 129: data no longer lines up
    with pytest.raises(ValueError, match="bad.bin"):
        read_whisper_cpp(_variant(tmp_path, bytes(bad_size)))
    bad_ftype = bytearray(raw)
    struct.pack_into("<i", bad_ftype, 4 + 40, 2005)
    with pytest.raises(ValueError, match="unsupported ftype 2005"):
        read_whisper_cpp(_variant(tmp_path, bytes(bad_ftype)))
    wrong_ftype = bytearray(raw)
    struct.pack_into("<i", wrong_ftype, 4 + 40, 2012)      # the header says Q4_K, the weights are Q4_0
    with pytest.raises(ValueError, match="'encoder.blocks.0.attn.query.weight' is q4_0, but the header's ftype 2012 "
                                         "says every weight is q4_k"):
        read_whisper_cpp(_variant(tmp_path, bytes(wrong_ftype)))
