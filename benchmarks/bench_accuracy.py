"""Accuracy of Q4_0 Whisper in whisper.cpp: FP16, whisper.cpp RTN, GPTQ, rareBAL, TARQ, QEP.

Every quantized system is exported to a whisper.cpp ``.bin`` and decoded by whisper.cpp (pywhispercpp; greedy,
language en). WER and rare-WER (reference words with Zipf < 3) are pooled per evaluation set; paired bootstrap
CIs compare every method with GPTQ and with whisper.cpp's own RTN quantizer (our bit-exact clone of
``quantize``). The same quantized directories are also decoded as PyTorch fake-quant models on a nested subset.

Defaults fit a 2-core machine in ~30 min: tiny.en only, a seeded subset of each evaluation set (``--limit``),
the torch pass on a smaller nested subset, 32 of the 128 calibration utterances (``--n-calib 128`` for the
paper's budget: several minutes more per method). ``--full`` decodes every utterance; ``--models tiny.en,base``
adds base. Quantized directories and ``.bin`` files are cached in ``benchmarks/.cache`` (keyed by model, method
and configuration), so a re-run only decodes again. Per-utterance hypotheses are saved so results can be
re-scored (``tarq.eval.load_result`` reads each system's block).

    python benchmarks/bench_accuracy.py
    python benchmarks/bench_accuracy.py --models tiny.en,base --full
"""
from __future__ import annotations

import argparse
import datetime as _dt
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _artifacts import Artifact, baseline_bin, config_key, exported_bin, quantized_dir  # noqa: E402
from _common import (save_and_report, CACHE_DIR, RunMeta, add_common_args, ensure_tarq_importable, fmt_num, markdown_table,  # noqa: E402
                     pyplot, read_json, resolve_data_root, save_plot, subset)

METHODS = ("fp16", "rtn", "gptq", "rarebal", "tarq", "qep")
CALIBRATED = ("gptq", "rarebal", "tarq", "qep")
LABEL = {"fp16": "FP16", "rtn": "whisper.cpp RTN", "gptq": "GPTQ", "rarebal": "rareBAL", "tarq": "TARQ",
         "qep": "QEP"}
TORCH_LABEL = {**LABEL, "fp16": "FP32", "rtn": "RTN"}
REFERENCES = ("gptq", "rtn")          # every method is compared against these
METRICS = ("wer", "rare_wer")
METRIC_LABEL = {"wer": "WER", "rare_wer": "rare-WER"}
EVAL_SETS = ("austen-tts-dev", "asterisk-prompts")
CALIB_SET = "austen-tts-calib"


# ----------------------------------------------------------------------------------------------- artifacts

def build_artifacts(model: str, methods: list[str], calib: Path, args) -> dict[str, dict]:
    """{method: {"bin": Artifact | None, "dir": Artifact | None}} — the whisper.cpp file and the torch model."""
    out: dict[str, dict] = {}
    for m in methods:
        t0 = time.perf_counter()
        if m == "fp16":
            out[m] = {"bin": baseline_bin(model, "f16", rebuild=args.rebuild), "dir": None}
        elif m == "rtn":
            # whisper.cpp's quantize (our bit-exact clone) for the .bin; the same RTN lattice as a quantized
            # directory for the torch fake-quant pass
            out[m] = {"bin": baseline_bin(model, "q4_0", rebuild=args.rebuild),
                      "dir": None if args.skip_torch else quantized_dir(model, "rtn", "q4_0", calib, None,
                                                                        threads=args.threads, rebuild=args.rebuild)}
        else:
            qdir = quantized_dir(model, m, "q4_0", calib, args.n_calib, threads=args.threads, rebuild=args.rebuild,
                                 timeout=args.quant_timeout)
            out[m] = {"bin": exported_bin(qdir, rebuild=args.rebuild), "dir": qdir}
        print(f"[{model}] {LABEL[m]}: artifacts ready in {time.perf_counter() - t0:.1f} s "
              f"({'cached' if out[m]['bin'].build.get('cached') else 'built'})", flush=True)
    return out


# ----------------------------------------------------------------------------------------------- decoding

def decode_cached(key: dict, decode, reuse: bool):
    """``decode()`` -> EvalResult, stored under .cache/decodes by ``key`` (artifact, backend, subset, threads).
    With ``reuse`` a stored result is loaded instead of decoding again (``--reuse-decodes``: resume a run)."""
    from tarq.eval import load_result, save_result

    path = CACHE_DIR / "decodes" / f"{key['model']}-{key['method']}-{key['backend']}-{config_key(**key)}.json"
    if reuse and path.exists():
        print(f"  reusing decoded hypotheses {path.name}", flush=True)
        return load_result(path)
    res = decode()
    save_result(res, path)
    return res


def decode_system(backend, label: str, sets: dict[str, list], progress: bool):
    """EvalResult of ``backend`` on the selected utterances of each set (tarq.eval scoring)."""
    from tarq.eval import DatasetResult, EvalResult
    from tarq.eval.runner import decode_utterances

    results = []
    for name, utts in sets.items():
        hyps, secs, audio_secs = decode_utterances(backend, utts, progress=progress, desc=f"{label} {name}")
        results.append(DatasetResult(name=name, path=str(utts[0].audio.parent.parent) if utts else "",
                                     ids=[u.id for u in utts], refs=[u.text for u in utts], hyps=hyps,
                                     durations=audio_secs, seconds=secs))
    system = dict(getattr(backend, "description", {}))
    system["label"] = label
    return EvalResult(system=system, datasets=results,
                      created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


def compare(a, b, n_boot: int, seed: int) -> dict:
    """Paired bootstrap of a - b per set and over all sets (stratified, mean of per-set pooled rates)."""
    from tarq.eval import paired_bootstrap, paired_counts

    names, ca, cb = paired_counts(a, b)
    out = {}
    for metric in METRICS:
        per = {n: asdict(paired_bootstrap([x], [y], metric, n_boot=n_boot, seed=seed))
               for n, x, y in zip(names, ca, cb)}
        per["mean"] = asdict(paired_bootstrap(ca, cb, metric, n_boot=n_boot, seed=seed))
        out[metric] = per
    return out


def comparisons(method: str, res, per: dict, n_boot: int, seed: int) -> dict:
    """Bootstrap of ``method`` against each reference system present in ``per`` ({method: EvalResult})."""
    out = {}
    for ref in REFERENCES:
        # each pair once: GPTQ vs RTN is reported, RTN vs GPTQ would only flip the sign
        if ref in per and ref != method and not (method in REFERENCES and
                                                 REFERENCES.index(method) > REFERENCES.index(ref)):
            out[ref] = compare(res, per[ref], n_boot, seed)
    return out


def rescore(result: dict, n_boot: int, seed: int) -> dict:
    """Re-score a saved result from its stored hypotheses (current normaliser and metric code), no decoding."""
    from tarq.eval import DatasetResult, EvalResult

    for mres in result["models"].values():
        for systems in mres["systems"].values():
            evals = {}
            for m, e in systems.items():
                r = e["result"]
                datasets = [DatasetResult(name=d["name"], path=d["path"], ids=[u["id"] for u in d["utterances"]],
                                          refs=[u["ref"] for u in d["utterances"]],
                                          hyps=[u["hyp"] for u in d["utterances"]],
                                          durations=[u["duration"] for u in d["utterances"]],
                                          seconds=[u["seconds"] for u in d["utterances"]])
                            for d in r["datasets"]]
                evals[m] = EvalResult(system=r["system"], datasets=datasets, created=r.get("created"))
            for m, e in systems.items():
                e["result"] = evals[m].to_dict()
                e["comparisons"] = comparisons(m, evals[m], evals, n_boot, seed)
    result["config"]["n_boot"] = n_boot
    result.setdefault("rescored", []).append(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return result


def run(args) -> dict:
    ensure_tarq_importable()
    import torch

    torch.set_num_threads(args.threads)
    from tarq.data import load_dataset
    from tarq.eval import get_backend

    meta = RunMeta.start("accuracy")
    root = resolve_data_root(args.data_root)
    calib = root / CALIB_SET
    limit = None if args.full else args.limit
    torch_limit = None if args.full else args.torch_limit
    sets = {n: subset(load_dataset(root / n), limit, seed=args.seed) for n in args.eval_sets}
    # nested: the torch subset is drawn from the whisper.cpp subset, so both backends share utterances
    torch_sets = {n: subset(u, torch_limit, seed=args.seed) for n, u in sets.items()}
    progress = not args.no_progress

    models: dict[str, dict] = {}
    for model in args.models:
        phase_t0 = time.perf_counter()
        arts = build_artifacts(model, args.methods, calib, args)
        timing = {"build_s": round(time.perf_counter() - phase_t0, 1)}
        phase_t0 = time.perf_counter()
        systems: dict[str, dict] = {"whisper.cpp": {}, "torch": {}}
        evals: dict[str, dict] = {"whisper.cpp": {}, "torch": {}}
        for m in args.methods:
            t0 = time.perf_counter()
            be = get_backend("whisper.cpp", str(arts[m]["bin"].path), threads=args.threads, language="en")
            key = {"model": model, "method": m, "backend": "whisper.cpp", "artifact": arts[m]["bin"].path.name,
                   "built": arts[m]["bin"].build.get("created"), "threads": args.threads,
                   "decoding": {k: v for k, v in be.description.items() if k != "model"},
                   "ids": {n: [u.id for u in us] for n, us in sets.items()}}
            evals["whisper.cpp"][m] = decode_cached(key, lambda: decode_system(be, LABEL[m], sets, progress),
                                                    args.reuse_decodes)
            print(f"[{model}] whisper.cpp / {LABEL[m]}: " + _brief(evals["whisper.cpp"][m]) +
                  f" ({time.perf_counter() - t0:.0f} s)", flush=True)
        timing["decode_whisper_cpp_s"] = round(time.perf_counter() - phase_t0, 1)
        phase_t0 = time.perf_counter()
        if not args.skip_torch:
            for m in args.methods:
                t0 = time.perf_counter()
                spec = model if m == "fp16" else str(arts[m]["dir"].path)
                key = {"model": model, "method": m, "backend": "torch", "artifact": Path(spec).name,
                       "built": arts[m]["dir"].build.get("created") if arts[m]["dir"] else None,
                       "batch": args.torch_batch, "ids": {n: [u.id for u in us] for n, us in torch_sets.items()}}
                evals["torch"][m] = decode_cached(
                    key, lambda: decode_system(get_backend("torch", spec, threads=args.threads,
                                                           batch_size=args.torch_batch),
                                               TORCH_LABEL[m], torch_sets, progress), args.reuse_decodes)
                print(f"[{model}] torch / {TORCH_LABEL[m]}: " + _brief(evals["torch"][m]) +
                      f" ({time.perf_counter() - t0:.0f} s)", flush=True)
        timing["decode_torch_s"] = round(time.perf_counter() - phase_t0, 1)
        for backend, per in evals.items():
            for m, res in per.items():
                entry = {"method": m, "label": res.label, "result": res.to_dict(), "comparisons": {}}
                art = arts[m]["bin" if backend == "whisper.cpp" else "dir"]
                if isinstance(art, Artifact):
                    entry["artifact"] = {"path": art.path.name, "build": art.build}
                entry["comparisons"] = comparisons(m, res, per, args.n_boot, args.seed)
                systems[backend][m] = entry
        models[model] = {"systems": systems, "timing": timing,
                         "quantization": {m: arts[m]["dir"].build for m in args.methods
                                          if arts[m].get("dir") is not None}}
    return {
        "meta": meta.finish(),
        "config": {"models": args.models, "methods": args.methods, "eval_sets": args.eval_sets, "limit": limit,
                   "torch_limit": torch_limit, "seed": args.seed, "calib": CALIB_SET, "n_calib": args.n_calib,
                   "format": "q4_0", "threads": args.threads, "n_boot": args.n_boot, "rare": "Zipf < 3.0",
                   "subset_ids": {n: [u.id for u in us] for n, us in sets.items()},
                   "torch_subset_ids": {n: [u.id for u in us] for n, us in torch_sets.items()}},
        "models": models,
    }


def _brief(res) -> str:
    return ", ".join(f"{d.name} WER {100 * d.scores.wer:.2f} % rare {100 * d.scores.rare_wer:.2f} %"
                     for d in res.datasets)


# ----------------------------------------------------------------------------------------------- reporting

def _pct(x) -> str:
    return fmt_num(x, 2, pct=True)


def _missing(c: dict) -> bool:
    return any(c.get(k) is None or math.isnan(c[k]) for k in ("diff", "lo", "hi"))


def _ci(c: dict) -> str:
    if _missing(c):
        return "–"
    return f"{100 * c['diff']:+.2f} [{100 * c['lo']:+.2f}, {100 * c['hi']:+.2f}]"


def _verdict(c: dict, label: str, ref: str) -> str:
    if _missing(c):
        return "n/a"
    if c["hi"] < 0:
        return f"{label} better"
    if c["lo"] > 0:
        return f"{ref} better"
    return "within noise"


def render_markdown(result: dict) -> str:
    cfg = result["config"]
    parts = []
    for model, mres in result["models"].items():
        for backend, systems in mres["systems"].items():
            if not systems:
                continue
            sets = [d["name"] for d in next(iter(systems.values()))["result"]["datasets"]]
            n = {d["name"]: f"{d['n_utts']} utts, {d['scores']['n_words']} words of which {d['scores']['n_rare']} rare"
                 for d in next(iter(systems.values()))["result"]["datasets"]}
            head = ["method"] + [f"{s} {k}" for s in sets for k in ("WER %", "rare-WER %")] + ["mean WER %",
                                                                                               "mean rare-WER %"]
            rows = []
            for m, e in systems.items():
                ds = {d["name"]: d["scores"] for d in e["result"]["datasets"]}
                rows.append([e["label"]] + [_pct(ds[s][k]) for s in sets for k in ("wer", "rare_wer")] +
                            [_pct(e["result"]["mean"]["wer"]), _pct(e["result"]["mean"]["rare_wer"])])
            title = (f"**{model}, {backend}** (Q4_0; " + "; ".join(f"{s}: {n[s]}" for s in sets) + ")")
            parts.append(title + "\n\n" + markdown_table(head, rows))
            crow = []
            for ref in REFERENCES:             # grouped by reference: all "vs GPTQ" rows, then all "vs RTN"
                for m, e in systems.items():
                    comp = e["comparisons"].get(ref)
                    if not comp:
                        continue
                    ref_label = systems[ref]["label"]
                    for metric in METRICS:
                        c = comp[metric]["mean"]
                        crow.append([e["label"], ref_label, METRIC_LABEL[metric],
                                     *[_ci(comp[metric][s]) for s in sets], _ci(c),
                                     _verdict(c, e["label"], ref_label)])
            if crow:
                parts.append(f"Paired bootstrap, {model} {backend}: A − B in points, "
                             f"95 % CI ({cfg['n_boot']} resamples); negative = A better.\n\n" +
                             markdown_table(["A", "B", "metric", *sets, "mean", "verdict"], crow, "lll" +
                                            "r" * (len(sets) + 1) + "l"))
        q = mres.get("quantization") or {}
        if q:
            parts.append(f"Quantization cost, {model} ({cfg['n_calib']} calibration utterances; `tarq quantize` "
                         "process wall time): " + "; ".join(
                             f"{TORCH_LABEL.get(m, m)} {b['wall_s']:.0f} s, peak RSS {b['peak_rss_mb']:.0f} MB"
                             + (f" (load {b['loadavg_before'][0]:.1f})" if b.get("loadavg_before") else "")
                             + (" (**built from older sources**)" if b.get("stale_code") else "")
                             for m, b in q.items()))
        t = mres.get("timing")
        if t:   # cached artifacts / reused decodes make these phases short: the line says what this run spent
            torch_time = (f"torch decoding {t['decode_torch_s']:.0f} s" if mres["systems"].get("torch")
                          else "no torch pass")
            parts.append(f"Time spent by this run on {model}: building artifacts {t['build_s']:.0f} s, "
                         f"whisper.cpp decoding {t['decode_whisper_cpp_s']:.0f} s, {torch_time}.")
    stale = sorted({e["artifact"]["path"] for mres in result["models"].values()
                    for systems in mres["systems"].values() for e in systems.values()
                    if (e.get("artifact") or {}).get("build", {}).get("stale_code")})
    if stale:
        parts.append("**Warning:** these artifacts came from the cache and were built from different tarq sources "
                     "than this run's (re-run with `--rebuild`): " + ", ".join(f"`{p}`" for p in stale))
    m = result["meta"]
    has_torch = any(mres["systems"].get("torch") for mres in result["models"].values())
    torch_part = f"torch: {cfg['torch_limit']}" if has_torch else "no torch pass"
    limits = ("all utterances" if cfg["limit"] is None else
              f"seeded subsets of {cfg['limit']} utterances per set (seed {cfg['seed']}; {torch_part})")
    parts.append(f"Run: {limits}; calibration {cfg['calib']} ({cfg['n_calib']} utts); load average "
                 f"{m['loadavg_start']} → {m['loadavg_end']}; {m['wall_s']:.0f} s total.")
    return "\n\n".join(parts)


def plot(result: dict, path: Path) -> Path:
    """Per model: WER and rare-WER of each whisper.cpp system per set and the mean over sets; the error bar is the
    95 % CI of the paired difference to GPTQ, drawn around the method's own rate."""
    plt = pyplot()
    models = list(result["models"])
    fig, axes = plt.subplots(len(models), 2, figsize=(13, 3.8 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        systems = result["models"][model]["systems"]["whisper.cpp"]
        groups = [d["name"] for d in next(iter(systems.values()))["result"]["datasets"]] + ["mean"]
        width = 0.8 / len(systems)
        for col, metric in enumerate(METRICS):
            ax = axes[row][col]
            for j, (m, e) in enumerate(systems.items()):
                rates = {d["name"]: d["scores"][metric] for d in e["result"]["datasets"]}
                rates["mean"] = e["result"]["mean"][metric]
                comp = (e["comparisons"].get("gptq") or {}).get(metric)
                err = None
                if comp:
                    err = [[100 * max(0.0, (comp[g]["diff"] or 0) - (comp[g]["lo"] or 0)) for g in groups],
                           [100 * max(0.0, (comp[g]["hi"] or 0) - (comp[g]["diff"] or 0)) for g in groups]]
                ax.bar([i + j * width for i in range(len(groups))], [100 * (rates[g] or 0) for g in groups], width,
                       yerr=err, capsize=2, label=e["label"])
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
            ax.set_xticklabels(groups, fontsize=8)
            ax.set_ylabel(f"{metric.replace('_', '-')} %")
            ax.set_title(f"{model}, whisper.cpp Q4_0: {metric.replace('_', '-')} "
                         "(error bar: 95 % CI of the difference to GPTQ)", fontsize=8)
            ax.legend(fontsize=7)
    return save_plot(fig, path)


# ----------------------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, "bench_accuracy.json")
    p.add_argument("--models", default="tiny.en,base",
                   help="comma-separated model aliases (default tiny.en,base; tiny.en alone takes about a third "
                        "of the time)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    p.add_argument("--data-root", help="folder with the shared speech sets (default ../shared/data)")
    p.add_argument("--eval-sets", default=",".join(EVAL_SETS), help="evaluation set folder names")
    p.add_argument("--limit", type=int, default=60, help="utterances per evaluation set (seeded subset; default 60)")
    p.add_argument("--torch-limit", type=int, default=24, help="utterances per set for the torch pass (default 24)")
    p.add_argument("--full", action="store_true",
                   help="decode every utterance of every set (both backends)")
    p.add_argument("--skip-torch", action="store_true", help="skip the PyTorch fake-quant pass")
    p.add_argument("--n-calib", type=int, default=32,
                   help="calibration utterances, a seeded subset chosen by tarq quantize (default 32, which keeps "
                        "the default run (both models) under 30 min on 2 cores; 128 = the paper's budget, the whole "
                        "set)")
    p.add_argument("--seed", type=int, default=0, help="subset and bootstrap seed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--torch-batch", type=int, default=8)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--quant-timeout", type=float, default=3600, help="seconds allowed per quantization")
    p.add_argument("--rebuild", action="store_true", help="ignore cached quantized dirs / .bin files")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--reuse-decodes", action="store_true",
                   help="reuse hypotheses decoded by an earlier run for the same artifact, subset and threads "
                        "(resume an interrupted run; they are always saved under benchmarks/.cache/decodes)")
    p.add_argument("--build-only", action="store_true",
                   help="only build (or find cached) the quantized dirs and .bin files, then exit")
    p.add_argument("--rescore", action="store_true",
                   help="do not decode: re-score the stored hypotheses of --out in place (scores, bootstrap, tables)")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.methods = [m for m in args.methods.split(",") if m]
    args.eval_sets = [s for s in args.eval_sets.split(",") if s]
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown method(s) {bad}; choose from {','.join(METHODS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        print(f"accuracy: models {args.models}, methods {args.methods}, sets {args.eval_sets}, "
              f"{'all' if args.full else args.limit} utts/set in whisper.cpp, "
              f"{'no' if args.skip_torch else ('all' if args.full else args.torch_limit)} utts/set in torch, "
              f"calib {CALIB_SET} x {args.n_calib} -> {args.out}")
        return 0
    if args.build_only:
        root = resolve_data_root(args.data_root)
        for model in args.models:
            build_artifacts(model, args.methods, root / CALIB_SET, args)
        return 0
    if args.rescore:
        ensure_tarq_importable()
        result = rescore(read_json(args.out), args.n_boot, args.seed)
    else:
        result = run(args)
    save_and_report(args.out, result, plot, render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
