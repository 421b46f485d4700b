"""CTranslate2 ``model.bin`` reader and the CTranslate2 -> Hugging Face Whisper weight converter.

Binary layout (CTranslate2 binary version 6, little endian; learned from CTranslate2's
``python/ctranslate2/specs/model_spec.py``, re-implemented here)::

    u32 version | str spec_name | u32 spec_revision | u32 n_variables
    n_variables x { str name | u8 rank | u32 dim[rank] | u8 dtype | u32 nbytes | bytes data }
    u32 n_aliases x { str alias | str target }
    str = u16 length (including a trailing NUL) | utf-8 bytes | NUL

dtype ids: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Scalars (rank 0) carry model
options such as ``decoder/num_heads``. Duplicate tensors are stored once and aliased (Whisper's
``decoder/projection/weight`` is an alias of ``decoder/embeddings/weight``: the tied output projection).

CTranslate2 fuses attention projections: self-attention ``linear_0`` stacks [q; k; v] along the output
dimension, cross-attention ``linear_1`` stacks [k; v]. Whisper has no key bias, so the fused bias carries zeros
(or nothing) in the key slot; we check that and drop it. The query projection is stored unscaled (the
1/sqrt(d_head) factor is applied at run time by both CTranslate2 and transformers), which the numerical
comparison in tests/test_models_ct2_reference.py confirms.
"""
from __future__ import annotations

import json
import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..._atomic import atomic_write

log = logging.getLogger(__name__)

SUPPORTED_BINARY_VERSIONS = (5, 6)
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5


@dataclass
class Ct2Model:
    """Raw contents of a CTranslate2 ``model.bin``: arrays are views into the file's bytes."""

    path: str
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        seen = set()
        while name in self.aliases:
            if name in seen:
                raise ValueError(f"{self.path}: alias cycle at {name}")
            seen.add(name)
            name = self.aliases[name]
        try:
            return self.variables[name]
        except KeyError:
            raise KeyError(f"{self.path}: variable {name!r} not found") from None

    def __contains__(self, name: str) -> bool:
        return name in self.variables or name in self.aliases

    def scalar(self, name: str, default=None):
        if name not in self:
            return default
        v = self.get(name)
        return v.reshape(-1)[0].item() if v.size == 1 else v


class _Cursor:
    def __init__(self, buf: memoryview, path: str):
        self.buf, self.off, self.path = buf, 0, path

    def take(self, n: int) -> memoryview:
        if self.off + n > len(self.buf):
            raise ValueError(f"{self.path}: truncated CTranslate2 model (needed {n} bytes at offset {self.off}, "
                             f"file has {len(self.buf)})")
        out = self.buf[self.off:self.off + n]
        self.off += n
        return out

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))

    def string(self) -> str:
        (n,) = self.unpack("H")
        raw = bytes(self.take(n))
        if n == 0 or raw[-1] != 0:
            raise ValueError(f"{self.path}: malformed string at offset {self.off - n}")
        return raw[:-1].decode("utf-8")


def _read_bytes(paths: Sequence[str | os.PathLike]) -> bytes:
    """The model's bytes; several paths are concatenated in memory (split packages, no copy on disk)."""
    chunks = []
    for p in paths:
        with open(p, "rb") as f:
            chunks.append(f.read())
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_ct2_model(path: str | os.PathLike | Sequence[str | os.PathLike]) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (or the ordered parts of one) into arrays.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file for missing, truncated or unsupported files.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: CTranslate2 model file not found")
    label = str(paths[0]) if len(paths) == 1 else " + ".join(map(str, paths))
    data = _read_bytes(paths)
    cur = _Cursor(memoryview(data), label)
    (version,) = cur.unpack("I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ValueError(f"{label}: unsupported CTranslate2 binary version {version} "
                         f"(supported: {SUPPORTED_BINARY_VERSIONS})")
    spec = cur.string()
    (revision,) = cur.unpack("I")
    (n_vars,) = cur.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(n_vars):
        name = cur.string()
        (rank,) = cur.unpack("B")
        shape = cur.unpack("I" * rank) if rank else ()
        (dtype_id,) = cur.unpack("B")
        (nbytes,) = cur.unpack("I")
        raw = cur.take(nbytes)
        if dtype_id == _BF16:
            # bfloat16 is the top half of a float32: widen through uint32.
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype_id in _DTYPES:
            arr = np.frombuffer(raw, dtype=_DTYPES[dtype_id])
        else:
            raise ValueError(f"{label}: variable {name!r} has unknown dtype id {dtype_id}")
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{label}: variable {name!r} has {arr.size} elements but shape {shape}")
        variables[name] = arr.reshape(shape)
    (n_alias,) = cur.unpack("I")
    aliases = {}
    for _ in range(n_alias):
        alias = cur.string()
        aliases[alias] = cur.string()
    if cur.off != len(data):
        raise ValueError(f"{label}: {len(data) - cur.off} trailing bytes after the alias table")
    return Ct2Model(label, spec, revision, variables, aliases)


# ----------------------------------------------------------------------------------------------------------
# Whisper: CTranslate2 variable names -> Hugging Face parameter names

_LN = {"gamma": "weight", "beta": "bias"}
_OPTION_SCALARS = {
    "decoder/activation", "decoder/alibi", "decoder/alignment_heads", "decoder/alignment_layer",
    "decoder/num_heads", "decoder/pre_norm", "decoder/scale_embeddings", "decoder/start_from_zero_embedding",
    "encoder/num_heads", "encoder/activation", "encoder/pre_norm",
}


def _f32(a: np.ndarray) -> torch.Tensor:
    # Always copy, so the tensor owns writable memory and the file buffer can be dropped.
    return torch.from_numpy(np.array(a, dtype=np.float32, copy=True))


def _split_rows(path: str, name: str, a: np.ndarray, parts: int) -> list[np.ndarray]:
    if a.shape[0] % parts:
        raise ValueError(f"{path}: fused tensor {name} has {a.shape[0]} rows, not divisible by {parts}")
    return np.split(a, parts, axis=0)


def _count_layers(m: Ct2Model, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"/layer_(\d+)/")
    idx = {int(mm.group(1)) for name in m.variables if (mm := pat.match(name))}
    if idx != set(range(len(idx))):
        raise ValueError(f"{m.path}: non-contiguous {prefix} layer indices {sorted(idx)}")
    return len(idx)


def whisper_state_dict(m: Ct2Model) -> dict[str, torch.Tensor]:
    """Convert a CTranslate2 ``WhisperSpec`` into a float32 HF ``WhisperForConditionalGeneration`` state dict.

    Every CTranslate2 variable must be consumed; anything left over means an unsupported variant and raises.
    """
    if m.spec != "WhisperSpec":
        raise ValueError(f"{m.path}: CTranslate2 spec {m.spec!r} is not supported (only WhisperSpec)")
    sd: dict[str, torch.Tensor] = {}
    used: set[str] = set(_OPTION_SCALARS) & set(m.variables)

    def take(name: str) -> np.ndarray:
        used.add(name)
        return m.get(name)

    def ln(src: str, dst: str) -> None:
        for s, d in _LN.items():
            sd[f"{dst}.{d}"] = _f32(take(f"{src}/{s}"))

    def linear(src: str, dst: str) -> None:
        sd[f"{dst}.weight"] = _f32(take(f"{src}/weight"))
        sd[f"{dst}.bias"] = _f32(take(f"{src}/bias"))

    def fused(src: str, dsts: list[str]) -> None:
        """Split a stacked projection; a destination ending in 'k_proj' has no bias in Whisper."""
        ws = _split_rows(m.path, src, take(f"{src}/weight"), len(dsts))
        bname = f"{src}/bias"
        bs = _split_rows(m.path, src, take(bname), len(dsts)) if bname in m else [None] * len(dsts)
        for dst, w, b in zip(dsts, ws, bs):
            sd[f"{dst}.weight"] = _f32(w)
            if dst.endswith("k_proj"):
                if b is not None and np.any(b != 0):
                    raise ValueError(f"{m.path}: {bname} has a non-zero key bias, which Whisper does not have")
            elif b is not None:
                sd[f"{dst}.bias"] = _f32(b)
            else:
                sd[f"{dst}.bias"] = torch.zeros(w.shape[0])

    for side in ("encoder", "decoder"):
        hf = f"model.{side}"
        n_layers = _count_layers(m, side)
        for i in range(n_layers):
            s, h = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            ln(f"{s}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
            fused(f"{s}/self_attention/linear_0", [f"{h}.self_attn.q_proj", f"{h}.self_attn.k_proj",
                                                   f"{h}.self_attn.v_proj"])
            linear(f"{s}/self_attention/linear_1", f"{h}.self_attn.out_proj")
            if side == "decoder":
                ln(f"{s}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
                linear(f"{s}/attention/linear_0", f"{h}.encoder_attn.q_proj")
                fused(f"{s}/attention/linear_1", [f"{h}.encoder_attn.k_proj", f"{h}.encoder_attn.v_proj"])
                linear(f"{s}/attention/linear_2", f"{h}.encoder_attn.out_proj")
            ln(f"{s}/ffn/layer_norm", f"{h}.final_layer_norm")
            linear(f"{s}/ffn/linear_0", f"{h}.fc1")
            linear(f"{s}/ffn/linear_1", f"{h}.fc2")
        ln(f"{side}/layer_norm", f"{hf}.layer_norm")
        sd[f"{hf}.embed_positions.weight"] = _f32(take(f"{side}/position_encodings/encodings"))
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    sd["model.decoder.embed_tokens.weight"] = _f32(take("decoder/embeddings/weight"))
    proj = "decoder/projection/weight"
    if proj in m:
        used.add(proj)
        target = m.aliases.get(proj)
        if target != "decoder/embeddings/weight" and not np.array_equal(m.get(proj), m.get("decoder/embeddings/weight")):
            raise ValueError(f"{m.path}: untied output projection is not supported")
    leftover = sorted(set(m.variables) - used)
    if leftover:
        raise ValueError(f"{m.path}: unsupported CTranslate2 Whisper variables: {leftover[:8]}")
    return sd


def whisper_config_dict(m: Ct2Model, special: "dict[str, int]") -> dict:
    """A transformers ``WhisperConfig`` dict derived from tensor shapes and CTranslate2 options.

    Generation settings (suppressed tokens, alignment heads) go to the GenerationConfig, not here.
    """
    emb = m.get("decoder/embeddings/weight")
    conv1 = m.get("encoder/conv1/weight")
    fc1_enc = m.get("encoder/layer_0/ffn/linear_0/weight")
    fc1_dec = m.get("decoder/layer_0/ffn/linear_0/weight")
    d_model = emb.shape[1]

    def heads(side: str) -> int:
        n = m.scalar(f"{side}/num_heads")
        if n is None:
            # Whisper uses 64-dimensional heads in every published size.
            n = d_model // 64
            log.debug("%s: %s/num_heads absent, assuming d_head=64 -> %d heads", m.path, side, n)
        n = int(n)
        if d_model % n:
            raise ValueError(f"{m.path}: d_model {d_model} not divisible by {side} heads {n}")
        return n

    activation = m.scalar("decoder/activation", 3)
    if int(activation) != 3:  # CTranslate2's ActivationType: 3 == GELU (erf form)
        raise ValueError(f"{m.path}: unsupported decoder activation id {activation} (Whisper uses GELU)")
    eot, sot = special["eot"], special["sot"]
    cfg = {
        "model_type": "whisper",
        "architectures": ["WhisperForConditionalGeneration"],
        "vocab_size": int(emb.shape[0]),
        "num_mel_bins": int(conv1.shape[1]),
        "d_model": int(d_model),
        "encoder_layers": _count_layers(m, "encoder"),
        "decoder_layers": _count_layers(m, "decoder"),
        "encoder_attention_heads": heads("encoder"),
        "decoder_attention_heads": heads("decoder"),
        "encoder_ffn_dim": int(fc1_enc.shape[0]),
        "decoder_ffn_dim": int(fc1_dec.shape[0]),
        "max_source_positions": int(m.get("encoder/position_encodings/encodings").shape[0]),
        "max_target_positions": int(m.get("decoder/position_encodings/encodings").shape[0]),
        "activation_function": "gelu",
        "scale_embedding": bool(m.scalar("decoder/scale_embeddings", 0)),
        "tie_word_embeddings": True,
        "pad_token_id": eot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "decoder_start_token_id": sot,
        # WhisperConfig defaults these to tiny.en's ids; the generation config carries the real ones.
        "suppress_tokens": None,
        "begin_suppress_tokens": None,
    }
    return cfg


def read_ct2_config(model_dir: Path) -> dict:
    p = Path(model_dir) / "config.json"
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: invalid JSON ({e})") from None


_DTYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
              np.dtype(np.float16): 4}


def write_ct2_model(path: str | os.PathLike, variables: dict[str, np.ndarray], aliases: dict[str, str] | None = None,
                    *, spec: str = "WhisperSpec", revision: int = 3, version: int = 6) -> Path:
    """Write a CTranslate2 ``model.bin`` (the layout documented at the top). Used for round-trip tests and
    for building small synthetic models; atomic (temp file + rename)."""

    path = Path(path)

    def s(text: str) -> bytes:
        raw = text.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    with atomic_write(path) as f:
        f.write(struct.pack("<I", version) + s(spec) + struct.pack("<II", revision, len(variables)))
        for name in sorted(variables):
            a = np.require(variables[name], requirements="C")  # (ascontiguousarray makes scalars 1-d)
            if a.dtype not in _DTYPE_IDS:
                raise ValueError(f"{path}: cannot write {name} with dtype {a.dtype}")
            f.write(s(name) + struct.pack("<B", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape)
                    + struct.pack("<BI", _DTYPE_IDS[a.dtype], a.nbytes) + a.tobytes())
        aliases = aliases or {}
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in sorted(aliases.items()):
            f.write(s(alias) + s(target))
    return path
