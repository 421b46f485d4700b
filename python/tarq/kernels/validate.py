"""Argument checks and schedules shared by both backends, so they reject the same inputs the same way."""
from __future__ import annotations

import numpy as np
import torch

_FLOATS = (torch.float32, torch.float64)


def check_hessian(H: torch.Tensor, damp_frac: float, max_tries: int) -> torch.Tensor:
    if not isinstance(H, torch.Tensor) or H.dim() != 2 or H.shape[0] != H.shape[1] or H.shape[0] == 0:
        raise ValueError(f"H must be a non-empty square 2-D tensor, got {getattr(H, 'shape', type(H))}")
    if H.dtype not in _FLOATS:
        raise ValueError(f"H must be float32 or float64, got {H.dtype}")
    if not bool(torch.isfinite(H).all()):
        raise ValueError("H contains NaN or Inf")
    if not damp_frac >= 0:
        raise ValueError(f"damp_frac must be >= 0, got {damp_frac}")
    if int(max_tries) < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    return H


def damp_schedule(damp_frac: float, mean_diag: float, attempt: int) -> float:
    """λ for try ``attempt`` (0-based): damp_frac·mean(diag H)·10^attempt.

    With damp_frac == 0 the first try is undamped and later tries start at 1e-6·mean(diag H).
    """
    lam0 = damp_frac * mean_diag
    if lam0 > 0:
        return lam0 * 10.0 ** attempt
    return 0.0 if attempt == 0 else 1e-6 * mean_diag * 10.0 ** (attempt - 1)


def check_sweep_inputs(W: torch.Tensor, U: torch.Tensor | None, lat):
    if not isinstance(W, torch.Tensor) or W.dim() != 2:
        raise ValueError(f"W must be a 2-D tensor [out, in], got {getattr(W, 'shape', type(W))}")
    if W.dtype not in _FLOATS:
        raise ValueError(f"W must be float32 or float64, got {W.dtype}")
    n = W.shape[1]
    if not lat.fits(n):
        raise ValueError(f"input dimension {n} is not a multiple of the group size {lat.group} ({lat.name})")
    if not bool(torch.isfinite(W).all()):
        raise ValueError("W contains NaN or Inf")
    if U is not None:
        if U.dim() != 2 or tuple(U.shape) != (n, n):
            raise ValueError(f"U must be [{n}, {n}] for W of shape {tuple(W.shape)}, got {tuple(U.shape)}")
        if U.dtype not in _FLOATS:
            raise ValueError(f"U must be float32 or float64, got {U.dtype}")
        if U.device != W.device:
            raise ValueError(f"W is on {W.device} but U is on {U.device}")
        if not bool((U.diagonal() > 0).all()):
            raise ValueError("U must have a positive diagonal (use cholesky_inverse_upper)")
    return W, U


def check_importance(importance, lat, n: int) -> np.ndarray | None:
    """Per-column importance as float32 NumPy [n] for the "weighted" fit (None for "plain")."""
    if lat.fit != "weighted":
        return None
    if importance is None:
        raise ValueError(f"{lat.name}: the weighted lattice fit needs per-column importance")
    imp = importance.detach().to("cpu", torch.float32).numpy() if isinstance(importance, torch.Tensor) \
        else np.asarray(importance, dtype=np.float32)
    imp = np.ascontiguousarray(imp.reshape(-1))
    if imp.shape[0] != n or not np.isfinite(imp).all() or (imp < 0).any():
        raise ValueError(f"importance must be {n} finite non-negative values, got shape {imp.shape}")
    return imp


def effective_block_size(block_size: int, group_size: int) -> int:
    """Lazy-batch width rounded up to a multiple of the group size.

    A group's scale is read from its fully updated columns; with the block a multiple of the group the
    whole group sits inside the block being swept. In exact arithmetic the result does not depend on the
    block size at all (the lazy batch only reorders the same updates).
    """
    if int(block_size) < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return -(-int(block_size) // group_size) * group_size


def normalize_batched_inputs(Ws, Us: torch.Tensor):
    """-> (list of W [m_i, n], U [n, n] or list of U, shared: bool)."""
    if isinstance(Ws, torch.Tensor):
        if Ws.dim() != 3:
            raise ValueError(f"batched W must be a list of 2-D tensors or a 3-D tensor, got {tuple(Ws.shape)}")
        Ws = list(Ws.unbind(0))
    Ws = list(Ws)
    if not Ws:
        raise ValueError("gptq_sweep_batched needs at least one weight matrix")
    widths = {w.shape[-1] for w in Ws}
    if len(widths) != 1:
        raise ValueError(f"all weight matrices must have the same input width, got {sorted(widths)}")
    if not isinstance(Us, torch.Tensor) or Us.dim() not in (2, 3):
        raise ValueError("Us must be one [n, n] tensor (shared) or a [B, n, n] tensor")
    if Us.dim() == 2:
        return Ws, Us, True
    if Us.shape[0] != len(Ws):
        raise ValueError(f"{Us.shape[0]} factors U for {len(Ws)} weight matrices")
    return Ws, list(Us.unbind(0)), False
