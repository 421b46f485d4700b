"""Streamed second-moment statistics for one group of Linears sharing an input (TARQ paper eqs. 7 and 11).

    H_common = Σ_{t∈C} w_t x_t x_tᵀ,   H_tail = Σ_{t∈T} w_t x_t x_tᵀ     (eq. 7, x from the partly quantized model)
    H_Δ      = Σ_t w_t (x_t^fp − x_t) x_tᵀ                               (eq. 11, FP vs partly quantized)

w_t = 1 except for rows that stand for several positions (the subsampled padding frames of Whisper's 30-s
window, docs/methods.md §2: w_t = the number of frames a kept frame represents).

Each ``add`` takes one utterance's rows; rows are buffered until ``flush_rows`` of them have arrived (about
four 5-s utterances of Whisper encoder frames) and then enter the accumulators in one update. H is symmetric, so
only its lower triangle is accumulated, by a float32 symmetric rank-k update per flush
(``tarq._C.syrk_lower_accumulate``: half the multiply-adds of a GEMM, fixed work split, so the sums do not depend
on the thread count) added into float64; ``finalize`` mirrors it. H_Δ is not symmetric: one float32 GEMM per
flush, added into float64. Why buffer: every update ends in an O(n²) float32 → float64 add (for a 1536-wide fc2
input, ~47 MB of memory traffic per matrix), which per utterance cost about a fifth of the statistics phase, and
longer GEMMs run closer to the CPU's peak. The float32 sums then run over ~2,000 rows instead of ~600: relative
rounding ~√K·2⁻²⁴, far below the float64 accumulation's role (summing hundreds of such blocks).
H_tail is allocated only when a tail row arrives. Without the native extension (or on a GPU) H uses the same
float32 GEMM as H_Δ.

First moments: beside H the accumulator sums Σ w_t x_t (and Σ w_t x_t^fp when the FP stream is tracked) in
float64, so the solver can set a layer's bias to the one that minimizes its own objective (bias correction,
pipeline.corrected_bias): O(n) per row, nothing next to the O(n²) of H.

Shrinkage (``track_units``): each ``add`` is one sampling unit (one utterance; its positions are not independent
of each other). Beside H the accumulator keeps Σ_u off(S_u), S_u = the unit's own Σ w x xᵀ and off(A) = Σ_{i≠j}
A_ij², from which ``shrinkage_intensity`` estimates how far H's off-diagonal part is from its expectation
(Schäfer & Strimmer 2005, target D).
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
    n_units: int = 0                       # sampling units (utterances) seen with track_units, else 0
    unit_offdiag_sq: float = 0.0           # Σ_u off(S_u) over those units (module docstring)
    sum_q: torch.Tensor | None = None      # float64 [n]: Σ w_t x_t over every row (common and tail)
    sum_fp: torch.Tensor | None = None     # float64 [n]: Σ w_t x_t^fp (FP stream tracked), else None
    weight_sum: float = 0.0                # Σ w_t, unrounded (n_common + n_tail up to rounding)

    @property
    def mean_q(self) -> torch.Tensor | None:
        """E[x] over the rows, each weighted by the positions it stands for (float64 [n]); None when unknown."""
        return self.sum_q / self.weight_sum if self.sum_q is not None and self.weight_sum > 0 else None

    @property
    def mean_fp(self) -> torch.Tensor | None:
        """E[x^fp] over the same rows and weights; None when the FP stream was not tracked."""
        return self.sum_fp / self.weight_sum if self.sum_fp is not None and self.weight_sum > 0 else None

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


SHRINKAGE = ("none", "diagonal")   # CalibConfig.shrinkage: the sample H, or shrink_offdiagonal(shrinkage_intensity)
FLUSH_ROWS = 2048   # rows buffered before one update (see the module docstring)


def offdiag_sq_of_rows(x: torch.Tensor) -> float:
    """off(xᵀx) = ‖xᵀx‖²_F − Σ_i (xᵀx)_ii² for rows x [T, n], through the smaller of the two Gram matrices
    (‖xᵀx‖_F = ‖xxᵀ‖_F), summed in float64."""
    if x.shape[0] == 0:
        return 0.0
    gram = x @ x.T if x.shape[0] <= x.shape[1] else x.T @ x
    diag = (x * x).sum(dim=0).double()
    return float(gram.double().pow(2).sum() - diag.pow(2).sum())


def shrinkage_intensity(stats: "GroupStats") -> float:
    """ρ in H* = (1 − ρ) H + ρ diag(H): the Schäfer–Strimmer (2005) estimate for their target D (shrink the
    off-diagonal entries, keep the diagonal) with utterances as the sampling units.

    With U units, unit matrices S_u and H = Σ_u S_u, the mean S̄ = H/U has Var̂(S̄_ij) = (Σ_u S_u,ij² − H_ij²/U) /
    (U(U − 1)); ρ = Σ_{i≠j} Var̂(S̄_ij) / Σ_{i≠j} S̄_ij² = (U Σ_u off(S_u) / off(H) − 1) / (U − 1), clipped to
    [0, 1]. Identical units give 0 (H's off-diagonal part is then known exactly); the more the units disagree
    relative to what they share, the nearer ρ comes to 1. Needs ``track_units``."""
    U = stats.n_units
    if U < 2:
        return 0.0
    H = stats.H
    off_h = float(H.pow(2).sum() - H.diagonal().pow(2).sum())
    if off_h <= 0.0:
        return 0.0
    rho = (U * stats.unit_offdiag_sq / off_h - 1.0) / (U - 1)
    return min(1.0, max(0.0, rho))


def shrink_offdiagonal(stats: "GroupStats", rho: float) -> "GroupStats":
    """A copy of ``stats`` with H_common and H_tail's off-diagonal entries scaled by (1 − ρ) (so H = H_common +
    H_tail shrinks the same way, and so does any λ-weighted sum of the two). H_Δ and the fold statistics are the
    cross-moments of another quantity and stay as they are."""
    from dataclasses import replace

    def shrink(M: torch.Tensor) -> torch.Tensor:
        return (1.0 - rho) * M + rho * torch.diag_embed(M.diagonal())

    return replace(stats, H_common=shrink(stats.H_common), H_tail=shrink(stats.H_tail))


def _weighted_sum(x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Σ_t w_t x_t of rows x [T, n] in float64 (w None: all 1)."""
    return x.sum(dim=0, dtype=torch.float64) if w is None else (w[:, None] * x).sum(dim=0, dtype=torch.float64)


class StatsAccumulator:
    def __init__(self, n: int, track_delta: bool, device: torch.device | str = "cpu", flush_rows: int = FLUSH_ROWS,
                 track_units: bool = False):
        self.n = n
        self.track_units = track_units
        self.n_units = 0
        self.unit_offdiag_sq = 0.0
        self.device = torch.device(device)
        self.H_common = torch.zeros(n, n, dtype=torch.float64, device=device)
        self.H_tail: torch.Tensor | None = None
        self.H_delta = torch.zeros(n, n, dtype=torch.float64, device=device) if track_delta else None
        self.n_common = 0.0
        self.n_tail = 0.0
        self.sum_q = torch.zeros(n, dtype=torch.float64, device=device)
        self.sum_fp = torch.zeros(n, dtype=torch.float64, device=device) if track_delta else None
        self._syrk = _native_syrk() if self.device.type == "cpu" else None
        self.flush_rows = max(1, int(flush_rows))
        # rows waiting for the next update: H_common's and H_tail's (scaled by √w), H_Δ's (w·δ, x_q) pairs
        self._pending: dict[str, list[torch.Tensor]] = {"common": [], "tail": [], "delta_d": [], "delta_x": []}
        self._pending_rows = 0

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
        # here (not only at the buffered update), so the caller can name the utterance; a NaN/Inf anywhere makes
        # the sum non-finite, and one reduction costs a fraction of isfinite(x).all()'s mask
        if not bool(torch.isfinite(x_q.sum())):
            raise ValueError("non-finite calibration activations")
        w = None
        if weight is not None:
            w = torch.as_tensor(weight, dtype=torch.float32, device=x_q.device).reshape(-1).expand(x_q.shape[0])
            if not bool((w > 0).all()):
                raise ValueError("row weights must be positive")
            if bool((w == 1).all()):
                w = None
        if self.H_delta is not None and x_fp is None:
            raise ValueError("H_delta tracking needs the FP-stream activations")
        # buffered rows are copies: the caller may reuse or modify its tensors after add() returns
        xs = x_q.clone() if w is None else x_q * w.sqrt()[:, None]
        if self.track_units:
            self.n_units += 1
            self.unit_offdiag_sq += offdiag_sq_of_rows(xs)
        counts = torch.ones(x_q.shape[0]) if w is None else w.double().cpu()
        self.sum_q += _weighted_sum(x_q, w)
        if self.sum_fp is not None:
            self.sum_fp += _weighted_sum(x_fp.reshape(-1, self.n).float(), w)
        if tail is None or not bool(tail.any()):
            self._pending["common"].append(xs)
            self.n_common += float(counts.sum())
        else:
            tail = tail.reshape(-1).bool()
            if tail.numel() != x_q.shape[0]:
                raise ValueError(f"tail mask has {tail.numel()} entries for {x_q.shape[0]} rows")
            if self.H_tail is None:
                self.H_tail = torch.zeros_like(self.H_common)
            self._pending["common"].append(xs[~tail])
            self._pending["tail"].append(xs[tail])
            tail_cpu = tail.cpu()
            self.n_common += float(counts[~tail_cpu].sum())
            self.n_tail += float(counts[tail_cpu].sum())
        if self.H_delta is not None:
            d = x_fp.reshape(-1, self.n).float() - x_q
            if w is not None:
                d = d * w[:, None]
            self._pending["delta_d"].append(d)
            self._pending["delta_x"].append(xs if w is None else x_q.clone())
        self._pending_rows += x_q.shape[0]
        if self._pending_rows >= self.flush_rows:
            self._flush()

    def _flush(self) -> None:
        """Fold the buffered rows into the float64 accumulators (one rank-k update / GEMM per matrix)."""
        pend = self._pending
        for key, H in (("common", self.H_common), ("tail", self.H_tail)):
            if pend[key]:
                self._add_second_moment(H, torch.cat(pend[key]) if len(pend[key]) > 1 else pend[key][0])
                self._check_finite(H)
        if pend["delta_d"]:
            d, x = torch.cat(pend["delta_d"]), torch.cat(pend["delta_x"])
            self.H_delta.add_(d.T @ x)   # float32 product added in float64
        for rows in pend.values():
            rows.clear()
        self._pending_rows = 0

    @staticmethod
    def _check_finite(H: torch.Tensor) -> None:
        """A NaN/Inf in any row reaches diag(H) (H_ii += x_ti²), so checking the n diagonal entries after the
        update catches non-finite activations (and an overflowing second moment) without scanning the rows."""
        if not bool(torch.isfinite(H.diagonal()).all()):
            raise ValueError("non-finite calibration activations")

    def finalize(self) -> GroupStats:
        self._flush()
        H_tail = self.H_tail if self.H_tail is not None else torch.zeros_like(self.H_common)
        if self._syrk is not None:   # only the lower triangles were accumulated: mirror them
            for H in (self.H_common, H_tail):
                H.copy_(torch.tril(H) + torch.tril(H, -1).T)
        return GroupStats(self.H_common, H_tail, self.H_delta, int(round(self.n_common)), int(round(self.n_tail)),
                          n_units=self.n_units, unit_offdiag_sq=self.unit_offdiag_sq, sum_q=self.sum_q,
                          sum_fp=self.sum_fp, weight_sum=self.n_common + self.n_tail)


class FoldedStatsAccumulator:
    """Statistics kept per calibration fold (utterances alternate between two folds) plus D = Σ δδᵀ per fold, for
    methods that judge a correction fitted on one fold against the other (FADE's R_calib). ``finalize`` sums the
    folds into the ordinary GroupStats (identical sums, in a different order) and attaches the fold statistics."""

    def __init__(self, n: int, device: torch.device | str = "cpu", n_folds: int = 2, flush_rows: int = FLUSH_ROWS,
                 track_units: bool = False):
        self.folds = [StatsAccumulator(n, track_delta=True, device=device, flush_rows=flush_rows,
                                       track_units=track_units)
                      for _ in range(n_folds)]
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
            n_tail=sum(p.n_tail for p in parts), n_units=sum(p.n_units for p in parts),
            unit_offdiag_sq=sum(p.unit_offdiag_sq for p in parts), sum_q=sum(p.sum_q for p in parts),
            sum_fp=sum(p.sum_fp for p in parts), weight_sum=sum(p.weight_sum for p in parts))
        total.folds = [FoldStats(H=p.H, C=p.H_delta, D=D) for p, D in zip(parts, self.D)]
        return total
