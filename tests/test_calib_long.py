"""Calibration clips over Whisper's 30-s window are cut at quiet points, not refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tarq.calib.driver import split_long_utterances
from tarq.data.datasets import Utterance


def test_long_calibration_clips_are_split_and_pseudo_labelled(caplog):
    rng = np.random.default_rng(0)
    speech = (0.1 * rng.standard_normal(16000 * 70)).astype(np.float32)
    speech[16000 * 25:16000 * 26] = 0.0            # a quiet second inside the search window of the first cut
    short = (0.1 * rng.standard_normal(16000 * 5)).astype(np.float32)
    utts = [Utterance("long", Path("long.flac"), "a reference that cannot be split", 70.0),
            Utterance("short", Path("short.flac"), "kept as is", 5.0)]
    out_u, out_a, out_t, n_long = split_long_utterances(utts, [speech, short], [u.text for u in utts])
    assert n_long == 1
    assert [u.id for u in out_u] == ["long#1", "long#2", "long#3", "short"]
    assert all(len(a) <= 30 * 16000 for a in out_a)
    assert sum(len(a) for a in out_a[:3]) == len(speech)
    assert 25 * 16000 <= len(out_a[0]) <= 26 * 16000        # the first cut lands in the quiet second
    assert out_t == [None, None, None, "kept as is"]        # pieces get FP pseudo-labels downstream
    assert "1 calibration clip(s) over 30 s cut" in caplog.text
