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
    from . import fade, fisher, gptq, imatrix, qep, rarebal, rtn, tarq  # noqa: F401  (registration side effect)


def available_methods() -> list[str]:
    _load_builtin()
    return sorted(_METHODS)


def method_options(name: str) -> list[str]:
    """The option names (Config fields) method ``name`` takes."""
    return [f.name for f in dataclasses.fields(_method_class(name).Config)]


def _method_class(name: str) -> type[QuantMethod]:
    _load_builtin()
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(_METHODS))}") from None


def get_method(name: str, **options: Any) -> QuantMethod:
    """Instantiate a method. An option the method does not have is an error (it would silently do nothing);
    ``None`` means "the method's default"."""
    cls = _method_class(name)
    known = method_options(name)
    unknown = sorted(k for k, v in options.items() if k not in known and v is not None)
    if unknown:
        raise ValueError(f"method {name!r} has no option {', '.join(unknown)} "
                         f"(its options: {', '.join(known) or 'none'})")
    cfg = cls.Config(**{k: v for k, v in options.items() if v is not None})
    return cls(cfg)
