"""Accuracy of quantized Whisper in whisper.cpp, as paired damage against F16: a ``tarq grid`` spec + rendering.

The benchmark is a grid (``tarq.grid``): models x methods x types x the five development sets, every system
quantized (``tarq quantize``), exported (``tarq export``) and decoded in whisper.cpp as Ray tasks, and scored as
damage against F16 decoded in the same runtime with the same decoding policy: words lost and gained, extra
insertions, loops / truncations / empty outputs, paired bootstrap CIs, and the comparisons against GPTQ and
whisper.cpp's own RTN (``ggml``: ``tarq export --rtn``, bit-exact ``quantize``) with the smallest difference each
set can resolve. WER / rare-WER are reported beside the damage.

    python benchmarks/bench_accuracy.py                       # fast look: seeded 60-utterance subsets, tiny.en
    python benchmarks/bench_accuracy.py --full --models tiny.en,base --n-calib 128 \\
        --out benchmarks/results/bench_accuracy_full.json     # published numbers: every utterance of every set

The grid's folder (``--grid-dir``, default ``benchmarks/.cache/grid-<name>``) keeps every artifact and cell, so a
rerun with nothing changed decodes nothing (it only re-reads the cells and re-renders), an interrupted run
resumes, and adding a set, a method or a model runs only the new cells. Decoded texts also go to the decode cache
(``$TARQ_CACHE_DIR``), shared with ``tarq eval``. Evaluation sets are never used for calibration
(``austen-tts-calib`` is).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (BENCH_DIR, RunMeta, add_common_args, ensure_tarq_importable, read_json,  # noqa: E402
                     resolve_data_root, write_json)
from _redact import redact  # noqa: E402

METHODS = ("ggml", "gptq", "rarebal", "tarq", "qep")
BASELINES = ("gptq", "ggml")          # every method is compared with these
EVAL_SETS = ("austen-tts-dev", "austen-tts-dev-noisy", "asterisk-prompts", "foldoc-tts-dev", "uqm-voice-dev")
CALIB_SET = "austen-tts-calib"
DEFAULT_LIMIT = 60


def build_spec(args, check_data: bool = True):
    """The benchmark as a grid spec (tarq.grid.GridSpec)."""
    ensure_tarq_importable()
    from tarq.grid.spec import DataSpec, GridSpec, MethodSpec

    from _common import DEFAULT_DATA_ROOT

    root = resolve_data_root(args.data_root) if check_data else Path(args.data_root or DEFAULT_DATA_ROOT)
    limit = None if args.full else args.limit
    data = [DataSpec(str(root / s), s, limit, args.seed) for s in args.eval_sets]
    return GridSpec(models=args.models, methods=[MethodSpec(m, m) for m in args.methods], types=args.types,
                    data=data, seeds=args.seeds, calib=str(root / CALIB_SET), n_calib=args.n_calib,
                    runtimes=["whisper.cpp"], policies=args.policies,
                    baselines=[b for b in BASELINES if b in args.methods], threads=args.threads,
                    decode_threads=args.decode_threads, shard_size=args.shard_size, bootstrap=args.n_boot,
                    name=args.name or ("accuracy-full" if args.full else "accuracy-subset"))


def run(args) -> dict:
    from tarq.grid import run_grid

    spec = build_spec(args)
    meta = RunMeta.start("accuracy")
    grid_dir = args.grid_dir or BENCH_DIR / ".cache" / f"grid-{spec.name}"
    summary = run_grid(spec, grid_dir, address=args.address, executor=args.executor, rebuild=args.rebuild,
                       use_cache=not args.no_cache, cache_dir=args.cache_dir, num_cpus=args.num_cpus,
                       say=lambda m: print(m, flush=True))
    doc = read_json(Path(summary["results"]))
    doc["meta"] = meta.finish()
    doc["grid"] = {k: v for k, v in summary.items() if k != "results"} | {"dir": str(grid_dir)}
    return doc


# ----------------------------------------------------------------------------------------------- reporting

def render_markdown(result: dict) -> str:
    """Tables of a result file: the grid's (tarq.grid.render), or the older layout's (_accuracy_legacy)."""
    if result.get("format") != "tarq-grid-results":
        import _accuracy_legacy

        return _accuracy_legacy.render_markdown(result)
    ensure_tarq_importable()
    from tarq.grid.render import render_markdown as grid_markdown

    body = grid_markdown(result)
    m, g = result.get("meta") or {}, result.get("grid") or {}
    run_line = (f"Run: {g.get('ran', '?')} cells computed, {g.get('done_before', '?')} taken from earlier runs; "
                f"load average {m.get('loadavg_start')} → {m.get('loadavg_end')}; {m.get('wall_s', 0):.0f} s total.")
    return body + "\n\n" + run_line


def plot(result: dict, path: Path) -> Path:
    if result.get("format") != "tarq-grid-results":
        import _accuracy_legacy

        return _accuracy_legacy.plot(result, path)
    ensure_tarq_importable()
    from tarq.grid.render import plot as grid_plot

    return grid_plot(result, path)


# ----------------------------------------------------------------------------------------------- CLI

def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, "bench_accuracy.json")
    p.add_argument("--models", default="tiny.en", help="comma-separated model aliases (default tiny.en)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated: ggml (whisper.cpp's quantize) and registry methods (default "
                        f"{','.join(METHODS)}); F16 is always there as the reference")
    p.add_argument("--types", default="q4_0", help="comma-separated ggml types (default q4_0)")
    p.add_argument("--data-root", help="folder with the shared speech sets (default ../shared/data)")
    p.add_argument("--eval-sets", default=",".join(EVAL_SETS), help="evaluation set folder names (default: all five)")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                   help=f"seeded subset of N utterances per set for a fast look (default {DEFAULT_LIMIT}; labelled "
                        "as a subset in every output); --full for published numbers")
    p.add_argument("--full", action="store_true", help="every utterance of every set (published numbers)")
    p.add_argument("--n-calib", type=int, default=32,
                   help="calibration utterances from austen-tts-calib (default 32; 128 = the paper's budget)")
    p.add_argument("--seeds", default="0", help="calibration seeds (comma-separated; default 0)")
    p.add_argument("--seed", type=int, default=0, help="subset seed")
    p.add_argument("--policies", default="greedy",
                   help="whisper.cpp decoding policies, comma-separated (default greedy; 'default' = whisper-cli's "
                        "beam search + temperature fallback, where the backend implements it)")
    p.add_argument("--threads", type=int, default=2, help="quantize threads (CPUs per quantize task)")
    p.add_argument("--decode-threads", type=int, default=1,
                   help="threads per decode task; Ray runs as many decode tasks as CPUs allow (default 1)")
    p.add_argument("--shard-size", type=int, default=64, help="utterances per decode task (default 64)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--name", help="grid name (default accuracy-subset / accuracy-full)")
    p.add_argument("--grid-dir", type=Path, help="grid folder (default benchmarks/.cache/grid-NAME)")
    p.add_argument("--address", help="Ray cluster to join (default: local Ray)")
    p.add_argument("--executor", choices=("ray", "serial"), default="ray")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--rebuild", action="store_true", help="recompute every cell (artifacts and decodes are reused)")
    p.add_argument("--no-cache", action="store_true", help="do not use the decode cache")
    p.add_argument("--cache-dir", help="decode cache root (default $TARQ_CACHE_DIR or ~/.cache/tarq)")
    p.add_argument("--rescore", action="store_true",
                   help="do not run anything: re-render the tables and plot of --out (older files: re-score them)")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    args.models, args.methods, args.types = _csv(args.models), _csv(args.methods), _csv(args.types)
    args.eval_sets, args.policies = _csv(args.eval_sets), _csv(args.policies)
    args.methods = [m for m in args.methods if m not in ("fp16", "f16")]   # the reference is always there
    try:
        args.seeds = [int(s) for s in _csv(args.seeds)]
    except ValueError:
        raise SystemExit(f"--seeds: integers, got {args.seeds!r}") from None
    ensure_tarq_importable()
    from tarq.methods import available_methods

    bad = [m for m in args.methods if m != "ggml" and m not in available_methods()]
    if bad:
        raise SystemExit(f"unknown method(s) {bad}; choose from ggml,{','.join(available_methods())}")
    return args


def main(argv=None) -> int:
    from _common import save_and_report

    args = parse_args(argv)
    if args.dry_run:
        spec = build_spec(args, check_data=False)
        print(f"accuracy grid {spec.name}: models {spec.models}, methods {[m.label for m in spec.methods]} + F16, "
              f"types {spec.types}, sets {[d.name for d in spec.data]}, "
              f"{'all' if args.full else args.limit} utts/set, policies {spec.policies}, calib {CALIB_SET} x "
              f"{args.n_calib} -> {args.out}")
        return 0
    if args.rescore:
        ensure_tarq_importable()
        result = read_json(args.out)
        if result.get("format") != "tarq-grid-results":
            if result.get("redacted"):
                raise SystemExit(f"{args.out}: cannot re-score, the transcripts of {', '.join(result['redacted'])} "
                                 "were removed from this file (benchmarks/_redact.py); re-run the benchmark")
            import _accuracy_legacy

            result = _accuracy_legacy.rescore(result, args.n_boot, args.seed)
        save_and_report(args.out, result, plot, render_markdown)
        return 0
    result = run(args)
    write_json(args.out, redact(result))           # no evaluation-only transcripts in a committed result
    save_and_report(args.out, None, plot, render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
