"""Renderer of the accuracy results written before the benchmark ran on ``tarq grid`` (the committed
``bench_accuracy.json`` / ``bench_accuracy_n128.json`` until they are re-run): tables, plot and re-scoring of that
older layout (``models.M.systems.BACKEND.METHOD``). ``bench_accuracy.py`` dispatches here for files without
``"format": "tarq-grid-results"``."""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict
from pathlib import Path

from _common import fmt_num, markdown_table, pyplot, save_plot

LABEL = {"fp16": "FP16", "rtn": "whisper.cpp RTN", "gptq": "GPTQ", "rarebal": "rareBAL", "tarq": "TARQ",
         "qep": "QEP"}
TORCH_LABEL = {**LABEL, "fp16": "FP32", "rtn": "RTN"}
REFERENCES = ("gptq", "rtn")          # every method is compared against these
METRICS = ("wer", "rare_wer")
METRIC_LABEL = {"wer": "WER", "rare_wer": "rare-WER"}


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
