"""Teacher-forced token KL against a reference model: the damage a quantized file does to the next-token
distribution, at every position of every utterance (what llama.cpp's ``perplexity --kl-divergence`` measures for
language models, here for ASR decoders).

Word error counts change only where a decision flips, so two files a few tenths of a WER point apart cannot be
ranked on a dev set. The distribution behind every decision moves at every position. For an utterance forced as
``prompt + t_1 … t_n + EOT``, with ℓ^ref_j and ℓ_j the reference's and the system's logits predicting position j:

    KL_j = Σ_v p^ref_j(v) · (log p^ref_j(v) − log p_j(v)),      p = softmax(ℓ)                           (1)

over the rows predicting t_1 … t_n and EOT. The prompt rows are left out: they are forced at inference and never
predicted. Each utterance keeps Σ_j KL_j, its number of rows, and how many rows have the reference's argmax on
top (top-1 agreement), and the same sums over its **rare rows**: those predicting a token of a rare word (the
calibration's rarity tags, tarq.lexicon's one definition), where the words a tail-aware quantizer protects are
decided. A set's or a pool's KL is Σ KL / Σ rows, a per-position mean. Its bootstrap CI resamples
utterances within each set (``ratio_bootstrap``). Two systems are paired on the same utterances through
Σ KL_A − Σ KL_B per utterance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .bootstrap import ratio_bootstrap


def kl_rows(ref_logp: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Eq. (1) per row: KL(ref ‖ softmax(logits)), nats. ``ref_logp`` holds the reference's log-probabilities.
    Differentiable in ``logits`` (calib/scale_tune.py fits to it)."""
    logp = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1)


@dataclass(frozen=True)
class UtteranceKL:
    kl_sum: float       # Σ_j KL_j over the scored rows, nats
    rows: int           # rows scored (transcript tokens + EOT)
    top1_same: int      # rows where the system's argmax is the reference's
    kl_max: float       # the largest KL_j
    kl_sum_rare: float = 0.0   # Σ_j KL_j over the scored rows tagged rare
    rows_rare: int = 0


def utterance_kl(ref_logits: torch.Tensor, logits: torch.Tensor, n_prompt: int,
                 rare: torch.Tensor | None = None) -> UtteranceKL:
    """Eq. (1) on one teacher-forced utterance. Both logits are [T − 1, V], where row r predicts token r + 1 of
    the forced sequence; the scored rows start at n_prompt − 1, the row predicting t_1. ``rare``: bool [T − 1],
    the rows that predict a rare word's token (CalibSample.tail)."""
    if ref_logits.shape != logits.shape or ref_logits.ndim != 2:
        raise ValueError(f"token KL: reference logits {tuple(ref_logits.shape)} and system logits "
                         f"{tuple(logits.shape)} must be the same [positions, vocabulary]")
    if not 1 <= n_prompt <= ref_logits.shape[0]:
        raise ValueError(f"token KL: a prompt of {n_prompt} tokens leaves no row of {ref_logits.shape[0]} to score")
    ref = ref_logits[n_prompt - 1:].double()
    sys_ = logits[n_prompt - 1:].double()
    kl = kl_rows(torch.log_softmax(ref, dim=-1), sys_)
    same = int((ref.argmax(-1) == sys_.argmax(-1)).sum())
    if rare is None:
        return UtteranceKL(float(kl.sum()), int(kl.numel()), same, float(kl.max()))
    if rare.shape != ref_logits.shape[:1]:
        raise ValueError(f"token KL: {rare.shape[0]} rare tags for {ref_logits.shape[0]} rows")
    r = rare[n_prompt - 1:].to(kl.device, torch.bool)
    return UtteranceKL(float(kl.sum()), int(kl.numel()), same, float(kl.max()), float(kl[r].sum()), int(r.sum()))


def _sums(u: UtteranceKL, rare: bool) -> tuple[float, int]:
    return (u.kl_sum_rare, u.rows_rare) if rare else (u.kl_sum, u.rows)


def pooled_kl(sets: Sequence[Sequence[UtteranceKL]], n_boot: int = 2000, seed: int = 0, rare: bool = False
              ) -> tuple[float | None, float | None, float | None]:
    """Per-position mean KL over every utterance of ``sets`` (``rare``: over their rare rows only) with its
    bootstrap 95 % CI (each set resampled on its own); None where no row is scored."""
    strata = [(np.array([_sums(u, rare)[0] for u in s]), np.array([_sums(u, rare)[1] for u in s], dtype=np.float64))
              for s in sets]
    return ratio_bootstrap(strata, n_boot=n_boot, seed=seed)


def paired_kl(a: Sequence[Sequence[UtteranceKL]], b: Sequence[Sequence[UtteranceKL]], n_boot: int = 2000,
              seed: int = 0, rare: bool = False) -> tuple[float | None, float | None, float | None]:
    """KL(a) − KL(b) per position (``rare``: per rare row), paired on the same utterances (same order within each
    set), with its bootstrap 95 % CI."""
    strata = []
    for sa, sb in zip(a, b, strict=True):
        if len(sa) != len(sb) or any(_sums(x, rare)[1] != _sums(y, rare)[1] or x.rows != y.rows
                                     for x, y in zip(sa, sb)):
            raise ValueError("token KL: paired systems must be scored on the same utterances and rows")
        strata.append((np.array([_sums(x, rare)[0] - _sums(y, rare)[0] for x, y in zip(sa, sb)]),
                       np.array([_sums(x, rare)[1] for x in sa], dtype=np.float64)))
    return ratio_bootstrap(strata, n_boot=n_boot, seed=seed)


def top1_agreement(sets: Sequence[Sequence[UtteranceKL]]) -> float:
    """Share of scored rows whose argmax is the reference's."""
    rows = sum(u.rows for s in sets for u in s)
    return sum(u.top1_same for s in sets for u in s) / rows if rows else float("nan")
