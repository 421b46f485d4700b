"""Word classes shared by calibration tagging (``tarq.calib.rarity``) and scoring (``tarq.eval.metrics``).

One definition of "rare" for the whole project: a *scoring word* is a token of Whisper's English-normalised
text (``tarq.eval.normalizer``) that has a letter or digit, and it is **rare** when
``wordfreq.zipf_frequency(word, "en") < DEFAULT_ZIPF_THRESHOLD`` (3.0: rarer than once per million words).

* Scoring applies :func:`is_rare` to the normalised reference words.
* Calibration sees surface words of a tokenized transcript ("Zyxel's,", "colour", "Mr."). It normalises each
  one with the same normaliser (:func:`scoring_words`) and calls it rare when a scoring word it yields is rare
  *and* that word survives normalisation of the whole transcript (:func:`rare_surface_words`): "Zyxel's," ->
  ["zyxel", "is"] -> rare because "zyxel" is; "<beep descending>" -> nothing, because the normaliser drops
  bracketed text in context. So a word is rare for calibration iff it is rare when scored
  (``tests/test_lexicon.py`` checks this on real transcripts). The one known exception: spelled numbers the
  normaliser joins across words ("twelve thirty four" -> "1234", Zipf 2.1, rare when scored), which calibration
  tags word by word ("twelve" -> "12": common).

Numerals (a digit, or a spelled number word the normaliser leaves as a word) are a separate class that overlaps
rare and common.
"""
from __future__ import annotations

import functools
import re

DEFAULT_ZIPF_THRESHOLD = 3.0

# Spelled-out numbers that survive Whisper's normaliser (it keeps a lone "one" as a word, for "one of them").
NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen"
    " eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million billion".split())
_DIGIT = re.compile(r"\d")


@functools.lru_cache(maxsize=1 << 17)
def zipf(word: str, lang: str = "en") -> float:
    """wordfreq's Zipf frequency (log10 of occurrences per billion words)."""
    from wordfreq import zipf_frequency

    return zipf_frequency(word, lang)


def is_rare(word: str, k: float = DEFAULT_ZIPF_THRESHOLD, lang: str = "en") -> bool:
    """Rare = Zipf frequency below k. Takes a *normalised scoring word* (see :func:`scoring_words`)."""
    return zipf(word, lang) < k


def is_numeral(word: str) -> bool:
    """A normalised word that contains a digit ("1947", "2nd", "$5.50") or is a spelled number word."""
    return bool(_DIGIT.search(word)) or word in NUMBER_WORDS


@functools.lru_cache(maxsize=1 << 16)
def _normalised(text: str) -> str:
    from .eval.normalizer import normalize   # lazy: tarq.eval imports this module

    return normalize(text)


def scoring_words(text: str, normalise: bool = True) -> list[str]:
    """Scoring tokens: Whisper-normalised text split on whitespace, minus tokens without a letter or digit
    (the normaliser turns an ellipsis "..." into a lone "." token, which is not a word)."""
    return [w for w in (_normalised(text) if normalise else text).split() if any(ch.isalnum() for ch in w)]


def is_rare_text(text: str, k: float = DEFAULT_ZIPF_THRESHOLD, lang: str = "en") -> bool:
    """A surface word (or phrase) is rare when any scoring word it normalises to is rare."""
    return any(is_rare(w, k, lang) for w in scoring_words(text))


def rare_surface_words(surface: list[str], k: float = DEFAULT_ZIPF_THRESHOLD, lang: str = "en") -> list[bool]:
    """Rare tag of each surface word of one transcript (in order), consistent with scoring that transcript:
    a word is rare when one of its own scoring words is rare and is among the transcript's scoring words."""
    in_context = {w for w in scoring_words(" ".join(surface)) if is_rare(w, k, lang)}
    return [any(w in in_context for w in scoring_words(word)) for word in surface]
