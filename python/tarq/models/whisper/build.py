"""Shared assembly: a transformers Whisper module from a config dict + state dict, without random init."""
from __future__ import annotations

import logging

import torch

from .names import OUTPUT_PROJECTION as _TIED, TOKEN_EMBEDDING as _EMBED

log = logging.getLogger(__name__)


def build_whisper(config: dict | object, state_dict: dict[str, torch.Tensor], *, source: str,
                  dtype: torch.dtype = torch.float32):
    """``WhisperForConditionalGeneration`` holding exactly ``state_dict`` (output projection tied to the embedding).

    The module is created on the meta device (no random initialisation: ~20x faster) and the tensors are
    assigned in place. Missing or unexpected parameters raise ``ValueError`` naming ``source``.
    """
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = config if isinstance(config, WhisperConfig) else WhisperConfig(**dict(config))
    if getattr(cfg, "model_type", "whisper") != "whisper":
        raise ValueError(f"{source}: model_type {cfg.model_type!r} is not supported (only whisper)")
    cfg.tie_word_embeddings = True
    sd = dict(state_dict)
    proj = sd.pop(_TIED, None)
    if proj is not None and _EMBED in sd and not torch.equal(proj.float(), sd[_EMBED].float()):
        raise ValueError(f"{source}: {_TIED} differs from {_EMBED}; untied Whisper variants are not supported")
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(cfg)
    expected = {k for k in model.state_dict() if k != _TIED}
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    if missing or unexpected:
        raise ValueError(f"{source}: weights do not match the Whisper architecture; "
                         f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
                         f"unexpected {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}")
    shapes = model.state_dict()
    for k, v in sd.items():
        if tuple(v.shape) != tuple(shapes[k].shape):
            raise ValueError(f"{source}: {k} has shape {tuple(v.shape)}, config expects {tuple(shapes[k].shape)}")
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=False, assign=True)
    model.proj_out.weight = model.model.decoder.embed_tokens.weight
    # Non-persistent buffers (none in Whisper today) would still be on meta: fail loudly if so.
    for name, b in model.named_buffers():
        if b.is_meta:
            raise RuntimeError(f"{source}: buffer {name} was not initialised")
    return model.eval()
