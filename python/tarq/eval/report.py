"""Rich tables for results and comparisons (percentages, one row per dataset plus the mean)."""
from __future__ import annotations

import math

from .bootstrap import BootstrapResult
from .results import EvalResult


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def results_table(result: EvalResult):
    from rich.table import Table

    t = Table(title=f"{result.label}  ({result.system.get('backend', '?')}, rare: Zipf < {result.k:g}, "
                        f"insertions: {result.insertion_rule})")
    for col in ("dataset", "WER %", "rare-WER %", "common-WER %", "numeral-WER %", "utts", "words", "rare",
                "numerals", "S/D/I", "RTF", "utt/s"):
        t.add_column(col, justify="left" if col == "dataset" else "right")
    for d in result.datasets:
        s, info = d.scores, d.to_dict()
        t.add_row(d.name, _pct(s.wer), _pct(s.rare_wer), _pct(s.common_wer), _pct(s.numeral_wer), str(s.n_utts),
                  str(s.n_words), str(s.n_rare), str(s.n_numeral),
                  f"{s.substitutions}/{s.deletions}/{s.insertions}",
                  "-" if info["rtf"] is None else f"{info['rtf']:.3f}",
                  "-" if info["utts_per_second"] is None else f"{info['utts_per_second']:.2f}")
    if len(result.datasets) > 1:
        m = result.mean()
        t.add_row("mean", _pct(m["wer"]), _pct(m["rare_wer"]), _pct(m["common_wer"]), _pct(m["numeral_wer"]),
                  *[""] * 7, style="bold")
    return t


def comparison_table(label_a: str, label_b: str, rows: list[tuple[str, BootstrapResult]]):
    from rich.table import Table

    first = rows[0][1] if rows else None
    title = f"{label_a} - {label_b}: paired bootstrap"
    if first is not None:
        title += f" ({first.n_boot} resamples, seed {first.seed}, {100 * first.confidence:g} % CI)"
    t = Table(title=title)
    for col in ("dataset", "metric", f"{label_a} %", f"{label_b} %", "diff (pts)", "CI (pts)", "P(A better)",
                "verdict"):
        t.add_column(col, justify="left" if col in ("dataset", "metric", "verdict") else "right")
    for name, r in rows:
        if math.isnan(r.diff):
            verdict = "n/a"
        elif r.significant:
            verdict = f"{label_a if r.diff < 0 else label_b} better"
        else:
            verdict = "within noise"
        t.add_row(name, r.metric, _pct(r.a), _pct(r.b), f"{100 * r.diff:+.2f}",
                  f"[{100 * r.lo:+.2f}, {100 * r.hi:+.2f}]", f"{r.p_a_better:.3f}", verdict)
    return t
