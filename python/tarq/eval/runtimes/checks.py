"""Validate a model file with tarq's own readers before any runtime sees it.

whisper.cpp and CrispASR trust their input: a truncated, mutated or inconsistent file can make them read out of
bounds, abort in a ggml assert, throw a C++ exception or silently transcribe nothing ("assuming empty model").
:func:`check_model_file` parses the whole file with tarq's reader and checks everything the runtime relies on, so
a bad file becomes a one-line ``ValueError`` naming the file and the problem:

* whisper.cpp ``.bin``: every header field (:func:`tarq.export.whisper_cpp.hparam_problems`: head counts dividing
  the width, vocabulary size, 1500 audio positions, mel filter bank 80/128 × 201), the vocabulary block, every
  tensor record (known type, dimensions, data within the file, nothing after the last tensor), the tensor set,
  types and shapes whisper.cpp derives from the header (``validate_for_whisper_cpp``), and finite values in every
  tensor (a NaN or Inf weight, e.g. from a flipped exponent bit, decodes to garbage);
* GGUF: the structure ggml's ``gguf_init_from_file`` enforces (version, ≤ 4 dimensions, rows that tile the block
  size, tensor data contiguous and aligned inside the file, names under 64 bytes), finite values, and an
  architecture the runtime can run.

What no structural check can catch (a flipped bit that leaves a plausible finite value) is caught by the optional
checksum (``--verify``, :mod:`tarq.export.integrity`). Whatever still goes wrong inside the runtime is contained by
the worker process (:mod:`tarq.eval.runtimes.session`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

GGML_MAGIC, GGJT_MAGIC, GGUF_MAGIC = b"lmgg", b"ggjt", b"GGUF"
GGML_MAX_DIMS, GGML_MAX_NAME = 4, 64
# GGUF architectures no runtime here can run, with the reason
UNRUNNABLE_GGUF_ARCHS = {
    "tarq": "tarq's generic GGUF (Hugging Face names) is for other readers; no ASR runtime runs it",
    "whisper": "whisper.cpp and CrispASR's whisper backend load only the legacy .bin (tarq export --to whisper.cpp)",
}


@dataclass(frozen=True)
class ModelFileInfo:
    path: Path
    kind: str            # "ggml" (whisper.cpp legacy .bin) or "gguf"
    arch: str            # "whisper" for a .bin, general.architecture for GGUF
    weight_type: str     # the .bin's weight type, or the most common tensor type of a GGUF
    n_tensors: int


def file_kind(path: str | os.PathLike) -> str:
    """"ggml" or "gguf" from the magic; ValueError naming the file otherwise."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such model file")
    if not p.is_file():
        raise ValueError(f"{p}: not a regular file")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic == GGML_MAGIC:
        return "ggml"
    if magic == GGUF_MAGIC:
        return "gguf"
    if magic == GGJT_MAGIC:
        raise ValueError(f"{p}: ggjt (llama.cpp's pre-GGUF format) is not a whisper.cpp model")
    if len(magic) < 4:
        raise ValueError(f"{p}: file is {p.stat().st_size} bytes, too short to be a model")
    raise ValueError(f"{p}: not a ggml model file (magic {magic!r}; expected a whisper.cpp .bin or GGUF)")


_checked: dict[tuple, ModelFileInfo | ValueError] = {}   # (path, size, mtime, inode, runtime) -> verdict


def check_model_file(path: str | os.PathLike, runtime: str) -> ModelFileInfo:
    """Validate ``path`` for ``runtime`` ("whisper.cpp" or "crispasr"); return what was found.

    The verdict is remembered for the unchanged file (same size, mtime and inode), so several backends on one file
    in one process parse it once."""
    p = Path(path)
    file_kind(p)   # existence, regular file, magic: cheap, and never cached
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, runtime)
    if key not in _checked:
        if len(_checked) >= 16:
            _checked.pop(next(iter(_checked)))
        try:
            _checked[key] = _check(p, runtime)
        except ValueError as e:
            _checked[key] = e
    verdict = _checked[key]
    if isinstance(verdict, ValueError):
        raise ValueError(str(verdict)) from None
    return verdict


def _check(p: Path, runtime: str) -> ModelFileInfo:
    kind = file_kind(p)
    if kind == "gguf":
        if runtime == "whisper.cpp":
            raise ValueError(f"{p}: a GGUF file; whisper.cpp (1.8.x) loads only its legacy .bin "
                             f"(tarq export --to whisper.cpp), GGUF models run in CrispASR (--backend crispasr)")
        return _check_gguf(p)
    info = _check_whisper_bin(p)
    if runtime == "whisper.cpp" and info.weight_type == "f32":
        raise ValueError(f"{p}: an all-F32 model aborts in whisper.cpp 1.8.5's CPU convolution (im2col needs F16); "
                         f"export --f16, or run it with --backend crispasr")
    return info


def _check_whisper_bin(p: Path) -> ModelFileInfo:
    from tarq.export.whisper_cpp import read_whisper_cpp, validate_for_whisper_cpp

    mf = read_whisper_cpp(p)                     # structure, types, data sizes; ValueError names the file
    validate_for_whisper_cpp(mf, where=str(p))   # header values, tensor set, types and shapes
    if not np.isfinite(mf.mel_filters).all():
        raise ValueError(f"{p}: mel filter bank contains NaN or Inf")
    _check_finite(p, mf.tensors)
    return ModelFileInfo(p, "ggml", "whisper", mf.wtype.name, len(mf.tensors))


def _check_finite(p: Path, tensors) -> None:
    """Every tensor's float values (F32/F16 data, the fp16 scales/mins of quantized blocks) are finite."""
    for name, t in tensors.items():
        bad = _non_finite(t)
        if bad:
            raise ValueError(f"{p}: tensor {name!r} has {bad} NaN/Inf value(s) (corrupted data)")


def _non_finite(t) -> int:
    dtype = getattr(t.ggml_type, "block_dtype", None)
    if dtype is not None and dtype.names:   # quantized blocks: only the float fields (scales, mins) can be NaN
        blocks = t.data.view(dtype)
        return sum(int((~np.isfinite(blocks[f])).sum()) for f in dtype.names if blocks[f].dtype.kind == "f")
    with np.errstate(all="ignore"):
        values = t.to_float()
    return int((~np.isfinite(values)).sum())


def _check_gguf(p: Path) -> ModelFileInfo:
    from collections import Counter

    from tarq.export.gguf_writer import read_gguf

    _check_gguf_layout(p)
    model = read_gguf(p)
    arch = model.arch
    if not arch:
        raise ValueError(f"{p}: GGUF without general.architecture; no runtime can tell what model it holds")
    if arch in UNRUNNABLE_GGUF_ARCHS:
        raise ValueError(f"{p}: GGUF architecture {arch!r} cannot be decoded: {UNRUNNABLE_GGUF_ARCHS[arch]}")
    if not model.tensors:
        raise ValueError(f"{p}: GGUF file holds no tensors")
    _check_finite(p, model.tensors)
    types = Counter(t.ggml_type.name for t in model.tensors.values())
    return ModelFileInfo(p, "gguf", arch, types.most_common(1)[0][0], len(model.tensors))


def _check_gguf_layout(p: Path) -> None:
    """What ggml's gguf.cpp (gguf_init_from_file_impl) requires of the tensor table, checked on gguf-py's parse."""
    import gguf

    size = p.stat().st_size
    try:
        reader = gguf.GGUFReader(str(p))
    except Exception as e:  # noqa: BLE001 - any parser failure on untrusted bytes is a corrupt file
        raise ValueError(f"{p}: corrupt or truncated GGUF file ({type(e).__name__}: {_one_line(e)})") from None
    version = int(reader.fields["GGUF.version"].parts[-1][0])
    if version not in (2, 3):
        raise ValueError(f"{p}: GGUF version {version}; ggml reads versions 2 and 3")
    align = int(reader.alignment)
    expected = reader.data_offset
    for t in reader.tensors:
        dims = [int(d) for d in t.shape]
        if not 1 <= len(dims) <= GGML_MAX_DIMS or any(d <= 0 for d in dims):
            raise ValueError(f"{p}: tensor {t.name!r} has dimensions {dims} (ggml: 1..{GGML_MAX_DIMS}, each > 0)")
        if len(t.name.encode()) >= GGML_MAX_NAME:
            raise ValueError(f"{p}: tensor name {t.name[:40]!r}... is longer than ggml's {GGML_MAX_NAME - 1} bytes")
        block, _ = gguf.GGML_QUANT_SIZES[t.tensor_type]
        if dims[0] % block:
            raise ValueError(f"{p}: tensor {t.name!r}: row of {dims[0]} does not tile {t.tensor_type.name}'s "
                             f"{block}-element blocks")
        if t.data_offset != expected:
            raise ValueError(f"{p}: tensor {t.name!r} data at offset {t.data_offset}, expected {expected} "
                             f"(ggml needs tensors contiguous, in order, aligned to {align})")
        end = t.data_offset + int(t.n_bytes)
        if end > size:
            raise ValueError(f"{p}: truncated file: tensor {t.name!r} ends at byte {end}, file has {size}")
        expected += -(-int(t.n_bytes) // align) * align


def _one_line(e: BaseException, limit: int = 160) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= limit else s[:limit] + "…"
