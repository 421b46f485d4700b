"""Markdown tables and plots of a grid's ``results.json`` (what benchmarks/README.md shows).

Per model, runtime and decoding policy: damage against the F16 reference (all words, then rare words) with
paired 95 % CIs, failures, WER / rare-WER, the paired comparisons against the baselines with the resolvable
difference (half the CI) of each data set, and the build / decode cost.
"""
from __future__ import annotations

import math
import statistics

from ..eval.damage import FAILURE_KEYS

DISPLAY = {"ggml": "whisper.cpp RTN", "rtn": "RTN", "gptq": "GPTQ", "rarebal": "rareBAL", "tarq": "TARQ",
           "qep": "QEP", "f16": "F16"}
METRIC_TITLE = {"net_rate": "damage", "net_rare_rate": "rare damage", "wer": "WER", "rare_wer": "rare-WER"}


def _none(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _p(x, sign=True) -> str:
    return "–" if _none(x) else (f"{100 * x:+.2f}" if sign else f"{100 * x:.2f}")


def _ci(v, ci) -> str:
    if _none(v) or not ci or any(_none(c) for c in ci):
        return "–"
    return f"{100 * v:+.2f} [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"


def _degenerate(ci) -> bool:
    """A CI of zero width: every resample gives the same difference (no discordant word, or a single word of the
    class): no information about resolution, not infinite resolution."""
    return bool(ci) and not any(_none(c) for c in ci) and ci[0] == ci[1]


def _res(r) -> str:
    if _none(r["resolvable"]):
        return "–"
    if _degenerate(r["ci"]):
        return _ci(r["diff"], r["ci"]) + " (zero-width CI)"
    return _ci(r["diff"], r["ci"]) + f" ±{100 * r['resolvable']:.2f}"


def _table(head, rows, align=None) -> str:
    align = align or ("l" + "r" * (len(head) - 1))
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def display_name(s: dict) -> str:
    name = DISPLAY.get(s["method"], s["method"])
    parts = [name] + ([s["type"].upper()] if s.get("type") else []) + ([f"seed {s['seed']}"]
                                                                         if s.get("seed") not in (None, 0) else [])
    return " ".join(parts)


def groups(doc: dict) -> list[tuple[tuple, list[dict]]]:
    out: dict[tuple, list] = {}
    for s in doc["systems"]:
        out.setdefault((s["model"], s["runtime"], s["policy"]), []).append(s)
    return list(out.items())


def _verdict(ci) -> str:
    if not ci or any(_none(c) for c in ci):
        return "n/a"
    return "A better" if ci[1] < 0 else "B better" if ci[0] > 0 else "within noise"


def render_markdown(doc: dict) -> str:
    sets = list(doc["data"])
    parts = []
    if doc.get("subset"):
        lim = ", ".join(f"{n}: {d['n_utts']}" for n, d in doc["data"].items())
        parts.append(f"**Fast subset ({lim} utterances, seeded): a quick look, not published numbers** "
                     "(run with `--full` for every utterance).")
    for (model, runtime, policy), systems in groups(doc):
        quant = [s for s in systems if not s["reference"]]
        ref = next((s for s in systems if s["reference"]), None)
        head = f"### {model}, {runtime}, decoding policy: {policy}"
        data_line = "; ".join(f"{n}: {d['n_utts']} utts, {d['n_words']} words, {d['n_rare']} rare"
                              for n, d in doc["data"].items())
        parts.append(f"{head}\n\nReference system: {ref['label'] if ref else 'missing'}. Data: {data_line}.")
        cols = sets + ["pooled"]
        for metric, what, lost, gained in (("net_rate", "all words", "lost", "gained"),
                                           ("net_rare_rate", "rare words", "lost_rare", "gained_rare")):
            rows = []
            for s in quant:
                blocks = [s["datasets"].get(n, {}).get("damage") for n in sets] + [(s["pooled"] or {}).get("damage")]
                pooled = blocks[-1] or {}
                ins = f" / {pooled['extra_insertions']:+d}" if metric == "net_rate" and pooled else ""
                rows.append([display_name(s)] + [_ci(b.get(metric), b.get(metric + "_ci")) if b else "–"
                                                  for b in blocks]
                            + [f"{pooled.get(lost, '–')} / {pooled.get(gained, '–')}{ins}"])
            extra = metric == "net_rate"
            parts.append(f"Damage on {what} against F16, % of {what} (net = lost − gained"
                         f"{' + extra insertions' if extra else ''}), paired bootstrap 95 % CI:\n\n"
                         + _table(["system"] + cols + ["lost / gained" + (" / +ins" if extra else "") + " (pooled)"],
                                  rows))
        rows, tested = [], False
        for s in systems:
            cells = []
            for n in sets:
                f = s["datasets"].get(n, {}).get("failures")
                tested = tested or bool(f and "sign_test_p" in f)
                if not f:
                    cells.append("–")
                    continue
                test = f"; p {f['sign_test_p']:.2g}" if "sign_test_p" in f else ""
                new = (" (new " + "/".join(str(f.get(f"new_{k}", "–")) for k in FAILURE_KEYS) + test + ")"
                       if "new_loops" in f else "")
                cells.append("/".join(str(f.get(k, "–")) for k in FAILURE_KEYS) + new)
            rows.append([display_name(s)] + cells)
        parts.append("Failures: loops / truncations / empty outputs / phantoms (loop: over 2× the reference's words "
                     "+ 8; truncation: under half; phantom: words where the reference has none, e.g. on silence; –: "
                     "not counted when these results were made; new: not so for F16 on that utterance"
                     + ("; p: exact two-sided sign test of the clips failing, any kind, only here against those "
                        "failing only in F16 — above 0.05 the set cannot tell the counts apart" if tested else "")
                     + "):\n\n"
                     + _table(["system"] + sets, rows))
        rows = []
        for s in systems:
            rows.append([display_name(s)] + [
                f"{_p(d['scores']['wer'], False)} / {_p(d['scores']['rare_wer'], False)}" if d else "–"
                for d in (s["datasets"].get(n) for n in sets)]
                + [f"{_p((s['mean'] or {}).get('wer'), False)} / {_p((s['mean'] or {}).get('rare_wer'), False)}"])
        parts.append("WER / rare-WER, % (rare: Zipf < 3; mean: unweighted over sets):\n\n"
                     + _table(["system"] + sets + ["mean"], rows))
        comps = [c for c in doc["comparisons"] if (c["model"], c["runtime"], c["policy"]) == (model, runtime, policy)]
        if comps:
            key = {s["key"]: s for s in systems}
            rows = []
            for c in comps:
                for metric in ("net_rate", "net_rare_rate", "wer", "rare_wer"):
                    by = {r["dataset"]: r for r in c["rows"] if r["metric"] == metric}
                    total = by.get("pooled") or by.get("mean")
                    rows.append([display_name(key[c["a"]]), display_name(key[c["b"]]), METRIC_TITLE[metric]]
                                + [_res(by[n]) if n in by else "–" for n in sets]
                                + ([_res(total), _verdict(total["ci"])] if total else ["–", "n/a"]))
            parts.append("Paired comparisons, A − B in points with the 95 % CI and ± the resolvable difference "
                         "(half "
                         "the CI: smaller differences cannot be told apart on this set); negative = A better; the "
                         "last columns pool damage over sets (WER: mean over sets):\n\n"
                         + _table(["A", "B", "metric"] + sets + ["all sets", "verdict"], rows,
                                  "lll" + "r" * (len(sets) + 1) + "l"))
            res_rows = []
            for n in sets + ["pooled"]:
                vals = {m: [r["resolvable"] for c in comps for r in c["rows"]
                            if r["dataset"] == n and r["metric"] == m and not _none(r["resolvable"])
                            and not _degenerate(r["ci"])]
                        for m in ("net_rate", "net_rare_rate")}
                d = doc["data"].get(n, {})
                words = d.get("n_words") if n != "pooled" else sum((x.get("n_words") or 0)
                                                                   for x in doc["data"].values())
                rare = d.get("n_rare") if n != "pooled" else sum((x.get("n_rare") or 0) for x in doc["data"].values())
                res_rows.append([n, words, rare] + [f"±{100 * statistics.median(v):.2f}" if v else "–"
                                                    for v in vals.values()])
            parts.append("Smallest resolvable difference per set (median over the comparisons above of half the "
                         "paired 95 % CI, points; zero-width CIs (no discordant word, or a single word of the class) "
                         "carry no information and are left out):\n\n"
                         + _table(["set", "words", "rare words", "damage", "rare damage"], res_rows))
        rows = []
        for s in systems:
            b = s.get("build") or {}
            dec = sum(d.get("decode_s") or 0 for d in s["datasets"].values())
            hits = sum(d.get("cache_hits") or 0 for d in s["datasets"].values())
            n = sum(d.get("n_utts") or 0 for d in s["datasets"].values())
            rows.append([display_name(s), "–" if not b.get("bytes") else f"{b['bytes'] / 1e6:.1f}",
                         "–" if b.get("quantize_s") is None else f"{b['quantize_s']:.0f}",
                         "–" if b.get("export_s") is None else f"{b['export_s']:.1f}", f"{dec:.0f}", f"{hits}/{n}"])
        parts.append("Cost: model file, quantization and export wall time (`tarq quantize` / `tarq export` in the grid "
                     "task), decode seconds (as first decoded; cached utterances keep the time of their decode):\n\n"
                     + _table(["system", "MB", "quantize s", "export s", "decode s", "cached"], rows))
    if doc.get("missing"):
        parts.append(f"**{len(doc['missing'])} cells have no result yet** (failed or not run): "
                     + ", ".join(f"`{m}`" for m in doc["missing"][:8]) + (" …" if len(doc["missing"]) > 8 else ""))
    return "\n\n".join(parts)


def plot(doc: dict, path):
    """Per model/runtime/policy: damage and rare damage of every quantized system per set and pooled, with the
    paired 95 % CI as error bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gs = groups(doc)
    sets = list(doc["data"]) + ["pooled"]
    fig, axes = plt.subplots(len(gs), 3, figsize=(16, 3.6 * len(gs)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 3, 2]})
    for row, ((model, runtime, policy), systems) in enumerate(gs):
        quant = [s for s in systems if not s["reference"]]
        width = 0.8 / max(1, len(quant))
        for col, metric in enumerate(("net_rate", "net_rare_rate")):
            ax = axes[row][col]
            for j, s in enumerate(quant):
                vals, lo, hi = [], [], []
                for n in sets:
                    b = ((s["pooled"] or {}) if n == "pooled" else s["datasets"].get(n, {})).get("damage") or {}
                    v, ci = b.get(metric), b.get(metric + "_ci") or [None, None]
                    ok = not _none(v) and not any(_none(c) for c in ci)
                    vals.append(100 * v if ok else 0.0)
                    lo.append(100 * (v - ci[0]) if ok else 0.0)
                    hi.append(100 * (ci[1] - v) if ok else 0.0)
                ax.bar([i + (j - (len(quant) - 1) / 2) * width for i in range(len(sets))], vals, width,
                       yerr=[lo, hi], capsize=2, label=display_name(s), color=f"C{systems.index(s)}")
            ax.axhline(0, color="black", linewidth=0.5)
            ax.set_xticks(range(len(sets)), sets, fontsize=7, rotation=15)
            ax.set_ylabel(f"{METRIC_TITLE[metric]} vs F16 (% of words)")
            ax.set_title(f"{model}, {runtime}, policy {policy}: {METRIC_TITLE[metric]} (95 % CI)", fontsize=8)
            ax.legend(fontsize=6)
        ax = axes[row][2]                 # beside the damage: absolute WER and rare-WER (mean over sets)
        width = 0.8 / max(1, len(systems))
        for j, s in enumerate(systems):
            mean = s["mean"] or {}
            ax.bar([i + (j - (len(systems) - 1) / 2) * width for i in range(2)],
                   [100 * (mean.get(m) or 0) for m in ("wer", "rare_wer")], width, label=display_name(s),
                   color=f"C{j}")
        ax.set_xticks(range(2), ["WER", "rare-WER"], fontsize=8)
        ax.set_ylabel("% (mean over sets)")
        ax.set_title(f"{model}: WER and rare-WER", fontsize=8)
        ax.legend(fontsize=6)
    return save_figure(fig, path)


def save_figure(fig, path):
    """Lay out, write atomically (under the umask) as PNG and close a grid figure; returns ``path``."""
    import matplotlib.pyplot as plt

    from tarq._atomic import atomic_path

    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path
