import numpy as np
import pytest

from tarq.eval.segment import SAMPLE_RATE, split_long


def _noise(seconds, seed=0):
    return np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32)


def test_short_clip_is_one_piece():
    a = _noise(29.9)
    (p,) = split_long(a)
    assert p is a or np.array_equal(p, a)


def test_cuts_in_the_silent_gap_and_reassembles():
    a = _noise(73.0)
    a[int(26.0 * SAMPLE_RATE):int(26.5 * SAMPLE_RATE)] = 0          # a pause between 26.0 and 26.5 s
    a[int(49.0 * SAMPLE_RATE):int(49.4 * SAMPLE_RATE)] = 0          # and one at 49.0-49.4 s
    pieces = split_long(a)
    assert np.array_equal(np.concatenate(pieces), a)
    assert all(len(p) <= 30 * SAMPLE_RATE for p in pieces)
    cuts = np.cumsum([len(p) for p in pieces])[:-1] / SAMPLE_RATE
    assert len(cuts) == 2 and 26.0 <= cuts[0] <= 26.5 and 49.0 <= cuts[1] <= 49.4


def test_no_pause_still_respects_the_window():
    a = _noise(95.0)
    pieces = split_long(a)
    assert np.array_equal(np.concatenate(pieces), a)
    assert all(20 * SAMPLE_RATE <= len(p) <= 30 * SAMPLE_RATE for p in pieces[:-1])
    with pytest.raises(ValueError):
        split_long(a, max_s=30, search_s=30)
