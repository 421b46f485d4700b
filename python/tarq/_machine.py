"""What machine a result came from: the CPU model name, for reports and benchmark records.

Recorded because a calibrated build is bit-reproducible on one CPU family but not across families (measured:
benchmarks/bench_cpu_family.py). The CPU-dependent code paths (MKL's and OpenBLAS's per-CPU kernels, tarq._C's ISA
dispatch) are the candidate causes; which one differs is not isolated (docs/methods.md).
"""
from __future__ import annotations

import contextlib
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) Processor", ...), or the platform's best guess."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
