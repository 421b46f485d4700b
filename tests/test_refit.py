"""Least-squares refit of the group floats (tarq.ggml.refit, ``--lattice-refit least-squares``).

Oracles: the values the file holds written out by hand from ggml's block formulas (Q4_0 d·q, Q4_1 d·q + m,
IQ4_NL d·kvalues[q] with ggml's table typed in here), one dense design matrix per row and NumPy's lstsq. For
the K-quants the design columns come from the type's to_float (tested byte-exact against libggml in
test_ggml_types) with one float set to 1, still solved densely row by row.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tarq.ggml import make_lattice
from tarq.ggml.refit import refit_params
from tarq.kernels import cholesky_inverse_upper, gptq_sweep
from tarq.methods import get_method
from tarq.methods.base import rel_error

# ggml-quants.c kvalues_iq4nl
IQ4NL_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], float)


def _swept(qtype, n, group=None, m=24, seed=0):
    """A GPTQ solution on a strongly anisotropic metric: (lattice, codes, params, W, H)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((3000, n)) * np.exp(rng.standard_normal(n))
    H = X.T @ X / len(X)
    W = rng.standard_normal((m, n)) * 0.05
    lat = make_lattice(qtype, group)
    res = gptq_sweep(torch.from_numpy(W).float(), cholesky_inverse_upper(torch.from_numpy(H), 0.01).U, lat)
    return lat, res.codes.numpy().astype(np.int64), res.param_records(), W, H


def _hand_columns(qtype, codes, params, n):
    """Per field, the unit-value matrix from ggml's block formula written out here."""
    q = codes.astype(float)
    if qtype == "q4_0":
        return {"d": q}
    if qtype == "q4_1":
        return {"d": q, "m": np.ones_like(q)}
    if qtype == "iq4_nl":
        return {"d": IQ4NL_VALUES[codes]}
    t = make_lattice(qtype).qtype          # K-quants: to_float with one float = 1, the others 0
    out = {}
    for f in t.refit_fields:
        unit = params.copy()
        for g in t.refit_fields:
            unit[g] = 1.0 if g == f else 0.0
        out[f] = t.dequantize(t.encode(codes, unit), n).astype(float)
    return out


def _dense_least_squares(cols, W, H, group):
    """min_p ‖w_r − D_r p‖²_H row by row with a dense design D_r [n, groups · fields]; returns (errors, p)."""
    m, n = W.shape
    G = n // group
    errs, ps = [], []
    for r in range(m):
        D = np.zeros((n, G * len(cols)))
        for k, u in enumerate(cols.values()):
            for g in range(G):
                D[g * group:(g + 1) * group, g * len(cols) + k] = u[r, g * group:(g + 1) * group]
        A = np.linalg.cholesky(H).T @ D
        p = np.linalg.lstsq(A, np.linalg.cholesky(H).T @ W[r], rcond=None)[0]
        e = W[r] - D @ p
        errs.append(e @ H @ e)
        ps.append(p.reshape(G, len(cols)))
    return np.array(errs), np.array(ps)


def _row_err(W, V, H):
    E = W - V.astype(float)
    return np.einsum("rn,nk,rk->r", E, H, E)


@pytest.mark.parametrize("qtype,n,group", [("q4_0", 128, 32), ("q4_0", 128, 64), ("q4_1", 128, 32),
                                           ("iq4_nl", 128, 32), ("q4_k", 512, 256), ("q3_k", 256, 256),
                                           ("q2_k", 256, 256)])
def test_refit_is_the_least_squares_floats_for_the_codes(qtype, n, group):
    lat, codes, params, W, H = _swept(qtype, n, group)
    t = lat.qtype
    cols = _hand_columns(qtype, codes, params, n)
    swept = t.dequantize(t.encode(codes, params), n)
    before = _row_err(W, swept, H)
    best, p_best = _dense_least_squares(cols, W, H, group)
    r = refit_params(lat, codes, params, W, H)
    after = _row_err(W, r.dequant, H)
    # codes untouched, bytes are what to_float reads, and every row at the optimum up to fp16 storage
    assert np.array_equal(t.decode(r.data, n)[0], codes)
    assert np.array_equal(r.dequant, t.dequantize(r.data, n))
    assert np.all(after <= before)
    assert np.all(after >= best * (1 - 1e-9))
    assert np.all(after <= best * (1 + 2e-3)), (after / best).max()     # fp16 storage of the floats
    assert r.rows_changed == codes.shape[0] and r.err_after < 0.99 * r.err_before   # the problem is not vacuous
    assert np.isclose(r.err_after, after.sum(), rtol=1e-9) and np.isclose(r.err_before, before.sum(), rtol=1e-9)
    # the stored floats are the least-squares floats rounded to fp16
    for k, f in enumerate(cols):
        stored = r.params[f].astype(float)[:, ::group // t.block_size]
        assert np.allclose(stored, p_best[:, :, k], rtol=2e-3, atol=1e-4 * np.abs(p_best[:, :, k]).max())


def test_refit_never_raises_a_row_and_keeps_groups_it_cannot_see():
    lat, codes, params, W, H = _swept("q4_0", 128, 32, seed=1)
    # a group with every code 0 and a metric blind to another group: their floats stay as swept
    codes[:, :32] = 0
    H[64:96, :] = 0
    H[:, 64:96] = 0
    r = refit_params(lat, codes, params, W, H)
    assert np.array_equal(r.params["d"][:, 0], params["d"][:, 0])
    assert np.array_equal(r.params["d"][:, 2], params["d"][:, 2])
    assert np.all(_row_err(W, r.dequant, H) <= _row_err(W, lat.qtype.dequantize(lat.qtype.encode(codes, params), 128), H))
    # already optimal floats: a second refit finds nothing left to remove
    r2 = refit_params(lat, codes, r.params, W, H)
    assert r2.err_after >= r2.err_before * (1 - 1e-6)


def test_methods_refit_lowers_their_own_error_with_the_same_codes():
    from test_methods import _problem

    W, st = _problem(seed=7, n=128)
    plain, refit = make_lattice("q4_0"), make_lattice("q4_0", refit="least-squares")
    for name in ("gptq", "qep", "rarebal"):
        m = get_method(name)
        a, b = m.quantize_group(W, st, plain), m.quantize_group(W, st, refit)
        H = m.metric(st)
        for k in W:
            assert np.array_equal(a[k].codes(), b[k].codes()), (name, k)
            assert not torch.equal(a[k].data, b[k].data), (name, k)
            assert b[k].info["refit_rows"] > 0 and 0 < b[k].info["refit_err_removed"] < 1
            if name == "gptq":   # target W: the refit lowers the error the method reports
                assert rel_error(W[k], b[k].dequant, H) < rel_error(W[k], a[k].dequant, H)


def test_refit_mode_is_validated():
    from tarq.ggml import TypePlan

    with pytest.raises(ValueError, match="lattice refit"):
        make_lattice("q4_0", refit="yes")
    with pytest.raises(ValueError, match="lattice refit"):
        TypePlan("q4_0", refit="lsq")
    assert TypePlan("q4_0", refit="least-squares").lattice_for("x.weight", (4, 64)).refit == "least-squares"


def test_cli_refit_on_a_random_model(tmp_path):
    """`tarq quantize --lattice-refit least-squares`: the plan records it and every solved Linear reports what the
    refit removed; the codes of the first group solved (same statistics either way) are the sweep's."""
    from pathlib import Path

    from tarq import testing
    from tarq.cli.main import main
    from tarq.qmodel import load_quantized_dir

    hf = testing.write_random_moonshine(tmp_path / "hf")
    demo = Path(__file__).resolve().parents[1] / "python" / "tarq" / "demo_data" / "calib"
    common = ["--format", "q4_0", "--method", "gptq", "--calib", str(demo), "--n-calib", "1", "--no-progress",
              "--threads", "1"]
    assert main(["quantize", str(hf), "--out", str(tmp_path / "plain"), *common]) == 0
    assert main(["quantize", str(hf), "--lattice-refit", "least-squares", "--out", str(tmp_path / "refit"),
                 *common]) == 0
    plain, refit = load_quantized_dir(tmp_path / "plain"), load_quantized_dir(tmp_path / "refit")
    assert refit.report["format"]["refit"] == "least-squares" and plain.report["format"]["refit"] == "none"
    solved = {n: L for n, L in refit.report["layers"].items() if "refit_err_removed" in L}
    assert solved and all(0 <= L["refit_err_removed"] < 1 for L in solved.values())
    assert sum(L["refit_err_removed"] > 0 for L in solved.values()) > len(solved) // 2
    assert not any("refit_err_removed" in L for L in plain.report["layers"].values())
    # where the statistics are the same in both runs (the first layers solved), the codes are the sweep's and only
    # the floats moved
    same_codes = [n for n in solved
                  if np.array_equal(*(m.quantized[n].qtype.decode(m.quantized[n].numpy(), m.quantized[n].shape[1])[0]
                                      for m in (plain, refit)))]
    assert same_codes
    assert all(not np.array_equal(plain.quantized[n].numpy(), refit.quantized[n].numpy()) for n in same_codes)
