"""benchmarks/bench_failure_origin.py's bookkeeping on hand-made results: which failures are new, the summary
counts, and the refusal of non-greedy decodes (the model analysis itself: tests/test_failure_origin.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_failure_origin  # noqa: E402

REFS = ["the cat sat on the mat", "a b c d", "big dog ran home", "x y"]
IDS = ["u1", "u2", "u3", "u4"]


def _eval(tmp_path: Path, name: str, hyps: list[str], policy: str = "greedy") -> Path:
    doc = {"format": "tarq-eval-result", "version": 1, "system": {"label": name, "policy": policy},
           "datasets": [{"name": "s", "utterances": [{"id": i, "ref": r, "hyp": h}
                                                      for i, r, h in zip(IDS, REFS, hyps)]}]}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def test_new_failures_are_the_systems_alone(tmp_path):
    # u1: system truncates (1 of 6 words), reference fine -> new; u2: both truncate -> not new;
    # u3: system loops (2*4+8 = 16 < 17 words) -> new; u4: reference empty, system fine -> fixed, not listed
    ref = bench_failure_origin.load_sets("F16", [str(_eval(tmp_path, "f16", [REFS[0], "a", REFS[2], ""]))])
    sysm = bench_failure_origin.load_sets("Q", [str(_eval(tmp_path, "q", ["the", "a", "dog " * 17, "x y"]))])
    got = bench_failure_origin.new_failures(sysm["s"], ref["s"])
    assert [(u, kind) for u, kind, _, _ in got] == [("u1", "truncation"), ("u3", "loop")]
    assert got[0][2] == REFS[0] and got[0][3] == "the"


def test_non_greedy_decodes_are_refused(tmp_path):
    path = _eval(tmp_path, "beam", REFS, policy="default")
    with pytest.raises(SystemExit, match="greedy failures are defined under the greedy policy"):
        bench_failure_origin.load_sets("beam", [str(path)])


def test_summary_counts_inherited_own_and_masked():
    fails = [
        {"id": "a", "kind": "truncation", "position": 0, "gap": 0.16, "reference_kind": "truncation", "n_words": 1,
         "stopped": False, "inherited": True, "masked": False},
        {"id": "b", "kind": "truncation", "position": 8, "gap": 0.75, "reference_kind": "truncation", "n_words": 6,
         "stopped": True, "inherited": True, "masked": False},
        {"id": "c", "kind": "empty", "position": 0, "gap": None, "reference_kind": None, "n_words": 4,
         "stopped": False, "inherited": False, "masked": True}]
    res = {"reference_model": "tiny.en", "reference": "F16", "meta": {"finished": "t", "wall_s": 1.0},
           "near_tie": 0.5, "systems": {"Q": {"s": {"n_utts": 10, "new_failures": fails, "not_analysed": ["d"]}}}}
    assert bench_failure_origin.summary_rows(res) == [["Q", "s", 10, 4, 1, 1, 1, 1, "0.16, 0.75, masked"]]
    far = dict(fails[0], gap=4.17)      # inherited, but from a branch far below the reference's choice: the file's
    assert bench_failure_origin.origin_class(far, 0.5) == "own"
    assert bench_failure_origin.origin_class(dict(fails[0], position=None, gap=None), 0.5) == "reference"
    assert bench_failure_origin.origin_class(dict(fails[1], gap=0.25), 0.5) == "reference"   # a near-tie stop
    md = bench_failure_origin.render_markdown(res)
    assert "| Q | s | b | truncation | 8 | 0.75 | truncation (the branch is the stop) | 6 |" in md
    assert "| Q | s | c | empty | 0 | masked | no failure | 4 |" in md
