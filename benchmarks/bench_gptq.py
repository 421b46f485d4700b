"""Native (tarq._C) vs PyTorch-reference GPTQ kernels on Whisper layer shapes.

For each model size (d = d_model, ff = 4d) the three Linear shapes [d, d], [ff, d], [d, ff] (out, in) are
swept (Q4_0, group 32, lazy block 128) with both backends at the same thread count (--threads), and the
codes of the two are compared; the Cholesky of the damped inverse is timed too for the distinct input
widths. The native solver is also timed at every count of --thread-counts (default 1 and 2: the row that
shows `--threads` reaches the native pool). Median of --reps runs (the reference gets --ref-reps, it is
slow). Prints markdown tables and writes benchmarks/results/bench_gptq.json and .png.

    python benchmarks/bench_gptq.py            # all four sizes incl. large-v3 (Cholesky n = 5120), ~5-8 min
    python benchmarks/bench_gptq.py --quick    # tiny + base only
    python benchmarks/bench_gptq.py --full     # more reps
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from tarq.ggml import make_lattice
from tarq.kernels import reference as ref

MODELS = {"tiny": (384, 1536), "base": (512, 2048), "small": (768, 3072), "large-v3": (1280, 5120)}
RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def test_hessian(n: int, seed: int) -> torch.Tensor:
    """A dense SPD second moment (rank <= 1024 plus a ridge, so large widths stay cheap to build)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(min(2 * n, 1024), n, generator=g) * (torch.rand(n, generator=g) + 0.1)
    H = X.T @ X
    H.diagonal().add_(0.05 * float(H.diagonal().mean()))
    return H


def machine_info(threads: int) -> dict:
    from tarq._machine import cpu_record

    cpu = cpu_record()["cpu"]
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parents[1]).stdout.strip() or None
    except OSError:
        commit = None
    from tarq import _C
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": threads,
            "native_isa": _C.isa(), "native_blas": _C.blas() if hasattr(_C, "blas") else "built-in",
            "native_cuda_built": bool(_C.has_cuda), "load_average_at_start": load,
            "git_commit": commit, "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny and base only, 1 reference run")
    ap.add_argument("--full", action="store_true", help="all sizes incl. large-v3 Cholesky, more reps")
    ap.add_argument("--threads", type=int, default=2, help="threads of the native-vs-reference comparison")
    ap.add_argument("--thread-counts", default="1,2", help="native solver timed at each of these thread counts")
    ap.add_argument("--reps", type=int, default=None, help="native runs per shape (median)")
    ap.add_argument("--ref-reps", type=int, default=None, help="reference runs per shape (median)")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_gptq.json")
    args = ap.parse_args(argv)

    from tarq.kernels import native, set_num_threads as set_threads
    set_threads(args.threads)   # torch's pool (the reference) and tarq._C's OpenMP pool (native)
    models = ["tiny", "base"] if args.quick else list(MODELS)
    reps = args.reps or (5 if args.full else 3)
    ref_reps = args.ref_reps or (3 if args.full else 1)
    chol_max_n = 10**9   # every size, n = 5120 included (the acceptance is >= 3x on every Cholesky size)
    thread_counts = [int(t) for t in args.thread_counts.split(",") if t]
    fmt = make_lattice("q4_0", 32)
    info = machine_info(args.threads)
    rows, chol_rows = [], []
    factors: dict[int, torch.Tensor] = {}
    for model in models:
        d, ff = MODELS[model]
        for n in (d, ff):
            if n in factors:
                continue
            H = test_hessian(n, seed=n)
            by_threads = {}
            for t in thread_counts:
                set_threads(t)
                by_threads[t] = timed(lambda: native.cholesky_inverse_upper(H), reps)
            set_threads(args.threads)
            t_nat = timed(lambda: native.cholesky_inverse_upper(H), reps)
            factors[n] = native.cholesky_inverse_upper(H).U
            t_ref = timed(lambda: ref.cholesky_inverse_upper(H), ref_reps) if n <= chol_max_n else None
            chol_rows.append({"n": n, "native_s": t_nat, "reference_s": t_ref,
                              "speedup": (t_ref / t_nat) if t_ref else None, "native_s_by_threads": by_threads})
            print(f"cholesky n={n}: native {t_nat:.3f}s reference {t_ref if t_ref is None else round(t_ref, 3)}s",
                  flush=True)
        for shape in ((d, d), (ff, d), (d, ff)):
            m, n = shape
            W = torch.randn(m, n, generator=torch.Generator().manual_seed(m + n)) * 0.05
            U = factors[n]
            by_threads = {}
            for t in thread_counts:
                set_threads(t)
                by_threads[t] = timed(lambda: native.gptq_sweep(W, U, fmt), reps)
            set_threads(args.threads)
            t_nat = timed(lambda: native.gptq_sweep(W, U, fmt), reps)
            t_ref = timed(lambda: ref.gptq_sweep(W, U, fmt), ref_reps)
            a, b = native.gptq_sweep(W, U, fmt), ref.gptq_sweep(W, U, fmt)
            same = float((a.codes == b.codes).float().mean())
            rows.append({"model": model, "out": m, "in": n, "native_s": t_nat, "reference_s": t_ref,
                         "speedup": t_ref / t_nat, "codes_equal_fraction": same,
                         "codes_identical": bool(same == 1.0 and torch.equal(a.params, b.params)),
                         "native_s_by_threads": by_threads})
            print(f"sweep {model} [{m}x{n}]: native {t_nat:.3f}s reference {t_ref:.3f}s x{t_ref / t_nat:.1f} "
                  f"codes equal {same:.6f}; native by threads " +
                  ", ".join(f"{t}: {v:.3f}s" for t, v in by_threads.items()), flush=True)

    tc = thread_counts
    thr_head = "".join(f" native {t} thr (s) |" for t in tc)
    table = [f"| model | shape [out x in] | native (s) | reference (s) | speedup | codes identical |{thr_head}",
             "|---|---|---:|---:|---:|---|" + "---:|" * len(tc)]
    table += [f"| {r['model']} | {r['out']}x{r['in']} | {r['native_s']:.3f} | {r['reference_s']:.3f} | "
              f"{r['speedup']:.1f}x | {'yes' if r['codes_identical'] else 'no (%.6f)' % r['codes_equal_fraction']} |"
              + "".join(f" {r['native_s_by_threads'][t]:.3f} |" for t in tc) for r in rows]
    ctable = [f"| n (Cholesky) | native (s) | reference (s) | speedup |{thr_head}", "|---:|---:|---:|---:|" + "---:|" * len(tc)]
    ctable += [f"| {c['n']} | {c['native_s']:.3f} | " + (f"{c['reference_s']:.3f} | {c['speedup']:.1f}x |"
               if c["reference_s"] else "not run | - |") + "".join(f" {c['native_s_by_threads'][t]:.3f} |" for t in tc)
               for c in chol_rows]
    print("\n" + "\n".join(table) + "\n\n" + "\n".join(ctable))
    payload = {"machine": info, "format": "q4_0/g32", "block_size": 128, "native_reps": reps,
               "reference_reps": ref_reps, "statistic": "median", "sweep": rows, "cholesky": chol_rows,
               "thread_counts": thread_counts, "markdown": "\n".join(table), "markdown_cholesky": "\n".join(ctable)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(args.out)
    plot(rows, args.out.with_suffix(".png"), info)
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def plot(rows: list[dict], path: Path, info: dict) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    labels = [f"{r['model']}\n{r['out']}x{r['in']}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 4))
    ax.bar([i - 0.2 for i in x], [r["reference_s"] for r in rows], width=0.4, label="PyTorch reference")
    ax.bar([i + 0.2 for i in x], [r["native_s"] for r in rows], width=0.4, label="native (tarq._C)")
    for i, r in enumerate(rows):
        ax.text(i, r["reference_s"], f"{r['speedup']:.1f}x", ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("GPTQ sweep time (s, median)")
    ax.set_title(f"GPTQ sweep Q4_0/g32, {info['threads']} threads, {info['cpu']}", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
