"""rareBAL: GPTQ under the rare-balanced metric (TARQ paper eq. 8).

    λ = c · tr(H_common) / (tr(H_tail) + ε),    H_rB = H_common + λ H_tail

so that tr(λ H_tail) = c · tr(H_common) (eq. 9). Degenerate groups: with no tail positions (every encoder
group, whose frames are untagged) λ = 0 and H_rB = H_common = H, i.e. plain GPTQ; with no common
positions H_rB = H_tail.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..calib.stats import GroupStats
from .base import QuantMethod, check_finite, cholesky, gptq_project
from .registry import register_method


def rarebal_lambda(stats: GroupStats, cost_ratio: float = 1.0, eps: float = 1e-12) -> float:
    tr_c = float(torch.trace(stats.H_common))
    tr_t = float(torch.trace(stats.H_tail))
    if stats.n_tail == 0 or tr_t <= 0.0:
        return 0.0
    if stats.n_common == 0 or tr_c <= 0.0:
        return 1.0
    return cost_ratio * tr_c / (tr_t + eps)


def rarebal_metric(stats: GroupStats, cost_ratio: float = 1.0, eps: float = 1e-12) -> tuple[torch.Tensor, float]:
    lam = rarebal_lambda(stats, cost_ratio, eps)
    if lam == 0.0:
        return stats.H_common, lam
    return stats.H_common + lam * stats.H_tail, lam


@register_method("rarebal")
class RareBAL(QuantMethod):
    @dataclass
    class Config:
        damp: float = 0.01
        block_size: int = 128
        cost_ratio: float = 1.0   # c in λ = c · tr(H_common)/tr(H_tail)
        eps: float = 1e-12

    def metric(self, stats):
        return rarebal_metric(stats, self.config.cost_ratio, self.config.eps)[0]

    def quantize_group(self, weights, stats, lat):
        for name, W in weights.items():
            check_finite(name, W)
        H_rb, lam = rarebal_metric(stats, self.config.cost_ratio, self.config.eps)
        chol = cholesky(H_rb, self.config.damp, list(weights))
        out = gptq_project(weights, chol, lat, self.config.block_size, H_rb)
        for r in out.values():
            r.info["lambda"] = lam
        return out
