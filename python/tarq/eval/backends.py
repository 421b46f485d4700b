"""Decoding backends behind one interface, and a small registry.

    backend = get_backend("torch", "tiny.en", batch_size=8)
    texts = backend.transcribe([audio_16k_float32, ...])

* ``torch``: a model loaded by ``tarq.models.load_model(spec)`` (FP alias/dir, or a quantized-model directory,
  which comes back fake-quantized) decoded by its family's torch decoder (Whisper: ``tarq.eval.decode.greedy_decode``
  in ``TorchBackend``; Qwen3-ASR / Moonshine: ``tarq.models.<family>.decode``).
* ``whisper.cpp``: an exported ggml ``.bin`` run by pywhispercpp (``tarq.export.runtimes``).
* ``crispasr``: an exported model file run by CrispASR (``tarq.export.runtimes``).

New backends register with ``@register_backend("name")``; a backend is any class whose constructor takes
``(model, **options)`` and which has ``transcribe(list[np.ndarray]) -> list[str]``.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


class Backend(Protocol):
    name: str

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        """Texts for 16 kHz mono float32 clips, in input order."""


_REGISTRY: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str):
    def deco(factory):
        _REGISTRY[name] = factory
        return factory
    return deco


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def get_backend(name: str, model, **options) -> Backend:
    """Instantiate backend ``name`` for ``model`` (spec string, path, or for torch a LoadedModel)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(backend_names())}") from None
    return factory(model, **options)


def _suppress_lists(loaded) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(suppress_tokens, begin_suppress_tokens) from the model's generation config, else Whisper's defaults
    that do not need the config: nothing extra at every step, and [blank " ", eot] at the first step."""
    gen = getattr(loaded.model, "generation_config", None)
    suppress = tuple(getattr(gen, "suppress_tokens", None) or ())
    begin = tuple(getattr(gen, "begin_suppress_tokens", None) or ())
    if not begin:
        blank = loaded.tokenizer.convert_tokens_to_ids("Ġ")  # byte-level BPE spelling of " "
        begin = tuple(t for t in (blank, loaded.eot_id) if isinstance(t, int) and t >= 0)
    if not suppress:
        log.warning("%s: generation config has no suppress_tokens; decoding without Whisper's symbol suppression",
                    getattr(loaded, "name", "model"))
    return suppress, begin


def _no_speech_id(loaded) -> int | None:
    """Id of Whisper's no-speech token (<|nospeech|> in newer vocabularies, <|nocaptions|> in older ones)."""
    unk = getattr(loaded.tokenizer, "unk_token_id", None)
    for tok in ("<|nospeech|>", "<|nocaptions|>"):
        idx = loaded.tokenizer.convert_tokens_to_ids(tok)
        if isinstance(idx, int) and idx >= 0 and idx != unk:
            return idx
    log.warning("%s: no no-speech token in the vocabulary; silence detection is off", getattr(loaded, "name", "model"))
    return None


@register_backend("torch")
def torch_backend(model, dtype=None, **options) -> Backend:
    """The model family's PyTorch decoder (``ModelFamily.torch_backend``): Whisper -> ``TorchBackend`` below."""
    if isinstance(model, (str, os.PathLike)):
        from tarq.models import load_model

        model = load_model(str(model), **({"dtype": dtype} if dtype is not None else {}))
    from tarq.models.family import get_family

    return get_family(getattr(model, "family", "whisper")).torch_backend(model, **options)


class TorchBackend:
    """PyTorch greedy decoding of an HF Whisper model (FP or fake-quantized)."""

    name = "torch"

    def __init__(self, model, batch_size: int = 8, max_new_tokens: int = 128, threads: int | None = 2,
                 dtype=None):
        import torch

        from .decode import DecodeOptions

        if threads:
            torch.set_num_threads(threads)
        if isinstance(model, (str, os.PathLike)):
            from tarq.models import load_model

            model = load_model(str(model), **({"dtype": dtype} if dtype is not None else {}))
        self.loaded = model
        self.batch_size = max(1, int(batch_size))
        suppress, begin = _suppress_lists(model)
        self.options = DecodeOptions(prompt_ids=tuple(model.decoder_prompt_ids()), eot_id=int(model.eot_id),
                                     suppress_tokens=suppress, begin_suppress_tokens=begin,
                                     max_new_tokens=max_new_tokens, no_speech_id=_no_speech_id(model))
        self.description = {"backend": self.name, "model": getattr(model, "name", str(model)),
                            "batch_size": self.batch_size, "max_new_tokens": max_new_tokens,
                            "prompt_ids": list(self.options.prompt_ids), "threads": torch.get_num_threads(),
                            "decoder_threads": self.options.decoder_threads, "policy": "greedy"}
        self._identity = None

    def cache_identity(self) -> dict | None:
        """Decode-cache key (tarq.eval.cache): the model directory's files, the decoding options, the dtype and
        the tarq / torch / transformers code that turns them into text. Thread count and batch size are left
        out: they change only float rounding, and the batch a clip shares depends on its neighbours anyway."""
        if self._identity is None:
            import dataclasses
            import hashlib
            import inspect

            import torch
            import transformers

            from .cache import model_dir_sha256, source_sha256

            path = (getattr(self.loaded, "source", None) or {}).get("path")
            if not path or not os.path.isdir(path):
                return None        # an in-memory model: nothing to hash, do not cache
            opts = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self.options).items()
                    if k != "decoder_threads"}
            self._identity = {
                "backend": self.name, "model_sha256": model_dir_sha256(path), "policy": "greedy",
                "options": opts, "dtype": str(next(self.loaded.model.parameters()).dtype),
                "code": source_sha256("models", "qmodel.py", "formats.py", "ggml", "eval/decode.py",
                                      "eval/segment.py"),
                "backend_code": hashlib.sha256("".join(inspect.getsource(f) for f in (
                    TorchBackend, _suppress_lists, _no_speech_id)).encode()).hexdigest(),
                "torch": torch.__version__, "transformers": transformers.__version__}
        return self._identity

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        from .segment import split_long

        # clips over Whisper's 30-s window are cut at quiet points and their pieces' texts joined
        pieces, owner = [], []
        for i, a in enumerate(audios):
            parts = split_long(np.asarray(a, dtype=np.float32)) if len(a) > 30 * SAMPLE_RATE else [a]
            if len(parts) > 1:
                log.info("clip %d (%.1f s) decoded as %d pieces of <= 30 s", i, len(a) / SAMPLE_RATE, len(parts))
            pieces += parts
            owner += [i] * len(parts)
        texts: list[list[str]] = [[] for _ in audios]
        for i, t in zip(owner, self._transcribe_windows(pieces)):
            texts[i].append(t)
        return [" ".join(t for t in parts if t) for parts in texts]

    def _transcribe_windows(self, audios: Sequence[np.ndarray]) -> list[str]:
        """Texts for clips of at most 30 s, batched longest first."""
        from .decode import greedy_decode

        model, fe, tok = self.loaded.model, self.loaded.feature_extractor, self.loaded.tokenizer
        dtype = next(model.parameters()).dtype
        # longest first: batches of similar length stop decoding at similar steps
        order = sorted(range(len(audios)), key=lambda i: -len(audios[i]))
        texts: list[str] = [""] * len(audios)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            clips = [np.asarray(audios[i], dtype=np.float32) for i in idx]
            feats = fe(clips, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features.to(dtype)
            for i, seq in zip(idx, greedy_decode(model, feats, self.options)):  # greedy_decode is inference_mode
                texts[i] = tok.decode(seq, skip_special_tokens=True).strip()
        return texts


def _runtimes():
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")  # otherwise a ggml assert hangs the process
    try:
        from tarq.export import runtimes
    except ModuleNotFoundError as e:
        raise ValueError(f"runtime backends need tarq.export.runtimes and its runtime package ({e})") from e
    return runtimes


def _existing_file(path, what: str):
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: {what} not found")
    return p


@register_backend("whisper.cpp")
class WhisperCppBackend:
    """whisper.cpp (pywhispercpp) on an exported legacy ggml ``.bin``; greedy, no timestamps.

    By default the runtime's temperature fallback is off, so whisper.cpp decodes with the same greedy
    policy as the PyTorch backend and a difference between the two measures the weights, not the
    decoding policy; ``temperature_fallback=True`` gives whisper.cpp's out-of-the-box behaviour."""

    name = "whisper.cpp"
    batch_size = 64   # clips per transcribe() call: the runtime loads the model once per call

    def __init__(self, model, threads: int = 2, language: str = "en", temperature_fallback: bool = False,
                 **_ignored):
        self.path = _existing_file(model, "whisper.cpp model (.bin)")
        self.threads, self.language, self.temperature_fallback = threads, language, temperature_fallback
        self.description = {"backend": self.name, "model": str(self.path), "threads": threads, "language": language,
                            "temperature_fallback": temperature_fallback}

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        return [t.strip() for t in _runtimes().transcribe_whisper_cpp(
            str(self.path), [np.asarray(a, dtype=np.float32) for a in audios], n_threads=self.threads,
            language=self.language, temperature_fallback=self.temperature_fallback)]


@register_backend("crispasr")
class CrispAsrBackend:
    """CrispASR on an exported model file (what `tarq.export.runtimes.transcribe_crispasr` accepts)."""

    name = "crispasr"
    batch_size = 64

    def __init__(self, model, threads: int = 2, language: str = "en", **_ignored):
        self.path = _existing_file(model, "CrispASR model file")
        self.threads, self.language = threads, language
        self.description = {"backend": self.name, "model": str(self.path), "threads": threads, "language": language}

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        return [t.strip() for t in _runtimes().transcribe_crispasr(
            str(self.path), [np.asarray(a, dtype=np.float32) for a in audios], n_threads=self.threads,
            language=self.language)]
