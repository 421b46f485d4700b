"""``tarq transcribe``: run an exported model on audio files in a real ggml runtime (whisper.cpp or CrispASR)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    from ._choices import policies, runtimes

    p = subparsers.add_parser(
        "transcribe", help="transcribe audio with an exported .bin / GGUF in whisper.cpp or CrispASR",
        description="Prints PATH<TAB>TEXT per audio file. The model file is validated first; the runtime runs in "
                    "worker processes, so a runtime crash is reported as an error naming the file. "
                    "Policies: docs/evaluation.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", type=Path, help="model file (tarq export --to whisper.cpp, or a GGUF for CrispASR)")
    p.add_argument("audio", nargs="+", type=Path, help="audio files (any rate/channels soundfile reads)")
    p.add_argument("--backend", choices=runtimes(), default=None,
                   help="runtime (default: whisper.cpp for a .bin, crispasr for GGUF)")
    p.add_argument("--policy", choices=policies(), default="greedy",
                   help="greedy (no temperature fallback) or default (whisper-cli's beam 5 + fallback)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads in total")
    p.add_argument("--workers", type=int, default=None, help="runtime processes sharing --threads "
                                                             "(default: one per thread, at most one per file)")
    p.add_argument("--language", default="en")
    p.add_argument("--verify", action="store_true", help="check MODEL against MODEL.sha256 (written by tarq export)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import load_audio
    from ..eval.backends import get_backend
    from .evaluate import _auto_backend

    if args.threads < 1 or (args.workers is not None and args.workers < 1):
        raise ValueError("--threads and --workers must be at least 1")
    backend_name = args.backend or _auto_backend(str(args.model))
    if backend_name == "torch":
        backend_name = "whisper.cpp"
    audios = [load_audio(p) for p in args.audio]    # all audio errors before the model is loaded
    with get_backend(backend_name, args.model, threads=args.threads, workers=args.workers, policy=args.policy,
                     language=args.language, verify=args.verify) as backend:
        texts = backend.transcribe(audios, names=[str(p) for p in args.audio])
    for p, t in zip(args.audio, texts):   # an empty text of non-silent audio was reported by the backend
        print(f"{p}\t{t}")
    return 0
