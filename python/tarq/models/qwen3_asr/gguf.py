"""Qwen3-ASR GGUF in the two runtime dialects, the solver's codes and fp16 scales written verbatim.

* ``crispasr``: CrispStrobe/CrispASR (PyPI ``crispasr``), backend "qwen3". Mirrors models/convert-qwen3-asr-to-gguf.py
  and the loader src/qwen3_asr.cpp (+ crisp_audio/src/audio_tower.cpp for the audio tower) at commit 72d3c389:
  arch ``qwen3asr``, ``qwen3asr.*`` keys, ``audio.conv.N`` / ``audio.blk.N.*`` / ``blk.N.*`` names, Slaney mel filters
  [201, n_mels] and a periodic Hann window, tokenizer ``gpt2`` tokens + merges.
* ``qwen3-asr.cpp``: predict-woo/qwen3-asr.cpp at commit 17725d71. Mirrors scripts/convert_hf_to_gguf.py: arch
  ``qwen3-asr``, llama-style ``qwen3-asr.*`` keys, ``audio.encoder.*`` names. Its loader (src/gguf_loader.cpp) reads
  the audio shapes from *unprefixed* keys its converter never writes (``audio.d_model`` ...; without them it assumes
  the 0.6B shapes), so they are written too; the file is checked against a re-implementation of both of its loaders
  (``cpp_loader.py``) before it is renamed into place.

Types: every quantized weight keeps the type it was quantized to (a Q8_0 audio tower under a Q4_0 LLM is one file);
biases, norms, convolutions, mel filters and unquantized matrices are F32 (exact; both runtimes accept F32 there).
A tied lm_head is written as ``output.weight`` with the token embedding's bytes (CrispASR's converter does the same;
both loaders require ``output.weight``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ...export.gguf_dialect import GgufPlan, bpe_merges, byte_level_vocab, write_plan
from .load import EMBED, LM_HEAD, tied_parameters

# HF -> CrispASR names (convert-qwen3-asr-to-gguf.py DIRECT_HF / AUDIO_SUB / TEXT_SUB)
_CRISP_TOP = {
    "model.audio_tower.conv2d1": "audio.conv.1", "model.audio_tower.conv2d2": "audio.conv.2",
    "model.audio_tower.conv2d3": "audio.conv.3", "model.audio_tower.conv_out": "audio.conv_out",
    "model.audio_tower.ln_post": "audio.ln_post", "model.multi_modal_projector.linear_1": "audio.proj1",
    "model.multi_modal_projector.linear_2": "audio.proj2", "model.language_model.embed_tokens": "token_embd",
    "model.language_model.norm": "output_norm", "lm_head": "output",
}
# predict-woo's converter (TENSOR_MAP; it maps thinker.* checkpoints, whose modules are the same)
_CPP_TOP = {
    "model.audio_tower.conv2d1": "audio.encoder.conv1", "model.audio_tower.conv2d2": "audio.encoder.conv2",
    "model.audio_tower.conv2d3": "audio.encoder.conv3", "model.audio_tower.conv_out": "audio.encoder.conv_out",
    "model.audio_tower.ln_post": "audio.encoder.ln_post", "model.multi_modal_projector.linear_1": "audio.encoder.proj1",
    "model.multi_modal_projector.linear_2": "audio.encoder.proj2", "model.language_model.embed_tokens": "token_embd",
    "model.language_model.norm": "output_norm", "lm_head": "output",
}
_AUDIO_SUB = {"self_attn_layer_norm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.out_proj": "attn_out", "final_layer_norm": "ffn_norm",
              "fc1": "ffn_up", "fc2": "ffn_down"}
_TEXT_SUB = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
             "self_attn.k_norm": "attn_k_norm", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
             "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
_AUDIO_LAYER = re.compile(r"^model\.audio_tower\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_TEXT_LAYER = re.compile(r"^model\.language_model\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_TOP = re.compile(r"^(.+)\.(weight|bias)$")


def gguf_name(hf: str, dialect: str) -> str:
    """The runtime's tensor name for an HF parameter (ValueError for a parameter the runtime has no slot for)."""
    audio_blk = "audio.blk" if dialect == "crispasr" else "audio.encoder.blk"
    m = _AUDIO_LAYER.match(hf)
    if m and m.group(2) in _AUDIO_SUB:
        return f"{audio_blk}.{m.group(1)}.{_AUDIO_SUB[m.group(2)]}.{m.group(3)}"
    m = _TEXT_LAYER.match(hf)
    if m and m.group(2) in _TEXT_SUB:
        return f"blk.{m.group(1)}.{_TEXT_SUB[m.group(2)]}.{m.group(3)}"
    m = _TOP.match(hf)
    top = _CRISP_TOP if dialect == "crispasr" else _CPP_TOP
    if m and m.group(1) in top:
        return f"{top[m.group(1)]}.{m.group(2)}"
    raise ValueError(f"no {dialect} GGUF name for Qwen3-ASR parameter {hf!r}")


def _hparams(config: dict[str, Any]) -> tuple[dict, dict]:
    return config["audio_config"], config["text_config"]


def _rope_theta(text: dict) -> float:
    theta = text.get("rope_theta")
    if theta is None:
        theta = (text.get("rope_parameters") or {}).get("rope_theta", 1e6)
    return float(theta)


def _tokenizer_and_mel(ckpt_dir: Path, n_mels: int):
    from transformers import AutoTokenizer
    from transformers.models.qwen3_asr.feature_extraction_qwen3_asr import Qwen3ASRFeatureExtractor

    tok = AutoTokenizer.from_pretrained(str(ckpt_dir), local_files_only=True)
    fe_file = ckpt_dir / "preprocessor_config.json"
    fe = Qwen3ASRFeatureExtractor.from_pretrained(str(ckpt_dir)) if fe_file.is_file() else \
        Qwen3ASRFeatureExtractor(feature_size=n_mels)
    return tok, fe


def _special(tok, text: str) -> int:
    idx = tok.convert_tokens_to_ids(text)
    if not isinstance(idx, int) or idx < 0 or idx == tok.unk_token_id:
        raise ValueError(f"tokenizer has no {text} token")
    return idx


def _add_tensors(plan: GgufPlan, ckpt, dialect: str, container: str | None) -> None:
    """Every stored parameter under its runtime name; a tied lm_head becomes ``output.weight``."""
    tied = tied_parameters(ckpt.config)
    for hf in sorted(set(ckpt.quantized) | set(ckpt.floats)):
        if hf in tied:
            continue
        name = gguf_name(hf, dialect)
        if hf in ckpt.quantized:
            plan.add_quantized(name, ckpt.quantized[hf], container, source=hf)
        else:
            plan.add_float(name, ckpt.floats[hf].detach().float().numpy(), source=hf)
    if LM_HEAD in tied:
        emb = plan.tensor(gguf_name(EMBED, dialect))
        plan.tensors.append(type(emb)("output.weight", emb.ggml_type, emb.data, emb.shape, source=LM_HEAD))


def _order(plan: GgufPlan, audio_prefix: str, audio_last: bool) -> None:
    """Stable, canonical order: equal content gives equal bytes. qwen3-asr.cpp's audio loader reads every tensor whose
    name matches an audio pattern with *audio* shapes, so LLM tensors go first and the audio tower last (no read past
    the end of the file); the check in cpp_loader.py verifies it."""
    def key(t):
        is_audio = t.name.startswith(audio_prefix) or t.name.startswith("audio.mel")
        blk = re.search(r"\.blk\.(\d+)\.|^blk\.(\d+)\.", t.name)
        layer = int(next(g for g in blk.groups() if g is not None)) if blk else -1
        return (is_audio if audio_last else not is_audio, layer, t.name)
    plan.tensors.sort(key=key)


def _provenance(plan: GgufPlan, ckpt) -> None:
    plan.add("general.name", "str", str(ckpt.meta.get("source_model") or ckpt.path.name))
    plan.add("general.quantization_version", "u32", 2)
    plan.add("tarq.method", "str", str(ckpt.meta.get("method", "unknown")))
    plan.add("tarq.format", "str", str(ckpt.meta.get("format")))   # the most common type (tensors carry their own)
    if ckpt.meta.get("group_size"):
        plan.add("tarq.group_size", "u32", int(ckpt.meta["group_size"]))


def crispasr_plan(ckpt, *, container: str | None = None) -> GgufPlan:
    audio, text = _hparams(ckpt.config)
    tok, fe = _tokenizer_and_mel(Path(ckpt.path), int(audio["num_mel_bins"]))
    plan = GgufPlan("qwen3asr")
    _provenance(plan, ckpt)
    u = lambda k, v: plan.add(f"qwen3asr.{k}", "u32", int(v))  # noqa: E731
    u("sample_rate", fe.sampling_rate)
    u("n_mels", audio["num_mel_bins"])
    u("n_fft", fe.n_fft)
    u("win_length", fe.n_fft)
    u("hop_length", fe.hop_length)
    u("audio.n_layers", audio["encoder_layers"])
    u("audio.d_model", audio["d_model"])
    u("audio.n_heads", audio["encoder_attention_heads"])
    u("audio.head_dim", audio["d_model"] // audio["encoder_attention_heads"])
    u("audio.ff_dim", audio["encoder_ffn_dim"])
    u("audio.conv_channels", audio["downsample_hidden_size"])
    u("audio.proj_dim", audio["output_dim"])
    u("audio.max_source_pos", audio.get("max_source_positions", 1500))   # converter default; only 13 rows are used
    u("n_window", audio["n_window"])
    u("n_window_infer", audio["n_window_infer"])
    u("llm.n_layers", text["num_hidden_layers"])
    u("llm.d_model", text["hidden_size"])
    u("llm.n_heads", text["num_attention_heads"])
    u("llm.n_kv_heads", text["num_key_value_heads"])
    u("llm.head_dim", text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"])
    u("llm.ff_dim", text["intermediate_size"])
    plan.add("qwen3asr.llm.rope_theta", "f32", _rope_theta(text))
    plan.add("qwen3asr.llm.rms_norm_eps", "f32", float(text.get("rms_norm_eps", 1e-6)))
    u("llm.vocab_size", text["vocab_size"])
    u("llm.max_pos", text.get("max_position_embeddings", 65536))
    u("audio_start_token_id", _special(tok, "<|audio_start|>"))
    u("audio_end_token_id", _special(tok, "<|audio_end|>"))
    u("audio_pad_token_id", ckpt.config["audio_token_id"])
    u("eos_token_id", _special(tok, "<|im_end|>"))
    u("pad_token_id", _special(tok, "<|endoftext|>"))
    plan.add("tokenizer.ggml.model", "str", "gpt2")
    plan.add("tokenizer.ggml.tokens", "str_array", byte_level_vocab(tok, int(text["vocab_size"])))
    plan.add("tokenizer.ggml.merges", "str_array", bpe_merges(tok))
    filters = np.asarray(fe.mel_filters, dtype=np.float32)   # [n_fft/2 + 1, n_mels], Slaney (as the converter's)
    plan.add_float("audio.mel_filters", filters)
    n = fe.n_fft
    plan.add_float("audio.mel_window", 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n))   # periodic Hann
    _add_tensors(plan, ckpt, "crispasr", container)
    _order(plan, "audio.", audio_last=False)
    return plan


def qwen3_asr_cpp_plan(ckpt, *, container: str | None = None) -> GgufPlan:
    audio, text = _hparams(ckpt.config)
    tok, _ = _tokenizer_and_mel(Path(ckpt.path), int(audio["num_mel_bins"]))
    arch = "qwen3-asr"
    plan = GgufPlan(arch)
    _provenance(plan, ckpt)
    head_dim = int(text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"])
    u = lambda k, v: plan.add(k, "u32", int(v))  # noqa: E731
    # llama-style keys (convert_hf_to_gguf.py _add_metadata; read by src/text_decoder.cpp parse_config)
    plan.add("general.type", "str", "model")
    u(f"{arch}.block_count", text["num_hidden_layers"])
    u(f"{arch}.embedding_length", text["hidden_size"])
    u(f"{arch}.feed_forward_length", text["intermediate_size"])
    u(f"{arch}.attention.head_count", text["num_attention_heads"])
    u(f"{arch}.attention.head_count_kv", text["num_key_value_heads"])
    u(f"{arch}.attention.key_length", head_dim)
    u(f"{arch}.attention.value_length", head_dim)
    plan.add(f"{arch}.rope.freq_base", "f32", _rope_theta(text))
    plan.add(f"{arch}.attention.layer_norm_rms_epsilon", "f32", float(text.get("rms_norm_eps", 1e-6)))
    u(f"{arch}.vocab_size", text["vocab_size"])
    u(f"{arch}.audio.encoder.layer_count", audio["encoder_layers"])
    u(f"{arch}.audio.encoder.embedding_length", audio["d_model"])
    u(f"{arch}.audio.encoder.attention.head_count", audio["encoder_attention_heads"])
    u(f"{arch}.audio.encoder.feed_forward_length", audio["encoder_ffn_dim"])
    u(f"{arch}.audio.num_mel_bins", audio["num_mel_bins"])
    u(f"{arch}.audio.conv_channels", audio["downsample_hidden_size"])
    u(f"{arch}.audio.start_token_id", _special(tok, "<|audio_start|>"))
    u(f"{arch}.audio.end_token_id", _special(tok, "<|audio_end|>"))
    u(f"{arch}.audio.pad_token_id", ckpt.config["audio_token_id"])
    # the keys src/gguf_loader.cpp parse_hparams actually reads (its converter does not write them)
    u("audio.encoder_layers", audio["encoder_layers"])
    u("audio.d_model", audio["d_model"])
    u("audio.attention_heads", audio["encoder_attention_heads"])
    u("audio.ffn_dim", audio["encoder_ffn_dim"])
    u("audio.conv_channels", audio["downsample_hidden_size"])
    u("audio.conv_out_dim", audio["d_model"])
    u("audio.num_mel_bins", audio["num_mel_bins"])
    u("audio.n_window_infer", audio["n_window_infer"])
    plan.add("audio.layer_norm_eps", "f32", 1e-5)     # nn.LayerNorm default in the transformers encoder
    u("text.hidden_size", text["hidden_size"])
    u("text.decoder_layers", text["num_hidden_layers"])
    u("text.attention_heads", text["num_attention_heads"])
    u("text.num_key_value_heads", text["num_key_value_heads"])
    u("text.intermediate_size", text["intermediate_size"])
    plan.add("text.rms_norm_eps", "f32", float(text.get("rms_norm_eps", 1e-6)))
    tokens = byte_level_vocab(tok, int(text["vocab_size"]))
    plan.add("tokenizer.ggml.model", "str", "gpt2")
    plan.add("tokenizer.ggml.pre", "str", "qwen2")
    plan.add("tokenizer.ggml.tokens", "str_array", tokens)
    # gguf TokenType: 1 normal, 3 control (the converter marks "<|...|>" as control), 5 unused ([PAD n])
    plan.add("tokenizer.ggml.token_type", "i32_array",
             [3 if t.startswith("<|") and t.endswith("|>") else 5 if t.startswith("[PAD") else 1 for t in tokens])
    plan.add("tokenizer.ggml.merges", "str_array", bpe_merges(tok))
    u("tokenizer.ggml.eos_token_id", _special(tok, "<|im_end|>"))
    u("tokenizer.ggml.padding_token_id", _special(tok, "<|endoftext|>"))
    _add_tensors(plan, ckpt, "qwen3-asr.cpp", container)
    _order(plan, "audio.encoder.", audio_last=True)
    return plan


def _load(ckpt):
    from ...qmodel import QuantizedCheckpoint, load_quantized_dir

    ckpt = ckpt if isinstance(ckpt, QuantizedCheckpoint) else load_quantized_dir(ckpt)
    if ckpt.family != "qwen3_asr":
        raise ValueError(f"{ckpt.path}: family {ckpt.family!r} is not Qwen3-ASR")
    return ckpt


def write_crispasr(ckpt, out_path, *, qtype: str | None = None) -> Path:
    return write_plan(crispasr_plan(_load(ckpt), container=qtype), out_path)


def write_qwen3_asr_cpp(ckpt, out_path, *, qtype: str | None = None) -> Path:
    from .cpp_loader import check_file

    return write_plan(qwen3_asr_cpp_plan(_load(ckpt), container=qtype), out_path,
                      validate=lambda plan, path: check_file(path))
