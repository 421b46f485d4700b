"""Model loading and the model-family registry.

``load_model(spec)`` is the entry point; ``get_family(name)`` returns a family's conventions (loader, calibration
adapter, prompt, tied parameters, torch decoder, export targets). One subpackage per family: ``whisper``,
``qwen3_asr``, ``moonshine``; see docs/architecture.md ("models") for the contract.
"""
from .family import ExportTarget, ModelFamily, families, family_names, get_family
from .loaded import LoadedModel
from .loader import load_model
from .whisper.aliases import available_aliases, resolve_alias

__all__ = ["ExportTarget", "LoadedModel", "ModelFamily", "available_aliases", "families", "family_names",
           "get_family", "load_model", "resolve_alias"]
