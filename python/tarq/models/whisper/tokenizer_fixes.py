"""Build a correct Hugging Face Whisper tokenizer from the ``tokenizer.json`` shipped with CTranslate2 models.

Known defects of the shipped files (the "known traps"):
  * a BPE merge can be missing (the multilingual base package lacks the very first one, ``Ġ t``): every token
    with id >= 256 in a byte-level BPE vocabulary is produced by exactly one merge, so a two-symbol token that no
    merge produces tells us which merge is missing and its rank (merges are ranked in id order);
  * the timestamp tokens ``<|0.00|>`` .. ``<|30.00|>`` are absent (CTranslate2 keeps them in vocabulary.txt only);
  * special-token ids differ between English-only and multilingual models, so ids are always looked up by
    token text, never assumed.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|> in 0.02 s steps
MULTILINGUAL_MIN_VOCAB = 51865  # OpenAI's rule: English-only Whisper vocabularies have 51864 entries
_FIRST_MERGED_ID = 256  # byte-level BPE: ids 0..255 are the bytes themselves


@dataclass(frozen=True)
class SpecialIds:
    eot: int
    sot: int
    transcribe: int
    translate: int
    notimestamps: int
    startofprev: int | None
    nospeech: int | None
    lang: dict[str, int]          # language code -> token id
    timestamp_begin: int

    def as_dict(self) -> dict[str, int]:
        return {"eot": self.eot, "sot": self.sot, "transcribe": self.transcribe, "translate": self.translate,
                "notimestamps": self.notimestamps, "timestamp_begin": self.timestamp_begin}


def _merge_pair(m) -> tuple[str, str]:
    return tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)  # type: ignore[return-value]


def fix_missing_merges(tok: dict, source: str = "tokenizer.json") -> list[tuple[str, str]]:
    """Insert merges for two-symbol vocabulary tokens that no merge produces. Mutates ``tok``; returns the added."""
    model = tok["model"]
    vocab: dict[str, int] = model["vocab"]
    merges = model["merges"]
    as_strings = bool(merges) and isinstance(merges[0], str)
    pairs = [_merge_pair(m) for m in merges]
    produced = {a + b for a, b in pairs}
    special = {t["content"] for t in tok.get("added_tokens", [])}
    missing = []
    for token, idx in vocab.items():
        if idx < _FIRST_MERGED_ID or not token or token in produced or token in special:
            continue
        if len(token) == 2 and token[0] in vocab and token[1] in vocab:
            missing.append((idx, (token[0], token[1])))
        else:
            log.warning("%s: token %r (id %d) is produced by no merge and cannot be repaired", source, token, idx)
    if not missing:
        return []
    # Merge rank follows the id of the token it produces.
    rank_of = {a + b: vocab.get(a + b, 1 << 30) for a, b in pairs}
    for idx, pair in sorted(missing):
        pos = sum(1 for r in rank_of.values() if r < idx)
        pairs.insert(pos, pair)
        rank_of[pair[0] + pair[1]] = idx
    model["merges"] = [f"{a} {b}" for a, b in pairs] if as_strings else [list(p) for p in pairs]
    added = [p for _, p in sorted(missing)]
    log.debug("%s: restored missing BPE merges %s", source, added)
    return added


def _added(tok: dict) -> dict[str, int]:
    return {t["content"]: t["id"] for t in tok.get("added_tokens", [])}


def add_timestamp_tokens(tok: dict, n_embeddings: int, source: str = "tokenizer.json") -> bool:
    """Append ``<|0.00|>``..``<|30.00|>`` after ``<|notimestamps|>`` when absent and the embedding has rows for them."""
    added = _added(tok)
    if "<|0.00|>" in added:
        return False
    if "<|notimestamps|>" not in added:
        raise ValueError(f"{source}: no <|notimestamps|> token; not a Whisper tokenizer")
    begin = added["<|notimestamps|>"] + 1
    if max(added.values()) >= begin:
        raise ValueError(f"{source}: tokens after <|notimestamps|> exist but are not timestamps")
    if begin + N_TIMESTAMPS > n_embeddings:
        log.warning("%s: embedding has %d rows, not enough for %d timestamp tokens after id %d; not adding them",
                    source, n_embeddings, N_TIMESTAMPS, begin)
        return False
    for i in range(N_TIMESTAMPS):
        tok["added_tokens"].append({"id": begin + i, "content": "<|%.2f|>" % (i * 0.02), "single_word": False,
                                    "lstrip": False, "rstrip": False, "normalized": False, "special": False})
    return True


def special_ids(tok: dict, source: str = "tokenizer.json") -> SpecialIds:
    added = _added(tok)

    def need(t: str) -> int:
        if t not in added:
            raise ValueError(f"{source}: special token {t} missing; not a Whisper tokenizer")
        return added[t]

    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    lang = {code: added[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in added}
    nots = need("<|notimestamps|>")
    return SpecialIds(
        eot=need("<|endoftext|>"), sot=need("<|startoftranscript|>"), transcribe=need("<|transcribe|>"),
        translate=need("<|translate|>"), notimestamps=nots, startofprev=added.get("<|startofprev|>"),
        nospeech=added.get("<|nospeech|>", added.get("<|nocaptions|>")), lang=lang, timestamp_begin=nots + 1)


def check_against_vocabulary(tok: dict, vocabulary_txt: Path) -> None:
    """CTranslate2's vocabulary.txt lists every token by id; special ids in the tokenizer must agree with it."""
    if not vocabulary_txt.is_file():
        return
    lines = vocabulary_txt.read_text(encoding="utf-8").split("\n")
    for content, idx in _added(tok).items():
        if idx < len(lines) and lines[idx] != content:
            raise ValueError(f"{vocabulary_txt}: line {idx} is {lines[idx]!r} but tokenizer.json says {content!r}")


def fixed_tokenizer_json(tokenizer_json: Path, n_embeddings: int) -> tuple[dict, SpecialIds]:
    """Load and repair a Whisper ``tokenizer.json``; returns the repaired dict and the special ids."""
    tokenizer_json = Path(tokenizer_json)
    if not tokenizer_json.is_file():
        raise FileNotFoundError(f"{tokenizer_json}: tokenizer file not found")
    try:
        tok = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{tokenizer_json}: invalid JSON ({e})") from None
    if tok.get("model", {}).get("type") != "BPE":
        raise ValueError(f"{tokenizer_json}: expected a BPE tokenizer, got {tok.get('model', {}).get('type')}")
    tok = copy.deepcopy(tok)
    fix_missing_merges(tok, str(tokenizer_json))
    add_timestamp_tokens(tok, n_embeddings, str(tokenizer_json))
    ids = special_ids(tok, str(tokenizer_json))
    n_tokens = max(_added(tok).values()) + 1
    if n_tokens > n_embeddings:
        raise ValueError(f"{tokenizer_json}: {n_tokens} tokens but the model's embedding has {n_embeddings} rows")
    check_against_vocabulary(tok, tokenizer_json.parent / "vocabulary.txt")
    return tok, ids


def build_whisper_tokenizer(tok: dict, multilingual: bool):
    """A transformers ``WhisperTokenizerFast`` over the repaired tokenizer dict."""
    from tokenizers import Tokenizer
    from transformers import WhisperTokenizerFast

    backend = Tokenizer.from_str(json.dumps(tok))
    kwargs = dict(language="en", task="transcribe") if multilingual else {}
    hf = WhisperTokenizerFast(tokenizer_object=backend, unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                              eos_token="<|endoftext|>", predict_timestamps=False, **kwargs)
    # Register every special added token (as the published HF tokenizers do): skip_special_tokens and
    # WhisperTokenizer's timestamp decoding (timestamp_begin = last special id + 1) depend on it.
    specials = [t["content"] for t in sorted(tok["added_tokens"], key=lambda t: t["id"])
                if t.get("special") and t["content"] != "<|endoftext|>"]
    hf.add_special_tokens({"extra_special_tokens": specials}, replace_extra_special_tokens=True)
    # Without a normalizer.json, tokenizer.normalize() would crash on a None spelling map; use an empty map.
    # Scoring uses tarq.eval.normalize (with the full British->American spelling map), not this.
    if getattr(hf, "english_spelling_normalizer", None) is None:
        hf.english_spelling_normalizer = {}
    return hf
