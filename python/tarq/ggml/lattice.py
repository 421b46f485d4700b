"""The solver-side lattice of a block type: what the GPTQ sweep needs to round onto exactly the file's values.

When the sweep reaches the first column of a parameter group (32 columns for the legacy types and IQ4_NL,
or 64/128 for Q4_0/Q5_0/Q8_0 with a shared scale; the 256-column super-block for K-quants), the type's
``fit`` chooses the group's parameters from the *current*, error-updated weights of every row and returns
them exactly as the file stores them (fp16 d/dmin, quantized sub-block scales and mins). ``column_scales``
turns the stored parameters into, per column, the float32 pair (a, b) of the values the file can hold:

    affine types:    value(q) = fl32(fl32(a * q) + b)   (b = 0 and no add for types without an offset)
    codebook types:  value(i) = fl32(a * codebook[i])   (IQ4_NL)

which is exactly ggml's ``to_float`` for those bytes. The sweep rounds each column to the nearest value
(:func:`round_affine` / :func:`round_codebook`, float64; the same formulas in csrc/lattice/lattice.h).

``fit`` modes: ``"plain"`` uses ggml's own search without importance (what ``quantize`` does), ``"weighted"``
ggml's importance-weighted search (``quantize_*_impl`` with quant_weights) with per-column importance from the
diagonal of the method's metric H (docs/methods.md "Lattice fit").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FIT_MODES = ("plain", "weighted")
REFIT_MODES = ("none", "least-squares")   # after the sweep: keep its floats, or refit them (tarq.ggml.refit)


@dataclass(frozen=True)
class Lattice:
    """A type plus the solver options that change the lattice: parameter-group width, fit mode, refit mode."""
    qtype: "object"          # a BlockType
    group: int               # parameter-group width (columns sharing the group fit)
    fit: str = "plain"
    refit: str = "none"      # "least-squares": the group floats are refit to the final codes (tarq.ggml.refit)

    def __post_init__(self):
        t = self.qtype
        if not getattr(t, "quantized", False):
            raise ValueError(f"{t.name} is not a quantized type; nothing to solve for")
        if self.fit not in FIT_MODES:
            raise ValueError(f"lattice fit must be one of {FIT_MODES}, got {self.fit!r}")
        if self.refit not in REFIT_MODES:
            raise ValueError(f"lattice refit must be one of {REFIT_MODES}, got {self.refit!r}")
        if self.group not in t.solver_groups:
            raise ValueError(f"{t.name}: group size {self.group} is not available (choose from "
                             f"{', '.join(map(str, t.solver_groups))})")

    @property
    def name(self) -> str:
        return self.qtype.name

    @property
    def needs_row_sigma2(self) -> bool:
        return self.fit == "weighted" and self.qtype.row_sigma2_in_fit

    def fits(self, n: int) -> bool:
        return n > 0 and n % self.group == 0 and self.qtype.fits(n)


def make_lattice(qtype, group: int | None = None, fit: str = "plain", refit: str = "none") -> Lattice:
    from .base import get_type

    t = get_type(qtype)
    return Lattice(t, int(group or t.solver_groups[0]), fit, refit)


def row_sigma2(W: np.ndarray) -> np.ndarray:
    """mean(x^2) of each float32 row summed in order (ggml's sigma2 for the legacy imatrix quantizers)."""
    from .search import F, seq_sum

    x = np.asarray(W, dtype=F)
    return (seq_sum((x * x).astype(F)) / F(x.shape[1])).astype(F)


def round_affine(w, a, b, code_min: int, code_max: int):
    """Nearest stored value of float64 torch tensor ``w`` given float32 (a, b) of the same shape:
    q = clamp(floor((w - b) * (1/a)_f32 + 0.5)), value = fl32(fl32(a q) + b); a == 0 -> 1/a := 0.
    Returns (q, value) as float64 tensors."""
    import torch

    inv = torch.where(a != 0, 1.0 / a, torch.zeros_like(a)).to(torch.float64)     # 1/a in float32
    t = w if b is None else w - b.to(torch.float64)
    q = torch.floor(t * inv + 0.5).clamp_(code_min, code_max)
    v = a * q.to(torch.float32)
    if b is not None:
        v = v + b
    return q, v.to(torch.float64)


def round_codebook(w, a, values):
    """Nearest codebook entry of ``w / a`` (t = w * (1/a)_f32 in float64; ggml's best_index rule: ties go to
    the larger entry), value = fl32(a * codebook[i]). Returns (index, value) as float64 tensors."""
    import torch

    inv = torch.where(a != 0, 1.0 / a, torch.zeros_like(a)).to(torch.float64)
    t = w * inv
    vals = values.to(torch.float64)
    n = vals.numel()
    mu = torch.searchsorted(vals, t.contiguous(), right=True).clamp_(1, n - 1)
    lo, hi = vals[mu - 1], vals[mu]
    idx = torch.where(t - lo < hi - t, mu - 1, mu)
    idx = torch.where(t <= vals[0], torch.zeros_like(idx), idx)
    idx = torch.where(t >= vals[-1], torch.full_like(idx, n - 1), idx)
    v = a * values.to(torch.float32)[idx]
    return idx.to(torch.float64), v.to(torch.float64)
