"""tarq split: a seeded calibration / evaluation partition that every tarq command reads back."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tarq.cli.main import main
from tarq.data import Utterance, load_dataset
from tarq.data.split import partition


def corpus(root: Path, n: int) -> Path:
    """n one-tenth-second clips with transcripts, listed in a shuffled manifest with relative audio paths."""
    (root / "audio").mkdir(parents=True)
    rows = []
    for i in range(n):
        sf.write(str(root / "audio" / f"u{i:02d}.flac"), np.zeros(1600, dtype=np.float32), 16000)
        rows.append({"id": f"u{i:02d}", "audio": f"audio/u{i:02d}.flac", "text": f"word {i}", "duration": 0.1})
    random.Random(1).shuffle(rows)
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def utts(n: int) -> list[Utterance]:
    return [Utterance(f"u{i:02d}", Path(f"/a/u{i:02d}.flac"), f"t{i}") for i in range(n)]


def test_partition_is_a_seeded_split_of_the_sorted_ids():
    calib, held = partition(utts(11), 0.5, seed=3)
    ids_c, ids_h = [u.id for u in calib], [u.id for u in held]
    assert len(ids_c) == 6 and len(ids_h) == 5                 # round(5.5) = 6 (half up)
    assert sorted(ids_c + ids_h) == [f"u{i:02d}" for i in range(11)] and not set(ids_c) & set(ids_h)
    assert ids_c == sorted(ids_c) and ids_h == sorted(ids_h)
    # by definition: random.Random(seed).sample over the id-sorted positions
    assert ids_c == [f"u{i:02d}" for i in sorted(random.Random(3).sample(range(11), 6))]
    shuffled = utts(11)
    random.Random(0).shuffle(shuffled)
    assert [u.id for u in partition(shuffled, 0.5, seed=3)[0]] == ids_c   # manifest order does not matter
    assert [u.id for u in partition(utts(11), 0.5, seed=4)[0]] != ids_c


def test_partition_keeps_both_parts_non_empty_and_rejects_bad_fractions():
    assert [len(p) for p in partition(utts(3), 0.01, 0)] == [1, 2]
    assert [len(p) for p in partition(utts(3), 0.99, 0)] == [2, 1]
    for bad in (0.0, 1.0, -0.5, 2.0):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            partition(utts(4), bad, 0)
    with pytest.raises(ValueError, match="cannot be split"):
        partition(utts(1), 0.5, 0)


def test_split_cli_writes_two_manifests_that_load_back(tmp_path, capsys):
    src = corpus(tmp_path / "myset", 10)
    out = tmp_path / "splits"
    assert main(["split", str(src), "--out", str(out), "--calib-fraction", "0.3", "--seed", "7"]) == 0
    assert "calibration: 3 utterances" in capsys.readouterr().out
    calib = load_dataset(out / "myset-calib")
    held = load_dataset(out / "myset-eval")
    original = {u.id: u for u in load_dataset(src)}
    assert len(calib) == 3 and len(held) == 7
    assert sorted(u.id for u in calib + held) == sorted(original)
    for u in calib + held:                                      # same text and the same audio file, by absolute path
        assert u.text == original[u.id].text and u.audio.is_absolute()
        assert os.path.samefile(u.audio, original[u.id].audio)
    assert [u.id for u in calib] == [u.id for u in partition(list(original.values()), 0.3, 7)[0]]


def test_split_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["split", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tarq split: error:") and str(tmp_path / "nope") in err and "\n" not in err
    src = corpus(tmp_path / "s", 4)
    assert main(["split", str(src), "--out", str(tmp_path / "o"), "--calib-fraction", "1"]) == 1
    assert "strictly between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    bare = tmp_path / "bare"                                   # audio without transcripts: nothing to evaluate on
    bare.mkdir()
    sf.write(str(bare / "a.flac"), np.zeros(1600, dtype=np.float32), 16000)
    sf.write(str(bare / "b.flac"), np.zeros(1600, dtype=np.float32), 16000)
    assert main(["split", str(bare), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert "no reference transcript" in err and str(bare) in err and not (tmp_path / "o").exists()
