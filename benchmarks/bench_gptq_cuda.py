"""CUDA GPTQ sweep against the native CPU sweep on Whisper layer shapes: codes compared, both timed.

For each model size (d = d_model, ff = 4d) the three Linear shapes [d, d], [ff, d], [d, ff] (out, in) are swept with
every type of --types whose blocks tile the input width (lazy block 128, each type's default group), once by
tarq._C on the CPU (--threads) and once by the CUDA kernels (csrc/cuda/sweep.cu) on the same W and the same U (the
upper Cholesky factor of a damped inverse, computed once on the CPU, as the calibration does). Reported per row:
the fraction of identical codes, whether the block parameters are identical, the relative difference of the
sweep's error Σe², and the median wall time of each (the GPU's includes the copy of the results back, synchronized).
Without a CUDA device, or with a tarq._C built without nvcc, the JSON records why it was skipped.

    python benchmarks/bench_gptq_cuda.py --threads 16        # tiny, base, small, large-v3; q4_0, q4_k, iq4_nl
    python benchmarks/bench_gptq_cuda.py --models large-v3 --types q4_0,q3_k,q5_k --reps 5
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS_DIR, RunMeta, cuda_available, ensure_tarq_importable, fmt_num,  # noqa: E402
                     markdown_table, pyplot, save_and_report, save_plot, skipped_no_cuda)

ensure_tarq_importable()
# the CPU benchmark's sizes, test Hessian and timer: the two benchmarks time the same problems
from bench_gptq import MODELS, test_hessian, timed  # noqa: E402

OUT = RESULTS_DIR / "bench_gptq_cuda.json"


def compare(cpu, gpu) -> dict:
    """Agreement of a CUDA sweep with the CPU sweep of the same inputs."""
    import torch

    same = float((gpu.codes.cpu() == cpu.codes).double().mean())
    params_identical = bool(torch.equal(gpu.params.cpu(), cpu.params))
    e_cpu, e_gpu = float(cpu.err), float(gpu.err)
    return {"codes_equal_fraction": same, "params_identical": params_identical,
            "codes_identical": same == 1.0 and params_identical,
            "err_rel_diff": abs(e_gpu - e_cpu) / abs(e_cpu) if e_cpu else None}


def run(args) -> dict:
    import torch

    from tarq import _C
    from tarq.ggml import get_type, make_lattice
    from tarq.kernels import native, set_num_threads

    set_num_threads(args.threads)
    meta = RunMeta.start("gptq_cuda")
    rows = []
    factors: dict[int, torch.Tensor] = {}
    for model in args.models:
        d, ff = MODELS[model]
        for m, n in ((d, d), (ff, d), (d, ff)):
            if n not in factors:
                factors[n] = native.cholesky_inverse_upper(test_hessian(n, seed=n)).U
            U = factors[n]
            W = torch.randn(m, n, generator=torch.Generator().manual_seed(m + n)) * 0.05
            Wg, Ug = W.cuda(), U.cuda()
            for name in args.types:
                if not get_type(name).fits(n):
                    continue
                lat = make_lattice(name)
                cpu = native.gptq_sweep(W, U, lat)
                gpu = native.gptq_sweep(Wg, Ug, lat)           # also the warm-up (kernel load, first launch)
                torch.cuda.synchronize()
                row = {"model": model, "out": m, "in": n, "type": name, "group": lat.group, **compare(cpu, gpu),
                       "cpu_s": timed(lambda: native.gptq_sweep(W, U, lat), args.reps),
                       # copying the codes back waits for the kernels: the time is the GPU's whole sweep
                       "gpu_s": timed(lambda: native.gptq_sweep(Wg, Ug, lat).codes.cpu(), args.reps)}
                row["speedup"] = row["cpu_s"] / row["gpu_s"]
                rows.append(row)
                print(f"{model} [{m}x{n}] {name}: CPU {row['cpu_s']:.3f} s, GPU {row['gpu_s']:.3f} s "
                      f"(x{row['speedup']:.1f}), codes equal {row['codes_equal_fraction']:.6f}, params "
                      f"{'identical' if row['params_identical'] else 'differ'}", flush=True)
    return {"meta": meta.finish(),
            "config": {"models": args.models, "types": args.types, "threads": args.threads, "reps": args.reps,
                       "block_size": 128, "statistic": "median", "native_isa": _C.isa(),
                       "native_blas": _C.blas() if hasattr(_C, "blas") else "built-in"},
            "rows": rows}


def render_markdown(result: dict) -> str:
    if result.get("skipped"):
        return f"_{result['skipped']}_"
    rows = [[r["model"], f"{r['out']}×{r['in']}", r["type"], fmt_num(r["cpu_s"], 3), fmt_num(r["gpu_s"], 4),
             f"{r['speedup']:.1f}×", f"{r['codes_equal_fraction']:.6f}", "yes" if r["params_identical"] else "no",
             f"{r['err_rel_diff']:.1e}" if r["err_rel_diff"] is not None else "–"] for r in result["rows"]]
    m, cfg = result["meta"], result["config"]
    gpu = (m["machine"].get("gpu") or {}).get("name", "?")
    return (markdown_table(["model", "shape [out × in]", "type", "CPU s", "GPU s", "GPU speedup", "codes equal",
                            "params identical", "Σe² rel. diff"], rows, "lllrrrrlr") +
            f"\n\nGPU {gpu}; CPU {m['machine']['cpu']} ({m['machine']['cpu_count']} logical CPUs), tarq._C "
            f"{cfg['native_isa']} with {cfg['native_blas']} at {cfg['threads']} threads; median of {cfg['reps']} "
            f"runs; load average {m['loadavg_start']} → {m['loadavg_end']}.")


def plot(result: dict, path: Path) -> Path | None:
    if result.get("skipped"):
        return None
    plt = pyplot()
    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(rows)), 4))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["cpu_s"] for r in rows], width=0.4, label="native CPU")
    ax.bar([i + 0.2 for i in x], [r["gpu_s"] for r in rows], width=0.4, label="CUDA")
    ax.set_yscale("log")
    ax.set_xticks(list(x))
    ax.set_xticklabels([f"{r['model']}\n{r['out']}x{r['in']}\n{r['type']}" for r in rows], fontsize=6)
    ax.set_ylabel("GPTQ sweep time (s, median)")
    gpu = (result["meta"]["machine"].get("gpu") or {}).get("name", "?")
    ax.set_title(f"GPTQ sweep, CUDA ({gpu}) vs CPU ({result['config']['threads']} threads)", fontsize=8)
    ax.legend(fontsize=8)
    return save_plot(fig, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"sizes among {', '.join(MODELS)}")
    p.add_argument("--types", default="q4_0,q4_k,iq4_nl",
                   help="ggml types (those whose blocks do not tile a width are skipped)")
    p.add_argument("--threads", type=int, default=2, help="threads of the CPU sweep")
    p.add_argument("--reps", type=int, default=3, help="timed runs per row (median)")
    p.add_argument("--out", type=Path, default=OUT)
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.types = [t for t in args.types.split(",") if t]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        raise SystemExit(f"--models: unknown size(s) {', '.join(bad)}; choose from {', '.join(MODELS)}")
    ensure_tarq_importable()
    from tarq.ggml import QUANT_TYPES
    bad = [t for t in args.types if t not in QUANT_TYPES]
    if bad:
        raise SystemExit(f"--types: unknown type(s) {', '.join(bad)}; choose from {', '.join(QUANT_TYPES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not cuda_available():
        save_and_report(args.out, skipped_no_cuda("gptq_cuda"), plot, render_markdown)
        return 0
    from tarq import _C
    if not getattr(_C, "has_cuda", False):
        save_and_report(args.out, skipped_no_cuda("gptq_cuda", "skipped: tarq._C was built without nvcc"), plot,
                        render_markdown)
        return 0
    save_and_report(args.out, run(args), plot, render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
