"""Lexical rarity tags for decoder positions (TARQ paper §3.1, "Lexical groups").

A decoder position is *tail* (rare) when the word it is tagged with has
``wordfreq.zipf_frequency(word, "en") < k`` (k = 3.0: under one occurrence per million words).

Token -> word alignment is by detokenization: a BPE token whose surface form starts with a space ("Ġ" in
byte-level BPE, "▁" in Metaspace BPE) opens a new word, every other token continues the current one. Choices (docs/methods.md):

* ``tag_by="target"`` (default): position t is tagged by the word of the token it *predicts*
  (``tokens[t+1]``), because that is the decision the calibration metric should protect.
  ``tag_by="input"`` tags it by the word of the token it reads (``tokens[t]``).
* Special tokens (prompt, eot) and punctuation-only tokens are always *common*.
* The word's surface form is stripped of surrounding punctuation and of a possessive "'s" before lookup
  (wordfreq scores "Weston's" far lower than "Weston").
"""
from __future__ import annotations

import functools
import string
import unicodedata
from dataclasses import dataclass
from typing import Sequence

import torch

DEFAULT_ZIPF_THRESHOLD = 3.0
TAG_BY = ("target", "input")
_WORD_START = ("Ġ", "▁")   # byte-level BPE (GPT-2, Qwen) and Metaspace BPE (Moonshine, Llama) word-start marks


def _is_punct(text: str) -> bool:
    text = text.strip()
    return bool(text) and all(unicodedata.category(ch).startswith("P") or ch in string.punctuation for ch in text)


def normalize_word(word: str) -> str:
    w = word.strip().strip(string.punctuation + "“”‘’«»—–…")
    for suffix in ("'s", "’s"):
        if w.lower().endswith(suffix) and len(w) > len(suffix):
            w = w[: -len(suffix)]
    return w


@functools.lru_cache(maxsize=65536)
def zipf(word: str, lang: str = "en") -> float:
    import wordfreq

    return wordfreq.zipf_frequency(word, lang)


def is_rare_word(word: str, threshold: float = DEFAULT_ZIPF_THRESHOLD, lang: str = "en") -> bool:
    w = normalize_word(word)
    return bool(w) and zipf(w, lang) < threshold


@dataclass
class TokenWords:
    """Per token of a sequence: the index of the word it belongs to (-1: special/punctuation) and the words."""
    word_index: list[int]
    words: list[str]


def align_tokens_to_words(tokenizer, token_ids: Sequence[int], special_ids: set[int]) -> TokenWords:
    """Group token ids into words: a token whose surface form starts with a space starts a new word."""
    pieces = tokenizer.convert_ids_to_tokens(list(token_ids))
    word_index: list[int] = []
    word_tokens: list[list[int]] = []
    current = -1
    for tid, piece in zip(token_ids, pieces):
        if tid in special_ids or piece is None:
            word_index.append(-1)
            current = -1  # a special token ends the current word
            continue
        surface = tokenizer.convert_tokens_to_string([piece])
        starts_word = piece.startswith(_WORD_START) or surface.startswith(" ") or current < 0
        if starts_word:
            word_tokens.append([tid])
            current = len(word_tokens) - 1
        else:
            word_tokens[current].append(tid)
        word_index.append(-1 if _is_punct(surface) else current)
    words = [tokenizer.decode(ids).strip() for ids in word_tokens]
    return TokenWords(word_index, words)


def tag_positions(tokenizer, token_ids: Sequence[int], special_ids: set[int], *,
                  threshold: float = DEFAULT_ZIPF_THRESHOLD, tag_by: str = "target",
                  lang: str = "en") -> torch.Tensor:
    """Bool tensor [len(token_ids) - 1]: tail tag of each teacher-forced decoder position.

    Position t reads ``token_ids[t]`` and predicts ``token_ids[t + 1]``.
    """
    if tag_by not in TAG_BY:
        raise ValueError(f"tag_by must be one of {TAG_BY}, got {tag_by!r}")
    tw = align_tokens_to_words(tokenizer, token_ids, special_ids)
    rare_word = [is_rare_word(w, threshold, lang) for w in tw.words]
    token_rare = [wi >= 0 and rare_word[wi] for wi in tw.word_index]
    n = len(token_ids) - 1
    if n <= 0:
        return torch.zeros(0, dtype=torch.bool)
    src = token_rare[1:] if tag_by == "target" else token_rare[:-1]
    return torch.tensor(src, dtype=torch.bool)
