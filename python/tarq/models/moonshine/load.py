"""Moonshine checkpoints (transformers ``MoonshineForConditionalGeneration``: UsefulSensors/moonshine-tiny, -base;
local directories or cached hub ids) and tarq quantized directories of them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..hub import build_from_state_dict, load_pretrained_checked, model_config, quantized_source, read_config
from ..loaded import LoadedModel

FAMILY_NAME = "moonshine"
SAMPLE_RATE = 16000
EMBED = "model.decoder.embed_tokens.weight"
OUTPUT = "proj_out.weight"


def tied_parameters(config: dict[str, Any]) -> dict[str, str]:
    return {OUTPUT: EMBED} if config.get("tie_word_embeddings", True) else {}


def _classes():
    from transformers import MoonshineConfig, MoonshineForConditionalGeneration

    return MoonshineConfig, MoonshineForConditionalGeneration


def _check(raw: dict[str, Any], source: Path) -> None:
    if raw.get("model_type") != "moonshine":
        raise ValueError(f"{source}: model_type={raw.get('model_type')!r} is not a Moonshine model "
                         f"(moonshine_streaming is a different architecture)")


def _tokenizer(d: Path, config, source: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    except Exception as e:  # missing files, bad JSON, ...
        raise FileNotFoundError(f"{d}: no usable Moonshine tokenizer files ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if len(tok) > config.vocab_size:
        raise ValueError(f"{source}: tokenizer has {len(tok)} tokens, the embedding only {config.vocab_size} rows")
    return tok


def _feature_extractor(d: Path):
    from transformers import Wav2Vec2FeatureExtractor

    f = d / "preprocessor_config.json"
    if f.is_file():
        return Wav2Vec2FeatureExtractor.from_pretrained(str(d))
    # UsefulSensors/moonshine-*: raw 16 kHz samples, no normalisation (what CrispASR feeds its conv stem too)
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=False,
                                    return_attention_mask=True)


def _finish(model, d: Path, name: str, source: dict) -> LoadedModel:
    return LoadedModel(model=model, tokenizer=_tokenizer(d, model.config, str(d)),
                       feature_extractor=_feature_extractor(d), name=name, source=source, multilingual=False,
                       family=FAMILY_NAME)


def load_pretrained(d: Path, *, name: str, kind: str, dtype=None) -> LoadedModel:
    raw = read_config(d)
    _check(raw, d / "config.json")
    Config, Model = _classes()
    config = Config.from_pretrained(str(d), local_files_only=True)
    model = load_pretrained_checked(Model, config, d, dtype=dtype, optional=set(tied_parameters(raw)))
    return _finish(model, d, name, {"kind": kind, "path": str(d)})


def load_quantized(ckpt, *, dtype=None) -> LoadedModel:
    Config, Model = _classes()
    d = Path(ckpt.path)
    _check(ckpt.config, d / "config.json")
    config = Config.from_dict(model_config(ckpt.config))
    model = build_from_state_dict(Model, config, ckpt.state_dict(), str(d), tied=tied_parameters(ckpt.config),
                                  dtype=dtype)
    return _finish(model, d, str(d), quantized_source(ckpt))


def input_values(loaded: LoadedModel, audio: np.ndarray) -> torch.Tensor:
    """The encoder input [samples] (the feature extractor's output: raw samples unless it normalises)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono 1-D audio, got shape {audio.shape}")
    return loaded.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values[0].float()


def summary(loaded: LoadedModel) -> dict[str, Any]:
    c = loaded.model.config
    return {"d_model": c.hidden_size, "encoder_layers": c.encoder_num_hidden_layers,
            "decoder_layers": c.decoder_num_hidden_layers, "heads": c.encoder_num_attention_heads,
            "vocab_size": c.vocab_size, "tied_embeddings": bool(tied_parameters(c.to_dict()))}
