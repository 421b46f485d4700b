"""The ``whisper.cpp`` and ``crispasr`` evaluation backends: validated file, decoding policy, worker processes.

    backend = get_backend("whisper.cpp", "model-q4_0.bin", threads=2, policy="greedy")
    texts = backend.transcribe([audio, ...])
    backend.description      # what ran (policy and its parameters, workers x threads, runtime version)
    backend.cache_identity() # everything that can change the text (for the decode cache)

Construction validates the file (:func:`check_model_file`) and, with ``verify=True``, its checksum sidecar, so
nothing reaches the runtime that tarq's reader rejects. Decoding happens in ``workers`` child processes
(:mod:`.session`) that split ``threads`` between them.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..backends import register_backend
from .checks import check_model_file
from .policy import DEFAULT_POLICY, get_policy
from .session import WorkerPool

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW_S = 30.0
SILENCE_DBFS = -45.0      # below this RMS a clip counts as silent; an empty transcript of it is expected
MIN_SAMPLES = SAMPLE_RATE // 10   # whisper_full skips input under 100 ms ("input is too short")


def rms_dbfs(audio: np.ndarray) -> float:
    a = np.asarray(audio, dtype=np.float64)
    rms = math.sqrt(float(np.mean(a * a))) if a.size else 0.0
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def plan_workers(threads: int, workers: int | None, n_clips: int | None = None) -> tuple[int, int]:
    """(worker processes, ggml threads per worker) for a budget of ``threads`` CPU threads.

    ``workers=None`` chooses one single-threaded worker per thread, never more workers than clips (docs/evaluation.md
    "Parallel decoding": a 2-thread worker spent 3x the CPU time of a 1-thread one here, and ggml's thread count can
    change a transcript, so the default keeps every clip on one ggml thread whatever --threads is). An explicit
    ``workers`` gets ``threads // workers`` ggml threads each."""
    threads = max(1, int(threads))
    if workers is None:
        per = 1
        workers = threads if n_clips is None else max(1, min(threads, n_clips))
    else:
        workers = max(1, int(workers))
        per = max(1, threads // workers)
        if n_clips is not None:
            workers = max(1, min(workers, n_clips))
    return workers, per


def runtime_version(runtime: str) -> str:
    """Version string of the runtime package (and of the bundled whisper.cpp), read without loading a model."""
    import importlib.metadata

    try:
        if runtime == "whisper.cpp":
            from .worker import _whisper_cpp_version

            return f"pywhispercpp {importlib.metadata.version('pywhispercpp')} (whisper.cpp {_whisper_cpp_version()})"
        return f"crispasr {importlib.metadata.version('crispasr')}"
    except (importlib.metadata.PackageNotFoundError, ImportError) as e:
        raise ValueError(f"the {runtime} backend needs its runtime package ({e}); "
                         f"install tarq[runtimes]") from None


class RuntimeBackend:
    """Shared by the whisper.cpp and CrispASR backends (the runtime name selects the worker's engine)."""

    name = ""
    batch_size = 64   # clips per transcribe() call from the runner; workers stay alive across calls

    def __init__(self, model, threads: int = 2, workers: int | None = None, policy: str = DEFAULT_POLICY,
                 language: str = "en", verify: bool = False, label: str | None = None):
        self.path = Path(model)
        self.version = runtime_version(self.name)
        self.sha256 = None
        if verify:   # first: "changed since export" explains any structural problem that follows
            from tarq.export.integrity import verify_checksum

            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path}: no such model file")
            self.sha256 = verify_checksum(self.path)
        self.file = check_model_file(self.path, self.name)
        self.policy = get_policy(policy)
        self.threads, self.workers_requested, self.language = max(1, int(threads)), workers, language
        self.label = label or str(self.path)
        self._pool: WorkerPool | None = None
        self.n_empty_nonsilent = 0
        workers_planned, per = plan_workers(self.threads, workers)
        self.description = {"backend": self.name, "model": str(self.path), "runtime_version": self.version,
                            "policy": self.policy.name, "policy_params": self.policy.describe(self.name),
                            "language": language, "threads": self.threads, "workers": workers_planned,
                            "threads_per_worker": per, "model_file": {"kind": self.file.kind, "arch": self.file.arch,
                                                                      "weight_type": self.file.weight_type},
                            "verified_sha256": self.sha256}

    # ------------------------------------------------------------------ decoding
    def _splits_long_audio(self) -> bool:
        return self.name == "whisper.cpp" and self.policy.long_audio == "split"

    def _runtime_params(self) -> dict[str, Any]:
        return dict(self.policy.whisper_cpp if self.name == "whisper.cpp" else self.policy.crispasr)

    def _ensure_pool(self, n_clips: int) -> WorkerPool:
        if self._pool is None:
            workers, per = plan_workers(self.threads, self.workers_requested, n_clips)
            self._pool = WorkerPool(self.name, self.path, workers, per, self.language, self.policy.strategy,
                                    self._runtime_params(), label=self.label)
            self.description.update(workers=workers, threads_per_worker=per,
                                    effective_params=self._pool.info.get("params"),
                                    strategy=self._pool.info.get("strategy"))
            log.debug("%s: %d %s worker(s) x %d thread(s), policy %s", self.label, workers, self.name, per,
                      self.policy.name)
        return self._pool

    def start(self, n_clips: int | None = None) -> "RuntimeBackend":
        """Start the worker processes and load the model now (otherwise the first transcribe() does it)."""
        self._ensure_pool(n_clips or self.threads)
        return self

    def transcribe(self, audios: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[str]:
        from ..segment import split_long

        pieces, owner = [], []
        for i, a in enumerate(audios):
            a = np.ascontiguousarray(a, dtype=np.float32)
            if a.ndim != 1:
                raise ValueError(f"audio #{i}: expected mono 1-D float32 at 16 kHz, got shape {a.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"{names[i] if names else f'audio #{i}'}: samples contain NaN or Inf")
            parts = split_long(a) if self._splits_long_audio() and len(a) > WINDOW_S * SAMPLE_RATE else [a]
            pieces += parts
            owner += [i] * len(parts)
        if not pieces:
            return []
        piece_names = [names[i] if names else None for i in owner] if names else None
        pool = self._ensure_pool(len(pieces))
        try:
            texts = pool.map(pieces, piece_names)
        except BaseException:
            self.close()   # a crashed or failed worker leaves the pool unusable; the next call starts fresh
            raise
        joined: list[list[str]] = [[] for _ in audios]
        for i, t in zip(owner, texts):
            if t.strip():
                joined[i].append(t.strip())
        out = [" ".join(parts) for parts in joined]
        self._report_empty(audios, out, names)
        return out

    def _report_empty(self, audios, texts, names) -> None:
        short = [i for i, (a, t) in enumerate(zip(audios, texts)) if not t and len(a) < MIN_SAMPLES]
        if short:
            which = ", ".join(names[i] if names else f"#{i + 1}" for i in short[:3]) + (" ..." if len(short) > 3 else "")
            log.warning("%s: empty transcript for %d clip(s) shorter than %d ms, too short for %s to decode (%s)",
                        self.label, len(short), 1000 * MIN_SAMPLES // SAMPLE_RATE, self.name, which)
        empty = [i for i, (a, t) in enumerate(zip(audios, texts))
                 if not t and len(a) >= MIN_SAMPLES and rms_dbfs(a) > SILENCE_DBFS]
        if not empty:
            return
        self.n_empty_nonsilent += len(empty)
        which = ", ".join(names[i] if names else f"#{i + 1}" for i in empty[:3]) + (" ..." if len(empty) > 3 else "")
        log.warning("%s: empty transcript for %d non-silent clip(s) (%s): the model produced no words for audio "
                    "above %.0f dBFS", self.label, len(empty), which, SILENCE_DBFS)

    # ------------------------------------------------------------------ identity
    def cache_identity(self) -> dict[str, Any]:
        """Everything that can change the text output (API.md). The ggml thread count per worker can (measured on
        base: 1 vs 2 threads changed transcripts); the number of workers cannot (each clip runs in one worker)."""
        from tarq.export.integrity import file_sha256

        from ..cache import source_sha256
        from ..segment import SPLIT_VERSION

        return {"backend": self.name, "runtime_version": self.version,
                "code": source_sha256("eval/runtimes", "eval/segment.py"),
                "model_sha256": self.sha256 or file_sha256(self.path), "policy": self.policy.name,
                "policy_params": self.policy.describe(self.name), "language": self.language,
                "long_audio": SPLIT_VERSION if self._splits_long_audio() else "runtime",
                "ggml_threads": plan_workers(self.threads, self.workers_requested)[1]}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


@register_backend("whisper.cpp")
class WhisperCppBackend(RuntimeBackend):
    """whisper.cpp 1.8.x (pywhispercpp) on an exported legacy ggml ``.bin``."""

    name = "whisper.cpp"


@register_backend("crispasr")
class CrispAsrBackend(RuntimeBackend):
    """CrispASR on a whisper.cpp ``.bin`` (its whisper API) or a GGUF model (``crispasr.Session``)."""

    name = "crispasr"


def transcribe_file(runtime: str, model: str | os.PathLike, audios: Sequence[np.ndarray], threads: int = 2,
                    policy: str = DEFAULT_POLICY, language: str = "en", workers: int | None = None,
                    verify: bool = False) -> list[str]:
    """One-shot: validate ``model``, decode ``audios`` with ``runtime`` in worker processes, stop the workers."""
    cls = {"whisper.cpp": WhisperCppBackend, "crispasr": CrispAsrBackend}.get(runtime)
    if cls is None:
        raise ValueError(f"unknown runtime {runtime!r}; choose from whisper.cpp, crispasr")
    with cls(model, threads=threads, workers=workers, policy=policy, language=language, verify=verify) as b:
        return b.transcribe(audios)
