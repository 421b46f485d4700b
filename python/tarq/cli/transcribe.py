"""``tarq transcribe``: run an exported whisper.cpp model on audio files with a real ggml runtime."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "transcribe", help="transcribe audio with an exported .bin in whisper.cpp or CrispASR",
        description="Greedy, no timestamps, whisper.cpp default decoding options. Prints PATH<TAB>TEXT per file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", type=Path, help="whisper.cpp model file (tarq export --to whisper.cpp)")
    p.add_argument("audio", nargs="+", type=Path, help="audio files (any rate/channels soundfile reads)")
    p.add_argument("--backend", choices=["whisper.cpp", "crispasr"], default="whisper.cpp")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--language", default="en")
    p.set_defaults(func=run)


def _load_audio(path: Path):
    try:
        from ..data import load_audio
    except ImportError:  # tarq.data not available: plain soundfile, 16 kHz mono only
        import numpy as np
        import soundfile as sf

        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such audio file")
        a, sr = sf.read(str(path), dtype="float32", always_2d=True)
        if sr != 16000:
            raise ValueError(f"{path}: sample rate {sr}, expected 16000")
        return np.ascontiguousarray(a.mean(axis=1))
    return load_audio(path)


def run(args) -> int:
    from ..export.runtimes import get_runtime

    transcribe = get_runtime(args.backend)
    audios = [_load_audio(p) for p in args.audio]
    texts = transcribe(args.model, audios, n_threads=args.threads, language=args.language)
    for p, t in zip(args.audio, texts):
        print(f"{p}\t{t}")
    return 0
