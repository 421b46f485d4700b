"""Paired damage against a reference system, and failure modes (loops, truncations, empty outputs).

Both hypotheses of an utterance -- SYSTEM's and the reference system's (normally F16 in the same runtime and
decoding policy) -- are aligned to the same reference *transcript* with jiwer, exactly as for WER. A reference
word is *right* for a system when its alignment puts it in an "equal" chunk (substituted or deleted: wrong).

* **lost**: right for the reference system, wrong for SYSTEM; **gained**: the opposite.
* Insertions belong to no reference word. Per utterance, **extra insertions** = SYSTEM's insertions minus the
  reference system's (signed; ``added`` / ``removed`` keep the positive and negative parts apart).
* **net damage rate** = (lost - gained + extra insertions) / reference words. Because a system's errors are its
  wrong reference words plus its insertions, this equals WER(SYSTEM) - WER(reference) exactly; what it adds is
  the decomposition (how many words were lost, how many gained) and a paired CI free of the errors both share.
* Rare / common / numeral classes use ``tarq.lexicon`` on the normalised reference words; their net rates are
  (lost - gained) / words of the class (insertions are in the all-word rate only, since they own no word).

Failure modes, per utterance, on scoring words (n_hyp = n_ref - deletions + insertions):
``loop`` n_hyp > 2 n_ref + 8; ``empty`` n_hyp = 0 < n_ref; ``truncation`` 0 < n_hyp < n_ref / 2 (an empty
output is counted as empty, not also as a truncation); ``phantom`` 0 < n_hyp <= 8 words where the reference has
none (a non-speech clip: silence, a tone; Whisper's classic "you" on silence; more words than that is a loop).
Paired: ``new_loops`` loop in SYSTEM but not in the reference system, ``fixed_loops`` the opposite, likewise
for truncations, empty outputs and phantoms. Over all kinds, ``new_failures`` counts utterances that fail (any kind)
in SYSTEM but not in the reference system, ``fixed_failures`` the opposite, and ``sign_test_p`` is the exact
two-sided sign test (McNemar's exact test) on those discordant utterances: a failure count a few clips above the
reference's is often indistinguishable from chance (2 new, 0 fixed: p = 0.5; 6 new, 0 fixed: p = 0.031).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import jiwer
import numpy as np

from ..lexicon import DEFAULT_ZIPF_THRESHOLD, is_numeral, is_rare
from .bootstrap import ratio_bootstrap
from .metrics import UttCounts, words

FAILURE_KINDS = ("loop", "truncation", "empty", "phantom")
# the count keys of a failures record, one per kind, in the same order
FAILURE_KEYS = tuple(k if k == "empty" else f"{k}s" for k in FAILURE_KINDS)
LOOP_FACTOR, LOOP_SLACK = 2, 8


def failure_kind(n_ref: int, n_hyp: int) -> str | None:
    """"loop", "truncation", "empty", "phantom" or None for an utterance with n_ref reference and n_hyp output
    words."""
    if n_hyp > LOOP_FACTOR * n_ref + LOOP_SLACK:
        return "loop"
    if n_ref == 0 and n_hyp > 0:
        return "phantom"
    if n_ref > 0 and n_hyp == 0:
        return "empty"
    if 0 < n_hyp and 2 * n_hyp < n_ref:
        return "truncation"
    return None


def failure_kind_of(c: UttCounts) -> str | None:
    return failure_kind(c.n_words, c.n_words - c.deletions + c.insertions)


def failure_summary(ids: list[str], counts: list[UttCounts]) -> dict:
    """Unpaired failure counts of one system on one dataset, with the ids of the utterances concerned."""
    kinds = [failure_kind_of(c) for c in counts]
    out = {key: sum(x == k for x in kinds) for k, key in zip(FAILURE_KINDS, FAILURE_KEYS)}
    out["ids"] = {k: [i for i, x in zip(ids, kinds) if x == k] for k in FAILURE_KINDS}
    return out


def right_words(n_ref: int, alignment) -> tuple[list[bool], int]:
    """(right flag of each reference word, number of inserted hypothesis words) from one jiwer alignment."""
    right = [False] * n_ref
    ins = 0
    for chunk in alignment:
        if chunk.type == "equal":
            for p in range(chunk.ref_start_idx, chunk.ref_end_idx):
                right[p] = True
        elif chunk.type == "insert":
            ins += chunk.hyp_end_idx - chunk.hyp_start_idx
    return right, ins


# per-utterance columns of the damage matrix
COLUMNS = ("n_words", "n_rare", "n_numeral", "lost", "gained", "lost_rare", "gained_rare", "lost_numeral",
           "gained_numeral", "ins_system", "ins_reference", "n_hyp_system", "n_hyp_reference")


def damage_matrix(refs: list[str], hyps: list[str], ref_hyps: list[str],
                  k: float = DEFAULT_ZIPF_THRESHOLD) -> np.ndarray:
    """int64 [n_utts, len(COLUMNS)]: per-utterance word classes, lost/gained words and insertions."""
    if not (len(refs) == len(hyps) == len(ref_hyps)):
        raise ValueError(f"damage needs one reference hypothesis per utterance ({len(refs)} transcripts, "
                         f"{len(hyps)} hypotheses, {len(ref_hyps)} reference-system hypotheses)")
    out = np.zeros((len(refs), len(COLUMNS)), dtype=np.int64)
    if not refs:
        return out
    ref_n = [" ".join(words(r)) for r in refs]
    align_s = jiwer.process_words(ref_n, [" ".join(words(h or "")) for h in hyps]).alignments
    align_r = jiwer.process_words(ref_n, [" ".join(words(h or "")) for h in ref_hyps]).alignments
    for u, (r, a_s, a_r) in enumerate(zip(ref_n, align_s, align_r)):
        rw = r.split()
        rare = [is_rare(w, k) for w in rw]
        num = [is_numeral(w) for w in rw]
        ok_s, ins_s = right_words(len(rw), a_s)
        ok_r, ins_r = right_words(len(rw), a_r)
        lost = [r_ and not s_ for s_, r_ in zip(ok_s, ok_r)]
        gained = [s_ and not r_ for s_, r_ in zip(ok_s, ok_r)]
        hyp_len_s = sum(c.hyp_end_idx - c.hyp_start_idx for c in a_s if c.type != "delete")
        hyp_len_r = sum(c.hyp_end_idx - c.hyp_start_idx for c in a_r if c.type != "delete")
        out[u] = (len(rw), sum(rare), sum(num), sum(lost), sum(gained),
                  sum(x and y for x, y in zip(lost, rare)), sum(x and y for x, y in zip(gained, rare)),
                  sum(x and y for x, y in zip(lost, num)), sum(x and y for x, y in zip(gained, num)),
                  ins_s, ins_r, hyp_len_s, hyp_len_r)
    return out


def _col(m: np.ndarray, name: str) -> np.ndarray:
    return m[:, COLUMNS.index(name)]


def net_numerators(m: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-utterance (numerator, denominator) of each net damage rate."""
    c = lambda name: _col(m, name)   # noqa: E731
    extra = c("ins_system") - c("ins_reference")
    return {
        "net_rate": (c("lost") - c("gained") + extra, c("n_words")),
        "net_rare_rate": (c("lost_rare") - c("gained_rare"), c("n_rare")),
        "net_common_rate": ((c("lost") - c("lost_rare")) - (c("gained") - c("gained_rare")),
                            c("n_words") - c("n_rare")),
        "net_numeral_rate": (c("lost_numeral") - c("gained_numeral"), c("n_numeral")),
    }


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def sign_test_p(new: int, fixed: int) -> float:
    """Exact two-sided sign test on discordant pairs (McNemar's exact test): under "no difference" each of the
    n = new + fixed discordant utterances is new or fixed with probability 1/2, and p is the probability of a split
    at least as uneven as the one observed, 2 · P(Binomial(n, 1/2) <= min(new, fixed)), capped at 1."""
    if new < 0 or fixed < 0:
        raise ValueError(f"discordant counts must be non-negative, got {new} and {fixed}")
    n = new + fixed
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(new, fixed) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _paired_failures(m_list: list[np.ndarray], ids_list: list[list[str]]) -> dict:
    # (utterance id, SYSTEM's failure kind, the reference system's failure kind), over every data set
    kinds = []
    for m, ids in zip(m_list, ids_list):
        n_words, n_sys, n_ref = _col(m, "n_words"), _col(m, "n_hyp_system"), _col(m, "n_hyp_reference")
        kinds += [(uid, failure_kind(int(n_words[u]), int(n_sys[u])), failure_kind(int(n_words[u]), int(n_ref[u])))
                  for u, uid in enumerate(ids)]
    out: dict = {"ids": {}, "reference": {}}
    for kind, key in zip(FAILURE_KINDS, FAILURE_KEYS):
        out[key] = sum(ks == kind for _, ks, _ in kinds)
        out["reference"][key] = sum(kr == kind for _, _, kr in kinds)
        out[f"new_{key}"] = sum(ks == kind != kr for _, ks, kr in kinds)
        out[f"fixed_{key}"] = sum(kr == kind != ks for _, ks, kr in kinds)
        out["ids"][kind] = [uid for uid, ks, _ in kinds if ks == kind]
    # any kind: an utterance failing in both systems (e.g. a loop against a truncation) is not discordant
    new_any = sum(ks is not None and kr is None for _, ks, kr in kinds)
    fixed_any = sum(kr is not None and ks is None for _, ks, kr in kinds)
    out.update(new_failures=new_any, fixed_failures=fixed_any, sign_test_p=sign_test_p(new_any, fixed_any))
    return out


@dataclass
class Damage:
    """Damage of one system against the reference system over one or more datasets (pooled)."""
    matrices: list[np.ndarray]            # one per dataset (stratum)
    ids: list[list[str]]
    n_boot: int = 1000
    seed: int = 0
    confidence: float = 0.95

    def _sum(self, name: str) -> int:
        return int(sum(_col(m, name).sum() for m in self.matrices))

    def ci(self, metric: str) -> tuple[float | None, list[float | None]]:
        strata = [net_numerators(m)[metric] for m in self.matrices]
        obs, lo, hi = ratio_bootstrap(strata, self.n_boot, self.seed, self.confidence)
        return obs, [lo, hi]

    def damage(self) -> dict:
        """The ``damage`` block of a result file (exactly the fields docs/evaluation.md lists)."""
        s = self._sum
        net, net_ci = self.ci("net_rate")
        rare, rare_ci = self.ci("net_rare_rate")
        return {"lost": s("lost"), "gained": s("gained"), "lost_rare": s("lost_rare"),
                "gained_rare": s("gained_rare"), "lost_common": s("lost") - s("lost_rare"),
                "gained_common": s("gained") - s("gained_rare"), "lost_numeral": s("lost_numeral"),
                "gained_numeral": s("gained_numeral"), "extra_insertions": s("ins_system") - s("ins_reference"),
                "net_rate": net, "net_rate_ci": net_ci, "net_rare_rate": rare, "net_rare_rate_ci": rare_ci}

    def detail(self) -> dict:
        """Word counts, per-class rates, insertion parts, common/numeral net rates and resolvable differences."""
        s = self._sum
        n_common = s("n_words") - s("n_rare")
        extra = [_col(m, "ins_system") - _col(m, "ins_reference") for m in self.matrices]
        out = {"n_utts": int(sum(len(m) for m in self.matrices)), "n_words": s("n_words"), "n_rare": s("n_rare"),
               "n_common": n_common, "n_numeral": s("n_numeral"),
               "lost_rate": _rate(s("lost"), s("n_words")), "gained_rate": _rate(s("gained"), s("n_words")),
               "lost_rare_rate": _rate(s("lost_rare"), s("n_rare")),
               "gained_rare_rate": _rate(s("gained_rare"), s("n_rare")),
               "lost_common_rate": _rate(s("lost") - s("lost_rare"), n_common),
               "gained_common_rate": _rate(s("gained") - s("gained_rare"), n_common),
               "lost_numeral_rate": _rate(s("lost_numeral"), s("n_numeral")),
               "gained_numeral_rate": _rate(s("gained_numeral"), s("n_numeral")),
               "added_insertions": int(sum(np.clip(e, 0, None).sum() for e in extra)),
               "removed_insertions": int(sum(np.clip(-e, 0, None).sum() for e in extra)),
               "extra_insertion_rate": _rate(s("ins_system") - s("ins_reference"), s("n_words"))}
        for metric in ("net_common_rate", "net_numeral_rate"):
            out[metric], out[f"{metric}_ci"] = self.ci(metric)
        for metric in ("net_rate", "net_rare_rate"):
            out[f"resolvable_{metric}"] = half_width(self.ci(metric)[1])
        out.update(n_boot=self.n_boot, seed=self.seed, confidence=self.confidence)
        return out

    def failures(self) -> dict:
        return _paired_failures(self.matrices, self.ids)


def half_width(ci) -> float | None:
    """The smallest difference a CI can resolve: half its width."""
    lo, hi = ci
    return None if lo is None or hi is None else (hi - lo) / 2


def damage_difference(a: Damage, b: Damage, metric: str = "net_rate") -> dict:
    """Damage(A) - damage(B) with a paired CI (same utterances, same resamples): the comparison of two quantized
    systems against one reference. Reported with the half-width of its CI (the resolvable difference)."""
    if len(a.matrices) != len(b.matrices) or any(
            x.shape != y.shape or not np.array_equal(_col(x, "n_words"), _col(y, "n_words"))
            for x, y in zip(a.matrices, b.matrices)):
        raise ValueError("damage difference needs both systems scored on the same utterances")
    strata = []
    for ma, mb in zip(a.matrices, b.matrices):
        (na, den), (nb, _) = net_numerators(ma)[metric], net_numerators(mb)[metric]
        strata.append((na - nb, den))
    diff, lo, hi = ratio_bootstrap(strata, a.n_boot, a.seed, a.confidence)
    da, _ = a.ci(metric)
    db, _ = b.ci(metric)
    return {"metric": metric, "a": da, "b": db, "diff": diff, "ci": [lo, hi], "resolvable": half_width([lo, hi]),
            "n_boot": a.n_boot, "seed": a.seed, "confidence": a.confidence}


# ----------------------------------------------------------------------------------------------- result files

def _aligned(result, reference, datasets=None):
    """Per dataset of ``result`` (or only ``datasets``): (name, ids, refs, hyps, reference hyps), matched by
    utterance id. Raises ValueError when the reference lacks a dataset or an utterance, or a transcript differs."""
    out = []
    for d in result.datasets:
        if datasets is not None and d.name not in datasets:
            continue
        rd = reference.dataset(d.name)
        if rd is None:
            raise ValueError(f"the reference result ({reference.label}) has no dataset {d.name!r} "
                             f"(it has: {', '.join(x.name for x in reference.datasets)})")
        pos = {u: j for j, u in enumerate(rd.ids)}
        missing = [u for u in d.ids if u not in pos]
        if missing:
            raise ValueError(f"the reference result ({reference.label}) lacks {len(missing)} of the {len(d.ids)} "
                             f"utterances of {d.name} (e.g. {missing[0]}); decode the reference on the same data")
        for u, r in zip(d.ids, d.refs):
            if rd.refs[pos[u]] != r:
                raise ValueError(f"dataset {d.name}, utterance {u}: the reference result has a different "
                                 "transcript")
        out.append((d.name, list(d.ids), list(d.refs), list(d.hyps), [rd.hyps[pos[u]] for u in d.ids]))
    return out


def damage_against(result, reference, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
                   ids: dict[str, list[str]] | None = None) -> tuple[dict[str, Damage], Damage]:
    """({dataset: Damage}, pooled Damage) of an EvalResult against the reference system's EvalResult on the same
    utterances. ``ids`` restricts each dataset to those utterance ids (to pair two systems on common ones)."""
    per, mats, all_ids = {}, [], []
    for name, uids, refs, hyps, ref_hyps in _aligned(result, reference):
        if ids is not None:   # in the order given, so two systems' matrices pair row by row
            pos = {u: i for i, u in enumerate(uids)}
            sel = [pos[u] for u in ids.get(name, ()) if u in pos]
            uids, refs, hyps, ref_hyps = ([x[i] for i in sel] for x in (uids, refs, hyps, ref_hyps))
            if not uids:
                continue
        m = damage_matrix(refs, hyps, ref_hyps, k=result.k)
        per[name] = Damage([m], [uids], n_boot, seed, confidence)
        mats.append(m)
        all_ids.append(uids)
    if not per:
        raise ValueError("no utterances to compare against the reference")
    return per, Damage(mats, all_ids, n_boot, seed, confidence)


def compare_damage(a, b, reference, n_boot: int = 1000, seed: int = 0) -> list[tuple[str, dict]]:
    """[(dataset or "pooled", damage_difference dict)] for net_rate and net_rare_rate of A - B, both against the
    same reference, on the utterances A and B share."""
    common = {}
    for d in a.datasets:
        db = b.dataset(d.name)
        if db is not None:
            shared = set(db.ids)
            common[d.name] = [u for u in d.ids if u in shared]
    if not any(common.values()):
        raise ValueError(f"{a.label} and {b.label} share no (dataset, utterance id) pairs")
    per_a, pooled_a = damage_against(a, reference, n_boot, seed, ids=common)
    per_b, pooled_b = damage_against(b, reference, n_boot, seed, ids=common)
    rows = []
    for metric in ("net_rate", "net_rare_rate"):
        for name in per_a:
            rows.append((name, damage_difference(per_a[name], per_b[name], metric)))
        if len(per_a) > 1:
            rows.append(("pooled", damage_difference(pooled_a, pooled_b, metric)))
    return rows
