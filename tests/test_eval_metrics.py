"""Hand-computed WER / rare-WER / numeral-WER cases (docs/evaluation.md states the conventions)."""
import math
import random

import pytest

from tarq.eval import align_counts, is_numeral, is_rare, normalize, score_corpus
from tarq.eval.metrics import _insertion_owner


def test_preconditions_on_word_classes():
    # the hand-computed cases below rely on these Zipf facts (wordfreq 3.x)
    assert is_rare("zyxel") and is_rare("witheld")
    for w in ("the", "router", "press", "key", "big", "number", "is", "withheld", "1947", "one"):
        assert not is_rare(w), w
    assert is_numeral("1947") and is_numeral("2nd") and is_numeral("one") and not is_numeral("router")


def test_insertion_owner_rule():
    rare = [False, True, False, False]
    assert _insertion_owner(0, 4, rare) == 0          # utterance start -> first word
    assert _insertion_owner(4, 4, rare) == 3          # utterance end -> last word
    assert _insertion_owner(1, 4, rare) == 1          # common left, rare right -> the rare word
    assert _insertion_owner(2, 4, rare) == 1          # rare left -> left
    assert _insertion_owner(3, 4, rare) == 2          # both common -> left
    assert _insertion_owner(1, 2, [True, True]) == 0  # both rare -> left
    assert _insertion_owner(0, 0, []) is None         # empty reference -> nobody


def test_insertion_next_to_rare_word_counts_as_rare():
    # "zyxel" split in two: 1 substitution + 1 insertion, both charged to the rare word
    s = score_corpus(["The Zyxel router."], ["the zy xel router"])
    assert (s.n_words, s.n_rare, s.errors, s.insertions, s.substitutions) == (3, 1, 2, 1, 1)
    assert s.rare_errors == 2 and s.rare_wer == pytest.approx(2.0)
    assert s.common_errors == 0 and s.common_wer == 0.0
    assert s.wer == pytest.approx(2 / 3)


def test_insertion_between_common_words_is_common():
    s = score_corpus(["Press the key."], ["press the big key"])
    assert s.errors == 1 and s.insertions == 1 and s.common_errors == 1 and s.rare_errors == 0
    assert s.wer == pytest.approx(1 / 3) and math.isnan(s.rare_wer)


def test_rare_word_substituted():
    s = score_corpus(["The number is witheld."], ["the number is withheld"])
    assert (s.n_words, s.n_rare, s.substitutions) == (4, 1, 1)
    assert s.rare_wer == 1.0 and s.common_wer == 0.0 and s.wer == pytest.approx(0.25)


def test_numerals_after_normalisation():
    # Whisper's normaliser writes spelled-out numbers as digits, so these are the same transcript
    assert normalize("It was 1947.") == normalize("it was nineteen forty-seven") == "it was 1947"
    s = score_corpus(["It was 1947."], ["it was nineteen forty-seven"])
    assert s.wer == 0.0 and s.n_numeral == 1 and s.numeral_wer == 0.0
    s = score_corpus(["It was 1947."], ["it was nineteen forty-eight"])
    assert s.errors == 1 and s.numeral_errors == 1 and s.numeral_wer == 1.0 and s.wer == pytest.approx(1 / 3)
    # documented outcome: a lone "1" becomes "one" (the normaliser keeps "one" spelled out), so both agree
    assert normalize("Press 1 for sales") == normalize("press one for sales") == "press one for sales"
    assert score_corpus(["Press 1 for sales"], ["press one for sales"]).wer == 0.0


def test_empty_hypothesis_is_all_deletions():
    s = score_corpus(["Hello world", "good morning"], ["", "good morning"])
    assert (s.deletions, s.errors, s.n_words) == (2, 2, 4) and s.wer == 0.5


def test_empty_reference():
    with pytest.raises(ValueError, match="no words"):
        score_corpus([""], ["hello"])
    with pytest.raises(ValueError, match="no words"):
        score_corpus(["Hmm, uh"], [""])          # normalises to nothing
    # one empty reference in a corpus: its insertions count in WER and common-WER, never rare-WER
    s = score_corpus(["", "a zyxel"], ["hi there", "a zyxel"])
    assert (s.n_words, s.insertions, s.errors, s.common_errors, s.rare_errors) == (2, 2, 2, 2, 0)
    assert s.wer == 1.0 and s.rare_wer == 0.0
    with pytest.raises(ValueError, match="missing"):
        score_corpus([None], ["x"])
    with pytest.raises(ValueError, match="2 references but 1"):
        score_corpus(["a", "b"], ["a"])


def test_punctuation_and_casing_are_ignored():
    assert score_corpus(["Hello, World!"], ["hello world"]).wer == 0.0
    assert score_corpus(["Mr. Smith's colour."], ["Mister Smith is color"]).wer == 0.0


def test_rates_are_pooled_not_averaged():
    s = score_corpus(["a b c d", "e"], ["a b c d", "x"])
    assert s.wer == pytest.approx(1 / 5)      # the mean of per-utterance rates would be 0.5


def test_rare_plus_common_errors_equal_all_errors_on_random_text():
    rng = random.Random(0)
    vocab = ["the", "zyxel", "router", "witheld", "press", "key", "1947", "one", "big", "quixotic", "number"]
    refs = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 8))) for _ in range(50)]
    hyps = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 9))) for _ in range(50)]
    counts = align_counts(refs, hyps)
    for c in counts:
        assert c.errors == c.substitutions + c.deletions + c.insertions
        assert 0 <= c.rare_errors <= c.errors and 0 <= c.numeral_errors <= c.errors
    s = score_corpus(refs, hyps)
    assert s.rare_errors + s.common_errors == s.errors
    assert s.wer == pytest.approx(s.errors / s.n_words)
    import jiwer
    assert s.wer == pytest.approx(jiwer.wer([normalize(r) for r in refs], [normalize(h) for h in hyps]))


def test_threshold_moves_words_between_classes():
    lo = score_corpus(["the router"], ["the rooter"], k=3.0)
    hi = score_corpus(["the router"], ["the rooter"], k=4.0)   # Zipf("router") = 3.5
    assert lo.n_rare == 0 and hi.n_rare == 1 and hi.rare_wer == 1.0
