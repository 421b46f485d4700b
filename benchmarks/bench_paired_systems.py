"""Pair systems decoded at different times, clip by clip: published grid systems and fresh ``tarq eval`` results.

A candidate build is often decoded alone (``tarq eval --json``) while F16, whisper.cpp's RTN file and earlier builds
were decoded by a published grid; decoding them again costs as much as the candidate. Decoding one file is
reproducible across machines (bench_cpu_family: whisper.cpp's RTN file gave identical transcripts on all 480 clips
on two CPU families), so a published decode of F16 or RTN stands for that file's decode here. This benchmark pairs
every system on the utterance ids they share, per data set:

* WER and rare-WER; loops / truncations / empty outputs / phantoms (tarq.eval.damage's rules, with ids);
* damage against the reference system (the first ``--system`` unless ``--reference``): % of words lost net,
  paired bootstrap 95 % CI, overall and on rare words, per set and pooled over the sets the reference has;
* each system minus each ``--versus`` system: WER (paired bootstrap) and damage (same resamples), per set and pooled
  over the sets both have.

    python benchmarks/bench_paired_systems.py \\
        --system F16=benchmarks/results/bias_correction_tiny_q4_0.json:f16 \\
        --system "whisper.cpp Q4_0=benchmarks/results/bias_correction_tiny_q4_0.json:ggml" \\
        --system "candidate=runs/cand_noisy.json,runs/cand_asterisk.json" \\
        --versus "whisper.cpp Q4_0" --out benchmarks/results/NAME.json

A system is one or more sources joined by commas: ``RESULT.json`` (a ``tarq eval --json`` result, any number of
sets) or ``GRID.json:METHOD`` (the system of that method in a ``tarq grid`` result; ``GRID.json:METHOD:POLICY`` when
the grid decoded several policies, ``GRID.json:METHOD@TYPE`` when it ran the method at several ggml types). A set
whose transcripts a published grid redacted (uqm-voice-dev) is taken only from eval results. All systems must share
one decoding policy. Only numbers and utterance ids are written, no transcripts, so evaluation-only sets may be
published.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (RESULTS_DIR, RunMeta, ensure_tarq_importable, markdown_table, pyplot, read_json,  # noqa: E402
                     save_and_report, save_plot)

N_BOOT = 1000
POOLED = "pooled"


def parse_system(text: str) -> tuple[str, list[str]]:
    label, sep, sources = text.partition("=")
    parts = [s.strip() for s in sources.split(",") if s.strip()]
    if not sep or not label.strip() or not parts:
        raise SystemExit(f"bench_paired_systems: --system wants LABEL=SOURCE[,SOURCE...], got {text!r}")
    return label.strip(), parts


def _grid_system(path: Path, method: str, policy: str | None) -> tuple[str, list]:
    """(policy, [DatasetResult]) of one system of a tarq grid result (``method`` is METHOD or METHOD@TYPE);
    redacted sets are skipped."""
    from tarq.grid.results import find_system, system_datasets

    doc = read_json(path)
    method, _, type_ = method.partition("@")
    try:
        system = find_system(doc, method, policy, type_=type_ or None, source=path)
        return str(system.get("policy") or "greedy"), list(system_datasets(doc, system).values())
    except ValueError as e:
        raise SystemExit(f"bench_paired_systems: {e}") from None


def load_system(label: str, sources: list[str]):
    """An EvalResult holding every data set of the system's sources (a set given twice is an error)."""
    ensure_tarq_importable()
    from tarq.eval.results import EvalResult, load_result, policy_of

    policies, datasets = set(), {}
    for src in sources:
        path_text, sep, rest = src.partition(".json:")
        if sep:
            method, _, policy = rest.partition(":")
            policy_name, sets = _grid_system(Path(path_text + ".json"), method, policy or None)
        else:
            try:
                result = load_result(src)
            except (OSError, ValueError) as e:
                raise SystemExit(f"bench_paired_systems: {e}") from None
            policy_name, sets = policy_of(result.system), result.datasets
        policies.add(policy_name)
        for d in sets:
            if d.name in datasets:
                raise SystemExit(f"bench_paired_systems: system {label!r} has data set {d.name} twice ({src})")
            datasets[d.name] = d
    if not datasets:
        raise SystemExit(f"bench_paired_systems: system {label!r}: its sources hold no unredacted data set")
    if len(policies) > 1:
        raise SystemExit(f"bench_paired_systems: system {label!r} mixes decoding policies {sorted(policies)}")
    return EvalResult(system={"label": label, "policy": policies.pop(), "sources": sources},
                      datasets=list(datasets.values()))


def _restricted(result, names: list[str], ids: dict[str, list[str]]):
    """A copy of ``result`` with only the sets ``names`` and, per set, only the utterances ``ids[name]``, in that
    order (so two systems restricted alike pair row by row)."""
    from tarq.eval.results import DatasetResult, EvalResult

    sets = []
    for name in names:
        d = result.dataset(name)
        pos = {u: i for i, u in enumerate(d.ids)}
        keep = [pos[u] for u in ids[name]]
        sets.append(DatasetResult(name=d.name, path=d.path, ids=[d.ids[i] for i in keep],
                                  refs=[d.refs[i] for i in keep], hyps=[d.hyps[i] for i in keep],
                                  durations=[None] * len(keep), seconds=[None] * len(keep), k=d.k,
                                  insertion_rule=d.insertion_rule))
    return EvalResult(system=result.system, datasets=sets, k=result.k, insertion_rule=result.insertion_rule)


def _common_ids(results: list, names: list[str]) -> dict[str, list[str]]:
    out = {}
    for name in names:
        first = results[0].dataset(name).ids
        shared = set.intersection(*(set(r.dataset(name).ids) for r in results))
        out[name] = [u for u in first if u in shared]
        if not out[name]:
            raise SystemExit(f"bench_paired_systems: {name}: the systems share no utterance")
    return out


def _pct(x):
    return None if x is None else 100.0 * x


def _damage_block(d) -> dict:
    """Damage in points with CIs, and the failures paired with the reference's: utterances failing here only (new)
    and there only (fixed), with the exact sign test on them (tarq.eval.damage)."""
    from tarq.eval.damage import sign_test_p

    dmg, fails = d.damage(), d.failures()
    # the kinds issue 15's criterion counts, each kind paired on its own (a loop where the reference truncates is
    # one new loop and one fixed truncation)
    new_lt = fails["new_loops"] + fails["new_truncations"]
    fixed_lt = fails["fixed_loops"] + fails["fixed_truncations"]
    return {"net_rate": _pct(dmg["net_rate"]), "net_rate_ci": [_pct(x) for x in dmg["net_rate_ci"]],
            "net_rare_rate": _pct(dmg["net_rare_rate"]), "net_rare_rate_ci": [_pct(x) for x in dmg["net_rare_rate_ci"]],
            "lost": dmg["lost"], "gained": dmg["gained"], "extra_insertions": dmg["extra_insertions"],
            "new_failures": fails["new_failures"], "fixed_failures": fails["fixed_failures"],
            "sign_test_p": fails["sign_test_p"], "new_loops_truncations": new_lt, "fixed_loops_truncations": fixed_lt,
            "sign_test_p_loops_truncations": sign_test_p(new_lt, fixed_lt)}


def describe(systems: dict, reference: str) -> dict:
    """Per set and system: size, WER, rare-WER, failures, and damage against the reference where it has the set."""
    from tarq.eval.damage import FAILURE_KEYS, damage_against, failure_summary

    ref = systems[reference]
    names = list(dict.fromkeys(d.name for r in systems.values() for d in r.datasets))
    sets: dict[str, dict] = {name: {} for name in names}
    for name in names:
        for label, r in systems.items():
            d = r.dataset(name)
            if d is None:
                continue
            f = failure_summary(d.ids, d.counts)
            sets[name][label] = {"n_utts": len(d.ids), "n_words": d.scores.n_words, "wer": _pct(d.scores.wer),
                                 "rare_wer": _pct(d.scores.rare_wer), "failures": {k: f[k] for k in FAILURE_KEYS},
                                 "failure_ids": f["ids"]}
    pooled = {}
    for label, r in systems.items():
        names_here = [n for n in names if r.dataset(n) is not None and ref.dataset(n) is not None]
        if label == reference or not names_here:
            continue
        both = _common_ids([r, ref], names_here)     # one pairing gives each set's damage and the pooled one
        per, pool = damage_against(_restricted(r, names_here, both), _restricted(ref, names_here, both),
                                   n_boot=N_BOOT)
        for name in names_here:
            sets[name][label]["damage"] = _damage_block(per[name])
        pooled[label] = {"sets": names_here} | _damage_block(pool)
    return {"sets": sets, POOLED: pooled}


def versus(systems: dict, reference: str, baseline: str, skip=()) -> list[dict]:
    """Each system (but the reference and the ``skip`` labels: earlier baselines, already paired with this one)
    minus ``baseline``: WER per shared set (paired bootstrap), damage per shared set and pooled over the shared sets
    the reference also has (one resampling for both systems)."""
    from tarq.eval.bootstrap import paired_bootstrap
    from tarq.eval.damage import damage_against, damage_difference
    from tarq.eval.results import paired_counts

    ref, base, rows = systems[reference], systems[baseline], []
    for label, r in systems.items():
        if label in (baseline, reference) or label in skip:
            continue
        same_name = [d.name for d in r.datasets if base.dataset(d.name) is not None]
        if not same_name:
            continue
        _common_ids([r, base], same_name)                   # a set the two share by name only is an error
        shared, per_a, per_b = paired_counts(r, base)      # each shared set, restricted to the shared utterances
        for name, ca, cb in zip(shared, per_a, per_b):
            row = {"system": label, "baseline": baseline, "set": name, "n_utts": len(ca)}
            for metric in ("wer", "rare_wer"):
                b = paired_bootstrap([ca], [cb], metric, n_boot=N_BOOT, seed=0)
                row[metric] = {"diff": _pct(b.diff), "ci": [_pct(b.lo), _pct(b.hi)]}
            rows.append(row)
        with_ref = [n for n in shared if ref.dataset(n) is not None]
        if with_ref:
            all3 = _common_ids([r, base, ref], with_ref)
            sets_a, da = damage_against(_restricted(r, with_ref, all3), _restricted(ref, with_ref, all3),
                                        n_boot=N_BOOT)
            sets_b, db = damage_against(_restricted(base, with_ref, all3), _restricted(ref, with_ref, all3),
                                        n_boot=N_BOOT)
            for name in with_ref + ([POOLED] if len(with_ref) > 1 else []):
                a_d, b_d = (da, db) if name == POOLED else (sets_a[name], sets_b[name])
                target = next((x for x in rows if x["system"] == label and x["set"] == name), None)
                if target is None:
                    target = {"system": label, "baseline": baseline, "set": name,
                              "n_utts": sum(len(v) for v in all3.values()), "sets": with_ref}
                    rows.append(target)
                for metric, key in (("net_rate", "damage"), ("net_rare_rate", "rare_damage")):
                    dd = damage_difference(a_d, b_d, metric)
                    target[key] = {"diff": _pct(dd["diff"]), "ci": [_pct(x) for x in dd["ci"]]}
    return rows


def _ci(block: dict | None, key: str = "diff", ci: str = "ci") -> str:
    if not block or block.get(key) is None:
        return "–"
    lo, hi = block[ci]
    return f"{block[key]:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def render_markdown(res: dict) -> str:
    ref, labels, sets = res["reference"], [s["label"] for s in res["systems"]], list(res["sets"])
    head = (["system"] + [f"{s} WER · damage" for s in sets]
            + ["pooled damage (sets with the reference)", "rare pooled", "failures " + " · ".join(sets),
               "new / fixed pooled (p)", "loops + truncations new / fixed (p)"])
    rows = []
    for label in labels:
        cells = [label]
        for s in sets:
            x = res["sets"][s].get(label)
            cells.append("–" if x is None else f"{x['wer']:.2f} · " + (
                "ref." if label == ref else _ci(x.get("damage"), "net_rate", "net_rate_ci")))
        p = res[POOLED].get(label)
        cells += [_ci(p, "net_rate", "net_rate_ci"), _ci(p, "net_rare_rate", "net_rare_rate_ci")]
        fails = []
        for s in sets:
            x = res["sets"][s].get(label)
            fails.append("–" if x is None else "/".join(str(v) for v in x["failures"].values()))
        cells.append(" · ".join(fails))
        cells.append("–" if p is None else f"{p['new_failures']} / {p['fixed_failures']} ({p['sign_test_p']:.2f})")
        cells.append("–" if p is None else f"{p['new_loops_truncations']} / {p['fixed_loops_truncations']} "
                                           f"({p['sign_test_p_loops_truncations']:.2f})")
        rows.append(cells)
    out = (f"WER %; damage: % of words lost net against {ref} (paired bootstrap 95 % CI; rare: rare words only); "
           f"failures: loops / truncations / empty / phantoms; new / fixed: utterances failing (any kind) only in the "
           f"system / only in {ref}, pooled, with the exact two-sided sign test (p), and the same for loops and "
           f"truncations, each kind paired on its own; policy " + res["policy"] + ".\n\n"
           + markdown_table(head, rows, align="l" + "r" * (len(head) - 4) + "lrr"))
    if res["versus"]:
        vrows = [[v["system"] + " − " + v["baseline"], v["set"], v["n_utts"], _ci(v.get("wer")),
                  _ci(v.get("rare_wer")), _ci(v.get("damage")), _ci(v.get("rare_damage"))] for v in res["versus"]]
        out += ("\n\nPaired differences in points (negative: the first system is better):\n\n"
                + markdown_table(["pair", "set", "utts", "WER", "rare-WER", "damage", "rare damage"], vrows,
                                 align="llrrrrr"))
    return out


def plot(res: dict, path: Path) -> None:
    plt = pyplot()
    ref, sets = res["reference"], list(res["sets"])
    labels = [s["label"] for s in res["systems"] if s["label"] != ref]
    rows = []           # (set, colour index, label, damage block): only the pairs that have a damage
    for s in sets + [POOLED]:
        for j, label in enumerate(labels):
            x = res[POOLED].get(label) if s == POOLED else res["sets"][s].get(label, {}).get("damage")
            if x:
                rows.append((s, j, label, x))
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 0.3 * (len(sets) + 1) + 1.5))
    y, ticks, names, previous = 0.0, [], [], None
    for s, j, label, x in rows:
        if previous is not None and s != previous:
            y += 0.6
        previous = s
        lo, hi = x["net_rate_ci"]
        ax.errorbar(x["net_rate"], y, xerr=[[x["net_rate"] - lo], [hi - x["net_rate"]]], fmt="o", color=f"C{j}",
                    capsize=3)
        ticks.append(y)
        names.append(f"{s} · {label}")
        y += 1
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(ticks, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"damage against {ref}: % of words lost net (95 % CI)")
    ax.set_title(f"Paired systems, policy {res['policy']}", fontsize=10)
    fig.tight_layout()
    save_plot(fig, path)


def run(system_args: list[str], reference: str | None, versus_labels: list[str]) -> dict:
    parsed = [parse_system(s) for s in system_args]
    labels = [label for label, _ in parsed]
    if len(set(labels)) != len(labels):
        raise SystemExit("bench_paired_systems: two --system share a label")
    reference = reference or labels[0]
    for name, what in [(reference, "--reference")] + [(v, "--versus") for v in versus_labels]:
        if name not in labels:
            raise SystemExit(f"bench_paired_systems: {what} {name!r} is not a --system label ({', '.join(labels)})")
    systems = {label: load_system(label, sources) for label, sources in parsed}
    policies = {r.system["policy"] for r in systems.values()}
    if len(policies) > 1:
        raise SystemExit(f"bench_paired_systems: the systems were decoded with different policies "
                         f"({', '.join(sorted(policies))}); pair systems of one policy")
    out = {"reference": reference, "policy": policies.pop(),
           "systems": [{"label": k, "sources": v} for k, v in parsed]}
    try:    # two sources disagreeing on an utterance's reference transcript: tarq.eval's one-line ValueError
        out.update(describe(systems, reference))
        out["versus"] = [row for i, b in enumerate(versus_labels)
                         for row in versus(systems, reference, b, skip=versus_labels[:i])]
    except ValueError as e:
        raise SystemExit(f"bench_paired_systems: {e}") from None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", action="append", required=True, metavar="LABEL=SOURCE[,SOURCE...]",
                   help="RESULT.json (tarq eval --json) or GRID.json:METHOD[@TYPE][:POLICY], comma-joined (repeat)")
    p.add_argument("--reference", default=None, help="label of the damage reference (default: the first system)")
    p.add_argument("--versus", action="append", default=[], metavar="LABEL",
                   help="pair every other system against this one (repeat)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "bench_paired_systems.json")
    args = p.parse_args(argv)
    meta = RunMeta.start("bench_paired_systems")
    result = run(args.system, args.reference, args.versus)
    save_and_report(args.out, result | {"meta": meta.finish()}, plot, render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
