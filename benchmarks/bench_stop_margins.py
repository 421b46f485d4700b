"""Teacher-forced stop margins: do quantized files push Whisper towards stopping early, or past the end?

Greedy loops and truncations are a few clips per set, too few for a failure count to rank two quantizers
(tarq.eval.damage's sign test rarely gets below p = 0.5). This benchmark measures the two decisions behind them
on every position of every utterance instead (tarq.eval.stopping): with the reference transcript forced, the
early margin M (how far EOT stays below the best text token inside the transcript, the worst position) and the end
margin E (how far EOT leads after the last token), in nats, for each system; then each system paired with the
reference system (normally F16) on the same utterances: mean ΔM and ΔE with a bootstrap 95 % CI, per set and
pooled, and how many utterances have M < 0 or E < 0 (where forced decoding would stop inside the text, or not
stop at its end).

Systems are anything ``tarq.models.load_model`` reads: an alias (F16) or a tarq quantized-model directory, whose
weights are ggml's exact dequantization of the bytes an exporter writes. The forward is PyTorch fp32, not
whisper.cpp, so margins say how the *weights* move the decision, not what whisper.cpp's kernels add.

    python benchmarks/bench_stop_margins.py --system F16=tiny.en --system "RTN Q4_0=runs/stop/tiny_rtn.q" \\
        --system "QEP Q4_0=runs/stop/tiny_qep.q" --data ../shared/data/austen-tts-dev-noisy \\
        --data ../shared/data/uqm-voice-dev --out benchmarks/results/stop_margins_tiny_q4_0.json

The first --system is the reference. ``--greedy LABEL=EVAL_JSON`` (a ``tarq eval --json`` result or grid cell of
that system's file) locates its greedy loops and truncations in the margin distribution; ``--from-json`` re-reads
the margins of an earlier run instead of recomputing them (to add --greedy results). Only ids and margins are
stored (no transcripts), so evaluation-only sets may be published.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (RunMeta, add_common_args, ensure_tarq_importable, fmt_num, markdown_table,  # noqa: E402
                     median, pyplot, read_json, save_and_report, save_plot)

N_BOOT = 2000
POOLED = "pooled"


def parse_labelled(flag: str, what: str):
    """An argparse ``type`` for ``--FLAG LABEL=WHAT`` values: (label, value), or a one-line error."""
    def parse(text: str) -> tuple[str, str]:
        label, sep, value = text.partition("=")
        if not sep or not label.strip() or not value.strip():
            raise SystemExit(f"bench_stop_margins: --{flag} wants LABEL={what}, got {text!r}")
        return label.strip(), value.strip()
    return parse


def all_margins(systems: dict[str, str], datasets: dict[str, list], limit_note: str,
                anchor: str | None = None) -> dict[str, dict]:
    """{label: {"model": spec, "sets": {set: {"ids", "early", "end"}}}}. Every system is loaded at once so that
    each utterance's features and forced tokens are made once and shared (the systems are one model family with
    one tokenizer and prompt; checked)."""
    import torch

    from tarq.data.audio import load_audio
    from tarq.eval.stopping import stop_margins
    from tarq.lexicon import DEFAULT_ZIPF_THRESHOLD
    from tarq.models import load_model
    from tarq.models.adapter import get_adapter

    models = {}
    for label, spec in systems.items():
        try:
            models[label] = load_model(spec)
        except (OSError, ValueError) as e:
            raise SystemExit(f"bench_stop_margins: {spec}: {e}") from None
    # every system must share the reference's prompt and EOT: the first system's, or the reused reference's
    reference_spec = anchor if anchor is not None else next(iter(systems.values()))
    first = next(iter(models.values()))
    if anchor is not None:
        try:
            first = load_model(anchor)
        except (OSError, ValueError) as e:
            raise SystemExit(f"bench_stop_margins: {anchor}: {e}") from None
    for label, m in models.items():
        if m.family != "whisper":
            raise SystemExit(f"bench_stop_margins: {systems[label]}: stop margins are defined for Whisper's "
                             f"vocabulary layout (text ids below EOT); this is a {m.family} model")
        if m.decoder_prompt_ids() != first.decoder_prompt_ids() or m.eot_id != first.eot_id:
            raise SystemExit(f"bench_stop_margins: {systems[label]} has another prompt or EOT than "
                             f"{reference_spec}: compare systems of one model")
    adapter = get_adapter(first.family)
    eot = int(first.eot_id)
    text_ids = torch.arange(eot)
    n_prompt = len(first.decoder_prompt_ids())
    out = {label: {"model": systems[label], "sets": {}} for label in systems}
    for name, utts in datasets.items():
        recs = {label: {"ids": [], "early": [], "end": []} for label in systems}
        for i, u in enumerate(utts):
            try:    # (the rarity tags prepare_sample also makes play no part in the margins)
                sample = adapter.prepare_sample(first, u.id, load_audio(u.audio), u.text,
                                                zipf_threshold=DEFAULT_ZIPF_THRESHOLD, tag_by="target")
            except (OSError, ValueError) as e:
                raise SystemExit(f"bench_stop_margins: {name}: {e}") from None
            n_text = len(sample.tokens) - n_prompt - 1
            for label, loaded in models.items():
                with torch.inference_mode():
                    logits, _, _ = adapter.analysis_forward(loaded.model, sample)
                m = stop_margins(logits, n_prompt, n_text, eot, text_ids)
                recs[label]["ids"].append(u.id)
                recs[label]["early"].append(m.early)
                recs[label]["end"].append(m.end)
            if (i + 1) % 50 == 0 or i + 1 == len(utts):
                print(f"  {name}: {i + 1}/{len(utts)}{limit_note}", file=sys.stderr, flush=True)
        for label in systems:
            out[label]["sets"][name] = recs[label]
    return out


def compare(systems: dict, reference: str, sets: list[str]) -> list[dict]:
    """Each system against the reference, per set and pooled over the sets where both have margins."""
    from dataclasses import asdict

    from tarq.eval.stopping import compare_margin_sets

    rows = []
    ref = systems[reference]["sets"]
    for label, sysrec in systems.items():
        if label == reference:
            continue
        for kind in ("early", "end"):
            pairs = {s: (sysrec["sets"][s][kind], ref[s][kind]) for s in sets}
            per_set = {s: compare_margin_sets([pair], n_boot=N_BOOT) for s, pair in pairs.items()}
            row = {"system": label, "margin": kind, "sets": {s: asdict(c) for s, c in per_set.items() if c}}
            if len(row["sets"]) > 1:
                row["sets"][POOLED] = asdict(compare_margin_sets(list(pairs.values()), n_boot=N_BOOT))
            rows.append(row)
    return rows


# a failing utterance's margin: truncations and empty outputs are the early decision, loops the end decision
FAILURE_MARGIN = {"truncation": "early", "empty": "early", "loop": "end"}


def greedy_failures(systems: dict, evals: list[tuple[str, str]]) -> list[dict]:
    """Where the utterances a system failed on under greedy decoding (a ``tarq eval --json`` result or grid cell
    of the same file) sit among its margins: rank = how many utterances of the set have a smaller margin."""
    from tarq.eval.damage import FAILURE_KINDS

    out = []
    for label, value in evals:
        path = Path(value)
        if label not in systems:
            raise SystemExit(f"bench_stop_margins: --greedy {label}={path}: no system is labelled {label!r}")
        try:
            result = read_json(path)
            datasets = {d["name"]: d["failures"]["ids"] for d in result["datasets"]}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"bench_stop_margins: --greedy {path}: not a tarq eval result ({e})") from None
        for s, rec in systems[label]["sets"].items():
            for kind in FAILURE_KINDS:
                margin = FAILURE_MARGIN.get(kind)
                if margin is None:
                    continue
                values = [v for v in rec[margin] if v is not None]
                for uid in datasets.get(s, {}).get(kind, []):
                    if uid not in rec["ids"]:
                        continue
                    v = rec[margin][rec["ids"].index(uid)]
                    out.append({"system": label, "set": s, "kind": kind, "id": uid, "margin": margin, "value": v,
                                "rank": None if v is None else sum(x < v for x in values), "of": len(values),
                                "eval": path.name})
    return out


def _p(p: float | None) -> str:
    return "–" if p is None else (f"{p:.2g}" if p < 0.01 else f"{p:.2f}")


def render_markdown(res: dict) -> str:
    sets = res["sets"] + ([POOLED] if len(res["sets"]) > 1 else [])
    ref = res["reference"]
    parts = [f"Teacher-forced stop margins against {ref} (nats; paired mean difference, bootstrap 95 % CI; "
             f"negative: closer to the failure). Early: EOT vs the best text token inside the transcript "
             f"(worst position); end: EOT vs the best text token after the last word. Counts: utterances whose "
             f"margin is below zero, system / {ref}, and the exact sign test on the utterances below zero in one "
             f"of the two only.", ""]
    for kind, title in (("early", "Early stop (truncation side)"), ("end", "End of text (run-on side)")):
        parts += [f"{title}:", ""]
        rows = []
        for r in res["comparisons"]:
            if r["margin"] != kind:
                continue
            cells = []
            for s in sets:
                c = r["sets"].get(s)
                cells.append("–" if c is None else
                             f"{c['mean_diff']:+.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}] · "
                             f"{c['below_zero']}/{c['below_zero_reference']} (p {_p(c.get('sign_test_p'))})")
            rows.append([r["system"], *cells])
        parts += [markdown_table(["system", *sets], rows, "l" + "r" * len(sets)), ""]
    rows = []
    for label, rec in res["systems"].items():
        cells = []
        for s in res["sets"]:
            med = [median(rec["sets"][s][kind]) for kind in ("early", "end")]
            cells.append(" / ".join(fmt_num(m) for m in med))
        rows.append([label, *cells])
    parts += ["Median early / end margin per system (nats; the level the differences above move):", "",
              markdown_table(["system", *res["sets"]], rows, "l" + "r" * len(res["sets"])), ""]
    failures = res.get("greedy_failures") or []
    if failures:
        parts += ["Utterances that failed under greedy decoding in whisper.cpp (the same file; truncations and empty "
                  "outputs against the early margin, loops against the end margin), and where their margin ranks "
                  "among all utterances of the set (1 = the smallest):", ""]
        rows = [[f["system"], f["set"], f["kind"], f["id"], fmt_num(f["value"]),
                 "–" if f["rank"] is None else f"{f['rank'] + 1} / {f['of']}"] for f in failures]
        parts += [markdown_table(["system", "set", "failure", "utterance", "margin", "rank"], rows, "llllrr"), ""]
    meta = res.get("margins_from") or res["meta"]
    parts.append(f"Margins computed {meta['finished']} on {meta['machine'].get('cpu')} ({meta['wall_s']:.0f} s, tarq "
                 f"{(meta['machine'].get('git_commit') or '?')[:7]}).")
    for group in reused_groups(res):
        m = group["from"]
        parts.append(f"The margins of {', '.join(group['systems'])} are those computed {m['finished']} on "
                     f"{m['machine'].get('cpu')} (tarq {(m['machine'].get('git_commit') or '?')[:7]}; --reuse).")
    if res.get("renamed"):
        parts.append("Labelled differently there: " + "; ".join(f"{new} was {old!r}"
                                                               for old, new in res["renamed"].items()) + ".")
    return "\n".join(parts)


def plot(res: dict, path: Path) -> None:
    """Mean paired shift of each margin against the reference, with its 95 % CI, per set (a forest plot)."""
    plt = pyplot()
    sets = res["sets"] + ([POOLED] if len(res["sets"]) > 1 else [])
    labels = [k for k in res["systems"] if k != res["reference"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.2 + 0.45 * len(labels) * len(sets)), squeeze=False)
    for ax, kind, title in zip(axes[0], ("early", "end"), ("early margin (truncation side)",
                                                            "end margin (run-on side)")):
        rows = {(r["system"], s): r["sets"].get(s) for r in res["comparisons"] if r["margin"] == kind for s in sets}
        y, ticks = 0, []
        for s in sets:
            for i, lab in enumerate(labels):
                c = rows.get((lab, s))
                if c is not None:
                    ax.errorbar(c["mean_diff"], y, xerr=[[c["mean_diff"] - c["lo"]], [c["hi"] - c["mean_diff"]]],
                                fmt="o", color=f"C{i}", capsize=3)
                ticks.append((y, f"{lab} · {s}"))
                y -= 1
            y -= 0.5
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks([t for t, _ in ticks], [n for _, n in ticks], fontsize=7)
        ax.set_xlabel(f"mean shift against {res['reference']}, nats (negative: closer to the failure)")
        ax.set_title(title)
    for ax in axes[0][1:]:
        ax.set_yticks([])
    fig.tight_layout()
    save_plot(fig, path)


def earlier_margins(path: Path, systems: dict[str, str], datasets: dict[str, list], *, every: bool,
                    renames: dict[str, str] | None = None) -> tuple[dict, dict[str, dict], dict]:
    """(margins of the ``systems`` an earlier result has — same label, same model, same utterances of every set —,
    {label: the meta of the run that computed that system's margins, for those the earlier result had itself
    reused}, the meta of the earlier result's own run, which computed all the others). Following the reuse
    through any number of re-annotations (--from-json) and earlier reuse (--reuse) means a chain of runs never
    credits the last one.
    ``every``: each system must be there (--from-json); else the missing ones are left to compute (--reuse).
    ``renames`` {label there: label here} relabels the earlier systems first (a label that has gone stale, e.g. a
    method that was the default then)."""
    flag = "--from-json" if every else "--reuse"
    try:
        earlier = read_json(path)
        old = earlier["systems"]
        computed = earlier.get("margins_from") or earlier["meta"]
        origin = {label: group["from"] for group in reused_groups(earlier) for label in group["systems"]}
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"bench_stop_margins: {flag} {path}: not a result of this benchmark ({e})") from None
    for before, after in (renames or {}).items():
        if before not in old:
            raise SystemExit(f"bench_stop_margins: --rename {before}={after}: {path} has no system {before!r}")
        if after in old and after not in renames:
            raise SystemExit(f"bench_stop_margins: --rename {before}={after}: {path} has a system {after!r} already")
    old = {(renames or {}).get(label, label): rec for label, rec in old.items()}
    origin = {(renames or {}).get(label, label): meta for label, meta in origin.items()}
    recs, reused_from = {}, {}
    for label, spec in systems.items():
        rec = old.get(label)
        if rec is None or rec["model"] != spec:
            if every:
                raise SystemExit(f"bench_stop_margins: {flag} {path}: has no system {label}={spec}")
            continue
        other = next((n for n, utts in datasets.items()
                      if rec["sets"].get(n, {}).get("ids") != [u.id for u in utts]), None)
        if other is not None:
            if every:
                raise SystemExit(f"bench_stop_margins: {flag} {path}: {label} has not the utterances of {other}")
            continue
        recs[label] = {"model": spec, "sets": {n: rec["sets"][n] for n in datasets}}
        if label in origin:
            reused_from[label] = origin[label]
    return recs, reused_from, computed


def reused_groups(res: dict) -> list[dict]:
    """A result's reused systems as [{"systems", "from"}] (one group per run that computed them; a single group is
    stored as a plain dict, the format before chains were followed)."""
    reused = res.get("reused") or []
    return [reused] if isinstance(reused, dict) else list(reused)


def group_by_run(computed_by: dict[str, dict]) -> list[dict]:
    """{label: meta} -> [{"systems": [labels], "from": meta}], one group per run, in first-seen order."""
    groups: dict[str, dict] = {}
    for label, meta in computed_by.items():
        groups.setdefault(json.dumps(meta, sort_keys=True), {"systems": [], "from": meta})["systems"].append(label)
    return list(groups.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--system", action="append", required=True, type=parse_labelled("system", "MODEL"),
                   help="LABEL=MODEL (the first is the reference)")
    p.add_argument("--data", action="append", required=True, help="a data set (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="first N utterances of each set (a quick look)")
    p.add_argument("--greedy", action="append", default=[], type=parse_labelled("greedy", "EVAL_JSON"),
                   help="LABEL=EVAL_JSON: the system's greedy whisper.cpp result on these sets (tarq eval --json or a "
                        "grid cell); its loops and truncations are located in the margin distribution (repeatable)")
    p.add_argument("--from-json", type=Path, default=None,
                   help="take the margins from an earlier result of this benchmark instead of recomputing them "
                        "(--system and --data must name the same systems and sets)")
    p.add_argument("--reuse", type=Path, default=None,
                   help="take the margins of the systems an earlier result has (same label, model and utterances) "
                        "from it and compute only the others (adding systems to a comparison)")
    p.add_argument("--rename", action="append", default=[], type=parse_labelled("rename", "NEW_LABEL"),
                   metavar="OLD=NEW", help="with --reuse or --from-json: the earlier result's system OLD is NEW here "
                                           "(same model; a label gone stale), repeatable")
    add_common_args(p, "stop_margins.json")
    args = p.parse_args(argv)
    ensure_tarq_importable()
    from tarq.data import dataset_name, load_dataset, require_transcripts

    systems = dict(args.system)
    if len(systems) != len(args.system):
        raise SystemExit("bench_stop_margins: two --system entries share a label")
    datasets = {}
    for d in args.data:
        try:
            utts = load_dataset(d, limit=args.limit)
            require_transcripts(utts, d)
        except (OSError, ValueError) as e:
            raise SystemExit(f"bench_stop_margins: {e}") from None
        datasets[dataset_name(d)] = utts
    if args.dry_run:
        print(f"systems: {systems}\nsets: {[(k, len(v)) for k, v in datasets.items()]}\nwould write {args.out}")
        return 0
    meta = RunMeta.start("bench_stop_margins")
    note = f" (limit {args.limit})" if args.limit else ""
    margins_from = None
    reused, computed_by = {}, {}
    reference = next(iter(systems))
    if args.from_json and args.reuse:
        raise SystemExit("bench_stop_margins: --from-json (every system) and --reuse (some) exclude each other")
    renames = dict(args.rename)
    if len(set(renames.values())) != len(renames) or len(renames) != len(args.rename):
        raise SystemExit("bench_stop_margins: --rename names one system twice (as OLD or as NEW)")
    if renames and not (args.from_json or args.reuse):
        raise SystemExit("bench_stop_margins: --rename relabels the systems of --reuse or --from-json; neither given")
    if args.from_json:
        # the earlier result's own run becomes this one's "margins_from"; systems it had reused keep their runs
        recs, computed_by, margins_from = earlier_margins(args.from_json, systems, datasets, every=True,
                                                          renames=renames)
    else:
        if args.reuse:
            reused, reused_from, computed = earlier_margins(args.reuse, systems, datasets, every=False,
                                                            renames=renames)
            computed_by = {label: reused_from.get(label, computed) for label in reused}
        todo = {label: spec for label, spec in systems.items() if label not in reused}
        fresh = all_margins(todo, datasets, note, anchor=systems[reference] if reference in reused else None) \
            if todo else {}
        recs = {label: reused.get(label) or fresh[label] for label in systems}
    res = {"reference": reference, "sets": list(datasets), "limit": args.limit,
           "n_utts": {k: len(v) for k, v in datasets.items()}, "systems": recs,
           "comparisons": compare(recs, reference, list(datasets)),
           "greedy_failures": greedy_failures(recs, args.greedy), "meta": meta.finish()}
    if margins_from:
        res["margins_from"] = margins_from
    if computed_by:
        groups = group_by_run(computed_by)
        res["reused"] = groups[0] if len(groups) == 1 else groups
    if renames:
        res["renamed"] = renames
    save_and_report(args.out, res, plot, render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
