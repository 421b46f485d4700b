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

Silence: like Whisper's ``transcribe()``, a transcript is dropped (empty) when the probability of the no-speech
token (``<|nospeech|>`` / ``<|nocaptions|>``) at the <|startoftranscript|> position exceeds
``no_speech_threshold`` (0.6) and the average log-probability of the chosen tokens, eot included, is below
``logprob_threshold`` (-1.0); otherwise tiny models "hear" words such as "you" in silence.

Threads: the encoder runs with the caller's torch thread count, the token-by-token loop with
``decoder_threads`` (1). Each decoder step is a string of tiny ops; with 2 OpenMP threads on a shared CPU every
op waits for the second thread to be scheduled (measured: 0.51 s per step of a batch of 8 with 2 threads on this
busy 2-core machine, 0.026 s with 1).

Rows that emit eot are dropped from the batch (and from the cache), so a batch costs as many steps as its longest
transcript. ``greedy_decode_reference`` recomputes the whole decoder every step for one utterance at a time and
serves as the obvious reference in tests.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DecodeOptions:
    prompt_ids: tuple[int, ...]
    eot_id: int
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    max_new_tokens: int = 128
    no_speech_id: int | None = None
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    decoder_threads: int | None = 1
    extra: dict = field(default_factory=dict)


@contextlib.contextmanager
def _num_threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _is_silence(no_speech_prob: float, sum_logprob: float, n_tokens: int, opts: DecodeOptions) -> bool:
    """Whisper transcribe()'s rule: no-speech prob above threshold and avg logprob (eot included) below one."""
    if opts.no_speech_id is None:
        return False
    return no_speech_prob > opts.no_speech_threshold and sum_logprob / (n_tokens + 1) < opts.logprob_threshold


def _no_speech_prob(model, hidden_at_sot: torch.Tensor, opts: DecodeOptions) -> torch.Tensor:
    if opts.no_speech_id is None:
        return torch.zeros(hidden_at_sot.shape[0])
    return model.proj_out(hidden_at_sot).float().softmax(-1)[:, opts.no_speech_id]


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
    enc = model.get_encoder()(input_features).last_hidden_state
    with _num_threads(opts.decoder_threads):
        return _decode_steps(model, enc, opts)


def _decode_steps(model, enc: torch.Tensor, opts: DecodeOptions) -> list[list[int]]:
    batch = enc.shape[0]
    decoder = model.get_decoder()
    tokens = torch.tensor([list(opts.prompt_ids)] * batch, dtype=torch.long, device=enc.device)
    out: list[list[int]] = [[] for _ in range(batch)]
    alive = torch.arange(batch)              # original row of each live row
    sum_logprob = torch.zeros(batch, dtype=torch.float64)
    no_speech = torch.zeros(batch)
    cache = None
    for step in range(_max_steps(model, opts)):
        dec = decoder(input_ids=tokens, encoder_hidden_states=enc, past_key_values=cache, use_cache=True)
        cache = dec.past_key_values
        if step == 0:
            no_speech = _no_speech_prob(model, dec.last_hidden_state[:, 0], opts)   # sot is prompt position 0
        logits = _mask_logits(model.proj_out(dec.last_hidden_state[:, -1]), opts, first_step=step == 0)
        nxt = logits.argmax(-1)
        sum_logprob[alive] += logits.log_softmax(-1).gather(1, nxt[:, None])[:, 0].double()
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
    return [[] if _is_silence(float(no_speech[i]), float(sum_logprob[i]), len(seq), opts) else seq
            for i, seq in enumerate(out)]


@torch.inference_mode()
def greedy_decode_reference(model, input_features: torch.Tensor, opts: DecodeOptions) -> list[list[int]]:
    """Slow, obvious greedy decoding: one utterance at a time, the full prefix re-run every step, no cache."""
    results = []
    for feats in input_features:
        enc = model.get_encoder()(feats[None]).last_hidden_state
        seq = list(opts.prompt_ids)
        sum_logprob, no_speech = 0.0, 0.0
        for step in range(_max_steps(model, opts)):
            hidden = model.get_decoder()(input_ids=torch.tensor([seq]), encoder_hidden_states=enc,
                                         use_cache=False).last_hidden_state
            if step == 0:
                no_speech = float(_no_speech_prob(model, hidden[:, 0], opts)[0])
            logits = _mask_logits(model.proj_out(hidden[:, -1]), opts, first_step=step == 0)
            tok = int(logits.argmax(-1))
            sum_logprob += float(logits.log_softmax(-1)[0, tok])
            if tok == opts.eot_id:
                break
            seq.append(tok)
        text = seq[len(opts.prompt_ids):]
        results.append([] if _is_silence(no_speech, sum_logprob, len(text), opts) else text)
    return results
