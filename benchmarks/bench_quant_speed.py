"""Wall time of a full TARQ / GPTQ calibration, split into forward passes, statistics and solves,
with the native solver and the PyTorch reference solver (TARQ_KERNELS=reference) in the same run.

Each calibration is a fresh ``tarq quantize`` process (wall time and peak RSS measured from outside; the split
comes from the run's ``report.json``). Native and reference runs of one configuration are interleaved, and their
integer codes are compared, so the speedup is between runs that produced the same model.

    python benchmarks/bench_quant_speed.py                  # tiny.en x 8 utts, base x 4 utts; reference: tiny GPTQ
    python benchmarks/bench_quant_speed.py --n-calib 128 --reference-models all --reference-methods all
    python benchmarks/bench_quant_speed.py --gpu                  # CUDA variant (skipped without a GPU)
    # GPU against CPU on large-v3's layer shapes (random weights, 4 + 4 layers; no large-v3 weights are installable),
    # calibrating on the demo's bundled utterances; codes compared between the devices:
    python benchmarks/bench_quant_speed.py --devices cpu,cuda --models synthetic:large-v3:4 --methods gptq,tarq \
        --backends native --n-calib 8 --calib python/tarq/demo_data/calib --threads 16
    # issue 13 acceptance (TARQ, 128 utterances, ratios against the committed n128 run):
    python benchmarks/bench_quant_speed.py --n-calib 128 --methods tarq --backends native \
        --baseline benchmarks/results/bench_quant_speed_n128.json --out benchmarks/results/bench_quant_speed_n128_v2.json

Every row also carries the peak RSS per phase and the native ISA / BLAS / thread count from report.json, and, with
--baseline, the ratios statistics / wall / peak RSS against the baseline's row of the same model, method, solver
and calibration size.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic_whisper import SIZES, is_synthetic, parse_spec, write_synthetic_whisper  # noqa: E402
from _common import (save_and_report, RESULTS_DIR, RunMeta, add_common_args, bench_env, check_child, cuda_available,  # noqa: E402
                     ensure_tarq_importable, fmt_num, markdown_table, median, pyplot, read_json, resolve_data_root,
                     run_measured, save_plot, skipped_no_cuda, tarq_cli, write_json)

BACKENDS = {"native": {}, "reference": {"TARQ_KERNELS": "reference"}}
PHASES = ("prepare", "forward", "statistics", "solve")   # prepare: audio, features, tokens, rarity tags
CALIB_SET = "austen-tts-calib"


def phase_split(report: dict) -> dict[str, float | None]:
    """forward / statistics / solve / total seconds from a quantize ``report.json``.

    Reads ``report["timing_s"]`` (written by tarq.calib.driver); phase keys are matched by prefix (``stats``,
    ``statistics_s``, ...), so the split survives small renames; anything else timed (e.g. the per-layer report)
    is summed into ``other``."""
    timing = report.get("timing_s") or report.get("timing") or {}
    out: dict[str, float | None] = {p: None for p in PHASES}
    other = 0.0
    total = None
    for key, val in timing.items():
        if not isinstance(val, (int, float)):
            continue
        k = key.lower()
        if k in ("total", "total_s", "wall", "wall_s"):
            total = float(val)
            continue
        phase = next((p for p in PHASES if k.startswith(p[:4])), None)   # prep / forw / stat / solv
        if phase:
            out[phase] = (out[phase] or 0.0) + float(val)
        else:
            other += float(val)
    out["other"] = other
    out["total"] = total
    return out


def codes_agreement(dir_a: Path, dir_b: Path) -> dict:
    """Fraction of identical integer codes between two quantized dirs (native vs reference solver)."""
    ensure_tarq_importable()
    from tarq.qmodel import load_quantized_dir

    a, b = load_quantized_dir(dir_a), load_quantized_dir(dir_b)
    same = total = 0
    tensors_identical = 0
    for name, qa in a.quantized.items():
        qb = b.quantized.get(name)
        if qb is None:
            continue
        ca, cb = qa.codes(), qb.codes()
        eq = int((ca == cb).sum())
        same += eq
        total += ca.size
        tensors_identical += int(qa.qtype is qb.qtype and bool((qa.data == qb.data).all()))
    return {"codes_equal_fraction": same / total if total else None, "tensors": len(a.quantized),
            "tensors_identical": tensors_identical}


def quantize_once(model: str, method: str, calib: Path, n_calib: int, threads: int, backend: str,
                  out_dir: Path, device: str | None, timeout: float, encoder_frames: str | None = None,
                  fmt: str = "q4_0", python: str | None = None) -> dict:
    """One calibration in a fresh process; ``python``: another interpreter whose ``import tarq`` is the code to
    run (a baseline checkout), else this tree's tarq."""
    args = ("quantize", model, "--method", method, "--format", fmt, "--calib", str(calib),
            "--n-calib", str(n_calib), "--threads", str(threads), "--out", str(out_dir))
    cmd = tarq_cli(*args) if python is None else [python, "-m", "tarq.cli.main", *args]
    if device:
        cmd += ["--device", device]
    if encoder_frames:
        cmd += ["--encoder-frames", encoder_frames]
    env = bench_env(threads=threads, **BACKENDS[backend])
    if python is not None:   # the baseline interpreter imports its own tarq, not this tree's
        env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    res = run_measured(cmd, env=env, timeout=timeout)
    check_child(res, f"quantize {model} {method} ({backend}{', baseline' if python else ''})")
    report_path = out_dir / "report.json"
    report = read_json(report_path) if report_path.exists() else {}
    split = phase_split(report)
    versions = report.get("versions") or {}
    return {"wall_s": round(res.wall_s, 2), "peak_rss_mb": round(res.peak_rss_mb, 1), "split": split,
            "kernels_backend": versions.get("kernels"),
            "native": {k: versions.get(k) for k in ("native_isa", "native_blas", "native_threads")},
            "peak_rss_mb_by_phase": (report.get("memory") or {}).get("peak_rss_mb_by_phase"),
            "encoder_frames": (report.get("calibration") or {}).get("encoder_frames"),
            "timing_raw": report.get("timing")}


_WIDTHS = {"tiny.en": 384, "tiny": 384, "base.en": 512, "base": 512, "small": 768, "medium": 1024}


def _fits(model: str, fmt: str) -> bool:
    """Whether every Linear of a known Whisper size tiles the type's blocks (unknown models: try and see)."""
    ensure_tarq_importable()
    from tarq.ggml import get_type

    width = SIZES[parse_spec(model)[0]][0] if is_synthetic(model) else _WIDTHS.get(model)
    return width is None or get_type(fmt).fits(width)


def quantize_supports_device() -> bool:
    """Whether ``tarq quantize`` takes --device (needed to put the calibration on a GPU)."""
    res = run_measured(tarq_cli("quantize", "--help"), env=bench_env(), timeout=120)
    return res.returncode == 0 and "--device" in res.stdout


def run(args) -> dict:
    meta = RunMeta.start("quant_speed" + ("_gpu" if "cuda" in args.devices else ""))
    calib = args.calib or resolve_data_root(args.data_root) / CALIB_SET
    runs = []
    synthetic: dict[str, dict] = {}
    tmp_root = Path(tempfile.mkdtemp(prefix="tarq-qspeed-"))
    try:
        for model in args.models:
            model_arg = model
            if is_synthetic(model):   # a random checkpoint with a real size's shapes (_synthetic_whisper.py)
                model_arg = str(tmp_root / "synthetic-model")
                synthetic[model] = write_synthetic_whisper(model, Path(model_arg), args.synthetic_tokenizer)
                print(f"{model}: {synthetic[model]['parameters'] / 1e6:.0f} M random parameters", flush=True)
            n_calib = args.n_calib.get(model, args.n_calib.get("*", 128))
            for method, fmt in [(m, f) for m in args.methods for f in args.formats]:
                if not _fits(model, fmt):
                    print(f"{model} {method} {fmt}: skipped (the model's rows do not tile {fmt})", flush=True)
                    continue
                # the reference solver is slow (a Python column loop): by default only where asked for
                backends = [b for b in args.backends if b != "reference" or
                            (_selected(model, args.reference_models) and _selected(method, args.reference_methods))]
                codes = ["current"] + (["baseline"] if args.baseline_python else [])
                pythons = {"current": None, "baseline": args.baseline_python}
                reps: dict[tuple[str, str, str], list[dict]] = {(c, b, dev): [] for c in codes for b in backends
                                                                for dev in args.devices}
                dirs: dict[tuple[str, str, str], Path] = {}
                for rep in range(args.repeats):
                    for code, backend, dev in reps:       # interleaved: load drift hits every variant alike
                        out = tmp_root / f"{model.replace(':', '-')}-{method}-{fmt}-{backend}-{code}-{dev}-{rep}"
                        r = quantize_once(model_arg, method, calib, n_calib, args.threads, backend, out,
                                          None if dev == "cpu" else dev, args.timeout, args.encoder_frames, fmt,
                                          pythons[code])
                        reps[(code, backend, dev)].append(r)
                        s = r["split"]
                        print(f"{model} {method} {fmt} {backend} {code} {dev} (rep {rep + 1}): "
                              f"wall {r['wall_s']:.1f} s, prepare "
                              f"{fmt_num(s['prepare'], 1)} s, forward "
                              f"{fmt_num(s['forward'], 1)} s, stats {fmt_num(s['statistics'], 1)} s, solve "
                              f"{fmt_num(s['solve'], 2)} s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
                        if rep == 0:
                            dirs[(code, backend, dev)] = out
                        else:
                            shutil.rmtree(out, ignore_errors=True)
                for (code, backend, dev), rs in reps.items():
                    vs_code = agreement = vs_cpu = None
                    if code == "current" and ("baseline", backend, dev) in dirs:
                        try:   # how far the baseline's codes are from this tree's (same data, same settings)
                            vs_code = codes_agreement(dirs[("current", backend, dev)], dirs[("baseline", backend, dev)])
                        except Exception as e:   # noqa: BLE001 - an older output layout: say so, keep the timing
                            vs_code = {"error": f"{type(e).__name__}: {e}"}
                    if backend == "native" and ("current", "reference", dev) in dirs:
                        agreement = codes_agreement(dirs[("current", "native", dev)],
                                                    dirs[("current", "reference", dev)])
                    if dev != "cpu" and (code, backend, "cpu") in dirs:   # the GPU's codes against the CPU's
                        vs_cpu = codes_agreement(dirs[(code, backend, dev)], dirs[(code, backend, "cpu")])
                    runs.append({
                        "model": model, "method": method, "format": fmt, "n_calib": n_calib, "backend": backend,
                        "device": dev, "synthetic": synthetic.get(model), "device_vs_cpu_codes": vs_cpu,
                        "code": code, "current_vs_baseline_codes": vs_code,
                        "kernels_backend": rs[0]["kernels_backend"], "repeats": len(rs),
                        "wall_s": median([r["wall_s"] for r in rs]),
                        "peak_rss_mb": median([r["peak_rss_mb"] for r in rs]),
                        **{p: median([r["split"][p] for r in rs]) for p in (*PHASES, "other", "total")},
                        # process wall minus the pipeline's own total: interpreter start-up, model load, save
                        "outside_s": median([r["wall_s"] - r["split"]["total"] for r in rs
                                             if r["split"]["total"] is not None]),
                        "all_wall_s": [r["wall_s"] for r in rs], "timing_raw": rs[0]["timing_raw"],
                        "native_vs_reference": agreement, "native": rs[0]["native"],
                        "encoder_frames": rs[0]["encoder_frames"],
                        "peak_rss_mb_by_phase": rs[0]["peak_rss_mb_by_phase"],
                    })
                for row in runs:
                    if row.get("code", "current") == "current" and "vs_baseline" not in row:
                        row["vs_baseline"] = (against_in_run_baseline(row, runs, args.baseline_label)
                                              or against_baseline(row, args.baseline))
                for d in dirs.values():
                    shutil.rmtree(d, ignore_errors=True)
                # keep what is measured so far: an interrupted run still leaves its finished rows behind
                write_json(args.out, {**document(meta, args, calib, runs), "partial": True})
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return document(meta, args, calib, runs)


def against_in_run_baseline(row: dict, runs: list[dict], label: str) -> dict | None:
    """Ratios of ``row`` against the baseline code's run of the same configuration in this run (same machine,
    same conditions, interleaved)."""
    key = ("model", "method", "format", "backend", "n_calib", "device")
    for b in runs:
        if b.get("code") == "baseline" and all(b.get(k) == row.get(k) for k in key):
            return _ratios(row, b, f"in-run: {label}")
    return None


def _ratios(row: dict, b: dict, source: str) -> dict:
    """statistics / wall / peak-RSS / forward ratios of ``row`` against the baseline row ``b``."""
    def ratio(key):
        return row[key] / b[key] if row.get(key) is not None and b.get(key) else None
    return {"baseline": source, "statistics_ratio": ratio("statistics"),
            "wall_ratio": ratio("wall_s"), "peak_rss_ratio": ratio("peak_rss_mb"),
            "forward_ratio": ratio("forward"), "baseline_statistics_s": b.get("statistics"),
            "baseline_wall_s": b.get("wall_s"), "baseline_peak_rss_mb": b.get("peak_rss_mb")}


def baseline_code_info(python: str) -> dict:
    """Where the baseline interpreter's tarq lives and which commit it was built from (when it knows)."""
    probe = ("import json, pathlib, tarq; p = pathlib.Path(tarq.__file__).resolve().parent; "
             "print(json.dumps({'tarq_dir': str(p), 'version': getattr(tarq, '__version__', None)}))")
    res = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    if res.returncode != 0:
        raise SystemExit(f"--baseline-python {python}: cannot import tarq ({res.stderr.strip().splitlines()[-1:]})")
    return {"python": python, **json.loads(res.stdout.strip().splitlines()[-1])}


def against_baseline(row: dict, baseline_path: Path | None) -> dict | None:
    """statistics / wall / peak-RSS ratios of ``row`` against the same configuration in a committed result."""
    if baseline_path is None or not Path(baseline_path).exists():
        return None
    doc = read_json(Path(baseline_path))
    doc_device = (doc.get("config") or {}).get("device", "cpu")
    for b in doc.get("runs", []):
        if (b["model"], b["method"], b["backend"], b["n_calib"], b.get("device", doc_device)) == (
                row["model"], row["method"], row["backend"], row["n_calib"], row.get("device", "cpu")):
            return _ratios(row, b, str(baseline_path))
    return None


def document(meta: RunMeta, args, calib: Path, runs: list[dict]) -> dict:
    return {"meta": meta.finish(),
            "config": {"models": args.models, "methods": args.methods, "backends": args.backends,
                       "n_calib": args.n_calib, "reference_models": args.reference_models,
                       "reference_methods": args.reference_methods, "threads": args.threads, "repeats": args.repeats,
                       "formats": args.formats, "encoder_frames": args.encoder_frames or "(tarq default)",
                       "baseline": str(args.baseline) if args.baseline else None,
                       "baseline_code": args.baseline_code,
                       "calib": calib.name, "device": ",".join(args.devices)},
            "runs": runs}


def render_markdown(result: dict) -> str:
    if result.get("skipped"):
        return f"_{result['skipped']}_"
    rows = []
    by = {(r["model"], r["method"], r.get("format", "q4_0"), r["backend"], r.get("device")): r
          for r in result["runs"] if r.get("code", "current") == "current"}
    # CPU and GPU calibrations in one run (--devices cpu,cuda) get a device column and the GPU-vs-CPU codes
    with_device = len({r.get("device") for r in result["runs"]}) > 1
    # runs of older code in the same run (--baseline-python) get a "code" column
    base_label = ((result.get("config") or {}).get("baseline_code") or {}).get("label", "baseline")
    with_code = any(r.get("code", "current") != "current" for r in result["runs"])
    # columns added by issue 13 (RSS per phase, baseline ratios) only where a run has them: older JSONs keep
    # their original table
    extra = any(r.get("peak_rss_mb_by_phase") or r.get("vs_baseline") for r in result["runs"])
    for r in result["runs"]:
        fmt = r.get("format", "q4_0")
        ref = by.get((r["model"], r["method"], fmt, "reference", r.get("device")))
        q4 = by.get((r["model"], r["method"], "q4_0", r["backend"], r.get("device")))
        vs_q4 = f"{r['wall_s'] / q4['wall_s']:.2f}×" if q4 and q4 is not r and q4["wall_s"] else "–"
        speed = (f"{ref['solve'] / r['solve']:.1f}×" if r["backend"] != "reference" and ref and r["solve"]
                 and ref["solve"] else "–")
        wall_speed = (f"{ref['wall_s'] / r['wall_s']:.2f}×" if r["backend"] != "reference" and ref else "–")
        agree = r.get("native_vs_reference") or {}
        vb = r.get("vs_baseline") or {}
        phases = r.get("peak_rss_mb_by_phase") or {}
        if r.get("code", "current") != "current":   # a baseline row: compared against, not compared
            vs_q4 = speed = wall_speed = "–"
        row = [r["model"], r["method"], fmt] + ([base_label if r.get("code") == "baseline" else "this tree"]
                                               if with_code else []) + ([r.get("device")] if with_device else []) + [
               vs_q4, r["n_calib"],
               r["backend"] + (f" ({r['kernels_backend']})" if r.get("kernels_backend") and
                               r["kernels_backend"] != r["backend"] else ""),
               fmt_num(r["wall_s"], 1), fmt_num(r["prepare"], 1), fmt_num(r["forward"], 1),
               fmt_num(r["statistics"], 1),
               fmt_num(r["solve"], 2), fmt_num(r["other"], 1), fmt_num(r.get("outside_s"), 1), speed,
               wall_speed,
               fmt_num(r["peak_rss_mb"], 0)]
        if extra:
            row += [" / ".join(f"{k} {v:.0f}" for k, v in phases.items()) or "–",
                    fmt_num(vb.get("statistics_ratio"), 2), fmt_num(vb.get("wall_ratio"), 2),
                    fmt_num(vb.get("peak_rss_ratio"), 2)]
        row.append(fmt_num(agree.get("codes_equal_fraction"), 4) if r["backend"] == "native" else "")
        if with_code:
            cb = r.get("current_vs_baseline_codes") or {}
            row.append(fmt_num(cb.get("codes_equal_fraction"), 4) if cb.get("codes_equal_fraction") is not None
                       else "")
        if with_device:
            dc = r.get("device_vs_cpu_codes") or {}
            row.append(fmt_num(dc.get("codes_equal_fraction"), 4) if dc.get("codes_equal_fraction") is not None
                       else "")
            on_cpu = by.get((r["model"], r["method"], fmt, r["backend"], "cpu"))
            row.append(f"{on_cpu['wall_s'] / r['wall_s']:.2f}×" if on_cpu and on_cpu is not r and r["wall_s"]
                       else "–")
        rows.append(row)
    headers = ["model", "method", "type"] + (["code"] if with_code else []) + (["device"] if with_device else []) + [
               "wall vs q4_0", "calib utts", "solver", "wall s", "prepare s", "forward s", "statistics s",
               "solve s", "other s", "load/save s", "solve speedup", "wall speedup", "peak RSS MB"]
    align = "lll" + ("l" if with_code else "") + ("l" if with_device else "") + "rrlrrrrrrrrrr"
    if extra:
        headers += ["peak RSS by phase MB", "stats / baseline", "wall / baseline", "RSS / baseline"]
        align += "lrrr"
    headers.append("codes equal (native vs ref)")
    align += "r"
    if with_code:
        headers.append(f"codes equal ({base_label} vs this tree)")
        align += "r"
    if with_device:
        headers += ["codes equal (GPU vs CPU)", "wall: CPU / this"]
        align += "rr"
    m = result["meta"]
    cfg = result["config"]
    return (("**Partial run** (interrupted; finished rows only).\n\n" if result.get("partial") else "") +
            markdown_table(headers, rows, align) +
            f"\n\nDevice {cfg['device']}"
            + (f" ({m['machine']['gpu']['name']})" if (m["machine"].get("gpu") or {}).get("name") else "")
            + f", {cfg['threads']} threads, median of {cfg['repeats']} run(s) per row; "
            f"machine {m['machine']['cpu']} ({m['machine']['cpu_count']} cores), load average {m['loadavg_start']}"
            f" → {m['loadavg_end']}.")


def plot(result: dict, path: Path) -> Path:
    plt = pyplot()
    runs = result["runs"]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(runs)), 4))
    base_label = ((result.get("config") or {}).get("baseline_code") or {}).get("label", "baseline")
    labels = [f"{r['model']}\n{r['method']} {r.get('format', 'q4_0')}\n{r['backend']} {r.get('device') or ''}"
              + (f"\n{base_label}" if r.get("code") == "baseline" else "") for r in runs]
    bottom = [0.0] * len(runs)
    for phase in (*PHASES, "other", "outside_s"):
        vals = [r.get(phase) or 0.0 for r in runs]
        ax.bar(range(len(runs)), vals, bottom=bottom, label="load/save" if phase == "outside_s" else phase)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.scatter(range(len(runs)), [r["wall_s"] for r in runs], color="k", marker="_", s=200, label="process wall")
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("seconds")
    ax.set_title(f"calibration time split ({result['config']['device']}, {result['config']['threads']} threads)",
                 fontsize=9)
    ax.legend(fontsize=7)
    return save_plot(fig, path)


def _selected(name: str, allowed: list[str]) -> bool:
    return "all" in allowed or name in allowed


def _n_calib(text: str) -> dict[str, int]:
    if text.isdigit():
        return {"*": int(text)}
    out = {}
    for part in text.split(","):
        model, _, n = part.partition("=")
        if not n.isdigit():
            raise argparse.ArgumentTypeError(f"--n-calib wants N or model=N,...; got {text!r}")
        out[model] = int(n)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, "bench_quant_speed.json")
    p.add_argument("--models", default="tiny.en,base")
    p.add_argument("--methods", default="tarq,gptq")
    p.add_argument("--formats", default="q4_0",
                   help="ggml types to calibrate onto, comma-separated (per-type cost vs q4_0); K-quants skip tiny.en")
    p.add_argument("--backends", default="native,reference", help="solver backends (default native,reference)")
    p.add_argument("--n-calib", type=_n_calib, default=_n_calib("32"),
                   help="calibration utterances: N for all models or model=N,... (default 32, ~5.5 min in all on 2 "
                        "cores; 128 = the paper's budget; the "
                        "forward passes and statistics grow linearly with N, the solves do not depend on it)")
    p.add_argument("--reference-models", default="all",
                   help="models also calibrated with the PyTorch reference solver (default all; or a comma list)")
    p.add_argument("--reference-methods", default="gptq",
                   help="methods also calibrated with the reference solver ('all' for every method; default gptq: "
                        "TARQ's solve is the same GPTQ sweep on a rebalanced Hessian)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per calibration")
    p.add_argument("--data-root", help="folder with the shared speech sets (default ../shared/data)")
    p.add_argument("--encoder-frames", choices=("sampled", "all", "speech"), default=None,
                   help="passed to tarq quantize (default: tarq's own default)")
    p.add_argument("--baseline", type=Path, default=None,
                   help="a committed bench_quant_speed JSON: adds statistics / wall / RSS ratios per row")
    p.add_argument("--baseline-python", default=None,
                   help="an interpreter whose `import tarq` is older code (e.g. a venv with a checkout of the "
                        "baseline commit installed): its calibrations run interleaved with this tree's in the same "
                        "run, and the ratio columns compare against them (same machine, same load) instead of "
                        "--baseline")
    p.add_argument("--baseline-label", default="baseline",
                   help="what the baseline code is (e.g. its commit), written into the JSON and the table")
    p.add_argument("--gpu", action="store_true",
                   help="CUDA variant (tarq quantize --device cuda); records 'skipped: no CUDA device' without one")
    p.add_argument("--devices", default=None,
                   help="calibrate on each of these devices, interleaved, and compare their codes (e.g. cpu,cuda); "
                        "default cpu, or cuda with --gpu")
    p.add_argument("--calib", type=Path, default=None,
                   help=f"calibration set folder (default: {CALIB_SET} under --data-root)")
    p.add_argument("--synthetic-tokenizer", type=Path, default=None,
                   help="tokenizer.json for synthetic:SIZE:LAYERS models (default: tiny.en's, from its package)")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.methods = [m for m in args.methods.split(",") if m]
    args.formats = [f for f in args.formats.split(",") if f]
    args.backends = [b for b in args.backends.split(",") if b]
    args.reference_models = [m for m in args.reference_models.split(",") if m]
    args.reference_methods = [m for m in args.reference_methods.split(",") if m]
    args.baseline_code = None
    if args.baseline_python:
        args.baseline_code = {"label": args.baseline_label, **baseline_code_info(args.baseline_python)}
    args.devices = [d for d in (args.devices or ("cuda" if args.gpu else "cpu")).split(",") if d]
    if not args.devices or any(d not in ("cpu", "cuda") for d in args.devices):
        raise SystemExit(f"--devices: choose from cpu,cuda; got {','.join(args.devices) or 'nothing'}")
    args.gpu = args.gpu or "cuda" in args.devices
    for model in args.models:
        if is_synthetic(model):
            try:
                parse_spec(model)
            except ValueError as e:
                raise SystemExit(f"--models: {e}") from None
    bad = [b for b in args.backends if b not in BACKENDS]
    if bad:
        raise SystemExit(f"unknown backend(s) {bad}; choose from {','.join(BACKENDS)}")
    if args.gpu and args.out == RESULTS_DIR / "bench_quant_speed.json":
        args.out = RESULTS_DIR / "bench_quant_speed_gpu.json"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        print(f"quant_speed{' (gpu)' if args.gpu else ''}: models {args.models}, methods {args.methods}, "
              f"solvers {args.backends} (reference solver for models {args.reference_models}, methods "
              f"{args.reference_methods}), calibration utterances {args.n_calib}, {args.repeats} repeat(s) "
              f"-> {args.out}")
        return 0
    if args.gpu and not cuda_available():
        write_json(args.out, skipped_no_cuda("quant_speed_gpu"))
        print("skipped: no CUDA device")
        return 0
    if args.gpu and not quantize_supports_device():
        reason = "skipped: `tarq quantize` has no --device option, so calibration cannot be put on the GPU"
        write_json(args.out, skipped_no_cuda("quant_speed_gpu", reason))
        print(reason)
        return 0
    save_and_report(args.out, run(args), plot, render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
