"""GGUF export of a quantized-model directory (via the ``gguf`` package) and a reader for round trips.

A quantized directory holds every quantized weight as its exact ggml bytes (tarq.qmodel); they are handed to
``GGUFWriter.add_tensor(name, uint8 [rows, row_bytes], raw_dtype=...)`` as they are, so nothing is re-quantized.
GGUF allows a different type per tensor (each tensor keeps its own); float tensors are written F32 (exact).

What a runtime needs (architecture name, metadata keys, tensor names) depends on the model family
and the runtime's dialect, so it comes from a small registry of :class:`GgufFamily` entries:

* ``generic``: architecture ``tarq``, Hugging Face parameter names, the HF config as JSON under
  ``tarq.config``. Loads in any GGUF reader (gguf-py, ggml's gguf.cpp); no ASR runtime runs it.

Runtime dialects (Qwen3-ASR for CrispASR / qwen3-asr.cpp, Moonshine for CrispASR) are built by their families
(``tarq.models.<family>.gguf``) on :mod:`gguf_dialect`; :func:`read_gguf` reads those files too.

Whisper itself does not go to GGUF: whisper.cpp and CrispASR's whisper backend only load the
legacy ``.bin`` (formats.md §1.1, §4.3); see :mod:`whisper_cpp`.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._atomic import atomic_path
from ..ggml import convert_exact, get_type
from .ggml_tensor import GgmlTensor

log = logging.getLogger(__name__)

GGML_MAX_NAME = 64  # ggml tensor names are char[64] including the NUL


@dataclass(frozen=True)
class GgufFamily:
    arch: str                                                   # general.architecture
    write_keys: Callable[[Any, Any], None]                      # (GGUFWriter, QuantizedCheckpoint) -> None
    tensor_name: Callable[[str], str | None]                    # HF name -> GGUF name (None: not stored)


FAMILIES: dict[str, GgufFamily] = {}


def register_family(name: str, family: GgufFamily) -> None:
    FAMILIES[name] = family


def _generic_keys(writer, ckpt) -> None:
    writer.add_string("tarq.family", ckpt.family)
    writer.add_string("tarq.format", str(ckpt.meta.get("format") or (ckpt.wtype.name if ckpt.wtype else "mixed")))
    writer.add_uint32("tarq.group_size", int(ckpt.meta.get("group_size") or 0))
    writer.add_string("tarq.method", str(ckpt.meta.get("method", "unknown")))
    writer.add_string("tarq.config", json.dumps(ckpt.config, sort_keys=True, default=str))


register_family("generic", GgufFamily("tarq", _generic_keys, lambda hf: hf))


@dataclass
class GgufModel:
    arch: str
    kv: dict[str, Any]
    tensors: dict[str, GgmlTensor] = field(default_factory=dict)

    def quantized_tensors(self) -> dict[str, Any]:
        """{name: QuantizedTensor} for every block-quantized 2-D tensor (bytes as stored)."""
        from ..qmodel import QuantizedTensor

        return {name: QuantizedTensor(t.ggml_type, t.rows().copy(), t.shape) for name, t in self.tensors.items()
                if t.ggml_type.quantized and len(t.shape) == 2}


def _gguf_type(t):
    import gguf
    return gguf.GGMLQuantizationType(t.type_id)


def write_gguf(ckpt, out_path: str | os.PathLike, *, family: str = "generic", qtype: str | None = None) -> Path:
    """Write a QuantizedCheckpoint (or its directory) to GGUF atomically; ggml bytes verbatim (``qtype``: store
    every quantized tensor in that container type, exactly; see tarq.ggml.convert_exact)."""
    import gguf

    from ..qmodel import QuantizedCheckpoint, load_quantized_dir

    if not isinstance(ckpt, QuantizedCheckpoint):
        ckpt = load_quantized_dir(ckpt)
    try:
        fam = FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown GGUF family {family!r}; registered: {sorted(FAMILIES)}") from None
    target = get_type(qtype) if qtype else None
    if target is not None and not target.quantized:
        raise ValueError(f"--type {target.name} is not a quantized type")
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        w = gguf.GGUFWriter(str(tmp), fam.arch)
        w.add_name(str(ckpt.meta.get("source_model", ckpt.path.name)))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        fam.write_keys(w, ckpt)
        for hf, qt in ckpt.quantized.items():
            name = _checked_name(fam.tensor_name(hf), hf, out_path)
            if name is None:
                continue
            t = target or qt.qtype
            try:
                raw = convert_exact(qt.qtype, qt.numpy(), qt.shape[1], t)
            except ValueError as e:
                raise ValueError(f"{ckpt.path}: {hf}: {e}") from None
            w.add_tensor(name, np.ascontiguousarray(raw).reshape(qt.shape[0], -1), raw_dtype=_gguf_type(t))
        for hf, v in ckpt.floats.items():
            name = _checked_name(fam.tensor_name(hf), hf, out_path)
            if name is not None and hf not in ckpt.quantized:
                w.add_tensor(name, np.ascontiguousarray(v.detach().float().numpy()))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return out_path


def _checked_name(name: str | None, hf: str, path: Path) -> str | None:
    if name is not None and len(name.encode()) >= GGML_MAX_NAME:
        raise ValueError(f"{path}: tensor name {name!r} (from {hf}) is longer than ggml's {GGML_MAX_NAME - 1} bytes")
    return name


def _field_value(f) -> Any:
    v = f.contents()
    return v.item() if isinstance(v, np.generic) else v


def read_gguf(path: str | os.PathLike) -> GgufModel:
    """Read a GGUF file: metadata and every tensor as a GgmlTensor (raw bytes + decoders)."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ValueError(f"{path}: bad magic {magic!r}, not a GGUF file")
    try:   # gguf-py parses lazily: metadata strings and tensor data are decoded below, so all of it is guarded
        reader = gguf.GGUFReader(str(path))
        kv = {k: _field_value(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")}
        tensors = {}
        for rt in reader.tensors:
            try:
                t = get_type(int(rt.tensor_type))
            except ValueError:
                raise ValueError(f"{path}: tensor {rt.name!r} has unsupported ggml type {rt.tensor_type!r}") from None
            shape = tuple(int(d) for d in reversed(rt.shape.tolist()))
            raw = np.ascontiguousarray(rt.data).view(np.uint8).reshape(-1)
            tensors[rt.name] = GgmlTensor(rt.name, t, shape, raw)
    except Exception as e:  # noqa: BLE001 - any failure on untrusted bytes is a corrupt file; say which
        msg = " ".join(str(e).split())
        if msg.startswith(str(path)):
            raise ValueError(msg) from None
        raise ValueError(f"{path}: corrupt or truncated GGUF file ({type(e).__name__}: {msg[:200]})") from None
    return GgufModel(str(kv.get("general.architecture", "")), kv, tensors)


__all__ = ["FAMILIES", "GgufFamily", "GgufModel", "read_gguf", "register_family", "write_gguf"]
