"""Child process that runs one ggml runtime (whisper.cpp via pywhispercpp, or CrispASR) on one model file.

Run as a script by :mod:`tarq.eval.runtimes.session` (never imported by tarq): it imports only the standard
library, numpy and the runtime package, so it starts in a fraction of a second, and a native crash (segmentation
fault, ggml abort, C++ exception) kills this process only; the parent turns it into a one-line error naming the
model file. The model is loaded once and the worker then decodes one clip per request until told to exit or until
its stdin closes (the parent died).

Protocol: length-prefixed pickles. Requests arrive on stdin, replies leave on the original stdout, which is
duplicated before fd 1 is pointed at stderr, so whatever the native libraries print cannot corrupt the protocol.
Everything on stderr (ggml/whisper.cpp log lines) is read by the parent, shown with ``tarq -v`` and scanned for
warnings.

    {"op": "load", "runtime": "whisper.cpp"|"crispasr", "model": PATH, "threads": N, "language": "en",
     "strategy": 0|1, "params": {...whisper_full_params fields...}}      -> {"ok": True, "info": {...}}
    {"op": "transcribe", "audio": float32 ndarray}                      -> {"ok": True, "text": "..."}
    {"op": "exit"}
Any Python exception becomes {"ok": False, "error": "..."}.
"""
from __future__ import annotations

import os
import pickle
import struct
import sys

os.environ.setdefault("GGML_NO_BACKTRACE", "1")   # a ggml assert must abort, not wait for a debugger

SAMPLE_RATE = 16000
_HEADER = struct.Struct("<Q")
LOADED_MARK = b"@@tarq-worker: model loaded"
DONE_MARK = b"@@tarq-worker: request done"   # after every reply: the parent has read the request's log lines


def send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def recv(stream):
    """The next message, or None at end of stream."""
    head = _read_exact(stream, _HEADER.size)
    if head is None:
        return None
    (n,) = _HEADER.unpack(head)
    body = _read_exact(stream, n)
    if body is None:
        return None
    return pickle.loads(body)


def _read_exact(stream, n: int):
    chunks, got = [], 0
    while got < n:
        b = stream.read(n - got)
        if not b:
            return None
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def _join(texts) -> str:
    return " ".join(t.strip() for t in texts if t and t.strip())


class WhisperCppEngine:
    """whisper.cpp 1.8.x as bundled in pywhispercpp; ``params`` are whisper_full_params fields."""

    def __init__(self, path: str, threads: int, language: str, strategy: int, params: dict):
        import importlib.metadata

        from pywhispercpp.model import Model

        self.model = Model(path, params_sampling_strategy=int(strategy), n_threads=int(threads), language=language,
                           print_progress=False, print_realtime=False, print_timestamps=False,
                           redirect_whispercpp_logs_to=False, **params)   # False: logs to our stderr pipe
        if not getattr(self.model, "_ctx", None):
            raise RuntimeError("whisper.cpp could not load the model")
        effective = self.model.get_params()
        self.info = {"runtime_version": f"pywhispercpp {importlib.metadata.version('pywhispercpp')} "
                                        f"(whisper.cpp {_whisper_cpp_version()})",
                     "params": {k: _plain(effective[k]) for k in sorted(params) if k in effective},
                     "strategy": str(self.model._params.strategy).rsplit(".", 1)[-1]}

    def transcribe(self, audio):
        return _join(s.text for s in self.model.transcribe(audio))


class CrispAsrEngine:
    """CrispASR: a whisper.cpp ``.bin`` through its whisper API (greedy or beam strategy, best_of), a GGUF file
    through ``crispasr.Session`` (backend chosen from general.architecture; no decoding options)."""

    def __init__(self, path: str, threads: int, language: str, strategy: int, params: dict):
        import importlib.metadata

        import crispasr

        with open(path, "rb") as f:
            self.gguf = f.read(4) == b"GGUF"
        self.language, self.threads = language, int(threads)
        self.strategy = int(strategy)
        self.options = {"n_threads": self.threads, "print_progress": False, "print_realtime": False,
                        "print_timestamps": False, **params}
        if self.gguf:
            self.session = crispasr.Session(path, n_threads=self.threads)
        else:
            self.session = crispasr.CrispASR(path)
        self.info = {"runtime_version": f"crispasr {importlib.metadata.version('crispasr')}",
                     "params": dict(params) if not self.gguf else {},
                     "strategy": ("session:" + getattr(self.session, "backend", "?")) if self.gguf
                     else ("BEAM_SEARCH" if self.strategy else "GREEDY")}

    def transcribe(self, audio):
        if self.gguf:
            return _join(s.text for s in self.session.transcribe(audio, SAMPLE_RATE, language=self.language))
        return _join(s.text for s in self.session.transcribe_pcm(audio, sample_rate=SAMPLE_RATE, language=self.language,
                                                                 strategy=self.strategy, decode_options=self.options))


ENGINES = {"whisper.cpp": WhisperCppEngine, "crispasr": CrispAsrEngine}


def _whisper_cpp_version() -> str:
    """The bundled libwhisper's version, from its file name (pywhispercpp exposes no version call)."""
    import glob

    import pywhispercpp

    root = os.path.dirname(os.path.dirname(pywhispercpp.__file__))
    for lib in sorted(glob.glob(os.path.join(root, "pywhispercpp.libs", "libwhisper*.so.*")) +
                      glob.glob(os.path.join(root, "libwhisper.so.*.*.*"))):
        tail = lib.rsplit(".so.", 1)[-1]
        if tail.count(".") == 2:
            return tail
    return "unknown"


def _plain(v):
    return v if isinstance(v, (int, float, str, bool, type(None))) else (dict(v) if isinstance(v, dict) else str(v))


def serve(inp, out) -> int:
    import numpy as np

    engine = None
    while True:
        msg = recv(inp)
        if msg is None or msg.get("op") == "exit":
            return 0
        try:
            if msg["op"] == "load":
                engine = ENGINES[msg["runtime"]](msg["model"], msg["threads"], msg["language"], msg["strategy"],
                                                 msg["params"])
                reply = {"ok": True, "info": engine.info}
                os.write(2, LOADED_MARK + b"\n")   # the parent reads the load log up to here before going on
            elif msg["op"] == "transcribe":
                if engine is None:
                    raise RuntimeError("no model loaded")
                audio = np.ascontiguousarray(msg["audio"], dtype=np.float32)
                reply = {"ok": True, "text": engine.transcribe(audio)}
            else:
                raise ValueError(f"unknown request {msg['op']!r}")
        except Exception as e:  # noqa: BLE001 - reported to the parent, which names the model file
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        os.write(2, DONE_MARK + b"\n")
        send(out, reply)


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        del sys.path[0]                     # run as a script: our siblings must not shadow the runtime's imports
    out = os.fdopen(os.dup(1), "wb")       # the protocol channel
    os.dup2(2, 1)                           # native printf/puts -> stderr, never into the protocol
    sys.stdout = sys.stderr
    return serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    sys.exit(main())
