"""TARQ: rareBAL metric + metric-consistent residual correction (TARQ paper §4.2, Algorithm 1).

Per weight W of the group, with H_rB from eq. 8 and G = (H_rB + δI)⁻¹ (δ = the damping the Cholesky
factorisation used, so G = UᵀU comes for free from the GPTQ factor):

    Ŵ0    = GPTQ(W, H_rB)                                   pilot sweep
    D     = W H_Δ G                                         eq. 11, H_Δ = Σ (x_fp − x_q) x_qᵀ
    E     = Ŵ0 − W
    α*    = ⟨E, D⟩_{H_rB} / (⟨D, D⟩_{H_rB} + ε)              eq. 12, ⟨A,B⟩_H = tr(A H Bᵀ)
    Ŵ     = GPTQ(W + α* D, H_rB)                            final sweep

When D = 0 (no propagated error yet, e.g. the first layer) α* = 0 and the pilot is returned (identical
to a second sweep of W, which is deterministic).

``alpha_rule="fade"`` replaces the closed form by FADE's per-layer α (methods/fade.py: a vulnerability score of the
weights and a cross-fitted reliability score of the correction; zero scores give ``qep_alpha``), so the residual
becomes a QEP-strength propagation under the rareBAL metric (issue 15). No pilot sweep is needed then.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import QuantMethod, check_finite, cholesky, gptq_project, h_inner, inverse_from_factor
from .fade import LayerAlphas
from .rarebal import rarebal_metric
from .registry import register_method

ALPHA_RULES = ("closed-form", "fade")


@register_method("tarq")
class TARQ(QuantMethod):
    needs_fp_stream = True

    @dataclass
    class Config:
        damp: float = 0.01
        block_size: int = 128
        cost_ratio: float = 1.0
        eps: float = 1e-12
        alpha: float | None = None   # force α (tests/ablations); None = alpha_rule
        alpha_rule: str = "closed-form"   # "closed-form" (eq. 12) | "fade" (per-layer, methods/fade.py)
        qep_alpha: float = 0.5            # fade: α of a layer with zero scores
        alpha_min: float = 0.0
        alpha_max: float = 1.0

    def __init__(self, config=None):
        super().__init__(config)
        if self.config.alpha_rule not in ALPHA_RULES:
            raise ValueError(f"alpha_rule must be one of {ALPHA_RULES}, got {self.config.alpha_rule!r}")
        c = self.config
        self.alphas = (LayerAlphas(c.qep_alpha, c.alpha_min, c.alpha_max, True, True)
                       if c.alpha_rule == "fade" else None)

    @property
    def needs_folds(self) -> bool:   # type: ignore[override]
        return self.alphas is not None

    def prepare(self, model, weight_names) -> None:
        if self.alphas is not None:
            self.alphas.prepare(model, weight_names)

    def metric(self, stats):
        return rarebal_metric(stats, self.config.cost_ratio, self.config.eps)[0]

    def quantize_group(self, weights, stats, lat):
        names = list(weights)
        for name, W in weights.items():
            check_finite(name, W)
        if stats.H_delta is None:
            raise ValueError(f"{', '.join(names)}: TARQ needs H_delta (FP stream) statistics")
        H_rb, lam = rarebal_metric(stats, self.config.cost_ratio, self.config.eps)
        chol = cholesky(H_rb, self.config.damp, names)
        fade = self.alphas is not None and self.config.alpha is None
        pilot = None if fade else gptq_project(weights, chol, lat, self.config.block_size, H_rb)
        G = inverse_from_factor(chol.U)
        extra: dict[str, dict] = {}
        alphas: dict[str, float] = {}
        targets = {}
        for name in names:
            W = weights[name].detach().float().clone()
            W[:, chol.dead] = 0.0
            D = (W @ stats.H_delta.float()) @ G
            dd = h_inner(D, D, H_rb)
            if self.config.alpha is not None:
                alpha = float(self.config.alpha)
            elif fade:
                alpha, extra[name] = self.alphas.alpha(name, W, stats, self.config.damp)
            else:
                E = pilot[name].dequant - W
                alpha = h_inner(E, D, H_rb) / (dd + self.config.eps) if dd > 0 else 0.0
            alphas[name] = alpha
            if alpha != 0.0 or pilot is None:
                targets[name] = W + alpha * D if alpha != 0.0 else W
        final = gptq_project(targets, chol, lat, self.config.block_size, H_rb) if targets else {}
        out = {}
        for name in names:
            r = final[name] if name in final else pilot[name]
            r.info.update(extra.get(name, {}))
            r.info.update(lambda_=lam, alpha=alphas[name])
            r.info["lambda"] = r.info.pop("lambda_")
            out[name] = r
        return out
