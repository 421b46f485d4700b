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


def test_insertion_owner_rules():
    rare = [False, True, False, False]
    for rule in ("left", "adjacent-rare"):
        assert _insertion_owner(0, 4, rare, rule) == 0          # utterance start -> first word
        assert _insertion_owner(4, 4, rare, rule) == 3          # utterance end -> last word
        assert _insertion_owner(2, 4, rare, rule) == 1          # rare left -> left
        assert _insertion_owner(3, 4, rare, rule) == 2          # both common -> left
        assert _insertion_owner(1, 2, [True, True], rule) == 0  # both rare -> left
        assert _insertion_owner(0, 0, [], rule) is None         # empty reference -> nobody
    assert _insertion_owner(1, 4, rare, "left") == 0            # common left, rare right: left by default
    assert _insertion_owner(1, 4, rare, "adjacent-rare") == 1   # ... the rare word under adjacent-rare
    assert _insertion_owner(2, 4, rare, "none") is None
    with pytest.raises(ValueError, match="insertion rule"):
        score_corpus(["a"], ["a"], insertion_rule="right")


def test_insertion_after_rare_word_counts_as_rare():
    # jiwer puts the extra word of "zyxel" -> "zy xel" before the substitution (between "the" and "zyxel")
    s = score_corpus(["The Zyxel router."], ["the zy xel router"])
    assert (s.n_words, s.n_rare, s.errors, s.insertions, s.substitutions) == (3, 1, 2, 1, 1)
    assert s.wer == pytest.approx(2 / 3)
    assert s.rare_errors == 1 and s.common_errors == 1          # default "left": the insertion belongs to "the"
    a = score_corpus(["The Zyxel router."], ["the zy xel router"], insertion_rule="adjacent-rare")
    assert a.rare_errors == 2 and a.rare_wer == pytest.approx(2.0) and a.common_errors == 0
    n = score_corpus(["The Zyxel router."], ["the zy xel router"], insertion_rule="none")
    assert n.rare_errors == 1 and n.wer == s.wer
    # an insertion right after a rare word is rare under the default
    s = score_corpus(["The Zyxel router."], ["the zyxel big router"])
    assert s.rare_errors == 1 and s.rare_wer == 1.0 and s.common_errors == 0


def test_ellipsis_leaves_no_dot_word():
    # Whisper's normaliser turns "exactly..." into "exactly ." ; the lone "." is not scored as a word
    assert normalize("the time will be exactly...").split()[-1] == "."
    s = score_corpus(["At the tone, the time will be exactly..."], ["at the tone the time will be exactly"])
    assert s.n_words == 8 and s.wer == 0.0


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
    counts = [c for rule in ("left", "adjacent-rare", "none") for c in align_counts(refs, hyps, insertion_rule=rule)]
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
