"""``tarq plot``: grouped bars (method x metric) from saved ``tarq eval`` result files.

Results scored against a reference system (``tarq eval --reference``) lead with damage (net and rare net damage,
with their paired 95 % CIs as error bars); WER and rare-WER follow."""
from __future__ import annotations

import math
from pathlib import Path

from .._atomic import atomic_path

METRIC_LABELS = {"damage": "damage", "rare_damage": "rare damage", "wer": "WER", "rare_wer": "rare-WER",
                 "common_wer": "common-WER", "numeral_wer": "numeral-WER"}
DAMAGE_METRICS = {"damage": "net_rate", "rare_damage": "net_rare_rate"}


def register(subparsers) -> None:
    p = subparsers.add_parser("plot", help="bar chart of methods x metrics from tarq eval result JSON files")
    p.add_argument("results", nargs="+", type=Path, metavar="RESULT.json")
    p.add_argument("--out", type=Path, required=True, help="image to write (.png, .pdf, .svg)")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated, from {','.join(METRIC_LABELS)} (default damage,rare_damage,wer,rare_wer "
                        "when every result has a reference system, else wer,rare_wer,common_wer)")
    p.add_argument("--dataset", default="mean",
                   help="a dataset name, or 'mean' over datasets (default; damage is pooled over datasets)")
    p.add_argument("--title", default=None)
    p.set_defaults(func=run)


def collect(results, metrics: list[str], dataset: str):
    """(labels, values[method][metric] in percent, errors[method][metric] = (below, above) or None)."""
    labels, values, errors = [], [], []
    for r in results:
        per, pooled = r.damage_blocks()
        if dataset == "mean":
            rates = r.mean()
            block = pooled
        else:
            d = r.dataset(dataset)
            if d is None:
                raise ValueError(f"result {r.label!r} has no dataset {dataset!r} "
                                 f"(has: {', '.join(x.name for x in r.datasets)})")
            rates = {m: getattr(d.scores, m) for m in METRIC_LABELS if m not in DAMAGE_METRICS}
            block = per.get(dataset)
        vals, errs = [], []
        for m in metrics:
            if m in DAMAGE_METRICS:
                if block is None:
                    raise ValueError(f"result {r.label!r} has no damage (score it with tarq eval --reference)")
                v = block["damage"][DAMAGE_METRICS[m]]
                lo, hi = block["damage"][DAMAGE_METRICS[m] + "_ci"]
                ok = v is not None and lo is not None
                vals.append(100 * v if ok else math.nan)
                errs.append((100 * (v - lo), 100 * (hi - v)) if ok else None)
            else:
                v = rates[m]
                vals.append(math.nan if v is None else 100 * v)
                errs.append(None)
        labels.append(r.label)
        values.append(vals)
        errors.append(errs)
    return labels, values, errors


def draw(labels: list[str], values: list[list[float]], metrics: list[str], out: Path, title: str | None,
         errors: list[list] | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_methods = len(labels)
    width = 0.8 / max(1, n_methods)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(metrics) * max(1, n_methods) ** 0.5), 3.6))
    for j, (label, vals) in enumerate(zip(labels, values)):
        xs = [i + (j - (n_methods - 1) / 2) * width for i in range(len(metrics))]
        errs = (errors or [[None] * len(vals)] * n_methods)[j]
        yerr = None
        if any(e is not None for e in errs):
            yerr = [[(e or (0, 0))[0] for e in errs], [(e or (0, 0))[1] for e in errs]]
        bars = ax.bar(xs, [0 if math.isnan(v) else v for v in vals], width, label=label, yerr=yerr, capsize=2)
        ax.bar_label(bars, labels=["n/a" if math.isnan(v) else f"{v:.1f}" for v in vals], fontsize=7, padding=1)
    ax.set_xticks(range(len(metrics)), [METRIC_LABELS[m] for m in metrics])
    ax.set_ylabel("% of reference words (damage: vs the reference system, 95 % CI)"
                  if any(m in DAMAGE_METRICS for m in metrics) else "error rate (%)")
    ax.axhline(0, color="black", linewidth=0.5)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(out, suffix=out.suffix or ".png") as tmp:   # savefig picks the format from the suffix
            fig.savefig(tmp, dpi=150)
    finally:
        plt.close(fig)
    return out


def run(args) -> int:
    from tarq.eval import load_result

    results = [load_result(p) for p in args.results]
    if args.metrics is None:
        with_damage = all(r.damage_blocks()[1] is not None for r in results)
        metrics = ["damage", "rare_damage", "wer", "rare_wer"] if with_damage else ["wer", "rare_wer", "common_wer"]
    else:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRIC_LABELS]
    if unknown or not metrics:
        raise ValueError(f"--metrics: unknown {', '.join(unknown) or '(empty)'}; "
                         f"choose from {', '.join(METRIC_LABELS)}")
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise ValueError("tarq plot needs matplotlib (pip install 'tarq[bench]')") from None
    labels, values, errors = collect(results, metrics, args.dataset)
    policies = sorted({r.policy for r in results})
    title = args.title or (f"{'' if args.dataset == 'mean' else args.dataset + ', '}policy {', '.join(policies)}")
    draw(labels, values, metrics, args.out, title, errors)
    print(f"wrote {args.out}")
    return 0
