"""QEP (Arai & Ichikawa 2025), the rule of the official OneCompression code (anchors-and-methods.md §1.1):

    C  = H_Δ = Σ (x_fp − x_q) x_qᵀ,   H = Σ x_q x_qᵀ
    ΔW = (W C)(H + λI)⁻¹,   λ = damp · mean diag H        (same damped factor as the GPTQ sweep)
    W ← W + α ΔW,  α = 0.5 default (perccorr)
    Ŵ = GPTQ(W, H)

Weights whose name contains one of ``exclude`` are quantized with plain GPTQ (OneCompression excludes
``mlp.down_proj`` by default; the Whisper analogue would be ``fc2``. Our default excludes nothing).
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import QuantMethod, check_finite, cholesky, gptq_project, inverse_from_factor
from .registry import register_method


@register_method("qep")
class QEP(QuantMethod):
    needs_fp_stream = True

    @dataclass
    class Config:
        damp: float = 0.01
        block_size: int = 128
        qep_alpha: float = 0.5
        exclude: tuple[str, ...] = ()

    def quantize_group(self, weights, stats, lat):
        names = list(weights)
        for name, W in weights.items():
            check_finite(name, W)
        if stats.H_delta is None:
            raise ValueError(f"{', '.join(names)}: QEP needs H_delta (FP stream) statistics")
        H = stats.H
        chol = cholesky(H, self.config.damp, names)
        G = inverse_from_factor(chol.U)
        targets, alphas = {}, {}
        for name in names:
            W = weights[name].detach().float()
            alpha = 0.0 if any(k in name for k in self.config.exclude) else float(self.config.qep_alpha)
            alphas[name] = alpha
            targets[name] = W + alpha * ((W @ stats.H_delta.float()) @ G) if alpha else W
        out = gptq_project(targets, chol, lat, self.config.block_size, H)
        for name in names:
            out[name].info["alpha"] = alphas[name]
        return out
