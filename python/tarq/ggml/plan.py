"""TypePlan: which ggml type each weight gets (docs/architecture.md "ggml types").

    plan = TypePlan("q4_k", overrides={r"audio\\.": "q8_0"}, group_size=None, fit="auto", refit="none")
    plan.type_for("model.decoder.layers.0.fc1.weight", (1536, 384)) -> GgmlType
    plan.lattice_for(name, shape) -> Lattice   # type + solver group width + fit mode + refit mode
    plan.check(groups)   # every weight fits its type; weights solved together share one type

A type that does not fit a weight's row width is an error raised before any work, naming the tensor, its width
and the types that fit.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

from .base import GgmlType, all_types, get_type
from .lattice import FIT_MODES, REFIT_MODES, Lattice

PLAN_FITS = ("auto", *FIT_MODES)   # auto: each type's default_fit


class TypePlan:
    def __init__(self, default, overrides: Mapping[str, object] | None = None, group_size: int | None = None,
                 fit: str = "auto", refit: str = "none"):
        self.default = get_type(default)
        if not self.default.quantized:
            raise ValueError(f"--format {self.default.name}: not a quantized type")
        if fit not in PLAN_FITS:
            raise ValueError(f"lattice fit must be one of {PLAN_FITS}, got {fit!r}")
        self.fit = fit
        if refit not in REFIT_MODES:
            raise ValueError(f"lattice refit must be one of {REFIT_MODES}, got {refit!r}")
        self.refit = refit
        self.overrides: list[tuple[re.Pattern, GgmlType]] = []
        for pattern, t in (overrides or {}).items():
            try:
                rx = re.compile(pattern)
            except re.error as e:
                raise ValueError(f"type override {pattern!r}: not a regular expression ({e})") from None
            self.overrides.append((rx, get_type(t)))
        self.group_size = group_size
        for t in [self.default, *(t for _, t in self.overrides)]:
            if not t.quantized:
                raise ValueError(f"type override {t.name}: not a quantized type")
        if group_size is not None and not any(group_size in t.solver_groups
                                              for t in [self.default, *(t for _, t in self.overrides)]):
            raise ValueError(f"--group-size {group_size}: no type in the plan offers it (Q4_0, Q5_0, Q8_0 take "
                             f"32, 64 or 128; the others their block size)")

    def type_for(self, name: str, shape: Sequence[int] | None = None) -> GgmlType:
        """The type of weight ``name`` (first matching override, else the default); with ``shape`` it is
        checked to tile the weight's rows."""
        t = self.default
        for rx, ot in self.overrides:
            if rx.search(name):
                t = ot
                break
        if shape is not None:
            self._check_fit(name, t, int(shape[-1]))
        return t

    def lattice_for(self, name: str, shape: Sequence[int] | None = None) -> Lattice:
        t = self.type_for(name, shape)
        return Lattice(t, self.group_for(t), t.default_fit if self.fit == "auto" else self.fit, self.refit)

    def group_for(self, t: GgmlType) -> int:
        """The solver parameter-group width for type ``t`` (the plan's --group-size applies where allowed)."""
        if self.group_size and self.group_size in t.solver_groups:
            return self.group_size
        return t.solver_groups[0]

    def _check_fit(self, name: str, t: GgmlType, n: int) -> None:
        check_fits(name, t, n, self.group_for(t) if t.quantized else 1)

    def check(self, groups: Iterable[Sequence[tuple[str, Sequence[int]]]]) -> dict[str, GgmlType]:
        """Types of every weight, checked up front. ``groups``: for each set of weights solved together (one
        shared metric, e.g. q/k/v), its (name, shape) pairs. Raises ValueError on the first problem."""
        out: dict[str, GgmlType] = {}
        for group in groups:
            types = {}
            for name, shape in group:
                types[name] = self.type_for(name, shape)
            if len({t.name for t in types.values()}) > 1:
                desc = ", ".join(f"{n}: {t.name}" for n, t in types.items())
                raise ValueError(f"weights quantized together must share one type, got {desc}")
            out.update(types)
        return out

    def describe(self) -> dict:
        return {"default": self.default.name, "group_size": self.group_size, "fit": self.fit, "refit": self.refit,
                "overrides": {rx.pattern: t.name for rx, t in self.overrides}}


def quantized_types() -> list[GgmlType]:
    return [t for t in all_types() if t.quantized]


def check_fits(name: str, t, n: int, group: int = 1) -> None:
    """One-line ValueError when rows of ``n`` do not tile type ``t`` (and ``group``-column solver groups)."""
    t = get_type(t)
    if t.fits(n) and n % group == 0:
        return
    fitting = [o.name for o in quantized_types() if o.fits(n)]
    unit = (f"{t.name.upper()}'s {t.block_size}-element {'super-blocks' if t.block_size > 32 else 'blocks'}"
            if not t.fits(n) else f"{group}-column groups")
    raise ValueError(f"{name}: rows of {n} do not tile {unit}; types that fit: {', '.join(fitting)}")
