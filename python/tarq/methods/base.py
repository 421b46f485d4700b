"""Shared pieces of the quantization methods: result type, the GPTQ projection, H-inner products."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

import numpy as np

from ..calib.stats import GroupStats  # leaf module: no cycle
from ..ggml import GgmlType, Lattice


@dataclass
class LinearResult:
    qtype: GgmlType                # the ggml type of the bytes
    data: torch.Tensor             # uint8 [out, row_bytes]: the exact ggml blocks the file will hold
    dequant: torch.Tensor          # f32 [out, in] == ggml's to_float of ``data``
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_bytes(cls, qtype: GgmlType, data: np.ndarray, n: int, info=None) -> "LinearResult":
        return cls(qtype, torch.from_numpy(np.ascontiguousarray(data)),
                   torch.from_numpy(qtype.dequantize(data, n)), dict(info or {}))

    @classmethod
    def from_sweep(cls, res, info=None) -> "LinearResult":
        """From a kernels SweepResult: its codes and params encoded into ggml bytes (CPU), dequant as swept."""
        return cls(res.lattice.qtype, torch.from_numpy(res.data()), res.dequant, dict(info or {}))

    def codes(self) -> np.ndarray:
        return self.qtype.decode(self.data.cpu().numpy(), self.dequant.shape[1])[0]


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

    # False: statistics come from the full-precision model (the pipeline does not write this method's weights
    # into the quantized stream), as llama.cpp's imatrix does
    true_sequential: ClassVar[bool] = True

    def quantize_group(self, weights: dict[str, torch.Tensor], stats: GroupStats | None,
                       lat: Lattice) -> dict[str, LinearResult]:
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


def lattice_importance(H: torch.Tensor, lat: Lattice) -> torch.Tensor | None:
    """Per-column importance for the weighted lattice fit: diag of the metric, scaled to mean 1 (the scale does
    not change ggml's weighted searches; it keeps their float32 sums in a comfortable range)."""
    if lat.fit != "weighted":
        return None
    d = H.diagonal().double().clamp_min(0)
    mean = float(d.mean())
    return (d / mean if mean > 0 else torch.ones_like(d)).float().cpu()


def gptq_project(weights: dict[str, torch.Tensor], chol, lat: Lattice, block_size: int,
                 H: torch.Tensor) -> dict[str, LinearResult]:
    """GPTQ projection onto the lattice of every weight in the group under one factor U (shared H). ``H`` is the
    method's metric: the weighted lattice fit takes its diagonal, ``--lattice-refit least-squares`` refits the
    group floats to the final codes under H + λI, the damped metric of the sweep (:mod:`tarq.ggml.refit`)."""
    from ..kernels import gptq_sweep_batched

    names = list(weights)
    Ws = []
    for n in names:
        W = weights[n].detach().float().clone()
        W[:, chol.dead] = 0.0   # contract: the caller zeroes dead columns
        Ws.append(W)
    results = gptq_sweep_batched(Ws, chol.U, lat, block_size=block_size, importance=lattice_importance(H, lat))
    info = {"damp": float(chol.damp), "n_dead": int(chol.dead.sum())}
    if lat.refit == "none":
        return {n: LinearResult.from_sweep(r, info) for n, r in zip(names, results)}
    # the refit minimises what the sweep minimises: the damped metric H + λI (λ = chol.damp, after escalation).
    # For the tied embedding (damping 1.0, docs/methods.md §5) the λI term is what keeps its rows faithful.
    H_sweep = H.detach().double().cpu() + float(chol.damp) * torch.eye(H.shape[0], dtype=torch.float64)
    return {n: refit_sweep(r, W, H_sweep, info) for n, r, W in zip(names, results, Ws)}


def refit_sweep(res, target: torch.Tensor, H: torch.Tensor, info: dict) -> LinearResult:
    """The sweep's codes with their group floats refit by least squares (tarq.ggml.refit, eq. 1); report fields
    ``refit_err_removed`` (share of the swept H-error the refit removed) and ``refit_rows`` (rows changed)."""
    from ..ggml.refit import refit_params

    device = res.dequant.device
    r = refit_params(res.lattice, res.codes.cpu().numpy(), res.param_records(), target.double().cpu().numpy(),
                     H.double().cpu().numpy())
    removed = 1.0 - r.err_after / r.err_before if r.err_before > 0 else 0.0
    return LinearResult(res.lattice.qtype, torch.from_numpy(r.data), torch.from_numpy(r.dequant).to(device),
                        {**info, "refit_err_removed": removed, "refit_rows": r.rows_changed})
