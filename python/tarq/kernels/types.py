"""Result types and errors shared by the native and the reference kernels (contract: docs/architecture.md)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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
    codes: torch.Tensor    # int8 [m, n] codes in the type's convention (tarq.ggml BlockType.code_min..code_max)
    params: torch.Tensor   # uint8 [m, n / block, P]: each block's param record (BlockType.param_dtype) as stored
    dequant: torch.Tensor  # f32 [m, n]: exactly ggml's to_float of the encoded bytes
    err: torch.Tensor      # f32 scalar: sum_j e_j^2 with e_j = (w_j - ŵ_j) / U_jj, equals
    #                        tr((W - Ŵ) H_d (W - Ŵ)^T); GPTQ's printed "error" is half of this.
    lattice: object = None  # the tarq.ggml.Lattice swept onto

    def param_records(self) -> np.ndarray:
        """The params as a structured array [m, n / block] of the type's ``param_dtype``."""
        t = self.lattice.qtype
        p = np.ascontiguousarray(self.params.detach().cpu().numpy())
        return p.reshape(p.shape[0], -1).view(t.param_dtype).reshape(p.shape[0], p.shape[1])

    def data(self) -> np.ndarray:
        """The ggml bytes uint8 [m, row_bytes] the file stores (codes and params encoded)."""
        return self.lattice.qtype.encode(self.codes.detach().cpu().numpy(), self.param_records())
