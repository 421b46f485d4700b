"""Held-out layer error: does a calibrated solver's per-layer gain over RTN survive on speech it was not fitted to?

GPTQ-family solvers minimise each Linear's error tr(ΔW H ΔWᵀ) under the calibration set's second moment H. This
benchmark measures the same quantity under other sets' second moments (tarq.eval.layer_error): every quantized
Linear alone, on the FP model's own inputs, teacher-forced on the reference transcripts. Per set and kind of
Linear it prints the geometric mean over Linears of each system's error relative to the reference system (the
first --system, normally whisper.cpp's RTN file), with a bootstrap 95 % CI over utterances. On the calibration
set itself this is the in-sample gain; on held-out TTS, other text and real speech, the part that generalizes.
Minutes per model instead of the hours a decode of every set takes, and per layer kind, so it can say *where* a
fit stops transferring; it does not say what the errors do downstream (bench_stop_margins and the decoded damage
do).

    python benchmarks/bench_layer_error.py --model tiny.en --system "RTN Q4_0=runs/tiny_rtn.q" \\
        --system "GPTQ Q4_0=runs/tiny_gptq.q" --data ../shared/data/austen-tts-calib \\
        --data ../shared/data/foldoc-tts-dev --data ../shared/data/uqm-voice-dev --limit 64 \\
        --out benchmarks/results/layer_error_tiny_q4_0.json

--limit N takes a seeded random subset of N utterances per set (the same for every system). Only numbers are
stored (no transcripts), so evaluation-only sets may be published.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (RunMeta, add_common_args, ensure_tarq_importable, fmt_num, markdown_table,  # noqa: E402
                     pyplot, save_and_report, save_plot, subset)

N_BOOT = 2000
ALL = "all Linears"


def parse_system(text: str) -> tuple[str, str]:
    label, sep, model = text.partition("=")
    if not sep or not label or not model:
        raise argparse.ArgumentTypeError(f"--system {text!r}: expected LABEL=MODEL")
    return label, model


def load_systems(model: str, systems: dict[str, str]):
    """The FP model, its adapter, the quantized weight names and each system's dequantized weights."""
    from tarq.models import load_model
    from tarq.models.adapter import get_adapter

    try:
        fp = load_model(model)
    except (OSError, ValueError) as e:
        raise SystemExit(f"bench_layer_error: {model}: {e}") from None
    if fp.family != "whisper":
        raise SystemExit(f"bench_layer_error: {model}: the layer kinds and encoder frames are Whisper's; "
                         f"this is a {fp.family} model")
    adapter = get_adapter(fp.family)
    names = [w for b in adapter.blocks(fp.model) for st in b.stages for g in st.groups for w in g.weights]
    weights = {}
    for label, spec in systems.items():
        try:
            q = load_model(spec)
        except (OSError, ValueError) as e:
            raise SystemExit(f"bench_layer_error: {spec}: {e}") from None
        params = dict(q.model.named_parameters(remove_duplicate=False))
        missing = [n for n in names if n not in params or params[n].shape != fp.model.get_parameter(n).shape]
        if missing:
            raise SystemExit(f"bench_layer_error: {spec}: not a quantization of {model} (no {missing[0]} of its "
                             f"shape)")
        weights[label] = {n: params[n].detach().float() for n in names}
    return fp, adapter, weights


def measure(fp, adapter, weights: dict, datasets: dict[str, list], limit_note: str) -> tuple[dict, dict]:
    """({set: tarq.eval.layer_error.LayerErrors}, {set: ids of the clips over 30 s left out})."""
    from tarq.calib.driver import WINDOW_SAMPLES
    from tarq.data.audio import load_audio
    from tarq.eval.layer_error import layer_errors
    from tarq.lexicon import DEFAULT_ZIPF_THRESHOLD

    out, skipped = {}, {}
    for name, utts in datasets.items():
        samples = []
        for u in utts:
            try:
                audio = load_audio(u.audio)
                if audio.shape[0] > WINDOW_SAMPLES:   # one forced transcript cannot be split without an alignment
                    skipped.setdefault(name, []).append(u.id)
                    continue
                samples.append(adapter.prepare_sample(fp, u.id, audio, u.text,
                                                      zipf_threshold=DEFAULT_ZIPF_THRESHOLD, tag_by="target"))
            except (OSError, ValueError) as e:
                raise SystemExit(f"bench_layer_error: {name}: {e}") from None
        if skipped.get(name):
            print(f"  {name}: {len(skipped[name])} clip(s) over Whisper's 30-s window left out", file=sys.stderr)
        if not samples:
            raise SystemExit(f"bench_layer_error: {name}: no utterance fits Whisper's 30-s window")

        def progress(k, n=len(samples), name=name):
            if k % 25 == 0 or k == n:
                print(f"  {name}: {k}/{n}{limit_note}", file=sys.stderr, flush=True)

        out[name] = layer_errors(fp, adapter, samples, weights, progress)
    return out, skipped


def per_linear_sums(measured: dict) -> dict:
    """What the result file keeps of the measurement: ids, and per Linear the set's Σ_u e_u of each system and
    Σ_u ‖W x‖² (the per-utterance arrays behind the CIs are not stored)."""
    return {name: {"ids": r.ids, "linears": r.linears, "signal": r.signal.sum(axis=1).tolist(),
                   "errors": {k: v.sum(axis=1).tolist() for k, v in r.errors.items()}}
            for name, r in measured.items()}


def summarise(measured: dict, reference: str, versus: tuple[str, ...] = ()) -> dict:
    """Per set (measured: set -> tarq.eval.layer_error.LayerErrors): each system's relative error level and its
    error ratio to the reference, per kind and overall; with ``versus``, also its ratio to each of those systems
    (``ratio_vs``: paired over the same utterances, e.g. an option against the same method without it)."""
    from tarq.eval.layer_error import linear_kind, relative_error

    summary = {}
    for name, rec in measured.items():
        kinds: dict[str, list[int]] = {}
        for i, n in enumerate(rec.linears):
            kinds.setdefault(linear_kind(n), []).append(i)
        kinds[ALL] = list(range(len(rec.linears)))
        signal = rec.signal
        per = {}
        for label, err in rec.errors.items():
            row = {"rel_err": {k: relative_error(err[idx], signal[idx]) for k, idx in kinds.items()}}
            if label != reference:
                row["ratio"] = _ratios(err, rec.errors[reference], kinds)
            vs = {v: _ratios(err, rec.errors[v], kinds) for v in versus if v not in (label, reference)}
            if vs:
                row["ratio_vs"] = vs
            per[label] = row
        summary[name] = {"kinds": list(kinds), "systems": per}
    return summary


def _ratios(err, base, kinds: dict[str, list[int]]) -> dict:
    from tarq.eval.layer_error import geomean_error_ratio

    out = {}
    for k, idx in kinds.items():
        r = geomean_error_ratio(err[idx], base[idx], n_boot=N_BOOT)
        out[k] = None if r is None else r.__dict__
    return out


def _ratio_table(res: dict, label: str, pick) -> str:
    rows = []
    for k in res["summary"][res["sets"][0]]["kinds"]:
        cells = []
        for s in res["sets"]:
            r = pick(res["summary"][s]["systems"][label]).get(k)
            cells.append("–" if r is None else f"{r['ratio']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]")
        rows.append([k, *cells])
    return markdown_table(["Linears", *res["sets"]], rows, "l" + "r" * len(res["sets"]))


def render_markdown(res: dict) -> str:
    ref = res["reference"]
    parts = [f"Per-layer weight error on each set's own inputs (FP model, reference transcripts forced), relative "
             f"to {ref}: geometric mean over the Linears of a kind of Σ‖ΔW x‖² (system) / Σ‖ΔW x‖² ({ref}), with a "
             f"bootstrap 95 % CI over utterances (< 1: the system's weights are closer to the FP ones where this "
             f"set's activations point). Encoder rows: frames covering audio.", ""]
    systems = [k for k in res["systems"] if k != ref]
    for label in systems:
        parts += [f"{label} / {ref}:", "", _ratio_table(res, label, lambda row: row["ratio"]), ""]
    for v in res.get("versus", []):
        for label in res["systems"]:
            if label not in (v, ref):   # the reference's own ratios are the inverse of the tables above
                parts += [f"{label} / {v} (paired over the same utterances):", "",
                          _ratio_table(res, label, lambda row, v=v: row.get("ratio_vs", {}).get(v, {})), ""]
    rows = []
    for label in res["systems"]:
        rows.append([label, *(fmt_num(100 * (res["summary"][s]["systems"][label]["rel_err"][ALL] or 0), 3)
                              for s in res["sets"])])
    parts += ["Relative error level, all Linears (geometric mean of Σ‖ΔW x‖² / Σ‖W x‖², %):", "",
              markdown_table(["system", *res["sets"]], rows, "l" + "r" * len(res["sets"])), ""]
    meta = res["meta"]
    parts.append(f"Measured {meta['finished']} on {meta['machine'].get('cpu')} ({meta['wall_s']:.0f} s, tarq "
                 f"{(meta['machine'].get('git_commit') or '?')[:7]}); utterances per set: "
                 + ", ".join(f"{s} {n}" for s, n in res["n_utts"].items())
                 + "".join(f" ({len(v)} clip(s) of {s} over 30 s left out)" for s, v in res.get("skipped_over_30s",
                                                                                               {}).items()) + ".")
    return "\n".join(parts)


def plot(res: dict, path: Path) -> None:
    """The all-Linears ratio to the reference per set, one line per system (where the gain fades)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(res["sets"]), 3.6))
    x = list(range(len(res["sets"])))
    for i, label in enumerate(k for k in res["systems"] if k != res["reference"]):
        rs = [res["summary"][s]["systems"][label]["ratio"][ALL] for s in res["sets"]]
        y = [r["ratio"] for r in rs]
        err = [[r["ratio"] - r["lo"] for r in rs], [r["hi"] - r["ratio"] for r in rs]]
        ax.errorbar(x, y, yerr=err, fmt="o-", color=f"C{i}", capsize=3, label=label)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(x, res["sets"], rotation=20, fontsize=8)
    ax.set_ylabel(f"layer error / {res['reference']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_plot(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the FP model the systems quantize (alias or directory)")
    p.add_argument("--system", action="append", required=True, type=parse_system,
                   help="LABEL=MODEL, a tarq quantized-model directory (the first is the reference)")
    p.add_argument("--data", action="append", required=True, help="a data set (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="seeded random N utterances of each set")
    p.add_argument("--versus", action="append", default=[], metavar="LABEL",
                   help="also give every other system's error ratio to this --system (repeatable)")
    add_common_args(p, "layer_error.json")
    args = p.parse_args(argv)
    ensure_tarq_importable()
    from tarq.data import dataset_name, load_dataset, require_transcripts

    systems = dict(args.system)
    if len(systems) != len(args.system) or len(systems) < 2:
        raise SystemExit("bench_layer_error: give at least two --system entries with distinct labels")
    unknown = [v for v in args.versus if v not in systems]
    if unknown:
        raise SystemExit(f"bench_layer_error: --versus {unknown[0]!r} is not a --system label")
    datasets = {}
    for d in args.data:
        try:
            utts = load_dataset(d)
            require_transcripts(utts, d)
        except (OSError, ValueError) as e:
            raise SystemExit(f"bench_layer_error: {e}") from None
        datasets[dataset_name(d)] = subset(utts, args.limit)
    if args.dry_run:
        print(f"systems: {systems}\nsets: {[(k, len(v)) for k, v in datasets.items()]}\nwould write {args.out}")
        return 0
    meta = RunMeta.start("bench_layer_error")
    fp, adapter, weights = load_systems(args.model, systems)
    note = f" (limit {args.limit})" if args.limit else ""
    measured, skipped = measure(fp, adapter, weights, datasets, note)
    reference = next(iter(systems))
    res = {"model": args.model, "reference": reference, "versus": args.versus, "sets": list(datasets),
           "limit": args.limit, "n_utts": {k: len(measured[k].ids) for k in datasets}, "skipped_over_30s": skipped,
           "systems": {label: {"model": spec} for label, spec in systems.items()},
           "summary": summarise(measured, reference, tuple(args.versus)), "per_linear": per_linear_sums(measured),
           "meta": meta.finish()}
    save_and_report(args.out, res, plot, render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
