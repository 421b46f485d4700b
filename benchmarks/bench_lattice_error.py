"""Reconstruction error per ggml type under the calibration metric: RTN (whisper.cpp's quantize) vs imatrix RTN
(ggml's importance-weighted quantizer with per-column mean x^2) vs the solver (GPTQ by default), layer by layer.

For every model x type x method x lattice fit, one calibration run (in process; samples prepared once per model)
yields, for every Linear layer, rel_err = tr(dW H dW^T) / tr(W H W^T) of the three quantizations (the pipeline's
report fields rel_err_rtn, rel_err_imatrix, rel_err). The table gives the share of Linear layers (the tied token
embedding is reported apart) where method < imatrix-RTN <= RTN (equality: Q8_0, whose ggml quantizer ignores
importance), the shares of each strict comparison, and the median errors.

    python benchmarks/bench_lattice_error.py                                   # base: every type; tiny.en: non-K
    python benchmarks/bench_lattice_error.py --models tiny.en --n-calib 8 --out /tmp/le.json   # quick look
    python benchmarks/bench_lattice_error.py --fits plain,weighted --types q4_0,q4_k    # the lattice-fit choice
    python benchmarks/bench_lattice_error.py --fits plain,plain+refit,weighted+refit --types q4_0   # the refit
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (RunMeta, add_common_args, ensure_tarq_importable, fmt_num, markdown_table, median,  # noqa: E402
                     pyplot, resolve_data_root, save_and_report, save_plot, write_json)

CALIB_SET = "austen-tts-calib"
EMBEDDING = "model.decoder.embed_tokens.weight"


def summarize(layers: dict[str, dict]) -> dict:
    """Shares and medians over the Linear layers (the token embedding apart)."""
    lin = {k: v for k, v in layers.items() if k != EMBEDDING}
    n = len(lin)

    def share(pred) -> float:
        return sum(1 for v in lin.values() if pred(v)) / n if n else float("nan")

    # "<=" between imatrix and RTN: for Q8_0 ggml ignores importance weights, so imatrix RTN == RTN there
    out = {"n_linear": n,
           "method_lt_imatrix_lt_rtn": share(lambda v: v["rel_err"] < v["rel_err_imatrix"] <= v["rel_err_rtn"]),
           "method_lt_imatrix": share(lambda v: v["rel_err"] < v["rel_err_imatrix"]),
           "imatrix_lt_rtn": share(lambda v: v["rel_err_imatrix"] < v["rel_err_rtn"]),
           "method_lt_rtn": share(lambda v: v["rel_err"] < v["rel_err_rtn"])}
    for key in ("rel_err_rtn", "rel_err_imatrix", "rel_err"):
        out[f"median_{key}"] = median([v[key] for v in lin.values()])
    emb = layers.get(EMBEDDING)
    if emb:
        out["embedding"] = {k: emb[k] for k in ("rel_err_rtn", "rel_err_imatrix", "rel_err")}
    return out


def plan_for(qtype: str, fit: str):
    """A fit spec is a --lattice-fit value, optionally with "+refit" (--lattice-refit least-squares)."""
    from tarq.ggml import TypePlan

    base, plus, suffix = fit.partition("+")
    if plus and suffix != "refit":
        raise ValueError(f"fit {fit!r}: expected FIT or FIT+refit")
    return TypePlan(qtype, fit=base, refit="least-squares" if plus else "none")


def run(args) -> dict:
    ensure_tarq_importable()
    import torch

    from tarq._threads import set_threads
    from tarq.calib.driver import prepare_samples
    from tarq.calib.pipeline import CalibConfig, run_calibration, select_subset
    from tarq.data import load_dataset
    from tarq.ggml import QUANT_TYPES, TypePlan
    from tarq.methods import get_method
    from tarq.models import load_model
    from tarq.models.adapter import get_adapter

    meta = RunMeta.start("lattice_error")
    calib = resolve_data_root(args.data_root) / CALIB_SET
    utterances = load_dataset(calib)
    runs = []
    set_threads(args.threads)
    for spec in args.models:
        loaded = load_model(spec)
        adapter = get_adapter(loaded.family)
        cfg = CalibConfig(n_calib=args.n_calib, seed=args.seed, threads=args.threads, progress=False)
        samples, info = prepare_samples(loaded, adapter, select_subset(utterances, cfg.n_calib, cfg.seed), cfg)
        width = {p.shape[-1] for n, p in loaded.model.named_parameters() if n.endswith("weight") and p.dim() == 2}
        types = [t for t in (args.types or list(QUANT_TYPES)) if all(QUANT_TYPES[t].fits(w) for w in width)]
        for qtype in types:
            for method in args.methods:
                for fit in args.fits:
                    torch.manual_seed(args.seed)
                    res = run_calibration(loaded.model, adapter, samples, get_method(method),
                                          plan_for(qtype, fit), cfg)
                    layers = {k: {f: v[f] for f in ("rel_err_rtn", "rel_err_imatrix", "rel_err", "shape")}
                              for k, v in res.layers.items()}
                    row = {"model": spec, "type": qtype, "method": method, "fit": fit,
                           "n_calib": info["n_utterances"], "solve_s": round(res.timing.get("solve", 0.0), 2),
                           "summary": summarize(layers), "layers": layers}
                    runs.append(row)
                    s = row["summary"]
                    print(f"{spec} {qtype} {method} ({fit}): {method} < imatrix <= RTN on "
                          f"{100 * s['method_lt_imatrix_lt_rtn']:.1f} % of {s['n_linear']} Linear layers; median "
                          f"rel err RTN {s['median_rel_err_rtn']:.4g}, imatrix {s['median_rel_err_imatrix']:.4g}, "
                          f"{method} {s['median_rel_err']:.4g}", flush=True)
                    write_json(args.out, {**document(meta, args, runs), "partial": True})
    return document(meta, args, runs)


def document(meta: RunMeta, args, runs: list[dict]) -> dict:
    return {"meta": meta.finish(),
            "config": {"models": args.models, "types": args.types or "all that fit", "methods": args.methods,
                       "fits": args.fits, "n_calib": args.n_calib, "seed": args.seed, "threads": args.threads,
                       "calib": CALIB_SET, "metric": "rel_err = tr(dW H dW^T) / tr(W H W^T), H = calibration "
                                                     "second moment of the layer's inputs (quantized stream)"},
            "runs": runs}


def render_markdown(result: dict) -> str:
    rows = []
    for r in result["runs"]:
        s = r["summary"]
        rows.append([r["model"], r["type"], r["method"], r["fit"], s["n_linear"],
                     fmt_num(s["method_lt_imatrix_lt_rtn"], 1, pct=True),
                     fmt_num(s["method_lt_imatrix"], 1, pct=True), fmt_num(s["imatrix_lt_rtn"], 1, pct=True), f"{s['median_rel_err_rtn']:.3g}",
                     f"{s['median_rel_err_imatrix']:.3g}", f"{s['median_rel_err']:.3g}"])
    cfg, m = result["config"], result["meta"]
    return (("**Partial run** (interrupted; finished rows only).\n\n" if result.get("partial") else "") +
            markdown_table(["model", "type", "method", "fit", "Linear layers", "% method < imatrix ≤ RTN",
                            "% method < imatrix", "% imatrix < RTN", "median RTN", "median imatrix",
                            "median method"],
                           rows, "llllrrrrrrr") +
            f"\n\nRelative H-weighted error per Linear layer (token embedding excluded), calibration on "
            f"{cfg['n_calib']} utterances of {cfg['calib']} (seed {cfg['seed']}); {cfg['threads']} threads; "
            f"machine {m['machine']['cpu']}, load average {m['loadavg_start']} → {m['loadavg_end']}.")


def plot(result: dict, path: Path) -> Path:
    plt = pyplot()
    runs = result["runs"]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(runs) + 2), 4))
    x = list(range(len(runs)))
    for off, key, label in ((-0.27, "median_rel_err_rtn", "RTN"), (0.0, "median_rel_err_imatrix", "imatrix RTN"),
                            (0.27, "median_rel_err", "method")):
        ax.bar([i + off for i in x], [r["summary"][key] for r in runs], width=0.27, label=label)
    ax.set_xticks(x, [f"{r['model']}\n{r['type']}\n{r['method']} {r['fit']}" for r in runs], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("median relative H-weighted error")
    ax.legend()
    fig.tight_layout()
    return save_plot(fig, path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, "bench_lattice_error.json")
    p.add_argument("--models", default="tiny.en,base")
    p.add_argument("--types", default="", help="comma-separated ggml types (default: every type that fits the model)")
    p.add_argument("--methods", default="gptq")
    p.add_argument("--fits", default="plain",
                   help="lattice fits to compare, comma-separated: plain, weighted, auto (the --lattice-fit default), "
                        "each optionally with +refit (--lattice-refit least-squares), e.g. plain,plain+refit")
    p.add_argument("--n-calib", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", help="folder with the shared speech sets (default ../shared/data)")
    args = p.parse_args(argv)
    for name in ("models", "types", "methods", "fits"):
        setattr(args, name, [v for v in getattr(args, name).split(",") if v])
    ensure_tarq_importable()
    for fit in args.fits:            # before any model loads: a bad spec is a one-line error, not a late traceback
        try:
            plan_for("q8_0", fit)
        except ValueError as e:
            p.error(f"--fits: {e}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        print(f"would calibrate {args.models} x types {args.types or 'all that fit'} x {args.methods} x fits "
              f"{args.fits} on {args.n_calib} utterances of {CALIB_SET}; results -> {args.out}")
        return 0
    save_and_report(args.out, run(args), plot, render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
