"""Result types and errors shared by the native and the reference kernels (contract: docs/architecture.md)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


class NonPDHessianError(ValueError):
    """The damped second moment stayed non positive-definite after every damping escalation."""


@dataclass
class CholeskyResult:
    U: torch.Tensor      # f32 [n, n] upper-triangular, (H + damp*I)^-1 = U^T U (dead columns set to 1 first)
    damp: float          # the lambda actually used (after escalation)
    dead: torch.Tensor   # bool [n]: columns whose diag(H) was exactly 0


@dataclass
class SweepResult:
    codes: torch.Tensor    # int8 [m, n] lattice codes in [qmin, qmax]
    scales: torch.Tensor   # f16 [m, n / group_size]
    dequant: torch.Tensor  # f32 [m, n] == codes * scales (exact)
    err: torch.Tensor      # f32 scalar: sum_j e_j^2 with e_j = (w_j - q_j) / U_jj, equals
    #                        tr((W - Ŵ) H_d (W - Ŵ)^T); GPTQ's printed "error" is half of this.
