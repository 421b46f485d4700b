"""ggml's parameter searches (ggml-quants.c, ggml 0.13.1), re-implemented in NumPy float32, vectorized over blocks.

Every function takes ``x`` float32 ``[B, n]`` (B independent blocks of n values) and returns what the C
function returns for each block. The C code is plain IEEE float32 arithmetic: the shipped libggml-base
builds (pywhispercpp 0.13.1, crispasr 0.26.0) are compiled for baseline x86-64 (no FMA instructions at
all, checked with objdump), no -ffast-math, so each ``+ - * /`` and ``sqrtf`` rounds once, sums run in
index order, and ``a*b*c`` means ``(a*b)*c``. We reproduce that order exactly: sequential sums are loops
over the element index (vector ops across blocks), every operand is float32, ints are converted to float32
where C converts them. Data-dependent control flow (``if (mse < best)``, early ``break``) becomes masks;
an early ``break`` after a pass without changes is equivalent to running the remaining passes, which
change nothing.

Functions mirrored (C name -> here): nearest_int, best_index_int8, make_qx_quants, make_q3_quants,
make_qkx2_quants / make_qkx3_quants (one function, ``x3`` flag), make_qp_quants.
"""
from __future__ import annotations

import numpy as np

F = np.float32
GROUP_MAX_EPS = F(1e-15)
_MAGIC = F(12582912.0)   # 1.5 * 2^23: x + MAGIC rounds x to an integer (ties to even) in the low mantissa bits


def f32(v) -> np.ndarray:
    return np.asarray(v, dtype=F)


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int: the float32 sum v + 1.5*2^23 read back as bits (round half to even for |v| < 2^22;
    beyond that the same bit trick, as in the release build whose assert is compiled out)."""
    s = (np.asarray(v, dtype=F) + _MAGIC).astype(F)
    return (s.view(np.int32) & 0x007FFFFF) - 0x00400000


def fp16_round(v: np.ndarray) -> np.ndarray:
    """GGML_FP32_TO_FP16 then back to float32 (round to nearest even; overflow to inf)."""
    with np.errstate(over="ignore"):
        return np.asarray(v, dtype=F).astype(np.float16).astype(F)


def signed_max(x: np.ndarray) -> np.ndarray:
    """``amax = max = 0; if (ax > amax) { amax = ax; max = x[i]; }``: the first element of largest magnitude with
    its sign; +0.0 when every element is (+/-)0 (the C never leaves its initial +0)."""
    ax = np.abs(x)
    idx = np.argmax(ax, axis=1)
    rows = np.arange(x.shape[0])
    return np.where(ax[rows, idx] > 0, x[rows, idx], F(0)).astype(F)


def seq_sum(terms) -> np.ndarray:
    """``s = 0; for i: s += t_i`` in float32, t_i given as a [B, n] array (summed along axis 1 in order)."""
    s = np.zeros(terms.shape[0], F)
    for i in range(terms.shape[1]):
        s = (s + terms[:, i]).astype(F)
    return s


def best_index_int8(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """best_index_int8 for every element of ``x`` (any shape): binary search in the sorted int8 table, then
    ``x - val[mu-1] < val[mu] - x ? mu-1 : mu`` in float32 (ties go up)."""
    vals = values.astype(F)
    x = np.asarray(x, dtype=F)
    mu = np.searchsorted(vals, x, side="right").clip(1, len(vals) - 1)
    lo, hi = vals[mu - 1], vals[mu]
    idx = np.where((x - lo).astype(F) < (hi - x).astype(F), mu - 1, mu)
    idx = np.where(x <= vals[0], 0, idx)
    return np.where(x >= vals[-1], len(vals) - 1, idx)


def _weights(x: np.ndarray, qw, rmse_type: int) -> np.ndarray:
    if qw is not None:
        return np.broadcast_to(f32(qw), x.shape)
    if rmse_type == 1:
        return (x * x).astype(F)
    if rmse_type == 2:
        return np.ones_like(x)
    if rmse_type == 3:
        return np.abs(x)
    return np.sqrt(np.abs(x)).astype(F)


def _sums_lx(w: np.ndarray, x: np.ndarray, l: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sumlx += w*x*l; suml2 += w*l*l, sequentially (l: integers, converted to float32 as C does)."""
    lf = l.astype(F)
    return seq_sum(((w * x).astype(F) * lf).astype(F)), seq_sum(((w * lf).astype(F) * lf).astype(F))


def make_qx_quants(x: np.ndarray, nmax: int, rmse_type: int, qw=None) -> tuple[np.ndarray, np.ndarray]:
    """(scale [B], L int [B, n] = nmax + clamp(l, -nmax, nmax-1)) as make_qx_quants(n, nmax, x, L, rmse_type, qw)."""
    x = f32(x)
    B, n = x.shape
    mx = signed_max(x)
    zero = np.abs(mx) < GROUP_MAX_EPS
    safe = np.where(zero, F(1), mx)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        iscale = (F(-nmax) / safe).astype(F)

        def codes(isc):
            return np.clip(nearest_int((isc[:, None] * x).astype(F)), -nmax, nmax - 1)

        l = codes(iscale)
        L = l + nmax
        if rmse_type == 0:
            scale = (F(1) / iscale).astype(F)
            return np.where(zero, F(0), scale), np.where(zero[:, None], 0, L)
        return_early = rmse_type < 0
        w = _weights(x, qw, abs(rmse_type))
        sumlx, suml2 = _sums_lx(w, x, l)
        scale = np.where(suml2 != 0, (sumlx / np.where(suml2 != 0, suml2, F(1))).astype(F), F(0))
        if return_early:
            early = np.where(suml2 > 0, (F(0.5) * (scale + (F(1) / iscale).astype(F))).astype(F),
                             (F(1) / iscale).astype(F))
            return np.where(zero, F(0), early), np.where(zero[:, None], 0, L)
        best = (scale * sumlx).astype(F)
        for is_ in range(-9, 10):
            if is_ == 0:
                continue
            isc = (-(F(nmax) + (F(0.1) * F(is_)).astype(F)).astype(F) / safe).astype(F)
            li = codes(isc)
            slx, sl2 = _sums_lx(w, x, li)
            better = (sl2 > 0) & ((slx * slx).astype(F) > (best * sl2).astype(F))
            L = np.where(better[:, None], li + nmax, L)
            new_scale = (slx / np.where(sl2 != 0, sl2, F(1))).astype(F)
            scale = np.where(better, new_scale, scale)
            best = np.where(better, (new_scale * slx).astype(F), best)
    return np.where(zero, F(0), scale), np.where(zero[:, None], 0, L)


def make_q3_quants(x: np.ndarray, nmax: int, do_rmse: bool) -> tuple[np.ndarray, np.ndarray]:
    """(scale [B], L [B, n] in [0, 2 nmax)) as make_q3_quants(n, nmax, x, L, do_rmse)."""
    x = f32(x)
    B, n = x.shape
    mx = signed_max(x)
    zero = np.abs(mx) < GROUP_MAX_EPS
    safe = np.where(zero, F(1), mx)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        iscale = (F(-nmax) / safe).astype(F)
        L = np.clip(nearest_int((iscale[:, None] * x).astype(F)), -nmax, nmax - 1)
        if not do_rmse:
            return np.where(zero, F(0), (F(1) / iscale).astype(F)), np.where(zero[:, None], 0, L + nmax)
        w = (x * x).astype(F)
        sumlx, suml2 = _sums_lx(w, x, L)
        for _ in range(5):
            for i in range(n):
                wi, xi, Li = w[:, i], x[:, i], L[:, i].astype(F)
                wx = (wi * xi).astype(F)
                slx = (sumlx - (wx * Li).astype(F)).astype(F)
                pos = slx > 0
                sl2 = (suml2 - ((wi * Li).astype(F) * Li).astype(F)).astype(F)
                new_l = np.clip(nearest_int(((xi * sl2).astype(F) / np.where(pos, slx, F(1))).astype(F)),
                                -nmax, nmax - 1)
                changed = pos & (new_l != L[:, i])
                nl = new_l.astype(F)
                slx2 = (slx + (wx * nl).astype(F)).astype(F)
                sl22 = (sl2 + ((wi * nl).astype(F) * nl).astype(F)).astype(F)
                accept = changed & (sl22 > 0) & (((slx2 * slx2).astype(F) * suml2).astype(F) >
                                                 ((sumlx * sumlx).astype(F) * sl22).astype(F))
                L[:, i] = np.where(accept, new_l, L[:, i])
                sumlx = np.where(accept, slx2, sumlx)
                suml2 = np.where(accept, sl22, suml2)
        scale = np.where(suml2 > 0, (sumlx / np.where(suml2 > 0, suml2, F(1))).astype(F), F(0))
    return np.where(zero, F(0), scale), np.where(zero[:, None], 0, L + nmax)


def make_qkx_quants(x: np.ndarray, nmax: int, weights, rmin: float, rdelta: float, nstep: int, use_mad: bool,
                    x3: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scale [B], the_min [B], L [B, n]) as make_qkx2_quants (x3=False) / make_qkx3_quants (x3=True; weights
    may be None = x*x, and the degenerate test is max <= min instead of max == min)."""
    x = f32(x)
    B, n = x.shape
    w = (x * x).astype(F) if weights is None else np.broadcast_to(f32(weights), x.shape)
    rows = np.arange(B)
    mn = x[rows, np.argmin(x, axis=1)]     # `if (x[i] < min) min = x[i]`: the first of equal values (+0 vs -0)
    mx = x[rows, np.argmax(x, axis=1)]
    sum_w = seq_sum(w)
    sum_x = seq_sum((w * x).astype(F))
    # C: sum_w = w0; sum_x = sum_w * x0 — the same value as starting from 0, since 0 + w0 = w0 exactly
    mn = np.where(mn > 0, F(0), mn)
    degenerate = (mx <= mn) if x3 else (mx == mn)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        rng_ = np.where(degenerate, F(1), (mx - mn).astype(F))
        iscale = (F(nmax) / rng_).astype(F)
        scale = (F(1) / iscale).astype(F)
        L = np.clip(nearest_int((iscale[:, None] * (x - mn[:, None]).astype(F)).astype(F)), 0, nmax)

        def err(sc, m, Lc):
            diff = ((sc[:, None] * Lc.astype(F)).astype(F) + m[:, None]).astype(F) - x
            diff = np.abs(diff) if use_mad else (diff * diff).astype(F)
            return seq_sum((w * diff.astype(F)).astype(F))

        best = err(scale, mn, L)
        if nstep >= 1:
            for is_ in range(nstep + 1):
                isc = (((F(rmin) + (F(rdelta) * F(is_)).astype(F)).astype(F) + F(nmax)).astype(F) /
                       (mx - mn).astype(F)).astype(F)
                La = np.clip(nearest_int((isc[:, None] * (x - mn[:, None]).astype(F)).astype(F)), 0, nmax)
                lf = La.astype(F)
                sum_l = seq_sum((w * lf).astype(F))
                sum_l2 = seq_sum(((w * lf).astype(F) * lf).astype(F))
                sum_xl = seq_sum(((w * lf).astype(F) * x).astype(F))
                D = ((sum_w * sum_l2).astype(F) - (sum_l * sum_l).astype(F)).astype(F)
                ok = D > 0
                Ds = np.where(ok, D, F(1))
                this_scale = (((sum_w * sum_xl).astype(F) - (sum_x * sum_l).astype(F)).astype(F) / Ds).astype(F)
                this_min = (((sum_l2 * sum_x).astype(F) - (sum_l * sum_xl).astype(F)).astype(F) / Ds).astype(F)
                pos = this_min > 0
                this_min = np.where(pos, F(0), this_min)
                this_scale = np.where(pos, (sum_xl / sum_l2).astype(F), this_scale)
                cur = err(this_scale, this_min, La)
                better = ok & (cur < best) & ~degenerate
                L = np.where(better[:, None], La, L)
                best = np.where(better, cur, best)
                scale = np.where(better, this_scale, scale)
                mn = np.where(better, this_min, mn)
    scale = np.where(degenerate, F(0), scale)
    L = np.where(degenerate[:, None], 0, L)
    return scale, (-mn).astype(F), L


def make_qp_quants(x: np.ndarray, nmax: int, quant_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale [B], L [B, n] as uint8 values) as make_qp_quants(n, nmax, x, L, quant_weights)."""
    x = f32(x)
    B, n = x.shape
    qw = np.broadcast_to(f32(quant_weights), x.shape)
    mx = np.zeros(B, F)
    for i in range(n):
        mx = np.where(mx > x[:, i], mx, x[:, i])     # MAX(max, x[i])
    zero = mx < GROUP_MAX_EPS
    safe = np.where(zero, F(1), mx)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        iscale = (F(nmax) / safe).astype(F)
        L = nearest_int((iscale[:, None] * x).astype(F)) & 0xFF          # stored in uint8_t
        scale = (F(1) / iscale).astype(F)

        def mse(sc, Lc):
            diff = (x - (sc[:, None] * Lc.astype(F)).astype(F)).astype(F)
            return seq_sum(((qw * diff).astype(F) * diff).astype(F))

        best = mse(scale, L)
        for is_ in range(-4, 5):
            if is_ == 0:
                continue
            isc = (((F(0.1) * F(is_)).astype(F) + F(nmax)).astype(F) / safe).astype(F)
            sc = (F(1) / isc).astype(F)
            li = np.minimum(nmax, nearest_int((isc[:, None] * x).astype(F)))
            m = mse(sc, li)
            better = m < best
            best = np.where(better, m, best)
            iscale = np.where(better, isc, iscale)
        l_int = np.minimum(nmax, nearest_int((iscale[:, None] * x).astype(F)))
        sumlx, suml2 = _sums_lx(qw, x, l_int)       # the sums use the int l, L[i] keeps it as uint8_t
        L = l_int & 0xFF
        for _ in range(5):
            for i in range(n):
                wi, xi, Li = qw[:, i], x[:, i], L[:, i].astype(F)
                wx = (wi * xi).astype(F)
                slx = (sumlx - (wx * Li).astype(F)).astype(F)
                sl2 = (suml2 - ((wi * Li).astype(F) * Li).astype(F)).astype(F)
                go = (slx > 0) & (sl2 > 0)
                new_l = np.minimum(nmax, nearest_int(((xi * sl2).astype(F) / np.where(go, slx, F(1))).astype(F)))
                changed = go & (new_l != L[:, i])
                nl = new_l.astype(F)
                slx2 = (slx + (wx * nl).astype(F)).astype(F)
                sl22 = (sl2 + ((wi * nl).astype(F) * nl).astype(F)).astype(F)
                accept = changed & (((slx2 * slx2).astype(F) * suml2).astype(F) >
                                    ((sumlx * sumlx).astype(F) * sl22).astype(F))
                L[:, i] = np.where(accept, new_l & 0xFF, L[:, i])
                sumlx = np.where(accept, slx2, sumlx)
                suml2 = np.where(accept, sl22, suml2)
        out = np.where(suml2 > 0, (sumlx / np.where(suml2 > 0, suml2, F(1))).astype(F), F(0))
    return np.where(zero, F(0), out), np.where(zero[:, None], 0, L)
