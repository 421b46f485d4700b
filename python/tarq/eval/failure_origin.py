"""Where a greedy failure starts: is it the quantized file's, or the reference model's own, one near tie away?

A greedy loop or truncation that a quantized file has and F16 does not (``damage``'s "new" failures) is counted
against the quantizer. But greedy decoding is a chain of argmax decisions, and F16 itself sits within a tenth of
a nat of another word on some utterances. When the file takes the other branch of such a tie, the rest of the
utterance can fail for reasons that are F16's, not the file's: measured on austen-tts-dev-noisy pico_en-GB_016,
F16 ranks " Here" 0.15 nats above " The" as the first word, and F16 itself, given " The", stops right there.

So, for one failing hypothesis ``s = s_1 … s_n EOT`` (the system's transcript re-tokenized by the reference
model's tokenizer; a loop's without the EOT, since the runtime's token cap, not a stop, ended it) and the
reference model R with masked greedy logits ℓ_j (the very masks of ``decode.greedy_decode``: no id above EOT,
``suppress_tokens``, ``begin_suppress_tokens`` at the first step):

    divergence   j* = min { j : argmax_v ℓ_j(v) ≠ s_j }          (None: R agrees with every token)
    gap          g  = ℓ_{j*}(argmax) − ℓ_{j*}(s_{j*}) ≥ 0          nats: R's distance to the system's choice
    continuation c  = R's greedy decode from prompt + s_1 … s_{j*}  (empty when s_{j*} is EOT)

and R's transcript from the system's branch, ``s_1 … s_{j*} c``, is scored with the same failure rule
(``damage.failure_kind``). The failure is **inherited** when that transcript fails too: R, put on the branch
the system chose at the divergence, fails by itself. When the system's choice at j* is EOT (it stopped where R
would go on), the branch *is* the stop, and R put on it ends the same way (``stopped``): inherited, with g saying
how near R came to stopping there itself. Whether a branch was R's own near tie is the gap: a failure that is
inherited *and* starts at a small gap is one R makes from a coin flip of its own. A runtime token R's rules
suppress (a symbol: tarq's whisper.cpp policies, like whisper.cpp's defaults, leave ``suppress_nst`` off) has
g = inf ("masked"): a branch R could not take.

The re-tokenization is canonical BPE of the system's text, not the runtime's emitted ids, so a runtime that
spelled a word in other pieces shows a divergence there with a large gap (the analysis then says "not
inherited" or "inherited" about a prefix the runtime did not literally produce; the gap flags it). The
reference runs in PyTorch fp32, not in the system's runtime. Whisper vocabularies only (text ids below EOT).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .damage import failure_kind
from .decode import DecodeOptions, _mask_logits, greedy_decode
from .metrics import words


@dataclass(frozen=True)
class Divergence:
    position: int | None   # j* (0-based over the generated tokens, EOT included); None: no divergence
    gap: float | None      # g in nats (inf when the system's token is masked for R); None without a divergence
    choice: int | None     # R's argmax at j*


def first_divergence(logits: torch.Tensor, tokens: list[int]) -> Divergence:
    """j*, g and R's choice from masked logits [n, V] (row j predicts ``tokens[j]``)."""
    if logits.shape[0] != len(tokens):
        raise ValueError(f"{logits.shape[0]} logit rows for {len(tokens)} tokens")
    for j, tok in enumerate(tokens):
        best = int(logits[j].argmax())
        if best != tok:
            return Divergence(j, float(logits[j, best] - logits[j, tok]), best)
    return Divergence(None, None, None)


@torch.inference_mode()
def forced_logits(model, features: torch.Tensor, opts: DecodeOptions, tokens: list[int]) -> torch.Tensor:
    """Masked logits [len(tokens), V] of one utterance with ``prompt + tokens`` forced, as greedy decoding would
    see them at each step (row 0 carries the first-step suppression)."""
    ids = torch.tensor([list(opts.prompt_ids) + list(tokens[:-1])])
    enc = model.get_encoder()(features[None]).last_hidden_state
    hidden = model.get_decoder()(input_ids=ids, encoder_hidden_states=enc, use_cache=False).last_hidden_state
    raw = model.proj_out(hidden[0, len(opts.prompt_ids) - 1:])
    rows = [_mask_logits(raw[j:j + 1], opts, first_step=j == 0)[0] for j in range(raw.shape[0])]
    return torch.stack(rows)


def continue_greedy(model, features: torch.Tensor, opts: DecodeOptions, prefix: list[int]) -> list[int]:
    """R's greedy tokens after ``prompt + prefix`` (without eot). The first-step suppression and the silence rule
    belong to the start of an utterance, so neither applies to a continuation."""
    cont = dataclasses.replace(opts, prompt_ids=tuple(opts.prompt_ids) + tuple(prefix), begin_suppress_tokens=(),
                               no_speech_id=None, max_new_tokens=max(0, opts.max_new_tokens - len(prefix)))
    return greedy_decode(model, features[None], cont)[0]


@dataclass(frozen=True)
class FailureOrigin:
    id: str
    kind: str                      # the system's failure kind
    position: int | None           # j*, in tokens; None: R agrees with the whole failing transcript
    gap: float | None              # g, nats
    reference_kind: str | None     # failure kind of R's transcript from the system's branch (None: no failure)
    n_words: int                   # scoring words of that transcript
    stopped: bool = False          # the system's branch at the divergence is EOT: the stop itself

    @property
    def inherited(self) -> bool:
        return self.reference_kind is not None

    @property
    def masked(self) -> bool:
        """The system's token at the divergence is one R's greedy decoding can never emit (suppressed)."""
        return self.gap is not None and math.isinf(self.gap)

    def to_dict(self) -> dict:
        """JSON-ready: an infinite gap is stored as null with ``masked`` true."""
        out = {**dataclasses.asdict(self), "inherited": self.inherited, "masked": self.masked}
        if self.masked:
            out["gap"] = None
        return out


def failure_origin(model, tokenizer, features: torch.Tensor, opts: DecodeOptions, utt_id: str, reference_text: str,
                   hypothesis: str, kind: str) -> FailureOrigin:
    """The origin of one failing hypothesis (the module docstring's j*, g and R's failure from the branch)."""
    text = tokenizer.encode(" " + hypothesis.strip(), add_special_tokens=False) if hypothesis.strip() else []
    # a loop's transcript is where the runtime's token cap cut it, not a stop: no EOT is forced after it
    tokens = [int(t) for t in text[:max(1, opts.max_new_tokens)]] + ([] if kind == "loop" else [int(opts.eot_id)])
    if not tokens:
        raise ValueError(f"utterance {utt_id}: an empty transcript cannot be a loop")
    div = first_divergence(forced_logits(model, features, opts, tokens), tokens)
    stopped = div.position is not None and tokens[div.position] == opts.eot_id
    if div.position is None:
        branch = [t for t in tokens if t != opts.eot_id]    # R reproduces the failing transcript itself
    elif stopped:
        branch = tokens[:div.position]                       # R put on a branch that is the stop
    else:
        prefix = tokens[:div.position + 1]
        branch = prefix + continue_greedy(model, features, opts, prefix)
    n_ref = len(words(reference_text))
    n_hyp = len(words(tokenizer.decode(branch, skip_special_tokens=True)))
    return FailureOrigin(utt_id, kind, div.position, div.gap, failure_kind(n_ref, n_hyp), n_hyp, stopped)
