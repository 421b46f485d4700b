"""imatrix RTN: ggml's importance-weighted quantization (llama.cpp / CrispASR ``--imatrix``) with importance from
the calibration audio, the baseline data-aware round-to-nearest users have today.

Importance of input column j = mean over calibration positions of x_j^2 (llama.cpp's imatrix: Σx² / count),
gathered on the full-precision model (``true_sequential = False``: the pipeline does not feed this method's
quantized weights forward), from the inputs of every Linear and, for Whisper's tied token embedding, from the final
hidden states that feed the output projection. The bytes are ggml_quantize_chunk(type, fp16-rounded W, ...,
imatrix), exactly as a ggml quantize tool with that imatrix would write them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..calib.stats import GroupStats
from .base import QuantMethod, check_finite
from .registry import register_method
from .rtn import rtn_quantize


def imatrix_from_stats(stats: GroupStats) -> torch.Tensor:
    """Per-column mean x^2 over the positions in ``stats`` (diag of H = Σ x xᵀ divided by the count)."""
    n = stats.n_common + stats.n_tail
    if n <= 0:
        raise ValueError("no calibration positions for this layer")
    return (stats.H.diagonal().double() / n).float()


@register_method("imatrix")
class Imatrix(QuantMethod):
    true_sequential = False

    @dataclass
    class Config:
        pass

    def quantize_group(self, weights, stats, lat):
        imx = imatrix_from_stats(stats)
        out = {}
        for name, W in weights.items():
            check_finite(name, W)
            out[name] = rtn_quantize(W, lat, imx)
        return out
