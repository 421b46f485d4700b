"""Paired damage against a reference system: hand-built alignments, hand-counted cases, the WER identity,
failure modes, and bootstrap CIs of known differences (docs/evaluation.md, "Paired damage")."""
from __future__ import annotations

import random

import numpy as np
import pytest
from jiwer import AlignmentChunk

from tarq.eval import score_corpus
from tarq.eval.bootstrap import ratio_bootstrap
from tarq.eval.damage import (COLUMNS, Damage, damage_difference, damage_matrix, failure_kind, failure_summary,
                              half_width, right_words, sign_test_p)
from tarq.eval.metrics import align_counts


def _row(m, u=0):
    return dict(zip(COLUMNS, m[u].tolist()))


def test_right_words_from_hand_built_alignment():
    # ref: a b c d e ; hyp: a X c Y Z e  -> a right, b substituted, c right, d deleted, 2 inserted
    chunks = [AlignmentChunk("equal", 0, 1, 0, 1), AlignmentChunk("substitute", 1, 2, 1, 2),
              AlignmentChunk("equal", 2, 3, 2, 3), AlignmentChunk("delete", 3, 4, 3, 3),
              AlignmentChunk("insert", 4, 4, 3, 5), AlignmentChunk("equal", 4, 5, 5, 6)]
    assert right_words(5, chunks) == ([True, False, True, False, True], 2)


def test_lost_rare_word_and_extra_insertion():
    # the reference system gets every word; SYSTEM splits the rare word: 1 lost (rare) + 1 extra insertion
    m = damage_matrix(["The Zyxel router is here."], ["the zy xel router is here"], ["the zyxel router is here"])
    r = _row(m)
    assert (r["n_words"], r["n_rare"], r["lost"], r["gained"], r["lost_rare"], r["ins_system"],
            r["ins_reference"]) == (5, 1, 1, 0, 1, 1, 0)
    d = Damage([m], [["u"]], n_boot=50).damage()
    assert d["lost"] == 1 and d["lost_rare"] == 1 and d["lost_common"] == 0 and d["extra_insertions"] == 1
    assert d["net_rate"] == pytest.approx(2 / 5) and d["net_rare_rate"] == pytest.approx(1.0)


def test_gained_words_and_removed_insertions():
    # the reference system is wrong on "the" and "zyxel" and inserts a word; SYSTEM is perfect
    m = damage_matrix(["The Zyxel router is here."], ["the zyxel router is here"],
                      ["a zyxl router is here now"])
    r = _row(m)
    assert (r["lost"], r["gained"], r["gained_rare"], r["ins_system"], r["ins_reference"]) == (0, 2, 1, 0, 1)
    dmg = Damage([m], [["u"]], n_boot=50)
    d, det = dmg.damage(), dmg.detail()
    assert d["gained"] == 2 and d["gained_common"] == 1 and d["extra_insertions"] == -1
    assert det["removed_insertions"] == 1 and det["added_insertions"] == 0
    assert d["net_rate"] == pytest.approx(-3 / 5)          # SYSTEM is better: negative damage


def test_numerals_after_normalisation():
    # "nineteen forty seven" normalises to 1947: right; "1948" loses the numeral
    m = damage_matrix(["It was 1947."], ["it was 1948"], ["it was nineteen forty seven"])
    r = _row(m)
    assert (r["n_numeral"], r["lost_numeral"], r["lost"], r["gained_numeral"]) == (1, 1, 1, 0)
    d = Damage([m], [["u"]], n_boot=50)
    assert d.damage()["lost_numeral"] == 1 and d.detail()["net_numeral_rate"] == pytest.approx(1.0)


def test_empty_reference_transcript_counts_insertions_only():
    m = damage_matrix(["..."], ["you"], [""])
    r = _row(m)
    assert (r["n_words"], r["lost"], r["ins_system"]) == (0, 0, 1)


def test_net_damage_equals_wer_difference_on_random_text():
    """Independent oracle: metrics.score_corpus counts S+D+I its own way; net damage must equal the WER gap."""
    rng = random.Random(3)
    vocab = "the a zyxel router sales press one key 1947 impropriety abode".split()
    refs, sys_h, ref_h = [], [], []
    for _ in range(60):
        ref = [rng.choice(vocab) for _ in range(rng.randint(0, 9))]
        refs.append(" ".join(ref) or "hmm")           # a filler-only reference normalises to nothing

        def mutate(words):
            out = []
            for w in words:
                x = rng.random()
                if x < 0.1:
                    continue
                out.append(rng.choice(vocab) if x < 0.25 else w)
                if rng.random() < 0.08:
                    out.append(rng.choice(vocab))
            return " ".join(out)
        sys_h.append(mutate(ref))
        ref_h.append(mutate(ref))
    m = damage_matrix(refs, sys_h, ref_h)
    d = Damage([m], [[str(i) for i in range(60)]], n_boot=100).damage()
    gap = score_corpus(refs, sys_h).wer - score_corpus(refs, ref_h).wer
    assert d["net_rate"] == pytest.approx(gap, abs=1e-12)
    assert d["lost"] - d["gained"] + d["extra_insertions"] == (score_corpus(refs, sys_h).errors
                                                                - score_corpus(refs, ref_h).errors)


@pytest.mark.parametrize("n_ref, n_hyp, kind", [
    (10, 28, None), (10, 29, "loop"), (0, 8, "phantom"), (0, 9, "loop"), (10, 0, "empty"), (0, 0, None),
    (10, 4, "truncation"), (10, 5, None), (1, 0, "empty"), (3, 1, "truncation"), (0, 1, "phantom")])
def test_failure_kinds(n_ref, n_hyp, kind):
    assert failure_kind(n_ref, n_hyp) == kind


def test_paired_failures():
    refs = ["one two three four", "press the key now", "hello there my friend"]
    sys_h = ["one two three four " + "again " * 20, "", "hello there my friend"]
    ref_h = ["one two three four", "", "hello"]
    f = Damage([damage_matrix(refs, sys_h, ref_h)], [["a", "b", "c"]], n_boot=20).failures()
    assert f["loops"] == 1 and f["new_loops"] == 1 and f["ids"]["loop"] == ["a"]
    assert f["empty"] == 1 and f["new_empty"] == 0 and f["reference"]["empty"] == 1
    assert f["truncations"] == 0 and f["reference"]["truncations"] == 1 and f["fixed_truncations"] == 1
    # any kind: "a" fails only in the system, "c" only in the reference, "b" in both (concordant)
    assert (f["new_failures"], f["fixed_failures"], f["sign_test_p"]) == (1, 1, 1.0)


@pytest.mark.parametrize("new,fixed,p", [
    (0, 0, 1.0), (1, 0, 1.0), (2, 0, 0.5), (5, 0, 0.0625), (6, 0, 0.03125), (0, 6, 0.03125),
    (3, 1, 0.625),            # 2 * (1 + 4) / 16
    (10, 2, 0.03857421875)])    # 2 * (1 + 12 + 66) / 4096
def test_sign_test_p_hand_computed(new, fixed, p):
    assert sign_test_p(new, fixed) == pytest.approx(p, abs=1e-15)


def test_sign_test_p_matches_scipy_binomtest():
    stats = pytest.importorskip("scipy.stats")
    for new in range(0, 15):
        for fixed in range(0, 15):
            if new + fixed:
                want = stats.binomtest(new, new + fixed, 0.5, alternative="two-sided").pvalue
                assert sign_test_p(new, fixed) == pytest.approx(want, rel=1e-12), (new, fixed)
    with pytest.raises(ValueError):
        sign_test_p(-1, 2)


def test_failures_of_different_kinds_on_one_utterance_are_concordant():
    # six clips loop in the system where the reference truncates them (both fail: no evidence either way), and six
    # clips fail only in the system: p is the sign test on 6 new vs 0 fixed
    full = "the cat sat on the mat with a hat"
    refs = [full] * 12
    sys_h = [full + " again" * 30] * 6 + ["the cat"] * 6
    ref_h = ["the cat"] * 6 + [full] * 6
    f = Damage([damage_matrix(refs, sys_h, ref_h)], [[str(i) for i in range(12)]], n_boot=20).failures()
    assert (f["loops"], f["truncations"], f["reference"]["truncations"]) == (6, 6, 6)
    assert (f["new_failures"], f["fixed_failures"]) == (6, 0)
    assert f["sign_test_p"] == pytest.approx(1 / 32)


def test_phantom_words_on_a_silent_clip():
    # a clip whose transcript normalises to nothing (the asterisk set's "(1 second of silence)"): the reference
    # system's bracketed annotation is no words, the system's "you" is one invented word, counted as a phantom
    refs = ["(1 second of silence)", "(2 seconds of silence)", "press the key now"]
    sys_h = ["you", "[BLANK_AUDIO]", "press the key now"]
    ref_h = ["[BLANK_AUDIO]", "Thank you.", "press the key now"]
    m = damage_matrix(refs, sys_h, ref_h)
    f = Damage([m], [["s1", "s2", "k"]], n_boot=20).failures()
    assert f["phantoms"] == 1 and f["ids"]["phantom"] == ["s1"]
    assert f["new_phantoms"] == 1 and f["fixed_phantoms"] == 1 and f["reference"]["phantoms"] == 1
    assert f["loops"] == f["truncations"] == f["empty"] == 0
    assert failure_summary(["s1", "s2", "k"], align_counts(refs, sys_h))["phantoms"] == 1


# ----------------------------------------------------------------------------------------------- CIs

def _matrix_with(n_utts: int, words: int, lost_in: set[int]) -> np.ndarray:
    m = np.zeros((n_utts, len(COLUMNS)), dtype=np.int64)
    m[:, COLUMNS.index("n_words")] = words
    m[:, COLUMNS.index("n_hyp_system")] = words
    m[:, COLUMNS.index("n_hyp_reference")] = words
    for u in lost_in:
        m[u, COLUMNS.index("lost")] = 1
    return m


def test_ci_of_a_known_difference():
    # 300 utterances x 10 words; SYSTEM loses exactly one word in 60 of them: damage 2.00 %
    lost = set(random.Random(0).sample(range(300), 60))
    d = Damage([_matrix_with(300, 10, lost)], [[str(i) for i in range(300)]], n_boot=2000, seed=1).damage()
    assert d["net_rate"] == pytest.approx(0.02)
    lo, hi = d["net_rate_ci"]
    assert 0 < lo < 0.02 < hi < 0.04          # excludes zero, contains the truth
    # binomial-ish width: sd of the mean of 300 Bernoulli(0.2)/10 ~ 0.0023 -> half-width ~ 0.0045
    assert half_width(d["net_rate_ci"]) == pytest.approx(0.0045, rel=0.25)
    same = Damage([_matrix_with(300, 10, set())], [[str(i) for i in range(300)]], n_boot=200).damage()
    assert same["net_rate"] == 0 and same["net_rate_ci"] == [0.0, 0.0]


def test_ci_coverage_on_simulated_systems():
    """The percentile CI covers a known true damage in about 95 % of simulated evaluations."""
    rng = np.random.default_rng(7)
    p_lost, p_gain, words, n, reps = 0.06, 0.03, 12, 200, 200
    truth = p_lost - p_gain
    covered = 0
    for r in range(reps):
        lost = rng.binomial(words, p_lost, n)
        gained = rng.binomial(words, p_gain, n)
        obs, lo, hi = ratio_bootstrap([(lost - gained, np.full(n, words))], n_boot=400, seed=r)
        covered += lo <= truth <= hi
    assert 0.88 <= covered / reps <= 0.99


def test_damage_difference_between_two_systems_and_pooling():
    ids = [[str(i) for i in range(200)], [str(i) for i in range(100)]]
    a = Damage([_matrix_with(200, 10, set(range(0, 200, 4))), _matrix_with(100, 10, set(range(0, 100, 4)))], ids,
               n_boot=1000)
    b = Damage([_matrix_with(200, 10, set(range(0, 200, 8))), _matrix_with(100, 10, set())], ids, n_boot=1000)
    # pooled damage: A loses 50 + 25 of 3000 words, B 25 of 3000
    assert a.damage()["net_rate"] == pytest.approx(75 / 3000) and b.damage()["net_rate"] == pytest.approx(25 / 3000)
    diff = damage_difference(a, b)
    assert diff["diff"] == pytest.approx(50 / 3000)
    assert diff["ci"][0] > 0 and diff["resolvable"] == pytest.approx(half_width(diff["ci"]))
    # no difference against itself
    assert damage_difference(a, a)["ci"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="same utterances"):
        damage_difference(a, Damage([_matrix_with(200, 10, set())], ids[:1]))
