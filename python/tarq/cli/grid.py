"""``tarq grid [SPEC] [flags]``: run an experiment grid (quantize -> export -> decode -> score) on Ray, skipping
cells whose results exist, and write one results table (docs/evaluation.md, "The grid")."""
from __future__ import annotations

from pathlib import Path


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "grid", help="run a models x methods x types x data x seeds grid on Ray; one results table",
        description="Run an experiment grid from a spec file (TOML/JSON) and/or flags (flags override the file). "
                    "Cells whose result files exist under --out are skipped, so a killed grid resumes and a larger "
                    "grid only runs what is new. Every quantized system is scored as damage against F16 in the "
                    "same runtime and decoding policy.")
    p.add_argument("spec", nargs="?", type=Path, help="grid spec (.toml or .json); optional when flags say it all")
    p.add_argument("--out", type=Path, required=True, help="grid folder (artifacts, cells, results.json/.md/.png)")
    p.add_argument("--models", help="comma-separated model specs (tiny.en,base)")
    p.add_argument("--methods", help="comma-separated registry method names, or ggml (whisper.cpp's quantize)")
    p.add_argument("--types", help="comma-separated ggml types (q4_0,q8_0)")
    p.add_argument("--data", action="append", metavar="PATH[:LIMIT]",
                   help="data set, optionally a seeded subset of LIMIT utterances; repeatable (replaces the spec's)")
    p.add_argument("--seeds", help="comma-separated calibration seeds (default 0)")
    p.add_argument("--calib", help="calibration data for the calibrated methods")
    p.add_argument("--n-calib", type=int, help="calibration utterances (seeded subset)")
    p.add_argument("--runtimes", help="comma-separated: whisper.cpp, crispasr, torch (default whisper.cpp)")
    p.add_argument("--policies", help="comma-separated decoding policies (default greedy)")
    p.add_argument("--baselines", help="comma-separated method labels every system is compared with")
    p.add_argument("--threads", type=int, help="quantize threads = CPUs per quantize task (default 2)")
    p.add_argument("--decode-threads", type=int, help="threads = CPUs per decode task (default 1)")
    p.add_argument("--shard-size", type=int, help="utterances per decode task (default 64)")
    p.add_argument("--quantize-gpus", type=float, help="GPUs per quantize task (> 0 quantizes with --device cuda)")
    p.add_argument("--bootstrap", type=int, help="bootstrap resamples (default 1000)")
    p.add_argument("--name", help="grid name in logs")
    p.add_argument("--address", help="join this Ray cluster (default: start Ray on this machine)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--executor", choices=("ray", "serial"), default="ray",
                   help="ray (default) or serial: the same tasks inline, without Ray")
    p.add_argument("--rebuild", action="store_true", help="run every cell again (artifacts and the decode cache "
                                                          "are still reused; delete them to redo those)")
    p.add_argument("--no-cache", action="store_true", help="decode everything; do not use the decode cache")
    p.add_argument("--cache-dir", help="decode cache root (default $TARQ_CACHE_DIR, else ~/.cache/tarq)")
    p.add_argument("--dry-run", action="store_true", help="list the cells that would run, run nothing")
    p.set_defaults(func=run)


def build_spec(args):
    from tarq.grid.spec import GridSpec, canonical_path, load_spec, parse_data, parse_method, with_overrides

    spec = load_spec(args.spec) if args.spec else GridSpec(models=[], methods=[], types=[], data=[])
    seeds = _csv(args.seeds)
    return with_overrides(
        spec, models=_csv(args.models), types=_csv(args.types),
        methods=None if args.methods is None else [parse_method(m) for m in _csv(args.methods)],
        data=None if not args.data else [parse_data(d) for d in args.data],
        seeds=None if seeds is None else [int(s) for s in seeds],
        calib=canonical_path(args.calib) if args.calib else None, n_calib=args.n_calib,
        runtimes=_csv(args.runtimes), policies=_csv(args.policies), baselines=_csv(args.baselines),
        threads=args.threads, decode_threads=args.decode_threads, shard_size=args.shard_size,
        quantize_gpus=args.quantize_gpus, bootstrap=args.bootstrap, name=args.name)


def run(args) -> int:
    import logging

    from tarq.grid import run_grid

    if not args.verbose:    # per-utterance runtime log lines would bury the grid's progress lines
        logging.getLogger("pywhispercpp").setLevel(logging.WARNING)

    spec = build_spec(args)
    summary = run_grid(spec, args.out, address=args.address, executor=args.executor, rebuild=args.rebuild,
                       use_cache=not args.no_cache, cache_dir=args.cache_dir, verbose=args.verbose,
                       dry_run=args.dry_run, num_cpus=args.num_cpus, say=lambda m: print(m, flush=True))
    return 1 if summary["failed"] else 0
