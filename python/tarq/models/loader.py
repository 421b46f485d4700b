"""``load_model(spec)``: one entry point for every family and layout; the family registry decides who loads what."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .family import families, family_for_model_type, get_family
from .hub import read_config, resolve_hub_id
from .loaded import LoadedModel

log = logging.getLogger(__name__)


def _alias_family(name: str):
    for fam in families():
        if name in fam.aliases():
            return fam
    return None


def _load_dir(d: Path, *, name: str, kind: str, dtype) -> LoadedModel:
    from ..qmodel import is_quantized_dir, load_quantized_dir

    if is_quantized_dir(d):
        ckpt = load_quantized_dir(d)
        try:
            fam = get_family(ckpt.family)
        except ValueError as e:
            raise ValueError(f"{d / 'tarq.json'}: {e}") from None
        return fam.load_quantized(ckpt, dtype=dtype)
    for fam in families():
        if fam.recognises(d):
            return fam.load_directory(d, name=name, dtype=dtype)
    if (d / "config.json").is_file():
        config = read_config(d)
        fam = family_for_model_type(config.get("model_type"), d / "config.json")
        return fam.load_pretrained(d, name=name, source_kind=kind, dtype=dtype)
    raise ValueError(f"{d}: not a recognised model directory (expected config.json + weights for Hugging Face, "
                     f"model.bin for CTranslate2 Whisper, or tarq.json for a quantized model)")


def load_model(spec: str | os.PathLike, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a model for quantization / evaluation.

    ``spec``: an alias ("tiny.en", "base"), a tarq quantized-model directory, a Hugging Face model directory of a
    supported family (Whisper, Qwen3-ASR, Moonshine), a CTranslate2 / faster-whisper Whisper directory, or a Hugging
    Face hub id present in the local cache (offline; nothing is ever downloaded).
    """
    s = os.fspath(spec)
    fam = _alias_family(s)
    if fam is not None:  # aliases win; a directory with the same name is reached as "./base"
        return fam.load_alias(s, dtype=dtype)
    p = Path(s).expanduser()
    if p.is_dir():
        return _load_dir(p, name=str(p), kind="hf-dir", dtype=dtype)
    if p.exists():
        raise ValueError(f"{p}: expected a model directory, got a file")
    if s.startswith((".", "/", "~")) or os.sep in s and s.count("/") != 1:
        raise FileNotFoundError(f"{s}: model directory not found")
    return _load_dir(resolve_hub_id(s), name=s, kind="hf-hub-cache", dtype=dtype)
