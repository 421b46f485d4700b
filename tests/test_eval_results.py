"""Result files (round trip, re-scoring, comparison), the eval/plot CLIs on saved results, and the runner."""
import json

import numpy as np
import pytest

from tarq.eval import DatasetResult, EvalResult, load_result, paired_counts, save_result


def _result(label, hyps_by_set):
    refs = {"setA": ["The Zyxel router.", "Press the key.", "It was 1947."],
            "setB": ["Hello, world!", "The number is witheld."]}
    datasets = [DatasetResult(name=n, path=f"/data/{n}", ids=[f"{n}-{i}" for i in range(len(refs[n]))],
                              refs=refs[n], hyps=h, durations=[1.0] * len(h), seconds=[0.1] * len(h))
                for n, h in hyps_by_set.items()]
    return EvalResult(system={"label": label, "backend": "torch", "model": "x"}, datasets=datasets)


GOOD = {"setA": ["the zyxel router", "press the key", "it was nineteen forty seven"],
        "setB": ["hello world", "the number is witheld"]}
BAD = {"setA": ["the zy xel router", "press the big key", "it was 1948"],
       "setB": ["hello word", "the number is withheld"]}


def test_round_trip_and_rescore(tmp_path):
    r = _result("good", GOOD)
    path = save_result(r, tmp_path / "sub" / "good.json")
    data = json.loads(path.read_text())
    assert data["format"] == "tarq-eval-result" and data["datasets"][0]["utterances"][0]["hyp"] == "the zyxel router"
    assert data["datasets"][0]["rtf"] == pytest.approx(0.1) and data["datasets"][0]["scores"]["wer"] == 0.0
    back = load_result(path)
    assert back.label == "good" and [d.name for d in back.datasets] == ["setA", "setB"]
    assert back.datasets[1].scores == r.datasets[1].scores
    assert not list(tmp_path.glob("sub/.*.tmp"))        # temp file renamed away
    # re-scoring with another threshold changes the rare split, not WER
    hi = load_result(path, k=4.0)
    assert hi.k == 4.0 and hi.datasets[0].scores.n_rare > back.datasets[0].scores.n_rare
    assert hi.datasets[0].scores.wer == back.datasets[0].scores.wer


def test_mean_over_datasets_is_unweighted():
    r = _result("bad", BAD)
    a, b = r.datasets
    assert a.scores.wer == pytest.approx(4 / 9) and b.scores.wer == pytest.approx(2 / 6)
    assert r.mean()["wer"] == pytest.approx((4 / 9 + 2 / 6) / 2)


def test_bad_result_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_result(tmp_path / "missing.json")
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="x.json"):
        load_result(p)
    p.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a tarq eval result"):
        load_result(p)
    p.write_text(json.dumps({"format": "tarq-eval-result", "version": 1, "datasets": [{"name": "a"}]}))
    with pytest.raises(ValueError, match="malformed"):
        load_result(p)


def test_paired_counts_match_by_dataset_and_id():
    a = _result("a", GOOD)
    b = _result("b", {"setA": BAD["setA"]})
    names, ca, cb = paired_counts(a, b)
    assert names == ["setA"] and len(ca[0]) == len(cb[0]) == 3
    other = _result("c", {"setB": ["x", "y"]})
    other.datasets[0].refs[0] = "Different reference"
    with pytest.raises(ValueError, match="share no"):
        paired_counts(_result("d", {"setA": GOOD["setA"]}), other)


def _cli(argv):
    from tarq.cli.main import main
    return main(argv)


def test_cli_rescore_compare_and_plot(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")   # rich would truncate the wide tables at pytest's 80 columns
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    save_result(_result("good", GOOD), good)
    save_result(_result("bad", BAD), bad)
    out = tmp_path / "re.json"
    assert _cli(["eval", "--rescore", str(bad), "--json", str(out), "--compare", str(good),
                 "--bootstrap", "200"]) == 0
    text = capsys.readouterr().out
    assert "setA" in text and "mean" in text and "paired bootstrap" in text and "rare-WER" in text
    assert load_result(out).datasets[0].scores == load_result(bad).datasets[0].scores
    pytest.importorskip("matplotlib")
    png = tmp_path / "bars.png"
    assert _cli(["plot", str(good), str(bad), "--out", str(png), "--metrics", "wer,rare_wer,numeral_wer"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _cli(["plot", str(good), "--out", str(png), "--dataset", "nope"]) == 1
    assert "no dataset 'nope'" in capsys.readouterr().err


DAMAGE_FIELDS = {"lost", "gained", "lost_rare", "gained_rare", "lost_common", "gained_common", "lost_numeral",
                 "gained_numeral", "extra_insertions", "net_rate", "net_rate_ci", "net_rare_rate", "net_rare_rate_ci"}


def test_cli_reference_writes_damage_and_compares_damage(tmp_path, capsys):
    ref, good, bad = tmp_path / "f16.json", tmp_path / "good.json", tmp_path / "bad.json"
    save_result(_result("F16", GOOD), ref)
    save_result(_result("good", GOOD), good)
    save_result(_result("bad", BAD), bad)
    out = tmp_path / "bad-damage.json"
    assert _cli(["eval", "--rescore", str(bad), "--reference", str(ref), "--json", str(out), "--compare", str(good),
                 "--bootstrap", "200"]) == 0
    text = capsys.readouterr().out
    assert "Damage of bad" in text and "against F16" in text and "rare dmg" in text
    data = json.loads(out.read_text())
    a = data["datasets"][0]
    assert set(a["damage"]) == DAMAGE_FIELDS
    # setA: "zyxel" and "1947" lost (rare, numeral), "the big key" adds one word, "zy xel" one more
    assert (a["damage"]["lost"], a["damage"]["lost_rare"], a["damage"]["lost_numeral"],
            a["damage"]["extra_insertions"]) == (2, 1, 1, 2)
    assert a["damage"]["net_rate"] == pytest.approx(4 / 9) and len(a["damage"]["net_rate_ci"]) == 2
    assert a["damage_detail"]["resolvable_net_rate"] >= 0 and a["failures"]["new_loops"] == 0
    assert data["reference"]["label"] == "F16" and set(data["pooled"]["damage"]) == DAMAGE_FIELDS
    # the stored damage survives a plain load (no reference given) and is written back unchanged
    back = load_result(out)
    assert back.damage_blocks()[1]["damage"] == data["pooled"]["damage"]
    # plots lead with damage when every result has a reference
    pytest.importorskip("matplotlib")
    png = tmp_path / "damage.png"
    assert _cli(["plot", str(out), str(out), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from tarq.cli.plot import collect
    labels, values, errors = collect([back], ["damage", "rare_damage", "wer"], "mean")
    assert values[0][0] == pytest.approx(100 * data["pooled"]["damage"]["net_rate"]) and errors[0][2] is None
    assert _cli(["plot", str(good), "--out", str(png), "--metrics", "damage"]) == 1
    assert "has no damage" in capsys.readouterr().err
    # a reference that lacks utterances is a one-line error
    short = tmp_path / "short.json"
    save_result(_result("F16", {"setA": GOOD["setA"]}), short)
    assert _cli(["eval", "--rescore", str(bad), "--reference", str(short)]) == 1
    assert "has no dataset 'setB'" in capsys.readouterr().err


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    assert _cli(["eval", "--rescore", str(tmp_path / "none.json")]) == 1
    assert "none.json" in capsys.readouterr().err
    assert _cli(["eval", "tiny.en"]) == 1
    assert "--data" in capsys.readouterr().err


def test_runner_with_a_fake_backend(tmp_path):
    """evaluate() over a real manifest (tarq.data) with a backend that echoes canned texts."""
    pytest.importorskip("tarq.data")
    sf = pytest.importorskip("soundfile")
    from tarq.eval.runner import evaluate

    texts = {"u1": "Hello world.", "u2": "The Zyxel router.", "u3": "It was 1947."}
    lines = []
    (tmp_path / "audio").mkdir()
    for i, (uid, text) in enumerate(texts.items()):
        sf.write(tmp_path / "audio" / f"{uid}.flac", np.zeros(8000 * (i + 1), dtype=np.float32), 16000)
        lines.append(json.dumps({"id": uid, "audio": f"audio/{uid}.flac", "text": text, "duration": 0.5 * (i + 1)}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")

    class Echo:
        name, batch_size, description = "echo", 2, {"backend": "echo"}

        def transcribe(self, audios):
            # identify clips by length (0.5 s -> u1, 1 s -> u2, 1.5 s -> u3)
            hyp = {8000: "hello world", 16000: "the zy xel router", 24000: "it was 1948"}
            return [hyp[len(a)] for a in audios]

    r = evaluate(Echo(), [tmp_path / "manifest.jsonl"], progress=False, label="echo")
    d = r.datasets[0]
    assert d.name == tmp_path.name and d.ids == ["u1", "u2", "u3"]
    assert d.hyps == ["hello world", "the zy xel router", "it was 1948"]
    assert d.durations == pytest.approx([0.5, 1.0, 1.5])
    assert d.scores.errors == 3 and d.scores.rare_errors == 1 and d.scores.numeral_errors == 1   # rule "left"
    assert r.system["label"] == "echo"


def test_reference_with_another_policy_is_warned_about(caplog):
    import logging

    ref = _result("F16", GOOD)
    ref.system["policy"] = "default"
    with caplog.at_level(logging.WARNING, logger="tarq.eval.results"):
        _result("bad", BAD).attach_reference(ref, n_boot=20)
    assert "decoding policy default" in caplog.text and "with decoding policy greedy" in caplog.text
