"""Where tarq keeps files between runs (one definition for every subpackage)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$TARQ_CACHE``, else ``$XDG_CACHE_HOME/tarq``, else ``~/.cache/tarq``: converted checkpoints, decode cache."""
    if os.environ.get("TARQ_CACHE"):
        return Path(os.environ["TARQ_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tarq"
