"""Qwen3-ASR checkpoints: transformers' ``Qwen3ASRForConditionalGeneration`` layout ("-hf" checkpoints such as
Qwen/Qwen3-ASR-0.6B-hf, local directories or cached hub ids) and tarq quantized directories of it.

The original release layout (``thinker_config``, ``thinker.*`` tensors, for the qwen-asr package) is refused with
a one-line error pointing to the transformers layout: tarq quantizes the transformers classes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..hub import build_from_state_dict, load_pretrained_checked, model_config, quantized_source, read_config
from ..loaded import LoadedModel
from .prompt import AUDIO_PAD, prompt_ids

FAMILY_NAME = "qwen3_asr"
EMBED = "model.language_model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"


def tied_parameters(config: dict[str, Any]) -> dict[str, str]:
    """lm_head is the token embedding when the config ties them (Qwen3-ASR 0.6B and 1.7B do)."""
    text = config.get("text_config") or {}
    tie = config.get("tie_word_embeddings", text.get("tie_word_embeddings", True))
    return {LM_HEAD: EMBED} if tie else {}


def _classes():
    from transformers import Qwen3ASRConfig, Qwen3ASRForConditionalGeneration

    return Qwen3ASRConfig, Qwen3ASRForConditionalGeneration


def _check_layout(raw: dict[str, Any], source: Path) -> None:
    if "thinker_config" in raw:
        raise ValueError(f"{source}: original Qwen3-ASR release layout (thinker_config); tarq reads the transformers "
                         f"layout, e.g. Qwen/Qwen3-ASR-0.6B-hf / Qwen/Qwen3-ASR-1.7B-hf")
    if raw.get("model_type") != "qwen3_asr":
        raise ValueError(f"{source}: model_type={raw.get('model_type')!r} is not a Qwen3-ASR model")


def _tokenizer(d: Path, config, source: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    except Exception as e:  # missing files, bad JSON, ...
        raise FileNotFoundError(f"{d}: no usable Qwen3-ASR tokenizer files ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''})") from None
    pad = tok.convert_tokens_to_ids(AUDIO_PAD)
    if pad != config.audio_token_id:
        raise ValueError(f"{source}: tokenizer id of {AUDIO_PAD} is {pad}, config.json audio_token_id is "
                         f"{config.audio_token_id}")
    n = len(tok)
    if n > config.text_config.vocab_size:
        raise ValueError(f"{source}: tokenizer has {n} tokens, the embedding only {config.text_config.vocab_size} rows")
    return tok


def _feature_extractor(d: Path, n_mels: int):
    from transformers.models.qwen3_asr.feature_extraction_qwen3_asr import Qwen3ASRFeatureExtractor

    f = d / "preprocessor_config.json"
    fe = Qwen3ASRFeatureExtractor.from_pretrained(str(d)) if f.is_file() else Qwen3ASRFeatureExtractor(
        feature_size=n_mels)
    if fe.feature_size != n_mels:
        raise ValueError(f"{f}: feature_size {fe.feature_size} != the audio encoder's {n_mels} mel bins")
    return fe


def _finish(model, d: Path, name: str, source: dict) -> LoadedModel:
    lm = LoadedModel(model=model, tokenizer=_tokenizer(d, model.config, str(d)),
                     feature_extractor=_feature_extractor(d, model.config.audio_config.num_mel_bins),
                     name=name, source=source, multilingual=True, family=FAMILY_NAME)
    prompt_ids(lm.tokenizer, lm.language)   # every prompt token exists: fail now, not mid-calibration
    return lm


def load_pretrained(d: Path, *, name: str, kind: str, dtype=None) -> LoadedModel:
    raw = read_config(d)
    _check_layout(raw, d / "config.json")
    Config, Model = _classes()
    config = Config.from_pretrained(str(d), local_files_only=True)
    model = load_pretrained_checked(Model, config, d, dtype=dtype, optional=set(tied_parameters(raw)))
    return _finish(model, d, name, {"kind": kind, "path": str(d)})


def load_quantized(ckpt, *, dtype=None) -> LoadedModel:
    """The fake-quantized model: every quantized weight is exactly ggml's to_float of its stored bytes."""
    Config, Model = _classes()
    d = Path(ckpt.path)
    _check_layout(ckpt.config, d / "config.json")
    config = Config.from_dict(model_config(ckpt.config))
    model = build_from_state_dict(Model, config, ckpt.state_dict(), str(d), tied=tied_parameters(ckpt.config),
                                  dtype=dtype)
    return _finish(model, d, str(d), quantized_source(ckpt))


def summary(loaded: LoadedModel) -> dict[str, Any]:
    a, t = loaded.model.config.audio_config, loaded.model.config.text_config
    return {"audio_layers": a.encoder_layers, "audio_d_model": a.d_model, "audio_heads": a.encoder_attention_heads,
            "llm_layers": t.num_hidden_layers, "llm_d_model": t.hidden_size, "llm_heads": t.num_attention_heads,
            "llm_kv_heads": t.num_key_value_heads, "vocab_size": t.vocab_size, "n_mels": a.num_mel_bins,
            "tied_embeddings": bool(tied_parameters(loaded.model.config.to_dict()))}

