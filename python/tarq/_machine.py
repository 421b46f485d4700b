"""What machine a result came from: the CPU's model name and identity, for reports and benchmark records.

Recorded because a calibrated build with the libraries' own per-CPU kernels (``TARQ_NUMERICS=native``, the default)
is bit-reproducible on one CPU family but not across families (benchmarks/bench_cpu_family.py);
``TARQ_NUMERICS=portable`` pins those kernels (tarq/_numerics.py, which reads the CPU flags through this module), and
reports record which were in effect (``versions.numerics``).
"""
from __future__ import annotations

import platform
from pathlib import Path

# Widest first: the vector ISA that decides which kernels MKL, OpenBLAS (DYNAMIC_ARCH) and tarq._C pick.
_VECTOR_ISAS = ("avx512f", "avx2", "avx", "sse4_2", "sve", "asimd")


def read_cpuinfo() -> str | None:
    """/proc/cpuinfo's text, or None where it cannot be read."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


def first_processor(cpuinfo: str) -> dict[str, str]:
    """The ``key: value`` fields of the first processor in /proc/cpuinfo's text."""
    fields: dict[str, str] = {}
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags(fields: dict[str, str]) -> set[str]:
    """The instruction-set flags of ``first_processor``'s fields (x86 ``flags``, Arm ``Features``)."""
    return set((fields.get("flags") or fields.get("Features") or "").split())


def cpu_record(cpuinfo: str | None = None) -> dict[str, str]:
    """What reports record about the CPU, from one read of /proc/cpuinfo (``cpuinfo``: its text, read when None):
    ``cpu``, the model name ("AMD EPYC", "Intel(R) Xeon(R) Processor", ...; the platform's best guess without one),
    and ``cpu_id``, the CPU as the per-CPU kernel choices see it: vendor, family/model/stepping and the widest vector
    ISA, e.g. "AuthenticAMD 25/17/1 avx512f". The model name alone does not tell builds apart: "AMD EPYC" names
    Zen 2 to Zen 5 alike, and two "AMD EPYC" machines gave different calibrated files (benchmarks/README.md "RTN
    encoder, calibrated decoder"). The first processor is described."""
    if cpuinfo is None:
        cpuinfo = read_cpuinfo() or ""
    fields = first_processor(cpuinfo)
    flags = cpu_flags(fields)
    isa = next((f for f in _VECTOR_ISAS if f in flags), "")
    vendor = fields.get("vendor_id") or fields.get("CPU implementer") or platform.machine() or "unknown"
    if "cpu family" in fields:
        version = f"{fields['cpu family']}/{fields.get('model', '?')}/{fields.get('stepping', '?')}"
    else:
        version = fields.get("CPU part", "")
    return {"cpu": fields.get("model name") or platform.processor() or "unknown",
            "cpu_id": " ".join(x for x in (vendor, version, isa) if x)}
