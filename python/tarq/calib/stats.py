"""Streamed second-moment statistics for one group of Linears sharing an input (TARQ paper eqs. 7 and 11).

    H_common = Σ_{t∈C} x_t x_tᵀ,   H_tail = Σ_{t∈T} x_t x_tᵀ            (eq. 7, x from the partly quantized model)
    H_Δ      = Σ_t (x_t^fp − x_t) x_tᵀ                                   (eq. 11, FP vs partly quantized)

Each ``add`` takes one utterance's rows; the product of a chunk is formed in float32 (one GEMM) and
added to float64 accumulators, so nothing beyond the current chunk is kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GroupStats:
    H_common: torch.Tensor          # float64 [n, n]
    H_tail: torch.Tensor            # float64 [n, n] (zeros when no tail positions)
    H_delta: torch.Tensor | None    # float64 [n, n] or None when the FP stream is not tracked
    n_common: int
    n_tail: int

    @property
    def H(self) -> torch.Tensor:
        """The plain (frequency-weighted) metric H = H_common + H_tail."""
        return self.H_common + self.H_tail

    @property
    def n(self) -> int:
        return self.H_common.shape[0]


class StatsAccumulator:
    def __init__(self, n: int, track_delta: bool, device: torch.device | str = "cpu"):
        self.n = n
        self.H_common = torch.zeros(n, n, dtype=torch.float64, device=device)
        self.H_tail = torch.zeros(n, n, dtype=torch.float64, device=device)
        self.H_delta = torch.zeros(n, n, dtype=torch.float64, device=device) if track_delta else None
        self.n_common = 0
        self.n_tail = 0

    def add(self, x_q: torch.Tensor, x_fp: torch.Tensor | None = None, tail: torch.Tensor | None = None) -> None:
        """Rows of ``x_q`` ([T, n], partly quantized stream), matching rows of ``x_fp`` and a tail mask [T]."""
        x_q = x_q.reshape(-1, self.n).float()
        if not torch.isfinite(x_q).all():
            raise ValueError("non-finite calibration activations")
        if tail is None or not bool(tail.any()):
            self.H_common += (x_q.T @ x_q).double()
            self.n_common += x_q.shape[0]
        else:
            tail = tail.reshape(-1).bool()
            if tail.numel() != x_q.shape[0]:
                raise ValueError(f"tail mask has {tail.numel()} entries for {x_q.shape[0]} rows")
            xc, xt = x_q[~tail], x_q[tail]
            self.H_common += (xc.T @ xc).double()
            self.H_tail += (xt.T @ xt).double()
            self.n_common += xc.shape[0]
            self.n_tail += xt.shape[0]
        if self.H_delta is not None:
            if x_fp is None:
                raise ValueError("H_delta tracking needs the FP-stream activations")
            x_fp = x_fp.reshape(-1, self.n).float()
            self.H_delta += ((x_fp - x_q).T @ x_q).double()

    def finalize(self) -> GroupStats:
        return GroupStats(self.H_common, self.H_tail, self.H_delta, self.n_common, self.n_tail)
