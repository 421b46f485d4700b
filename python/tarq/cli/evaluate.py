"""``tarq eval``: decode datasets with a backend (or re-score a saved result), print tables, write result JSON,
score damage against a reference system's result, and compare against another result with paired bootstrap CIs.
Decodes go through the decode cache (tarq.eval.cache) unless --no-cache."""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

BACKENDS = ("torch", "whisper.cpp", "crispasr")
COMPARE_METRICS = ("wer", "rare_wer")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="WER / rare-WER of a model on datasets (torch, whisper.cpp or CrispASR backend)",
        description="Decode DATA with MODEL and report pooled WER, rare-WER (Zipf < k), common-WER and "
                    "numeral-WER after Whisper's English normaliser. See docs/evaluation.md.")
    p.add_argument("model", nargs="?", metavar="MODEL_OR_DIR_OR_FILE",
                   help="model alias (tiny.en), model/quantized directory, whisper.cpp .bin or GGUF file")
    p.add_argument("--data", action="append", default=[], metavar="DATA",
                   help="dataset (manifest.jsonl/.tsv, its folder, LibriSpeech tree, audio folder); repeatable")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="decoder (default: whisper.cpp for .bin, crispasr for .gguf, else torch)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the result (with per-utterance hypotheses) here")
    p.add_argument("--reference", type=Path, metavar="REF.json",
                   help="result of the reference system (normally F16 in the same runtime) on the same utterances: "
                        "report damage (words lost / gained against it) with paired CIs, and failures paired")
    p.add_argument("--compare", type=Path, action="append", default=[], metavar="OTHER.json",
                   help="paired bootstrap of this result minus OTHER (matched by dataset + utterance id); with "
                        "--reference also the difference of their damage")
    p.add_argument("--rescore", type=Path, metavar="RESULT.json",
                   help="re-score a saved result instead of decoding (no MODEL/--data needed)")
    p.add_argument("--limit", type=int, help="first N utterances of each dataset")
    p.add_argument("--batch-size", type=int, default=8, help="torch backend batch size (default 8)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the decoder (default 2)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="torch backend token limit per utterance")
    p.add_argument("-k", "--zipf", type=float, default=None,
                   help="rare threshold: reference words with Zipf frequency below this are rare (default 3.0)")
    p.add_argument("--insertions", choices=("left", "adjacent-rare", "none"), default=None,
                   help="which reference word owns an insertion for rare-WER (default left; docs/evaluation.md)")
    p.add_argument("--label", help="system name in tables and plots (default: the model)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", help="print no tables (write --json only)")
    p.add_argument("--no-cache", action="store_true", help="decode everything; do not read or write the decode cache")
    p.add_argument("--cache-dir", type=Path, metavar="DIR",
                   help="decode cache root (default $TARQ_CACHE_DIR, else ~/.cache/tarq); entries under DIR/decodes")
    p.add_argument("--runtime-fallback", action="store_true",
                   help="whisper.cpp backend: keep the runtime's temperature fallback (its out-of-the-box policy); "
                        "default is pure greedy, the same policy as the torch backend")
    p.set_defaults(func=run)


def _auto_backend(model: str) -> str:
    suffix = Path(model).suffix.lower()
    return {".bin": "whisper.cpp", ".gguf": "crispasr"}.get(suffix, "torch")


def _decode(args):
    from tarq.eval import DEFAULT_ZIPF_THRESHOLD, get_backend
    from tarq.eval.runner import evaluate

    if not args.model:
        raise ValueError("give MODEL_OR_DIR_OR_FILE (or --rescore RESULT.json)")
    if not args.data:
        raise ValueError("give at least one --data DATASET")
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        raise ValueError("--batch-size and --limit must be positive")
    name = args.backend or _auto_backend(args.model)
    opts = {"threads": args.threads}
    if name == "torch":
        opts.update(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    elif name == "whisper.cpp":
        opts.update(temperature_fallback=args.runtime_fallback)
    backend = get_backend(name, args.model, **opts)
    k = DEFAULT_ZIPF_THRESHOLD if args.zipf is None else args.zipf
    cache = None
    if not args.no_cache:
        from tarq.eval.cache import DecodeCache
        cache = DecodeCache(args.cache_dir)
    return evaluate(backend, args.data, limit=args.limit, k=k, label=args.label or Path(args.model).name,
                    progress=not args.no_progress, insertion_rule=args.insertions or "left", cache=cache)


def compare(a, b, n_boot: int = 1000, seed: int = 0, metrics=COMPARE_METRICS):
    """[(dataset or "mean", BootstrapResult)] for a - b on shared utterances (tarq.eval.results.compare_results)."""
    from tarq.eval.results import compare_results

    return compare_results(a, b, n_boot=n_boot, seed=seed, metrics=metrics)


def run(args) -> int:
    from rich.console import Console

    from tarq.eval import load_result, save_result
    from tarq.eval.damage import compare_damage
    from tarq.eval.report import comparison_table, result_tables

    console = Console()
    reference = load_result(args.reference) if args.reference else None   # fail before decoding
    if args.rescore:
        if args.data or args.model:
            log.warning("--rescore: MODEL and --data are ignored (nothing is decoded)")
        result = load_result(args.rescore, k=args.zipf, insertion_rule=args.insertions)
        if args.label:
            result.system["label"] = args.label
    else:
        result = _decode(args)
    if reference is not None:
        result.attach_reference(reference, path=args.reference, n_boot=args.bootstrap, seed=args.seed)
    if not args.quiet:
        for table in result_tables(result):
            console.print(table)
    if args.json:
        save_result(result, args.json)
        console.print(f"wrote {args.json}")
    for other_path in args.compare:
        other = load_result(other_path, k=result.k, insertion_rule=result.insertion_rule)
        rows = compare(result, other, n_boot=args.bootstrap, seed=args.seed)
        damage_rows = (compare_damage(result, other, reference, n_boot=args.bootstrap, seed=args.seed)
                       if reference is not None else None)
        console.print(comparison_table(result.label, other.label, rows, damage_rows, policy=result.policy))
    return 0
