"""The quantized-model directory: the one artifact the solver writes and evaluators/exporters read.

Layout of ``OUT/`` (tarq_meta_version 2)::

    tarq.json               format (the most common type), method, source model, family,
                            tensor_types {name: ggml type}, tensor_shapes {name: [rows, cols]}
    config.json             the model's Hugging Face config (to rebuild the network)
    quantized.safetensors   for each quantized weight NAME (HF parameter name):
                              NAME.ggml  uint8 [rows, row_bytes]   the exact ggml block bytes of its type
    float.safetensors       every other parameter, float32 (biases, norms, convs, positional embeddings)
    tokenizer / feature-extractor / generation-config files (save_pretrained output)
    report.json             per-layer diagnostics written by the pipeline (optional)

The dequantized weight is exactly ggml's ``to_float`` of those bytes; exporters copy the bytes verbatim.
Types may differ per tensor (GGUF allows it; whisper.cpp's .bin does not). Version-1 directories
(NAME.codes int8 + NAME.scales fp16 per group, one format Q4_0/Q8_0) are converted to bytes on load.

Writes are atomic: everything goes to a temporary sibling directory that is renamed on success.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .ggml import GgmlType, get_type

META_FILE = "tarq.json"
QUANT_FILE = "quantized.safetensors"
FLOAT_FILE = "float.safetensors"
REPORT_FILE = "report.json"
META_VERSION = 2


@dataclass
class QuantizedTensor:
    qtype: GgmlType
    data: torch.Tensor       # uint8 [rows, row_bytes]: the exact ggml block bytes
    shape: tuple[int, int]   # (rows, cols) of the weight

    def __post_init__(self) -> None:
        self.qtype = get_type(self.qtype)
        if not isinstance(self.data, torch.Tensor):
            self.data = torch.from_numpy(np.ascontiguousarray(self.data))
        self.shape = tuple(int(s) for s in self.shape)
        if len(self.shape) != 2:
            raise ValueError(f"quantized tensors are 2-D, got shape {self.shape}")
        if self.data.dtype != torch.uint8:
            raise TypeError(f"data must be uint8 ggml bytes, got {self.data.dtype}")
        rows, cols = self.shape
        want = (rows, self.qtype.row_bytes(cols))
        if tuple(self.data.shape) != want:
            raise ValueError(f"{self.qtype.name} {self.shape}: data has shape {tuple(self.data.shape)}, expected {want}")

    def numpy(self) -> np.ndarray:
        return np.ascontiguousarray(self.data.detach().cpu().numpy())

    def dequantize(self) -> torch.Tensor:
        """float32 [rows, cols]: exactly what the runtime computes from the bytes (ggml's to_float)."""
        return torch.from_numpy(self.qtype.dequantize(self.numpy(), self.shape[1]))

    def codes(self) -> np.ndarray:
        """The integer codes (the type's convention), for diagnostics and tests."""
        return self.qtype.decode(self.numpy(), self.shape[1])[0]


@dataclass
class QuantizedCheckpoint:
    path: Path
    meta: dict[str, Any]
    config: dict[str, Any]
    quantized: dict[str, QuantizedTensor]
    floats: dict[str, torch.Tensor]
    report: dict[str, Any] | None = field(default=None)

    @property
    def family(self) -> str:
        return self.meta["family"]

    @property
    def types(self) -> set[str]:
        return {qt.qtype.name for qt in self.quantized.values()}

    @property
    def wtype(self) -> GgmlType | None:
        """The one type of every quantized tensor, or None when they differ."""
        names = self.types
        return get_type(next(iter(names))) if len(names) == 1 else None

    @property
    def uniform(self) -> bool:
        """True when every quantized tensor has one type (whisper.cpp's .bin needs that)."""
        return len(self.types) <= 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Float32 state dict with every quantized weight replaced by its exact dequantized value."""
        sd = dict(self.floats)
        for name, qt in self.quantized.items():
            sd[name] = qt.dequantize()
        return sd


def _atomic_dir(out_dir: Path):
    from ._atomic import make_temp_dir   # umask-respecting; cleans temporaries of killed runs

    return make_temp_dir(out_dir)


def save_quantized_model(out_dir: str | os.PathLike, *, family: str, config: dict[str, Any],
                         quantized: dict[str, QuantizedTensor], floats: dict[str, torch.Tensor],
                         meta: dict[str, Any] | None = None, report: dict[str, Any] | None = None,
                         save_extras=None) -> Path:
    """Write a quantized-model directory atomically.

    ``save_extras(tmp_dir)`` may write tokenizer / feature-extractor files into the directory.
    An existing ``out_dir`` is replaced only after the new one is complete.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    if not quantized:
        raise ValueError("no quantized tensors to save")
    types = {n: qt.qtype.name for n, qt in quantized.items()}
    default = max(sorted(set(types.values())), key=list(types.values()).count)
    tmp = _atomic_dir(out_dir)
    try:
        save_file({f"{name}.ggml": qt.data.detach().cpu().contiguous() for name, qt in quantized.items()},
                  str(tmp / QUANT_FILE))
        save_file({k: v.detach().float().contiguous() for k, v in floats.items()}, str(tmp / FLOAT_FILE))
        full_meta = {
            "tarq_meta_version": META_VERSION,
            "family": family,
            "format": default,
            "group_size": None,
            **(meta or {}),
            "quantized_tensors": sorted(quantized),
            "tensor_types": dict(sorted(types.items())),
            "tensor_shapes": {n: list(quantized[n].shape) for n in sorted(quantized)},
        }
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2, sort_keys=True))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        if report is not None:
            (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2))
        if save_extras is not None:
            save_extras(tmp)
        from ._atomic import publish_tree

        publish_tree(tmp)   # modes as plain writes would give under the umask
        if out_dir.exists():
            backup = out_dir.with_name(out_dir.name + ".old")
            if backup.exists():
                shutil.rmtree(backup)
            out_dir.rename(backup)
            tmp.rename(out_dir)
            shutil.rmtree(backup)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def is_quantized_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / META_FILE).is_file()


def _v1_tensor(where: Path, name: str, qraw: dict, fmt: str, group: int) -> QuantizedTensor:
    """A version-1 tensor (codes int8 + one fp16 scale per group of ``group`` columns) as ggml bytes."""
    t = get_type(fmt)
    codes = qraw[f"{name}.codes"].numpy()
    scales = qraw[f"{name}.scales"].numpy()
    rows, cols = codes.shape
    if cols % group or scales.shape != (rows, cols // group):
        raise ValueError(f"{where}: {name}: scales {scales.shape} do not match codes {codes.shape} (group {group})")
    params = np.zeros((rows, cols // 32), dtype=t.param_dtype)
    params["d"] = np.repeat(scales.astype(np.float16), group // 32, axis=1)
    return QuantizedTensor(t, torch.from_numpy(t.encode(codes, params)), (rows, cols))


def load_quantized_dir(path: str | os.PathLike) -> QuantizedCheckpoint:
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: not a directory (expected a tarq quantized-model directory)")
    for required in (META_FILE, "config.json", QUANT_FILE, FLOAT_FILE):
        if not (p / required).is_file():
            raise FileNotFoundError(f"{p}: missing {required}; not a complete tarq quantized-model directory")
    try:
        meta = json.loads((p / META_FILE).read_text())
        config = json.loads((p / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: {META_FILE} or config.json is not valid JSON ({e})") from None
    version = int(meta.get("tarq_meta_version", 1))
    if version > META_VERSION:
        raise ValueError(f"{p / META_FILE}: directory version {version} is newer than this tarq ({META_VERSION})")
    # version 1 with mixed formats (a Q8_0 audio tower under Q4_0): tensor_formats {name: {format, group_size}}
    v1_formats = meta.get("tensor_formats") or {}
    qraw = load_file(str(p / QUANT_FILE))
    quantized = {}
    for name in meta["quantized_tensors"]:
        try:
            if version == 1:
                f = v1_formats.get(name, {"format": meta["format"], "group_size": meta["group_size"]})
                quantized[name] = _v1_tensor(p, name, qraw, f["format"], int(f["group_size"]))
            else:
                quantized[name] = QuantizedTensor(get_type(meta["tensor_types"][name]), qraw[f"{name}.ggml"],
                                                  tuple(meta["tensor_shapes"][name]))
        except KeyError as e:
            raise ValueError(f"{p}: tensor {e.args[0]} listed in {META_FILE} is missing") from None
        except ValueError as e:
            raise ValueError(f"{p}: {name}: {e}") from None
    floats = load_file(str(p / FLOAT_FILE))
    report = json.loads((p / REPORT_FILE).read_text()) if (p / REPORT_FILE).is_file() else None
    return QuantizedCheckpoint(p, meta, config, quantized, floats, report)
