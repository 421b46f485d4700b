"""A CTranslate2 / faster-whisper Whisper directory (``model.bin`` + ``tokenizer.json``) as a LoadedModel."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from ..loaded import LoadedModel
from .build import build_whisper
from .ct2 import read_ct2_config, read_ct2_model, whisper_config_dict, whisper_state_dict
from .generation import whisper_generation_config
from .tokenizer_fixes import MULTILINGUAL_MIN_VOCAB, build_whisper_tokenizer, fixed_tokenizer_json

log = logging.getLogger(__name__)


def _feature_extractor(n_mels: int):
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=n_mels)


def is_ct2_dir(path: Path) -> bool:
    return path.is_dir() and (path / "model.bin").is_file()


def load_ct2_dir(path: str | os.PathLike, *, name: str | None = None, dtype=torch.float32) -> LoadedModel:
    d = Path(path)
    t0 = time.perf_counter()
    m = read_ct2_model(d / "model.bin")
    n_vocab = int(m.get("decoder/embeddings/weight").shape[0])
    tok_file = d / "tokenizer.json"
    if not tok_file.is_file():
        raise FileNotFoundError(f"{tok_file}: CTranslate2 Whisper directory has no tokenizer.json")
    tok_json, ids = fixed_tokenizer_json(tok_file, n_vocab)
    multilingual = n_vocab >= MULTILINGUAL_MIN_VOCAB
    ct2_cfg = read_ct2_config(d)
    cfg = whisper_config_dict(m, {"eot": ids.eot, "sot": ids.sot})
    model = build_whisper(cfg, whisper_state_dict(m), source=str(d / "model.bin"), dtype=dtype)
    del m
    model.generation_config = whisper_generation_config(
        ids, multilingual=multilingual, suppress_tokens=ct2_cfg.get("suppress_ids", []),
        begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin", []), max_length=cfg["max_target_positions"],
        alignment_heads=ct2_cfg.get("alignment_heads"))
    tokenizer = build_whisper_tokenizer(tok_json, multilingual)
    log.debug("loaded CTranslate2 model %s in %.2f s", d, time.perf_counter() - t0)
    return LoadedModel(model=model, tokenizer=tokenizer, feature_extractor=_feature_extractor(cfg["num_mel_bins"]),
                       name=name or str(d), source={"kind": "ct2", "path": str(d)}, multilingual=multilingual)
