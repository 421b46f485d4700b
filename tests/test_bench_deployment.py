"""benchmarks/bench_deployment.py without whisper.cpp: --types is checked before anything is built, variants are
labelled and ordered as measured, and the paper's INT4 anchor is quoted beside types with 4-bit codes only (hand-made
measurements; the timing itself needs the runtime and is not a test)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_deployment  # noqa: E402


def test_types_default_and_refusals():
    assert bench_deployment.parse_args([]).types == ["q8_0", "q4_0"]
    assert bench_deployment.parse_args(["--types", "q4_0,iq4_nl,q4_k"]).types == ["q4_0", "iq4_nl", "q4_k"]
    for bad in ("q4_0,q9_9", "q4_0,q4_0", ",", "f16"):
        with pytest.raises(SystemExit, match="--types wants distinct ggml types") as e:
            bench_deployment.parse_args(["--types", bad])
        assert "\n" not in str(e.value)


def test_labels():
    assert [bench_deployment.variant_label(v) for v in ("f16", "q8_0", "q4_0", "iq4_nl", "q4_0-tarq")] == \
        ["F16", "Q8_0", "Q4_0 (RTN)", "IQ4_NL (RTN)", "Q4_0 (TARQ)"]


def _cell(variant: str, warm: float, words: int = 30) -> dict:
    return {"model": "tiny.en", "audio_s": 11.0, "threads": 2, "variant": variant,
            "label": bench_deployment.variant_label(variant), "file_mb": 10.0, "n": 3, "load_s": 0.1,
            "first_call_s": warm, "warm_call_s": warm, "rtf": warm / 11, "first_call_rtf": warm / 11,
            "peak_rss_mb": 150.0, "net_rss_mb": 100.0, "warm_call_all_s": [warm], "text": "", "output_words": words}


def test_tables_follow_the_measured_order_and_quote_the_paper_beside_int4_only():
    cells = [_cell("f16", 1.0), _cell("q8_0", 0.9), _cell("iq4_nl", 0.8), _cell("q5_0", 0.85), _cell("q4_0-tarq", 0.5)]
    ratios = [{"model": "tiny.en", "audio_s": 11.0, "threads": 2, "variant": c["variant"],
               "speedup_warm": 1.0 / c["warm_call_s"], "speedup_first_call": 1.0, "speedup_load": 1.0,
               "rss_ratio": 1.0, "net_rss_ratio": 1.0} for c in cells[1:]]
    doc = {"cells": cells, "ratios": ratios, "rss_floor_mb": 45.0, "skipped_types": {"tiny.en": ["q4_k", "q3_k"]},
           "config": {"repeats": 3}, "paper_anchor": {"source": "paper"},
           "meta": {"machine": {"cpu": "cpu", "cpu_count": 2}, "loadavg_start": [0], "loadavg_end": [0]}}
    text = bench_deployment.render_markdown(doc)
    cell_table, ratio_table = text.split("\n\n")[:2]
    assert [ln.split(" | ")[3] for ln in cell_table.splitlines()[2:]] == \
        ["F16", "Q8_0", "IQ4_NL (RTN)", "Q5_0 (RTN)", "Q4_0 (TARQ)"]
    rows = {ln.split(" | ")[3]: ln for ln in ratio_table.splitlines()[2:]}
    assert list(rows) == ["Q8_0", "IQ4_NL (RTN)", "Q5_0 (RTN)", "Q4_0 (TARQ)"]
    assert "1.25×" in rows["IQ4_NL (RTN)"] and "2.00×" in rows["Q4_0 (TARQ)"]      # 1.0 / 0.8, 1.0 / 0.5
    # tiny 11 s in the paper: F16 0.77 s vs INT4 0.45 s at 4 threads
    assert "1.71× (4t)" in rows["IQ4_NL (RTN)"] and "1.71× (4t)" in rows["Q4_0 (TARQ)"]
    assert "(4t)" not in rows["Q8_0"] and "(4t)" not in rows["Q5_0 (RTN)"]
    assert "do not tile the model's rows: tiny.en: Q4_K, Q3_K." in text


def test_types_a_models_rows_cannot_take_are_skipped_other_failures_are_not(monkeypatch, tmp_path):
    from types import SimpleNamespace

    def fake_bin(model, kind, rebuild=False):
        if model == "tiny.en" and kind == "q4_k":
            raise RuntimeError("export tiny.en q4_k failed (exit 1):\ntarq export: error: encoder.blocks.0.attn.key."
                               "weight: rows of 384 do not tile Q4_K's 256-element super-blocks; types that fit: q4_0")
        if kind == "q2_k":
            raise RuntimeError("export base q2_k failed (exit 1):\nSegmentation fault")
        path = tmp_path / f"{model}-{kind}.bin"
        path.write_bytes(b"x" * 3)
        return SimpleNamespace(path=path, build={})

    monkeypatch.setattr(bench_deployment, "baseline_bin", fake_bin)
    files, skipped = bench_deployment._model_files(["tiny.en", "base"], ["q4_0", "q4_k"], False, False)
    assert list(files["tiny.en"]) == ["f16", "q4_0"] and list(files["base"]) == ["f16", "q4_0", "q4_k"]
    assert skipped == {"tiny.en": ["q4_k"]}
    with pytest.raises(RuntimeError, match="Segmentation fault"):
        bench_deployment._model_files(["base"], ["q2_k"], False, False)
