"""Moonshine GGUF in CrispASR's ``moonshine`` dialect, the solver's codes and fp16 scales written verbatim, plus the
``tokenizer.bin`` CrispASR loads from the model's directory.

Mirrors CrispStrobe/CrispASR models/convert-moonshine-to-gguf.py and the loader src/moonshine.cpp
(moonshine_init_with_params) at commit 72d3c389: arch ``moonshine``; keys ``moonshine.{encoder,decoder}.*``,
``moonshine.{vocab_size,bos_token_id,eos_token_id}``, ``moonshine.attention.layer_norm_epsilon``,
``moonshine.rope.freq_base``, ``moonshine.encoder.conv{1,2,3}.{kernel_size,stride}``; tensors ``encoder.conv*``,
``encoder.groupnorm.*``, ``encoder.layers.N.*``, ``encoder.output_norm.weight``, ``decoder.embed_tokens.weight``,
``decoder.output_norm.weight``, ``decoder.layers.N.*``. The tied proj_out is not written: the loader uses
decoder.embed_tokens when decoder.output.weight is absent. The runtime takes the head count of both stacks from the
encoder keys and one hidden size, so encoder and decoder must agree (true of every released Moonshine).

tokenizer.bin (moonshine-tokenizer.cpp ``moonshine_tokenizer::load``): for each id, the token's UTF-8 bytes
prefixed by their length (one byte below 128, else two: ``len % 128 + 128``, ``len // 128``; an empty token is a
single 0 byte). Written atomically; an existing different tokenizer.bin in the same folder is an error.
"""
from __future__ import annotations

import re
from pathlib import Path


from ..._atomic import atomic_write
from ...export.gguf_dialect import GgufPlan, write_plan
from .load import tied_parameters

_TOP = {"model.encoder.conv1": "encoder.conv1", "model.encoder.conv2": "encoder.conv2",
        "model.encoder.conv3": "encoder.conv3", "model.encoder.groupnorm": "encoder.groupnorm",
        "model.encoder.layer_norm": "encoder.output_norm", "model.decoder.embed_tokens": "decoder.embed_tokens",
        "model.decoder.norm": "decoder.output_norm", "proj_out": "decoder.output"}
_ENC = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn.q", "self_attn.k_proj": "attn.k",
        "self_attn.v_proj": "attn.v", "self_attn.o_proj": "attn.o", "post_attention_layernorm": "ffn_norm",
        "mlp.fc1": "ffn.fc1", "mlp.fc2": "ffn.fc2"}
_DEC = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn.q", "self_attn.k_proj": "attn.k",
        "self_attn.v_proj": "attn.v", "self_attn.o_proj": "attn.o", "post_attention_layernorm": "cross_attn_norm",
        "encoder_attn.q_proj": "cross_attn.q", "encoder_attn.k_proj": "cross_attn.k",
        "encoder_attn.v_proj": "cross_attn.v", "encoder_attn.o_proj": "cross_attn.o",
        "final_layernorm": "ffn_norm", "mlp.fc1": "ffn.fc1", "mlp.fc2": "ffn.fc2"}
_LAYER = re.compile(r"^model\.(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_PARAM = re.compile(r"^(.+)\.(weight|bias)$")


def gguf_name(hf: str) -> str:
    m = _LAYER.match(hf)
    if m:
        table = _ENC if m.group(1) == "encoder" else _DEC
        if m.group(3) in table:
            return f"{m.group(1)}.layers.{m.group(2)}.{table[m.group(3)]}.{m.group(4)}"
    m = _PARAM.match(hf)
    if m and m.group(1) in _TOP:
        return f"{_TOP[m.group(1)]}.{m.group(2)}"
    raise ValueError(f"no CrispASR moonshine name for parameter {hf!r}")


def tokenizer_bin(tokenizer, vocab_size: int) -> bytes:
    """CrispASR's tokenizer.bin (convert-moonshine-to-gguf.py convert_tokenizer), ids 0..vocab_size-1."""
    pieces = [b""] * max(vocab_size, max(tokenizer.get_vocab().values()) + 1)
    for piece, idx in tokenizer.get_vocab().items():
        pieces[idx] = piece.encode("utf-8")
    out = bytearray()
    for b in pieces:
        n = len(b)
        if n == 0:
            out += b"\x00"
        elif n < 128:
            out += bytes([n]) + b
        elif n < 128 * 256:
            out += bytes([n % 128 + 128, n // 128]) + b
        else:
            raise ValueError(f"token of {n} bytes does not fit tokenizer.bin's length field")
    return bytes(out)


def crispasr_plan(ckpt, *, container: str | None = None) -> GgufPlan:
    from transformers import MoonshineConfig

    cfg = MoonshineConfig.from_dict({k: v for k, v in ckpt.config.items() if k not in ("transformers_version",)})
    if (cfg.encoder_num_attention_heads, cfg.encoder_num_key_value_heads) != (
            cfg.decoder_num_attention_heads, cfg.decoder_num_key_value_heads):
        raise ValueError(f"{ckpt.path}: CrispASR's moonshine runtime uses the encoder's head counts for the decoder "
                         f"too; this model has different ones")
    rope = cfg.rope_parameters or {}
    plan = GgufPlan("moonshine")
    plan.add("general.name", "str", str(ckpt.meta.get("source_model") or ckpt.path.name))
    plan.add("general.quantization_version", "u32", 2)
    plan.add("tarq.method", "str", str(ckpt.meta.get("method", "unknown")))
    plan.add("tarq.format", "str", str(ckpt.meta.get("format")))   # the most common type (tensors carry their own)
    if ckpt.meta.get("group_size"):
        plan.add("tarq.group_size", "u32", int(ckpt.meta["group_size"]))
    u = lambda k, v: plan.add(f"moonshine.{k}", "u32", int(v))  # noqa: E731
    for side, layers, heads, kv in (
            ("encoder", cfg.encoder_num_hidden_layers, cfg.encoder_num_attention_heads, cfg.encoder_num_key_value_heads),
            ("decoder", cfg.decoder_num_hidden_layers, cfg.decoder_num_attention_heads, cfg.decoder_num_key_value_heads)):
        u(f"{side}.embedding_length", cfg.hidden_size)
        u(f"{side}.block_count", layers)
        u(f"{side}.attention.head_count", heads)
        u(f"{side}.attention.head_count_kv", kv)
        u(f"{side}.feed_forward_length", cfg.intermediate_size)
    u("vocab_size", cfg.vocab_size)
    u("bos_token_id", cfg.decoder_start_token_id)
    u("eos_token_id", cfg.eos_token_id)
    plan.add("moonshine.attention.layer_norm_epsilon", "f32", 1e-5)    # nn.LayerNorm / GroupNorm default eps
    plan.add("moonshine.rope.freq_base", "f32", float(rope.get("rope_theta", 10000.0)))
    prf = float(rope.get("partial_rotary_factor", 0.9))
    plan.add("moonshine.encoder.partial_rotary_factor", "f32", prf)
    plan.add("moonshine.decoder.partial_rotary_factor", "f32", prf)
    for i, (k, s) in enumerate(((127, 64), (7, 3), (3, 2)), start=1):   # MoonshineEncoder's conv stem
        u(f"encoder.conv{i}.kernel_size", k)
        u(f"encoder.conv{i}.stride", s)
    tied = tied_parameters(ckpt.config)
    for hf in sorted(set(ckpt.quantized) | set(ckpt.floats)):
        if hf in tied:
            continue
        if hf in ckpt.quantized:
            plan.add_quantized(gguf_name(hf), ckpt.quantized[hf], container, source=hf)
        else:
            plan.add_float(gguf_name(hf), ckpt.floats[hf].detach().float().numpy(), source=hf)
    return plan


def write_crispasr(ckpt, out_path, *, qtype: str | None = None) -> Path:
    from transformers import AutoTokenizer

    from ...qmodel import QuantizedCheckpoint, load_quantized_dir

    ckpt = ckpt if isinstance(ckpt, QuantizedCheckpoint) else load_quantized_dir(ckpt)
    if ckpt.family != "moonshine":
        raise ValueError(f"{ckpt.path}: family {ckpt.family!r} is not Moonshine")
    out_path = Path(out_path)
    tok = AutoTokenizer.from_pretrained(str(ckpt.path), local_files_only=True)
    tok_bytes = tokenizer_bin(tok, int(ckpt.config["vocab_size"]))
    tok_file = out_path.parent / "tokenizer.bin"
    if tok_file.exists() and tok_file.read_bytes() != tok_bytes:
        raise ValueError(f"{tok_file}: exists with another vocabulary (CrispASR reads the tokenizer.bin beside the "
                         f"model, so two Moonshine models with different tokenizers cannot share a folder)")
    plan = crispasr_plan(ckpt, container=qtype)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if not tok_file.exists():
        with atomic_write(tok_file) as f:
            f.write(tok_bytes)
    return write_plan(plan, out_path)


__all__ = ["crispasr_plan", "gguf_name", "tokenizer_bin", "write_crispasr"]
