"""Peak resident memory per calibration phase (report.json ``memory``).

A daemon thread samples the process's resident set size every ``interval`` seconds; the pipeline's Timer
records the intervals of each phase (forward, stats, solve, ...); ``peaks`` attributes every sample to the
phase running at that instant. The process-wide peak comes from ``getrusage`` (exact, not sampled).
"""
from __future__ import annotations

import bisect
import os
import resource
import threading
import time

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


_libc = None


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    PyTorch's CPU tensors come from malloc; after the first free of a multi-MB tensor glibc raises its mmap
    threshold and serves later ones from the heap, where freed blocks stay resident. Trimming once per stage
    keeps RSS close to what is live (the states of the two streams) at the cost of one heap walk."""
    global _libc
    if _libc is None:
        try:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


def current_rss_bytes() -> int:
    """Resident set size now (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss_mb() -> float:
    """Peak RSS of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class RssSampler:
    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tarq-rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), current_rss_bytes()))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peaks(self, intervals: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
        """Highest sampled RSS (MB) inside each phase's intervals; phases without a sample are left out."""
        times = [t for t, _ in self.samples]   # appended in time order
        out: dict[str, float] = {}
        for phase, spans in intervals.items():
            best = 0
            for t0, t1 in spans:
                for k in range(bisect.bisect_left(times, t0), bisect.bisect_right(times, t1)):
                    best = max(best, self.samples[k][1])
            if best:
                out[phase] = round(best / 2**20, 1)
        return out
