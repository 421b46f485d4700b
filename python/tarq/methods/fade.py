"""FADE-style layer-adaptive error propagation (issue 15; definitions are ours, anchors-and-methods.md §1.2).

FADE (arXiv 2601.02455) gives each layer its own QEP propagation strength α_l from two scores: an intrinsic
vulnerability of the weights and the reliability of the calibration data's correction. The paper's exact
definitions are not public; tarq implements the definitions proposed in ../shared/notes/anchors-and-methods.md
§1.2, with the sigmoid centred on the configured QEP α so that zero scores give plain QEP exactly:

    g_l      = ½ log(r_l / srank(W_l)),  srank = ‖W‖_F² / ‖W‖_2²,  r_l = min(d_out, d_in)
    V_int(l) = (g_l − median_k g_k) / (1.4826 · MAD_k g_k)                 robust z-score over all quantized Linears
    ρ_B      = 1 − ‖W δ_B − ΔW_A X̂_B‖²_F / ‖W δ_B‖²_F                    fold A's correction judged on fold B
             = 1 − [tr(W D_B Wᵀ) − 2 tr(W C_B ΔW_Aᵀ) + tr(ΔW_A H_B ΔW_Aᵀ)] / tr(W D_B Wᵀ)
               with ΔW_A = (W C_A)(H_A + λI)⁻¹, C = Σ δ x̂ᵀ, H = Σ x̂ x̂ᵀ, D = Σ δ δᵀ, δ = x_fp − x̂ (folds split
               by utterance, never by position)
    R_calib  = logit(clip(½(ρ_A + ρ_B), 0.02, 0.98))                        0 when the layer has no propagated error
    s_l      = V_int(l) + R_calib(l)
    α_l      = α_min + (α_max − α_min) · σ(logit((α₀ − α_min)/(α_max − α_min)) + s_l)

then QEP with α_l: W ← W + α_l (W C)(H + λI)⁻¹, Ŵ = GPTQ(W, H) (methods/qep.py). With V = R = 0, α_l = α₀ (the
configured ``qep_alpha``): `fade` reduces to `qep` (a unit test checks codes are identical).

``alpha_fit="held-out"`` replaces the score mix by the α that minimises the same cross-fitted residual directly —
the shrinkage of a noisy correction that generalises best to the other fold:

    r_B(α)   = ‖W δ_B − α ΔW_A X̂_B‖²_F = tr(W D_B Wᵀ) − 2α tr(W C_B ΔW_Aᵀ) + α² tr(ΔW_A H_B ΔW_Aᵀ)
    α_l      = clip( [c_B + c_A] / [q_B + q_A], α_min, α_max ),  c_B = tr(W C_B ΔW_Aᵀ), q_B = tr(ΔW_A H_B ΔW_Aᵀ)

(both fold directions pooled; α₀ where no error reaches the layer, since then ΔW = 0). Why: the scores' sum is
unbounded — a layer whose stable-rank z-score is an outlier gets α → 1 however unreliable its correction (tiny.en's
tied embedding: V_int = +9.45, ρ = 0.18, α = 1.00, and FADE looped on real speech; benchmarks/README.md "Round 2").
The held-out α cannot exceed what the other fold supports: α = 1 when the two folds agree exactly, → 0 when the
correction is fitted noise, and with α_min ≥ 0 the pooled held-out residual at α_l is never above the uncorrected
one (Σ r_B(0)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import QuantMethod, check_finite, cholesky, gptq_project, h_inner, inverse_from_factor
from .registry import register_method

RHO_CLIP = (0.02, 0.98)
MAD_SCALE = 1.4826          # MAD -> standard deviation for a normal distribution


def stable_rank_gain(W: torch.Tensor, iters: int = 30) -> float:
    """g = ½ log(r / srank(W)): how far W's spectrum is from flat (0 for an orthogonal-like W, grows with a
    dominant direction that amplifies inherited input error). σ_max by power iteration (deterministic start)."""
    W = W.detach().double()
    m, n = W.shape
    fro2 = float((W * W).sum())
    if fro2 == 0.0:
        return 0.0
    v = torch.ones(n, dtype=torch.float64, device=W.device) / math.sqrt(n)
    for _ in range(iters):
        u = W @ v
        nu = u.norm()
        if nu == 0:
            return 0.0
        v = W.T @ (u / nu)
        v = v / v.norm()
    smax2 = float((W @ v).norm() ** 2)
    srank = fro2 / smax2
    return 0.5 * math.log(min(m, n) / srank)


def robust_z(values: dict[str, float]) -> dict[str, float]:
    """(v − median) / (1.4826 · MAD); all zeros when the MAD is 0 (e.g. a single layer)."""
    if not values:
        return {}
    t = torch.tensor(list(values.values()), dtype=torch.float64)
    med = float(t.median())
    mad = float((t - med).abs().median()) * MAD_SCALE
    if mad == 0.0:
        return {k: 0.0 for k in values}
    return {k: (v - med) / mad for k, v in values.items()}


def correction(W: torch.Tensor, C: torch.Tensor, H: torch.Tensor, damp: float) -> torch.Tensor:
    """ΔW = (W C)(H + λI)⁻¹, λ = damp · mean diag H (QEP's correction; float64)."""
    n = H.shape[0]
    H = H.double()
    lam = damp * float(H.diagonal().mean()) if n else 0.0
    Hd = H + lam * torch.eye(n, dtype=torch.float64, device=H.device)
    dead = H.diagonal() == 0
    Hd[dead, dead] = 1.0
    rhs = W.double() @ C.double()
    L = torch.linalg.cholesky(Hd)
    return torch.cholesky_solve(rhs.T, L).T


def held_out_terms(W: torch.Tensor, fit: "FoldStats", test: "FoldStats",
                   damp: float) -> tuple[float, float, float] | None:
    """(tr(W D_B Wᵀ), tr(W C_B ΔW_Aᵀ), tr(ΔW_A H_B ΔW_Aᵀ)) for ΔW_A fitted on ``fit`` (A) and judged on ``test`` (B):
    the three terms of r_B(α) (module docstring); None when B has no propagated error."""
    W = W.double()
    den = h_inner(W, W, test.D)
    if not den > 0:
        return None
    dW = correction(W, fit.C, fit.H, damp)
    return den, float((W @ test.C.double() * dW).sum()), h_inner(dW, dW, test.H)


def held_out_rho(W: torch.Tensor, fit: "FoldStats", test: "FoldStats", damp: float) -> float | None:
    """ρ of the correction fitted on ``fit`` and judged on ``test`` (None when test has no propagated error)."""
    terms = held_out_terms(W, fit, test, damp)
    if terms is None:
        return None
    den, cross, quad = terms
    return 1.0 - (den - 2.0 * cross + quad) / den


def held_out_alpha(W: torch.Tensor, folds: list["FoldStats"], damp: float) -> tuple[float | None, float | None]:
    """(α*, ρ*): the α minimising the pooled cross-fitted residual Σ_B r_B(α) (module docstring) and the fraction
    of the held-out propagated error it removes, 1 − Σ r_B(α*) / Σ tr(W D_B Wᵀ); (None, None) without error."""
    if len(folds) != 2:
        raise ValueError(f"FADE's held-out α needs exactly 2 calibration folds, got {len(folds)}")
    both = [t for t in (held_out_terms(W, folds[0], folds[1], damp), held_out_terms(W, folds[1], folds[0], damp))
            if t is not None]
    den, cross, quad = (sum(t[i] for t in both) for i in range(3))
    if not (den > 0 and quad > 0):
        return None, None
    alpha = cross / quad
    return alpha, cross * cross / (quad * den) if alpha > 0 else 0.0


@dataclass
class FoldStats:
    """Statistics of one calibration fold: H = Σ x̂x̂ᵀ, C = Σ δ x̂ᵀ, D = Σ δδᵀ (δ = x_fp − x̂)."""
    H: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor


def reliability(W: torch.Tensor, folds: list[FoldStats], damp: float) -> tuple[float, float | None]:
    """(R_calib, ρ): logit of the symmetrised cross-fitted ρ, clipped; (0, None) without propagated error."""
    if len(folds) != 2:
        raise ValueError(f"FADE's reliability needs exactly 2 calibration folds, got {len(folds)}")
    rhos = [r for r in (held_out_rho(W, folds[0], folds[1], damp), held_out_rho(W, folds[1], folds[0], damp))
            if r is not None]
    if not rhos:
        return 0.0, None
    rho = sum(rhos) / len(rhos)
    p = min(max(rho, RHO_CLIP[0]), RHO_CLIP[1])
    return math.log(p / (1 - p)), rho


def fade_alpha(score: float, alpha0: float, alpha_min: float = 0.0, alpha_max: float = 1.0) -> float:
    """α = α_min + (α_max − α_min) σ(logit(a₀) + s), a₀ = (α₀ − α_min)/(α_max − α_min): s = 0 gives α₀."""
    if not alpha_min < alpha_max:
        raise ValueError(f"need alpha_min < alpha_max, got [{alpha_min}, {alpha_max}]")
    a0 = (alpha0 - alpha_min) / (alpha_max - alpha_min)
    if not 0.0 < a0 < 1.0:
        raise ValueError(f"qep_alpha {alpha0} must lie strictly inside [{alpha_min}, {alpha_max}]")
    z = math.log(a0 / (1 - a0)) + score
    return alpha_min + (alpha_max - alpha_min) / (1.0 + math.exp(-z))


ALPHA_FITS = ("scores", "held-out")


class LayerAlphas:
    """FADE's per-layer α: V_int over every quantized Linear (set once by ``prepare``), R_calib per group; or,
    with ``fit="held-out"``, the cross-fitted optimal α (module docstring)."""

    def __init__(self, alpha0: float, alpha_min: float, alpha_max: float, use_vulnerability: bool,
                 use_reliability: bool, fit: str = "scores"):
        fade_alpha(0.0, alpha0, alpha_min, alpha_max)   # validates the range
        if fit not in ALPHA_FITS:
            raise ValueError(f"FADE alpha_fit must be one of {ALPHA_FITS}, got {fit!r}")
        self.alpha0, self.alpha_min, self.alpha_max = alpha0, alpha_min, alpha_max
        self.use_vulnerability, self.use_reliability = use_vulnerability, use_reliability
        self.fit = fit
        self.v_int: dict[str, float] = {}
        self.gain: dict[str, float] = {}

    def prepare(self, model: torch.nn.Module, weight_names: list[str]) -> None:
        self.gain = {n: stable_rank_gain(model.get_parameter(n)) for n in weight_names}
        self.v_int = robust_z(self.gain)

    def alpha(self, name: str, W: torch.Tensor, stats, damp: float) -> tuple[float, dict]:
        if self.fit == "held-out":
            return self._held_out(name, W, stats, damp)
        v = self.v_int.get(name, 0.0) if self.use_vulnerability else 0.0
        r, rho = 0.0, None
        if self.use_reliability:
            if not stats.folds:
                raise ValueError(f"{name}: FADE's reliability score needs per-fold statistics")
            r, rho = reliability(W, stats.folds, damp)
        a = fade_alpha(v + r, self.alpha0, self.alpha_min, self.alpha_max)
        return a, {"alpha": a, "v_int": v, "r_calib": r, "rho": rho, "stable_rank_gain": self.gain.get(name)}

    def _held_out(self, name: str, W: torch.Tensor, stats, damp: float) -> tuple[float, dict]:
        if not stats.folds:
            raise ValueError(f"{name}: FADE's held-out α needs per-fold statistics")
        raw, removed = held_out_alpha(W, stats.folds, damp)
        a = self.alpha0 if raw is None else min(max(raw, self.alpha_min), self.alpha_max)
        return a, {"alpha": a, "alpha_held_out": raw, "held_out_removed": removed,
                   "v_int": self.v_int.get(name), "stable_rank_gain": self.gain.get(name)}


@register_method("fade")
class FADE(QuantMethod):
    needs_fp_stream = True
    needs_folds = True

    @dataclass
    class Config:
        damp: float = 0.01
        block_size: int = 128
        qep_alpha: float = 0.5            # α₀: the α of a layer with zero scores (QEP's perccorr)
        alpha_min: float = 0.0
        alpha_max: float = 1.0
        use_vulnerability: bool = True    # V_int (ablation switch)
        use_reliability: bool = True      # R_calib (ablation switch)
        alpha_fit: str = "scores"         # "scores" (σ-mix of V_int + R_calib) | "held-out" (cross-fitted optimum)

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        self.alphas = LayerAlphas(c.qep_alpha, c.alpha_min, c.alpha_max, c.use_vulnerability, c.use_reliability,
                                  c.alpha_fit)

    def prepare(self, model, weight_names) -> None:
        self.alphas.prepare(model, weight_names)

    def quantize_group(self, weights, stats, lat):
        names = list(weights)
        for name, W in weights.items():
            check_finite(name, W)
        if stats.H_delta is None:
            raise ValueError(f"{', '.join(names)}: FADE needs H_delta (FP stream) statistics")
        chol = cholesky(stats.H, self.config.damp, names)
        G = inverse_from_factor(chol.U)
        targets, infos = {}, {}
        for name in names:
            W = weights[name].detach().float()
            alpha, infos[name] = self.alphas.alpha(name, W, stats, self.config.damp)
            targets[name] = W + alpha * ((W @ stats.H_delta.float()) @ G) if alpha else W
        out = gptq_project(targets, chol, lat, self.config.block_size, stats.H)
        for name in names:
            out[name].info.update(infos[name])
        return out
