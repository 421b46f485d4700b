"""Torch <-> NumPy wrapper around the compiled kernels ``tarq._C`` (same API as :mod:`.reference`).

The extension never sees torch: CPU tensors go through NumPy; CUDA tensors are passed to the CUDA sweep
as raw device pointers (``data_ptr``), so nothing links libtorch. Importing this module raises ImportError
when the extension is missing; :mod:`tarq.kernels` then falls back to the reference.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from .. import _C  # noqa: F401  (ImportError here means: not built)
from .reference import split_rows
from .types import CholeskyResult, NonPDHessianError, SweepResult
from .validate import (check_hessian, check_importance, check_sweep_inputs, effective_block_size,
                       normalize_batched_inputs)

HAS_CUDA = bool(getattr(_C, "has_cuda", False))
_log = logging.getLogger(__name__)
_warned_no_cuda_sweep = False


def cholesky_inverse_upper(H: torch.Tensor, damp_frac: float = 0.01, max_tries: int = 8) -> CholeskyResult:
    H = check_hessian(H, damp_frac, max_tries)
    device = H.device
    arr = np.ascontiguousarray(H.detach().to("cpu", torch.float64).numpy())
    try:
        U, damp, dead, _tries = _C.cholesky_inverse_upper(arr, float(damp_frac), int(max_tries))
    except _C.NonPDHessianError as exc:
        raise NonPDHessianError(str(exc)) from None
    return CholeskyResult(U=torch.from_numpy(U).to(device), damp=float(damp),
                          dead=torch.from_numpy(dead).to(device))


_MODES = {"plain": 0, "weighted": 1}


def _lattice_args(lat) -> dict:
    return dict(type_id=lat.qtype.type_id, group=lat.group, mode=_MODES[lat.fit])


def _to_result(lat, codes, params, deq, row_err) -> tuple[SweepResult, torch.Tensor]:
    row_err = torch.from_numpy(row_err)
    res = SweepResult(codes=torch.from_numpy(codes), params=torch.from_numpy(params), dequant=torch.from_numpy(deq),
                      err=row_err.sum().to(torch.float32), lattice=lat)
    _check_values(res.dequant)
    return res, row_err


def _check_values(deq: torch.Tensor) -> None:
    if not bool(torch.isfinite(deq).all()):
        raise ValueError("a group scale overflows float16 (|w| > ~5e5): the weights cannot be put on this lattice")


def _as_f64_numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float64).numpy())


def _sweep_cpu(Ws: list[torch.Tensor], Us: list[torch.Tensor], u_index: list[int], lat, block_size: int,
               importance) -> list[tuple[SweepResult, torch.Tensor]]:
    out = _C.gptq_sweep_multi([_as_f64_numpy(W) for W in Ws], [_as_f64_numpy(U) for U in Us], u_index,
                              importance=importance, block=int(block_size), **_lattice_args(lat))
    return [_to_result(lat, *t) for t in out]


def _sweep_cuda(W: torch.Tensor, U: torch.Tensor, lat, block_size: int, importance) -> tuple[SweepResult, torch.Tensor]:
    m, n = W.shape
    t = lat.qtype
    Wd = W.detach().to(torch.float64).contiguous()
    Ud = U.detach().to(torch.float64).contiguous()
    imp = torch.from_numpy(importance).to(W.device) if importance is not None else None
    codes = torch.empty(m, n, dtype=torch.int8, device=W.device)
    params = torch.empty(m, n // t.block_size, t.param_dtype.itemsize, dtype=torch.uint8, device=W.device)
    deq = torch.empty(m, n, dtype=torch.float32, device=W.device)
    row_err = torch.empty(m, dtype=torch.float64, device=W.device)
    stream = torch.cuda.current_stream(W.device).cuda_stream
    _C.gptq_sweep_cuda(Wd.data_ptr(), Ud.data_ptr(), m, n, codes.data_ptr(), params.data_ptr(), deq.data_ptr(),
                       row_err.data_ptr(), importance=imp.data_ptr() if imp is not None else 0,
                       block=int(block_size), stream=int(stream), **_lattice_args(lat))
    res = SweepResult(codes=codes, params=params, dequant=deq, err=row_err.sum().to(torch.float32), lattice=lat)
    _check_values(res.dequant)
    return res, row_err


def _to_device(res: SweepResult, device: torch.device) -> SweepResult:
    return SweepResult(codes=res.codes.to(device), params=res.params.to(device), dequant=res.dequant.to(device),
                       err=res.err.to(device), lattice=res.lattice)


def _warn_cpu_sweep_for_cuda() -> None:
    global _warned_no_cuda_sweep
    if not _warned_no_cuda_sweep:
        _log.warning("CUDA tensors but tarq._C was built without the CUDA sweep (no nvcc at build time): "
                     "sweeping on the CPU and copying the results back")
        _warned_no_cuda_sweep = True


def gptq_sweep(W: torch.Tensor, U: torch.Tensor, lat, block_size: int = 128, importance=None) -> SweepResult:
    W, U = check_sweep_inputs(W, U, lat)
    effective_block_size(block_size, lat.group)  # validates
    imp = check_importance(importance, lat, W.shape[1])
    if W.is_cuda and HAS_CUDA:
        return _sweep_cuda(W, U, lat, block_size, imp)[0]
    res = _sweep_cpu([W], [U], [0], lat, block_size, imp)[0][0]
    if W.is_cuda:
        _warn_cpu_sweep_for_cuda()
        res = _to_device(res, W.device)
    return res


def gptq_sweep_batched(Ws, Us: torch.Tensor, lat, block_size: int = 128, importance=None) -> list[SweepResult]:
    Ws, Us, shared = normalize_batched_inputs(Ws, Us)
    U_list = [Us] if shared else Us
    for i, W in enumerate(Ws):
        check_sweep_inputs(W, U_list[0 if shared else i], lat)
    imp = check_importance(importance, lat, Ws[0].shape[1])
    if Ws[0].is_cuda and not HAS_CUDA:
        _warn_cpu_sweep_for_cuda()
        u_index = [0] * len(Ws) if shared else list(range(len(Ws)))
        return [_to_device(r, Ws[0].device) for r, _ in _sweep_cpu(Ws, U_list, u_index, lat, block_size, imp)]
    if Ws[0].is_cuda:
        if shared:  # rows are independent: one sweep over the stacked rows, then split
            res, row_err = _sweep_cuda(torch.cat(Ws, dim=0), Us, lat, block_size, imp)
            return split_rows(res, row_err, [W.shape[0] for W in Ws])
        # independent pairs: one launch sequence per pair (a fused multi-U launch is future work)
        return [_sweep_cuda(W, U, lat, block_size, imp)[0] for W, U in zip(Ws, Us)]
    u_index = [0] * len(Ws) if shared else list(range(len(Ws)))
    return [r for r, _ in _sweep_cpu(Ws, U_list, u_index, lat, block_size, imp)]


def quantize_rtn(W: torch.Tensor, lat, importance=None) -> SweepResult:
    from .reference import quantize_rtn as _rtn
    return _rtn(W, lat, importance)
