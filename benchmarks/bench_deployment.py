"""Deployment cost in whisper.cpp: F16 vs our quantized exports (Q8_0, Q4_0, any ggml type) — time, RTF, peak RSS.

For every (model, clip length, threads) cell each model file is measured in R fresh processes
(``_whispercpp_worker.py``): load time, the first transcribe call (includes whisper.cpp's buffer allocation)
and a second, warm call; peak RSS is the child's ru_maxrss (= VmHWM). Variants are interleaved inside each
repeat so a drift in machine load hits F16 and INT4 alike; the FP16/INT4 ratios are taken within this run.
Clips of 11 s and 30 s are concatenations of shared-set utterances in a fixed order (see ``build_clip``).

    python benchmarks/bench_deployment.py                       # tiny.en + base, 1 and 2 threads, 3 repeats
    python benchmarks/bench_deployment.py --models tiny.en --repeats 5 --threads 1,2
    python benchmarks/bench_deployment.py --types q8_0,q4_0,iq4_nl,q5_0     # ggml's RTN of other types too
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _artifacts import baseline_bin, baseline_kinds  # noqa: E402
from _common import (save_and_report, BENCH_DIR, CACHE_DIR, PAPER_CPU_ROWS, PAPER_CPU_SOURCE, RESULTS_DIR, RunMeta,  # noqa: E402
                     add_common_args, bench_env, cuda_available, ensure_tarq_importable, fmt_num, last_json_line,
                     markdown_table, median, pyplot, resolve_data_root, run_measured, save_plot,
                     skipped_no_cuda, write_json)

WORKER = BENCH_DIR / "_whispercpp_worker.py"
SR = 16000
GAP_S = 0.3
CLIP_SETS = ("austen-tts-dev", "asterisk-prompts")
DEFAULT_TYPES = "q8_0,q4_0"
# Variants: "f16", a ggml type name (ggml's round-to-nearest file of that type, byte-exact to whisper.cpp's
# `quantize` where it offers the type) and "q4_0-tarq", the TARQ solver's Q4_0 export (same block format, so the
# same kernels: included when the accuracy benchmark left it in the cache). Q8_0 keeps its historical label.
_FIXED_LABELS = {"f16": "F16", "q8_0": "Q8_0", "q4_0-tarq": "Q4_0 (TARQ)"}
# the paper's anchor is an INT4-vs-FP16 ratio: quoted beside the variants with 4-bit codes only
_INT4_TYPES = ("q4_0", "q4_1", "iq4_nl", "q4_k")


def variant_label(variant: str) -> str:
    return _FIXED_LABELS.get(variant, f"{variant.upper()} (RTN)")


def _is_int4(variant: str) -> bool:
    return variant.removesuffix("-tarq") in _INT4_TYPES


def build_clip(data_root: Path, seconds: float, cache: Path = CACHE_DIR) -> tuple[Path, dict]:
    """A deterministic clip of exactly ``seconds``: utterances of the clip sets, each sorted by id, taken
    alternately (austen, asterisk, austen, ...) and joined with 0.3 s of silence, cut at ``seconds``."""
    import numpy as np

    ensure_tarq_importable()
    from tarq.data import load_audio, load_dataset

    path = cache / "clips" / f"clip-{seconds:g}s.npy"
    lists = [sorted(load_dataset(data_root / name), key=lambda u: u.id) for name in CLIP_SETS]
    pieces, ids, texts, total, i = [], [], [], 0.0, 0
    gap = np.zeros(int(GAP_S * SR), dtype=np.float32)
    while total < seconds:
        utt = lists[i % len(lists)][i // len(lists)]
        a = load_audio(utt.audio)
        pieces += [a, gap]
        ids.append(utt.id)
        texts.append(utt.text)
        total += (len(a) + len(gap)) / SR
        i += 1
    clip = np.concatenate(pieces)[: int(round(seconds * SR))].astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, clip)
    return path, {"seconds": len(clip) / SR, "utterances": ids, "text": " ".join(texts),
                  "last_utterance_cut": True}


def _worker_cmd(model: Path, clip: Path, threads: int, calls: int, gpu: bool = False) -> list[str]:
    return [sys.executable, str(WORKER), "--model", str(model), "--audio", str(clip), "--threads", str(threads),
            "--calls", str(calls)] + (["--gpu"] if gpu else [])


def measure_once(model: Path, clip: Path, threads: int, calls: int = 2, timeout: float = 300,
                 gpu: bool = False) -> dict:
    res = run_measured(_worker_cmd(model, clip, threads, calls, gpu), env=bench_env(threads=threads),
                       timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"worker failed on {model.name} (exit {res.returncode}): {res.stderr.strip()[-800:]}")
    out = last_json_line(res.stdout)
    out["peak_rss_mb"] = round(res.peak_rss_mb, 1)
    out["process_wall_s"] = round(res.wall_s, 3)
    return out


def baseline_rss() -> float:
    """Peak RSS of the worker that only imports numpy + pywhispercpp: the floor every measurement carries."""
    res = run_measured([sys.executable, str(WORKER), "--baseline"], env=bench_env(threads=1), timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"baseline worker failed: {res.stderr.strip()[-800:]}")
    return round(res.peak_rss_mb, 1)


def summarize_cell(runs: list[dict], audio_s: float, rss_floor: float) -> dict:
    warm = [r["transcribe_s"][-1] for r in runs]
    cold = [r["transcribe_s"][0] for r in runs]
    rss = median([r["peak_rss_mb"] for r in runs])
    return {
        "n": len(runs), "load_s": median([r["load_s"] for r in runs]), "first_call_s": median(cold),
        "warm_call_s": median(warm), "rtf": median(warm) / audio_s, "first_call_rtf": median(cold) / audio_s,
        "peak_rss_mb": rss, "net_rss_mb": None if rss is None else round(rss - rss_floor, 1),
        "warm_call_all_s": warm, "text": runs[-1].get("text", ""),
        # the decoder's share of the time grows with the output: a variant that stops early looks faster
        "output_words": len(runs[-1].get("text", "").split()),
    }


def _model_files(models: list[str], types: list[str], want_tarq: bool,
                 rebuild: bool) -> tuple[dict[str, dict[str, dict]], dict[str, list[str]]]:
    """{model: {variant: {"path", "bytes", "build"}}}; Q4_0 (TARQ) only if the accuracy benchmark cached one.
    Types a model's rows cannot take are left out of that model and listed in ``skipped``."""
    files: dict[str, dict[str, dict]] = {}
    skipped: dict[str, list[str]] = {}
    for m in models:
        files[m] = {}
        for kind in ("f16", *types):
            try:
                art = baseline_bin(m, kind, rebuild=rebuild)
            except RuntimeError as e:
                # tarq's one-line refusal of a type whose blocks do not tile the model's rows (K-quants on
                # tiny.en's 384-wide rows): that model is timed without it; any other failure stops the run
                reason = str(e).strip().splitlines()[-1]
                if kind == "f16" or "do not tile" not in reason:
                    raise
                print(f"{m}: {kind} skipped: {reason.removeprefix('tarq export: error: ')}", flush=True)
                skipped.setdefault(m, []).append(kind)
                continue
            files[m][kind] = {"path": art.path, "bytes": art.path.stat().st_size, "build": art.build}
        if want_tarq:
            hits = sorted((CACHE_DIR / "quant").glob(f"{m}-tarq-q4_0-*.bin"), key=lambda p: p.stat().st_mtime)
            if hits:   # the newest one, i.e. from the latest accuracy run
                files[m]["q4_0-tarq"] = {"path": hits[-1], "bytes": hits[-1].stat().st_size, "build": None}
    return files, skipped


def run(args) -> dict:
    meta = RunMeta.start("deployment" + ("_gpu" if args.gpu else ""))
    data_root = resolve_data_root(args.data_root)
    clips = {s: build_clip(data_root, s) for s in args.seconds}
    files, skipped = _model_files(args.models, args.types, not args.no_tarq, args.rebuild)
    rss_floor = baseline_rss()

    # warm the page cache for every model file so the first repeat is not a cold-disk outlier
    for m, variants in files.items():
        for v in variants.values():
            measure_once(v["path"], clips[min(args.seconds)][0], max(args.threads), calls=1, gpu=args.gpu)

    raw: dict[tuple, list[dict]] = {}
    for rep in range(args.repeats):
        for m, variants in files.items():
            for s in args.seconds:
                for t in args.threads:
                    for var, info in variants.items():
                        r = measure_once(info["path"], clips[s][0], t, calls=args.calls, gpu=args.gpu)
                        raw.setdefault((m, s, t, var), []).append(r)
                        print(f"[rep {rep + 1}/{args.repeats}] {m} {s:g}s {t}t {variant_label(var)}: load "
                              f"{r['load_s']:.3f}s, calls {', '.join(f'{x:.3f}' for x in r['transcribe_s'])}s, "
                              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        # keep what is measured so far: an interrupted run still leaves its finished repeats behind
        write_json(args.out, {**document(meta, args, clips, files, rss_floor, raw, skipped), "partial": True})
    return document(meta, args, clips, files, rss_floor, raw, skipped)


def document(meta: RunMeta, args, clips: dict, files: dict, rss_floor: float, raw: dict,
             skipped: dict[str, list[str]]) -> dict:
    cells = []
    for (m, s, t, var), runs in raw.items():
        cell = {"model": m, "audio_s": s, "threads": t, "variant": var, "label": variant_label(var),
                "file_mb": round(files[m][var]["bytes"] / 2**20, 2)}
        cell.update(summarize_cell(runs, clips[s][1]["seconds"], rss_floor))
        cells.append(cell)
    ratios = []
    by_key = {(c["model"], c["audio_s"], c["threads"], c["variant"]): c for c in cells}
    for (m, s, t, var), c in by_key.items():
        if var == "f16":
            continue
        f16 = by_key[(m, s, t, "f16")]
        ratios.append({"model": m, "audio_s": s, "threads": t, "variant": var,
                       "speedup_warm": f16["warm_call_s"] / c["warm_call_s"],
                       "speedup_first_call": f16["first_call_s"] / c["first_call_s"],
                       "speedup_load": f16["load_s"] / c["load_s"],
                       "rss_ratio": c["peak_rss_mb"] / f16["peak_rss_mb"],
                       "net_rss_ratio": (c["net_rss_mb"] / f16["net_rss_mb"]) if f16["net_rss_mb"] else None})
    return {
        "meta": meta.finish(),
        "config": {"models": args.models, "types": args.types, "seconds": args.seconds, "threads": args.threads,
                   "repeats": args.repeats,
                   "calls_per_process": args.calls, "device": "cuda (whisper.cpp use_gpu)" if args.gpu else "cpu",
                   "clip_sets": list(CLIP_SETS), "gap_s": GAP_S,
                   "decoding": "greedy, no temperature fallback, language en, no timestamps (pywhispercpp)"},
        "clips": {f"{s:g}": info for s, (_, info) in clips.items()},
        "files": {m: {v: {"file": Path(i["path"]).name, "mb": round(i["bytes"] / 2**20, 2), "build": i["build"]}
                      for v, i in vs.items()} for m, vs in files.items()},
        "skipped_types": skipped,
        "rss_floor_mb": rss_floor,
        "cells": cells,
        "ratios": ratios,
        "paper_anchor": {"source": PAPER_CPU_SOURCE,
                         "rows": [{"model": k[0], "audio_s": k[1], **v} for k, v in PAPER_CPU_ROWS.items()]},
    }


def _variant_order(cells: list[dict]) -> list[str]:
    """F16 first, then the variants in the order the run measured them (its --types, then TARQ's export)."""
    seen = list(dict.fromkeys(c["variant"] for c in cells))
    return sorted(seen, key=lambda v: (v != "f16", v.endswith("-tarq"), seen.index(v)))


def _paper(model: str, seconds: float) -> dict | None:
    family = "tiny" if model.startswith("tiny") else ("base" if model.startswith("base") else None)
    return PAPER_CPU_ROWS.get((family, int(round(seconds))))


def render_markdown(result: dict) -> str:
    if result.get("skipped"):
        return f"_{result['skipped']}_"
    cells = result["cells"]
    rows = []
    order = _variant_order(cells)
    labels = {c["variant"]: c["label"] for c in cells}
    for c in sorted(cells, key=lambda c: (c["model"], c["audio_s"], c["threads"], order.index(c["variant"]))):
        rows.append([c["model"], f"{c['audio_s']:g} s", c["threads"], c["label"], fmt_num(c["file_mb"], 1),
                     fmt_num(c["load_s"], 3), fmt_num(c["first_call_s"], 3), fmt_num(c["warm_call_s"], 3),
                     fmt_num(c["rtf"], 3), fmt_num(c["peak_rss_mb"], 0), fmt_num(c["net_rss_mb"], 0),
                     c.get("output_words", "–")])
    t1 = markdown_table(["model", "audio", "threads", "weights", "file MB", "load s", "1st call s", "warm call s",
                         "RTF (warm)", "peak RSS MB", "RSS − floor MB", "words out"], rows, "lrrlrrrrrrrr")
    words = {(c["model"], c["audio_s"], c["threads"], c["variant"]): c.get("output_words") for c in cells}
    early_stop = False
    rrows = []
    for r in sorted(result["ratios"], key=lambda r: (r["model"], r["audio_s"], r["threads"],
                                                     order.index(r["variant"]))):
        paper = _paper(r["model"], r["audio_s"]) if _is_int4(r["variant"]) else None
        paper_speed = f"{paper['f16'][4] / paper['int4'][4]:.2f}× (4t)" if paper else "–"
        paper_rss = f"{paper['rss_mb'][1] / paper['rss_mb'][0]:.2f}" if paper else "–"
        # a variant that decodes far fewer words than F16 did less decoder work: its speedup is not like for like
        w_var, w_f16 = (words.get((r["model"], r["audio_s"], r["threads"], v)) for v in (r["variant"], "f16"))
        same_output = "–"
        if w_var is not None and w_f16:
            if abs(w_var - w_f16) <= 0.1 * w_f16:
                same_output = "yes"
            else:
                same_output, early_stop = f"no ({w_var} vs {w_f16} words) †", True
        rrows.append([r["model"], f"{r['audio_s']:g} s", r["threads"], labels[r["variant"]],
                      f"{r['speedup_warm']:.2f}×", f"{r['speedup_first_call']:.2f}×", f"{r['speedup_load']:.2f}×",
                      f"{r['rss_ratio']:.2f}", fmt_num(r["net_rss_ratio"], 2), same_output, paper_speed, paper_rss])
    t2 = markdown_table(["model", "audio", "threads", "vs F16", "speedup (warm)", "speedup (1st call)",
                         "load speedup", "peak RSS ratio", "net RSS ratio", "output ≈ F16", "paper speedup",
                         "paper RSS ratio"], rrows, "lrrlrrrrrlrr")
    if early_stop:
        t2 += ("\n\n† The transcript is more than 10 % shorter or longer than F16's (usually an early end-of-text), "
               "so the decoder ran a different number of steps and the time ratio is not like for like.")
    m = result["meta"]
    note = (f"Machine: {m['machine']['cpu']} ({m['machine']['cpu_count']} cores), load average "
            f"{m['loadavg_start']} at start, {m['loadavg_end']} at end; {result['config']['repeats']} fresh "
            f"processes per cell, medians; RSS floor (interpreter + pywhispercpp, no model) "
            f"{result['rss_floor_mb']:.0f} MB. Paper anchor: {result['paper_anchor']['source']} "
            "(EPYC 7V12 at 4 threads; tiny 11 s: F16 0.77 s vs INT4 0.45 s; RSS 173 → 121 MB).")
    skipped = "; ".join(f"{m}: {', '.join(t.upper() for t in ts)}"
                        for m, ts in (result.get("skipped_types") or {}).items())
    if skipped:
        note += f" Types not timed, their blocks do not tile the model's rows: {skipped}."
    partial = "**Partial run** (interrupted; finished repeats only).\n\n" if result.get("partial") else ""
    return partial + t1 + "\n\n" + t2 + "\n\n" + note


def plot(result: dict, path: Path) -> Path:
    plt = pyplot()
    cells = [c for c in result["cells"]]
    models = sorted({c["model"] for c in cells})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    keys = sorted({(c["model"], c["audio_s"], c["threads"]) for c in cells})
    variants = _variant_order(cells)
    variant_labels = {c["variant"]: c["label"] for c in cells}
    width = 0.8 / len(variants)
    by = {(c["model"], c["audio_s"], c["threads"], c["variant"]): c for c in cells}
    for j, v in enumerate(variants):
        xs = [i + j * width for i in range(len(keys))]
        axes[0].bar(xs, [by[k + (v,)]["warm_call_s"] if k + (v,) in by else 0 for k in keys], width,
                    label=variant_labels[v])
        axes[1].bar(xs, [by[k + (v,)]["peak_rss_mb"] if k + (v,) in by else 0 for k in keys], width,
                    label=variant_labels[v])
    labels = [f"{m}\n{s:g}s {t}t" for m, s, t in keys]
    for ax, title in zip(axes, ("transcribe time, warm call (s)", "peak RSS (MB)")):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))])
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.suptitle(f"whisper.cpp deployment ({', '.join(models)}; {result['meta']['machine']['cpu']})", fontsize=9)
    return save_plot(fig, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, "bench_deployment.json")
    p.add_argument("--models", default="tiny.en,base", help="comma-separated model aliases (default tiny.en,base)")
    p.add_argument("--seconds", default="11,30", help="clip lengths in seconds (default 11,30)")
    p.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    p.add_argument("--types", default=DEFAULT_TYPES,
                   help=f"comma-separated ggml types timed as ggml's RTN files beside F16 (default {DEFAULT_TYPES}; "
                        "K-quants need rows that are multiples of 256: base, not tiny.en)")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per cell (default 3)")
    p.add_argument("--calls", type=int, default=2, help="transcribe calls per process; the last is 'warm'")
    p.add_argument("--data-root", help="folder with the shared speech sets (default ../shared/data)")
    p.add_argument("--no-tarq", action="store_true", help="do not time the cached TARQ Q4_0 export")
    p.add_argument("--rebuild", action="store_true", help="re-export the baseline .bin files")
    p.add_argument("--gpu", action="store_true", help="GPU variant: whisper.cpp with use_gpu; records "
                   "'skipped: no CUDA device' without one (the whisper.cpp build must have its CUDA backend)")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.seconds = [float(s) for s in args.seconds.split(",") if s]
    args.threads = [int(t) for t in args.threads.split(",") if t]
    args.types = [t for t in args.types.split(",") if t]
    known = baseline_kinds()[1:]
    unknown = [t for t in args.types if t not in known]
    if unknown or not args.types or len(set(args.types)) != len(args.types):
        raise SystemExit(f"bench_deployment: --types wants distinct ggml types from {', '.join(known)}, "
                         f"got {','.join(args.types) or 'none'}")
    if args.repeats < 1 or args.calls < 1:
        raise SystemExit("--repeats and --calls must be >= 1")
    if args.gpu and args.out == RESULTS_DIR / "bench_deployment.json":
        args.out = RESULTS_DIR / "bench_deployment_gpu.json"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        n = len(args.models) * len(args.seconds) * len(args.threads) * args.repeats
        print(f"deployment: {n} cells x {len(args.types) + 1}-{len(args.types) + 2} variants in fresh processes: "
              f"models {args.models}, types {args.types}, clips "
              f"{args.seconds} s, threads {args.threads}, {args.repeats} repeats, {args.calls} calls each -> "
              f"{args.out}")
        return 0
    if args.gpu and not cuda_available():
        write_json(args.out, skipped_no_cuda("deployment_gpu"))
        print("skipped: no CUDA device")
        return 0
    save_and_report(args.out, run(args), plot, render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
