"""``tarq plot``: grouped bars (method x metric) from saved ``tarq eval`` result files."""
from __future__ import annotations

import math
from pathlib import Path

from .._atomic import atomic_path

METRIC_LABELS = {"wer": "WER", "rare_wer": "rare-WER", "common_wer": "common-WER", "numeral_wer": "numeral-WER"}


def register(subparsers) -> None:
    p = subparsers.add_parser("plot", help="bar chart of methods x metrics from tarq eval result JSON files")
    p.add_argument("results", nargs="+", type=Path, metavar="RESULT.json")
    p.add_argument("--out", type=Path, required=True, help="image to write (.png, .pdf, .svg)")
    p.add_argument("--metrics", default="wer,rare_wer,common_wer",
                   help=f"comma-separated, from {','.join(METRIC_LABELS)} (default wer,rare_wer,common_wer)")
    p.add_argument("--dataset", default="mean", help="a dataset name, or 'mean' over datasets (default)")
    p.add_argument("--title", default=None)
    p.set_defaults(func=run)


def collect(results, metrics: list[str], dataset: str) -> tuple[list[str], list[list[float]]]:
    """(labels, values[method][metric] in percent) for one dataset or the mean over datasets."""
    labels, values = [], []
    for r in results:
        if dataset == "mean":
            rates = r.mean()
        else:
            d = r.dataset(dataset)
            if d is None:
                raise ValueError(f"result {r.label!r} has no dataset {dataset!r} "
                                 f"(has: {', '.join(x.name for x in r.datasets)})")
            rates = {m: getattr(d.scores, m) for m in METRIC_LABELS}
        labels.append(r.label)
        values.append([100 * rates[m] for m in metrics])
    return labels, values


def draw(labels: list[str], values: list[list[float]], metrics: list[str], out: Path, title: str | None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_methods = len(labels)
    width = 0.8 / max(1, n_methods)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(metrics) * max(1, n_methods) ** 0.5), 3.6))
    for j, (label, vals) in enumerate(zip(labels, values)):
        xs = [i + (j - (n_methods - 1) / 2) * width for i in range(len(metrics))]
        bars = ax.bar(xs, [0 if math.isnan(v) else v for v in vals], width, label=label)
        ax.bar_label(bars, labels=["n/a" if math.isnan(v) else f"{v:.1f}" for v in vals], fontsize=7, padding=1)
    ax.set_xticks(range(len(metrics)), [METRIC_LABELS[m] for m in metrics])
    ax.set_ylabel("error rate (%)")
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

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRIC_LABELS]
    if unknown or not metrics:
        raise ValueError(f"--metrics: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(METRIC_LABELS)}")
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise ValueError("tarq plot needs matplotlib (pip install 'tarq[bench]')") from None
    results = [load_result(p) for p in args.results]
    labels, values = collect(results, metrics, args.dataset)
    draw(labels, values, metrics, args.out, args.title or (None if args.dataset == "mean" else args.dataset))
    print(f"wrote {args.out}")
    return 0
