"""tarq.eval.stopping: teacher-forced stop margins on hand-computed logits, and their paired comparison."""
from __future__ import annotations

import math

import pytest
import torch

from tarq.eval.stopping import compare_margin_sets, compare_margins, stop_margins

EOT = 4
TEXT = torch.arange(EOT)          # ids 0..3 are text; 4 is EOT, 5 a special token (a timestamp) never emitted


def hand_logits() -> torch.Tensor:
    # forced sequence: prompt (2 tokens), t1 t2 t3, EOT -> 5 rows of logits
    return torch.tensor([
        [0.0, 0.0, 0.0, 0.0, 100.0, 0.0],    # predicts the 2nd prompt token: not a decision, ignored
        [1.0, 0.0, 0.0, 0.0, 50.0, 0.0],     # predicts t1: EOT is suppressed at the first step, ignored
        [2.0, 0.5, 0.0, 0.0, 1.0, 9.0],      # predicts t2: best text 2.0 vs EOT 1.0 -> +1.0 (id 5 not text)
        [0.0, 0.25, 0.0, 0.0, 3.0, 0.0],     # predicts t3: 0.25 - 3.0 = -2.75 (EOT would win here)
        [1.0, 0.0, 0.0, 0.0, 4.5, 7.0],      # predicts EOT: 4.5 - 1.0 = +3.5 (the special id does not count)
    ])


def test_margins_match_hand_computed_values():
    m = stop_margins(hand_logits(), n_prompt=2, n_text=3, eot=EOT, text_ids=TEXT)
    assert m.early == pytest.approx(-2.75)
    assert m.end == pytest.approx(3.5)


def test_margins_are_log_odds_so_a_row_shift_or_log_softmax_changes_nothing():
    lg = hand_logits()
    shifted = lg + torch.tensor([[3.0], [-1.0], [7.5], [0.3], [-20.0]])
    for x in (shifted, torch.log_softmax(lg, dim=1)):
        m = stop_margins(x, 2, 3, EOT, TEXT)
        assert m.early == pytest.approx(-2.75) and m.end == pytest.approx(3.5)


def test_short_transcripts():
    # one text token: no inner position (the only one is the first, where EOT is suppressed)
    one = stop_margins(torch.tensor([[0.0] * 6, [1.0, 0, 0, 0, 2.0, 0], [0.5, 0, 0, 0, 2.0, 0]]), 2, 1, EOT, TEXT)
    assert one.early is None and one.end == pytest.approx(1.5)
    empty = stop_margins(torch.zeros(2, 6), 2, 0, EOT, TEXT)
    assert empty.early is None and empty.end is None


def test_wrong_number_of_rows_is_an_error():
    with pytest.raises(ValueError, match="expected logits for 5 positions"):
        stop_margins(hand_logits()[:4], 2, 3, EOT, TEXT)


def test_paired_comparison_of_a_constant_shift_is_exact():
    ref = [1.0, -0.5, None, 3.0, 2.0]
    sys_ = [None if r is None else r - 0.75 for r in ref]
    sys_[4] = None                                      # a margin missing on one side only: left out
    c = compare_margins(sys_, ref)
    assert c.n == 3
    assert c.mean_diff == pytest.approx(-0.75) and c.lo == pytest.approx(-0.75) and c.hi == pytest.approx(-0.75)
    # pairs (0.25, 1.0), (-1.25, -0.5), (2.25, 3.0): one margin below zero on each side
    assert (c.below_zero, c.below_zero_reference) == (1, 1)
    assert (c.new_below, c.fixed_below, c.sign_test_p) == (0, 0, 1.0)   # the same utterance, not discordant
    c = compare_margins([-1.0, -2.0, -0.5, 1.0], [1.0, 2.0, 0.5, -1.0])
    assert (c.new_below, c.fixed_below) == (3, 1) and c.sign_test_p == pytest.approx(2 * 5 / 16)
    assert compare_margins([None], [1.0]) is None
    with pytest.raises(ValueError, match="2 system margins against 1"):
        compare_margins([1.0, 2.0], [1.0])


def test_paired_comparison_ci_covers_the_mean_of_noisy_differences():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(400, generator=g).tolist()
    sys_ = [r + 0.2 + 0.5 * float(e) for r, e in zip(ref, torch.randn(400, generator=g))]
    c = compare_margins(sys_, ref)
    mean = sum(s - r for s, r in zip(sys_, ref)) / 400
    assert c.mean_diff == pytest.approx(mean)
    assert c.lo < mean < c.hi and c.hi - c.lo < 0.25 and not math.isnan(c.lo)


def test_pooling_over_sets_weights_every_utterance_and_sums_the_counts():
    a = ([1.0, 2.0], [0.0, 0.0])        # differences +1, +2
    b = ([-1.0, None], [1.0, 3.0])      # difference -2 (the second utterance has one margin only)
    c = compare_margin_sets([a, b])
    assert c.n == 3 and c.mean_diff == pytest.approx(1 / 3)
    assert (c.below_zero, c.below_zero_reference, c.new_below, c.fixed_below) == (1, 0, 1, 0)
    assert c.sign_test_p == 1.0
    one = compare_margin_sets([a])
    assert (one.n, one.mean_diff) == (2, pytest.approx(1.5)) and one == compare_margins(*a)
    assert compare_margin_sets([([None], [1.0])]) is None
