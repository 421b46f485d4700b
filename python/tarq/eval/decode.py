"""Batched greedy decoding for Hugging Face Whisper models, with a KV cache, independent of ``generate()``.

Why not ``generate()``: its Whisper path expects timestamp tokens and a full generation config, which converted
checkpoints may lack. Greedy decoding is short to write and is exactly what the reference WERs use.

Per batch: the encoder runs once; the forced prompt (``decoder_prompt_ids``: <|startoftranscript|> [language,
task] <|notimestamps|>) is fed in one step; then one token per step with the self-attention KV cache (the
cross-attention K/V are computed on the first step and cached). Token rules, as Whisper's decoder applies them:

* only text tokens and <|endoftext|> may be produced: in Whisper vocabularies every special and timestamp token
  has an id above eot, so logits of ids > eot are masked;
* ``suppress_tokens`` (generation config; Whisper's list of symbol tokens) are masked at every step;
* ``begin_suppress_tokens`` (the blank " " token and eot) are masked at the first generated position, so an
  utterance cannot start with a blank or end immediately.

Rows that emit eot are dropped from the batch (and from the cache), so a batch costs as many steps as its longest
transcript. ``greedy_decode_reference`` recomputes the whole decoder every step for one utterance at a time and
serves as the obvious reference in tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DecodeOptions:
    prompt_ids: tuple[int, ...]
    eot_id: int
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    max_new_tokens: int = 128
    extra: dict = field(default_factory=dict)


def _mask_logits(logits: torch.Tensor, opts: DecodeOptions, first_step: bool) -> torch.Tensor:
    logits = logits.float().clone()  # never edit the caller's tensor
    logits[:, opts.eot_id + 1:] = -torch.inf
    if opts.suppress_tokens:
        logits[:, list(opts.suppress_tokens)] = -torch.inf
    if first_step and opts.begin_suppress_tokens:
        logits[:, list(opts.begin_suppress_tokens)] = -torch.inf
    return logits


def _max_steps(model, opts: DecodeOptions) -> int:
    limit = getattr(model.config, "max_target_positions", 448) - len(opts.prompt_ids)
    return max(0, min(opts.max_new_tokens, limit))


@torch.inference_mode()
def greedy_decode(model, input_features: torch.Tensor, opts: DecodeOptions) -> list[list[int]]:
    """Greedy token ids (without prompt and eot) for a batch of log-mel features [B, n_mels, frames]."""
    batch = input_features.shape[0]
    enc = model.get_encoder()(input_features).last_hidden_state
    decoder = model.get_decoder()
    tokens = torch.tensor([list(opts.prompt_ids)] * batch, dtype=torch.long, device=enc.device)
    out: list[list[int]] = [[] for _ in range(batch)]
    alive = torch.arange(batch)              # original row of each live row
    cache = None
    for step in range(_max_steps(model, opts)):
        dec = decoder(input_ids=tokens, encoder_hidden_states=enc, past_key_values=cache, use_cache=True)
        cache = dec.past_key_values
        logits = _mask_logits(model.proj_out(dec.last_hidden_state[:, -1]), opts, first_step=step == 0)
        nxt = logits.argmax(-1)
        done = nxt == opts.eot_id
        for row, tok in zip(alive[~done].tolist(), nxt[~done].tolist()):
            out[row].append(tok)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            alive, enc, nxt = alive[keep], enc[keep], nxt[keep]
            cache.batch_select_indices(keep)
        tokens = nxt[:, None]
    return out


@torch.inference_mode()
def greedy_decode_reference(model, input_features: torch.Tensor, opts: DecodeOptions) -> list[list[int]]:
    """Slow, obvious greedy decoding: one utterance at a time, the full prefix re-run every step, no cache."""
    results = []
    for feats in input_features:
        enc = model.get_encoder()(feats[None]).last_hidden_state
        seq = list(opts.prompt_ids)
        for step in range(_max_steps(model, opts)):
            hidden = model.get_decoder()(input_ids=torch.tensor([seq]), encoder_hidden_states=enc,
                                         use_cache=False).last_hidden_state
            tok = int(_mask_logits(model.proj_out(hidden[:, -1]), opts, first_step=step == 0).argmax(-1))
            if tok == opts.eot_id:
                break
            seq.append(tok)
        results.append(seq[len(opts.prompt_ids):])
    return results
