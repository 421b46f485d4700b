"""Corpus-level WER, rare-WER, common-WER and numeral-WER from jiwer alignments.

Every rate is pooled over the corpus (sum of errors / sum of reference words of the class), never a mean of
per-utterance rates. Texts are normalised with Whisper's English normaliser first (``tarq.eval.normalizer``).

Charging convention (documented in docs/evaluation.md): every alignment error is owned by one reference position.
Substitutions and deletions are owned by the reference word they replace or drop. A run of inserted words sitting
between reference words ``i-1`` and ``i`` is owned by

* the only neighbour that exists (utterance start -> word 0, utterance end -> the last word);
* otherwise (default rule ``"left"``) the left neighbour ``i-1``: the reference word the alignment consumed last,
  i.e. the TARQ paper's "aligned reference position", so insertions after a rare word count as rare-relevant;
* nobody, when the reference is empty: those insertions count in WER and common-WER only.

``insertion_rule="adjacent-rare"`` instead charges an insertion to the right neighbour when only that one is rare
(an insertion on either side of a rare word is rare-relevant); ``"none"`` never charges insertions to rare words.
The default reproduces the reference figures of shared/data/README.md (docs/evaluation.md compares the three).
Tokens with no letter or digit (a lone "." that the normaliser leaves from "...") are dropped before alignment.

A class rate is then (errors owned by the class's positions) / (number of reference words in the class), so rare
errors + common errors = all errors, and WER is unchanged by the convention.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import jiwer

# the one definition of rare / numeral / scoring word, shared with calibration tagging (re-exported here)
from ..lexicon import DEFAULT_ZIPF_THRESHOLD, is_numeral, is_rare, scoring_words  # noqa: F401
from ..lexicon import NUMBER_WORDS as _NUMBER_WORDS  # noqa: F401
from ..lexicon import zipf  # noqa: F401


@dataclass(frozen=True)
class UttCounts:
    """Error and word counts of one utterance (additive; the bootstrap resamples these)."""
    n_words: int
    n_rare: int
    n_numeral: int
    errors: int           # S + D + I
    substitutions: int
    deletions: int
    insertions: int
    rare_errors: int
    numeral_errors: int


INSERTION_RULES = ("left", "adjacent-rare", "none")
DEFAULT_INSERTION_RULE = "left"


def _insertion_owner(i: int, n: int, rare: list[bool], rule: str = DEFAULT_INSERTION_RULE) -> int | None:
    """Reference position owning insertions that sit before reference word i (0 <= i <= n); see module doc.

    "left" (default): the left neighbour; "adjacent-rare": the left neighbour unless only the right one is rare;
    "none": nobody (insertions never count as rare). Edges go to the only neighbour."""
    if n == 0 or rule == "none":
        return None
    if i == 0:
        return 0
    if i == n:
        return n - 1
    if rule == "left":
        return i - 1
    return i if (rare[i] and not rare[i - 1]) else i - 1


def count_errors(ref_words: list[str], alignment, k: float = DEFAULT_ZIPF_THRESHOLD,
                 insertion_rule: str = DEFAULT_INSERTION_RULE) -> UttCounts:
    """Per-position error charges for one utterance from its jiwer alignment chunks."""
    n = len(ref_words)
    rare = [is_rare(w, k) for w in ref_words]
    numeral = [is_numeral(w) for w in ref_words]
    owned = [0] * n
    unowned = 0
    subs = dels = ins = 0
    for chunk in alignment:
        if chunk.type == "equal":
            continue
        if chunk.type in ("substitute", "delete"):
            for p in range(chunk.ref_start_idx, chunk.ref_end_idx):
                owned[p] += 1
            width = chunk.ref_end_idx - chunk.ref_start_idx
            if chunk.type == "substitute":
                subs += width
            else:
                dels += width
        elif chunk.type == "insert":
            width = chunk.hyp_end_idx - chunk.hyp_start_idx
            ins += width
            owner = _insertion_owner(chunk.ref_start_idx, n, rare, insertion_rule)
            if owner is None:
                unowned += width
            else:
                owned[owner] += width
        else:  # pragma: no cover - jiwer's chunk types are fixed
            raise ValueError(f"unknown jiwer alignment chunk type {chunk.type!r}")
    errors = sum(owned) + unowned
    assert errors == subs + dels + ins
    return UttCounts(
        n_words=n, n_rare=sum(rare), n_numeral=sum(numeral), errors=errors, substitutions=subs, deletions=dels,
        insertions=ins, rare_errors=sum(e for e, r in zip(owned, rare) if r),
        numeral_errors=sum(e for e, m in zip(owned, numeral) if m))


def words(text: str, normalise: bool = True) -> list[str]:
    """Scoring tokens of ``text`` (``tarq.lexicon.scoring_words``: the one definition calibration also uses)."""
    return scoring_words(text, normalise)


def align_counts(refs: list[str], hyps: list[str], k: float = DEFAULT_ZIPF_THRESHOLD, normalise: bool = True,
                 insertion_rule: str = DEFAULT_INSERTION_RULE) -> list[UttCounts]:
    """UttCounts for each (reference, hypothesis) pair; texts are normalised first unless normalise=False."""
    if insertion_rule not in INSERTION_RULES:
        raise ValueError(f"unknown insertion rule {insertion_rule!r}; choose from {', '.join(INSERTION_RULES)}")
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if any(r is None for r in refs):
        raise ValueError("a reference transcript is missing (None); cannot score")
    ref_n = [" ".join(words(r, normalise)) for r in refs]
    hyp_n = [" ".join(words(h or "", normalise)) for h in hyps]
    if not refs:
        return []
    out = jiwer.process_words(ref_n, hyp_n)
    return [count_errors(r.split(), a, k, insertion_rule) for r, a in zip(ref_n, out.alignments)]


def _rate(num: int, den: int) -> float:
    return num / den if den else math.nan


@dataclass(frozen=True)
class Scores:
    """Pooled corpus scores. Rates are fractions (0.056 = 5.6 %); nan when the class has no reference words."""
    wer: float
    rare_wer: float
    common_wer: float
    numeral_wer: float
    n_utts: int
    n_words: int
    n_rare: int
    n_common: int
    n_numeral: int
    errors: int
    substitutions: int
    deletions: int
    insertions: int
    rare_errors: int
    common_errors: int
    numeral_errors: int
    k: float = DEFAULT_ZIPF_THRESHOLD
    insertion_rule: str = DEFAULT_INSERTION_RULE

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


RATE_NAMES = ("wer", "rare_wer", "common_wer", "numeral_wer")


def pool(counts: list[UttCounts], k: float = DEFAULT_ZIPF_THRESHOLD,
         insertion_rule: str = DEFAULT_INSERTION_RULE) -> Scores:
    """Corpus-level Scores from per-utterance counts. Raises ValueError when there are no reference words."""
    tot = {f.name: sum(getattr(c, f.name) for c in counts) for f in fields(UttCounts)}
    if tot["n_words"] == 0:
        raise ValueError(f"cannot score: the {len(counts)} reference transcript(s) have no words after normalisation")
    n_common = tot["n_words"] - tot["n_rare"]
    common_errors = tot["errors"] - tot["rare_errors"]
    return Scores(
        wer=_rate(tot["errors"], tot["n_words"]), rare_wer=_rate(tot["rare_errors"], tot["n_rare"]),
        common_wer=_rate(common_errors, n_common), numeral_wer=_rate(tot["numeral_errors"], tot["n_numeral"]),
        n_utts=len(counts), n_words=tot["n_words"], n_rare=tot["n_rare"], n_common=n_common,
        n_numeral=tot["n_numeral"], errors=tot["errors"], substitutions=tot["substitutions"],
        deletions=tot["deletions"], insertions=tot["insertions"], rare_errors=tot["rare_errors"],
        common_errors=common_errors, numeral_errors=tot["numeral_errors"], k=k, insertion_rule=insertion_rule)


def score_corpus(refs: list[str], hyps: list[str], k: float = DEFAULT_ZIPF_THRESHOLD,
                 insertion_rule: str = DEFAULT_INSERTION_RULE) -> Scores:
    """Pooled WER / rare-WER / common-WER / numeral-WER of hypotheses against references (raw text in)."""
    return pool(align_counts(refs, hyps, k, insertion_rule=insertion_rule), k, insertion_rule)


def mean_over_datasets(scores: list[Scores]) -> dict[str, float]:
    """Unweighted mean of each rate over datasets (each dataset counts once, whatever its size)."""
    out = {}
    for name in RATE_NAMES:
        vals = [getattr(s, name) for s in scores if not math.isnan(getattr(s, name))]
        out[name] = sum(vals) / len(vals) if vals else math.nan
    return out
