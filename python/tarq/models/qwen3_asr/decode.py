"""Greedy PyTorch decoding of Qwen3-ASR (FP or fake-quantized), the ``tarq eval --backend torch`` decoder.

Per clip: log-mel features -> audio tower + projector -> the ChatML prompt of ``prompt.py`` with the audio frames
in the audio-pad positions -> one prefill pass of the Qwen3 LLM -> one token per step with its KV cache until
<|im_end|> / <|endoftext|> or ``max_new_tokens``. This is the same prompt and the same greedy rule CrispASR's
session uses (src/crispasr_c_api.cpp), so the two differ only by the runtime's arithmetic.
``greedy_decode_reference`` recomputes the whole sequence every step (no cache): the obvious reference in tests.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from .prompt import audio_features, feature_mask, prompt_ids

log = logging.getLogger(__name__)


def _prompt_embeddings(model, feats: torch.Tensor, n_mel: int, ids) -> tuple[torch.Tensor, list[int]]:
    mask = feature_mask(feats.shape[-1], n_mel, feats.device)[None]
    audio = model.model.get_audio_features(feats[None], mask).pooler_output
    prompt = ids.full(audio.shape[0])
    tok = torch.tensor(prompt, device=feats.device)
    emb = model.get_input_embeddings()(tok).clone()
    emb[tok == ids.audio_pad] = audio.to(emb.dtype)
    return emb, prompt


@torch.inference_mode()
def greedy_decode(model, feats: torch.Tensor, n_mel: int, ids, max_new_tokens: int) -> list[int]:
    """Token ids after the prompt, without the end-of-turn token (KV-cached)."""
    emb, _ = _prompt_embeddings(model, feats, n_mel, ids)
    lm = model.model.language_model
    stop = {ids.end_of_turn, ids.end_of_text}
    out = lm(inputs_embeds=emb[None], use_cache=True)
    cache, seq = out.cache, []
    for _ in range(max_new_tokens):
        nxt = int(model.lm_head(out.last_hidden_state[0, -1]).argmax())
        if nxt in stop:
            break
        seq.append(nxt)
        e = model.get_input_embeddings()(torch.tensor([[nxt]], device=emb.device))
        out = lm(inputs_embeds=e, cache=cache, use_cache=True)
        cache = out.cache
    return seq


@torch.inference_mode()
def greedy_decode_reference(model, feats: torch.Tensor, n_mel: int, ids, max_new_tokens: int) -> list[int]:
    """The same decision rule without a cache: the full sequence through the full model every step."""
    emb, _ = _prompt_embeddings(model, feats, n_mel, ids)
    stop = {ids.end_of_turn, ids.end_of_text}
    seq: list[int] = []
    for _ in range(max_new_tokens):
        e = torch.cat([emb, model.get_input_embeddings()(torch.tensor(seq, dtype=torch.long, device=emb.device))])
        nxt = int(model(inputs_embeds=e[None]).logits[0, -1].argmax())
        if nxt in stop:
            break
        seq.append(nxt)
    return seq


class Qwen3AsrTorchBackend:
    """``tarq eval --backend torch`` for Qwen3-ASR: greedy, language forced by the assistant prefill."""

    name = "torch"

    def __init__(self, loaded, max_new_tokens: int = 256, threads: int | None = 2, batch_size: int = 1):
        # batch_size is accepted for the common backend options; clips are decoded one at a time
        if threads:
            from tarq._threads import set_threads

            set_threads(threads)   # every pool, as the Whisper torch backend does (--threads)
        self.loaded = loaded
        self.max_new_tokens = int(max_new_tokens)
        self.ids = prompt_ids(loaded.tokenizer, loaded.language)
        self.description = {"backend": self.name, "family": "qwen3_asr", "model": getattr(loaded, "name", "?"),
                            "max_new_tokens": self.max_new_tokens, "language": loaded.language, "policy": "greedy",
                            "threads": torch.get_num_threads()}

    def cache_identity(self) -> dict | None:
        return None   # not cached yet: the decode cache (tarq.eval.cache) keys the Whisper backend only

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        model = self.loaded.model
        dtype = next(model.parameters()).dtype
        texts = []
        for a in audios:
            feats, n_mel = audio_features(self.loaded.feature_extractor, a)
            seq = greedy_decode(model, feats.to(dtype), n_mel, self.ids, self.max_new_tokens)
            texts.append(self.loaded.tokenizer.decode(seq, skip_special_tokens=True).strip())
        return texts
