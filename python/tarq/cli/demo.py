"""``tarq demo``: the main job on the bundled default data, end to end.

quantize tiny.en with the default method and options (Q4_0; cli/_choices) -> export the solver's codes to
whisper.cpp's .bin -> transcribe in whisper.cpp -> WER / rare-WER next to whisper.cpp F16 and whisper.cpp's own Q4_0
(RTN) on the same audio.
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
    from ._choices import DEFAULT_FORMAT, DEFAULT_METHOD, methods

    p = subparsers.add_parser(
        "demo", help="quantize tiny.en, export to whisper.cpp, transcribe, print WER / rare-WER",
        description="End-to-end demo on the bundled data (python/tarq/demo_data, see its NOTICE.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="tiny.en", help="model spec")
    p.add_argument("--method", default=None, choices=methods(),
                   help=f"quantization method (default: tarq quantize's for --format, with its default options; "
                        f"{DEFAULT_METHOD} for {DEFAULT_FORMAT})")
    p.add_argument("--format", default=DEFAULT_FORMAT, help="ggml type of tarq's file")
    p.add_argument("--baseline-format", default="q4_0",
                   help="ggml type of the uncalibrated (RTN) baseline; q4_0 is what whisper.cpp's own quantize writes "
                        "at IQ4_NL's size")
    p.add_argument("--calib", type=Path, default=None, help="calibration data (default: bundled)")
    p.add_argument("--data", type=Path, default=None, help="evaluation data (default: bundled)")
    p.add_argument("--out", type=Path, default=Path("tarq-demo"), help="working directory")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-baselines", action="store_true", help="skip the F16 and whisper.cpp-RTN comparisons")
    p.add_argument("--force", action="store_true", help="recompute even if outputs exist")
    p.set_defaults(func=run)


def _step(title: str, detail: str = "") -> None:
    """A rule with a short title (a rule cuts long titles with "..."), the details wrapped below it."""
    from rich.console import Console
    console = Console(stderr=True)
    console.rule(f"[bold]{title}")
    if detail:
        console.print(detail, overflow="fold", markup=False)


def run(args) -> int:
    from rich.console import Console

    from ..eval import load_result
    from .main import main as tarq

    os.environ.setdefault("GGML_NO_BACKTRACE", "1")
    if not getattr(args, "verbose", False):   # the runtime's per-utterance log lines would bury the tables
        import logging
        logging.getLogger("pywhispercpp").setLevel(logging.WARNING)
    data_dir = bundled_data_dir()
    calib = args.calib or data_dir / "calib"
    data = args.data or data_dir / "eval"
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    fmt = args.format
    method_flag = ["--method", args.method] if args.method is not None else []   # else quantize's default recipe
    if args.method is None:
        from ._choices import default_method

        args.method = default_method(fmt)
    t0 = time.perf_counter()

    def call(*argv: str) -> None:
        rc = tarq([str(a) for a in argv])
        if rc:
            raise RuntimeError(f"`tarq {' '.join(map(str, argv))}` failed with exit code {rc}")

    qdir = out / f"{args.model}-{args.method}-{fmt}"
    if args.force or not qdir.exists():
        _step(f"1. quantize {args.model} with {args.method} onto {fmt}", f"calibration data: {calib}")
        call("quantize", args.model, *method_flag, "--format", fmt, "--calib", calib, "--out", qdir,
             "--threads", args.threads)

    systems: list[tuple[str, Path]] = []
    ours = out / f"{args.model}-{args.method}-{fmt}.bin"
    if args.force or not ours.exists():
        _step("2. export the codes verbatim to whisper.cpp", f"writing {ours}")
        call("export", qdir, "--to", "whisper.cpp", "--out", ours)
    if not args.no_baselines:
        f16 = out / f"{args.model}-f16.bin"
        rtn = out / f"{args.model}-rtn-{args.baseline_format}.bin"
        if args.force or not f16.exists():
            call("export", args.model, "--f16", "--out", f16)
        if args.force or not rtn.exists():   # ggml's own quantizer: whisper.cpp's quantize writes these bytes
            call("export", args.model, "--rtn", args.baseline_format, "--out", rtn)
        systems += [("F16", f16), (f"RTN {args.baseline_format} (ggml)", rtn)]
    systems.append((f"{args.method.upper()} {fmt} (tarq)", ours))

    _step("3. transcribe in whisper.cpp and score",
          f"data: {data}; quantized systems are scored as damage against F16" if not args.no_baselines
          else f"data: {data}")
    results = {}
    reference = None
    for label, path in systems:
        js = out / f"{path.stem}.eval.json"
        call("eval", path, "--backend", "whisper.cpp", "--data", data, "--json", js, "--label", label,
             "--threads", args.threads, "--no-progress", "--quiet",
             *(["--reference", reference] if reference is not None else []))
        results[label] = load_result(js)
        if reference is None and not args.no_baselines:
            reference = js          # the first system is F16: every other one is scored against it

    console = Console()
    console.print(summary_table(args.model, data.name, systems, results))
    if not args.no_baselines:
        from ..eval.damage import compare_damage
        from ..eval.report import comparison_table

        ours_label, rtn_label = systems[-1][0], systems[1][0]
        rows = compare_damage(results[ours_label], results[rtn_label], results[systems[0][0]])
        console.print(comparison_table(ours_label, rtn_label, [], rows, policy=results[ours_label].policy))
        console.print("(a small bundled set: differences under the 'res.' column cannot be resolved)")
    console.print(f"done in {time.perf_counter() - t0:.0f} s; files in {out}/")
    return 0


def summary_table(model: str, data_name: str, systems, results):
    """One row per system, damage against F16 first; fits 80 columns."""
    from ..eval.report import _ci, _pct, _spct, _table

    first = results[systems[0][0]]
    t = _table(f"{model} on {data_name} in whisper.cpp (policy {first.policy}); damage = words lost against F16 "
               "net of words gained, % of reference words", ["system", "MB", "damage\n%", "95 % CI", "rare\ndmg %",
                                                             "WER %", "rare-\nWER %"])
    for label, path in systems:
        r = results[label]
        s = r.datasets[0].scores
        per, _ = r.damage_blocks()
        dmg = per.get(r.datasets[0].name, {}).get("damage")
        t.add_row(label, f"{path.stat().st_size / 1e6:.1f}", _spct(dmg["net_rate"]) if dmg else "-",
                  _ci(dmg["net_rate_ci"]) if dmg else "-", _spct(dmg["net_rare_rate"]) if dmg else "-",
                  _pct(s.wer), _pct(s.rare_wer))
    return t
