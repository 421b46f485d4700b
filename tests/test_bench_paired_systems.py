"""benchmarks/bench_paired_systems.py on hand-made results: WER, damage, failures and paired differences against
values counted by hand, sets only some systems have, and one-line refusals of unusable inputs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_paired_systems  # noqa: E402

IDS = ["u1", "u2", "u3"]
REFS = ["the cat sat", "a b c d", "big dog"]          # 9 words


def _grid(tmp_path: Path, policy: str = "greedy", redact: bool = False) -> Path:
    utts = {"ids": IDS} | ({} if redact else {"refs": REFS})
    doc = {"format": "tarq-grid-results",
           "systems": [{"method": "f16", "policy": policy, "label": "F16", "reference": True,
                        "hyps": {} if redact else {"s": ["The cat sat.", "a b c d", "big dog"]}},
                       {"method": "ggml", "policy": policy, "label": "RTN",
                        "hyps": {} if redact else {"s": ["the cat", "a b c d", "big dog"]}}],
           "utterances": {"s": utts}}
    path = tmp_path / f"grid_{policy}.json"
    path.write_text(json.dumps(doc))
    return path


def _eval(tmp_path: Path, sets: dict[str, list[tuple[str, str, str]]], policy: str = "greedy") -> Path:
    doc = {"format": "tarq-eval-result", "version": 1, "system": {"label": "cand", "policy": policy},
           "datasets": [{"name": name, "utterances": [{"id": i, "ref": r, "hyp": h} for i, r, h in rows]}
                        for name, rows in sets.items()]}
    path = tmp_path / "cand.json"
    path.write_text(json.dumps(doc))
    return path


def _cand(tmp_path: Path, policy: str = "greedy") -> Path:
    # u2 loses "b c d" (1 of 4 words: a truncation), u3 inserts "ran"; set "x" only the candidate has
    return _eval(tmp_path, {"s": list(zip(IDS, REFS, ["the cat sat", "a", "big dog ran"])),
                            "x": [("v1", "hello world", "hello word")]}, policy)


def test_numbers_match_a_hand_count(tmp_path):
    g = _grid(tmp_path)
    res = bench_paired_systems.run([f"F16={g}:f16", f"RTN={g}:ggml", f"cand={_cand(tmp_path)}"], None, ["RTN"])
    s = res["sets"]["s"]
    assert s["F16"]["wer"] == pytest.approx(0.0) and "damage" not in s["F16"]
    assert s["RTN"]["wer"] == pytest.approx(100 / 9) and s["cand"]["wer"] == pytest.approx(400 / 9)
    d = s["cand"]["damage"]                        # lost 3, gained 0, one extra insertion: (3 - 0 + 1) / 9
    assert (d["lost"], d["gained"], d["extra_insertions"]) == (3, 0, 1)
    assert d["net_rate"] == pytest.approx(400 / 9)
    assert s["cand"]["failures"]["truncations"] == 1 and s["cand"]["failure_ids"]["truncation"] == ["u2"]
    assert (d["new_failures"], d["fixed_failures"], d["sign_test_p"]) == (1, 0, 1.0)   # 2 · P(Bin(1, ½) ≤ 0)
    assert (d["new_loops_truncations"], d["fixed_loops_truncations"]) == (1, 0)
    assert s["RTN"]["failures"]["truncations"] == 0
    # the set only the candidate has: scored, no damage, not pooled, no paired row
    assert res["sets"]["x"]["cand"]["wer"] == pytest.approx(50.0) and "damage" not in res["sets"]["x"]["cand"]
    assert res["pooled"]["cand"]["sets"] == ["s"] and res["pooled"]["cand"]["net_rate"] == pytest.approx(400 / 9)
    rows = {(v["system"], v["set"]): v for v in res["versus"]}
    assert set(rows) == {("cand", "s")}
    assert rows["cand", "s"]["wer"]["diff"] == pytest.approx(300 / 9)
    assert rows["cand", "s"]["damage"]["diff"] == pytest.approx(300 / 9)
    table = bench_paired_systems.render_markdown(res)
    assert "44.44 · +44.44" in table and "0/1/0/0" in table and "1 / 0 (1.00)" in table and "cand − RTN" in table


def test_two_baselines_are_not_paired_twice(tmp_path):
    g = _grid(tmp_path)
    res = bench_paired_systems.run([f"F16={g}:f16", f"RTN={g}:ggml", f"cand={_cand(tmp_path)}"], None,
                                   ["RTN", "cand"])
    pairs = {(v["system"], v["baseline"]) for v in res["versus"]}
    assert pairs == {("cand", "RTN")}


def test_a_grid_system_is_picked_by_type(tmp_path):
    g = _grid(tmp_path)
    doc = json.loads(g.read_text())
    doc["systems"][1]["type"] = "q4_0"
    doc["systems"].append({"method": "ggml", "type": "iq4_nl", "policy": "greedy", "label": "RTN IQ4_NL",
                           "hyps": {"s": ["the cat sat", "a b", "big dog"]}})
    g.write_text(json.dumps(doc))
    res = bench_paired_systems.run([f"F16={g}:f16", f"RTN={g}:ggml@q4_0", f"IQ={g}:ggml@iq4_nl:greedy"], None, [])
    assert res["sets"]["s"]["RTN"]["wer"] == pytest.approx(100 / 9)      # "the cat": 1 of 9 words lost
    assert res["sets"]["s"]["IQ"]["wer"] == pytest.approx(200 / 9)       # "a b": 2 of 9 words lost
    with pytest.raises(SystemExit, match="2 systems with method 'ggml'"):
        bench_paired_systems.run([f"F16={g}:f16", f"RTN={g}:ggml"], None, [])


def test_redacted_sets_come_only_from_eval_results(tmp_path):
    g = _grid(tmp_path, redact=True)
    with pytest.raises(SystemExit, match="no unredacted data set"):
        bench_paired_systems.run([f"F16={g}:f16", f"cand={_cand(tmp_path)}"], None, [])


@pytest.mark.parametrize("case, message", [
    ("policy", "different policies"), ("method", "0 systems with method .gptq."), ("label", "not a --system label"),
    ("syntax", "LABEL=SOURCE"), ("missing", "not found"), ("twice", "data set s twice"),
    ("transcript", "different transcript")])
def test_unusable_inputs_are_refused_in_one_line(tmp_path, case, message):
    g = _grid(tmp_path)
    cand = _cand(tmp_path, policy="default" if case == "policy" else "greedy")
    if case == "transcript":      # the candidate was scored against another reference text for u1
        cand = _eval(tmp_path, {"s": [("u1", "the cat sat down", "the cat sat"), ("u2", REFS[1], "a b c d")]})
    systems = {"policy": [f"F16={g}:f16", f"cand={cand}"],
               "method": [f"F16={g}:gptq"],
               "label": [f"F16={g}:f16"],
               "syntax": ["F16"],
               "missing": [f"F16={tmp_path / 'nope.json'}"],
               "twice": [f"F16={g}:f16,{cand}"],
               "transcript": [f"F16={g}:f16", f"cand={cand}"]}[case]
    with pytest.raises(SystemExit, match=message):
        bench_paired_systems.run(systems, None, ["cand"] if case == "label" else [])
