"""Lexical rarity tags for decoder positions (TARQ paper §3.1, "Lexical groups").

A decoder position is *tail* (rare) when the word it is tagged with has
``wordfreq.zipf_frequency(word, "en") < k`` (k = 3.0: under one occurrence per million words).

Token -> word alignment is by detokenization: a BPE token whose surface form starts with a space ("Ġ" in
byte-level BPE, "▁" in Metaspace BPE) opens a new word, every other token continues the current one. Choices (docs/methods.md):

* ``tag_by="target"`` (default): position t is tagged by the word of the token it *predicts*
  (``tokens[t+1]``), because that is the decision the calibration metric should protect.
  ``tag_by="input"`` tags it by the word of the token it reads (``tokens[t]``).
* Special tokens (prompt, eot) and punctuation-only tokens are always *common*.
* A word is rare exactly when it would be rare when scored: its surface form ("Weston's,", "colour", "Mr.")
  goes through the same Whisper normaliser as evaluation and is rare when a normalised word it yields has
  Zipf < k and survives normalising the whole transcript (``tarq.lexicon.rare_surface_words``, the one
  definition shared with ``tarq.eval.metrics``; "Zyxel's," -> "zyxel is" -> rare). Same threshold constant.
"""
from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass
from typing import Sequence

import torch

from ..lexicon import DEFAULT_ZIPF_THRESHOLD, is_rare_text, rare_surface_words, zipf  # noqa: F401  (zipf re-exported)
TAG_BY = ("target", "input")
_WORD_START = ("Ġ", "▁")   # byte-level BPE (GPT-2, Qwen) and Metaspace BPE (Moonshine, Llama) word-start marks


def _is_punct(text: str) -> bool:
    text = text.strip()
    return bool(text) and all(unicodedata.category(ch).startswith("P") or ch in string.punctuation for ch in text)


def is_rare_word(word: str, threshold: float = DEFAULT_ZIPF_THRESHOLD, lang: str = "en") -> bool:
    """A surface word on its own is rare iff a scoring word it normalises to is rare (``tarq.lexicon``).
    Tagging a whole transcript uses ``rare_surface_words``, which also applies the normaliser in context."""
    return is_rare_text(word, threshold, lang)


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
    rare_word = rare_surface_words(tw.words, threshold, lang)
    token_rare = [wi >= 0 and rare_word[wi] for wi in tw.word_index]
    n = len(token_ids) - 1
    if n <= 0:
        return torch.zeros(0, dtype=torch.bool)
    src = token_rare[1:] if tag_by == "target" else token_rare[:-1]
    return torch.tensor(src, dtype=torch.bool)
