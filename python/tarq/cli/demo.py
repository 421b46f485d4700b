"""``tarq demo``: the main job on the bundled default data, end to end.

quantize tiny.en with TARQ (Q4_0) -> export the solver's codes to whisper.cpp's .bin -> transcribe in whisper.cpp
-> WER / rare-WER next to whisper.cpp F16 and whisper.cpp's own Q4_0 (RTN) on the same audio.
Every step is the public CLI subcommand, so the demo exercises exactly what users run.
"""
from __future__ import annotations

import argparse
import os
import time
from importlib import resources
from pathlib import Path


def bundled_data_dir() -> Path:
    return Path(str(resources.files("tarq") / "demo_data"))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="quantize tiny.en, export to whisper.cpp, transcribe, print WER / rare-WER",
        description="End-to-end demo on the bundled data (python/tarq/demo_data, see its NOTICE.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="tiny.en", help="model spec")
    p.add_argument("--method", default="tarq", help="quantization method")
    p.add_argument("--format", default="q4_0", help="export lattice")
    p.add_argument("--calib", type=Path, default=None, help="calibration data (default: bundled)")
    p.add_argument("--data", type=Path, default=None, help="evaluation data (default: bundled)")
    p.add_argument("--out", type=Path, default=Path("tarq-demo"), help="working directory")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-baselines", action="store_true", help="skip the F16 and whisper.cpp-RTN comparisons")
    p.add_argument("--force", action="store_true", help="recompute even if outputs exist")
    p.set_defaults(func=run)


def _step(title: str) -> None:
    from rich.console import Console
    Console(stderr=True).rule(f"[bold]{title}")


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..eval import load_result, paired_bootstrap, paired_counts
    from .main import main as tarq

    os.environ.setdefault("GGML_NO_BACKTRACE", "1")
    data_dir = bundled_data_dir()
    calib = args.calib or data_dir / "calib"
    data = args.data or data_dir / "eval"
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    fmt = args.format
    t0 = time.perf_counter()

    def call(*argv: str) -> None:
        rc = tarq([str(a) for a in argv])
        if rc:
            raise RuntimeError(f"`tarq {' '.join(map(str, argv))}` failed with exit code {rc}")

    qdir = out / f"{args.model}-{args.method}-{fmt}"
    if args.force or not qdir.exists():
        _step(f"1. quantize {args.model} with {args.method} onto {fmt} (calibration: {calib})")
        call("quantize", args.model, "--method", args.method, "--format", fmt, "--calib", calib, "--out", qdir,
             "--threads", args.threads)

    systems: list[tuple[str, Path]] = []
    ours = out / f"{args.model}-{args.method}-{fmt}.bin"
    if args.force or not ours.exists():
        _step(f"2. export the solver's codes verbatim to whisper.cpp ({ours.name})")
        call("export", qdir, "--to", "whisper.cpp", "--out", ours)
    if not args.no_baselines:
        f16 = out / f"{args.model}-f16.bin"
        rtn = out / f"{args.model}-whispercpp-rtn-{fmt}.bin"
        if args.force or not f16.exists():
            call("export", args.model, "--f16", "--out", f16)
        if args.force or not rtn.exists():
            call("export", args.model, "--rtn", fmt, "--out", rtn)
        systems += [("whisper.cpp F16", f16), (f"whisper.cpp quantize {fmt} (RTN)", rtn)]
    systems.append((f"tarq {args.method.upper()} {fmt}", ours))

    _step(f"3. transcribe {data} in whisper.cpp and score")
    results = {}
    for label, path in systems:
        js = out / f"{path.stem}.eval.json"
        call("eval", path, "--backend", "whisper.cpp", "--data", data, "--json", js, "--label", label,
             "--threads", args.threads, "--no-progress")
        results[label] = load_result(js)

    table = Table(title=f"{args.model} on {data.name} in whisper.cpp (rare: Zipf < 3)")
    for col in ("system", "file MB", "WER %", "rare-WER %", "common-WER %", "words", "rare words"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for label, path in systems:
        s = results[label].datasets[0].scores
        table.add_row(label, f"{path.stat().st_size / 1e6:.1f}", f"{100 * s.wer:.2f}", f"{100 * s.rare_wer:.2f}",
                      f"{100 * s.common_wer:.2f}", str(s.n_words), str(s.n_rare))
    console = Console()
    console.print(table)
    if not args.no_baselines:
        ours_label, rtn_label = systems[-1][0], systems[1][0]
        names, ca, cb = paired_counts(results[ours_label], results[rtn_label])
        for metric in ("wer", "rare_wer"):
            r = paired_bootstrap(ca, cb, metric=metric)
            verdict = "significant" if r.significant else "within noise on this small set"
            console.print(f"{ours_label} - {rtn_label}, {metric}: {100 * r.diff:+.2f} pts "
                          f"(95% CI [{100 * r.lo:+.2f}, {100 * r.hi:+.2f}], {verdict})")
    console.print(f"done in {time.perf_counter() - t0:.0f} s; files in {out}/")
    return 0
