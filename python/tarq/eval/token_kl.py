"""Teacher-forced token KL against a reference model: the damage a quantized file does to the next-token
distribution, at every position of every utterance (what llama.cpp's ``perplexity --kl-divergence`` measures for
language models, here for ASR decoders).

Word error counts change only where a decision flips, so two files a few tenths of a WER point apart cannot be
ranked on a dev set. The distribution behind every decision moves at every position. For an utterance forced as
``prompt + t_1 … t_n + EOT``, with ℓ^ref_j and ℓ_j the reference's and the system's logits predicting position j:

    KL_j = Σ_v p^ref_j(v) · (log p^ref_j(v) − log p_j(v)),      p = softmax(ℓ)                           (1)

over the rows predicting t_1 … t_n and EOT. The prompt rows are left out: they are forced at inference and never
predicted. Each utterance keeps Σ_j KL_j, its number of rows, and how many rows have the reference's argmax on
top (top-1 agreement). A set's or a pool's KL is Σ KL / Σ rows, a per-position mean. Its bootstrap CI resamples
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


def utterance_kl(ref_logits: torch.Tensor, logits: torch.Tensor, n_prompt: int) -> UtteranceKL:
    """Eq. (1) on one teacher-forced utterance. Both logits are [T − 1, V], where row r predicts token r + 1 of
    the forced sequence; the scored rows start at n_prompt − 1, the row predicting t_1."""
    if ref_logits.shape != logits.shape or ref_logits.ndim != 2:
        raise ValueError(f"token KL: reference logits {tuple(ref_logits.shape)} and system logits "
                         f"{tuple(logits.shape)} must be the same [positions, vocabulary]")
    if not 1 <= n_prompt <= ref_logits.shape[0]:
        raise ValueError(f"token KL: a prompt of {n_prompt} tokens leaves no row of {ref_logits.shape[0]} to score")
    ref = ref_logits[n_prompt - 1:].double()
    sys_ = logits[n_prompt - 1:].double()
    kl = kl_rows(torch.log_softmax(ref, dim=-1), sys_)
    same = int((ref.argmax(-1) == sys_.argmax(-1)).sum())
    return UtteranceKL(float(kl.sum()), int(kl.numel()), same, float(kl.max()))


def pooled_kl(sets: Sequence[Sequence[UtteranceKL]], n_boot: int = 2000, seed: int = 0
              ) -> tuple[float, float, float]:
    """Per-position mean KL over every utterance of ``sets`` with its bootstrap 95 % CI (each set resampled on its
    own)."""
    strata = [(np.array([u.kl_sum for u in s]), np.array([u.rows for u in s], dtype=np.float64)) for s in sets]
    return ratio_bootstrap(strata, n_boot=n_boot, seed=seed)


def paired_kl(a: Sequence[Sequence[UtteranceKL]], b: Sequence[Sequence[UtteranceKL]], n_boot: int = 2000,
              seed: int = 0) -> tuple[float, float, float]:
    """KL(a) − KL(b) per position, paired on the same utterances (same order within each set), with its
    bootstrap 95 % CI."""
    strata = []
    for sa, sb in zip(a, b, strict=True):
        if len(sa) != len(sb) or any(x.rows != y.rows for x, y in zip(sa, sb)):
            raise ValueError("token KL: paired systems must be scored on the same utterances and rows")
        strata.append((np.array([x.kl_sum - y.kl_sum for x, y in zip(sa, sb)]),
                       np.array([x.rows for x in sa], dtype=np.float64)))
    return ratio_bootstrap(strata, n_boot=n_boot, seed=seed)


def top1_agreement(sets: Sequence[Sequence[UtteranceKL]]) -> float:
    """Share of scored rows whose argmax is the reference's."""
    rows = sum(u.rows for s in sets for u in s)
    return sum(u.top1_same for s in sets for u in s) / rows if rows else float("nan")
