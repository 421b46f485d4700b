"""Building blocks for GGUF files in a runtime's own dialect (CrispASR, qwen3-asr.cpp): the one function that turns
a quantized tensor into ggml bytes, a plan of keys and tensors, and an atomic writer that can validate the plan
against a runtime's loader rules before the file appears.

The family subpackages (``tarq.models.qwen3_asr.gguf``, ``tarq.models.moonshine.gguf``) decide names, keys and
tensor types; nothing here knows a family.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._atomic import atomic_path
from ..ggml import F16, F32, GgmlType, convert_exact, get_type

log = logging.getLogger(__name__)

GGML_MAX_NAME = 64  # ggml tensor names are char[64] including the NUL


def quantized_bytes(qt, container: str | None = None) -> tuple[GgmlType, np.ndarray]:
    """(ggml type, uint8 [rows, row_bytes]) of one quantized tensor: the solver's ggml bytes verbatim.

    ``container``: store the data in another block type where that is exact (q4_0 data in q5_0/q8_0/q4_1/q5_1,
    ``tarq.ggml.convert_exact`` checks it), or "f32" for the exact dequantized values (a diagnostic file)."""
    if container == "f32":
        return F32, np.ascontiguousarray(qt.dequantize().numpy(), dtype=np.float32)
    data = qt.numpy()
    if container is None or container == qt.qtype.name:
        return qt.qtype, data
    target = get_type(container)
    return target, convert_exact(qt.qtype, data, qt.shape[1], target)


def dequantized(ggml_type: GgmlType, raw: np.ndarray, n_per_row: int) -> np.ndarray:
    """float32 [rows, n] exactly as ggml's to_float computes it from the bytes (for round-trip checks)."""
    return ggml_type.dequantize(raw, n_per_row)


@dataclass
class PlannedTensor:
    name: str
    ggml_type: GgmlType
    data: np.ndarray            # uint8 [rows, row_bytes] for quantized types, float array otherwise
    shape: tuple[int, ...]      # numpy order ([out, in] for a Linear); ggml ne is the reverse
    source: str = ""            # the HF parameter it comes from ("" for derived tensors: mel filters, copies)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


@dataclass
class GgufPlan:
    """Everything one GGUF file will hold, in write order."""
    arch: str
    kv: list[tuple[str, str, Any]] = field(default_factory=list)   # (key, kind, value); kind: u32 f32 str bool
    tensors: list[PlannedTensor] = field(default_factory=list)      # arrays: str_array, u32_array, i32_array

    def add(self, key: str, kind: str, value: Any) -> None:
        if any(k == key for k, _, _ in self.kv):
            raise ValueError(f"GGUF key {key} written twice")
        if kind == "str" and value == "":
            raise ValueError(f"GGUF key {key}: gguf-py silently drops empty strings")   # formats.md §3.2 pitfall
        self.kv.append((key, kind, value))

    def add_float(self, name: str, values: np.ndarray, ggml_type: GgmlType = F32, source: str = "") -> None:
        v = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
        data = v.astype(np.float16) if ggml_type is F16 else v
        self.tensors.append(PlannedTensor(name, ggml_type, data, tuple(v.shape), source))

    def add_quantized(self, name: str, qt, container: str | None = None, source: str = "") -> None:
        t, data = quantized_bytes(qt, container)
        self.tensors.append(PlannedTensor(name, t, data, tuple(qt.shape), source))

    def tensor(self, name: str) -> PlannedTensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def value(self, key: str) -> Any:
        for k, _, v in self.kv:
            if k == key:
                return v
        raise KeyError(key)


_KV_WRITERS = {"u32": "add_uint32", "i32": "add_int32", "f32": "add_float32", "str": "add_string",
               "bool": "add_bool"}


def write_plan(plan: GgufPlan, out_path: str | os.PathLike, *,
               validate: Callable[[GgufPlan, Path], None] | None = None) -> Path:
    """Write ``plan`` atomically (nothing half-written; the file appears only when complete and validated).

    ``validate(plan, tmp_path)`` runs on the written temporary file and raises to abort (e.g. a runtime loader's
    structural rules)."""
    import gguf

    out_path = Path(out_path)
    names = [t.name for t in plan.tensors]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"{out_path}: tensor(s) {sorted(dup)} planned twice")
    for t in plan.tensors:
        if len(t.name.encode()) >= GGML_MAX_NAME:
            raise ValueError(f"{out_path}: tensor name {t.name!r} is longer than ggml's {GGML_MAX_NAME - 1} bytes")
    logging.getLogger("gguf.gguf_writer").setLevel(logging.WARNING)   # its per-file INFO lines are noise here
    with atomic_path(out_path) as tmp:
        w = gguf.GGUFWriter(str(tmp), plan.arch)
        for key, kind, value in plan.kv:
            if kind.endswith("_array"):
                w.add_array(key, list(value))
            else:
                getattr(w, _KV_WRITERS[kind])(key, value)
        for t in plan.tensors:
            if t.ggml_type.quantized:
                w.add_tensor(t.name, t.data, raw_dtype=gguf.GGMLQuantizationType(t.ggml_type.type_id))
            else:
                w.add_tensor(t.name, t.data)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        if validate is not None:
            validate(plan, Path(tmp))
    log.info("wrote %s (%s, %d tensors, %.1f MB)", out_path, plan.arch, len(plan.tensors),
             out_path.stat().st_size / 1e6)
    return out_path


def byte_level_vocab(tokenizer, vocab_size: int) -> list[str]:
    """Token strings by id in the byte-level BPE (GPT-2 unicode) form, padded like the runtimes' converters
    ("[PAD<id>]"), with added/special tokens at their ids (CrispASR convert-qwen3-asr-to-gguf.py load_tokenizer)."""
    vocab = tokenizer.get_vocab()
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    for piece, idx in vocab.items():
        if 0 <= idx < vocab_size:
            tokens[idx] = piece
    n = max(vocab.values()) + 1
    if n > vocab_size:
        raise ValueError(f"tokenizer has {n} tokens but the model's embedding has {vocab_size} rows")
    return tokens


def bpe_merges(tokenizer) -> list[str]:
    """BPE merges as "left right" strings in rank order (from the fast tokenizer's tokenizer.json)."""
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise ValueError("tokenizer has no fast (tokenizers) backend; cannot read its BPE merges")
    model = json.loads(backend.to_str()).get("model", {})
    if model.get("type") != "BPE":
        raise ValueError(f"expected a BPE tokenizer, got {model.get('type')}")
    return [" ".join(m) if isinstance(m, list) else m for m in model.get("merges", [])]


__all__ = ["GgufPlan", "PlannedTensor", "bpe_merges", "byte_level_vocab", "dequantized",
           "quantized_bytes", "write_plan"]
