"""Exceptions the ``tarq`` command reports as one line (with ``ValueError`` and ``OSError``), never a traceback."""
from __future__ import annotations


class RuntimeCrash(RuntimeError):
    """A ggml runtime process died or reported an error; the message is one line naming the model file."""
