"""Shared plumbing for the benchmark scripts: paths, machine/load records, measured subprocesses, JSON, tables, plots.

Every benchmark writes one JSON document to ``benchmarks/results/`` whose ``meta`` block comes from
:func:`run_meta` (machine, software versions, git commit, load average at start and end), so a number can always
be traced to the conditions it was measured under. Tables printed by a script and the tables in
``benchmarks/README.md`` come from the same ``render_markdown(result)`` function of that script.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import dataclasses
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PYTHON_SRC = REPO_ROOT / "python"
RESULTS_DIR = BENCH_DIR / "results"
CACHE_DIR = BENCH_DIR / ".cache"
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"

# Where the TARQ paper's CPU rows come from (appendix G.2, table 10; AMD EPYC 7V12, whisper.cpp, 4/8/16 threads,
# median of 3 after 1 warm-up, max-RSS at 8 threads). Quoted next to our numbers; seconds for the given audio.
PAPER_CPU_ROWS = {
    # (model, audio_s): {"f16": {threads: s}, "int4": {threads: s}, "rss_mb": (f16, int4)}
    ("tiny", 11): {"f16": {4: 0.77, 8: 0.52, 16: 0.48}, "int4": {4: 0.45, 8: 0.34, 16: 0.33}, "rss_mb": (173, 121)},
    ("tiny", 30): {"f16": {4: 1.73, 8: 1.01, 16: 0.76}, "int4": {4: 1.03, 8: 0.73, 16: 0.60}, "rss_mb": (167, 124)},
    ("base", 11): {"f16": {4: 1.60, 8: 1.05, 16: 1.02}, "int4": {4: 0.84, 8: 0.62, 16: 0.49}, "rss_mb": (281, 182)},
    ("base", 30): {"f16": {4: 3.79, 8: 2.18, 16: 1.39}, "int4": {4: 1.72, 8: 1.08, 16: 0.84}, "rss_mb": (258, 138)},
}
PAPER_CPU_SOURCE = ("TARQ paper (arXiv 2605.27808) appendix G.2 table 10: whisper.cpp on AMD EPYC 7V12; text: "
                    "'Whisper-tiny gets 1.5x, medium 2.4x' INT4-over-FP16 speedup, max-RSS roughly halved")


# ----------------------------------------------------------------------------------------------- environment

def bench_env(threads: int | None = None, **extra: str) -> dict[str, str]:
    """Environment for a child process: the tarq this process imports on PYTHONPATH and ggml's assert hook disabled
    (GGML_NO_BACKTRACE: a failing ggml assert must abort, not wait for a debugger)."""
    env = dict(os.environ)
    paths = [str(tarq_import_root())] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["GGML_NO_BACKTRACE"] = "1"
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def tarq_import_root() -> Path:
    """Where ``import tarq`` resolves: an installed package (with its built extension) wins; the source tree
    ``python/`` is the fallback for an uninstalled clone."""
    spec = importlib.util.find_spec("tarq")
    return Path(spec.origin).resolve().parent.parent if spec and spec.origin else PYTHON_SRC


def ensure_tarq_importable() -> None:
    """Let ``import tarq`` work from a fresh clone without installing; an installed tarq is left in charge."""
    if importlib.util.find_spec("tarq") is None and str(PYTHON_SRC) not in sys.path:
        sys.path.insert(0, str(PYTHON_SRC))
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# ----------------------------------------------------------------------------------------------- metadata

def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        # a copy of the tree without its .git (a rented GPU machine gets the files only): the commit it was
        # copied from, when the copier says so
        return os.environ.get("TARQ_GIT_COMMIT") or None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def gpu_info() -> dict[str, Any] | None:
    """The CUDA device the run used, by name (None without one): benchmark JSONs name their GPU."""
    if not cuda_available():
        return None
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
            "cuda_runtime": torch.version.cuda, "device_count": torch.cuda.device_count()}


def _mem_total_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    ensure_tarq_importable()
    from tarq._machine import cpu_record

    return {
        **cpu_record(),
        "cpu_count": os.cpu_count(),
        "mem_gb": _mem_total_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "pywhispercpp": _version("pywhispercpp"),
        "cuda": cuda_available(),
        **({"gpu": gpu} if (gpu := gpu_info()) else {}),
        "git_commit": _git_commit(),
    }


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class RunMeta:
    """Start/end record of a benchmark run: when, where, how loaded the machine was (os.getloadavg)."""
    benchmark: str
    argv: list[str]
    started: str
    load_start: list[float] | None
    machine: dict[str, Any]
    t0: float

    @classmethod
    def start(cls, benchmark: str, argv: Sequence[str] | None = None) -> "RunMeta":
        return cls(benchmark, list(sys.argv if argv is None else argv), utc_now(), loadavg(), machine_info(),
                   time.perf_counter())

    def finish(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "argv": self.argv, "started": self.started, "finished": utc_now(),
                "wall_s": round(time.perf_counter() - self.t0, 1), "loadavg_start": self.load_start,
                "loadavg_end": loadavg(), "machine": self.machine}


# ----------------------------------------------------------------------------------------------- subprocesses

@dataclass
class ChildResult:
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_mb: float      # ru_maxrss of exactly this child (os.wait4), i.e. its VmHWM


# The child is started through this tiny interpreter (python -S, ~9 MB) which fork+execs the command and reports
# the os.wait4 rusage of exactly that process. Why not wait4 on a direct child: Linux carries the high-water RSS
# of the pre-exec process image across execve, and a direct child's pre-exec image is a (v)fork of *this*
# process, so every measurement would be at least this benchmark's own RSS (hundreds of MB once torch is loaded).
_RSS_WRAPPER = """
import os, sys
out, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
with open(out, "w") as f:
    f.write(str(ru.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(cmd: Sequence[str], env: dict[str, str] | None = None, timeout: float | None = None,
                 cwd: Path | None = None) -> ChildResult:
    """Run ``cmd`` to completion and return its output, wall time and its own peak RSS (see _RSS_WRAPPER)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-S", "-c", _RSS_WRAPPER, rss.name, *cmd], stdout=out, stderr=err,
                                env=env, cwd=cwd, text=True, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)            # the wrapper and the measured process share a session
            proc.wait()
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        text = rss.read().strip()
        peak_kb = int(text) if text.isdigit() else 0
        return ChildResult(proc.returncode, out.read(), err.read(), wall, peak_kb / 1024.0)


def tarq_cli(*args: str) -> list[str]:
    """argv for the in-tree ``tarq`` command (works without installing the package)."""
    return [sys.executable, "-m", "tarq.cli.main", *args]


def check_child(res: ChildResult, what: str) -> None:
    if res.returncode != 0:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{what} failed (exit {res.returncode}):\n{tail}")


def last_json_line(text: str) -> dict:
    """The last line of ``text`` that parses as a JSON object (workers print their result last)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(line)
    raise ValueError(f"no JSON result line in worker output:\n{text[-2000:]}")


# ----------------------------------------------------------------------------------------------- data

def resolve_data_root(arg: str | None) -> Path:
    root = Path(arg).expanduser().resolve() if arg else DEFAULT_DATA_ROOT
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist (pass --data-root DIR holding the speech sets)")
    return root


def subset(items: Sequence, limit: int | None, seed: int = 0, key=lambda u: u.id) -> list:
    """A deterministic subset: sort by key, then a seeded sample of ``limit`` items, returned in key order.

    The same (set, limit, seed) always yields the same utterances, whatever order the manifest lists them in."""
    ordered = sorted(items, key=key)
    if limit is None or limit >= len(ordered):
        return ordered
    picked = random.Random(seed).sample(range(len(ordered)), limit)
    return [ordered[i] for i in sorted(picked)]


# ----------------------------------------------------------------------------------------------- output

def write_json(path: Path, obj: Any) -> Path:
    """Write atomically (temp file + rename): a crashed run never leaves half a result behind."""
    ensure_tarq_importable()
    from tarq._atomic import apply_umask

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_finite(obj), f, indent=1, sort_keys=False, default=_json_default, allow_nan=False)
            f.write("\n")
        apply_umask(tmp)          # mkstemp makes 0600; a result file gets the mode any new file would get
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _finite(o: Any) -> Any:
    """NaN/inf -> None, recursively: strict JSON has no NaN ("no rare words in this set" is a null rate)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return _finite(dataclasses.asdict(o))
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "item"):          # numpy / torch scalars
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def fmt_num(x: Any, digits: int = 2, pct: bool = False, suffix: str = "") -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "–"
    if isinstance(x, (int, float)):
        return f"{100 * x:.{digits}f}" if pct else f"{x:.{digits}f}{suffix}"
    return str(x)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one char per column ('l' or 'r'), default: first left, rest right."""
    headers = list(headers)
    align = align or ("l" + "r" * (len(headers) - 1))
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def save_plot(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def median(xs: Sequence[float]) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def self_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------------------------- CLI bits

def add_common_args(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--out", type=Path, default=RESULTS_DIR / default_out,
                   help=f"result JSON (default benchmarks/results/{default_out}; the plot goes next to it as .png)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (what would be measured, which commands) and exit without running anything")


def skipped_no_cuda(benchmark: str, reason: str = "skipped: no CUDA device") -> dict:
    meta = RunMeta.start(benchmark)
    return {"meta": meta.finish(), "skipped": reason}


def save_and_report(out: Path, result: dict | None, plot, render_markdown) -> None:
    """Write ``result`` (None: keep the file as it is), then plot and print what was saved, exactly as
    summarize.py will render it."""
    if result is not None:
        write_json(out, result)
    saved = read_json(out)
    plot(saved, out.with_suffix(".png"))
    print(render_markdown(saved))

