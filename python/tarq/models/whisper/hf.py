"""Hugging Face Whisper checkpoints (local dirs; hub ids are resolved offline by the loader) and tarq quantized dirs."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..hub import load_pretrained_checked, model_config, quantized_source
from ..loaded import LoadedModel
from .build import build_whisper
from .names import TIED
from .tokenizer_fixes import MULTILINGUAL_MIN_VOCAB, SpecialIds, build_whisper_tokenizer, fixed_tokenizer_json

log = logging.getLogger(__name__)


def _check_whisper(config: dict, source: str) -> None:
    mt = config.get("model_type")
    if mt != "whisper":
        archs = config.get("architectures")
        raise ValueError(f"{source}: model_type={mt!r} {archs or ''} is not a Whisper model")


def _tokenizer_from_dir(d: Path, vocab_size: int, multilingual: bool) -> tuple[object, SpecialIds | None]:
    if (d / "tokenizer.json").is_file():
        tok_json, ids = fixed_tokenizer_json(d / "tokenizer.json", vocab_size)
        return build_whisper_tokenizer(tok_json, multilingual), ids
    from transformers import WhisperTokenizerFast

    try:
        kwargs = dict(language="en", task="transcribe") if multilingual else {}
        return WhisperTokenizerFast.from_pretrained(str(d), **kwargs), None
    except Exception as e:
        raise FileNotFoundError(f"{d}: no usable tokenizer files (tokenizer.json or vocab.json + merges.txt): {e}") from None


def _feature_extractor_from_dir(d: Path, n_mels: int):
    from transformers import WhisperFeatureExtractor

    if (d / "preprocessor_config.json").is_file():
        fe = WhisperFeatureExtractor.from_pretrained(str(d))
        if fe.feature_size != n_mels:
            raise ValueError(f"{d / 'preprocessor_config.json'}: feature_size {fe.feature_size} != model's {n_mels} mels")
        return fe
    return WhisperFeatureExtractor(feature_size=n_mels)


def _generation_config(d: Path, model, ids: SpecialIds | None, multilingual: bool):
    from transformers import GenerationConfig

    from .generation import whisper_generation_config

    if (d / "generation_config.json").is_file():
        return GenerationConfig.from_pretrained(str(d))
    if ids is None:
        return model.generation_config
    cfg = model.config
    return whisper_generation_config(ids, multilingual=multilingual,
                                     suppress_tokens=getattr(cfg, "suppress_tokens", None) or [],
                                     begin_suppress_tokens=getattr(cfg, "begin_suppress_tokens", None) or [],
                                     max_length=cfg.max_target_positions)


def _is_multilingual(d: Path, vocab_size: int) -> bool:
    g = d / "generation_config.json"
    if g.is_file():
        flag = json.loads(g.read_text()).get("is_multilingual")
        if flag is not None:
            return bool(flag)
    return vocab_size >= MULTILINGUAL_MIN_VOCAB


def load_hf(d: Path, *, name: str, kind: str = "hf-dir", dtype: torch.dtype = torch.float32) -> LoadedModel:
    """A Hugging Face Whisper directory (``config.json`` model_type "whisper"); every tensor checked first."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig.from_pretrained(str(d), local_files_only=True)
    model = load_pretrained_checked(WhisperForConditionalGeneration, config, d, dtype=dtype, optional=set(TIED))
    vocab = model.config.vocab_size
    multilingual = _is_multilingual(d, vocab)
    tokenizer, ids = _tokenizer_from_dir(d, vocab, multilingual)
    model.generation_config = _generation_config(d, model, ids, multilingual)
    return LoadedModel(model=model, tokenizer=tokenizer,
                       feature_extractor=_feature_extractor_from_dir(d, model.config.num_mel_bins),
                       name=name, source={"kind": kind, "path": str(d)}, multilingual=multilingual)


def load_tarq_dir(ckpt, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Rebuild the fake-quantized model: every quantized weight is its exact dequantized value (ggml to_float of its bytes)."""
    d = Path(ckpt.path)
    _check_whisper(ckpt.config, str(d / "config.json"))
    sd = ckpt.state_dict()
    for alias in TIED:
        if alias in sd:
            # The output projection is tied to the (quantized) embedding, whatever copy was saved.
            log.debug("%s: ignoring saved %s; tying to the quantized embedding", d, alias)
            sd.pop(alias)
    cfg = model_config(ckpt.config)
    model = build_whisper(cfg, sd, source=str(d), dtype=dtype)
    vocab = model.config.vocab_size
    multilingual = _is_multilingual(d, vocab)
    tokenizer, ids = _tokenizer_from_dir(d, vocab, multilingual)
    model.generation_config = _generation_config(d, model, ids, multilingual)
    return LoadedModel(model=model, tokenizer=tokenizer,
                       feature_extractor=_feature_extractor_from_dir(d, model.config.num_mel_bins),
                       name=str(d), source=quantized_source(ckpt), multilingual=multilingual)
