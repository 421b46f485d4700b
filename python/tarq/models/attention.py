"""Scaled dot-product attention over per-head tensors, shared by the calibration adapters.

The adapters compute attention one utterance at a time on ``[heads, T, head_dim]`` tensors. PyTorch 2.13's CPU
dispatcher picks the fused flash-attention kernel only for 4-D ``[batch, heads, T, head_dim]`` inputs; 3-D
inputs fall back to the unfused math path (materialised ``T × T`` scores, safe-softmax masking passes), which
made Whisper's 1,500-frame encoder self-attention ~5× slower and ~70 % of a calibration's forward time
(benchmarks/README.md, "Quantization speed", issue 13 second round). Adding the batch axis here keeps every
adapter on the fused kernel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def attend_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float, causal: bool = False,
                 enable_gqa: bool = False) -> torch.Tensor:
    """softmax(q kᵀ · scale [+ causal mask]) v per head: q ``[H, T, hd]``, k/v ``[H_kv, S, hd]`` -> ``[H, T, hd]``.

    ``causal`` masks key s > query t (top-left aligned, as ``F.scaled_dot_product_attention``); ``enable_gqa``
    lets H be a multiple of H_kv (grouped-query attention, key/value head j serves query heads j·H/H_kv …)."""
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"attend_heads takes [heads, T, head_dim] tensors, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    out = F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=causal, scale=scale,
                                         enable_gqa=enable_gqa)
    return out[0]
