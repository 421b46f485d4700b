"""Hugging Face Whisper parameter names <-> whisper.cpp tensor names, and each tensor's storage role.

Mapping as in whisper.cpp's models/convert-h5-to-ggml.py (formats.md §1.5): strip ``model.``,
``layers`` -> ``blocks``, then the sub-module renames below. ``proj_out.weight`` is tied to the token
embedding and not stored. whisper.cpp has no ``attn.key.bias`` (HF's k_proj has no bias either).

Roles (what whisper.cpp's loader expects, formats.md §1.3):
  "weight"  every Linear weight and ``decoder.token_embedding.weight``: the model's one weight type
  "conv"    3-D conv kernels: F16 (F32 only in an all-F32 model)
  "f32"     biases, layer norms, positional embeddings
"""
from __future__ import annotations

import re

from ..models.whisper.names import TIED

_BLOCK_SUBS = {
    "self_attn.q_proj": "attn.query",
    "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query",
    "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value",
    "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "fc1": "mlp.0",
    "fc2": "mlp.2",
    "final_layer_norm": "mlp_ln",
}
_TOP = {
    "encoder.conv1.weight": "encoder.conv1.weight",
    "encoder.conv1.bias": "encoder.conv1.bias",
    "encoder.conv2.weight": "encoder.conv2.weight",
    "encoder.conv2.bias": "encoder.conv2.bias",
    "encoder.embed_positions.weight": "encoder.positional_embedding",
    "encoder.layer_norm.weight": "encoder.ln_post.weight",
    "encoder.layer_norm.bias": "encoder.ln_post.bias",
    "decoder.embed_tokens.weight": "decoder.token_embedding.weight",
    "decoder.embed_positions.weight": "decoder.positional_embedding",
    "decoder.layer_norm.weight": "decoder.ln.weight",
    "decoder.layer_norm.bias": "decoder.ln.bias",
}
_TOP_INV = {v: k for k, v in _TOP.items()}
_BLOCK_INV = {v: k for k, v in _BLOCK_SUBS.items()}
_HF_LAYER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_CPP_LAYER = re.compile(r"^(encoder|decoder)\.blocks\.(\d+)\.(.+)\.(weight|bias)$")

# HF names that are not stored in a whisper.cpp file: the tied output projection (one definition, in the family)
SKIPPED = tuple(TIED)

TOKEN_EMBEDDING = "decoder.token_embedding.weight"


def hf_to_cpp(hf_name: str) -> str | None:
    """whisper.cpp name for a HF parameter, or None for a parameter whisper.cpp does not store."""
    name = hf_name[len("model."):] if hf_name.startswith("model.") else hf_name
    if name in SKIPPED:
        return None
    if name in _TOP:
        return _TOP[name]
    m = _HF_LAYER.match(name)
    if m and m.group(3) in _BLOCK_SUBS:
        side, i, sub, kind = m.groups()
        return f"{side}.blocks.{i}.{_BLOCK_SUBS[sub]}.{kind}"
    raise ValueError(f"no whisper.cpp name for parameter {hf_name!r}")


def cpp_to_hf(cpp_name: str) -> str:
    if cpp_name in _TOP_INV:
        return "model." + _TOP_INV[cpp_name]
    m = _CPP_LAYER.match(cpp_name)
    if m and m.group(3) in _BLOCK_INV:
        side, i, sub, kind = m.groups()
        return f"model.{side}.layers.{i}.{_BLOCK_INV[sub]}.{kind}"
    raise ValueError(f"unknown whisper.cpp tensor name {cpp_name!r}")


def role(cpp_name: str, ndim: int) -> str:
    """"weight" (model weight type), "conv" (F16) or "f32" for a whisper.cpp tensor."""
    if cpp_name in ("encoder.conv1.weight", "encoder.conv2.weight"):
        return "conv"
    if cpp_name.endswith(".weight") and ndim == 2 and "positional" not in cpp_name:
        return "weight"
    return "f32"


def is_unstorable_key_bias(hf_name: str) -> bool:
    """HF k_proj has no bias; some converters add an all-zero one that whisper.cpp would reject."""
    return hf_name.endswith("k_proj.bias")


def expected_names(n_audio_layer: int, n_text_layer: int) -> list[str]:
    """Every tensor whisper.cpp's loader requires, in the order convert-h5-to-ggml writes them."""
    names = ["encoder.positional_embedding", "encoder.conv1.weight", "encoder.conv1.bias",
             "encoder.conv2.weight", "encoder.conv2.bias"]
    for i in range(n_audio_layer):
        b = f"encoder.blocks.{i}"
        names += [f"{b}.attn.query.weight", f"{b}.attn.query.bias", f"{b}.attn.key.weight",
                  f"{b}.attn.value.weight", f"{b}.attn.value.bias", f"{b}.attn.out.weight", f"{b}.attn.out.bias",
                  f"{b}.attn_ln.weight", f"{b}.attn_ln.bias", f"{b}.mlp.0.weight", f"{b}.mlp.0.bias",
                  f"{b}.mlp.2.weight", f"{b}.mlp.2.bias", f"{b}.mlp_ln.weight", f"{b}.mlp_ln.bias"]
    names += ["encoder.ln_post.weight", "encoder.ln_post.bias",
              "decoder.positional_embedding", TOKEN_EMBEDDING]
    for i in range(n_text_layer):
        b = f"decoder.blocks.{i}"
        for a in ("attn", "cross_attn"):
            names += [f"{b}.{a}.query.weight", f"{b}.{a}.query.bias", f"{b}.{a}.key.weight",
                      f"{b}.{a}.value.weight", f"{b}.{a}.value.bias", f"{b}.{a}.out.weight", f"{b}.{a}.out.bias",
                      f"{b}.{a}_ln.weight", f"{b}.{a}_ln.bias"]
        names += [f"{b}.mlp.0.weight", f"{b}.mlp.0.bias", f"{b}.mlp.2.weight", f"{b}.mlp.2.bias",
                  f"{b}.mlp_ln.weight", f"{b}.mlp_ln.bias"]
    names += ["decoder.ln.weight", "decoder.ln.bias"]
    return names
