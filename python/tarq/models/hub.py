"""Hugging Face checkpoints shared by every family: offline hub-id resolution, config reading, and weight loading
that fails with one clear line (naming the file) on a missing tensor, an unexpected one or a wrong shape, instead of
transformers' silent random initialisation."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def resolve_hub_id(repo_id: str) -> Path:
    """Local snapshot of a hub id from the HF cache; never downloads (this tool works offline)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError, HFValidationError, ...
        raise FileNotFoundError(
            f"{repo_id}: not a local directory, not a known alias, and not in the Hugging Face cache "
            f"({os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'}); "
            f"downloads are disabled here, so fetch it elsewhere and pass its directory ({type(e).__name__})") from None


def read_config(directory: Path) -> dict[str, Any]:
    f = Path(directory) / "config.json"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: not found; not a Hugging Face model directory")
    try:
        cfg = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{f}: invalid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{f}: expected a JSON object")
    return cfg


def _safetensors_files(d: Path) -> list[Path]:
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{index}: not a safetensors index ({type(e).__name__}: {e})") from None
        files = [d / s for s in shards]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"{f}: shard listed in {index.name} is missing")
        return files
    return [d / "model.safetensors"] if (d / "model.safetensors").is_file() else []


def checkpoint_shapes(d: Path) -> dict[str, tuple[tuple[int, ...], Path]] | None:
    """{tensor name: (shape, file)} from the safetensors headers (no data read); None without safetensors files."""
    from safetensors import safe_open

    files = _safetensors_files(d)
    if not files:
        return None
    out: dict[str, tuple[tuple[int, ...], Path]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as h:
                for k in h.keys():
                    out[k] = (tuple(h.get_slice(k).get_shape()), f)
        except Exception as e:  # SafetensorError, OSError
            raise ValueError(f"{f}: unreadable safetensors file ({type(e).__name__}: {e})") from None
    return out


def expected_shapes(model_cls, config) -> dict[str, tuple[int, ...]]:
    """Parameter/persistent-buffer shapes of ``model_cls(config)``, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = model_cls(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _list(names) -> str:
    names = sorted(names)
    return ", ".join(map(str, names[:4])) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")


def check_state(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], source: str, *,
                optional: set[str] = frozenset(), where: dict[str, Any] | None = None) -> None:
    """Raise one ValueError line naming ``source`` (or the file holding the tensor) for the first problem class:
    missing tensors, unexpected tensors, wrong shapes. ``optional``: names that may be absent (tied aliases)."""
    missing = set(expected) - set(found) - set(optional)
    if missing:
        raise ValueError(f"{source}: missing tensor(s) {_list(missing)}")
    unexpected = set(found) - set(expected)
    if unexpected:
        raise ValueError(f"{source}: unexpected tensor(s) {_list(unexpected)} (not in the config's architecture)")
    for k in sorted(found):
        if tuple(found[k]) != tuple(expected[k]):
            src = (where or {}).get(k, source)
            raise ValueError(f"{src}: tensor {k} has shape {tuple(found[k])}, the config expects {tuple(expected[k])}")


class _quiet_loading:
    """transformers' "Loading weights" progress bar and its load-report warnings off: tarq reports problems itself,
    in one line (the report's table would bury it)."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._bar = hf_logging.is_progress_bar_enabled()
        self._level = hf_logging.get_verbosity()
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self._level)
        if self._bar:
            hf_logging.enable_progress_bar()


def load_pretrained_checked(model_cls, config, d: Path, *, dtype=None, optional: set[str] = frozenset()):
    """``model_cls.from_pretrained(d)`` offline, failing with one line on a bad checkpoint.

    Shapes are checked first from the safetensors headers (a tensor present under the model's own name must have the
    config's shape); missing and unexpected tensors come from transformers' loading info, which already applies its
    checkpoint key conversions and ignore lists. transformers alone would initialise a missing tensor randomly and
    carry on."""
    found = checkpoint_shapes(d)
    if found is not None:
        expected = expected_shapes(model_cls, config)
        common = set(found) & set(expected)
        check_state({k: expected[k] for k in common}, {k: found[k][0] for k in common}, str(d),
                    where={k: v[1] for k, v in found.items()})
    try:
        with _quiet_loading():
            model, info = model_cls.from_pretrained(str(d), config=config, dtype=dtype or torch.float32,
                                                    local_files_only=True, output_loading_info=True)
    except OSError as e:
        raise FileNotFoundError(f"{d}: cannot load weights ({str(e).splitlines()[0]})") from None
    except RuntimeError as e:   # size mismatch in a .bin checkpoint (no safetensors header to check beforehand)
        raise ValueError(f"{d}: weights do not match config.json ({str(e).splitlines()[0]})") from None
    missing = set(info.get("missing_keys", ())) - set(optional)
    if missing:
        raise ValueError(f"{d}: missing tensor(s) {_list(missing)}")
    if info.get("unexpected_keys"):
        raise ValueError(f"{d}: unexpected tensor(s) {_list(info['unexpected_keys'])} (not in the config's "
                         f"architecture)")
    if info.get("mismatched_keys"):
        raise ValueError(f"{d}: tensor(s) with the wrong shape {_list(info['mismatched_keys'])}")
    return model.eval()


def build_from_state_dict(model_cls, config, state_dict: dict[str, torch.Tensor], source: str, *,
                          tied: dict[str, str], dtype=None):
    """``model_cls`` holding exactly ``state_dict`` (tied aliases re-tied to their stored weight), for quantized
    directories. Keys and shapes are checked first, so a damaged directory gives one line, not a half-random model."""
    sd = {k: v for k, v in state_dict.items() if k not in tied}
    check_state(expected_shapes(model_cls, config), {k: tuple(v.shape) for k, v in sd.items()}, source,
                optional=set(tied))
    with _quiet_loading():
        model = model_cls.from_pretrained(None, config=config, state_dict=sd, dtype=dtype or torch.float32)
    for alias, stored in tied.items():
        if model.get_parameter(alias) is not model.get_parameter(stored):
            raise RuntimeError(f"{source}: {alias} is not tied to {stored} after loading")
    return model.eval()


# keys save_pretrained writes that are not model settings (the config of a quantized directory is rebuilt from them)
_NOT_MODEL_CONFIG = ("transformers_version", "_name_or_path")


def model_config(config: dict[str, Any]) -> dict[str, Any]:
    """A quantized directory's saved HF config without the bookkeeping keys, ready for ``Config.from_dict``."""
    return {k: v for k, v in config.items() if k not in _NOT_MODEL_CONFIG}


def quantized_source(ckpt) -> dict[str, Any]:
    """``LoadedModel.source`` of a fake-quantized model rebuilt from a tarq quantized directory: the directory,
    its method and format, and the float model it came from (``tarq_model_info.json``, when saved)."""
    d = Path(ckpt.path)
    info_file = d / "tarq_model_info.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    return {"kind": "tarq", "path": str(d), "format": ckpt.meta.get("format"),
            "group_size": ckpt.meta.get("group_size"), "method": ckpt.meta.get("method"),
            "base_model": info.get("name")}
