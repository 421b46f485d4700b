"""Teacher-forced token KL against F16: how far each quantized file moves Whisper's next-token distribution.

Word errors change only where a decision flips, so files a few tenths of a WER point apart cannot be ranked on a
dev set (benchmarks/README.md, every "what the set can resolve"). The distribution behind every decision moves at
every position. With the reference transcript forced, this benchmark scores each system against the reference
system (the first ``--system``, normally F16) at every position of every utterance (tarq.eval.token_kl, eq. 1):
* the per-position mean KL(reference ‖ system), per set and pooled, with a bootstrap 95 % CI;
* top-1 agreement (share of positions where both put the same token first);
* the same over the **rare positions** only (those predicting a token of a rare word: wordfreq Zipf < 3, the
  calibration's and the scoring's one definition), where the words a tail-aware quantizer protects are decided;
* each system minus each ``--versus`` system, paired on the same positions, with its CI (all and rare).
That is llama.cpp's ``perplexity --kl-divergence`` measure for language models, here for an ASR decoder on held-out
speech.

Systems are anything ``tarq.models.load_model`` reads: an alias (F16) or a tarq quantized-model directory, whose
weights are ggml's exact dequantization of the bytes an exporter writes. The forward is PyTorch fp32, not
whisper.cpp: the KL says how the *weights* move the distribution.

    python benchmarks/bench_token_kl.py --system F16=tiny.en --system "default=runs/tiny_default.q" \\
        --system "default + scale tune=runs/tiny_st.q" --versus default \\
        --data ../shared/data/uqm-voice-dev --data ../shared/data/foldoc-tts-dev --out benchmarks/results/NAME.json

Only ids and numbers are stored (no transcripts), so evaluation-only sets may be published.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (RunMeta, add_common_args, ensure_tarq_importable, markdown_table, pyplot,  # noqa: E402
                     save_and_report, save_plot, subset)
from bench_layer_error import parse_system  # noqa: E402  (LABEL=MODEL)

N_BOOT = 2000
POOLED = "pooled"


def score(systems: dict[str, str], datasets: dict[str, list], note: str) -> dict[str, dict]:
    """{label: {set: [UtteranceKL as dict]}} for every system but the reference (the first), whose logits are
    computed once per utterance."""
    import torch

    from tarq.data.audio import load_audio
    from tarq.eval.token_kl import utterance_kl
    from tarq.lexicon import DEFAULT_ZIPF_THRESHOLD
    from tarq.models import load_model
    from tarq.models.adapter import get_adapter

    models = {}
    for label, spec in systems.items():
        try:
            models[label] = load_model(spec)
        except (OSError, ValueError) as e:
            raise SystemExit(f"bench_token_kl: {spec}: {e}") from None
    ref_label = next(iter(systems))
    ref = models[ref_label]
    for label, m in models.items():
        if m.family != ref.family or m.decoder_prompt_ids() != ref.decoder_prompt_ids():
            raise SystemExit(f"bench_token_kl: {systems[label]} is not the same model family and prompt as "
                             f"{systems[ref_label]}: compare files of one model")
    adapter = get_adapter(ref.family)
    n_prompt = len(ref.decoder_prompt_ids())
    out = {label: {} for label in systems if label != ref_label}
    for name, utts in datasets.items():
        for label in out:
            out[label][name] = []
        for i, u in enumerate(utts):
            try:
                sample = adapter.prepare_sample(ref, u.id, load_audio(u.audio), u.text,
                                                zipf_threshold=DEFAULT_ZIPF_THRESHOLD, tag_by="target")
            except (OSError, ValueError) as e:
                raise SystemExit(f"bench_token_kl: {name}: {e}") from None
            with torch.inference_mode():
                ref_logits = adapter.analysis_forward(ref.model, sample)[0]
                for label in out:
                    k = utterance_kl(ref_logits, adapter.analysis_forward(models[label].model, sample)[0], n_prompt,
                                     rare=sample.tail)
                    out[label][name].append({"id": u.id, "kl_sum": k.kl_sum, "rows": k.rows,
                                             "top1_same": k.top1_same, "kl_max": k.kl_max,
                                             "kl_sum_rare": k.kl_sum_rare, "rows_rare": k.rows_rare})
            if (i + 1) % 50 == 0 or i + 1 == len(utts):
                print(f"  {name}: {i + 1}/{len(utts)}{note}", file=sys.stderr, flush=True)
    return out


def _utts(recs: list[dict]):
    from tarq.eval.token_kl import UtteranceKL

    return [UtteranceKL(r["kl_sum"], r["rows"], r["top1_same"], r["kl_max"], r.get("kl_sum_rare", 0.0),
                        r.get("rows_rare", 0)) for r in recs]


def summarize(scores: dict[str, dict], sets: list[str], versus: list[str]) -> tuple[dict, list[dict]]:
    from tarq.eval.token_kl import paired_kl, pooled_kl, top1_agreement

    groups = {s: [s] for s in sets}
    if len(sets) > 1:
        groups[POOLED] = sets
    summary = {}
    for label, per_set in scores.items():
        summary[label] = {}
        for g, members in groups.items():
            utts = [_utts(per_set[s]) for s in members]
            mean, lo, hi = pooled_kl(utts, n_boot=N_BOOT)
            summary[label][g] = {"kl": mean, "lo": lo, "hi": hi, "top1": top1_agreement(utts),
                                 "utts": sum(len(u) for u in utts), "rows": sum(x.rows for u in utts for x in u)}
            rare_rows = sum(x.rows_rare for u in utts for x in u)
            if rare_rows:
                mean, lo, hi = pooled_kl(utts, n_boot=N_BOOT, rare=True)
                summary[label][g].update({"kl_rare": mean, "lo_rare": lo, "hi_rare": hi, "rows_rare": rare_rows})
    pairs = []
    for other in versus:
        for label, per_set in scores.items():
            if label == other:
                continue
            row = {"system": label, "versus": other, "sets": {}}
            for g, members in groups.items():
                a, b = [_utts(per_set[s]) for s in members], [_utts(scores[other][s]) for s in members]
                d, lo, hi = paired_kl(a, b, n_boot=N_BOOT)
                row["sets"][g] = {"diff": d, "lo": lo, "hi": hi,
                                  "rel": d / summary[other][g]["kl"] if summary[other][g]["kl"] else None}
                if "kl_rare" in summary[other][g]:
                    d, lo, hi = paired_kl(a, b, n_boot=N_BOOT, rare=True)
                    base = summary[other][g]["kl_rare"]
                    row["sets"][g].update({"diff_rare": d, "lo_rare": lo, "hi_rare": hi,
                                           "rel_rare": d / base if base else None})
            pairs.append(row)
    return summary, pairs


def render_markdown(res: dict) -> str:
    groups = res["sets"] + ([POOLED] if len(res["sets"]) > 1 else [])
    ref = res["reference"]
    parts = [f"Teacher-forced token KL against {ref} (KL({ref} ‖ system), nats per position, every position "
             f"predicting a transcript token or the end of text; bootstrap 95 % CI over utterances; top-1: share "
             f"of positions with {ref}'s first choice on top).", ""]
    rows = []
    for label, per in res["summary"].items():
        rows.append([label, *(f"{per[g]['kl']:.4f} [{per[g]['lo']:.4f}, {per[g]['hi']:.4f}] · "
                              f"{100 * per[g]['top1']:.2f} %" for g in groups)])
    head = ["system", *(f"{g} ({res['summary'][next(iter(res['summary']))][g]['utts']} utts)" for g in groups)]
    parts += [markdown_table(head, rows, "l" + "r" * len(groups)), ""]
    if res["pairs"]:
        parts += ["Paired differences (nats per position; relative to the second system in brackets after the CI; "
                  "negative: the first system is closer to the reference):", ""]
        rows = []
        for p in res["pairs"]:
            cells = []
            for g in groups:
                c = p["sets"][g]
                rel = "" if c["rel"] is None else f" ({100 * c['rel']:+.1f} %)"
                cells.append(f"{c['diff']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}]{rel}")
            rows.append([f"{p['system']} − {p['versus']}", *cells])
        parts += [markdown_table(["pair", *groups], rows, "l" + "r" * len(groups)), ""]
    parts += _render_rare(res, groups)
    meta = res["meta"]
    limit = f"; limit {res['limit']}" if res.get("limit") else ""
    parts.append(f"Computed {meta['finished']} on {meta['machine'].get('cpu')} ({meta['wall_s']:.0f} s, tarq "
                 f"{(meta['machine'].get('git_commit') or '?')[:7]}){limit}.")
    return "\n".join(parts)


def _render_rare(res: dict, groups: list[str]) -> list[str]:
    """The rare-position tables (results from before they existed have none)."""
    first = res["summary"][next(iter(res["summary"]))]
    if not all("kl_rare" in first[g] for g in groups):
        return []
    counts = ", ".join(f"{g} {first[g]['rows_rare']}" for g in groups)
    parts = [f"Rare positions only (rows predicting a token of a rare word, Zipf < 3; rows per set: {counts}):", ""]
    rows = [[label, *(f"{per[g]['kl_rare']:.4f} [{per[g]['lo_rare']:.4f}, {per[g]['hi_rare']:.4f}]" for g in groups)]
            for label, per in res["summary"].items()]
    parts += [markdown_table(["system", *groups], rows, "l" + "r" * len(groups)), ""]
    rows = []
    for p in res["pairs"]:
        cells = []
        for g in groups:
            c = p["sets"][g]
            rel = "" if c.get("rel_rare") is None else f" ({100 * c['rel_rare']:+.1f} %)"
            cells.append(f"{c['diff_rare']:+.4f} [{c['lo_rare']:+.4f}, {c['hi_rare']:+.4f}]{rel}")
        rows.append([f"{p['system']} − {p['versus']}", *cells])
    if rows:
        parts += ["Paired differences on the rare positions:", "",
                  markdown_table(["pair", *groups], rows, "l" + "r" * len(groups)), ""]
    return parts


def plot(res: dict, path: Path) -> None:
    """Per-position KL of each system against the reference, with its 95 % CI, per set."""
    plt = pyplot()
    groups = res["sets"] + ([POOLED] if len(res["sets"]) > 1 else [])
    labels = list(res["summary"])
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.4 * len(labels) * len(groups)))
    y, ticks = 0, []
    for g in groups:
        for i, lab in enumerate(labels):
            c = res["summary"][lab][g]
            ax.errorbar(c["kl"], y, xerr=[[c["kl"] - c["lo"]], [c["hi"] - c["kl"]]], fmt="o", color=f"C{i}",
                        capsize=3)
            ticks.append((y, f"{lab} · {g}"))
            y -= 1
        y -= 0.5
    ax.set_yticks([t for t, _ in ticks], [n for _, n in ticks], fontsize=7)
    ax.set_xlabel(f"KL({res['reference']} ‖ system), nats per position")
    ax.set_xlim(left=0)
    fig.tight_layout()
    save_plot(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--system", action="append", required=True, type=parse_system,
                   help="LABEL=MODEL (repeatable; the first is the reference)")
    p.add_argument("--versus", action="append", default=[], help="pair every other system with this one (repeatable)")
    p.add_argument("--data", action="append", required=True, help="a data set (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="a seeded subset of N utterances per set (a quick look)")
    add_common_args(p, "token_kl.json")
    args = p.parse_args(argv)
    ensure_tarq_importable()
    from tarq.data import dataset_name, load_dataset, require_transcripts

    systems = dict(args.system)
    if len(systems) != len(args.system) or len(systems) < 2:
        raise SystemExit("bench_token_kl: give a reference and at least one other --system, each label once")
    reference = next(iter(systems))
    for v in args.versus:
        if v not in systems or v == reference:
            raise SystemExit(f"bench_token_kl: --versus {v!r} is not one of the scored systems "
                             f"{[k for k in systems if k != reference]}")
    datasets = {}
    for d in args.data:
        try:
            utts = load_dataset(d)
            require_transcripts(utts, d)
        except (OSError, ValueError) as e:
            raise SystemExit(f"bench_token_kl: {e}") from None
        datasets[dataset_name(d)] = subset(utts, args.limit) if args.limit else utts
    if args.dry_run:
        print(f"systems: {systems}\nsets: {[(k, len(v)) for k, v in datasets.items()]}\nwould write {args.out}")
        return 0
    meta = RunMeta.start("bench_token_kl")
    scores = score(systems, datasets, f" (limit {args.limit})" if args.limit else "")
    summary, pairs = summarize(scores, list(datasets), args.versus)
    # (key names clear of the grid and bench_accuracy layouts that _redact.py reads: ids and numbers only here)
    res = {"reference": reference, "system_models": systems, "sets": list(datasets), "limit": args.limit,
           "summary": summary, "pairs": pairs, "per_utterance": scores, "meta": meta.finish()}
    save_and_report(args.out, res, plot, render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
