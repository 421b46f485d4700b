import pytest

from tarq.eval import UttCounts, align_counts, paired_bootstrap


def _utts(n, err_every):
    """n utterances of 10 words (2 rare); an error on every err_every-th utterance (0: none)."""
    out = []
    for i in range(n):
        e = 1 if err_every and i % err_every == 0 else 0
        out.append(UttCounts(n_words=10, n_rare=2, n_numeral=1, errors=3 * e, substitutions=3 * e, deletions=0,
                             insertions=0, rare_errors=e, numeral_errors=0))
    return out


def test_identical_systems_give_zero_difference():
    a = _utts(200, 3)
    for metric in ("wer", "rare_wer", "common_wer"):
        r = paired_bootstrap([a], [list(a)], metric, n_boot=300, seed=1)
        assert r.diff == 0 and r.lo <= 0 <= r.hi and not r.significant


def test_clearly_different_systems_exclude_zero():
    a, b = _utts(200, 0), _utts(200, 2)
    r = paired_bootstrap([a], [b], "wer", n_boot=500, seed=0)
    assert r.a == 0 and r.b == pytest.approx(300 / 2000) and r.diff == pytest.approx(-0.15)
    assert r.hi < 0 and r.significant and r.p_a_better == 1.0
    r = paired_bootstrap([b], [a], "rare_wer", n_boot=500, seed=0)
    assert r.lo > 0 and r.diff == pytest.approx(0.25)


def test_noisy_small_difference_is_not_significant():
    refs = [f"w{i} the router" for i in range(40)]
    hyp_a = list(refs)
    hyp_a[0] = "w0 the rooter"
    hyp_b = list(refs)
    hyp_b[1] = "w1 a router"
    r = paired_bootstrap([align_counts(refs, hyp_a)], [align_counts(refs, hyp_b)], "wer", n_boot=1000, seed=0)
    assert r.diff == 0 and r.lo < 0 < r.hi


def test_fixed_seed_is_deterministic_and_seed_matters():
    a, b = _utts(50, 3), _utts(50, 4)
    r1 = paired_bootstrap([a], [b], n_boot=200, seed=7)
    r2 = paired_bootstrap([a], [b], n_boot=200, seed=7)
    r3 = paired_bootstrap([a], [b], n_boot=200, seed=8)
    assert (r1.lo, r1.hi) == (r2.lo, r2.hi)
    assert (r1.lo, r1.hi) != (r3.lo, r3.hi)


def test_stratified_mean_over_datasets():
    a1, b1 = _utts(100, 0), _utts(100, 2)      # b worse by 0.15 WER
    a2, b2 = _utts(30, 0), _utts(30, 0)        # equal
    r = paired_bootstrap([a1, a2], [b1, b2], "wer", n_boot=300, seed=0)
    assert r.diff == pytest.approx(-0.075)     # unweighted mean over the two datasets
    assert r.hi < 0


def test_mismatched_references_are_rejected():
    a = _utts(10, 0)
    b = [UttCounts(11, 2, 1, 0, 0, 0, 0, 0, 0)] * 10
    with pytest.raises(ValueError, match="same utterances"):
        paired_bootstrap([a], [b])
    with pytest.raises(ValueError, match="unknown metric"):
        paired_bootstrap([a], [a], "cer")
