"""The ``tarq`` command. Each subcommand lives in its own module exposing ``register(subparsers)``."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> module under tarq.cli; modules are imported lazily so `tarq --help` stays fast
SUBCOMMANDS = {
    "quantize": "quantize",
    "eval": "evaluate",
    "export": "export",
    "transcribe": "transcribe",
    "demo": "demo",
    "plot": "plot",
    "grid": "grid",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tarq", description="Tail-aware post-training quantization for ASR models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(f"tarq.cli.{module}")
        except ModuleNotFoundError as e:
            if e.name == f"tarq.cli.{module}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as e:  # user errors: one clear line, no traceback
        if args.verbose:
            raise
        print(f"tarq {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
