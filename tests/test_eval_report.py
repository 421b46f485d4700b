"""Tables stay readable in an 80-column terminal or a pipe: nothing wider than 80, no header cut to "rar…"."""
from __future__ import annotations

import io
import random

import pytest

from tarq.eval import DatasetResult, EvalResult
from tarq.eval.damage import compare_damage
from tarq.eval.report import comparison_table, result_tables

LONG_SETS = ("austen-tts-dev-noisy", "asterisk-prompts", "foldoc-tts-dev")
VOCAB = "the zyxel router press one key 1947 impropriety abode sparc ousterhout".split()


def _system(label, seed, n=40, loop_every=0):
    rng = random.Random(seed)
    sets = []
    for name in LONG_SETS:
        refs = [" ".join(random.Random(i).choice(VOCAB) for _ in range(6)) for i in range(n)]
        hyps = []
        for i, r in enumerate(refs):
            w = [x if rng.random() > 0.15 else rng.choice(VOCAB) for x in r.split()]
            if loop_every and i % loop_every == 0:
                w += ["again"] * 30
            hyps.append(" ".join(w))
        sets.append(DatasetResult(name=name, path=name, ids=[f"{name}-{i}" for i in range(n)], refs=refs,
                                  hyps=hyps, durations=[3.0] * n, seconds=[0.4] * n, cache_hits=n // 2))
    return EvalResult(system={"label": label, "backend": "whisper.cpp", "policy": "greedy"}, datasets=sets)


def _render(table, width=80) -> str:
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, force_terminal=False).print(table)
    return buf.getvalue()


def _check(text: str, must_contain: list[str]):
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert "…" not in text and "..." not in text
    for word in must_contain:
        assert word in text, f"{word!r} missing (cut or wrapped) in:\n{text}"


def test_result_tables_fit_80_columns():
    ref = _system("whisper.cpp F16 tiny.en", 1)
    res = _system("TARQ q4_0 tiny.en (n=128, seed 0)", 2, loop_every=7)
    res.attach_reference(ref, n_boot=100)
    tables = result_tables(res)
    assert len(tables) == 4
    text = "\n".join(_render(t) for t in tables)
    _check(text, ["dataset / class", "words", "lost", "gained", "+ins", "net %", "95 % CI", "loops", "trunc.",
                  "empty", "WER %", "rare-", "common-", "numeral-", "S/D/I", "utts", "numerals", "RTF", "utt/s",
                  "cached", "policy greedy", *LONG_SETS, "pooled"])
    # the damage rows are complete: four classes per set
    assert text.count("  numeral ") >= 4


def test_comparison_table_fits_80_columns():
    from tarq.cli.evaluate import compare

    ref = _system("F16", 1)
    a, b = _system("GPTQ q4_0", 2), _system("whisper.cpp RTN q4_0 (quantize)", 3, loop_every=5)
    rows = compare(a, b, n_boot=100)
    damage_rows = compare_damage(a, b, ref, n_boot=100)
    text = _render(comparison_table(a.label, b.label, rows, damage_rows, policy="greedy"))
    _check(text, ["metric / dataset", "A - B", "95 % CI", "res.", "verdict", "damage", "rare dmg", "rare-WER",
                  "within noise" if "within noise" in text else "better", *LONG_SETS])


@pytest.mark.parametrize("width", [80, 120])
def test_tables_without_reference(width):
    text = "\n".join(_render(t, width) for t in result_tables(_system("x", 4)))
    assert "Damage" not in text and "new" not in text and "loops" in text


def test_demo_summary_fits_80_columns(tmp_path):
    from tarq.cli.demo import summary_table

    systems = []
    results = {}
    for i, label in enumerate(("F16", "whisper.cpp RTN q4_0", "TARQ q4_0 (tarq)")):
        p = tmp_path / f"{i}.bin"
        p.write_bytes(b"\0" * 1000)
        systems.append((label, p))
        r = _system(label, i, loop_every=9 if i == 1 else 0)
        r.datasets = r.datasets[:1]
        if i:
            r.attach_reference(results["F16"], n_boot=100)
        results[label] = r
    text = _render(summary_table("tiny.en", "eval", systems, results))
    _check(text, ["system", "MB", "damage", "95 % CI", "rare", "dmg %", "WER %", "rare-", "whisper.cpp RTN q4_0",
                  "TARQ q4_0 (tarq)", "policy greedy"])
    # the demo's closing comparison: damage rows only
    rows = compare_damage(results["TARQ q4_0 (tarq)"], results["whisper.cpp RTN q4_0"], results["F16"], n_boot=100)
    text = _render(comparison_table("TARQ q4_0 (tarq)", "whisper.cpp RTN q4_0", [], rows, policy="greedy"))
    _check(text, ["100 resamples", "damage", "rare dmg", "res.", "verdict"])


def test_compare_damage_pairs_by_utterance_id_whatever_the_order():
    """Two results of the same utterances listed in different orders (a grid cell's seeded subset vs a manifest's
    order) pair row by row by id: the same difference as with matching orders."""
    from dataclasses import replace

    ref = _system("F16", 1)
    a, b = _system("A", 2), _system("B", 3, loop_every=5)
    want = compare_damage(a, b, ref, n_boot=50)
    shuffled = []
    for d in b.datasets:
        order = list(range(len(d.ids)))
        random.Random(7).shuffle(order)
        shuffled.append(replace(d, ids=[d.ids[i] for i in order], refs=[d.refs[i] for i in order],
                                hyps=[d.hyps[i] for i in order], durations=[d.durations[i] for i in order],
                                seconds=[d.seconds[i] for i in order]))
    b2 = EvalResult(system=b.system, datasets=shuffled)
    got = compare_damage(a, b2, ref, n_boot=50)
    assert [(n, r["diff"], r["ci"]) for n, r in got] == [(n, r["diff"], r["ci"]) for n, r in want]
