"""Greedy PyTorch decoding of Moonshine (FP or fake-quantized), the ``tarq eval --backend torch`` decoder.

Per clip: raw samples -> conv stem + encoder -> greedy decoding from <s> (decoder_start_token_id) until </s> or
``max_new_tokens``; transformers' ``generate`` with an explicit greedy configuration (no sampling, one beam, no
repetition penalty), so a checkpoint's generation_config cannot change the policy. CrispASR decodes the same way
(argmax per step) but also stops a repeating loop early (its "repeat break"); compare texts with that in mind.
``greedy_decode_reference`` re-runs the whole model every step without a cache (the obvious reference in tests).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .load import input_values


def _greedy_config(model, max_new_tokens: int):
    from transformers import GenerationConfig

    cfg = model.config
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, repetition_penalty=1.0,
                            decoder_start_token_id=cfg.decoder_start_token_id, bos_token_id=cfg.bos_token_id,
                            eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id)


@torch.inference_mode()
def greedy_decode(model, x: torch.Tensor, max_new_tokens: int) -> list[int]:
    """Token ids after <s>, without </s>."""
    out = model.generate(input_values=x[None], generation_config=_greedy_config(model, max_new_tokens))[0].tolist()
    eos = model.config.eos_token_id
    seq = out[1:]
    return seq[: seq.index(eos)] if eos in seq else seq


@torch.inference_mode()
def greedy_decode_reference(model, x: torch.Tensor, max_new_tokens: int) -> list[int]:
    enc = model.model.encoder(x[None]).last_hidden_state
    seq = [model.config.decoder_start_token_id]
    for _ in range(max_new_tokens):
        h = model.model.decoder(input_ids=torch.tensor([seq]), encoder_hidden_states=enc).last_hidden_state
        nxt = int(model.proj_out(h[0, -1]).argmax())
        if nxt == model.config.eos_token_id:
            break
        seq.append(nxt)
    return seq[1:]


class MoonshineTorchBackend:
    """``tarq eval --backend torch`` for Moonshine: greedy, one clip at a time."""

    name = "torch"

    def __init__(self, loaded, max_new_tokens: int = 194, threads: int | None = 2, batch_size: int = 1):
        # batch_size is accepted for the common backend options; clips are decoded one at a time
        if threads:
            from tarq._threads import set_threads

            set_threads(threads)   # every pool, as the Whisper torch backend does (--threads)
        self.loaded = loaded
        self.max_new_tokens = int(max_new_tokens)
        self.description = {"backend": self.name, "family": "moonshine", "model": getattr(loaded, "name", "?"),
                            "max_new_tokens": self.max_new_tokens, "policy": "greedy",
                            "threads": torch.get_num_threads()}

    def cache_identity(self) -> dict | None:
        return None   # not cached yet: the decode cache (tarq.eval.cache) keys the Whisper backend only

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        model = self.loaded.model
        dtype = next(model.parameters()).dtype
        return [self.loaded.tokenizer.decode(greedy_decode(model, input_values(self.loaded, a).to(dtype),
                                                           self.max_new_tokens), skip_special_tokens=True).strip()
                for a in audios]
