"""Teacher-forced stop margins: how close a model comes to ending a transcript early, or to running past its end.

Greedy decoding truncates an utterance when the end-of-text token (EOT) is the most likely token somewhere inside
the transcript, and runs on (the start of a loop) when EOT is not the most likely token after the last word. Both
are rare events -- a few clips in hundreds (``damage.failure_kind``) -- so failure counts cannot tell two
quantizers apart. The margins below measure the same decisions on *every* position of *every* utterance, with
the transcript forced, so that a paired comparison against F16 has enough data to resolve.

For one utterance forced as ``prompt + t_1 … t_n + EOT``, with ℓ_j the logits predicting position j and
``text`` the tokens the decoder can emit as words (Whisper: every id below EOT; timestamps and other special
tokens are never emitted under the greedy policy, which has timestamps off):

    early margin  M = min_{j = 2..n} ( max_{v ∈ text} ℓ_j(v) − ℓ_j(EOT) )     nats; < 0: EOT wins inside the text
    end margin    E = ℓ_{n+1}(EOT) − max_{v ∈ text} ℓ_{n+1}(v)               nats; < 0: EOT loses after the text

Position 1 (the first word) is left out of M because Whisper's decoders suppress EOT at the first step
(``begin_suppress_tokens``). Differences of logits are differences of log-probabilities, so both margins are
log-odds in nats. M is undefined (None) for a one-token transcript, both for an empty one.

Paired against a reference system on the same utterances: ΔM = M(system) − M(reference) (negative: the system is
closer to stopping early) and ΔE likewise (negative: closer to running on), with a bootstrap CI of the mean, and
the utterances whose margin is below zero in one system only, with the exact sign test on them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .bootstrap import ratio_bootstrap
from .damage import sign_test_p


@dataclass(frozen=True)
class StopMargins:
    early: float | None   # M: the smallest text-vs-EOT log-odds inside the transcript (None: no such position)
    end: float | None     # E: EOT-vs-text log-odds after the last transcript token (None: empty transcript)


def stop_margins(logits: torch.Tensor, n_prompt: int, n_text: int, eot: int, text_ids: torch.Tensor) -> StopMargins:
    """Margins of one teacher-forced utterance.

    ``logits`` [T − 1, V]: row r predicts token r + 1 of the forced sequence of T = n_prompt + n_text + 1 tokens
    (prompt, transcript, EOT); ``text_ids``: the ids the decoder can emit as text (1-D long tensor)."""
    want = n_prompt + n_text
    if logits.ndim != 2 or logits.shape[0] != want:
        raise ValueError(f"stop margins: expected logits for {want} positions (prompt {n_prompt} + text {n_text}), "
                         f"got shape {tuple(logits.shape)}")
    if n_text == 0:
        return StopMargins(None, None)
    lg = logits.double()
    best_text = lg[:, text_ids].max(dim=1).values           # [rows]
    gap = best_text - lg[:, eot]                             # text-vs-EOT log-odds per row
    first = n_prompt - 1                                     # the row predicting t_1 (EOT suppressed there)
    inner = gap[first + 1: first + n_text]                   # rows predicting t_2 .. t_n
    early = float(inner.min()) if inner.numel() else None
    end = float(-gap[first + n_text])                        # the row predicting EOT
    return StopMargins(early, end)


@dataclass(frozen=True)
class MarginComparison:
    n: int                    # utterances where both systems have the margin
    mean_diff: float          # mean of system − reference, nats
    lo: float
    hi: float
    below_zero: int           # utterances whose margin is < 0 for the system (EOT wins / loses)
    below_zero_reference: int
    new_below: int            # below zero for the system only
    fixed_below: int          # below zero for the reference only
    sign_test_p: float        # exact two-sided sign test on those discordant utterances (damage.sign_test_p)


def compare_margin_sets(sets: list[tuple[list[float | None], list[float | None]]], n_boot: int = 2000,
                        seed: int = 0) -> MarginComparison | None:
    """The paired comparison pooled over data sets, each a (system margins, reference margins) pair for the same
    utterances: mean difference over every utterance with both margins, its bootstrap 95 % CI with each set
    resampled on its own (``ratio_bootstrap``'s strata), counts and the sign test summed over sets. None when no
    utterance has both."""
    strata, n, below, below_ref, new, fixed = [], 0, 0, 0, 0, 0
    for system, reference in sets:
        if len(system) != len(reference):
            raise ValueError(f"stop margins: {len(system)} system margins against {len(reference)} reference "
                             f"margins")
        pairs = [(s, r) for s, r in zip(system, reference) if s is not None and r is not None]
        if not pairs:
            continue
        s = np.array([p[0] for p in pairs])
        r = np.array([p[1] for p in pairs])
        strata.append((s - r, np.ones_like(s)))
        n += len(pairs)
        below, below_ref = below + int((s < 0).sum()), below_ref + int((r < 0).sum())
        new, fixed = new + int(((s < 0) & (r >= 0)).sum()), fixed + int(((s >= 0) & (r < 0)).sum())
    if not strata:
        return None
    mean, lo, hi = ratio_bootstrap(strata, n_boot=n_boot, seed=seed)
    return MarginComparison(n, mean, lo, hi, below, below_ref, new, fixed, sign_test_p(new, fixed))


def compare_margins(system: list[float | None], reference: list[float | None], n_boot: int = 2000,
                    seed: int = 0) -> MarginComparison | None:
    """Paired mean difference with a bootstrap 95 % CI over the utterances of one set; None when no utterance
    has both margins."""
    return compare_margin_sets([(system, reference)], n_boot=n_boot, seed=seed)
