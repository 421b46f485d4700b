"""Streamed second-moment statistics for one group of Linears sharing an input (TARQ paper eqs. 7 and 11).

    H_common = Σ_{t∈C} w_t x_t x_tᵀ,   H_tail = Σ_{t∈T} w_t x_t x_tᵀ     (eq. 7, x from the partly quantized model)
    H_Δ      = Σ_t w_t (x_t^fp − x_t) x_tᵀ                               (eq. 11, FP vs partly quantized)

w_t = 1 except for rows that stand for several positions (the subsampled padding frames of Whisper's 30-s
window, docs/methods.md §2: w_t = the number of frames a kept frame represents).

Each ``add`` takes one utterance's rows. H is symmetric, so only its lower triangle is accumulated, by a
float32 symmetric rank-k update per call (``tarq._C.syrk_lower_accumulate``: half the multiply-adds of a
GEMM, fixed work split, so the sums do not depend on the thread count) added into float64; ``finalize``
mirrors it. H_Δ is not symmetric: one float32 GEMM per call, added into float64. H_tail is allocated only
when a tail row arrives. Without the native extension (or on a GPU) H uses the same float32 GEMM as H_Δ.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FoldStats:
    """One calibration fold's statistics (FADE's cross-fitting, methods/fade.py): H = Σ x̂x̂ᵀ, C = H_Δ = Σ δ x̂ᵀ and
    D = Σ δδᵀ with δ = x_fp − x̂, over the utterances of the fold."""
    H: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor


@dataclass
class GroupStats:
    H_common: torch.Tensor          # float64 [n, n]
    H_tail: torch.Tensor            # float64 [n, n] (zeros when no tail positions)
    H_delta: torch.Tensor | None    # float64 [n, n] or None when the FP stream is not tracked
    n_common: int                   # positions (weighted: a subsampled padding frame counts for those it stands for)
    n_tail: int
    folds: list[FoldStats] | None = None   # per-fold statistics when the method cross-fits (two folds by utterance)

    @property
    def H(self) -> torch.Tensor:
        """The plain (frequency-weighted) metric H = H_common + H_tail."""
        return self.H_common + self.H_tail if self.n_tail else self.H_common

    @property
    def n(self) -> int:
        return self.H_common.shape[0]


def _native_syrk():
    """tarq._C.syrk_lower_accumulate when the extension was built with BLAS (else None: torch GEMM)."""
    try:
        from .. import _C
    except ImportError:
        return None
    return _C.syrk_lower_accumulate if getattr(_C, "has_blas", False) else None


class StatsAccumulator:
    def __init__(self, n: int, track_delta: bool, device: torch.device | str = "cpu"):
        self.n = n
        self.device = torch.device(device)
        self.H_common = torch.zeros(n, n, dtype=torch.float64, device=device)
        self.H_tail: torch.Tensor | None = None
        self.H_delta = torch.zeros(n, n, dtype=torch.float64, device=device) if track_delta else None
        self.n_common = 0.0
        self.n_tail = 0.0
        self._syrk = _native_syrk() if self.device.type == "cpu" else None

    def _add_second_moment(self, H: torch.Tensor, x: torch.Tensor) -> None:
        """Lower triangle of H += xᵀx (x float32 [rows, n], rows already scaled by √weight)."""
        if x.shape[0] == 0:
            return
        if self._syrk is not None:
            self._syrk(H.numpy(), x.contiguous().numpy(), 1.0)
            return
        H.add_(x.T @ x)   # float32 product added in float64 (exact widening, no float64 copy)

    def add(self, x_q: torch.Tensor, x_fp: torch.Tensor | None = None, tail: torch.Tensor | None = None,
            weight: torch.Tensor | float | None = None) -> None:
        """Rows of ``x_q`` ([T, n], partly quantized stream), matching rows of ``x_fp``, a tail mask [T] and the
        number of positions each row stands for (``weight``: None = 1 each, a scalar, or a [T] tensor).

        Weighted rows enter H scaled by √w and H_Δ with (x_fp − x_q) scaled by w, so one rank-k update and one
        GEMM serve all rows of an utterance (w = 4, the default padding stride, scales exactly by 2 and 4)."""
        x_q = x_q.reshape(-1, self.n).float()
        w = None
        if weight is not None:
            w = torch.as_tensor(weight, dtype=torch.float32, device=x_q.device).reshape(-1).expand(x_q.shape[0])
            if not bool((w > 0).all()):
                raise ValueError("row weights must be positive")
            if bool((w == 1).all()):
                w = None
        xs = x_q if w is None else x_q * w.sqrt()[:, None]
        counts = torch.ones(x_q.shape[0]) if w is None else w.double().cpu()
        if tail is None or not bool(tail.any()):
            self._add_second_moment(self.H_common, xs)
            self._check_finite(self.H_common)
            self.n_common += float(counts.sum())
        else:
            tail = tail.reshape(-1).bool()
            if tail.numel() != x_q.shape[0]:
                raise ValueError(f"tail mask has {tail.numel()} entries for {x_q.shape[0]} rows")
            if self.H_tail is None:
                self.H_tail = torch.zeros_like(self.H_common)
            self._add_second_moment(self.H_common, xs[~tail])
            self._add_second_moment(self.H_tail, xs[tail])
            self._check_finite(self.H_common)
            self._check_finite(self.H_tail)
            tail_cpu = tail.cpu()
            self.n_common += float(counts[~tail_cpu].sum())
            self.n_tail += float(counts[tail_cpu].sum())
        if self.H_delta is not None:
            if x_fp is None:
                raise ValueError("H_delta tracking needs the FP-stream activations")
            d = x_fp.reshape(-1, self.n).float() - x_q
            if w is not None:
                d = d * w[:, None]
            self.H_delta.add_(d.T @ x_q)   # float32 product added in float64

    @staticmethod
    def _check_finite(H: torch.Tensor) -> None:
        """A NaN/Inf in any row reaches diag(H) (H_ii += x_ti²), so checking the n diagonal entries after the
        update catches non-finite activations (and an overflowing second moment) without scanning the rows."""
        if not bool(torch.isfinite(H.diagonal()).all()):
            raise ValueError("non-finite calibration activations")

    def finalize(self) -> GroupStats:
        H_tail = self.H_tail if self.H_tail is not None else torch.zeros_like(self.H_common)
        if self._syrk is not None:   # only the lower triangles were accumulated: mirror them
            for H in (self.H_common, H_tail):
                H.copy_(torch.tril(H) + torch.tril(H, -1).T)
        return GroupStats(self.H_common, H_tail, self.H_delta, int(round(self.n_common)), int(round(self.n_tail)))


class FoldedStatsAccumulator:
    """Statistics kept per calibration fold (utterances alternate between two folds) plus D = Σ δδᵀ per fold, for
    methods that judge a correction fitted on one fold against the other (FADE's R_calib). ``finalize`` sums the
    folds into the ordinary GroupStats (identical sums, in a different order) and attaches the fold statistics."""

    def __init__(self, n: int, device: torch.device | str = "cpu", n_folds: int = 2):
        self.folds = [StatsAccumulator(n, track_delta=True, device=device) for _ in range(n_folds)]
        self.D = [torch.zeros(n, n, dtype=torch.float64, device=device) for _ in range(n_folds)]
        self.n = n

    def add(self, x_q, x_fp=None, tail=None, weight=None, *, fold: int = 0) -> None:
        if x_fp is None:
            raise ValueError("cross-fitted statistics need the FP-stream activations")
        acc = self.folds[fold % len(self.folds)]
        acc.add(x_q, x_fp, tail, weight)
        d = x_fp.reshape(-1, self.n).float() - x_q.reshape(-1, self.n).float()
        if weight is not None:
            w = torch.as_tensor(weight, dtype=torch.float32, device=d.device).reshape(-1).expand(d.shape[0])
            d = d * w.sqrt()[:, None]
        self.D[fold % len(self.folds)] += (d.T @ d).double()

    def finalize(self) -> GroupStats:
        parts = [a.finalize() for a in self.folds]
        total = GroupStats(
            H_common=sum(p.H_common for p in parts), H_tail=sum(p.H_tail for p in parts),
            H_delta=sum(p.H_delta for p in parts), n_common=sum(p.n_common for p in parts),
            n_tail=sum(p.n_tail for p in parts))
        total.folds = [FoldStats(H=p.H, C=p.H_delta, D=D) for p, D in zip(parts, self.D)]
        return total
