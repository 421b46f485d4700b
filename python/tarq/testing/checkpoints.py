"""Small randomly initialised checkpoints with the real releases' layout, written as ordinary Hugging Face
directories (config.json, model.safetensors, tokenizer, preprocessor config), so tests exercise the same loaders,
adapters and exporters a real checkpoint goes through.

No Qwen3-ASR or Moonshine weights are installable on the machines tarq is developed on. These models keep every
structural feature of the real ones (module tree, biases, GQA, q/k norms, partial RoPE, tied embeddings, conv
front-ends, 128 mel bins, the special tokens and the prompt) and scale the widths and depths down:

================  =========================================  ====================================
                  real (``REAL_CONFIGS``)                    tiny (``write_random_*``)
================  =========================================  ====================================
Qwen3-ASR 0.6B    audio 18 L x 896 (14 heads, ffn 3584,      audio 2 L x 64 (2 heads, ffn 256,
                  conv 480), LLM 28 L x 1024 (16/8 heads,    conv 32), LLM 2 L x 64 (2/1 heads,
                  head_dim 128, ffn 3072), vocab 151936      head_dim 32, ffn 192), vocab ~700
Moonshine tiny    6+6 L x 288 (8 heads, ffn 1152),           2+2 L x 64 (2 heads, ffn 256),
                  vocab 32768                                vocab ~512
================  =========================================  ====================================

Weights are drawn by transformers' own initialisation with ``initializer_range = 0.2`` (the releases' configs say
0.02): at 0.02 a tiny random decoder emits one constant token whatever the audio, at 0.2 its greedy output depends
on the input, which makes runtime-vs-PyTorch decoding comparisons discriminating.

The tokenizers are trained (deterministically) on the bundled demo transcripts: a byte-level BPE with Qwen2's
pre-tokenizer and Qwen3-ASR's special tokens, and a byte-fallback "▁" BPE like Moonshine's. Each checkpoint is
a few hundred kB.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .tokenizers import moonshine_tokenizer, qwen3_asr_tokenizer

# The released configurations the tiny models are scaled from (structure identical; used by shape-only tests).
REAL_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen3_asr-0.6b": {
        "audio": dict(num_mel_bins=128, encoder_layers=18, encoder_attention_heads=14, encoder_ffn_dim=3584,
                      d_model=896, downsample_hidden_size=480, output_dim=1024, n_window=50, n_window_infer=800),
        "text": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936, rope_theta=1e6, rms_norm_eps=1e-6,
                     max_position_embeddings=65536, tie_word_embeddings=True),
        "audio_token_id": 151676},
    "qwen3_asr-1.7b": {
        "audio": dict(num_mel_bins=128, encoder_layers=24, encoder_attention_heads=16, encoder_ffn_dim=4096,
                      d_model=1024, downsample_hidden_size=480, output_dim=2048, n_window=50, n_window_infer=800),
        "text": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936, rope_theta=1e6, rms_norm_eps=1e-6,
                     max_position_embeddings=65536, tie_word_embeddings=True),
        "audio_token_id": 151676},
    "moonshine-tiny": dict(vocab_size=32768, hidden_size=288, intermediate_size=1152, encoder_num_hidden_layers=6,
                           decoder_num_hidden_layers=6, encoder_num_attention_heads=8, decoder_num_attention_heads=8,
                           max_position_embeddings=512, partial_rotary_factor=0.9),
    "moonshine-base": dict(vocab_size=32768, hidden_size=416, intermediate_size=1664, encoder_num_hidden_layers=8,
                           decoder_num_hidden_layers=8, encoder_num_attention_heads=8, decoder_num_attention_heads=8,
                           max_position_embeddings=512, partial_rotary_factor=0.9),
}


TEST_INIT_RANGE = 0.2


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def qwen3_asr_config(real: str = "qwen3_asr-0.6b", *, vocab_size: int | None = None, audio_token_id: int | None = None,
                     tiny: bool = True, **special_ids):
    """A ``Qwen3ASRConfig``: the real one, or (``tiny``) its scaled-down twin with the given vocabulary."""
    from transformers import Qwen3ASRConfig

    ref = REAL_CONFIGS[real]
    audio, text = dict(ref["audio"]), dict(ref["text"])
    if tiny:
        audio.update(encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=256, d_model=64,
                     downsample_hidden_size=32, output_dim=64)
        text.update(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=32, max_position_embeddings=4096)
    if vocab_size is not None:
        text["vocab_size"] = vocab_size
    audio["max_position_embeddings"] = 13      # sinusoid rows per 100-frame chunk (the encoder uses 13)
    if tiny:
        audio["initializer_range"] = text["initializer_range"] = TEST_INIT_RANGE
    return Qwen3ASRConfig(audio_config={"model_type": "qwen3_asr_encoder", **audio},
                          text_config={"model_type": "qwen3", **text}, initializer_range=TEST_INIT_RANGE if tiny else 0.02,
                          audio_token_id=audio_token_id if audio_token_id is not None else ref["audio_token_id"],
                          tie_word_embeddings=text["tie_word_embeddings"], **special_ids)


def write_random_qwen3_asr(out: str | Path, *, seed: int = 0, tie_word_embeddings: bool = True) -> Path:
    """A tiny random Qwen3-ASR Hugging Face directory (``Qwen3ASRForConditionalGeneration`` layout)."""
    import torch
    from transformers import Qwen3ASRForConditionalGeneration
    from transformers.models.qwen3_asr.feature_extraction_qwen3_asr import Qwen3ASRFeatureExtractor

    out = Path(out)
    tok = qwen3_asr_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|audio_pad|>", "<|im_end|>", "<|endoftext|>")}
    cfg = qwen3_asr_config(vocab_size=_round_up(len(tok), 64), audio_token_id=ids["<|audio_pad|>"],
                           pad_token_id=ids["<|endoftext|>"], eos_token_id=[ids["<|endoftext|>"], ids["<|im_end|>"]])
    cfg.tie_word_embeddings = tie_word_embeddings
    cfg.text_config.tie_word_embeddings = tie_word_embeddings
    torch.manual_seed(seed)
    model = Qwen3ASRForConditionalGeneration(cfg).eval()
    _save(model, out)
    tok.save_pretrained(str(out))
    Qwen3ASRFeatureExtractor(feature_size=cfg.audio_config.num_mel_bins).save_pretrained(str(out))
    _provenance(out, "qwen3_asr-0.6b", seed)
    return out


def moonshine_config(real: str = "moonshine-tiny", *, vocab_size: int | None = None, tiny: bool = True):
    from transformers import MoonshineConfig

    c = dict(REAL_CONFIGS[real])
    if tiny:
        c.update(hidden_size=64, intermediate_size=256, encoder_num_hidden_layers=2, decoder_num_hidden_layers=2,
                 encoder_num_attention_heads=2, decoder_num_attention_heads=2, initializer_range=TEST_INIT_RANGE)
    if vocab_size is not None:
        c["vocab_size"] = vocab_size
    prf = c.pop("partial_rotary_factor")
    return MoonshineConfig(**c, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                 "partial_rotary_factor": prf},
                           decoder_start_token_id=1, bos_token_id=1, eos_token_id=2, pad_token_id=2)


def write_random_moonshine(out: str | Path, *, seed: int = 0) -> Path:
    """A tiny random Moonshine Hugging Face directory (``MoonshineForConditionalGeneration`` layout)."""
    import torch
    from transformers import MoonshineForConditionalGeneration, Wav2Vec2FeatureExtractor

    out = Path(out)
    tok = moonshine_tokenizer()
    cfg = moonshine_config(vocab_size=_round_up(len(tok), 64))
    torch.manual_seed(seed)
    model = MoonshineForConditionalGeneration(cfg).eval()
    _save(model, out)
    tok.save_pretrained(str(out))
    # UsefulSensors/moonshine-* preprocessor_config.json: raw 16 kHz samples, no normalisation
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=False,
                             return_attention_mask=True).save_pretrained(str(out))
    _provenance(out, "moonshine-tiny", seed)
    return out


def _save(model, out: Path) -> None:
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(out))
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def _provenance(out: Path, real: str, seed: int) -> None:
    (out / "TARQ_RANDOM_MODEL.json").write_text(json.dumps(
        {"what": "randomly initialised test model (tarq.testing); not a trained model", "scaled_from": real,
         "seed": seed}, indent=2))
