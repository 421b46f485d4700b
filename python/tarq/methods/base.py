"""Shared pieces of the quantization methods: result type, the GPTQ projection, H-inner products."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..calib.stats import GroupStats  # leaf module: no cycle
from ..formats import QuantFormat


@dataclass
class LinearResult:
    codes: torch.Tensor            # int8 [out, in] on the export lattice
    scales: torch.Tensor           # f16 [out, in / g]
    dequant: torch.Tensor          # f32 [out, in] == codes * scales
    info: dict[str, Any] = field(default_factory=dict)


class QuantMethod:
    """A method quantizes one group of weights that share an input (one set of statistics)."""
    name: ClassVar[str] = ""
    needs_fp_stream: ClassVar[bool] = False   # True when it uses H_Δ (FP vs partly quantized inputs)
    needs_stats: ClassVar[bool] = True        # False for data-free methods (rtn)
    needs_folds: ClassVar[bool] = False       # True when it cross-fits over two calibration folds (fade)
    # Calibration settings that are part of the method's definition (e.g. `fisher` = GPTQ under loss-sensitivity
    # weights); the pipeline applies them and refuses a contradicting explicit setting.
    calib_overrides: ClassVar[dict[str, Any]] = {}

    @dataclass
    class Config:
        pass

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    def config_dict(self) -> dict[str, Any]:
        return {"method": self.name, **dataclasses.asdict(self.config)}

    def quantize_group(self, weights: dict[str, torch.Tensor], stats: GroupStats | None,
                       fmt: QuantFormat) -> dict[str, LinearResult]:
        raise NotImplementedError

    def metric(self, stats: GroupStats) -> torch.Tensor:
        """The quadratic metric the method minimises (for the report)."""
        return stats.H


def check_finite(name: str, t: torch.Tensor, what: str = "weight") -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: {what} contains NaN or Inf")


def h_inner(A: torch.Tensor, B: torch.Tensor, H: torch.Tensor) -> float:
    """⟨A, B⟩_H = tr(A H Bᵀ) (TARQ paper eq. 12): float32 GEMM (the [vocab, d] embedding makes a float64
    product costly), float64 reduction."""
    return float(((A.float() @ H.float()) * B.float()).sum(dtype=torch.float64))


def rel_error(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) (eq. 10 normalised); 0 when the metric carries no mass."""
    den = h_inner(W, W, H)
    return h_inner(W - W_hat, W - W_hat, H) / den if den > 0 else 0.0


def inverse_from_factor(U: torch.Tensor) -> torch.Tensor:
    """(H + δI)⁻¹ = UᵀU from the kernels' upper Cholesky factor of the inverse (float32, like U)."""
    U = U.double()
    return (U.T @ U).float()


def cholesky(H: torch.Tensor, damp: float, names) -> "CholeskyResult":  # noqa: F821
    from ..kernels import cholesky_inverse_upper
    from ..kernels.types import NonPDHessianError

    if not torch.isfinite(H).all():
        raise ValueError(f"{', '.join(names)}: calibration second moment contains NaN or Inf")
    try:
        return cholesky_inverse_upper(H, damp_frac=damp)
    except NonPDHessianError as e:
        raise NonPDHessianError(f"{', '.join(names)}: Hessian not positive definite after damping "
                                f"escalation ({e})") from None


def gptq_project(weights: dict[str, torch.Tensor], chol, fmt: QuantFormat, block_size: int
                 ) -> dict[str, LinearResult]:
    """GPTQ projection onto the lattice of every weight in the group under one factor U (shared H)."""
    from ..kernels import gptq_sweep_batched

    names = list(weights)
    Ws = []
    for n in names:
        W = weights[n].detach().float().clone()
        W[:, chol.dead] = 0.0   # contract: the caller zeroes dead columns
        Ws.append(W)
    results = gptq_sweep_batched(Ws, chol.U, fmt, block_size=block_size)
    return {n: LinearResult(r.codes, r.scales, r.dequant, {"damp": float(chol.damp), "n_dead": int(chol.dead.sum())})
            for n, r in zip(names, results)}
