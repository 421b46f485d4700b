"""Least-squares refit of a solved tensor's float parameters, codes held fixed (``--lattice-refit``).

The GPTQ sweep fixes each parameter group's stored floats (Q4_0's d, Q4_1's d and m, a K-quant super-block's d
and dmin) when it reaches the group, from the error-updated weights, *before* it rounds the group's columns;
the later columns are rounded onto that choice and never revisit it. Once every code is fixed, the values of a
row are linear in those floats (ggml's ``to_float``: value = d·u(q) + m·v(q), with u, v the code's unit values:
q or codebook[q] for d, 1 for Q4_1's m, the integer sub-block scale · q and −sub-block min for the K-quants),

    ŵ_r = Z_r p_r,   Z_r[:, (g, f)] = unit values of field f on the columns of group g, 0 elsewhere,

so the floats that minimise the sweep's own objective for those codes, the H-weighted error of the row
against the method's target t_r (GPTQ: W; QEP: W + αΔW; TARQ: W + α*D) under the damped metric the sweep
factorised, H = H_method + λI (H or H_rB; λ the sweep's damping, so for the tied embedding's damping 1.0 the
refit keeps the rows faithful as the sweep does, docs/methods.md §5), are the solution of a small linear system
per row (G·F unknowns: G groups, F fields):

    (Z_rᵀ H Z_r + μ I) p_r = Z_rᵀ H t_r + μ p_r⁰,    μ = 1e-6 · tr(Z_rᵀ H Z_r) / (G·F)          (1)

μ only anchors groups the metric cannot see (every code 0, or dead columns) to their swept values p_r⁰. The
solution is stored at file precision (fp16); a row keeps its swept floats unless the stored refit lowers its
error (t_r − ŵ_r)ᵀ H (t_r − ŵ_r), so the refit never raises a row's error. Integer fields (K-quant sub-block
scales and mins) and the codes are untouched. Costs about one (R × n × n) product per field and row block.

The block structure makes Z_rᵀ H Z_r cheap: with V_f'[h, r, i] = Σ_{j ∈ group h} Z_f'[r, j] H_ji,
(Z_rᵀ H Z_r)[(g, f), (h, f')] = Σ_{i ∈ group g} Z_f[r, i] V_f'[h, r, i].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CHUNK_BYTES = 64 << 20     # working set of one row block (the [G, n, R] products)
_RIDGE = 1e-6


@dataclass
class RefitResult:
    params: np.ndarray         # param_dtype [m, nb]: the refit floats where they lowered the row's error
    data: np.ndarray           # uint8 [m, row_bytes]: the encoded bytes
    dequant: np.ndarray        # float32 [m, n]: ggml's to_float of ``data``
    err_before: float          # Σ_r (t_r − ŵ_r)ᵀ H (t_r − ŵ_r) with the swept floats
    err_after: float           # the same with the kept floats (≤ err_before)
    rows_changed: int          # rows whose floats were replaced


def unit_values(qtype, codes: np.ndarray, params: np.ndarray) -> list[np.ndarray]:
    """Per refit field f, float64 [m, n]: the values the row would hold with field f = 1 and every other refit
    field 0 (integer fields as stored), through the type's own encode + to_float, so ŵ = Σ_f p_f · u_f."""
    n = codes.shape[1]
    out = []
    for f in qtype.refit_fields:
        unit = params.copy()
        for g in qtype.refit_fields:
            unit[g] = 1.0 if g == f else 0.0
        out.append(qtype.dequantize(qtype.encode(codes, unit), n).astype(np.float64))
    return out


def row_errors(E: np.ndarray, H: np.ndarray) -> np.ndarray:
    """(e_r)ᵀ H e_r for every row of E (float64 [m])."""
    return np.einsum("rn,rn->r", E @ H, E)


def _solve_rows(Z: list[np.ndarray], T: np.ndarray, H: np.ndarray, p0: np.ndarray, group: int) -> np.ndarray:
    """Eq. (1) for a block of rows: Z per field [R, n], targets T [R, n], swept floats p0 [R, G, F]."""
    R, n = T.shape
    G, F = n // group, len(Z)
    Hb = np.ascontiguousarray(H.reshape(n, G, group).transpose(1, 2, 0))   # [G, w, n]: rows j ∈ group h of H
    Zg = [z.reshape(R, G, group) for z in Z]
    # V_f[h, r, i] = Σ_{j ∈ h} Z_f[r, j] H_ji  (H symmetric), one contiguous batched GEMM per field
    V = [np.ascontiguousarray(zg.transpose(1, 0, 2)) @ Hb for zg in Zg]    # F × [G, R, n]
    M = np.empty((R, G, F, G, F))
    for fi in range(F):
        for fj in range(F):
            Vg = V[fj].reshape(G, R, G, group)                         # [h, r, g, w]
            M[:, :, fi, :, fj] = np.einsum("hrgw,rgw->rgh", Vg, Zg[fi])
    TH = (T @ H).reshape(R, G, group)
    b = np.stack([np.einsum("rgw,rgw->rg", zg, TH) for zg in Zg], axis=-1)   # [R, G, F]
    K = G * F
    M = M.reshape(R, K, K)
    mu = _RIDGE * np.trace(M, axis1=1, axis2=2) / K
    mu = np.where(mu > 0, mu, 1.0)[:, None]
    M[:, np.arange(K), np.arange(K)] += mu
    rhs = b.reshape(R, K) + mu * p0.reshape(R, K)
    return np.linalg.solve(M, rhs[..., None])[..., 0].reshape(R, G, F)


def refit_params(lat, codes: np.ndarray, params: np.ndarray, target: np.ndarray, H: np.ndarray) -> RefitResult:
    """Refit the float fields of one solved tensor (module docstring). ``codes`` int [m, n] and ``params``
    (param_dtype [m, nb]) as the sweep stored them, ``target`` float [m, n] (the rows the sweep rounded, dead
    columns zeroed), ``H`` float [n, n] the method's metric."""
    t = lat.qtype
    fields = t.refit_fields
    codes = np.asarray(codes)
    m, n = codes.shape
    T = np.asarray(target, dtype=np.float64)
    H = np.asarray(H, dtype=np.float64)
    if T.shape != (m, n) or H.shape != (n, n):
        raise ValueError(f"refit: target {T.shape} / metric {H.shape} do not match codes {codes.shape}")
    old_data = t.encode(codes, params)
    old_deq = t.dequantize(old_data, n)
    err_old = row_errors(T - old_deq.astype(np.float64), H)
    if not fields:
        return RefitResult(params, old_data, old_deq, float(err_old.sum()), float(err_old.sum()), 0)
    group = lat.group
    G = n // group
    per_group = group // t.block_size                                  # ggml blocks sharing one refit value
    Z = unit_values(t, codes, params)
    p0 = np.stack([params[f].astype(np.float64).reshape(m, G, per_group)[:, :, 0] for f in fields], axis=-1)
    rows = max(1, _CHUNK_BYTES // (8 * n * G * max(1, len(fields))))
    p = np.empty_like(p0)
    for r0 in range(0, m, rows):
        sl = slice(r0, min(m, r0 + rows))
        p[sl] = _solve_rows([z[sl] for z in Z], T[sl], H, p0[sl], group)
    new = params.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        for k, f in enumerate(fields):
            new[f] = np.repeat(p[:, :, k], per_group, axis=1).astype(np.float16)
    finite = np.ones(m, dtype=bool)
    for f in fields:
        finite &= np.isfinite(new[f].astype(np.float32)).all(axis=1)
    new[~finite] = params[~finite]
    new_data = t.encode(codes, new)
    new_deq = t.dequantize(new_data, n)
    err_new = row_errors(T - new_deq.astype(np.float64), H)
    keep_new = finite & (err_new < err_old)
    final = np.where(keep_new[:, None], new, params)
    data = np.where(keep_new[:, None], new_data, old_data)
    deq = np.where(keep_new[:, None], new_deq, old_deq)
    return RefitResult(final, data, deq, float(err_old.sum()), float(np.where(keep_new, err_new, err_old).sum()),
                       int(keep_new.sum()))
