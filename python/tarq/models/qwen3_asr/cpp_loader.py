"""A structural check of a GGUF file against predict-woo/qwen3-asr.cpp's loaders, re-implemented from its source.

Source read: github.com/predict-woo/qwen3-asr.cpp at commit 17725d717a57bf6b46c4c164c5ca6ca5e9f268e3 (2026-02-06):
``src/gguf_loader.cpp`` (``GGUFLoader::parse_hparams`` / ``create_tensors`` / ``load_tensor_data``: the audio encoder)
and ``src/text_decoder.cpp`` (``TextDecoder::parse_config`` / ``create_tensors`` / ``load_tensor_data`` /
``load_vocab``). Building that runtime here is not practical (source only; its ggml submodule is not vendored), so
this module replays what those functions do with a file and reports what would go wrong:

* Neither loader takes a tensor's shape from the file. Each creates it from hyper-parameters by matching the name with
  ``strstr`` (first match wins, in the order below), then reads ``ggml_nbytes`` of *that* shape from the tensor's
  offset. A tensor whose file shape differs is silently mis-read; one that would read past the end of the file
  fails to load. The audio loader does this for *every* tensor in the file, LLM tensors included.
* The audio loader reads its hyper-parameters from unprefixed keys (``audio.d_model`` ...), defaulting to the 0.6B
  values; the text decoder from ``qwen3-asr.*`` keys. ``gguf_get_val_u32`` / ``_f32`` abort on a key of another type.
* ``ggml_new_tensor`` aborts when a quantized tensor's ``ne[0]`` is not a multiple of its block size.
* A slot the model needs but the file lacks stays NULL and is skipped or dereferenced at inference.

``check_file(path)`` raises ``ValueError`` listing every problem; tarq's exporter runs it before renaming a written
file into place.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UPSTREAM = "predict-woo/qwen3-asr.cpp@17725d717a57bf6b46c4c164c5ca6ca5e9f268e3"

# parse_hparams (gguf_loader.cpp:50-84): key, kind, default
AUDIO_KEYS = {"audio.encoder_layers": ("u32", 18), "audio.d_model": ("u32", 896), "audio.attention_heads": ("u32", 14),
              "audio.ffn_dim": ("u32", 3584), "audio.conv_channels": ("u32", 480), "audio.conv_out_dim": ("u32", 896),
              "audio.num_mel_bins": ("u32", 128), "audio.n_window_infer": ("u32", 800),
              "audio.layer_norm_eps": ("f32", 1e-5), "text.hidden_size": ("u32", 1024),
              "text.decoder_layers": ("u32", 28), "text.attention_heads": ("u32", 16),
              "text.num_key_value_heads": ("u32", 8), "text.intermediate_size": ("u32", 3072),
              "text.rms_norm_eps": ("f32", 1e-6)}
# parse_config (text_decoder.cpp:94-121)
TEXT_KEYS = {"qwen3-asr.vocab_size": ("u32", 151936), "qwen3-asr.embedding_length": ("u32", 1024),
             "qwen3-asr.block_count": ("u32", 28), "qwen3-asr.attention.head_count": ("u32", 16),
             "qwen3-asr.attention.head_count_kv": ("u32", 8), "qwen3-asr.feed_forward_length": ("u32", 3072),
             "qwen3-asr.attention.key_length": ("u32", 128),
             "qwen3-asr.attention.layer_norm_rms_epsilon": ("f32", 1e-6), "qwen3-asr.rope.freq_base": ("f32", 1e6),
             "qwen3-asr.audio.start_token_id": ("u32", 151669), "qwen3-asr.audio.end_token_id": ("u32", 151670),
             "qwen3-asr.audio.pad_token_id": ("u32", 151676)}

AUDIO_LAYER_SLOTS = ("attn_q.weight", "attn_q.bias", "attn_k.weight", "attn_k.bias", "attn_v.weight", "attn_v.bias",
                     "attn_out.weight", "attn_out.bias", "attn_norm.weight", "attn_norm.bias", "ffn_up.weight",
                     "ffn_up.bias", "ffn_down.weight", "ffn_down.bias", "ffn_norm.weight", "ffn_norm.bias")
AUDIO_TOP_SLOTS = ("encoder.conv1.weight", "encoder.conv1.bias", "encoder.conv2.weight", "encoder.conv2.bias",
                   "encoder.conv3.weight", "encoder.conv3.bias", "encoder.conv_out.weight", "encoder.ln_post.weight",
                   "encoder.ln_post.bias", "encoder.proj1.weight", "encoder.proj1.bias", "encoder.proj2.weight",
                   "encoder.proj2.bias")
TEXT_LAYER_SLOTS = ("attn_norm.weight", "attn_q_norm.weight", "attn_k_norm.weight", "attn_q.weight", "attn_k.weight",
                    "attn_v.weight", "attn_output.weight", "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight",
                    "ffn_down.weight")


@dataclass(frozen=True)
class FileTensor:
    name: str
    type_name: str
    block_size: int
    type_size: int
    ne: tuple[int, ...]          # as stored in the file (ggml order)
    offset: int                  # absolute file offset of the data
    nbytes: int


def _nbytes(ne, block_size, type_size) -> int:
    n = 1
    for d in ne:
        n *= d
    return n // block_size * type_size


def _audio_shape(name: str, t: FileTensor, hp: dict[str, Any]) -> tuple[int, ...]:
    """GGUFLoader::create_tensors (gguf_loader.cpp:122-183), strstr order preserved."""
    d, c, ffn, th = hp["audio.d_model"], hp["audio.conv_channels"], hp["audio.ffn_dim"], hp["text.hidden_size"]
    has = name.__contains__
    if has("encoder.conv1.weight"):
        return (3, 3, 1, c)
    if has("encoder.conv2.weight") or has("encoder.conv3.weight"):
        return (3, 3, c, c)
    if has("encoder.conv1.bias") or has("encoder.conv2.bias") or has("encoder.conv3.bias"):
        return (c,)
    if has("encoder.conv_out.weight"):
        return (c * 16, d)
    if any(has(f"attn_{p}.weight") for p in ("q", "k", "v", "out")):
        return (d, d)
    if any(has(f"attn_{p}.bias") for p in ("q", "k", "v", "out")) or has("attn_norm.weight") or has("attn_norm.bias"):
        return (d,)
    if has("ffn_up.weight"):
        return (d, ffn)
    if has("ffn_down.weight"):
        return (ffn, d)
    if has("ffn_up.bias"):
        return (ffn,)
    if has("ffn_down.bias") or has("ffn_norm.weight") or has("ffn_norm.bias"):
        return (d,)
    if has("ln_post.weight") or has("ln_post.bias"):
        return (d,)
    if has("encoder.proj1.weight"):
        return (d, d)
    if has("encoder.proj1.bias"):
        return (d,)
    if has("encoder.proj2.weight"):
        return (d, th)
    if has("encoder.proj2.bias"):
        return (th,)
    return (t.nbytes * t.block_size // t.type_size,)


def _text_shape(name: str, hp: dict[str, Any]) -> tuple[int, ...] | None:
    """TextDecoder::create_tensors (text_decoder.cpp:144-205); None: not created."""
    h, v, nh, nkv = hp["qwen3-asr.embedding_length"], hp["qwen3-asr.vocab_size"], \
        hp["qwen3-asr.attention.head_count"], hp["qwen3-asr.attention.head_count_kv"]
    hd, ff = hp["qwen3-asr.attention.key_length"], hp["qwen3-asr.feed_forward_length"]
    has = name.__contains__
    if has("audio.encoder"):
        return None
    table = (("token_embd.weight", (h, v)), ("output_norm.weight", (h,)), ("attn_output.weight", (nh * hd, h)),
             ("output.weight", (h, v)), ("attn_norm.weight", (h,)), ("attn_q_norm.weight", (hd,)),
             ("attn_k_norm.weight", (hd,)), ("attn_q.weight", (h, nh * hd)), ("attn_k.weight", (h, nkv * hd)),
             ("attn_v.weight", (h, nkv * hd)), ("ffn_norm.weight", (h,)), ("ffn_gate.weight", (h, ff)),
             ("ffn_up.weight", (h, ff)), ("ffn_down.weight", (ff, h)))
    for pattern, shape in table:
        if has(pattern):
            return shape
    return None


def _hparams(kv: dict[str, tuple[str, Any]], table, problems: list[str]) -> dict[str, Any]:
    out = {}
    for key, (kind, default) in table.items():
        if key not in kv:
            out[key] = default
            continue
        have, value = kv[key]
        if have != kind:
            problems.append(f"key {key} is {have}; the loader reads it with gguf_get_val_{kind} (aborts)")
        out[key] = value
    return out


def check(tensors: list[FileTensor], kv: dict[str, tuple[str, Any]], file_size: int) -> list[str]:
    """Problems the two loaders would have with a file holding ``tensors`` and ``kv`` (empty list: loads)."""
    problems: list[str] = []
    ahp = _hparams(kv, AUDIO_KEYS, problems)
    thp = _hparams(kv, TEXT_KEYS, problems)
    by_name = {t.name: t for t in tensors}
    for loader, shape_of in (("audio loader (gguf_loader.cpp)", lambda t: _audio_shape(t.name, t, ahp)),
                             ("text decoder (text_decoder.cpp)", lambda t: _text_shape(t.name, thp))):
        for t in tensors:
            ne = shape_of(t)
            if ne is None:
                continue
            if ne[0] % t.block_size:
                problems.append(f"{loader}: {t.name} is created {t.type_name} with ne[0]={ne[0]}, not a multiple of "
                                f"{t.block_size} (ggml aborts)")
                continue
            if t.offset + _nbytes(ne, t.block_size, t.type_size) > file_size:
                problems.append(f"{loader}: reading {t.name} as ne={list(ne)} runs past the end of the file")
    # every slot the model needs is present and has the shape the loader creates it with
    need = [f"audio.{s}" for s in AUDIO_TOP_SLOTS] + [
        f"audio.encoder.blk.{i}.{s}" for i in range(ahp["audio.encoder_layers"]) for s in AUDIO_LAYER_SLOTS]
    for slot in need:
        t = by_name.get(slot)
        if t is None:
            problems.append(f"audio loader: no tensor {slot}")
        elif tuple(t.ne) != _audio_shape(slot, t, ahp):
            problems.append(f"audio loader: {slot} is ne={list(t.ne)} in the file but is read as "
                            f"ne={list(_audio_shape(slot, t, ahp))} (hparams from the audio.* keys)")
    text_need = ["token_embd.weight", "output_norm.weight", "output.weight"] + [
        f"blk.{i}.{s}" for i in range(thp["qwen3-asr.block_count"]) for s in TEXT_LAYER_SLOTS]
    for name in text_need:
        t = by_name.get(name)
        if t is None:
            problems.append(f"text decoder: no tensor {name}")
        elif tuple(t.ne) != _text_shape(name, thp):
            problems.append(f"text decoder: {name} is ne={list(t.ne)} in the file but is read as "
                            f"ne={list(_text_shape(name, thp))} (hparams from the qwen3-asr.* keys)")
    extra_layers = sorted({int(m.group(1)) for t in tensors if (m := re.match(r"blk\.(\d+)\.", t.name))
                           and int(m.group(1)) >= thp["qwen3-asr.block_count"]})
    if extra_layers:
        problems.append(f"text decoder: layers {extra_layers} exist but qwen3-asr.block_count says "
                        f"{thp['qwen3-asr.block_count']}")
    if not kv.get("tokenizer.ggml.tokens", ("", []))[1]:
        problems.append("text decoder: tokenizer.ggml.tokens missing or empty (load_vocab fails)")
    return problems


_KINDS = {"UINT32": "u32", "FLOAT32": "f32", "INT32": "i32", "STRING": "str", "BOOL": "bool", "UINT64": "u64"}


def read_file(path: str | os.PathLike) -> tuple[list[FileTensor], dict[str, tuple[str, Any]], int]:
    import gguf

    from ...ggml import get_type

    r = gguf.GGUFReader(str(path))
    kv = {}
    for key, f in r.fields.items():
        kind = _KINDS.get(f.types[0].name, f.types[0].name.lower()) if f.types else "?"
        if kind == "array":
            kv[key] = (kind, list(f.contents()))
        else:
            try:
                kv[key] = (kind, f.contents())
            except Exception:  # noqa: BLE001 - unusual field kinds: keep the type, the value does not matter here
                kv[key] = (kind, None)
    tensors = []
    for t in r.tensors:
        try:
            gt = get_type(int(t.tensor_type))
        except ValueError:
            gt = None
        if gt is None:
            raise ValueError(f"{path}: tensor {t.name} has a ggml type tarq does not know ({t.tensor_type!r})")
        tensors.append(FileTensor(t.name, gt.name, gt.block_size, gt.type_size, tuple(int(x) for x in t.shape),
                                  int(t.data_offset), int(t.n_bytes)))
    return tensors, kv, Path(path).stat().st_size


def check_file(path: str | os.PathLike) -> None:
    """Raise ValueError listing what qwen3-asr.cpp's loaders would get wrong with this file."""
    problems = check(*read_file(path))
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"{path}: would not load in {UPSTREAM}: " + "; ".join(problems[:5]) + more)
