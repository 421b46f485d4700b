"""One registry for the quantization methods: ``@register_method("name")`` on a :class:`QuantMethod`."""
from __future__ import annotations

import dataclasses
from typing import Any

from .base import QuantMethod

_METHODS: dict[str, type[QuantMethod]] = {}


def register_method(name: str):
    def deco(cls: type[QuantMethod]) -> type[QuantMethod]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        _METHODS[name] = cls
        return cls
    return deco


def _load_builtin() -> None:
    from . import fade, fisher, gptq, qep, rarebal, rtn, tarq  # noqa: F401  (registration side effect)


def available_methods() -> list[str]:
    _load_builtin()
    return sorted(_METHODS)


def get_method(name: str, **options: Any) -> QuantMethod:
    """Instantiate a method; ``options`` not in the method's config are ignored (one CLI, many methods)."""
    _load_builtin()
    try:
        cls = _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {sorted(_METHODS)}") from None
    known = {f.name for f in dataclasses.fields(cls.Config)}
    cfg = cls.Config(**{k: v for k, v in options.items() if k in known and v is not None})
    return cls(cfg)
