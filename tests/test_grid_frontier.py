"""The frontier summary of a multi-type grid (tarq.grid.frontier) on a hand-made results document."""
from __future__ import annotations

import pytest

from tarq.grid.frontier import bits_per_weight, frontier_rows, plot_frontier, render_frontier, spans_types


def _system(method, type_, nbytes, damage=None, rare=None, loops=0, reference=False, wer=0.1):
    key = f"base/{method}/{type_ or '-'}/s0/whisper.cpp/greedy"
    pooled = None if reference else {"damage": {"net_rate": damage, "net_rate_ci": [damage - 0.01, damage + 0.01],
                                                "net_rare_rate": rare, "net_rare_rate_ci": [rare - 0.02, rare + 0.02]}}
    return {"key": key, "label": method, "model": "base", "method": method, "type": type_, "seed": 0,
            "runtime": "whisper.cpp", "policy": "greedy", "reference": reference, "build": {"bytes": nbytes},
            "datasets": {"a": {"failures": {"loops": loops, "truncations": 1, "empty": 0}},
                         "b": {"failures": {"loops": loops, "truncations": 0, "empty": 2}}},
            "mean": {"wer": wer, "rare_wer": 2 * wer}, "pooled": pooled}


def _doc():
    systems = [_system("f16", None, 1000, reference=True, wer=0.08),
               _system("ggml", "q4_0", 281, 0.05, 0.10, loops=1),
               _system("gptq", "q4_0", 281, 0.02, 0.06),
               _system("ggml", "q2_k", 164, 0.90, 0.40, loops=3)]
    comp = {"a": systems[2]["key"], "b": systems[1]["key"], "baseline": "ggml", "method": "gptq",
            "rows": [{"dataset": "pooled", "metric": "net_rate", "diff": -0.03, "ci": [-0.05, -0.01]},
                     {"dataset": "pooled", "metric": "net_rare_rate", "diff": -0.04, "ci": [-0.09, 0.01]},
                     {"dataset": "a", "metric": "net_rate", "diff": -0.5, "ci": [-0.6, -0.4]}]}
    return {"spec": {"baselines": ["ggml"]}, "subset": True, "systems": systems, "comparisons": [comp]}


def test_bits_per_weight_is_read_off_the_file_sizes():
    assert bits_per_weight(281, 1000) == pytest.approx(4.496)
    assert bits_per_weight(500, 1000) == 8.0
    assert bits_per_weight(None, 1000) is None and bits_per_weight(281, None) is None


def test_rows_sorted_by_size_with_failures_summed_and_paired_differences():
    doc = _doc()
    assert spans_types(doc)
    rows = frontier_rows(doc)
    assert [(r["method"], r["type"]) for r in rows] == [("ggml", "q2_k"), ("ggml", "q4_0"), ("gptq", "q4_0")]
    assert rows[0]["bpw"] == pytest.approx(2.624)
    assert rows[0]["failures"] == [6, 1, 2, None]   # loops 3 + 3, truncations 1 + 0, empty 0 + 2; phantoms not counted
    assert rows[2]["vs"] == {"ggml": {"net_rate": {"diff": -0.03, "ci": [-0.05, -0.01]},
                                      "net_rare_rate": {"diff": -0.04, "ci": [-0.09, 0.01]}}}
    # the baseline's row reads the same pair from its side: (RTN - GPTQ), CI flipped
    assert rows[1]["vs"] == {"gptq": {"net_rate": {"diff": 0.03, "ci": [0.01, 0.05]},
                                      "net_rare_rate": {"diff": 0.04, "ci": [-0.01, 0.09]}}}
    assert rows[0]["vs"] == {}
    doc["spec"]["baselines"] = ["ggml", "gptq"]                           # a GPTQ column: RTN's row reads "worse"
    assert "| – | +3.00 [+1.00, +5.00] (worse) · +4.00 [-1.00, +9.00] (within noise) |" in render_frontier(doc)
    md = render_frontier(doc)
    assert "Seeded subsets" in md and "| GPTQ Q4_0 | 4.50 | 0.0 |" in md
    assert "-3.00 [-5.00, -1.00] (better) · -4.00 [-9.00, +1.00] (within noise)" in md
    assert "| 6/1/2/– |" in md                                        # an uncounted kind reads "–", not 0


def test_one_type_is_no_frontier():
    doc = _doc()
    doc["systems"] = doc["systems"][:3]
    assert not spans_types(doc)


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    out = plot_frontier(_doc(), tmp_path / "frontier.png")
    assert out is not None and (tmp_path / "frontier.png").stat().st_size > 1000


def test_grid_failure_table_prints_the_sign_test_only_where_it_was_computed():
    import copy
    import json
    from pathlib import Path

    from tarq.grid.render import render_markdown

    doc = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results"
                      / "ablation_base_q3_k_uqm.json").read_text())
    for s in doc["systems"]:                                         # as results made before the test were
        for block in [*s["datasets"].values(), s.get("pooled") or {}]:
            for key in ("new_failures", "fixed_failures", "sign_test_p"):
                (block.get("failures") or {}).pop(key, None)
    before = render_markdown(doc)
    assert "sign test" not in before and "; p " not in before      # no claim of a test that was not made
    tested = copy.deepcopy(doc)
    rtn = next(s for s in tested["systems"] if s["method"] == "ggml")
    rtn["datasets"]["uqm-voice-dev"]["failures"].update(new_failures=4, fixed_failures=2, sign_test_p=0.6875)
    md = render_markdown(tested)
    assert "p: exact two-sided sign test" in md
    assert "| 2/2/0/0 (new 2/2/0/0; p 0.69) |" in md
