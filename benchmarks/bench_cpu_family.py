"""Does the same build command give the same transcripts on another CPU family?

A published grid result (benchmarks/results/*.json, built and decoded on one machine) is paired clip by clip with a
``tarq eval --json`` result of the same system rebuilt and decoded on this machine, on the same data set. Per pair:
the share of clips whose normalised transcript is identical, WER of both, the paired damage of the rebuild against
the published build (% of words, paired bootstrap 95 % CI, the published build as the reference system) and both
builds' loops / truncations / empty outputs / phantoms (tarq.eval.damage's rules).

A whisper.cpp RTN pair is the control: its file is made by whisper.cpp's own quantize (no solver), so any
difference there comes from decoding, not from the build.

    python benchmarks/bench_cpu_family.py \\
        --pair benchmarks/results/ablation_tiny_q4_0_qep_austen.json:qep:austen-tts-dev-noisy:runs/cpu/qep_noisy.json \\
        --pair benchmarks/results/ablation_tiny_q4_0_qep_austen.json:ggml:austen-tts-dev-noisy:runs/cpu/rtn_noisy.json

Run it on the machine that made the ``tarq eval`` results: the record's ``meta.machine`` is that machine, the
published side's machine comes from its grid result.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (RESULTS_DIR, RunMeta, ensure_tarq_importable, fmt_num, markdown_table, pyplot,  # noqa: E402
                     read_json, save_and_report, save_plot)

N_BOOT = 1000


def parse_pair(text: str) -> tuple[Path, str, str, Path]:
    parts = text.split(":")
    if len(parts) != 4 or not all(parts):
        raise SystemExit(f"--pair {text!r}: expected GRID_RESULT.json:METHOD:DATASET:EVAL.json")
    return Path(parts[0]), parts[1], parts[2], Path(parts[3])


def compare(grid_path: Path, method: str, dataset: str, eval_path: Path) -> dict:
    ensure_tarq_importable()
    from tarq.eval.damage import FAILURE_KEYS, Damage, damage_matrix, failure_summary
    from tarq.eval.metrics import align_counts, pool, words
    from tarq.grid.results import find_system, system_datasets

    doc = read_json(grid_path)
    if dataset not in doc.get("utterances", {}):
        raise SystemExit(f"{grid_path}: no data set {dataset!r}")
    if doc["utterances"][dataset].get("refs") is None:
        raise SystemExit(f"{grid_path}: {dataset} transcripts are redacted; compare on a set that is not private")
    try:
        published = find_system(doc, method, source=grid_path)
        sets = system_datasets(doc, published)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if dataset not in sets:
        raise SystemExit(f"{grid_path}: method {method!r} has no transcripts of {dataset}")
    ids, refs, pub_h = sets[dataset].ids, sets[dataset].refs, sets[dataset].hyps
    ours_doc = read_json(eval_path)
    found = [d for d in ours_doc["datasets"] if d["name"] == dataset]
    if len(found) != 1:
        have = ", ".join(d["name"] for d in ours_doc["datasets"])
        raise SystemExit(f"{eval_path}: no data set {dataset!r} (has {have})")
    ours_by_id = {u["id"]: u["hyp"] for u in found[0]["utterances"]}
    missing = [i for i in ids if i not in ours_by_id]
    if missing:
        raise SystemExit(f"{eval_path}: {len(missing)} of the published clips are missing (e.g. {missing[0]})")
    ours_h = [ours_by_id[i] or "" for i in ids]
    differ = [i for i, a, b in zip(ids, pub_h, ours_h) if words(a) != words(b)]
    dmg = Damage([damage_matrix(refs, ours_h, pub_h)], [ids], n_boot=N_BOOT).damage()

    # one alignment per side serves both its WER and its failure counts
    pub_counts, ours_counts = align_counts(refs, pub_h), align_counts(refs, ours_h)

    def fails(counts):
        f = failure_summary(ids, counts)
        return {k: f[k] for k in FAILURE_KEYS} | {"ids": f["ids"]}

    return {"grid": grid_path.name, "method": method, "label": published["label"], "dataset": dataset,
            "eval": eval_path.name, "published_cpu": doc.get("meta", {}).get("machine", {}).get("cpu"),
            "n_clips": len(ids), "n_identical": len(ids) - len(differ), "differ_ids": differ,
            "wer_published": pool(pub_counts).wer, "wer_ours": pool(ours_counts).wer,
            "net_rate": dmg["net_rate"], "net_rate_ci": dmg["net_rate_ci"], "lost": dmg["lost"],
            "gained": dmg["gained"], "extra_insertions": dmg["extra_insertions"],
            "failures_published": fails(pub_counts), "failures_ours": fails(ours_counts)}


def render_markdown(result: dict) -> str:
    rows = []
    for p in result["pairs"]:
        fp, fo = p["failures_published"], p["failures_ours"]
        keys = [k for k in fp if k != "ids"]     # the kinds compare() counted, in tarq.eval.damage's order
        lo, hi = p["net_rate_ci"]
        rows.append([p["label"], p["dataset"], p["n_clips"],
                     f"{p['n_identical']} ({100 * p['n_identical'] / p['n_clips']:.1f} %)",
                     fmt_num(100 * p["wer_published"]) + " → " + fmt_num(100 * p["wer_ours"]),
                     f"{100 * p['net_rate']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]",
                     f"{p['lost']} / {p['gained']} / {p['extra_insertions']:+d}",
                     "/".join(str(fp[k]) for k in keys) + " → " + "/".join(str(fo[k]) for k in keys)])
    here = result["meta"]["machine"].get("cpu", "?")
    there = sorted({p["published_cpu"] or "?" for p in result["pairs"]})
    return (f"Published builds and decodes: {', '.join(there)}; rebuilt and decoded here: {here}. Damage: the rebuild "
            "against the published build, % of words, paired bootstrap 95 % CI (negative: the rebuild lost fewer "
            "words). Failures: loops / truncations / empty / phantoms, published → rebuilt.\n\n"
            + markdown_table(["system", "data set", "clips", "identical transcripts", "WER %", "damage",
                              "lost / gained / +ins", "failures"], rows, align="llrrrrrl"))


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    pairs = result["pairs"]
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(pairs) + 1.4))
    names = [f"{p['label']} · {p['dataset']}" for p in pairs]
    share = [100 * p["n_identical"] / p["n_clips"] for p in pairs]
    ax.barh(range(len(pairs)), share, color="#4477aa")
    for i, p in enumerate(pairs):
        ax.text(share[i] + 1, i, f"{100 * p['net_rate']:+.2f} WER pts", va="center", fontsize=8)
    ax.set_yticks(range(len(pairs)), names, fontsize=8)
    ax.set_xlim(0, 130)
    ax.set_xlabel("clips with an identical transcript, % (label: rebuild − published, WER points)")
    ax.set_title("Same command, another CPU family", fontsize=10)
    fig.tight_layout()
    save_plot(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pair", action="append", required=True, metavar="GRID.json:METHOD:DATASET:EVAL.json",
                   help="a published grid result, the method's name in it, a data set, and this machine's tarq eval "
                        "--json of the same system on that set (repeat)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "bench_cpu_family.json")
    args = p.parse_args(argv)
    meta = RunMeta.start("bench_cpu_family")
    pairs = [compare(*parse_pair(x)) for x in args.pair]
    save_and_report(args.out, {"pairs": pairs, "meta": meta.finish()}, plot, render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
