"""The quantized-model directory: the one artifact the solver writes and evaluators/exporters read.

Layout of ``OUT/``::

    tarq.json               format, group size, method, source model, family, list of quantized tensors,
                            tensor_formats {name: {format, group_size}} for tensors in another format
    config.json             the model's Hugging Face config (to rebuild the network)
    quantized.safetensors   for each quantized weight NAME (HF parameter name):
                              NAME.codes   int8    [out, in]        integer lattice codes q
                              NAME.scales  float16 [out, in / g]    one fp16 scale d per group of g columns
    float.safetensors       every other parameter, float32 (biases, norms, convs, positional embeddings)
    tokenizer / feature-extractor / generation-config files (save_pretrained output)
    report.json             per-layer diagnostics written by the pipeline (optional)

The dequantized weight is exactly ``codes * scales`` broadcast over groups; the exporter writes the
same codes and scales into ggml blocks without re-quantizing.

Writes are atomic: everything goes to a temporary sibling directory that is renamed on success.
"""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .formats import QuantFormat, get_format

META_FILE = "tarq.json"
QUANT_FILE = "quantized.safetensors"
FLOAT_FILE = "float.safetensors"
REPORT_FILE = "report.json"
META_VERSION = 1


@dataclass
class QuantizedTensor:
    codes: torch.Tensor   # int8 [out, in]
    scales: torch.Tensor  # float16 [out, in // group_size]
    fmt: QuantFormat

    def __post_init__(self) -> None:
        if self.codes.dtype != torch.int8:
            raise TypeError(f"codes must be int8, got {self.codes.dtype}")
        if self.scales.dtype != torch.float16:
            raise TypeError(f"scales must be float16, got {self.scales.dtype}")
        out, inp = self.codes.shape
        g = self.fmt.group_size
        if inp % g != 0 or tuple(self.scales.shape) != (out, inp // g):
            raise ValueError(f"scales shape {tuple(self.scales.shape)} does not match codes {tuple(self.codes.shape)} "
                             f"with group size {g}")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)  # type: ignore[return-value]

    def dequantize(self) -> torch.Tensor:
        d = self.scales.float().repeat_interleave(self.fmt.group_size, dim=1)
        return self.codes.float() * d


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
    def fmt(self) -> QuantFormat:
        """The directory's (majority) format; ``quantized[name].fmt`` is each tensor's own."""
        return get_format(self.meta["format"], self.meta["group_size"])

    @property
    def uniform(self) -> bool:
        """True when every quantized tensor has the directory's format (whisper.cpp's .bin needs that)."""
        return not self.meta.get("tensor_formats")

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
    # The most common format is the directory's format; tensors in another one (e.g. a Q8_0 audio tower under
    # a Q4_0 default) are listed in ``tensor_formats``.
    counts = Counter((qt.fmt.name, qt.fmt.group_size) for qt in quantized.values())
    fmt_name, group_size = max(counts, key=lambda k: (counts[k], k))
    tensor_formats = {n: {"format": qt.fmt.name, "group_size": qt.fmt.group_size} for n, qt in quantized.items()
                      if (qt.fmt.name, qt.fmt.group_size) != (fmt_name, group_size)}
    tmp = _atomic_dir(out_dir)
    try:
        qdict: dict[str, torch.Tensor] = {}
        for name, qt in quantized.items():
            qdict[f"{name}.codes"] = qt.codes.contiguous()
            qdict[f"{name}.scales"] = qt.scales.contiguous()
        save_file(qdict, str(tmp / QUANT_FILE))
        save_file({k: v.detach().float().contiguous() for k, v in floats.items()}, str(tmp / FLOAT_FILE))
        full_meta = {
            "tarq_meta_version": META_VERSION,
            "family": family,
            "format": fmt_name,
            "group_size": group_size,
            "quantized_tensors": sorted(quantized),
            **({"tensor_formats": tensor_formats} if tensor_formats else {}),
            **(meta or {}),
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


def load_quantized_dir(path: str | os.PathLike) -> QuantizedCheckpoint:
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: not a directory (expected a tarq quantized-model directory)")
    for required in (META_FILE, "config.json", QUANT_FILE, FLOAT_FILE):
        if not (p / required).is_file():
            raise FileNotFoundError(f"{p}: missing {required}; not a complete tarq quantized-model directory")
    meta = json.loads((p / META_FILE).read_text())
    config = json.loads((p / "config.json").read_text())
    fmt = get_format(meta["format"], meta["group_size"])
    per_tensor = {n: get_format(f["format"], f["group_size"]) for n, f in meta.get("tensor_formats", {}).items()}
    qraw = load_file(str(p / QUANT_FILE))
    quantized = {}
    for name in meta["quantized_tensors"]:
        try:
            quantized[name] = QuantizedTensor(qraw[f"{name}.codes"], qraw[f"{name}.scales"], per_tensor.get(name, fmt))
        except KeyError as e:
            raise ValueError(f"{p / QUANT_FILE}: tensor {e.args[0]} listed in {META_FILE} is missing") from None
    floats = load_file(str(p / FLOAT_FILE))
    report = json.loads((p / REPORT_FILE).read_text()) if (p / REPORT_FILE).is_file() else None
    return QuantizedCheckpoint(p, meta, config, quantized, floats, report)
