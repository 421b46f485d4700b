"""Paired bootstrap confidence intervals for the difference between two systems on the same references.

Utterances are resampled with replacement (the same draw for both systems, hence "paired"), the pooled rate of
each system is recomputed on the resample, and the percentile interval of (A - B) is reported. With several
datasets the resampling is stratified (each dataset resampled on its own) and the statistic is the unweighted
mean over datasets of the pooled rate, matching how the mean row of the tables is computed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .metrics import UttCounts

# metric -> (numerator, denominator) as functions of a [.., 4] array of
# (errors, rare_errors, numeral_errors, n_words, n_rare, n_numeral) sums
_COLS = ("errors", "rare_errors", "numeral_errors", "n_words", "n_rare", "n_numeral")
_METRICS = {
    "wer": (lambda s: s[..., 0], lambda s: s[..., 3]),
    "rare_wer": (lambda s: s[..., 1], lambda s: s[..., 4]),
    "common_wer": (lambda s: s[..., 0] - s[..., 1], lambda s: s[..., 3] - s[..., 4]),
    "numeral_wer": (lambda s: s[..., 2], lambda s: s[..., 5]),
}
METRICS = tuple(_METRICS)


@dataclass(frozen=True)
class BootstrapResult:
    metric: str
    a: float            # observed pooled rate of system A (fraction)
    b: float            # observed pooled rate of system B
    diff: float         # a - b (negative: A makes fewer errors)
    lo: float           # percentile CI of the difference
    hi: float
    p_a_worse: float    # fraction of resamples with a - b > 0
    p_a_better: float   # fraction of resamples with a - b < 0
    n_boot: int
    seed: int
    confidence: float

    @property
    def significant(self) -> bool:
        """True when the interval excludes zero."""
        return self.lo > 0 or self.hi < 0


def _matrix(counts: Sequence[UttCounts]) -> np.ndarray:
    return np.array([[getattr(c, f) for f in _COLS] for c in counts], dtype=np.int64).reshape(-1, len(_COLS))


def _rate(sums: np.ndarray, metric: str) -> np.ndarray:
    num, den = _METRICS[metric]
    d = den(sums).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d > 0, num(sums) / np.where(d > 0, d, 1), np.nan)


def paired_bootstrap(a: Sequence[Sequence[UttCounts]], b: Sequence[Sequence[UttCounts]], metric: str = "wer",
                     n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> BootstrapResult:
    """CI for rate(A) - rate(B). ``a`` and ``b`` are lists of datasets (strata), each a list of UttCounts for the
    same utterances in the same order (use ``[counts]`` for a single dataset)."""
    if metric not in _METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    if len(a) != len(b) or not a:
        raise ValueError(f"need the same non-zero number of datasets for both systems (got {len(a)} and {len(b)})")
    rng = np.random.default_rng(seed)
    obs_a, obs_b, boot_a, boot_b = [], [], [], []
    for ca, cb in zip(a, b):
        ma, mb = _matrix(ca), _matrix(cb)
        if ma.shape != mb.shape or not np.array_equal(ma[:, 3:], mb[:, 3:]):
            raise ValueError("paired bootstrap needs the same utterances and references for both systems "
                             "(word counts differ)")
        if len(ma) == 0:
            raise ValueError("paired bootstrap: a dataset has no utterances")
        idx = rng.integers(0, len(ma), size=(n_boot, len(ma)))
        obs_a.append(_rate(ma.sum(0), metric))
        obs_b.append(_rate(mb.sum(0), metric))
        boot_a.append(_rate(ma[idx].sum(1), metric))   # [n_boot]
        boot_b.append(_rate(mb[idx].sum(1), metric))
    with np.errstate(invalid="ignore"), _quiet():
        ra, rb = float(np.nanmean(obs_a)), float(np.nanmean(obs_b))
        diffs = np.nanmean(np.stack(boot_a), 0) - np.nanmean(np.stack(boot_b), 0)
    diffs = diffs[~np.isnan(diffs)]
    tail = (1 - confidence) / 2 * 100
    lo, hi = (np.percentile(diffs, [tail, 100 - tail]) if len(diffs) else (math.nan, math.nan))
    return BootstrapResult(metric=metric, a=ra, b=rb, diff=ra - rb, lo=float(lo), hi=float(hi),
                           p_a_worse=float(np.mean(diffs > 0)) if len(diffs) else math.nan,
                           p_a_better=float(np.mean(diffs < 0)) if len(diffs) else math.nan,
                           n_boot=n_boot, seed=seed, confidence=confidence)


class _quiet:
    """Silence numpy's 'Mean of empty slice' warning (all-nan strata are expected for empty classes)."""

    def __enter__(self):
        import warnings
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def ratio_bootstrap(strata: Sequence[tuple[np.ndarray, np.ndarray]], n_boot: int = 1000, seed: int = 0,
                    confidence: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(observed, lo, hi) of the pooled ratio sum(num) / sum(den) over all strata, with a percentile CI.

    ``strata`` are (num, den) per-utterance arrays, one pair per dataset; every dataset is resampled on its own
    (utterances with replacement, ``n_boot`` times), the resampled sums are pooled over datasets. A paired
    statistic (e.g. system minus reference) is paired because its per-utterance numerator already is the
    difference. None where the denominator is 0 (no words of that class)."""
    if not strata:
        raise ValueError("ratio bootstrap: no datasets")
    rng = np.random.default_rng(seed)
    num_obs = den_obs = 0
    boot_num = np.zeros(n_boot, dtype=np.float64)
    boot_den = np.zeros(n_boot, dtype=np.float64)
    for num, den in strata:
        num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
        if num.shape != den.shape or num.ndim != 1:
            raise ValueError("ratio bootstrap: numerator and denominator must be 1-D arrays of one length")
        if len(num) == 0:
            raise ValueError("ratio bootstrap: a dataset has no utterances")
        num_obs += num.sum()
        den_obs += den.sum()
        idx = rng.integers(0, len(num), size=(n_boot, len(num)))
        boot_num += num[idx].sum(1)
        boot_den += den[idx].sum(1)
    if den_obs == 0:
        return None, None, None
    ok = boot_den > 0
    ratios = boot_num[ok] / boot_den[ok]
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(ratios, [tail, 100 - tail])
    return float(num_obs / den_obs), float(lo), float(hi)
