"""Per-weight quantization format: one default plus regex overrides (first match wins).

This is the small policy the calibration pipeline consults for each group of weights until the "types" work's
``TypePlan`` (docs: coord/API.md, ``plan.type_for(hf_name, shape)``) replaces it; both take the same inputs
(``--format`` + ``{regex: type}``). Weights quantized together (one group: q/k/v, or gate/up) must get one format,
which also keeps CrispASR's QKV fusion available (it fuses only when q, k, v share a type). Problems are reported
before any calibration work, naming the tensor.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from ..formats import QuantFormat, get_format


@dataclass(frozen=True)
class TypePolicy:
    default: QuantFormat
    overrides: tuple[tuple[str, QuantFormat], ...] = ()

    @classmethod
    def build(cls, default: QuantFormat, overrides: Mapping[str, str] | None = None) -> "TypePolicy":
        """``overrides``: {regex over HF parameter names: format name}; the default's group size is kept."""
        items = []
        for pattern, fmt in (overrides or {}).items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"tensor-type override {pattern!r}: not a regular expression ({e})") from None
            items.append((pattern, get_format(fmt, default.group_size)))
        return cls(default, tuple(items))

    @property
    def is_uniform(self) -> bool:
        return not self.overrides

    def format_for(self, name: str) -> QuantFormat:
        for pattern, fmt in self.overrides:
            if re.search(pattern, name):
                return fmt
        return self.default

    def format_for_group(self, names: Iterable[str]) -> QuantFormat:
        """One format for weights that are quantized together; an error when the overrides split the group."""
        names = list(names)
        fmts = {n: self.format_for(n) for n in names}
        kinds = {f.name for f in fmts.values()}
        if len(kinds) > 1:
            detail = ", ".join(f"{n} -> {f.name}" for n, f in fmts.items())
            raise ValueError(f"tensor-type overrides give one group different types ({detail}); weights that share "
                             f"an input (q/k/v, gate/up) are quantized together and must share a type")
        return fmts[names[0]]

    def check(self, groups: Iterable[Iterable[str]], shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Every group gets one format and every weight's row width tiles its group size (before any work)."""
        for g in groups:
            fmt = self.format_for_group(g)
            for n in g:
                width = shapes[n][-1]
                if width % fmt.group_size:
                    raise ValueError(f"{n}: row width {width} is not a multiple of the {fmt.name} group size "
                                     f"{fmt.group_size}")

    def describe(self) -> dict:
        return {"default": self.default.name, "group_size": self.default.group_size,
                "overrides": {p: f.name for p, f in self.overrides}}


def as_policy(fmt: QuantFormat | TypePolicy) -> TypePolicy:
    return fmt if isinstance(fmt, TypePolicy) else TypePolicy(fmt)
