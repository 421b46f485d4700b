"""The bounded fuzz run of the default suite: a few mutated model files and bad data sets through tarq's reader,
`tarq transcribe` (with and without --verify) and `tarq eval`; no crash, abort, traceback, messy error, silent
empty or silent garbage result. The full run (1000 + 200 cases, table in docs/robustness.md) is
`python benchmarks/fuzz_inputs.py`."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytestmark = pytest.mark.runtime
pytest.importorskip("pywhispercpp")


def test_bounded_fuzz_has_no_failure_outcome():
    import argparse

    import fuzz_inputs

    res = fuzz_inputs.run_all(argparse.Namespace(models=10, datasets=8, source="random", seed=11, gguf_share=0.3))
    print(fuzz_inputs.render_markdown(res))
    assert res["failures"] == [], res["failures"]
    stages = {s for group in res["table"].values() for s in group}
    assert stages == {"reader", "transcribe", "verify", "eval"}
    counts = {group: sum(sum(c.values()) for c in st.values()) for group, st in res["table"].items()}
    assert sum(counts.values()) > 0 and "data sets" in counts
    # every mutated file that changed bytes fails --verify cleanly
    assert all(r["verify"] == "clean error" for r in res["cases"] if r["kind"] != "data" and not r["identical"])
