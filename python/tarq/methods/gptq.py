"""GPTQ under the plain (frequency-weighted) second moment H = Σ x xᵀ."""
from __future__ import annotations

from dataclasses import dataclass

from .base import QuantMethod, check_finite, cholesky, gptq_project
from .registry import register_method


@register_method("gptq")
class GPTQ(QuantMethod):
    @dataclass
    class Config:
        damp: float = 0.01        # λ = damp · mean diag H (escalated ×10 on Cholesky failure)
        block_size: int = 128

    def quantize_group(self, weights, stats, lat):
        for name, W in weights.items():
            check_finite(name, W)
        H = self.metric(stats)
        chol = cholesky(H, self.config.damp, list(weights))
        return gptq_project(weights, chol, lat, self.config.block_size, H)
