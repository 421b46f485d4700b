"""Plain PyTorch reference of the GPTQ numerics (readable; used by tests and as the fallback backend).

Everything is computed in float64 so the native kernels (also float64 inside, see docs/kernels.md)
agree with it code-for-code; inputs/outputs keep the dtypes of the contract in docs/architecture.md.

Equations:
  * damping and inverse factor: H_d = H + λI, λ = damp_frac·mean(diag H); H_d^-1 = U^T U with U upper
    (GPTQ, Frantar et al. 2022, §4 "Cholesky reformulation"; L in Algorithm 2 of the TARQ paper, App. C).
  * column sweep (Algorithm 2, TARQ paper App. C): for each column j
        ŵ_j = Quantize(w̃_j),  e_j = (w̃_j − ŵ_j) / U_jj,  w̃_{j+1:} −= e_j U_{j, j+1:}
    applied lazily: inside a block of B columns the propagation stays in the block, and the block's
    errors reach the later columns in one GEMM  W̃[:, i2:] −= E[:, i1:i2] U[i1:i2, i2:]  (GPTQ §4).
  * lattice (tarq.ggml.lattice, docs/kernels.md "Lattice"): when the sweep reaches the first column of a
    parameter group, the type's ``fit`` chooses the group's parameters from the current (error-updated) weights
    and stores them at file precision; each column is then rounded to the nearest value the file can hold,
    q = clamp(floor((w − b)·(1/a)_f32 + 0.5)), ŵ = fl32(fl32(a q) + b) (codebook types: nearest entry), with
    the per-column (a, b) of those stored parameters. ŵ is exactly ggml's to_float of the written bytes.
"""
from __future__ import annotations

import numpy as np
import torch

from ..ggml.lattice import round_affine, round_codebook, row_sigma2
from .types import CholeskyResult, NonPDHessianError, SweepResult
from .validate import (check_hessian, check_importance, check_sweep_inputs, damp_schedule, effective_block_size,
                       normalize_batched_inputs)


@torch.no_grad()
def cholesky_inverse_upper(H: torch.Tensor, damp_frac: float = 0.01, max_tries: int = 8) -> CholeskyResult:
    """Upper Cholesky factor U of (H + λI)^-1, with GPTQ's dead-column fix and damping escalation."""
    H = check_hessian(H, damp_frac, max_tries).to(torch.float64).clone()
    n = H.shape[0]
    dead = H.diagonal() == 0
    # GPTQ: a column never excited by the calibration data gets H_ii = 1 (its weight is zeroed by the caller).
    H.diagonal()[dead] = 1.0
    mean_diag = float(H.diagonal().sum()) / n
    if not mean_diag > 0:
        raise NonPDHessianError(f"mean(diag H) = {mean_diag} is not positive; H is not a second moment")
    eye = torch.eye(n, dtype=torch.float64, device=H.device)
    for attempt in range(max_tries):
        lam = damp_schedule(damp_frac, mean_diag, attempt)
        L, info = torch.linalg.cholesky_ex(H + lam * eye)
        if int(info) != 0:
            continue
        Hinv = torch.cholesky_inverse(L)
        U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
        if int(info) == 0 and bool(torch.isfinite(U).all()):
            return CholeskyResult(U=U.to(torch.float32), damp=lam, dead=dead)
    raise NonPDHessianError(
        f"H + λI is not positive definite for any λ tried (last λ = {lam:.3e} after {max_tries} tries, "
        f"damp_frac = {damp_frac}, mean diag = {mean_diag:.3e})")


def _lattice_tools(lat, W: torch.Tensor):
    """(type, codebook tensor or None, row sigma2 or None) for a sweep of W onto ``lat``."""
    t = lat.qtype
    book = torch.from_numpy(t.codebook.astype(np.int8)).to(W.device) if t.codebook is not None else None
    sigma2 = row_sigma2(W.detach().to("cpu", torch.float32).numpy()) if lat.needs_row_sigma2 else None
    return t, book, sigma2


def fit_group(lat, Wg: torch.Tensor, importance, sigma2):
    """The type's fit on the current weights of one group [m, G] -> (params [m, G/block], a, b) with the
    per-column float32 (a, b) as tensors on Wg's device (b None without an offset)."""
    t = lat.qtype
    p = t.fit(Wg.detach().to("cpu", torch.float64).numpy(), importance, sigma2, lat.fit)
    a, b = t.column_scales(p)
    dev = Wg.device
    return p, torch.from_numpy(a).to(dev), (torch.from_numpy(b).to(dev) if b is not None else None)


def round_column(lat, book, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor | None):
    """(codes, values) of float64 column ``w`` on the lattice (float64 tensors)."""
    if book is not None:
        return round_codebook(w, a, book)
    return round_affine(w, a, b, lat.qtype.code_min, lat.qtype.code_max)


@torch.no_grad()
def gptq_sweep(W: torch.Tensor, U: torch.Tensor, lat, block_size: int = 128, importance=None) -> SweepResult:
    """GPTQ column sweep of ``W`` [m, n] under the inverse factor ``U`` onto the lattice ``lat``."""
    W, U = check_sweep_inputs(W, U, lat)
    res, _ = _sweep(W, U, lat, block_size, check_importance(importance, lat, W.shape[1]))
    return res


def _sweep(W: torch.Tensor, U: torch.Tensor, lat, block_size: int, importance):
    """The sweep; returns (SweepResult, per-row error [m] float64) so batched calls can split err."""
    m, n = W.shape
    G = lat.group
    B = effective_block_size(block_size, G)
    t, book, sigma2 = _lattice_tools(lat, W)
    Wt = W.to(torch.float64).clone()          # W̃, updated in place by the error feedback
    U = U.to(torch.float64)
    dev = W.device
    codes = torch.zeros(m, n, dtype=torch.float64, device=dev)
    values = torch.zeros(m, n, dtype=torch.float64, device=dev)
    params = np.zeros((m, n // t.block_size), dtype=t.param_dtype)
    E = torch.zeros(m, n, dtype=torch.float64, device=dev)  # normalized errors e_j
    a = b = None
    for i1 in range(0, n, B):
        i2 = min(i1 + B, n)
        W1 = Wt[:, i1:i2].clone()        # the lazy block, contiguous (as in GPTQ's reference code)
        E1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            k = j % G
            if k == 0:
                # the whole group lies in this block (B is a multiple of G), so it is fully updated
                imp = importance[j:j + G] if importance is not None else None
                p, a, b = fit_group(lat, W1[:, i:i + G], imp, sigma2)
                params[:, j // t.block_size:(j + G) // t.block_size] = p
            w = W1[:, i]
            q, v = round_column(lat, book, w, a[:, k], None if b is None else b[:, k])
            codes[:, j] = q
            values[:, j] = v
            e = (w - v) / U1[i, i]
            E1[:, i] = e
            W1[:, i + 1:] -= e[:, None] * U1[i, i + 1:][None, :]
        E[:, i1:i2] = E1
        Wt[:, i2:] -= E1 @ U[i1:i2, i2:]
    row_err = (E * E).sum(dim=1)
    return _result(lat, codes, params, values, row_err), row_err


def _result(lat, codes: torch.Tensor, params: np.ndarray, values: torch.Tensor, row_err: torch.Tensor) -> SweepResult:
    if not bool(torch.isfinite(values).all()):
        raise ValueError("a group scale overflows float16 (|w| > ~5e5): the weights cannot be put on this lattice")
    m = codes.shape[0]
    p = torch.from_numpy(np.ascontiguousarray(params).view(np.uint8).reshape(m, params.shape[1], -1).copy())
    return SweepResult(codes=codes.to(torch.int8), params=p.to(codes.device), dequant=values.to(torch.float32),
                       err=row_err.sum().to(torch.float32), lattice=lat)


@torch.no_grad()
def gptq_sweep_batched(Ws, Us: torch.Tensor, lat, block_size: int = 128, importance=None) -> list[SweepResult]:
    """Several sweeps: one shared U (rows concatenated) or B independent (W_b, U_b) pairs."""
    Ws, Us, shared = normalize_batched_inputs(Ws, Us)
    if shared:
        res, row_err = _sweep(torch.cat(Ws, dim=0), Us, lat, block_size,
                              check_importance(importance, lat, Ws[0].shape[1]))
        return split_rows(res, row_err, [w.shape[0] for w in Ws])
    return [gptq_sweep(W, U, lat, block_size, importance) for W, U in zip(Ws, Us)]


def split_rows(res: SweepResult, row_err: torch.Tensor, rows: list[int]) -> list[SweepResult]:
    """Split a sweep over concatenated rows back into one result per matrix (rows are independent)."""
    out = []
    start = 0
    for m in rows:
        sl = slice(start, start + m)
        out.append(SweepResult(codes=res.codes[sl].contiguous(), params=res.params[sl].contiguous(),
                               dequant=res.dequant[sl].contiguous(), err=row_err[sl].sum().to(torch.float32),
                               lattice=res.lattice))
        start += m
    return out


@torch.no_grad()
def quantize_rtn(W: torch.Tensor, lat, importance=None) -> SweepResult:
    """Round-to-nearest onto the same lattice (= the sweep with U = I: no error feedback)."""
    W, _ = check_sweep_inputs(W, None, lat)
    importance = check_importance(importance, lat, W.shape[1])
    m, n = W.shape
    G = lat.group
    t, book, sigma2 = _lattice_tools(lat, W)
    W64 = W.to(torch.float64)
    codes = torch.zeros(m, n, dtype=torch.float64, device=W.device)
    values = torch.zeros_like(codes)
    params = np.zeros((m, n // t.block_size), dtype=t.param_dtype)
    for j in range(0, n, G):
        imp = importance[j:j + G] if importance is not None else None
        p, a, b = fit_group(lat, W64[:, j:j + G], imp, sigma2)
        params[:, j // t.block_size:(j + G) // t.block_size] = p
        q, v = round_column(lat, book, W64[:, j:j + G], a, b)
        codes[:, j:j + G] = q
        values[:, j:j + G] = v
    row_err = ((W64 - values) ** 2).sum(dim=1)
    return _result(lat, codes, params, values, row_err)
