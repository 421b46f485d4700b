"""The ``tarq`` command. Each subcommand lives in its own module exposing ``register(subparsers)``."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import RuntimeCrash

# subcommand -> module under tarq.cli; modules are imported lazily so `tarq --help` stays fast
SUBCOMMANDS = {
    "quantize": "quantize",
    "eval": "evaluate",
    "export": "export",
    "transcribe": "transcribe",
    "demo": "demo",
    "plot": "plot",
    "grid": "grid",
    "split": "split",
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
    from .._numerics import invalid_mode_error

    bad_numerics = invalid_mode_error()   # read when tarq was imported; refuse rather than run under unasked numerics
    if bad_numerics:
        print(f"tarq: error: {bad_numerics}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (OSError, ValueError, RuntimeCrash) as e:  # bad input, a failed runtime: one clear line, no traceback
        if args.verbose:
            raise
        print(f"tarq {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"tarq {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    """The exception as one line; an OSError without the file in its text gets it (e.g. PermissionError)."""
    text = str(e)
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text = f"{e.filename}: {e.strerror or text}"
    elif isinstance(e, OSError) and e.filename and e.strerror and text.startswith("["):
        text = f"{e.filename}: {e.strerror}"
    return " ".join(text.split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
