"""whisper.cpp's legacy ggml model file (``.bin``): writer and reader.

Byte layout (all little-endian, no padding; formats.md §1.2, whisper.cpp ``whisper_model_load``)::

    uint32 magic 0x67676d6c
    int32  n_vocab n_audio_ctx n_audio_state n_audio_head n_audio_layer
           n_text_ctx n_text_state n_text_head n_text_layer n_mels ftype   (ftype = 1000*qntvr + ggml_ftype)
    int32  n_mel, n_fft ; float32 filters[n_mel * n_fft]
    int32  n_tokens ; n_tokens x (uint32 len ; len raw bytes)
    tensors until EOF: int32 n_dims, name_len, ggml_type ; int32 ne[n_dims] (reversed numpy shape) ;
                       name bytes (no NUL) ; ggml_nbytes of data

whisper.cpp accepts only one weight type per file: every Linear weight and the token embedding share
the type the ftype field names, conv kernels are F16, everything else is F32
(:func:`validate_for_whisper_cpp` checks this before anything is written).
"""
from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import whisper_names as names
from .._atomic import atomic_write
from ..ggml import F16, F32, GgmlType, get_type, type_for_ftype
from .ggml_tensor import GgmlTensor

log = logging.getLogger(__name__)

GGML_FILE_MAGIC = 0x67676D6C
GGML_QNT_VERSION = 2
GGML_QNT_VERSION_FACTOR = 1000
MAX_DIMS = 4
_HPARAM_FIELDS = ("n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
                  "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer", "n_mels", "ftype")


@dataclass
class WhisperHParams:
    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    n_mels: int
    ftype: int  # as stored: qntvr * 1000 + ggml_ftype

    @property
    def qntvr(self) -> int:
        return self.ftype // GGML_QNT_VERSION_FACTOR

    @property
    def wtype(self) -> GgmlType:
        """The type every Linear weight and the token embedding must have (ggml_ftype_to_ggml_type)."""
        base = self.ftype % GGML_QNT_VERSION_FACTOR
        try:
            return type_for_ftype(base)
        except ValueError:
            raise ValueError(f"unsupported ftype {self.ftype} (ggml_ftype {base})") from None

    def as_tuple(self) -> tuple[int, ...]:
        return tuple(int(getattr(self, f)) for f in _HPARAM_FIELDS)


def ftype_for(wtype: GgmlType) -> int:
    """The header's ftype: F16/F32 as convert-h5-to-ggml writes them, quantized as ``quantize`` does."""
    return wtype.ftype if not wtype.quantized else GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR + wtype.ftype


@dataclass
class WhisperModelFile:
    hparams: WhisperHParams
    mel_filters: np.ndarray            # float32 [n_mels, n_fft]
    vocab: list[bytes]                 # raw UTF-8 bytes of token ids 0..len-1
    tensors: dict[str, GgmlTensor] = field(default_factory=dict)  # whisper.cpp names, in file order

    @property
    def wtype(self) -> GgmlType:
        return self.hparams.wtype


# --------------------------------------------------------------------------- validation

def expected_shape(name: str, hp: WhisperHParams) -> tuple[int, ...]:
    """NumPy shape whisper.cpp's loader requires for a tensor (formats.md §1.3 table, reversed)."""
    n_a, n_t = hp.n_audio_state, hp.n_text_state
    if name == "encoder.positional_embedding":
        return (hp.n_audio_ctx, n_a)
    if name == "decoder.positional_embedding":
        return (hp.n_text_ctx, n_t)
    if name == names.TOKEN_EMBEDDING:
        return (hp.n_vocab, n_t)
    if name == "encoder.conv1.weight":
        return (n_a, hp.n_mels, 3)
    if name == "encoder.conv2.weight":
        return (n_a, n_a, 3)
    if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
        return (n_a, 1)
    n = n_a if name.startswith("encoder.") else n_t
    if ".mlp.0." in name:
        return (4 * n, n) if name.endswith("weight") else (4 * n,)
    if ".mlp.2." in name:
        return (n, 4 * n) if name.endswith("weight") else (n,)
    if name.endswith(".weight") and ("attn." in name and "_ln" not in name):
        return (n, n)
    return (n,)


# Limits of what whisper.cpp can run (whisper.cpp whisper_model_load / log_mel_spectrogram, v1.8.5). Every released
# Whisper lies inside them; a file outside them makes the runtime read out of bounds or abort, not fail cleanly.
WHISPER_N_FFT_BINS = 201          # 1 + WHISPER_N_FFT / 2: the mel code indexes a 400-point FFT with filters.n_fft
WHISPER_MIN_VOCAB = 51864         # special-token ids (eot 50256, sot 50257, ... beg 50363) must exist
WHISPER_MAX_VOCAB = 51866         # large-v3; more would give language tokens whisper_lang_str does not know
WHISPER_N_AUDIO_CTX = 1500        # 30 s of 10-ms mel frames after the stride-2 conv; the encoder graph assumes it
WHISPER_MAX_LAYERS = 64           # a sanity bound (large has 32) before building per-layer tensor lists
WHISPER_MAX_TEXT_CTX = 448        # Whisper's decoder positions; n_max = n_text_ctx / 2 - 4 tokens per window


def hparam_problems(hp: WhisperHParams, n_mel: int | None = None, n_fft: int | None = None) -> list[str]:
    """Header values whisper.cpp cannot run, independent of the tensors (checked before reading them)."""
    problems = []
    if hp.n_audio_state != hp.n_text_state:
        problems.append(f"n_audio_state {hp.n_audio_state} != n_text_state {hp.n_text_state}")
    for state, head, which in ((hp.n_audio_state, hp.n_audio_head, "audio"), (hp.n_text_state, hp.n_text_head, "text")):
        if head <= 0 or state % head:
            problems.append(f"n_{which}_head {head} does not divide n_{which}_state {state}")
    if not WHISPER_MIN_VOCAB <= hp.n_vocab <= WHISPER_MAX_VOCAB:
        problems.append(f"n_vocab {hp.n_vocab} outside Whisper's {WHISPER_MIN_VOCAB}..{WHISPER_MAX_VOCAB}")
    if hp.n_audio_ctx != WHISPER_N_AUDIO_CTX:
        problems.append(f"n_audio_ctx {hp.n_audio_ctx}, whisper.cpp needs {WHISPER_N_AUDIO_CTX}")
    if not 8 < hp.n_text_ctx <= WHISPER_MAX_TEXT_CTX:
        problems.append(f"n_text_ctx {hp.n_text_ctx} outside 9..{WHISPER_MAX_TEXT_CTX}")
    for n, which in ((hp.n_audio_layer, "n_audio_layer"), (hp.n_text_layer, "n_text_layer")):
        if not 0 < n <= WHISPER_MAX_LAYERS:
            problems.append(f"{which} {n} outside 1..{WHISPER_MAX_LAYERS}")
    if hp.n_mels not in (80, 128):
        problems.append(f"n_mels {hp.n_mels}, Whisper uses 80 or 128")
    if n_mel is not None and n_mel != hp.n_mels:
        problems.append(f"mel filter bank has {n_mel} filters but n_mels is {hp.n_mels}")
    if n_fft is not None and n_fft != WHISPER_N_FFT_BINS:
        problems.append(f"mel filters have {n_fft} frequency bins, whisper.cpp needs {WHISPER_N_FFT_BINS}")
    return problems


def validate_for_whisper_cpp(mf: WhisperModelFile, where: str = "model") -> None:
    """Raise ValueError listing every way ``mf`` would be rejected by (or crash) whisper.cpp's loader."""
    hp = mf.hparams
    wtype = hp.wtype
    conv_type = F32 if wtype is F32 else F16
    problems = []
    if mf.mel_filters.ndim != 2:
        problems.append(f"mel filters shape {mf.mel_filters.shape} is not [n_mels, n_fft]")
    problems += hparam_problems(hp, *mf.mel_filters.shape) if mf.mel_filters.ndim == 2 else hparam_problems(hp)
    if problems:   # tensor checks below build per-layer name lists from these values
        _invalid(where, problems)
    if len(mf.vocab) > hp.n_vocab:
        problems.append(f"{len(mf.vocab)} vocab entries but n_vocab is {hp.n_vocab}")
    if b" " not in mf.vocab:
        problems.append('vocab lacks the token " " (whisper_full with suppress_blank throws without it)')
    want = names.expected_names(hp.n_audio_layer, hp.n_text_layer)
    missing = [n for n in want if n not in mf.tensors]
    extra = [n for n in mf.tensors if n not in set(want)]
    if missing:
        problems.append(f"missing tensors: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        problems.append(f"tensors whisper.cpp does not know: {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    for name, t in mf.tensors.items():
        if name in extra:
            continue
        r = names.role(name, len(t.shape))
        need = {"weight": wtype, "conv": conv_type, "f32": F32}[r]
        if t.ggml_type is not need:
            problems.append(f"{name}: type {t.ggml_type.name}, whisper.cpp needs {need.name}")
        if t.shape != expected_shape(name, hp):
            problems.append(f"{name}: shape {t.shape}, whisper.cpp needs {expected_shape(name, hp)}")
    if problems:
        _invalid(where, problems)


def _invalid(where: str, problems: list[str], shown: int = 6):
    more = f"; ... ({len(problems) - shown} more)" if len(problems) > shown else ""
    raise ValueError(f"{where}: not a valid whisper.cpp model: " + "; ".join(problems[:shown]) + more)


# --------------------------------------------------------------------------- writer

def _write_header(f, mf: WhisperModelFile) -> None:
    f.write(struct.pack("<I", GGML_FILE_MAGIC))
    f.write(struct.pack("<11i", *mf.hparams.as_tuple()))
    mel = np.ascontiguousarray(mf.mel_filters, dtype="<f4")
    f.write(struct.pack("<2i", *mel.shape))
    f.write(mel.tobytes())
    f.write(struct.pack("<i", len(mf.vocab)))
    for tok in mf.vocab:
        f.write(struct.pack("<I", len(tok)))
        f.write(tok)


def _write_tensor(f, t: GgmlTensor) -> None:
    name = t.name.encode("utf-8")
    ne = tuple(reversed(t.shape))
    f.write(struct.pack(f"<3i{len(ne)}i", len(ne), len(name), t.ggml_type.type_id, *ne))
    f.write(name)
    f.write(t.data.tobytes())


def write_whisper_bin(path: str | os.PathLike, mf: WhisperModelFile, *, validate: bool = True) -> Path:
    """Write ``mf`` atomically (temp file + rename); nothing appears at ``path`` if anything fails."""
    path = Path(path)
    if validate:
        validate_for_whisper_cpp(mf, where=str(path))
    if mf.wtype is F32:
        log.warning("%s: an all-F32 model aborts in whisper.cpp 1.8.5's CPU conv (im2col needs F16); "
                    "CrispASR runs it", path)
    with atomic_write(path) as f:
        _write_header(f, mf)
        for t in mf.tensors.values():
            _write_tensor(f, t)
    return path


# --------------------------------------------------------------------------- reader

class _Cursor:
    def __init__(self, buf: memoryview, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError(f"{self.path}: truncated file: {what} needs {n} bytes at offset {self.pos}, "
                             f"only {len(self.buf) - self.pos} left")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def ints(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    @property
    def at_end(self) -> bool:
        return self.pos >= len(self.buf)


def read_whisper_cpp(path: str | os.PathLike) -> WhisperModelFile:
    """Parse a whisper.cpp ``.bin``; raises ValueError naming the file and the problem on bad input."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    raw = np.fromfile(path, dtype=np.uint8)
    cur = _Cursor(memoryview(raw), path)
    (magic,) = cur.ints("I", "magic")
    if magic != GGML_FILE_MAGIC:
        hint = " (this is a GGUF file; whisper.cpp needs the legacy ggml format)" if magic == 0x46554747 else ""
        raise ValueError(f"{path}: bad magic 0x{magic:08x}, expected 0x{GGML_FILE_MAGIC:08x}{hint}")
    hp = WhisperHParams(*cur.ints("11i", "hparams"))
    if any(v <= 0 for v in hp.as_tuple()[:10]) or hp.ftype < 0:
        raise ValueError(f"{path}: implausible hparams {hp}")
    if not (0 < hp.n_audio_layer <= WHISPER_MAX_LAYERS and 0 < hp.n_text_layer <= WHISPER_MAX_LAYERS):
        raise ValueError(f"{path}: implausible layer counts {hp.n_audio_layer}/{hp.n_text_layer}")
    try:
        wtype = hp.wtype
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    n_mel, n_fft = cur.ints("2i", "mel filter dims")
    if n_mel <= 0 or n_fft <= 0:
        raise ValueError(f"{path}: bad mel filter dims [{n_mel}, {n_fft}]")
    mel = np.frombuffer(cur.take(4 * n_mel * n_fft, "mel filters"), dtype="<f4").reshape(n_mel, n_fft).copy()
    (n_tok,) = cur.ints("i", "vocab size")
    if n_tok < 0 or n_tok > hp.n_vocab:
        raise ValueError(f"{path}: vocab block has {n_tok} entries for n_vocab {hp.n_vocab}")
    vocab = []
    for i in range(n_tok):
        (ln,) = cur.ints("I", f"length of token {i}")
        vocab.append(bytes(cur.take(ln, f"token {i}")))
    tensors: dict[str, GgmlTensor] = {}
    while not cur.at_end:
        n_dims, name_len, type_id = cur.ints("3i", "tensor record header")
        if not 0 < n_dims <= MAX_DIMS:
            raise ValueError(f"{path}: tensor record at offset {cur.pos - 12} has n_dims {n_dims}")
        if not 0 < name_len < 1024:
            raise ValueError(f"{path}: tensor record at offset {cur.pos - 12} has name length {name_len}")
        ne = cur.ints(f"{n_dims}i", "tensor dims")
        name = bytes(cur.take(name_len, "tensor name")).decode("utf-8", errors="replace")
        try:
            t = get_type(type_id)
        except ValueError:
            raise ValueError(f"{path}: tensor {name!r} has unknown or unsupported ggml type {type_id}") from None
        if any(d <= 0 for d in ne):
            raise ValueError(f"{path}: tensor {name!r} has bad dims {ne}")
        if name in tensors:
            raise ValueError(f"{path}: tensor {name!r} appears twice")
        shape = tuple(reversed(ne))
        try:
            nbytes = t.nbytes(shape)
        except ValueError as e:
            raise ValueError(f"{path}: tensor {name!r}: {e}") from None
        data = np.frombuffer(cur.take(nbytes, f"data of tensor {name!r}"), dtype=np.uint8)
        if names.role(name, len(shape)) == "weight" and t is not wtype:
            raise ValueError(f"{path}: tensor {name!r} is {t.name}, but the header's ftype {hp.ftype} says every "
                             f"weight is {wtype.name} (whisper.cpp would reject the file)")
        tensors[name] = GgmlTensor(name, t, shape, data)
    log.debug("%s: %d tensors, weight type %s", path, len(tensors), wtype.name)
    return WhisperModelFile(hp, mel, vocab, tensors)


def quantize_whisper_file(mf: WhisperModelFile, qtype, quantizer=None) -> WhisperModelFile:
    """What whisper.cpp's ``quantize`` tool does to a model file, in NumPy.

    Every 2-D tensor except the positional embeddings and conv biases is read as float32 (F16 widened)
    and re-quantized with ``quantizer(qtype, x_f32) -> bytes`` (default: tarq.ggml.ggml_quantize, bit-exact
    with ggml_quantize_chunk without an importance matrix); the rest is copied. The header's ftype becomes
    2000 + ggml_ftype.
    """
    from ..ggml import ggml_quantize

    quantizer = quantizer or ggml_quantize
    t = get_type(qtype)
    skip = {"encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding",
            "decoder.positional_embedding"}
    out = {}
    for name, src in mf.tensors.items():
        if name in skip or len(src.shape) != 2:
            out[name] = src
            continue
        x = src.to_float()
        out[name] = GgmlTensor(name, t, src.shape, quantizer(t, x))
    hp = WhisperHParams(**{**mf.hparams.__dict__, "ftype": ftype_for(t)})
    return WhisperModelFile(hp, mf.mel_filters, mf.vocab, out)
