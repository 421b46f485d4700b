"""Run exported whisper.cpp ``.bin`` files in the real runtimes: whisper.cpp (pywhispercpp) and CrispASR.

Both functions load the model once per call, decode each 16 kHz float32 array greedily without
timestamps, and return one string per input (segments joined, whitespace-trimmed). Decoding options
are whisper.cpp's defaults (temperature fallback on, suppress_blank on, non-speech-token suppression
off), so results match what ``whisper-cli -nt`` gives; ``temperature_fallback=False`` turns the
fallback off (temperature_inc = 0), i.e. pure greedy decoding like tarq's PyTorch decoder, for
comparisons of weights rather than of decoding policies.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

# ggml tries to attach a debugger on a failed assert, which hangs a headless process
os.environ.setdefault("GGML_NO_BACKTRACE", "1")

SAMPLE_RATE = 16000


@contextlib.contextmanager
def _native_stdout_to_stderr():
    """ggml prints load messages ("repack: ...") on the C stdout; keep stdout for results."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real fd 1 (e.g. captured by a test runner)
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _magic(p: Path) -> bytes:
    with open(p, "rb") as f:
        return f.read(4)


def _check(bin_path: str | os.PathLike, audios: Sequence[np.ndarray], allowed=(b"lmgg", b"ggjt"),
           ) -> tuple[str, list[np.ndarray]]:
    p = Path(bin_path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such model file")
    magic = _magic(p)
    if magic not in allowed:
        raise ValueError(f"{p}: not a whisper.cpp ggml model (magic {magic!r}); export with --to whisper.cpp")
    arrays = []
    for i, a in enumerate(audios):
        a = np.ascontiguousarray(a, dtype=np.float32)
        if a.ndim != 1:
            raise ValueError(f"audio #{i}: expected mono 1-D float32 at 16 kHz, got shape {a.shape}")
        arrays.append(a)
    return str(p), arrays


def _join(texts) -> str:
    return " ".join(t.strip() for t in texts if t and t.strip())


def transcribe_whisper_cpp(bin_path: str | os.PathLike, audios: Sequence[np.ndarray], n_threads: int = 2,
                           language: str = "en", temperature_fallback: bool = True) -> list[str]:
    """Transcribe with whisper.cpp 1.8.5 as bundled in pywhispercpp."""
    from pywhispercpp.model import Model

    path, arrays = _check(bin_path, audios)
    extra = {} if temperature_fallback else {"temperature_inc": 0.0}
    with _native_stdout_to_stderr():
        model = Model(path, n_threads=int(n_threads), language=language, no_timestamps=True,
                      print_progress=False, print_realtime=False, print_timestamps=False,
                      redirect_whispercpp_logs_to=None, **extra)
        try:
            return [_join(s.text for s in model.transcribe(a)) for a in arrays]
        finally:
            del model


def transcribe_crispasr(bin_path: str | os.PathLike, audios: Sequence[np.ndarray], n_threads: int = 2,
                        language: str = "en") -> list[str]:
    """Transcribe with CrispASR (its own ggml build).

    A whisper.cpp ``.bin`` runs through CrispASR's whisper API (same decoding defaults as whisper.cpp);
    a GGUF file goes through ``crispasr.Session``, which picks the backend from general.architecture.
    """
    import crispasr

    path, arrays = _check(bin_path, audios, allowed=(b"lmgg", b"ggjt", b"GGUF"))
    with _native_stdout_to_stderr():
        if _magic(Path(path)) == b"GGUF":
            session = crispasr.Session(path, n_threads=int(n_threads))
            try:
                return [_join(s.text for s in session.transcribe(a, SAMPLE_RATE, language=language)) for a in arrays]
            finally:
                session.close()
        model = crispasr.CrispASR(path)
        opts = {"n_threads": int(n_threads), "print_progress": False, "print_realtime": False,
                "print_timestamps": False}
        try:
            return [_join(s.text for s in model.transcribe_pcm(a, sample_rate=SAMPLE_RATE, language=language,
                                                               decode_options=opts)) for a in arrays]
        finally:
            model.close()


RUNTIMES = {"whisper.cpp": transcribe_whisper_cpp, "crispasr": transcribe_crispasr}


def get_runtime(name: str):
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; choose from {sorted(RUNTIMES)}") from None
