"""benchmarks/bench_cpu_family.py on hand-made results: identical-transcript share, paired damage and failures
against values counted by hand, and one-line refusals of unusable inputs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_cpu_family  # noqa: E402

IDS = ["u1", "u2", "u3"]
REFS = ["the cat sat", "a b c d", "(1 second of silence)"]   # the third normalises to no words


def _write(tmp_path: Path, published: list[str], ours: dict[str, str], refs=REFS) -> tuple[Path, Path]:
    utts = {"ids": IDS} | ({"refs": refs} if refs is not None else {})
    grid = {"format": "tarq-grid-results", "systems": [{"method": "f16", "reference": True, "label": "F16", "hyps": {"s": published}},
                        {"method": "qep", "reference": False, "label": "QEP", "hyps": {"s": published}}],
            "utterances": {"s": utts}, "meta": {"machine": {"cpu": "Intel X"}}}
    ev = {"datasets": [{"name": "s", "utterances": [{"id": k, "hyp": v} for k, v in ours.items()]}]}
    g, e = tmp_path / "grid.json", tmp_path / "eval.json"
    g.write_text(json.dumps(grid))
    e.write_text(json.dumps(ev))
    return g, e


def test_counts_match_a_hand_count(tmp_path):
    g, e = _write(tmp_path, ["The cat sat.", "A B C D", "[BLANK_AUDIO]"], {"u1": "the cat sat", "u2": "a", "u3": "you"})
    r = bench_cpu_family.compare(g, "qep", "s", e)
    assert r["n_clips"] == 3 and r["n_identical"] == 1 and r["differ_ids"] == ["u2", "u3"]
    # 7 reference words; the rebuild loses "b c d" and inserts "you": (3 - 0 + 1) / 7
    assert (r["lost"], r["gained"], r["extra_insertions"]) == (3, 0, 1)
    assert r["net_rate"] == pytest.approx(4 / 7)
    assert r["wer_published"] == pytest.approx(0.0) and r["wer_ours"] == pytest.approx(4 / 7)
    assert r["failures_published"]["truncations"] == 0 and r["failures_published"]["phantoms"] == 0
    assert r["failures_ours"]["truncations"] == 1 and r["failures_ours"]["phantoms"] == 1
    assert r["failures_ours"]["ids"]["phantom"] == ["u3"] and r["published_cpu"] == "Intel X"
    table = bench_cpu_family.render_markdown({"pairs": [r], "meta": {"machine": {"cpu": "AMD Y"}}})
    assert "1 (33.3 %)" in table and "0/0/0/0 → 0/1/0/1" in table and "AMD Y" in table


@pytest.mark.parametrize("case, message", [
    ("missing", "missing"), ("redacted", "redacted"), ("method", "method 'gptq'"), ("pair", "expected")])
def test_unusable_inputs_are_refused_in_one_line(tmp_path, case, message):
    if case == "pair":
        with pytest.raises(SystemExit, match=message):
            bench_cpu_family.parse_pair("grid.json:qep:eval.json")
        return
    ours = {"u1": "x", "u2": "y"} if case == "missing" else {"u1": "x", "u2": "y", "u3": ""}
    g, e = _write(tmp_path, ["a", "b", "c"], ours, refs=None if case == "redacted" else REFS)
    with pytest.raises(SystemExit, match=message):
        bench_cpu_family.compare(g, "gptq" if case == "method" else "qep", "s", e)
