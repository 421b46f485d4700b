"""Grid specs, planning, skip/resume and the results table, with fake tasks (no model, no Ray): fast."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from tarq.grid import engine, tasks
from tarq.grid.spec import (GridSpec, MethodSpec, load_spec, parse_data, parse_method, select_utterances,
                            spec_from_dict)

DEMO = Path(str(resources.files("tarq") / "demo_data"))


def test_parse_methods_data_and_files(tmp_path):
    assert parse_method("gptq") == MethodSpec("gptq", "gptq")
    m = parse_method({"name": "tarq-c2", "method": "tarq", "options": {"cost-ratio": 2.0, "tag_by": "input"}})
    assert m.label == "tarq-c2" and m.argv() == ["--cost-ratio", "2.0", "--tag-by", "input"]
    assert MethodSpec("x", "ggml", (("imatrix", "cal"), ("flag", True), ("off", False))).argv() == \
        ["--imatrix", "cal", "--flag"]
    d = parse_data("/data/asterisk-prompts:40")
    assert (d.path, d.name, d.limit) == ("/data/asterisk-prompts", "asterisk-prompts", 40)
    assert parse_data("/data/set/manifest.jsonl").name == "set"
    toml = tmp_path / "g.toml"
    toml.write_text('models = ["tiny.en"]\nmethods = ["rtn", {name = "t2", method = "tarq", options = '
                    '{cost-ratio = 2.0}}]\ntypes = ["q4_0"]\ncalib = "cal"\nbaselines = ["rtn"]\n'
                    '[[data]]\npath = "sets/a"\nlimit = 5\n')
    spec = load_spec(toml)
    assert spec.methods[1].options == (("cost-ratio", 2.0),) and spec.data[0].limit == 5
    assert spec.data[0].path == str(tmp_path / "sets" / "a") and spec.calib == str(tmp_path / "cal")
    with pytest.raises(ValueError, match="unknown key"):
        spec_from_dict({"model": ["x"]})
    bad = tmp_path / "bad.toml"
    bad.write_text("models = [")
    with pytest.raises(ValueError, match="bad.toml"):
        load_spec(bad)


def _spec(**kw) -> GridSpec:
    base = dict(models=["tiny.en"], methods=[MethodSpec("ggml", "ggml"), MethodSpec("rtn", "rtn"),
                                              MethodSpec("gptq", "gptq")],
                types=["q4_0", "q8_0"], data=[parse_data(f"{DEMO / 'eval'}:4")], seeds=[0, 1],
                calib=str(DEMO / "calib"), n_calib=2, baselines=["gptq", "ggml"], bootstrap=50)
    base.update(kw)
    return GridSpec(**base)


def test_validation_and_expansion():
    spec = _spec().validate()
    arts = spec.artifacts()
    # seeds multiply only the calibrated method: ggml 2 types, rtn 2 types, gptq 2 types x 2 seeds
    assert len(arts) == 8 and len({a.id for a in arts}) == 8
    assert sorted(a.seed for a in arts if a.method.label == "gptq") == [0, 0, 1, 1]
    assert all(a.seed is None and a.calib is None for a in arts if a.method.label != "gptq")
    for bad, msg in ((dict(methods=[MethodSpec("awq", "awq")], baselines=[]), "unknown method"),
                     (dict(baselines=["tarq"]), "baselines"), (dict(calib=None), "needs calibration"),
                     (dict(runtimes=["onnx"]), "unknown runtime"), (dict(runtimes=["torch"]), "ggml baseline"),
                     (dict(methods=[MethodSpec("f16", "rtn")], baselines=[]), "f16")):
        with pytest.raises(ValueError, match=msg):
            _spec(**bad).validate()


def test_subsets_are_seeded_and_sorted():
    d = parse_data(f"{DEMO / 'eval'}:5")
    a, b = select_utterances(d), select_utterances(d)
    assert [u.id for u in a] == [u.id for u in b] and [u.id for u in a] == sorted(u.id for u in a) and len(a) == 5
    assert len(select_utterances(parse_data(str(DEMO / "eval")))) == 32


class FakeTasks:
    """Stand-ins for quantize / export / decode that record what ran; hypotheses depend on the system."""

    def __init__(self, monkeypatch):
        self.ran = []
        monkeypatch.setattr(tasks, "quantize_task", self.quantize)
        monkeypatch.setattr(tasks, "export_task", self.export)
        monkeypatch.setattr(tasks, "decode_task", self.decode)

    def quantize(self, artifact, root, threads, device="cpu"):
        self.ran.append(("quantize", artifact["id"]))
        return {"quantize_s": 1.5}

    def export(self, artifact, root, runtime, quant=None):
        self.ran.append(("export", artifact["id"]))
        return {"model": artifact["method"]["label"], "bytes": 1000, "quantize_s": 1.5, "export_s": 0.1}

    def decode(self, runtime, policy, built, utterances, threads, cache_dir, use_cache=True):
        self.ran.append(("decode", built["model"], len(utterances)))
        hyps = []
        for i, u in enumerate(utterances):
            words = u.text.split()
            if built["model"] == "ggml" and i % 2 == 0:
                words = words[:1] + ["la"] * 40          # loops on every other utterance
            elif built["model"] == "gptq" and i % 3 == 0:
                words = words[:-1]                         # drops a word now and then
            hyps.append(" ".join(words))
        return {"ids": [u.id for u in utterances], "hyps": hyps, "seconds": [0.1] * len(hyps),
                "audio_seconds": [1.0] * len(hyps), "cache_hits": 0, "wall_s": 0.1,
                "system": {"backend": runtime, "policy": policy}}


def test_grid_runs_skips_finished_cells_and_writes_one_table(tmp_path, monkeypatch):
    fake = FakeTasks(monkeypatch)
    spec = _spec(seeds=[0], types=["q4_0"], shard_size=3,
                 data=[parse_data(f"{DEMO / 'eval'}:5"), parse_data(f"{DEMO / 'calib'}:4")])
    out = tmp_path / "g"
    s1 = engine.run_grid(spec, out, executor="serial", say=lambda m: None)
    assert s1["failed"] == [] and s1["ran"] == 8 and s1["done_before"] == 0     # 2 refs + 3 systems x 2 sets
    assert sum(1 for r in fake.ran if r[0] == "quantize") == 2                 # rtn, gptq (ggml: export only)
    assert [r[2] for r in fake.ran if r[0] == "decode"][:2] == [3, 2]           # shards of 3
    doc = json.loads((out / "results.json").read_text())
    assert doc["format"] == "tarq-grid-results" and doc["subset"] and not doc["missing"]
    by = {s["method"]: s for s in doc["systems"]}
    assert by["f16"]["reference"] and by["ggml"]["pooled"]["failures"]["new_loops"] == 6   # every other per shard
    assert by["gptq"]["pooled"]["damage"]["lost"] > 0 and by["rtn"]["pooled"]["damage"]["net_rate"] == 0
    assert set(by["gptq"]["datasets"]["eval"]["damage"]) >= {"lost", "net_rate_ci", "net_rare_rate"}
    pairs = {(c["method"], c["baseline"]) for c in doc["comparisons"]}
    assert pairs == {("rtn", "gptq"), ("rtn", "ggml"), ("gptq", "ggml")}          # each pair once
    row = next(r for c in doc["comparisons"] if c["baseline"] == "ggml" and c["method"] == "gptq"
               for r in c["rows"] if r["dataset"] == "pooled" and r["metric"] == "net_rate")
    assert row["diff"] < 0 and row["ci"][1] < 0 and row["resolvable"] > 0          # GPTQ better than a looper
    md = (out / "results.md").read_text()
    assert "Fast subset" in md and "decoding policy: greedy" in md and "whisper.cpp RTN Q4_0" in md
    assert "Smallest resolvable difference" in md
    # the accuracy benchmark renders the same document (README tables) with its run line
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_accuracy
    doc["meta"], doc["grid"] = {"wall_s": 3.0, "loadavg_start": [1], "loadavg_end": [1]}, {"ran": 8, "done_before": 0}
    assert bench_accuracy.render_markdown(doc).startswith(md.strip()[:40]) and "8 cells computed" in \
        bench_accuracy.render_markdown(doc)
    # a rerun runs nothing; a larger grid runs only what is new
    fake.ran.clear()
    s2 = engine.run_grid(spec, out, executor="serial", say=lambda m: None)
    assert s2["ran"] == 0 and fake.ran == []
    bigger = _spec(seeds=[0], types=["q4_0", "q8_0"], shard_size=3,
                   data=[parse_data(f"{DEMO / 'eval'}:5"), parse_data(f"{DEMO / 'calib'}:4")])
    s3 = engine.run_grid(bigger, out, executor="serial", say=lambda m: None)
    assert s3["done_before"] == 8 and s3["ran"] == 6
    assert {r[1] for r in fake.ran if r[0] == "quantize"} == {a.id for a in bigger.artifacts()
                                                              if a.type == "q8_0" and a.method.label != "ggml"}
    # a grid over two types also writes the frontier (sizes from the fake exports: every file 1000 bytes)
    doc = json.loads((out / "results.json").read_text())
    assert sorted((r["method"], r["type"]) for r in doc["frontier"]) == sorted(
        (m, t) for m in ("ggml", "rtn", "gptq") for t in ("q4_0", "q8_0"))
    assert all(r["bpw"] == 16.0 for r in doc["frontier"])
    assert "### Frontier: tiny.en" in (out / "results.md").read_text()
    # back to one type in the same folder: no frontier, and no earlier run's frontier plot left beside its results
    (out / "frontier.png").write_bytes(b"stale")
    engine.run_grid(spec, out, executor="serial", say=lambda m: None)
    assert "frontier" not in json.loads((out / "results.json").read_text())
    assert not (out / "frontier.png").exists()


def test_a_failing_cell_is_reported_and_the_rest_still_runs(tmp_path, monkeypatch):
    fake = FakeTasks(monkeypatch)
    real_quantize = fake.quantize

    def flaky(artifact, *a, **k):
        if artifact["method"]["label"] == "gptq":
            raise RuntimeError("quantize tiny.en-gptq: `tarq quantize` failed: out of memory")
        return real_quantize(artifact, *a, **k)
    monkeypatch.setattr(tasks, "quantize_task", flaky)
    lines = []
    s = engine.run_grid(_spec(seeds=[0], types=["q4_0"]), tmp_path / "g", executor="serial", say=lines.append)
    assert len(s["failed"]) == 1 and "out of memory" in s["failed"][0][1]
    assert any("FAILED" in line and "gptq" in line for line in lines)
    doc = json.loads((tmp_path / "g" / "results.json").read_text())
    assert len(doc["missing"]) == 1 and "no result yet" in (tmp_path / "g" / "results.md").read_text()


def test_dry_run_runs_nothing(tmp_path, monkeypatch):
    fake = FakeTasks(monkeypatch)
    lines = []
    s = engine.run_grid(_spec(seeds=[0], types=["q4_0"]), tmp_path / "g", dry_run=True, say=lines.append)
    assert s["ran"] == 0 and fake.ran == [] and sum("would run" in x for x in lines) == 4
    assert not (tmp_path / "g").exists()


def test_cli_flags_override_the_spec_file(tmp_path, capsys):
    import argparse

    from tarq.cli import grid as grid_cli
    from tarq.cli.main import build_parser, main

    toml = tmp_path / "g.toml"
    toml.write_text(f'models = ["tiny.en"]\nmethods = ["rtn"]\ntypes = ["q4_0"]\n'
                    f'data = [{{path = "{DEMO / "eval"}", limit = 2}}]\n')
    args = build_parser().parse_args(["grid", str(toml), "--out", str(tmp_path / "o"), "--types", "q4_0,q8_0",
                                      "--methods", "rtn,gptq", "--calib", str(DEMO / "calib"), "--seeds", "0,1"])
    spec = grid_cli.build_spec(args)
    assert spec.types == ["q4_0", "q8_0"] and [m.label for m in spec.methods] == ["rtn", "gptq"]
    assert spec.seeds == [0, 1] and spec.models == ["tiny.en"] and spec.data[0].limit == 2
    assert isinstance(args, argparse.Namespace)
    # a bad spec is a one-line error
    assert main(["grid", "--out", str(tmp_path / "o"), "--models", "tiny.en", "--types", "q4_0",
                 "--methods", "awq", "--data", str(DEMO / "eval"), "--dry-run"]) == 1
    assert "unknown method 'awq'" in capsys.readouterr().err


def test_one_path_spelled_two_ways_is_one_artifact_and_one_cell(tmp_path, monkeypatch):
    """Artifact and cell ids hash the calibration / data paths: a spec file's relative path, the same path with
    '..' in it and the absolute path must give the same ids (else the grid rebuilds and re-decodes everything)."""
    (tmp_path / "grids").mkdir()
    spec_file = tmp_path / "grids" / "g.toml"
    spec_file.write_text('models = ["tiny.en"]\nmethods = ["gptq"]\ntypes = ["q4_0"]\nbaselines = ["gptq"]\n'
                         'calib = "../grids/../data/cal"\n[[data]]\npath = "../data/./dev"\n')
    rel = load_spec(spec_file)
    absolute = spec_from_dict({"models": ["tiny.en"], "methods": ["gptq"], "types": ["q4_0"], "baselines": ["gptq"],
                               "calib": str(tmp_path / "data" / "cal"), "data": [str(tmp_path / "data" / "dev")]})
    assert rel.calib == absolute.calib == str(tmp_path / "data" / "cal")
    assert rel.data[0].path == absolute.data[0].path == str(tmp_path / "data" / "dev")
    assert [a.id for a in rel.artifacts()] == [a.id for a in absolute.artifacts()]
    monkeypatch.chdir(tmp_path / "grids")   # flags: relative to the working directory
    assert parse_data("../data/dev").path == str(tmp_path / "data" / "dev")


def test_an_artifact_quantized_before_is_not_queued_again(tmp_path, monkeypatch):
    # a queued quantize task asks for `threads` CPUs; on Ray it held the 1-CPU decode shards behind it even when
    # it had nothing to do, so a quantized artifact (its folder holds the metadata file) must not be queued at all
    from tarq.qmodel import META_FILE

    fake = FakeTasks(monkeypatch)
    spec = _spec(seeds=[0], types=["q4_0"], shard_size=3, data=[parse_data(f"{DEMO / 'eval'}:3")])
    out = tmp_path / "g"
    gptq = next(a for a in spec.artifacts() if a.method.label == "gptq")
    qdir = Path(tasks.artifact_paths(str(out), gptq.id)["qdir"])
    qdir.mkdir(parents=True)
    (qdir / META_FILE).write_text("{}")
    s = engine.run_grid(spec, out, executor="serial", say=lambda m: None)
    assert s["failed"] == []
    quantized = {r[1] for r in fake.ran if r[0] == "quantize"}
    assert gptq.id not in quantized and len(quantized) == 1                     # rtn still quantized
    assert ("export", gptq.id) in fake.ran


def test_a_method_may_bring_its_own_calibration_mixed_from_several_sets(tmp_path, monkeypatch):
    """calib on a method entry replaces the grid's for that method; a list is mixed (repeated --calib); a method
    without one keeps the grid's calib and the artifact id it had before per-method calib existed."""
    toml = tmp_path / "g.toml"
    toml.write_text('models = ["tiny.en"]\ntypes = ["q4_0"]\ncalib = "tts"\nbaselines = ["gptq"]\n'
                    'methods = ["gptq", {name = "gptq-real", method = "gptq", calib = "splits/real-calib"},\n'
                    '           {name = "gptq-mix", method = "gptq", calib = ["tts", "splits/real-calib"]}]\n'
                    '[[data]]\npath = "sets/a"\n')
    spec = load_spec(toml).validate()
    calib = {a.method.label: a.calib for a in spec.artifacts()}
    assert calib == {"gptq": str(tmp_path / "tts"), "gptq-real": str(tmp_path / "splits" / "real-calib"),
                     "gptq-mix": (str(tmp_path / "tts"), str(tmp_path / "splits" / "real-calib"))}
    plain = spec_from_dict({"models": ["tiny.en"], "types": ["q4_0"], "calib": str(tmp_path / "tts"),
                            "methods": ["gptq"], "data": [str(tmp_path / "sets" / "a")]})
    assert plain.artifacts()[0].id == next(a.id for a in spec.artifacts() if a.method.label == "gptq")
    assert spec.to_dict()["methods"][2]["calib"] == calib["gptq-mix"] and "calib" not in spec.to_dict()["methods"][0]
    # the quantize task passes each set as its own --calib
    seen = []
    monkeypatch.setattr(tasks, "_tarq", lambda argv, what: seen.append([str(x) for x in argv]) or 0.0)
    monkeypatch.setattr(tasks, "is_quantized", lambda root, i: False)
    mix = next(a for a in spec.artifacts() if a.method.label == "gptq-mix")
    tasks.quantize_task(engine.artifact_dict(mix), str(tmp_path / "g"), 2)
    argv = seen[0]
    assert [argv[i + 1] for i, x in enumerate(argv) if x == "--calib"] == list(calib["gptq-mix"])


def test_per_method_calib_errors():
    base = {"models": ["tiny.en"], "types": ["q4_0"], "data": [str(DEMO / "eval")]}
    with pytest.raises(ValueError, match="uses no calibration data"):
        spec_from_dict({**base, "methods": [{"name": "g", "method": "ggml", "calib": "x"}]}).validate()
    with pytest.raises(ValueError, match="must be a path or a non-empty list"):
        spec_from_dict({**base, "methods": [{"name": "q", "method": "gptq", "calib": []}]})
    # a method's own calib satisfies "needs calibration" without a grid-wide calib
    spec_from_dict({**base, "methods": [{"name": "q", "method": "gptq", "calib": "x"}]}).validate()
    with pytest.raises(ValueError, match="needs calibration"):
        spec_from_dict({**base, "methods": ["gptq"]}).validate()
