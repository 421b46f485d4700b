"""Quantization lattices that are also export formats.

The solver quantizes *onto* the lattice of a ggml block type, so the exporter can write the
solver's integer codes and fp16 scales verbatim (see ``shared/notes/formats.md`` §2).

A lattice is symmetric: ``w_hat = d * q`` with integer ``q`` in ``[qmin, qmax]`` and one fp16 scale
``d`` per group of ``group_size`` consecutive input columns. ggml blocks hold 32 elements; a group
of 64/128 is stored as 2/4 consecutive blocks that repeat the same ``d``.
"""
from __future__ import annotations

from dataclasses import dataclass

GGML_BLOCK = 32


@dataclass(frozen=True)
class QuantFormat:
    name: str          # "q4_0" | "q8_0"
    bits: int
    qmin: int
    qmax: int
    # Scale rule: d = signed_max / scale_divisor for Q4_0 (ggml: max / -8, so the largest-magnitude
    # element lands exactly on -8), d = abs_max / scale_divisor for Q8_0 (ggml: amax / 127).
    scale_divisor: float
    signed_max_scale: bool
    group_size: int = GGML_BLOCK

    def with_group_size(self, group_size: int) -> "QuantFormat":
        if group_size % GGML_BLOCK != 0 or group_size <= 0:
            raise ValueError(f"group size must be a positive multiple of {GGML_BLOCK}, got {group_size}")
        return QuantFormat(self.name, self.bits, self.qmin, self.qmax, self.scale_divisor,
                           self.signed_max_scale, group_size)


Q4_0 = QuantFormat("q4_0", 4, -8, 7, -8.0, True)
Q8_0 = QuantFormat("q8_0", 8, -127, 127, 127.0, False)

FORMATS = {f.name: f for f in (Q4_0, Q8_0)}


def get_format(name: str, group_size: int = GGML_BLOCK) -> QuantFormat:
    try:
        fmt = FORMATS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown quantization format {name!r}; supported: {sorted(FORMATS)}") from None
    return fmt.with_group_size(group_size)
