"""Portable CPU numerics (tarq/_numerics.py): which pins are set, when they cannot be, that the libraries obey them in
a fresh process, and that a bad TARQ_NUMERICS is one line at the CLI."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tarq import _numerics

ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f\n\n"
SANDY_BRIDGE = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse4_2 avx\n\n"
HASWELL_NO_FMA = "processor\t: 0\nflags\t\t: avx avx2\n"
# what the pins set, written out here (the test's own record), stripped from the environment of fresh processes
PIN_VARIABLES = ("OPENBLAS_CORETYPE", "MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def test_cpu_check_needs_avx2_and_fma_on_x86():
    assert _numerics.cpu_supports_portable_pins(ZEN4, "x86_64") == (True, "")
    ok, why = _numerics.cpu_supports_portable_pins(SANDY_BRIDGE, "x86_64")
    assert not ok and why == "this CPU lacks avx2 and fma, which the AVX2 pins need"
    ok, why = _numerics.cpu_supports_portable_pins(HASWELL_NO_FMA, "x86_64")
    assert not ok and "lacks fma" in why
    ok, why = _numerics.cpu_supports_portable_pins("Features\t: asimd sve\n", "aarch64")
    assert not ok and "aarch64" in why


def test_portable_sets_every_pin_and_overrides_the_users_choice():
    env = {"TARQ_NUMERICS": "portable", "OPENBLAS_CORETYPE": "SkylakeX", "ATEN_CPU_CAPABILITY": "avx512"}
    state = _numerics.apply_from_environment(env, cpuinfo=ZEN4, machine="x86_64")
    assert state == {"mode": "portable", "pinned": True, "reason": ""}
    assert env == {"TARQ_NUMERICS": "portable", "OPENBLAS_CORETYPE": "Haswell", "MKL_CBWR": "COMPATIBLE,STRICT", "ATEN_CPU_CAPABILITY": "avx2",
                   "ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_native_leaves_the_libraries_alone_but_keeps_thread_invariance():
    env = {"OPENBLAS_CORETYPE": "SkylakeX"}                     # no TARQ_NUMERICS: native is the default
    state = _numerics.apply_from_environment(env, cpuinfo=ZEN4, machine="x86_64")
    assert state["mode"] == "native" and not state["pinned"]
    assert env == {"OPENBLAS_CORETYPE": "SkylakeX", "MKL_CBWR": "AUTO,STRICT"}
    env = {"TARQ_NUMERICS": "native", "MKL_CBWR": "COMPATIBLE"}          # the user's MKL setting wins there
    _numerics.apply_from_environment(env, cpuinfo=ZEN4, machine="x86_64")
    assert env["MKL_CBWR"] == "COMPATIBLE"


def test_portable_on_a_cpu_without_avx2_says_why_and_pins_nothing():
    env = {"TARQ_NUMERICS": "portable"}
    state = _numerics.apply_from_environment(env, cpuinfo=SANDY_BRIDGE, machine="x86_64")
    assert state["mode"] == "portable" and not state["pinned"] and "lacks avx2" in state["reason"]
    assert env == {"TARQ_NUMERICS": "portable", "MKL_CBWR": "AUTO,STRICT"}


def test_unknown_mode_is_recorded_as_an_error():
    env = {"TARQ_NUMERICS": "fast"}
    state = _numerics.apply_from_environment(env, cpuinfo=ZEN4, machine="x86_64")
    assert state["error"] == "TARQ_NUMERICS='fast': expected one of native, portable" and state["mode"] == "native"
    _numerics.apply_from_environment({}, cpuinfo=ZEN4, machine="x86_64")     # leave the module as it was
    assert _numerics.invalid_mode_error() is None


def test_openblas_core_is_read_from_the_blas_description():
    desc = "OpenBLAS (scipy-openblas32): OpenBLAS 0.3.34 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64, core Haswell"
    assert _numerics._openblas_core(desc) == "Haswell"
    assert _numerics._openblas_core("built-in") is None


_PROBE = """
import json, os, tarq, torch
from tarq import _numerics
from tarq.kernels import native_info
rec = _numerics.numerics_record(native_info()["native_blas"])
torch.nn.functional.layer_norm(torch.randn(4, 8), (8,))   # a vectorized kernel ran: the choice is made
rec["after"] = torch.backends.cpu.get_cpu_capability()
print(json.dumps(rec))
"""


def _probe(**env) -> dict:
    full = {k: v for k, v in os.environ.items() if k not in ("TARQ_NUMERICS", *PIN_VARIABLES)}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", _PROBE], env=full, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _numerics.cpu_supports_portable_pins()[0], reason="needs an x86 CPU with AVX2 and FMA")
def test_a_fresh_process_runs_the_pinned_kernels():
    rec = _probe(TARQ_NUMERICS="portable")
    assert rec["mode"] == "portable" and rec["pinned"] is True
    assert rec["aten_capability"] == rec["after"] == "AVX2"
    assert rec["openblas_core"] in (None, "Haswell")
    assert rec["MKL_CBWR"] == "COMPATIBLE,STRICT" and rec["ONEDNN_MAX_CPU_ISA"] == "AVX2"


@pytest.mark.skipif("avx512f" not in open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else True,
                    reason="the native choice differs from the pin only on an AVX-512 CPU")
def test_native_mode_is_the_default_and_runs_the_widest_kernels():
    rec = _probe()
    assert rec["mode"] == "native" and rec["pinned"] is False
    assert rec["after"].startswith("AVX512")
    assert rec["openblas_core"] in (None, "SkylakeX", "Cooperlake", "SapphireRapids", "Zen")
    assert rec["MKL_CBWR"] == "AUTO,STRICT"


def test_bad_mode_is_one_line_at_the_cli():
    env = dict(os.environ, TARQ_NUMERICS="fast")
    out = subprocess.run([sys.executable, "-m", "tarq", "quantize", "x", "--out", "y"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == "tarq: error: TARQ_NUMERICS='fast': expected one of native, portable"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="needs qemu-x86_64 (Debian: qemu-user)")
@pytest.mark.skipif(not _numerics.cpu_supports_portable_pins()[0], reason="needs an x86 CPU with AVX2 and FMA")
def test_portable_build_is_the_same_file_on_an_emulated_intel_cpu(tmp_path):
    """The same calibrated build on this machine and on an emulated Intel Haswell (qemu-user: another vendor, no
    AVX-512): identical bytes with the portable pins; with native numerics the emulated process really picks other
    kernels (the precondition that makes the comparison mean something)."""
    from pathlib import Path

    from tarq.testing import write_random_moonshine

    hf = write_random_moonshine(tmp_path / "hf")
    demo = Path(__file__).resolve().parents[1] / "python" / "tarq" / "demo_data" / "calib"

    def build(mode: str, emulate: str | None) -> tuple[bytes, dict]:
        out = tmp_path / f"{mode}-{emulate or 'host'}"
        cmd = [sys.executable, "-m", "tarq", "quantize", str(hf), "--format", "q4_0", "--method", "qep",
               "--calib", str(demo), "--n-calib", "2", "--threads", "1", "--no-progress", "--out", str(out)]
        if emulate:
            cmd = ["qemu-x86_64", "-cpu", emulate, *cmd]
        env = {k: v for k, v in os.environ.items() if k not in PIN_VARIABLES}
        subprocess.run(cmd, env=env | {"TARQ_NUMERICS": mode}, check=True, capture_output=True, timeout=1800)
        report = json.loads((out / "report.json").read_text())
        return (out / "quantized.safetensors").read_bytes(), report["versions"]["numerics"]

    host, host_rec = build("portable", None)
    intel, intel_rec = build("portable", "Haswell-v4")
    assert host_rec["pinned"] and intel_rec["pinned"]
    assert host == intel
    native_intel_bytes, native_intel = build("native", "Haswell-v4")
    assert native_intel["aten_capability"] == "AVX2" and native_intel["openblas_core"] in (None, "Haswell")
    assert native_intel["MKL_CBWR"] == "AUTO,STRICT"
    if "avx512f" in Path("/proc/cpuinfo").read_text():    # this host's own kernels are wider: files differ unpinned
        native_host_bytes, native_host = build("native", None)
        assert native_host["aten_capability"].startswith("AVX512")
        assert native_host_bytes != native_intel_bytes
