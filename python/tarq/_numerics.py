"""Portable CPU numerics: one calibrated file from any x86 CPU with AVX2 and FMA (docs/methods.md "CPU-family
dependence").

GPTQ turns a last-bit difference in its inputs into different codes, and four libraries pick their kernels per CPU,
each with its own rounding: OpenBLAS's DYNAMIC_ARCH core (tarq._C's statistics and solver), ATen's vectorized CPU
kernels (layer norms, softmax, GELU in the forward passes), MKL (PyTorch's float32 GEMMs) and oneDNN (its
convolutions). So the same command gives different files on different CPU families. ``TARQ_NUMERICS=portable``
pins each library to one code path every x86 CPU with AVX2 and FMA (2013 on) runs alike: OpenBLAS, ATen and oneDNN
to their AVX2 kernels, MKL to its vendor-neutral COMPATIBLE branch (its AVX2 branch is not one path on Intel and
AMD, below). ``TARQ_NUMERICS=native`` (the default) leaves the choice to the libraries. Why native is the default:
MKL's COMPATIBLE branch is its SSE2 code, and the portable tiny.en default build took 297 s against 136 s on the
Zen 4 development machine (forward passes 239 s against 98 s), while builds that differ by CPU family were level
in quality within noise (docs/methods.md "CPU-family dependence").
tarq._C needs no pin: its only vector path is AVX2+FMA, picked on every CPU that has both, and it is compiled
without -march=native.

Each library reads its setting once, when it loads or first dispatches, so ``apply_from_environment`` runs from
``tarq/__init__``, before tarq imports torch or tarq._C. A process that ran PyTorch kernels before importing tarq
keeps the kernels it already picked; ``numerics_record`` reports what is in effect, not what was asked for.
"""
from __future__ import annotations

import os
import platform

from ._machine import cpu_flags, first_processor, read_cpuinfo

MODES = ("native", "portable")
ENV_VAR = "TARQ_NUMERICS"

# library -> (environment variable, pinned value); read by each library when it starts
PORTABLE_X86_PINS = {
    "openblas": ("OPENBLAS_CORETYPE", "Haswell"),    # OpenBLAS DYNAMIC_ARCH: the AVX2 kernels
    "mkl": ("MKL_CBWR", "COMPATIBLE,STRICT"),         # MKL conditional numerical reproducibility (see below)
    "aten": ("ATEN_CPU_CAPABILITY", "avx2"),          # PyTorch's vectorized CPU kernels
    "onednn": ("ONEDNN_MAX_CPU_ISA", "AVX2"),         # oneDNN (PyTorch's CPU convolutions)
}
# MKL: its AVX2 branch is not one code path across vendors. Emulated (qemu-user, `-cpu Haswell-v4` against this
# Zen 4 host, both with the AVX2 pins), MKL_CBWR=AVX2,STRICT gave the same float32 GEMMs but different float64 GEMMs
# and different exp/log (ATen calls MKL's VML for those), AVX and SSE4_2 gave different float32 GEMMs too; only
# COMPATIBLE agreed on every probe (docs/methods.md "CPU-family dependence").
# Thread-count invariance (docs/methods.md §2), the only setting the native mode makes: MKL picks thread-count-
# dependent kernels for small GEMMs (the decoder's [15, 384] Linears) unless strict CNR is on. A user's value wins.
NATIVE_DEFAULTS = {"MKL_CBWR": "AUTO,STRICT"}

# the state apply_from_environment found, for numerics_record
_applied: dict[str, object] = {"mode": None, "pinned": False, "reason": "not applied"}


def cpu_supports_portable_pins(cpuinfo: str | None = None, machine: str | None = None) -> tuple[bool, str]:
    """Whether the AVX2 pins can run here, and why not when they cannot."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64"):
        return False, f"no portable pins for {machine}: the pins are x86 AVX2 kernels"
    if cpuinfo is None:
        cpuinfo = read_cpuinfo()
        if cpuinfo is None:
            return False, "cannot read /proc/cpuinfo to check for AVX2 and FMA"
    flags = cpu_flags(first_processor(cpuinfo))
    missing = [f for f in ("avx2", "fma") if f not in flags]
    if missing:
        return False, f"this CPU lacks {' and '.join(missing)}, which the AVX2 pins need"
    return True, ""


def resolve_mode(value: str | None) -> str:
    mode = (value or "native").strip().lower()
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR}={value!r}: expected one of {', '.join(MODES)}")
    return mode


def apply_from_environment(environ=None, cpuinfo: str | None = None, machine: str | None = None) -> dict:
    """Set the libraries' variables in ``environ`` (os.environ) for the mode ``TARQ_NUMERICS`` names.

    An unknown mode falls back to native here (``tarq`` must stay importable); the CLI refuses it
    (``invalid_mode_error``). Returns what was done."""
    environ = os.environ if environ is None else environ
    try:
        mode = resolve_mode(environ.get(ENV_VAR))
        bad = None
    except ValueError as e:
        mode, bad = "native", str(e)
    state: dict[str, object] = {"mode": mode, "pinned": False, "reason": ""}
    if mode == "portable":
        ok, why = cpu_supports_portable_pins(cpuinfo, machine)
        if ok:
            for var, value in PORTABLE_X86_PINS.values():
                environ[var] = value          # a pin overrides: the point is that every machine uses the same
            state["pinned"] = True
        else:
            state["reason"] = why
    if not state["pinned"]:
        for var, value in NATIVE_DEFAULTS.items():
            environ.setdefault(var, value)
        if mode == "native":
            state["reason"] = f"{ENV_VAR}=native"
    if bad:
        state["error"] = bad
    _applied.clear()
    _applied.update(state)
    return dict(state)


def invalid_mode_error() -> str | None:
    """The one-line error when ``TARQ_NUMERICS`` held an unknown value at import (None when it was fine)."""
    return _applied.get("error")  # type: ignore[return-value]


def numerics_record(native_blas: str | None = None) -> dict:
    """What reports record: the mode, whether the pins are in effect, and each library's effective choice.

    ``pinned`` is true only when every library that can be asked confirms its pin: a process that ran PyTorch
    kernels before importing tarq may have picked wider ones."""
    record: dict[str, object] = {"mode": _applied.get("mode"), "requested_pins": bool(_applied.get("pinned"))}
    if _applied.get("reason"):
        record["reason"] = _applied["reason"]
    try:
        import torch

        record["aten_capability"] = torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError):
        record["aten_capability"] = None
    record["openblas_core"] = _openblas_core(native_blas)
    # MKL and oneDNN cannot be asked what they run: their variables are what tarq can confirm
    env_pins = dict(PORTABLE_X86_PINS[lib] for lib in ("mkl", "onednn"))
    record.update({var: os.environ.get(var) for var in env_pins})
    confirmed = (record["aten_capability"] == PORTABLE_X86_PINS["aten"][1].upper()
                 and record["openblas_core"] in (None, PORTABLE_X86_PINS["openblas"][1])   # None: no OpenBLAS
                 and all(record[var] == value for var, value in env_pins.items()))
    record["pinned"] = bool(_applied.get("pinned")) and confirmed
    return record


def _openblas_core(native_blas: str | None) -> str | None:
    """The OpenBLAS core name from tarq._C's BLAS description ("..., core Haswell"); None without OpenBLAS."""
    if not native_blas or "OpenBLAS" not in native_blas:
        return None
    _, sep, core = native_blas.rpartition("core ")
    return core.strip() if sep else "unknown"
