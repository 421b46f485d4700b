"""Non-weight parts of a whisper.cpp file: the raw-byte vocabulary and the mel filter bank."""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: printable bytes map to themselves, the other 68 bytes
    to code points 256, 257, ... in byte order (the table byte-level BPE vocabularies are written in)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def token_to_bytes(token: str) -> bytes:
    """GPT-2 unicode form of a BPE token -> its raw UTF-8 bytes (``"Ġthe"`` -> ``b" the"``)."""
    table = _unicode_to_byte()
    try:
        return bytes(table[c] for c in token)
    except KeyError as e:
        raise ValueError(f"token {token!r} is not in GPT-2 byte-level form (character {e.args[0]!r})") from None


def _base_vocab(tokenizer: Any) -> dict[str, int]:
    """token -> id of the BPE model itself, without tokenizer-added special tokens."""
    if isinstance(tokenizer, (str, os.PathLike)):
        d = Path(tokenizer)
        if (d / "vocab.json").is_file():
            return json.loads((d / "vocab.json").read_text(encoding="utf-8"))
        if (d / "tokenizer.json").is_file():
            tj = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
            return dict(tj["model"]["vocab"])
        raise FileNotFoundError(f"{d}: no vocab.json or tokenizer.json (needed for the whisper.cpp vocabulary)")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return dict(backend.get_vocab(with_added_tokens=False))
    return dict(tokenizer.get_vocab())


def vocab_bytes(tokenizer: Any) -> list[bytes]:
    """Raw bytes of token ids 0..N-1 of the base vocabulary, as convert-h5-to-ggml writes them.

    ``tokenizer`` is a transformers tokenizer or a directory with vocab.json / tokenizer.json. Special
    tokens beyond the base vocabulary are synthesized by whisper.cpp from n_vocab.
    """
    vocab = _base_vocab(tokenizer)
    by_id = sorted((i, t) for t, i in vocab.items())
    ids = [i for i, _ in by_id]
    if ids != list(range(len(ids))):
        raise ValueError(f"tokenizer vocabulary ids are not contiguous from 0 ({len(ids)} tokens, max id {max(ids)})")
    # special tokens kept in the BPE vocab (<|endoftext|>) are printable ASCII and map to themselves
    return [token_to_bytes(tok) for _, tok in by_id]


def mel_filters(n_mels: int) -> np.ndarray:
    """float32 [n_mels, 201] Slaney mel filter bank, HF WhisperFeatureExtractor's (== openai/whisper's)."""
    from transformers import WhisperFeatureExtractor

    fb = WhisperFeatureExtractor(feature_size=n_mels).mel_filters  # [n_freq, n_mels]
    return np.ascontiguousarray(np.asarray(fb).T, dtype=np.float32)
