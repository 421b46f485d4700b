"""The size/accuracy frontier of a grid that spans several ggml types (issue 10): one row per quantized system with
its size in bits per weight, damage against F16 and WER, and its paired comparison with the baselines of the same
type; a plot of bits per weight against WER, rare-WER and damage.

Bits per weight are read off the files: ``16 * bytes / bytes(F16 file of the same model)``. The F16 file stores
every tensor whisper.cpp reads (weights, biases, norms, the vocabulary and mel filters), so this is the size a user
pays per weight of the F16 model, tensors the type does not touch included — not the type's nominal block rate
(Q4_0's 4.5 bits). It needs the grid's F16 reference system; without one the column is left empty.
"""
from __future__ import annotations

from ..eval.damage import FAILURE_KEYS
from .render import DISPLAY, _ci, _none, _p, _table, _verdict, display_name, groups, save_figure


def bits_per_weight(nbytes, f16_bytes) -> float | None:
    if not nbytes or not f16_bytes:
        return None
    return 16.0 * nbytes / f16_bytes


def spans_types(doc: dict) -> bool:
    """True when the grid has quantized systems of more than one ggml type (a frontier to show)."""
    return len({s["type"] for s in doc["systems"] if not s["reference"] and s.get("type")}) > 1


def _oriented(row: dict, sign: float) -> dict:
    """A comparison row's difference and CI as (this - other): flipped when this system was B."""
    diff, ci = row["diff"], row["ci"]
    if sign > 0 or _none(diff):
        return {"diff": diff, "ci": ci}
    return {"diff": -diff, "ci": [None if _none(ci[1]) else -ci[1], None if _none(ci[0]) else -ci[0]]}


def frontier_rows(doc: dict) -> list[dict]:
    """One record per quantized system with a pooled result: model, runtime, policy, method, type, bytes, bpw,
    pooled damage / rare damage (+ CI against F16), mean WER / rare-WER, failures summed over sets, and the paired
    pooled damage differences (this system − the other) against each baseline of the same type, or, for a
    baseline, against each other method it was compared with."""
    rows = []
    for (model, runtime, policy), systems in groups(doc):
        ref = next((s for s in systems if s["reference"]), None)
        f16_bytes = (ref or {}).get("build", {}).get("bytes")
        for s in systems:
            if s["reference"] or not s.get("pooled"):
                continue
            dmg = s["pooled"].get("damage") or {}
            # None: a kind these results did not count (made before it existed), not zero
            fails = [None] * len(FAILURE_KEYS)
            for d in s["datasets"].values():
                f = d.get("failures") or {}
                for i, k in enumerate(FAILURE_KEYS):
                    if k in f:
                        fails[i] = (fails[i] or 0) + (f[k] or 0)
            vs = {}
            for c in doc.get("comparisons", []):
                # stored once per pair (A - B); this row reads it as (this system - other), flipped when it is B
                if s["key"] not in (c["a"], c["b"]):
                    continue
                other, sign = (c["baseline"], 1.0) if c["a"] == s["key"] else (c["method"], -1.0)
                by = {(r["dataset"], r["metric"]): r for r in c["rows"]}
                vs[other] = {m: _oriented(by[("pooled", m)], sign)
                             for m in ("net_rate", "net_rare_rate") if ("pooled", m) in by}
            mean = s.get("mean") or {}
            nbytes = (s.get("build") or {}).get("bytes")
            rows.append({"model": model, "runtime": runtime, "policy": policy, "key": s["key"],
                         "name": display_name(s), "method": s["method"], "type": s["type"], "bytes": nbytes,
                         "bpw": bits_per_weight(nbytes, f16_bytes),
                         "damage": dmg.get("net_rate"), "damage_ci": dmg.get("net_rate_ci"),
                         "rare_damage": dmg.get("net_rare_rate"), "rare_damage_ci": dmg.get("net_rare_rate_ci"),
                         "wer": mean.get("wer"), "rare_wer": mean.get("rare_wer"),
                         "failures": fails, "vs": vs})
    rows.sort(key=lambda r: (r["model"], r["runtime"], r["policy"], r["bpw"] if r["bpw"] is not None else 99,
                             r["type"], r["method"]))
    return rows


def _row_verdict(ci) -> str:
    """This row against the column's system (damage: lower is better)."""
    v = _verdict(ci)
    return {"A better": "better", "B better": "worse"}.get(v, v)


def _vs_cell(row: dict, baseline: str) -> str:
    v = row["vs"].get(baseline)
    if not v:
        return "–"
    out = []
    for m in ("net_rate", "net_rare_rate"):
        r = v.get(m)
        if not r or _none(r["diff"]):
            out.append("–")
            continue
        out.append(f"{_ci(r['diff'], r['ci'])} ({_row_verdict(r['ci'])})")
    return " · ".join(out)


def render_frontier(doc: dict) -> str:
    """Markdown: per model/runtime/policy one table sorted by size."""
    rows = frontier_rows(doc)
    baselines = list(doc.get("spec", {}).get("baselines") or [])
    parts = ["Bits per weight: 16 × file bytes / F16 file bytes (whole file, every tensor). Damage: net words lost "
             "against F16, pooled over sets, % with the paired 95 % CI; WER: mean over sets. "
             "vs X: this system − X at the same type, damage · rare damage, points, with the paired 95 % CI "
             "(negative: this system lost fewer words)."]
    if doc.get("subset"):
        parts.insert(0, "**Seeded subsets: a quick look, not published numbers.**")
    for (model, runtime, policy) in dict.fromkeys((r["model"], r["runtime"], r["policy"]) for r in rows):
        sub = [r for r in rows if (r["model"], r["runtime"], r["policy"]) == (model, runtime, policy)]
        head = ["system", "bits/weight", "MB", "damage", "rare damage", "WER / rare-WER", "loops/trunc./empty/phantom"]
        head += [f"vs {DISPLAY.get(b, b)}" for b in baselines]
        table = []
        for r in sub:
            table.append([r["name"], "–" if r["bpw"] is None else f"{r['bpw']:.2f}",
                          "–" if not r["bytes"] else f"{r['bytes'] / 1e6:.1f}",
                          _ci(r["damage"], r["damage_ci"]), _ci(r["rare_damage"], r["rare_damage_ci"]),
                          f"{_p(r['wer'], False)} / {_p(r['rare_wer'], False)}",
                          "/".join("–" if n is None else str(n) for n in r["failures"])]
                         + [_vs_cell(r, b) for b in baselines])
        parts.append(f"### Frontier: {model}, {runtime}, decoding policy {policy}\n\n" + _table(head, table))
    return "\n\n".join(parts)


def plot_frontier(doc: dict, path):
    """Per model/runtime/policy: bits per weight against mean WER, mean rare-WER (F16 as a dashed line), pooled
    damage and rare damage (95 % CI against F16 as error bars); every file a point labelled with its type, one line
    per method through its best file at each size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = [r for r in frontier_rows(doc) if r["bpw"] is not None]
    keys = list(dict.fromkeys((r["model"], r["runtime"], r["policy"]) for r in rows))
    if not keys:
        return None
    refs = {(m, rt, p): next((s for s in ss if s["reference"]), None) for (m, rt, p), ss in groups(doc)}
    fig, grid = plt.subplots(2 * len(keys), 2, figsize=(13, 8 * len(keys)), squeeze=False)
    for i, key in enumerate(keys):
        panels = [grid[2 * i][0], grid[2 * i][1], grid[2 * i + 1][0], grid[2 * i + 1][1]]
        sub = [r for r in rows if (r["model"], r["runtime"], r["policy"]) == key]
        methods = list(dict.fromkeys(r["method"] for r in sub))
        ref_mean = ((refs.get(key) or {}).get("mean") or {})
        for j, (metric, title) in enumerate((("wer", "WER, % (mean over sets)"),
                                             ("rare_wer", "rare-WER, % (mean over sets)"),
                                             ("damage", "damage vs F16, % of words (pooled)"),
                                             ("rare_damage", "rare damage vs F16, % (pooled)"))):
            ax = panels[j]
            for k, m in enumerate(methods):
                pts = sorted((r for r in sub if r["method"] == m and not _none(r[metric])), key=lambda r: r["bpw"])
                if not pts:
                    continue
                xs = [r["bpw"] + 0.03 * (k - (len(methods) - 1) / 2) for r in pts]   # methods side by side
                ys = [100 * r[metric] for r in pts]
                ci = [r.get(metric + "_ci") for r in pts]
                if metric in ("damage", "rare_damage") and all(c and not any(_none(x) for x in c) for c in ci):
                    err = [[100 * (r[metric] - c[0]) for r, c in zip(pts, ci)],
                           [100 * (c[1] - r[metric]) for r, c in zip(pts, ci)]]
                    ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=2, color=f"C{k}")
                else:
                    ax.plot(xs, ys, "o", color=f"C{k}")
                # the line is the method's frontier: its best file at each size (types of one size share an x)
                best = {}
                for x, y, r in zip(xs, ys, pts):
                    if r["bpw"] not in best or y < best[r["bpw"]][1]:
                        best[r["bpw"]] = (x, y)
                line = sorted(best.values())
                ax.plot([p[0] for p in line], [p[1] for p in line], "-", color=f"C{k}", label=DISPLAY.get(m, m))
                for r, x, y in zip(pts, xs, ys):
                    ax.annotate(r["type"], (x, y), fontsize=5, textcoords="offset points", xytext=(2, 2))
            if metric in ("wer", "rare_wer") and not _none(ref_mean.get(metric)):
                ax.axhline(100 * ref_mean[metric], color="black", linestyle="--", linewidth=0.8, label="F16")
            if metric in ("damage", "rare_damage"):
                ax.axhline(0, color="black", linewidth=0.5)
            # Q2_K's loops reach hundreds of points: log axes, with plain numbers on them
            plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
            if metric in ("wer", "rare_wer"):
                ax.set_yscale("log")
                ax.yaxis.set_minor_formatter(plain)
            else:
                ax.set_yscale("symlog", linthresh=10)
                ax.yaxis.set_major_locator(ticker.SymmetricalLogLocator(base=10, linthresh=10, subs=[1, 2, 5]))
            ax.yaxis.set_major_formatter(plain)
            ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
            ax.set_xlabel("bits per weight (16 × bytes / F16 bytes)")
            ax.set_title(f"{key[0]}, {key[1]}, {key[2]}: {title}", fontsize=8)
            ax.legend(fontsize=6)
    return save_figure(fig, path)
