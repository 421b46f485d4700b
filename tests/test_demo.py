"""The README's main job: `tarq demo` on the bundled data."""
import os

import pytest

from tarq.cli.demo import bundled_data_dir


def test_bundled_demo_data_is_small_loadable_and_has_a_notice():
    from tarq.data import load_dataset

    root = bundled_data_dir()
    assert (root / "NOTICE.md").is_file()
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size <= 5_000_000, f"bundled demo data is {size / 1e6:.1f} MB; the data README allows 5 MB"
    calib, evaluation = load_dataset(root / "calib"), load_dataset(root / "eval")
    assert len(calib) == 40 and len(evaluation) == 32
    assert not {u.id for u in calib} & {u.id for u in evaluation}
    assert all(u.text for u in calib + evaluation)


@pytest.mark.slow
@pytest.mark.runtime
def test_demo_end_to_end(tmp_path):
    pytest.importorskip("pywhispercpp")
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")
    from tarq.cli._choices import DEFAULT_FORMAT, DEFAULT_METHOD
    from tarq.cli.main import main
    from tarq.eval import load_result
    from tarq.export.whisper_cpp import read_whisper_cpp

    assert main(["demo", "--out", str(tmp_path)]) == 0
    ours = load_result(tmp_path / f"tiny.en-{DEFAULT_METHOD}-{DEFAULT_FORMAT}.eval.json").datasets[0].scores
    f16 = load_result(tmp_path / "tiny.en-f16.eval.json").datasets[0].scores
    rtn = load_result(tmp_path / "tiny.en-rtn-q4_0.eval.json").datasets[0].scores
    assert ours.n_words == f16.n_words == rtn.n_words > 100
    assert ours.wer < 0.25 and f16.wer < 0.2
    # the files are of the types the demo says: tarq's on the default format, the baseline whisper.cpp's Q4_0
    assert read_whisper_cpp(tmp_path / f"tiny.en-{DEFAULT_METHOD}-{DEFAULT_FORMAT}.bin").wtype.name == DEFAULT_FORMAT
    assert read_whisper_cpp(tmp_path / "tiny.en-rtn-q4_0.bin").wtype.name == "q4_0"
