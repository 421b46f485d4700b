"""``tarq export``: write a quantized directory (or a float-Whisper baseline) as a runtime's model file.

The targets come from the model family's registry entry (``tarq.models.family``): Whisper -> whisper.cpp's legacy
``.bin``; Qwen3-ASR -> GGUF in CrispASR's or qwen3-asr.cpp's dialect; Moonshine -> GGUF in CrispASR's dialect
(+ ``tokenizer.bin`` beside it). ``--dialect generic`` is tarq's own archival GGUF, which no ASR runtime loads.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    from ..ggml import QUANT_TYPES

    qtypes = list(QUANT_TYPES)
    p = subparsers.add_parser(
        "export", help="export to whisper.cpp (.bin) or a runtime's GGUF dialect",
        description="Export a tarq quantized-model directory bit-exactly (ggml bytes verbatim) to a runtime's "
                    "file, or a float Whisper model (model spec) as F16/F32 or as whisper.cpp's own RTN "
                    "quantization (--rtn, optionally importance-weighted with --imatrix).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("source", help="quantized-model directory, or a Whisper model spec (tiny.en, base, HF/CT2 dir) "
                                  "together with --rtn/--f16/--f32")
    p.add_argument("--to", choices=["whisper.cpp", "gguf"], default=None,
                   help="output format (default: whisper.cpp for Whisper, gguf otherwise)")
    p.add_argument("--dialect", default=None,
                   help="GGUF dialect: crispasr (Qwen3-ASR, Moonshine), qwen3-asr.cpp (Qwen3-ASR), or generic "
                        "(tarq's own layout; no runtime loads it). Default: the family's first runtime dialect")
    p.add_argument("--out", "-o", required=True, type=Path, help="output file")
    p.add_argument("--type", choices=qtypes + ["f32"], default=None,
                   help="store a quantized directory's tensors in this container type (default: their own; q4_0 "
                        "data also fits q4_1/q5_0/q5_1/q8_0 exactly; f32: the exact dequantized weights, a "
                        "diagnostic file for comparing a runtime's arithmetic)")
    base = p.add_mutually_exclusive_group()
    base.add_argument("--rtn", choices=qtypes, default=None,
                      help="float Whisper model only: quantize like whisper.cpp's quantize tool (ggml's quantizer, "
                           "bit-exact)")
    base.add_argument("--f16", action="store_true", help="float Whisper model only: F16 weights")
    base.add_argument("--f32", action="store_true", help="float Whisper model only: F32 weights (whisper.cpp 1.8.5 "
                                                         "CPU cannot run these; CrispASR can)")
    p.add_argument("--imatrix", type=Path, default=None, metavar="CALIB",
                   help="with --rtn: ggml's importance-weighted quantization, importance = per-column mean x^2 of "
                        "each weight's inputs over CALIB audio on the float model (llama.cpp/CrispASR imatrix)")
    p.add_argument("--n-calib", type=int, default=128, help="--imatrix: calibration utterances (seeded subset)")
    p.add_argument("--seed", type=int, default=0, help="--imatrix: subset seed")
    p.add_argument("--threads", type=int, default=2, help="--imatrix: torch and native threads")
    p.set_defaults(func=run)


def _rtn_checkpoint(spec: str, fmt: str):
    """An in-memory QuantizedCheckpoint of the whisper.cpp RTN baseline (for --to gguf --dialect generic --rtn)."""
    from ..export import whisper_names as names
    from ..export.whisper_export import rtn_quantized_tensors
    from ..models import load_model
    from ..qmodel import QuantizedCheckpoint

    lm = load_model(spec)
    if lm.family != "whisper":
        raise ValueError(f"{spec}: --rtn builds whisper.cpp's baseline for Whisper only; for {lm.family} run "
                         f"`tarq quantize {spec} --method rtn` and export that directory")
    sd = lm.model.state_dict()
    q = rtn_quantized_tensors(sd, fmt)
    floats = {k: v.float() for k, v in sd.items() if k not in q and names.hf_to_cpp(k) is not None}
    meta = {"family": lm.family, "format": fmt, "group_size": None, "method": "ggml_rtn", "source_model": spec}
    return QuantizedCheckpoint(Path(spec), meta, lm.model.config.to_dict(), q, floats)


def _target(family_name: str, to: str | None, dialect: str | None):
    from ..models import get_family

    fam = get_family(family_name)
    if to is None:
        to = "gguf" if dialect is not None else fam.export_targets[0].to
    return fam.export_target(to, dialect)


def _imatrix_dir(args, workdir: Path) -> Path:
    """The imatrix-RTN baseline as a quantized directory: the calibration pipeline with the ``imatrix`` method
    (statistics on the float model, ggml_quantize_chunk with per-column mean x^2 as quant_weights)."""
    from ..calib.driver import quantize_loaded_model
    from ..calib.pipeline import CalibConfig
    from ..data import load_dataset
    from ..ggml import TypePlan
    from ..methods import get_method
    from ..models import load_model

    if not args.imatrix.exists():
        raise FileNotFoundError(f"{args.imatrix}: calibration set not found")
    utterances = load_dataset(args.imatrix)
    if not utterances:
        raise ValueError(f"{args.imatrix}: no utterances found")
    cfg = CalibConfig(n_calib=args.n_calib, seed=args.seed, threads=args.threads, progress=False)
    return quantize_loaded_model(load_model(args.source), get_method("imatrix"), TypePlan(args.rtn), utterances,
                                 workdir / "imatrix", cfg, calib_name=str(args.imatrix))


def run(args) -> int:
    from ..qmodel import is_quantized_dir

    is_qdir = is_quantized_dir(args.source)
    float_type = "f16" if args.f16 else "f32" if args.f32 else None
    if is_qdir and (args.rtn or float_type):
        raise ValueError(f"{args.source}: is a quantized directory; --rtn/--f16/--f32 apply to float models")
    if not is_qdir and not (args.rtn or float_type):
        if Path(args.source).is_dir() and not (Path(args.source) / "config.json").exists():
            raise FileNotFoundError(f"{args.source}: neither a tarq quantized directory nor a model directory")
        raise ValueError(f"{args.source}: not a quantized directory; for a float model give --rtn TYPE or --f16")
    if args.imatrix is not None and not args.rtn:
        raise ValueError("--imatrix CALIB goes with --rtn TYPE (importance-weighted RTN of a float model)")
    if is_qdir:
        out = _export_dir(args.source, args)
    elif args.imatrix is not None:
        import shutil
        import tempfile

        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".tarq-imatrix-", dir=args.out.parent) as tmp:
            qdir = _imatrix_dir(args, Path(tmp))
            out = _export_dir(qdir, args)
            shutil.copyfile(qdir / "report.json", str(out) + ".report.json")
    elif (args.to or "whisper.cpp") == "whisper.cpp" and args.dialect is None:
        from ..export.whisper_export import export_whisper_cpp

        if args.type:
            raise ValueError("--type applies to quantized directories; use --rtn TYPE for a float model")
        out = export_whisper_cpp(args.source, args.out, rtn=args.rtn, float_type=float_type)
    else:
        if float_type:
            raise ValueError("GGUF export of float models is not supported; use --rtn TYPE or a quantized dir")
        ckpt = _rtn_checkpoint(args.source, args.rtn)
        out = _target(ckpt.family, "gguf", args.dialect).write(ckpt, args.out, qtype=args.type)
    from ..export.integrity import write_checksum

    side = write_checksum(out)   # checked by tarq eval/transcribe --verify (and by sha256sum -c)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB; checksum {side.name})")
    return 0


def _export_dir(qdir, args) -> Path:
    """A quantized directory to the target its family registers for --to/--dialect."""
    from ..qmodel import load_quantized_dir

    ckpt = load_quantized_dir(qdir)
    return _target(ckpt.family, args.to, args.dialect).write(ckpt, args.out, qtype=args.type)
