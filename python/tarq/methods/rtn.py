"""Round-to-nearest on the export lattice: must equal whisper.cpp's own ``quantize`` bit for bit."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..formats import GGML_BLOCK, QuantFormat
from .base import LinearResult, QuantMethod, check_finite
from .registry import register_method


def rtn_quantize(W: torch.Tensor, fmt: QuantFormat) -> LinearResult:
    """ggml's reference row quantizer on the fp16-rounded weight (what whisper.cpp's quantize sees) for
    32-element groups; the kernels' RTN for wider groups (no ggml counterpart: one d per 64/128)."""
    if fmt.group_size == GGML_BLOCK:
        from ..export.ggml_rtn import as_f16_source, ggml_reference_quantize

        bd = ggml_reference_quantize(fmt.name, as_f16_source(W.detach().float().cpu().numpy()))
        codes = torch.from_numpy(np.ascontiguousarray(bd.codes)).to(torch.int8)
        scales = torch.from_numpy(np.ascontiguousarray(bd.scales)).to(torch.float16)
        dequant = codes.float() * scales.float().repeat_interleave(GGML_BLOCK, dim=1)
        return LinearResult(codes, scales, dequant, {"rtn": "ggml_reference"})
    from ..kernels import quantize_rtn

    r = quantize_rtn(W.detach().float(), fmt)
    return LinearResult(r.codes, r.scales, r.dequant, {"rtn": "kernels"})


@register_method("rtn")
class RTN(QuantMethod):
    needs_stats = False

    @dataclass
    class Config:
        pass

    def quantize_group(self, weights, stats, fmt):
        out = {}
        for name, W in weights.items():
            check_finite(name, W)
            out[name] = rtn_quantize(W, fmt)
        return out
