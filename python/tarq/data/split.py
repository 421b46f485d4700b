"""Split one corpus into a calibration part and a held-out evaluation part (``tarq split``).

A user with in-domain recordings wants to calibrate on some and measure on the others; comparing calibration
domains needs the same (issue 15: "TTS + noisy TTS + a real split"). The split is a seeded random partition of the
utterance ids, sorted first, so the same corpus, fraction and seed give the same two parts whatever the manifest's
order. Each part is a JSONL manifest (id, audio as an absolute path, text, duration) that every tarq command reads
like any other corpus; the audio is not copied.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

from .._atomic import atomic_write
from .datasets import Utterance, dataset_name, load_dataset, require_transcripts


def partition(utts: list[Utterance], calib_fraction: float, seed: int) -> tuple[list[Utterance], list[Utterance]]:
    """(calibration part, evaluation part): round(fraction · n) utterances drawn with random.Random(seed) from the
    id-sorted list, both parts in id order. Both parts are non-empty (a one-utterance corpus cannot be split)."""
    if not 0.0 < calib_fraction < 1.0:
        raise ValueError(f"the calibration fraction must lie strictly between 0 and 1, got {calib_fraction}")
    ordered = sorted(utts, key=lambda u: u.id)
    n = len(ordered)
    if n < 2:
        raise ValueError(f"a corpus of {n} utterance(s) cannot be split into two non-empty parts")
    k = min(max(int(math.floor(calib_fraction * n + 0.5)), 1), n - 1)
    picked = set(random.Random(seed).sample(range(n), k))
    return ([u for i, u in enumerate(ordered) if i in picked], [u for i, u in enumerate(ordered) if i not in picked])


def write_manifest(path: Path, utts: list[Utterance]) -> Path:
    """A JSONL manifest with absolute audio paths, written atomically (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as f:
        for u in utts:
            row = {"id": u.id, "audio": str(Path(u.audio).resolve()), "text": u.text}
            if u.duration is not None:
                row["duration"] = u.duration
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def split_corpus(data: str | Path, out: str | Path, calib_fraction: float = 0.5, seed: int = 0,
                 name: str | None = None) -> dict:
    """Write OUT/NAME-calib/manifest.jsonl and OUT/NAME-eval/manifest.jsonl (NAME: the corpus folder's name);
    returns {"calib": path, "eval": path, "n_calib": k, "n_eval": n - k}."""
    src = Path(data).expanduser()
    utts = load_dataset(src)
    require_transcripts(utts, src)           # the evaluation part is scored against them
    calib, held_out = partition(utts, calib_fraction, seed)
    stem = name or dataset_name(src)
    out = Path(out).expanduser()
    return {"calib": str(write_manifest(out / f"{stem}-calib" / "manifest.jsonl", calib)),
            "eval": str(write_manifest(out / f"{stem}-eval" / "manifest.jsonl", held_out)),
            "n_calib": len(calib), "n_eval": len(held_out)}
