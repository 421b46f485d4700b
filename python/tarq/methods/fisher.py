"""`fisher`: GPTQ under loss-sensitivity position weights (TARQ paper §6.2, the family H(α) = Σ_f α_f H̄_f).

    H = Σ_t w_t x_t x_tᵀ,   w_t = (1 − β) + β s_t / mean(s),   s_t = Σ_{ℓ∈group} ‖∂L/∂y_{ℓ,t}‖²

with s from one backward pass of the FP model per calibration utterance (calib/analysis.py). The weighting is a
calibration setting (``--sensitivity fisher``), so it combines with every method (`--method tarq --sensitivity
fisher`: rareBAL's rebalancing on top of the weighted H_common / H_tail); this registry entry is GPTQ with it on.
Uniform sensitivities (β = 0, or s constant) give exactly GPTQ.
"""
from __future__ import annotations

from .gptq import GPTQ
from .registry import register_method


@register_method("fisher")
class Fisher(GPTQ):
    calib_overrides = {"sensitivity": "fisher"}
