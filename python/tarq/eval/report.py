"""Terminal tables for results and comparisons, built to stay readable in 80 columns and in a pipe.

Every table is narrow by design (a few short columns; two-line headers instead of truncated ones; long cells
fold, never end in "..."). ``tests/test_eval_report.py`` renders them at width 80 and checks that no header is cut.
Damage against the reference system leads; WER / rare-WER follow. Every title names the decoding policy.
"""
from __future__ import annotations

import math

from .bootstrap import BootstrapResult
from .damage import FAILURE_KEYS
from .results import EvalResult

TABLE_WIDTH = 80
CLASSES = (("all", "net_rate", "n_words", "lost", "gained"),
           ("rare", "net_rare_rate", "n_rare", "lost_rare", "gained_rare"),
           ("common", "net_common_rate", "n_common", "lost_common", "gained_common"),
           ("numeral", "net_numeral_rate", "n_numeral", "lost_numeral", "gained_numeral"))


def _none(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _pct(x) -> str:
    return "-" if _none(x) else f"{100 * x:.2f}"


def _spct(x) -> str:
    return "-" if _none(x) else f"{100 * x:+.2f}"


def _ci(ci) -> str:
    if not ci or any(_none(v) for v in ci):
        return "-"
    return f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"


def _table(title: str, columns: list[str], left: int = 1):
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i < left else "right", overflow="fold", no_wrap=False)
    return t


def system_title(result: EvalResult) -> str:
    return f"{result.label} ({result.system.get('backend', '?')}, policy {result.policy})"


def damage_table(result: EvalResult):
    """Lost / gained words per class and the net damage with its paired 95 % CI, per dataset and pooled."""
    per, pooled = result.damage_blocks()
    if not per:
        return None
    ref = (result.reference or {}).get("label", "reference")
    t = _table(f"Damage of {system_title(result)} against {ref}: words the reference system got right and "
               "this one lost, or the opposite; net % = (lost - gained + extra insertions) / words",
               ["dataset / class", "words", "lost", "gained", "+ins", "net %", "95 % CI"])
    blocks = [(d.name, per[d.name]) for d in result.datasets if d.name in per]
    if pooled is not None and len(blocks) > 1:
        blocks.append(("pooled", pooled))
    for name, b in blocks:
        dmg, det = b["damage"], b["damage_detail"]
        t.add_row(f"[bold]{name}[/bold]", *[""] * 6)
        for cls, rate, n, lost, gained in CLASSES:
            value = dmg.get(rate, det.get(rate))
            ci = dmg.get(f"{rate}_ci", det.get(f"{rate}_ci"))
            t.add_row(f"  {cls}", str(det[n]), str(dmg[lost]), str(dmg[gained]),
                      f"{dmg['extra_insertions']:+d}" if cls == "all" else "", _spct(value), _ci(ci))
    return t


def failures_table(result: EvalResult):
    """Loops, truncations, empty outputs and phantoms; paired with the reference system when there is one."""
    per, pooled = result.damage_blocks()
    paired = bool(per)
    heads = {"loops": "loops", "truncations": "trunc.", "empty": "empty", "phantoms": "phantom"}
    cols = ["dataset"]
    for key in FAILURE_KEYS:
        cols.append(f"{heads[key]}\n(new)" if paired else heads[key])
    if paired:
        cols += ["new / fixed\n(any)", "sign\ntest p"]
    t = _table(f"Failures of {system_title(result)}: loop = over 2x the reference's words + 8, truncated = under "
               "half, empty = no words, phantom = words where the reference has none"
               + (f"; new = not so in {result.reference.get('label')}; sign test p: the clips failing only here "
                  "against those failing only there (above 0.05: not told apart)" if paired else ""), cols)
    rows = []
    for d in result.datasets:
        f = per[d.name]["failures"] if d.name in per else d.to_dict()["failures"]
        rows.append((d.name, f))
    if paired and pooled is not None and len(rows) > 1:
        rows.append(("pooled", pooled["failures"]))
    for name, f in rows:
        cells = []
        for key in FAILURE_KEYS:
            cells.append(f"{f.get(key, '-')} ({f.get(f'new_{key}', '-')})" if paired else str(f.get(key, "-")))
        if paired:
            cells.append(f"{f['new_failures']} / {f['fixed_failures']}" if "new_failures" in f else "-")
            cells.append(f"{f['sign_test_p']:.2g}" if "sign_test_p" in f else "-")
        t.add_row(name, *cells)
    return t


def wer_table(result: EvalResult):
    t = _table(f"WER of {result.label} ({result.system.get('backend', '?')}, policy {result.policy}; rare: Zipf < "
               f"{result.k:g}; insertions: {result.insertion_rule})",
               ["dataset", "WER %", "rare-\nWER %", "common-\nWER %", "numeral-\nWER %", "S/D/I"])
    for d in result.datasets:
        s = d.scores
        t.add_row(d.name, _pct(s.wer), _pct(s.rare_wer), _pct(s.common_wer), _pct(s.numeral_wer),
                  f"{s.substitutions}/{s.deletions}/{s.insertions}")
    if len(result.datasets) > 1:
        m = result.mean()
        t.add_row("mean", _pct(m["wer"]), _pct(m["rare_wer"]), _pct(m["common_wer"]), _pct(m["numeral_wer"]), "",
                  style="bold")
    return t


def counts_table(result: EvalResult):
    t = _table(f"Data and speed of {result.label}", ["dataset", "utts", "words", "rare", "numerals", "RTF", "utt/s",
                                                       "cached"])
    for d in result.datasets:
        s, info = d.scores, d.to_dict()
        t.add_row(d.name, str(s.n_utts), str(s.n_words), str(s.n_rare), str(s.n_numeral),
                  "-" if info["rtf"] is None else f"{info['rtf']:.3f}",
                  "-" if info["utts_per_second"] is None else f"{info['utts_per_second']:.2f}",
                  "-" if d.cache_hits is None else str(d.cache_hits))
    return t


def result_tables(result: EvalResult) -> list:
    """All tables of one result, damage first."""
    return [t for t in (damage_table(result), failures_table(result), wer_table(result), counts_table(result))
            if t is not None]


def results_table(result: EvalResult):
    """The WER table (kept for callers that print one table)."""
    return wer_table(result)


def _verdict(lo, hi) -> str:
    if _none(lo) or _none(hi):
        return "n/a"
    if hi < 0:
        return "A better"
    if lo > 0:
        return "B better"
    return "within noise"


METRIC_NAMES = {"wer": "WER", "rare_wer": "rare-WER", "common_wer": "common", "numeral_wer": "numeral",
                "net_rate": "damage", "net_rare_rate": "rare dmg"}


def comparison_table(label_a: str, label_b: str, rows: list[tuple[str, BootstrapResult]],
                     damage_rows: list[tuple[str, dict]] | None = None, policy: str | None = None):
    """A - B per dataset and metric (points), the paired 95 % CI, the resolvable difference (its half-width)
    and the verdict. ``damage_rows`` (tarq.eval.damage.compare_damage) lead."""
    if rows:
        boot = (rows[0][1].n_boot, rows[0][1].seed, rows[0][1].confidence)
    elif damage_rows:
        boot = (damage_rows[0][1]["n_boot"], damage_rows[0][1]["seed"], damage_rows[0][1]["confidence"])
    else:
        boot = None
    title = f"A = {label_a}, B = {label_b}" + (f" (policy {policy})" if policy else "") + ": A - B in points"
    if boot is not None:
        title += f", paired bootstrap ({boot[0]} resamples, seed {boot[1]}, {100 * boot[2]:g} % CI)"
    title += "; res. = half the CI, the smallest difference this data resolves; negative = A better"
    t = _table(title, ["metric / dataset", "A - B", "95 % CI", "res.", "verdict"])
    groups: dict[str, list] = {}
    for name, r in damage_rows or []:
        groups.setdefault(r["metric"], []).append((name, r["diff"], r["ci"], r["resolvable"]))
    for name, r in rows:
        res = None if _none(r.lo) or _none(r.hi) else (r.hi - r.lo) / 2
        groups.setdefault(r.metric, []).append((name, r.diff, [r.lo, r.hi], res))
    for metric, items in groups.items():
        t.add_row(f"[bold]{METRIC_NAMES.get(metric, metric)}[/bold]", "", "", "", "")
        for name, diff, ci, res in items:
            t.add_row(f"  {name}", _spct(diff), _ci(ci), _pct(res), _verdict(*ci))
    return t
