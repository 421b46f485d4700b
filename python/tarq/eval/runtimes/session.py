"""Runtime worker processes: native crashes become one-line errors, decoding uses several processes.

A :class:`RuntimeWorker` is one child process (``worker.py``) holding one loaded model. It stays alive across
clips, so the isolation costs one process start and one model load per worker, not per clip (measured in
docs/evaluation.md). If the child dies (segmentation fault, ggml abort, uncaught C++ exception, killed for memory)
the parent raises :class:`RuntimeCrash`: one line with the model file, the runtime, the signal, what it was doing
and the runtime's last error message. The child's stderr (ggml / whisper.cpp log lines) is read continuously: every
line is logged at DEBUG (``tarq -v``), lines that are runtime warnings or errors are logged once at WARNING.

A :class:`WorkerPool` runs ``workers`` such processes with ``threads`` ggml threads each and hands clips to whichever
is free (longest first, as the caller orders them); results come back in input order.
"""
from __future__ import annotations

import atexit
import collections
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import RuntimeCrash
from . import worker as _protocol

log = logging.getLogger("tarq.runtime")

WORKER_SCRIPT = Path(__file__).with_name("worker.py")
# runtime log lines worth a user's attention (whisper.cpp WHISPER_LOG_WARN/ERROR, ggml asserts, C++ exceptions)
_NOTEWORTHY = re.compile(r"warn|error|fail|invalid|assert|terminate|abort|exception|what\(\)|assuming", re.I)
# noteworthy-looking lines that are routine (printed on every load)
_ROUTINE = re.compile(r"no GPU found|failed to find a GPU|use gpu\s*=|flash attn", re.I)
# load-log lines that mean the model is unusable although the runtime returned a context
_FATAL_LOAD = re.compile(r"assuming empty model|not all tensors loaded", re.I)


# workers still running when the interpreter exits (a backend never closed): closed by an atexit hook, while the
# stderr reader threads can still run. Closing them later, from a finaliser during interpreter shutdown, would
# close a pipe whose reader thread holds its lock, and CPython aborts ("could not acquire lock ... at interpreter
# shutdown").
_LIVE_WORKERS: "weakref.WeakSet[RuntimeWorker]" = weakref.WeakSet()


@atexit.register
def _close_live_workers() -> None:
    for worker in list(_LIVE_WORKERS):
        try:
            worker.close()
        except Exception:  # noqa: BLE001 - best effort at exit; the child exits with its stdin anyway
            pass


def _signal_name(rc: int) -> str:
    if rc < 0:
        try:
            return signal.Signals(-rc).name
        except ValueError:
            return f"signal {-rc}"
    return f"exit status {rc}"


class RuntimeWorker:
    def __init__(self, runtime: str, model: Path, threads: int, language: str, strategy: int,
                 params: dict[str, Any], label: str | None = None):
        self.runtime, self.model, self.label = runtime, Path(model), label or str(model)
        self.threads = max(1, int(threads))
        self._lines: collections.deque[str] = collections.deque(maxlen=200)
        self._warned: set[str] = set()
        self._load_log: list[str] = []
        self._pending: collections.deque[str] = collections.deque()
        self._loaded = threading.Event()
        self._done = threading.Semaphore(0)   # released when the worker's stderr reaches a request's end marker
        env = dict(os.environ)
        env.update(GGML_NO_BACKTRACE="1", OMP_NUM_THREADS=str(self.threads),
                   OPENBLAS_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        env.pop("PYTHONSTARTUP", None)
        self.proc = subprocess.Popen([sys.executable, "-u", str(WORKER_SCRIPT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=True)
        self._stderr_thread = threading.Thread(target=self._pump_stderr, daemon=True)
        self._stderr_thread.start()
        _LIVE_WORKERS.add(self)
        try:
            self.info = self._request({"op": "load", "runtime": runtime, "model": str(self.model),
                                       "threads": self.threads, "language": language, "strategy": strategy,
                                       "params": params}, "loading the model", flush=False)["info"]
            self._loaded.wait(timeout=10)
            fatal = next((ln for ln in self._load_log if _FATAL_LOAD.search(ln)), None)
            if fatal:
                self._pending.clear()
                raise RuntimeCrash(f"{self.label}: {runtime} could not use the model: {' '.join(fatal.split())}")
            self._flush_warnings()
        except BaseException:
            self._pending.clear()   # the error names the cause; no separate warning lines
            self.close()
            raise

    # ------------------------------------------------------------------ stderr
    def _pump_stderr(self) -> None:
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip()
            if not line.strip():
                continue
            if line == _protocol.LOADED_MARK.decode():
                self._loaded.set()
                continue
            if line == _protocol.DONE_MARK.decode():
                self._done.release()
                continue
            if not self._loaded.is_set():
                self._load_log.append(line)
            self._lines.append(line)
            log.debug("[%s %s] %s", self.runtime, self.model.name, line)
            if _NOTEWORTHY.search(line) and not _ROUTINE.search(line):
                key = re.sub(r"\d+", "#", line)
                if key not in self._warned:
                    self._warned.add(key)
                    self._pending.append(line.strip())

    def _flush_warnings(self) -> None:
        """Log the runtime's warnings after a request that succeeded (a failed one reports them in its error)."""
        while self._pending:
            log.warning("%s: %s says: %s", self.label, self.runtime, self._pending.popleft())

    def _last_message(self) -> str:
        lines = list(self._lines)
        pick = next((ln for ln in reversed(lines) if _NOTEWORTHY.search(ln) and not _ROUTINE.search(ln)), None)
        pick = pick or (lines[-1] if lines else "")
        pick = " ".join(pick.split())
        return pick if len(pick) <= 200 else pick[:200] + "…"

    # ------------------------------------------------------------------ requests
    def _request(self, msg: dict, what: str, flush: bool = True) -> dict:
        try:
            _protocol.send(self.proc.stdin, msg)
            reply = _protocol.recv(self.proc.stdout)
        except (BrokenPipeError, OSError):
            reply = None
        if reply is None:
            raise self._crashed(what)
        self._done.acquire(timeout=5)   # the request's stderr lines (warnings) are in before we go on
        if not reply.get("ok"):
            detail = " ".join(str(reply.get("error", "unknown error")).split())
            last = self._last_message()
            extra = f" (runtime: {last})" if last and last not in detail else ""
            raise RuntimeCrash(f"{self.label}: {self.runtime} failed while {what}: {detail}{extra}")
        if flush:
            self._flush_warnings()
        return reply

    def _crashed(self, what: str) -> RuntimeCrash:
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._stderr_thread.join(timeout=2)
        last = self._last_message()
        return RuntimeCrash(f"{self.label}: {self.runtime} crashed ({_signal_name(rc)}) while {what}"
                            + (f"; last runtime message: {last}" if last else ""))

    def transcribe(self, audio: np.ndarray, what: str = "decoding") -> str:
        return self._request({"op": "transcribe", "audio": np.ascontiguousarray(audio, dtype=np.float32)},
                             what)["text"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self._flush_warnings()
            try:
                _protocol.send(self.proc.stdin, {"op": "exit"})
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        _LIVE_WORKERS.discard(self)
        # the child has exited, so its stderr ends and the reader thread finishes; closing the pipe under a reader
        # still blocked in readline() would race it for the stream's lock
        self._stderr_thread.join(timeout=5)
        streams = [self.proc.stdout] + ([] if self._stderr_thread.is_alive() else [self.proc.stderr])
        for stream in streams:
            try:
                stream.close()
            except OSError:
                pass


class WorkerPool:
    """``workers`` runtime processes with ``threads_per_worker`` ggml threads each, started in parallel."""

    def __init__(self, runtime: str, model: Path, workers: int, threads_per_worker: int, language: str,
                 strategy: int, params: dict[str, Any], label: str | None = None):
        self.workers: list[RuntimeWorker] = []
        errors: list[BaseException] = []

        def start():
            try:
                w = RuntimeWorker(runtime, model, threads_per_worker, language, strategy, params, label)
                self.workers.append(w)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        starters = [threading.Thread(target=start) for _ in range(max(1, int(workers)))]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        if errors:
            self.close()
            raise errors[0]
        self.info = self.workers[0].info

    def map(self, audios: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[str]:
        """Texts for ``audios`` in input order; clips go to whichever worker is free, in the order given."""
        jobs: queue.Queue[int] = queue.Queue()
        for i in range(len(audios)):
            jobs.put(i)
        texts: list[str | None] = [None] * len(audios)
        errors: list[BaseException] = []

        def run(w: RuntimeWorker) -> None:
            while not errors:
                try:
                    i = jobs.get_nowait()
                except queue.Empty:
                    return
                what = f"decoding {names[i]}" if names else f"decoding clip {i + 1} of {len(audios)}"
                try:
                    texts[i] = w.transcribe(audios[i], what)
                except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                    errors.append(e)
                    return

        if len(self.workers) == 1:
            run(self.workers[0])
        else:
            threads = [threading.Thread(target=run, args=(w,)) for w in self.workers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        return [t or "" for t in texts]

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self.workers = []
