"""Round-to-nearest: exactly what whisper.cpp's ``quantize`` writes (ggml_quantize_chunk on the fp16-rounded
weight, no importance matrix), for every ggml type."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ggml import Lattice, as_f16_source, ggml_quantize
from .base import LinearResult, QuantMethod, check_finite
from .registry import register_method


def rtn_quantize(W: torch.Tensor, lat: Lattice, importance: torch.Tensor | None = None) -> LinearResult:
    """ggml's quantizer on the fp16-rounded weight (``importance``: its quant_weights, i.e. imatrix RTN).

    Groups wider than the type's block (Q4_0/Q5_0/Q8_0 with 64/128 columns sharing one scale) have no ggml
    counterpart: they use the lattice's own RTN (the sweep with U = I; weighted fit when importance is given)."""
    x = as_f16_source(W.detach().float().cpu().numpy())
    t = lat.qtype
    if lat.group == t.block_size:
        imx = None if importance is None else importance.detach().float().cpu().numpy()
        return LinearResult.from_bytes(t, ggml_quantize(t, x, imx), W.shape[1],
                                       {"rtn": "ggml" if importance is None else "ggml_imatrix"})
    from ..kernels import quantize_rtn

    fit = "plain" if importance is None else "weighted"
    r = quantize_rtn(torch.from_numpy(x), Lattice(t, lat.group, fit), importance)
    return LinearResult.from_sweep(r, {"rtn": f"lattice_{fit}"})


@register_method("rtn")
class RTN(QuantMethod):
    needs_stats = False

    @dataclass
    class Config:
        pass

    def quantize_group(self, weights, stats, lat):
        out = {}
        for name, W in weights.items():
            check_finite(name, W)
            out[name] = rtn_quantize(W, lat)
        return out
