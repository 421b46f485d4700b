"""Encoder-frame tail tags from the FP model's cross-attention (issue 15, "encoder frame tags").

rareBAL splits a group's positions into common and tail. Decoder positions are tagged by the word they predict
(calib/rarity.py), but encoder frames carry no words, so without this module every encoder group and the
cross-attention k/v see no tail positions and rareBAL degenerates to GPTQ there (λ = 0).

Mapping: with the transcript teacher-forced through the FP model, the cross-attention of the *alignment heads*
(the heads Whisper's own word timestamps use, named by the checkpoint's generation config; else every head of the
upper half of the decoder) says which frames each decoder position reads. For every tail decoder position t:

    A_t(f) = mean over alignment heads of the cross-attention weight of position t on frame f
    tagged(t) = { f : A_t(f) >= rel_threshold * max_f A_t(f) }          (the attention peak, not one argmax frame)
    tail frames = dilate( union_t tagged(t), ±dilation frames )

Whisper frames are 20 ms; the default dilation of 3 frames (±60 ms) covers the coarticulation around a word's
acoustic core, which the attention peak under-covers (alignment heads are sharp). Both knobs are documented in
docs/methods.md and recorded in report.json.
"""
from __future__ import annotations

import torch

DEFAULT_REL_THRESHOLD = 0.5
DEFAULT_DILATION = 3


def frames_from_attention(attention: torch.Tensor, tail: torch.Tensor, *, rel_threshold: float = DEFAULT_REL_THRESHOLD,
                          dilation: int = DEFAULT_DILATION, n_frames: int | None = None) -> torch.Tensor:
    """Bool [n_frames] tail mask over encoder frames.

    ``attention``: [T_dec, F] cross-attention of each decoder position over F frames (already averaged over the
    alignment heads; rows need not be normalised). ``tail``: bool [T_dec] tail tags of the decoder positions.
    ``n_frames``: length of the returned mask (default F; frames beyond F are never tagged).
    """
    if attention.dim() != 2:
        raise ValueError(f"attention must be [decoder positions, frames], got shape {tuple(attention.shape)}")
    T, F = attention.shape
    tail = tail.reshape(-1).bool()
    if tail.numel() != T:
        raise ValueError(f"{tail.numel()} tail tags for {T} decoder positions")
    if not 0.0 < rel_threshold <= 1.0:
        raise ValueError(f"rel_threshold must be in (0, 1], got {rel_threshold}")
    if dilation < 0:
        raise ValueError(f"dilation must be >= 0, got {dilation}")
    n = F if n_frames is None else int(n_frames)
    mask = torch.zeros(n, dtype=torch.bool, device=attention.device)
    rows = attention[tail.to(attention.device)].float()
    if rows.numel() == 0:
        return mask
    peak = rows.amax(dim=1, keepdim=True)
    hit = (rows >= rel_threshold * peak) & (peak > 0)
    core = hit.any(dim=0)                       # [F]
    if dilation:
        # max-pool of the 0/1 mask = dilation by ±dilation frames
        core = torch.nn.functional.max_pool1d(core.float()[None, None], kernel_size=2 * dilation + 1, stride=1,
                                              padding=dilation)[0, 0] > 0
    m = min(n, F)
    mask[:m] = core[:m]
    return mask


def alignment_heads_or_upper(alignment_heads, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """(layer, head) pairs: the checkpoint's alignment heads, else every head of the upper half of the decoder."""
    if alignment_heads:
        heads = [(int(l), int(h)) for l, h in alignment_heads]
        bad = [(l, h) for l, h in heads if not (0 <= l < n_layers and 0 <= h < n_heads)]
        if bad:
            raise ValueError(f"alignment heads {bad} outside a {n_layers}-layer, {n_heads}-head decoder")
        return heads
    return [(l, h) for l in range(n_layers // 2, n_layers) for h in range(n_heads)]
