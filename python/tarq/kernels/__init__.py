"""GPTQ numerics: inverse-Hessian factor and the column sweep onto ggml lattices (contract: docs/architecture.md).

Two implementations with one API:
  * ``tarq._C`` (C++/OpenMP, CUDA sweep when the build had nvcc), wrapped by :mod:`tarq.kernels.native`;
  * :mod:`tarq.kernels.reference`, plain PyTorch, used with a logged warning when the extension is missing.
``TARQ_KERNELS=reference`` forces the reference; ``TARQ_KERNELS=native`` makes a missing extension an error.
"""
from __future__ import annotations

import logging
import os
from types import ModuleType

import torch

from . import reference as _reference
from .types import CholeskyResult, NonPDHessianError, SweepResult

__all__ = ["cholesky_inverse_upper", "gptq_sweep", "gptq_sweep_batched", "quantize_rtn", "backend_name",
           "native_info", "set_num_threads", "NonPDHessianError", "CholeskyResult", "SweepResult"]

_log = logging.getLogger(__name__)
_native: ModuleType | None = None
_native_error: str | None = None
_warned = False


def _load_native() -> ModuleType | None:
    global _native, _native_error
    if _native is None and _native_error is None:
        try:
            from . import native
            _native = native
        except ImportError as exc:  # extension not built / not importable
            _native_error = str(exc)
    return _native


def _backend() -> ModuleType:
    global _warned
    forced = os.environ.get("TARQ_KERNELS", "").strip().lower()
    if forced == "reference":
        return _reference
    native = _load_native()
    if native is not None:
        return native
    if forced == "native":
        raise ImportError(f"TARQ_KERNELS=native but tarq._C cannot be imported: {_native_error}")
    if not _warned:
        _log.warning("tarq._C is not available (%s); falling back to the slow PyTorch reference kernels",
                     _native_error)
        _warned = True
    return _reference


def backend_name() -> str:
    """'native', 'native+cuda' (extension built with the CUDA sweep) or 'reference'."""
    b = _backend()
    if b is _reference:
        return "reference"
    return "native+cuda" if b.HAS_CUDA else "native"


def set_num_threads(n: int) -> None:
    """Threads for everything tarq computes: torch's intra-op pool and tarq._C's OpenMP pool (the native
    solver and the statistics' rank-k updates). BLAS calls run single-threaded inside that pool."""
    n = max(1, int(n))
    torch.set_num_threads(n)
    native = _load_native()
    if native is not None:
        native._C.set_num_threads(n)


def native_info() -> dict:
    """What the native kernels run on, for reports: ISA, BLAS library, thread count (None without _C)."""
    native = _load_native()
    if native is None:
        return {"native_isa": None, "native_blas": None, "native_threads": None}
    C = native._C
    return {"native_isa": C.isa(), "native_blas": C.blas() if hasattr(C, "blas") else "built-in",
            "native_threads": C.max_threads()}


def cholesky_inverse_upper(H: torch.Tensor, damp_frac: float = 0.01, max_tries: int = 8) -> CholeskyResult:
    """Upper factor U with (H + λI)^-1 = U^T U, λ = damp_frac·mean(diag H), escalated ×10 on failure."""
    return _backend().cholesky_inverse_upper(H, damp_frac=damp_frac, max_tries=max_tries)


def gptq_sweep(W: torch.Tensor, U: torch.Tensor, lat, block_size: int = 128, importance=None) -> SweepResult:
    """GPTQ column sweep of W [out, in] (dead columns already zeroed) onto the lattice ``lat``
    (a tarq.ggml.Lattice); ``importance`` [in] for the weighted group fit."""
    return _backend().gptq_sweep(W, U, lat, block_size=block_size, importance=importance)


def gptq_sweep_batched(Ws, Us: torch.Tensor, lat, block_size: int = 128, importance=None) -> list[SweepResult]:
    """Several sweeps in one call: a shared U [n, n] (e.g. q/k/v) or B independent pairs (Us [B, n, n])."""
    return _backend().gptq_sweep_batched(Ws, Us, lat, block_size=block_size, importance=importance)


def quantize_rtn(W: torch.Tensor, lat, importance=None) -> SweepResult:
    """Round-to-nearest onto the same lattice (the sweep with U = I)."""
    return _reference.quantize_rtn(W, lat, importance)
