"""Result files: everything needed to re-score without decoding again (per-utterance refs, hyps, ids, timing).

Layout (JSON, written atomically)::

    {"format": "tarq-eval-result", "version": 1, "created": ISO time,
     "system": {"label": ..., "backend": ..., "model": ..., ...backend options},
     "normalizer": {...}, "k": 3.0, "insertion_rule": "left",
     "datasets": [{"name", "path", "n_utts", "audio_seconds", "decode_seconds", "rtf", "utts_per_second",
                   "cache_hits", "scores": Scores.to_dict(), "failures": {...},
                   ["damage": {...}, "damage_detail": {...}]     # with a reference system (tarq.eval.damage)
                   "utterances": [{"id", "ref", "hyp", "duration", "seconds"}, ...]}, ...],
     "mean": {"wer": ..., "rare_wer": ..., "common_wer": ..., "numeral_wer": ...},
     ["reference": {"label", "path", "system"}, "pooled": {"damage", "damage_detail", "failures"}]}

Rates are fractions. "seconds" per utterance is its batch's wall time shared equally among the batch (for a
decode-cache hit: the time of the decode that filled the cache). ``failures`` counts loops, truncations and
empty outputs (paired with the reference system when there is one).
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .._atomic import atomic_write
from .damage import damage_against, failure_summary
from .metrics import (DEFAULT_INSERTION_RULE, DEFAULT_ZIPF_THRESHOLD, Scores, UttCounts, align_counts,
                      mean_over_datasets, pool)
from .normalizer import normalizer_info

log = logging.getLogger(__name__)

FORMAT = "tarq-eval-result"
VERSION = 1


@dataclass
class DatasetResult:
    name: str
    path: str
    ids: list[str]
    refs: list[str]
    hyps: list[str]
    durations: list[float | None]
    seconds: list[float | None]
    k: float = DEFAULT_ZIPF_THRESHOLD
    insertion_rule: str = DEFAULT_INSERTION_RULE
    cache_hits: int | None = None        # utterances taken from the decode cache (None: not recorded)
    counts: list[UttCounts] = field(init=False)
    scores: Scores = field(init=False)

    def __post_init__(self):
        n = len(self.ids)
        if not (len(self.refs) == len(self.hyps) == len(self.durations) == len(self.seconds) == n):
            raise ValueError(f"dataset {self.name}: per-utterance lists have different lengths")
        if len(set(self.ids)) != n:
            raise ValueError(f"dataset {self.name}: utterance ids are not unique")
        self.counts = align_counts(self.refs, self.hyps, self.k, insertion_rule=self.insertion_rule)
        self.scores = pool(self.counts, self.k, self.insertion_rule)

    @property
    def audio_seconds(self) -> float | None:
        return None if any(d is None for d in self.durations) else float(sum(self.durations))

    @property
    def decode_seconds(self) -> float | None:
        return None if any(s is None for s in self.seconds) else float(sum(self.seconds))

    def to_dict(self) -> dict:
        audio, dec = self.audio_seconds, self.decode_seconds
        return {
            "name": self.name, "path": self.path, "n_utts": len(self.ids), "audio_seconds": audio,
            "decode_seconds": dec, "rtf": (dec / audio) if (audio and dec is not None) else None,
            "utts_per_second": (len(self.ids) / dec) if dec else None, "cache_hits": self.cache_hits,
            "scores": self.scores.to_dict(), "failures": failure_summary(self.ids, self.counts),
            "utterances": [{"id": i, "ref": r, "hyp": h, "duration": d, "seconds": s} for i, r, h, d, s in
                           zip(self.ids, self.refs, self.hyps, self.durations, self.seconds)],
        }


@dataclass
class EvalResult:
    system: dict
    datasets: list[DatasetResult]
    k: float = DEFAULT_ZIPF_THRESHOLD
    created: str | None = None
    insertion_rule: str = DEFAULT_INSERTION_RULE
    reference: dict | None = None        # {"label", "path", "system"} of the reference system, if any
    saved: dict = field(default_factory=dict)   # damage blocks read from a file (kept when not recomputed)
    _damage: tuple | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return str(self.system.get("label") or self.system.get("model") or "system")

    @property
    def policy(self) -> str:
        return policy_of(self.system)

    def attach_reference(self, reference: "EvalResult", path: str | os.PathLike | None = None,
                         n_boot: int = 1000, seed: int = 0) -> "EvalResult":
        """Score this result as damage against ``reference`` (same utterances; tarq.eval.damage)."""
        for what, mine, theirs in (("decoding policy", self.policy, reference.policy),
                                   ("backend", self.system.get("backend"), reference.system.get("backend"))):
            if mine != theirs:
                log.warning("the reference system was decoded with %s %s and %s with %s %s: its damage mixes "
                            "that difference with the weights'", what, theirs, self.label, what, mine)
        self._damage = damage_against(self, reference, n_boot=n_boot, seed=seed)
        self.reference = {"label": reference.label, "path": None if path is None else str(path),
                          "system": reference.system}
        self.saved = {}
        return self

    def damage_blocks(self) -> tuple[dict[str, dict], dict | None]:
        """({dataset: {"damage", "damage_detail", "failures"}}, pooled block) -- computed, or as read from a
        file; ({}, None) without a reference."""
        if self._damage is None:
            return self.saved.get("datasets", {}), self.saved.get("pooled")
        per, pooled = self._damage

        def block(d):
            return {"damage": d.damage(), "damage_detail": d.detail(), "failures": d.failures()}
        return {name: block(d) for name, d in per.items()}, block(pooled)

    def mean(self) -> dict[str, float]:
        return mean_over_datasets([d.scores for d in self.datasets])

    def dataset(self, name: str) -> DatasetResult | None:
        return next((d for d in self.datasets if d.name == name), None)

    def to_dict(self) -> dict:
        per, pooled = self.damage_blocks()
        datasets = []
        for d in self.datasets:
            dd = d.to_dict()
            if d.name in per:
                dd.update(per[d.name])   # damage, damage_detail, and the paired failures
            datasets.append(dd)
        out = {"format": FORMAT, "version": VERSION, "created": self.created, "system": self.system,
               "normalizer": normalizer_info(), "k": self.k,
               "insertion_rule": self.insertion_rule, "datasets": datasets,
               "mean": {k: (None if math.isnan(v) else v) for k, v in self.mean().items()}}
        if pooled is not None:
            out["reference"] = self.reference
            out["pooled"] = pooled
        return out


def policy_of(system: dict) -> str:
    """The decoding policy a result was produced with. Runtime backends record ``policy``; older results (and
    the torch decoder) are greedy unless whisper.cpp's temperature fallback was on."""
    if system.get("policy"):
        return str(system["policy"])
    return "greedy+fallback" if system.get("temperature_fallback") else "greedy"


def save_result(result: EvalResult, path: str | os.PathLike) -> Path:
    """Write result JSON to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(result.to_dict(), f, indent=1, ensure_ascii=False)
        f.write("\n")
    return path


def load_result(path: str | os.PathLike, k: float | None = None, insertion_rule: str | None = None) -> EvalResult:
    """Read a result JSON and re-score it from its stored references and hypotheses (with the current
    normaliser, and ``k`` / ``insertion_rule`` if given, else the file's)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: result file not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON result file ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a tarq eval result (missing \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise ValueError(f"{path}: result format version {data.get('version')} is not supported (want {VERSION})")
    kk = float(k if k is not None else data.get("k", DEFAULT_ZIPF_THRESHOLD))
    rule = insertion_rule or data.get("insertion_rule", DEFAULT_INSERTION_RULE)
    datasets = []
    saved: dict = {"datasets": {}}
    try:
        for d in data["datasets"]:
            utts = d["utterances"]
            datasets.append(DatasetResult(
                name=d["name"], path=d.get("path", ""), ids=[str(u["id"]) for u in utts],
                refs=[u["ref"] for u in utts], hyps=[u["hyp"] for u in utts],
                durations=[u.get("duration") for u in utts], seconds=[u.get("seconds") for u in utts], k=kk,
                insertion_rule=rule, cache_hits=d.get("cache_hits")))
            if "damage" in d:
                saved["datasets"][d["name"]] = {b: d[b] for b in ("damage", "damage_detail", "failures") if b in d}
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: malformed result file ({type(e).__name__}: {e})") from e
    if data.get("pooled") and kk == float(data.get("k", DEFAULT_ZIPF_THRESHOLD)):
        saved["pooled"] = data["pooled"]      # stored damage stays valid unless the rare threshold changed
    else:
        saved = {}
    return EvalResult(system=dict(data.get("system") or {}), datasets=datasets, k=kk, created=data.get("created"),
                      insertion_rule=rule, reference=data.get("reference") if saved else None, saved=saved)


def paired_counts(a: EvalResult, b: EvalResult) -> tuple[list[str], list[list[UttCounts]], list[list[UttCounts]]]:
    """Per-dataset UttCounts of a and b restricted to utterances both have (matched by dataset name + utterance id),
    in a common order. Raises ValueError when nothing matches or a shared utterance has different references."""
    names, ca, cb = [], [], []
    for da in a.datasets:
        db = b.dataset(da.name)
        if db is None:
            continue
        pos_b = {u: j for j, u in enumerate(db.ids)}
        pairs = [(i, pos_b[u]) for i, u in enumerate(da.ids) if u in pos_b]
        for i, j in pairs:
            if da.counts[i].n_words != db.counts[j].n_words or da.refs[i] != db.refs[j]:
                raise ValueError(f"dataset {da.name}, utterance {da.ids[i]}: the two results have different "
                                 "references")
        if pairs:
            names.append(da.name)
            ca.append([da.counts[i] for i, _ in pairs])
            cb.append([db.counts[j] for _, j in pairs])
    if not names:
        raise ValueError("the two results share no (dataset, utterance id) pairs")
    return names, ca, cb


def compare_results(a: EvalResult, b: EvalResult, n_boot: int = 1000, seed: int = 0,
                    metrics=("wer", "rare_wer")) -> list:
    """[(dataset or "mean", BootstrapResult)] of rate(A) - rate(B) on the utterances both have, per dataset and
    (with several datasets) for the mean over datasets."""
    from .bootstrap import paired_bootstrap

    names, ca, cb = paired_counts(a, b)
    rows = []
    for metric in metrics:
        for name, xa, xb in zip(names, ca, cb):
            rows.append((name, paired_bootstrap([xa], [xb], metric, n_boot=n_boot, seed=seed)))
        if len(names) > 1:
            rows.append(("mean", paired_bootstrap(ca, cb, metric, n_boot=n_boot, seed=seed)))
    return rows
