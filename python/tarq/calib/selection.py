"""Which utterances calibrate: several sources mixed, and the TARQ paper's rare-biased pools (§5.3, App. H.1).

Sources are concatenated in the order given (ids prefixed with the source name when there is more than one, so they
stay unique); mixing two sets is the same as calibrating on their concatenation (a unit test checks it). Strategies:

* ``random`` (default): a seeded sample of ``n`` utterances, kept in corpus order.
* ``r-top``: the ``n`` utterances with the highest rare density ρ = rare words / words (eq. 13; rare = the scoring
  definition of tarq.eval, Zipf < k), ties broken by corpus order.
* ``r-mix``: ⌈n/2⌉ by top ρ plus the rest sampled uniformly from the remaining utterances.
* ``r-cross``: the top ⌈4n/3⌉ by ρ from *each* source, then the global top ``n`` over that pool (removes
  single-source bias); with one source it is r-top.
"""
from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Sequence

STRATEGIES = ("random", "r-top", "r-mix", "r-cross")


def combine_sources(sources: Sequence[tuple[str, Sequence]]) -> tuple[list, list[str]]:
    """[(name, utterances)] -> (utterances with unique ids, the source name of each)."""
    if len(sources) == 1:
        name, utts = sources[0]
        return list(utts), [name] * len(utts)
    names = [n for n, _ in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"calibration sources must have distinct names, got {names}")
    out, origin = [], []
    for name, utts in sources:
        for u in utts:
            out.append(replace(u, id=f"{name}/{u.id}"))
            origin.append(name)
    return out, origin


def rare_density(text: str | None, k: float) -> float:
    """ρ = (rare words) / (words) of a transcript, with tarq's scoring normalisation and rarity rule."""
    from ..lexicon import is_rare
    from ..eval.metrics import words

    w = words(text or "")
    return sum(is_rare(x, k) for x in w) / len(w) if w else 0.0


def _top(idx: Sequence[int], rho: Sequence[float], n: int) -> list[int]:
    return sorted(sorted(idx, key=lambda i: (-rho[i], i))[:n])


def select_calibration(utterances: Sequence, n: int, seed: int, strategy: str = "random",
                       origin: Sequence[str] | None = None, zipf_threshold: float = 3.0) -> list:
    """The calibration utterances, in corpus order."""
    if strategy not in STRATEGIES:
        raise ValueError(f"calibration selection must be one of {STRATEGIES}, got {strategy!r}")
    from .pipeline import select_subset

    items = list(utterances)
    if n >= len(items) or strategy == "random":
        return select_subset(items, n, seed)
    rho = [rare_density(u.text, zipf_threshold) for u in items]
    all_idx = list(range(len(items)))
    if strategy == "r-top":
        chosen = _top(all_idx, rho, n)
    elif strategy == "r-mix":
        top = _top(all_idx, rho, math.ceil(n / 2))
        rest = [i for i in all_idx if i not in set(top)]
        chosen = sorted(top + random.Random(seed).sample(rest, n - len(top)))
    else:   # r-cross
        origin = list(origin) if origin is not None else [""] * len(items)
        pool: list[int] = []
        for src in dict.fromkeys(origin):
            pool += _top([i for i in all_idx if origin[i] == src], rho, math.ceil(4 * n / 3))
        chosen = _top(pool, rho, n)
    return [items[i] for i in chosen]
