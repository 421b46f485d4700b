"""Model loading: aliases, CTranslate2 conversion, Hugging Face and tarq quantized directories.

``load_model(spec)`` is the entry point; see docs/architecture.md ("models") for the contract.
Family adapters live in ``tarq.models.adapter`` / ``tarq.models.whisper_adapter``.
"""
from .aliases import available_aliases, resolve_alias
from .loaded import LoadedModel
from .loader import load_model

__all__ = ["LoadedModel", "available_aliases", "load_model", "resolve_alias"]
