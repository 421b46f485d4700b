"""Decode datasets with a backend and collect an EvalResult (hypotheses, timing, scores)."""
from __future__ import annotations

import datetime as _dt
import logging
import time
from pathlib import Path
from typing import Sequence

from ..data.datasets import dataset_name, require_transcripts
from .metrics import DEFAULT_INSERTION_RULE, DEFAULT_ZIPF_THRESHOLD
from .results import DatasetResult, EvalResult

log = logging.getLogger(__name__)


def decode_utterances(backend, utterances: Sequence, chunk_size: int | None = None,
                      progress: bool = True, desc: str = "") -> tuple[list[str], list[float], list[float]]:
    """Hypotheses, per-utterance amortised decoding seconds and audio seconds, in input order.

    Utterances are decoded longest first in chunks of ``chunk_size`` (the backend's batch size by default), so a
    torch batch holds clips of similar length; a chunk's wall time (audio loading excluded) is shared equally by
    its utterances."""
    from tarq.data import load_audio

    chunk = max(1, int(chunk_size or getattr(backend, "batch_size", 16)))
    order = sorted(range(len(utterances)), key=lambda i: -(utterances[i].duration or 0.0))
    hyps: list[str] = [""] * len(utterances)
    secs: list[float] = [0.0] * len(utterances)
    audio_secs: list[float] = [0.0] * len(utterances)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(utterances), desc=desc or "decoding", unit="utt", leave=False)
    for start in range(0, len(order), chunk):
        idx = order[start:start + chunk]
        audios = [load_audio(utterances[i].audio) for i in idx]
        for i, a in zip(idx, audios):
            audio_secs[i] = len(a) / 16000
        t0 = time.perf_counter()
        texts = backend.transcribe(audios)
        dt = time.perf_counter() - t0
        if len(texts) != len(idx):
            raise RuntimeError(f"backend {getattr(backend, 'name', backend)} returned {len(texts)} texts "
                               f"for {len(idx)} clips")
        for i, t in zip(idx, texts):
            hyps[i], secs[i] = t, dt / len(idx)
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return hyps, secs, audio_secs


def evaluate(backend, data: Sequence[str | Path], limit: int | None = None, k: float = DEFAULT_ZIPF_THRESHOLD,
             chunk_size: int | None = None, label: str | None = None, progress: bool = True,
             insertion_rule: str = DEFAULT_INSERTION_RULE, cache=None) -> EvalResult:
    """Decode every dataset in ``data`` (anything ``tarq.data.load_dataset`` accepts) and score it.
    ``cache``: a ``tarq.eval.cache.DecodeCache``; only utterances it lacks are decoded (None: decode all)."""
    from tarq.data import load_dataset

    results = []
    seen = set()
    for path in data:
        utts = load_dataset(path, limit=limit)
        name = dataset_name(path)
        if name in seen:
            raise ValueError(f"{path}: two datasets are named {name!r}; results are keyed by dataset name")
        seen.add(name)
        require_transcripts(utts, path)
        if not utts:
            raise ValueError(f"{path}: dataset is empty")
        if cache is None:
            hyps, secs, audio_secs = decode_utterances(backend, utts, chunk_size, progress, desc=name)
            hits = None
        else:
            from .cache import decode_with_cache
            hyps, secs, audio_secs, hits = decode_with_cache(backend, utts, cache, chunk_size=chunk_size,
                                                             progress=progress, desc=name)
        res = DatasetResult(name=name, path=str(path), ids=[u.id for u in utts], refs=[u.text for u in utts],
                            hyps=hyps, durations=audio_secs, seconds=secs, k=k,
                            insertion_rule=insertion_rule, cache_hits=hits)
        log.info("%s: WER %.2f %% on %d utterances (%.1f s decoding)", name, 100 * res.scores.wer, len(utts),
                 res.decode_seconds or 0.0)
        results.append(res)
    system = dict(getattr(backend, "description", {"backend": getattr(backend, "name", "?")}))
    if label:
        system["label"] = label
    return EvalResult(system=system, datasets=results, k=k, insertion_rule=insertion_rule,
                      created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
