"""Where do a quantized file's new greedy failures start: at its own decision, or at a near tie of F16's?

A loop, truncation or empty output a system has and the reference system (F16 in the same runtime) does not is a
"new failure" (tarq.eval.damage). This benchmark puts each one to the reference *model* in PyTorch
(tarq.eval.failure_origin): the first token where the reference would have chosen otherwise (the divergence), how
far the system's choice was below the reference's own there (the gap, nats), and what the reference does when put
on the system's branch at that token and left to decode greedily by itself. If it fails too, the failure is
**inherited**: the system took the other side of a decision, and the reference model fails on that side as well.

    python benchmarks/bench_failure_origin.py --reference-model tiny.en \\
        --reference "F16=f16_greedy_SET.json,..." --system "default IQ4_NL=iq4_greedy_SET.json,..." \\
        --out benchmarks/results/failure_origin_tiny.json

Only ids, token positions, gaps and word counts are stored (no transcripts), so evaluation-only sets may be
published. Clips over 30 s (split by the runtime) are listed as not analysed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (RunMeta, add_common_args, ensure_tarq_importable, fmt_num, markdown_table,  # noqa: E402
                     pyplot, resolve_data_root, save_and_report, save_plot)
from bench_paired_systems import load_system, parse_system  # noqa: E402   (one LABEL=SOURCE,... grammar)

FAILING = ("loop", "truncation", "empty")
# Where a branch stops being "the reference's own near tie". A convention, set from what 4-bit files do to one
# decision: on uqm-voice-dev the default recipe's Q4_0 file moves a clip's teacher-forced early stop margin by a
# median 0.42 nats against F16 (whisper.cpp's RTN Q4_0: 0.73; results/stop_margins_tiny_q4_0_default.json), so a
# tie closer than half a nat is one a 4-bit file crosses about as often as not. Every gap is printed; the split is a
# summary.
NEAR_TIE = 0.5


def parse_labelled(flag: str, text: str) -> tuple[str, list[str]]:
    """LABEL=SOURCE[,SOURCE...] in bench_paired_systems' grammar, its one-line error naming this script's flag."""
    try:
        return parse_system(text)
    except SystemExit:
        raise SystemExit(f"bench_failure_origin: {flag} wants LABEL=SOURCE[,SOURCE...], got {text!r}") from None


def load_sets(label: str, sources: list[str]) -> dict:
    """{set name: DatasetResult} over a system's sources: eval JSONs or ``GRID.json:METHOD[@TYPE]`` grid cells, as
    bench_paired_systems reads them (redacted sets are skipped there)."""
    result = load_system(label, sources)
    if result.system["policy"] != "greedy":
        raise SystemExit(f"bench_failure_origin: {label}: its decodes are {result.system['policy']!r}; greedy failures "
                         "are defined under the greedy policy")
    return {d.name: d for d in result.datasets}


def new_failures(system, reference) -> list[tuple[str, str, str, str]]:
    """(id, kind, reference transcript, system hypothesis) of the utterances failing in ``system`` and not in
    ``reference`` (both DatasetResults of one set), in the system's order."""
    from tarq.eval.damage import failure_kind_of

    ref_kind = {u: failure_kind_of(c) for u, c in zip(reference.ids, reference.counts)}
    out = []
    for u, c, ref, hyp in zip(system.ids, system.counts, system.refs, system.hyps):
        kind = failure_kind_of(c)
        if u in ref_kind and kind in FAILING and ref_kind[u] not in FAILING:
            out.append((u, kind, ref, hyp))
    return out


def analyse(model_spec: str, reference: dict, systems: dict[str, dict], data_root: Path) -> dict:
    import torch

    from tarq.data import SAMPLE_RATE, load_audio, load_dataset
    from tarq.eval.backends import TorchBackend
    from tarq.eval.failure_origin import failure_origin
    from tarq.models import load_model

    try:
        loaded = load_model(model_spec)
    except (OSError, ValueError) as e:
        raise SystemExit(f"bench_failure_origin: {model_spec}: {e}") from None
    if loaded.family != "whisper":
        raise SystemExit(f"bench_failure_origin: {model_spec}: defined for Whisper vocabularies, not {loaded.family}")
    opts = TorchBackend(loaded, threads=None).options
    audio_of: dict[str, dict] = {}
    out = {}
    for label, sets in systems.items():
        out[label] = {}
        for name, d in sorted(sets.items()):
            if name not in reference:
                raise SystemExit(f"bench_failure_origin: {label}: the reference has no decode of {name}")
            if name not in audio_of:
                try:    # by set name under the data root: grid results do not keep a usable path
                    audio_of[name] = {u.id: u.audio for u in load_dataset(data_root / name)}
                except (OSError, ValueError) as e:
                    raise SystemExit(f"bench_failure_origin: {name}: {e}") from None
            records, skipped = [], []
            for uid, kind, ref_text, hyp in new_failures(d, reference[name]):
                if uid not in audio_of[name]:
                    raise SystemExit(f"bench_failure_origin: {data_root / name}: no utterance {uid!r} (the decodes "
                                     "are of another version of the set)")
                audio = load_audio(audio_of[name][uid])
                if len(audio) > 30 * SAMPLE_RATE:
                    skipped.append(uid)
                    continue
                feats = loaded.feature_extractor(audio, sampling_rate=SAMPLE_RATE,
                                                 return_tensors="pt").input_features[0].to(torch.float32)
                origin = failure_origin(loaded.model, loaded.tokenizer, feats, opts, uid, ref_text, hyp, kind)
                records.append(origin.to_dict())
                print(f"  {label} / {name}: {uid} {kind}: divergence {origin.position}, gap "
                      f"{fmt_num(origin.gap)}, reference from the branch: {origin.reference_kind or 'no failure'}",
                      file=sys.stderr, flush=True)
            out[label][name] = {"n_utts": len(d.ids), "new_failures": records, "not_analysed": skipped}
    return out


def origin_class(f: dict, near_tie: float) -> str:
    """"reference": the reference model fails by itself from a branch it ranks within ``near_tie`` nats of its own
    choice -- a word, or the stop itself -- or reproduces the failure outright; "runtime": the runtime emitted a
    token the reference model's greedy rules suppress, so the branch is not one it could take; "own": the file's
    (a branch the reference recovers from, or one far below the reference's choice)."""
    if f["masked"]:
        return "runtime"
    if f["inherited"] and (f["position"] is None or f["gap"] <= near_tie):
        return "reference"
    return "own"


def summary_rows(res: dict) -> list[list]:
    rows = []
    for label, sets in res["systems"].items():
        for name, rec in sets.items():
            fails = rec["new_failures"]
            classes = [origin_class(f, res["near_tie"]) for f in fails]
            gaps = [fmt_num(g) for g in sorted(f["gap"] for f in fails if f["gap"] is not None)]
            gaps += ["masked"] * classes.count("runtime")
            rows.append([label, name, rec["n_utts"], len(fails) + len(rec["not_analysed"]), classes.count("reference"),
                         classes.count("own"), classes.count("runtime"), len(rec["not_analysed"]),
                         ", ".join(gaps) or "–"])
    return rows


def _branch(f: dict) -> str:
    if f["stopped"]:
        return f"{f['reference_kind']} (the branch is the stop)"
    return f["reference_kind"] or "no failure"


def render_markdown(res: dict) -> str:
    head = (f"Reference model `{res['reference_model']}` (PyTorch fp32), reference decodes {res['reference']!r}.\n\n"
            "New failures: loops, truncations and empty outputs the system has and the reference decode does not "
            "(greedy). Divergence: the first token where the reference model (PyTorch fp32) would have chosen "
            "otherwise; gap: how far below its own choice the system's token was there, nats. Reference's: the "
            f"reference model, put on the system's branch there and left to decode greedily, fails too (a branch "
            f"that is the stop ends as the system's did), and the gap is at most {res['near_tie']:g} nats: a near tie "
            "of its own (or it reproduces the failure outright, divergence \"–\"). Runtime-only: the runtime "
            "emitted a token, or an empty transcript, that the reference model's greedy rules cannot produce (gap "
            "\"masked\"). Own: every other new failure.\n\n")
    table = markdown_table(["system", "set", "utts", "new failures", "reference's", "own", "runtime-only",
                            "not analysed (> 30 s)", "gaps (nats)"], summary_rows(res), "llrrrrrrl")
    detail = [[label, name, f["id"], f["kind"], "–" if f["position"] is None else f["position"],
               "masked" if f["masked"] else fmt_num(f["gap"]), _branch(f), f["n_words"]]
              for label, sets in res["systems"].items() for name, rec in sets.items() for f in rec["new_failures"]]
    meta = res["meta"]
    machine = meta.get("machine") or {}
    commit = (machine.get("git_commit") or "?")[:7]
    footer = (f"\n\nMeasured {meta['finished']} on {machine.get('cpu', '?')} ({meta['wall_s']:.0f} s, tarq {commit}); "
              f"load average {meta.get('loadavg_start')} at start, {meta.get('loadavg_end')} at end.")
    out = head + table
    if detail:
        out += "\n\nEach new failure:\n\n" + markdown_table(
            ["system", "set", "utterance", "kind", "divergence (token)", "gap", "reference from the branch",
             "its words"], detail, "llllrrlr")
    return out + footer


def plot(res: dict, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    colours = {True: "tab:orange", False: "tab:blue"}
    labels = list(res["systems"])
    for i, label in enumerate(labels):
        for rec in res["systems"][label].values():
            for f in rec["new_failures"]:
                if f["gap"] is not None:
                    ax.scatter(min(f["gap"], 10.0), i, color=colours[f["inherited"]], s=30)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("reference model's gap at the divergence (nats, capped at 10)")
    ax.axvline(res["near_tie"], color="grey", lw=0.8, ls="--")
    ax.set_title("new greedy failures: orange = the reference fails from the branch too")
    save_plot(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference-model", required=True, help="the reference model (an alias such as tiny.en)")
    p.add_argument("--reference", required=True,
                   help="LABEL=SOURCE[,...] (an eval JSON or GRID.json:METHOD[@TYPE]): the reference model's greedy "
                        "decodes in the systems' runtime")
    p.add_argument("--system", action="append", required=True,
                   help="LABEL=SOURCE[,...]: a system's greedy decodes (repeatable)")
    p.add_argument("--near-tie", type=float, default=NEAR_TIE,
                   help="gap in nats up to which a branch counts as the reference's own near tie "
                        f"(default {NEAR_TIE:g})")
    p.add_argument("--data-root", help="folder with the speech sets, found by set name (default ../shared/data)")
    add_common_args(p, "failure_origin.json")
    args = p.parse_args(argv)
    ensure_tarq_importable()
    ref_label, ref_sources = parse_labelled("--reference", args.reference)
    parsed = [parse_labelled("--system", text) for text in args.system]
    systems = dict(parsed)
    if len(systems) != len(parsed):
        raise SystemExit("bench_failure_origin: two --system entries share a label")
    if args.dry_run:
        print(f"reference {ref_label} ({args.reference_model}): {ref_sources}\nsystems: {systems}\n"
              f"would write {args.out}")
        return 0
    try:
        data_root = resolve_data_root(args.data_root)
    except FileNotFoundError as e:
        raise SystemExit(f"bench_failure_origin: {e}") from None
    meta = RunMeta.start("bench_failure_origin")
    reference = load_sets(ref_label, ref_sources)
    loaded = {label: load_sets(label, src) for label, src in systems.items()}
    res = {"reference_model": args.reference_model, "reference": ref_label, "near_tie": args.near_tie,
           "reference_sources": ref_sources,
           "system_sources": systems, "systems": analyse(args.reference_model, reference, loaded, data_root),
           "meta": meta.finish()}
    save_and_report(args.out, res, plot, render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
