"""``tarq split DATA --out DIR``: a seeded calibration / held-out evaluation split of one corpus (tarq.data.split)."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("split", help="split a corpus into a calibration part and a held-out evaluation part")
    p.add_argument("data", type=Path, help="corpus: manifest.jsonl/.tsv, LibriSpeech tree or folder with transcripts")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for NAME-calib/manifest.jsonl and NAME-eval/manifest.jsonl (audio is not copied)")
    p.add_argument("--calib-fraction", type=float, default=0.5, help="share of utterances for calibration (0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random partition (0)")
    p.add_argument("--name", default=None, help="NAME of the two parts (default: the corpus folder's name)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data.split import split_corpus

    r = split_corpus(args.data, args.out, args.calib_fraction, args.seed, args.name)
    print(f"calibration: {r['n_calib']} utterances -> {r['calib']}")
    print(f"evaluation:  {r['n_eval']} utterances -> {r['eval']}")
    return 0
