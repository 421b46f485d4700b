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
  * lattice (docs/architecture.md "kernels"): a group's fp16 scale d is chosen from the current
    (error-updated) weights when the sweep reaches the group's first column
        Q4_0: d = fp16(signed_max / −8)      Q8_0: d = fp16(absmax / 127)
    and q = clamp(floor(w · (1/d)_f32 + 0.5), qmin, qmax) (q = 0 where d == 0); ŵ = q·d uses the fp16 d.
"""
from __future__ import annotations

import torch

from ..formats import QuantFormat
from .types import CholeskyResult, NonPDHessianError, SweepResult
from .validate import (check_hessian, check_sweep_inputs, damp_schedule, effective_block_size,
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


def group_scales(Wg: torch.Tensor, fmt: QuantFormat) -> torch.Tensor:
    """fp16 scale per row of ``Wg`` ([m, g], current weights of one group) by ggml's rule for ``fmt``."""
    if fmt.signed_max_scale:
        # ggml quantize_row_q4_0_ref: the element of largest |x| keeps its sign (first one on ties)
        idx = Wg.abs().argmax(dim=1, keepdim=True)
        extreme = Wg.gather(1, idx).squeeze(1)
    else:
        extreme = Wg.abs().amax(dim=1)
    return (extreme.to(torch.float32) / fmt.scale_divisor).to(torch.float16)


def quantize_column(w: torch.Tensor, d16: torch.Tensor, fmt: QuantFormat) -> torch.Tensor:
    """Integer codes of a float64 column on the lattice d16·[qmin, qmax] (float64 holding integers)."""
    d32 = d16.to(torch.float32)
    inv = torch.where(d32 != 0, 1.0 / d32, torch.zeros_like(d32)).to(torch.float64)  # 1/d in f32
    return torch.floor(w * inv + 0.5).clamp_(fmt.qmin, fmt.qmax)


@torch.no_grad()
def gptq_sweep(W: torch.Tensor, U: torch.Tensor, fmt: QuantFormat, block_size: int = 128) -> SweepResult:
    """GPTQ column sweep of ``W`` [m, n] under the inverse factor ``U`` onto the lattice ``fmt``."""
    W, U = check_sweep_inputs(W, U, fmt)
    res, _ = _sweep(W, U, fmt, block_size)
    return res


def _sweep(W: torch.Tensor, U: torch.Tensor, fmt: QuantFormat, block_size: int):
    """The sweep; returns (SweepResult, per-row error [m] float64) so batched calls can split err."""
    m, n = W.shape
    g = fmt.group_size
    B = effective_block_size(block_size, g)
    Wt = W.to(torch.float64).clone()          # W̃, updated in place by the error feedback
    U = U.to(torch.float64)
    dev = W.device
    codes = torch.zeros(m, n, dtype=torch.float64, device=dev)
    scales = torch.zeros(m, n // g, dtype=torch.float16, device=dev)
    E = torch.zeros(m, n, dtype=torch.float64, device=dev)  # normalized errors e_j
    d16 = d64 = None
    for i1 in range(0, n, B):
        i2 = min(i1 + B, n)
        W1 = Wt[:, i1:i2].clone()        # the lazy block, contiguous (as in GPTQ's reference code)
        E1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            if j % g == 0:
                # the whole group lies in this block (B is a multiple of g), so it is fully updated
                d16 = group_scales(W1[:, i:i + g], fmt)
                d64 = d16.to(torch.float64)
                scales[:, j // g] = d16
            w = W1[:, i]
            q = quantize_column(w, d16, fmt)
            codes[:, j] = q
            e = (w - q * d64) / U1[i, i]
            E1[:, i] = e
            W1[:, i + 1:] -= e[:, None] * U1[i, i + 1:][None, :]
        E[:, i1:i2] = E1
        Wt[:, i2:] -= E1 @ U[i1:i2, i2:]
    dequant = (codes * scales.to(torch.float64).repeat_interleave(g, dim=1)).to(torch.float32)
    row_err = (E * E).sum(dim=1)
    return SweepResult(codes=codes.to(torch.int8), scales=scales, dequant=dequant,
                       err=row_err.sum().to(torch.float32)), row_err


@torch.no_grad()
def gptq_sweep_batched(Ws, Us: torch.Tensor, fmt: QuantFormat, block_size: int = 128) -> list[SweepResult]:
    """Several sweeps: one shared U (rows concatenated) or B independent (W_b, U_b) pairs."""
    Ws, Us, shared = normalize_batched_inputs(Ws, Us)
    if shared:
        res, row_err = _sweep(torch.cat(Ws, dim=0), Us, fmt, block_size)
        return split_rows(res, row_err, [w.shape[0] for w in Ws])
    return [gptq_sweep(W, U, fmt, block_size) for W, U in zip(Ws, Us)]


def split_rows(res: SweepResult, row_err: torch.Tensor, rows: list[int]) -> list[SweepResult]:
    """Split a sweep over concatenated rows back into one result per matrix (rows are independent)."""
    out = []
    start = 0
    for m in rows:
        sl = slice(start, start + m)
        out.append(SweepResult(codes=res.codes[sl].contiguous(), scales=res.scales[sl].contiguous(),
                               dequant=res.dequant[sl].contiguous(),
                               err=row_err[sl].sum().to(torch.float32)))
        start += m
    return out


@torch.no_grad()
def quantize_rtn(W: torch.Tensor, fmt: QuantFormat) -> SweepResult:
    """Round-to-nearest onto the same lattice (= the sweep with U = I: no error feedback)."""
    W, _ = check_sweep_inputs(W, None, fmt)
    m, n = W.shape
    g = fmt.group_size
    Wg = W.to(torch.float64).reshape(m * (n // g), g)
    d16 = group_scales(Wg, fmt)
    q = quantize_column(Wg, d16[:, None], fmt)
    deq = q * d16.to(torch.float64)[:, None]
    err = ((Wg - deq) ** 2).sum()
    return SweepResult(codes=q.to(torch.int8).reshape(m, n), scales=d16.reshape(m, n // g),
                       dequant=deq.to(torch.float32).reshape(m, n), err=err.to(torch.float32))
