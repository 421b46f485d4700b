"""``tarq export``: write a quantized directory (or a float-Whisper baseline) as a runtime's model file.

The targets come from the model family's registry entry (``tarq.models.family``): Whisper -> whisper.cpp's legacy
``.bin``; Qwen3-ASR -> GGUF in CrispASR's or qwen3-asr.cpp's dialect; Moonshine -> GGUF in CrispASR's dialect
(+ ``tokenizer.bin`` beside it). ``--dialect generic`` is tarq's own archival GGUF, which no ASR runtime loads.
"""
from __future__ import annotations

import argparse
from pathlib import Path

QTYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export to whisper.cpp (.bin) or a runtime's GGUF dialect",
        description="Export a tarq quantized-model directory bit-exactly (codes and scales verbatim) to a runtime's "
                    "file, or a float Whisper model (model spec) as F16/F32 or as whisper.cpp's own RTN "
                    "quantization (--rtn).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("source", help="quantized-model directory, or a Whisper model spec (tiny.en, base, HF/CT2 dir) "
                                  "together with --rtn/--f16/--f32")
    p.add_argument("--to", choices=["whisper.cpp", "gguf"], default=None,
                   help="output format (default: whisper.cpp for Whisper, gguf otherwise)")
    p.add_argument("--dialect", default=None,
                   help="GGUF dialect: crispasr (Qwen3-ASR, Moonshine), qwen3-asr.cpp (Qwen3-ASR), or generic "
                        "(tarq's own layout; no runtime loads it). Default: the family's first runtime dialect")
    p.add_argument("--out", "-o", required=True, type=Path, help="output file")
    p.add_argument("--type", choices=QTYPES + ["f32"], default=None,
                   help="ggml block type for a quantized directory (default: each tensor's own format; q4_0 codes "
                        "also fit q4_1/q5_0/q5_1/q8_0 exactly; GGUF dialects take q4_0/q5_0/q8_0, or f32: the exact "
                        "dequantized weights, a diagnostic file for comparing a runtime's arithmetic)")
    base = p.add_mutually_exclusive_group()
    base.add_argument("--rtn", choices=QTYPES, default=None,
                      help="float Whisper model only: quantize like whisper.cpp's quantize tool (bit-exact clone)")
    base.add_argument("--f16", action="store_true", help="float Whisper model only: F16 weights")
    base.add_argument("--f32", action="store_true", help="float Whisper model only: F32 weights (whisper.cpp 1.8.5 "
                                                         "CPU cannot run these; CrispASR can)")
    p.set_defaults(func=run)


def _rtn_checkpoint(spec: str, fmt: str):
    """An in-memory QuantizedCheckpoint of the whisper.cpp RTN baseline (for --to gguf --dialect generic --rtn)."""
    from ..export import whisper_names as names
    from ..export.whisper_export import rtn_quantized_tensors
    from ..formats import get_format
    from ..models import load_model
    from ..qmodel import QuantizedCheckpoint

    lm = load_model(spec)
    if lm.family != "whisper":
        raise ValueError(f"{spec}: --rtn builds whisper.cpp's baseline for Whisper only; for {lm.family} run "
                         f"`tarq quantize {spec} --method rtn` and export that directory")
    sd = lm.model.state_dict()
    q = rtn_quantized_tensors(sd, fmt)
    floats = {k: v.float() for k, v in sd.items() if k not in q and names.hf_to_cpp(k) is not None}
    fmt_ = get_format(fmt, 32)
    meta = {"family": lm.family, "format": fmt_.name, "group_size": 32, "method": "ggml_rtn", "source_model": spec}
    return QuantizedCheckpoint(Path(spec), meta, lm.model.config.to_dict(), q, floats)


def _target(family_name: str, to: str | None, dialect: str | None):
    from ..models import get_family

    fam = get_family(family_name)
    if to is None:
        to = "gguf" if dialect is not None else fam.export_targets[0].to
    return fam.export_target(to, dialect)


def run(args) -> int:
    from ..qmodel import is_quantized_dir, load_quantized_dir

    is_qdir = is_quantized_dir(args.source)
    float_type = "f16" if args.f16 else "f32" if args.f32 else None
    if is_qdir and (args.rtn or float_type):
        raise ValueError(f"{args.source}: is a quantized directory; --rtn/--f16/--f32 apply to float models")
    if not is_qdir and not (args.rtn or float_type):
        if Path(args.source).is_dir() and not (Path(args.source) / "config.json").exists():
            raise FileNotFoundError(f"{args.source}: neither a tarq quantized directory nor a model directory")
        raise ValueError(f"{args.source}: not a quantized directory; for a float model give --rtn TYPE or --f16")
    if is_qdir:
        ckpt = load_quantized_dir(args.source)
        target = _target(ckpt.family, args.to, args.dialect)
        out = target.write(ckpt, args.out, qtype=args.type)
    elif (args.to or "whisper.cpp") == "whisper.cpp" and args.dialect is None:
        from ..export.whisper_export import export_whisper_cpp

        if args.type:
            raise ValueError("--type applies to quantized directories; use --rtn TYPE for a float model")
        out = export_whisper_cpp(args.source, args.out, rtn=args.rtn, float_type=float_type)
    else:
        if float_type:
            raise ValueError("GGUF export of float models is not supported; use --rtn q4_0|q8_0 or a quantized dir")
        if args.rtn not in ("q4_0", "q8_0"):
            raise ValueError(f"GGUF --rtn supports q4_0 and q8_0, not {args.rtn}")
        ckpt = _rtn_checkpoint(args.source, args.rtn)
        out = _target(ckpt.family, "gguf", args.dialect).write(ckpt, args.out, qtype=args.type)
    from ..export.integrity import write_checksum

    side = write_checksum(out)   # checked by tarq eval/transcribe --verify (and by sha256sum -c)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB; checksum {side.name})")
    return 0
