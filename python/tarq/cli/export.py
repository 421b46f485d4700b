"""``tarq export``: write a quantized directory (or a float-model baseline) as whisper.cpp .bin or GGUF."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    from ..ggml import QUANT_TYPES

    qtypes = list(QUANT_TYPES)
    p = subparsers.add_parser(
        "export", help="export to whisper.cpp (.bin) or GGUF",
        description="Export a tarq quantized-model directory bit-exactly (ggml bytes verbatim), or a "
                    "float model (model spec) as F16/F32 or as whisper.cpp's own RTN quantization (--rtn).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("source", help="quantized-model directory, or a model spec (tiny.en, base, HF/CT2 dir) "
                                  "together with --rtn/--f16/--f32")
    p.add_argument("--to", choices=["whisper.cpp", "gguf"], default="whisper.cpp", help="output format")
    p.add_argument("--out", "-o", required=True, type=Path, help="output file")
    p.add_argument("--type", choices=qtypes, default=None,
                   help="store a quantized directory's tensors in this container type (default: their own; q4_0 "
                        "data also fits q4_1/q5_0/q5_1/q8_0 exactly)")
    base = p.add_mutually_exclusive_group()
    base.add_argument("--rtn", choices=qtypes, default=None,
                      help="float model only: quantize like whisper.cpp's quantize tool (ggml's quantizer, bit-exact)")
    base.add_argument("--f16", action="store_true", help="float model only: F16 weights")
    base.add_argument("--f32", action="store_true", help="float model only: F32 weights (whisper.cpp 1.8.5 CPU "
                                                         "cannot run these; CrispASR can)")
    p.add_argument("--imatrix", type=Path, default=None, metavar="CALIB",
                   help="with --rtn: ggml's importance-weighted quantization, importance = per-column mean x^2 of "
                        "each weight's inputs over CALIB audio on the float model (llama.cpp/CrispASR imatrix)")
    p.add_argument("--n-calib", type=int, default=128, help="--imatrix: calibration utterances (seeded subset)")
    p.add_argument("--seed", type=int, default=0, help="--imatrix: subset seed")
    p.add_argument("--threads", type=int, default=2, help="--imatrix: torch and native threads")
    p.add_argument("--family", default="generic", help="GGUF model family (see tarq.export.gguf_writer.FAMILIES)")
    p.set_defaults(func=run)


def _rtn_checkpoint(spec: str, fmt: str):
    """An in-memory QuantizedCheckpoint of the whisper.cpp RTN baseline (for --to gguf --rtn)."""
    from ..models import load_model
    from ..qmodel import QuantizedCheckpoint
    from ..export.whisper_export import rtn_quantized_tensors
    from ..export import whisper_names as names

    lm = load_model(spec)
    sd = lm.model.state_dict()
    q = rtn_quantized_tensors(sd, fmt)
    floats = {k: v.float() for k, v in sd.items() if k not in q and names.hf_to_cpp(k) is not None}
    meta = {"family": lm.family, "format": fmt, "group_size": None, "method": "ggml_rtn", "source_model": spec}
    return QuantizedCheckpoint(Path(spec), meta, lm.model.config.to_dict(), q, floats)


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
    cfg = CalibConfig(n_calib=args.n_calib, seed=args.seed, threads=args.threads)
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
    if args.to == "gguf" and float_type:
        raise ValueError("GGUF export of float models is not supported; use --rtn TYPE or a quantized dir")
    if args.imatrix is not None:
        import shutil
        import tempfile

        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".tarq-imatrix-", dir=args.out.parent) as tmp:
            qdir = _imatrix_dir(args, Path(tmp))
            out = _export(qdir, args, rtn=None, float_type=None)
            shutil.copyfile(qdir / "report.json", str(out) + ".report.json")
    else:
        out = _export(args.source, args, rtn=args.rtn, float_type=float_type)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _export(source, args, rtn, float_type) -> Path:
    if args.to == "whisper.cpp":
        from ..export.whisper_export import export_whisper_cpp
        return export_whisper_cpp(source, args.out, qtype=args.type, rtn=rtn, float_type=float_type)
    from ..export.gguf_writer import write_gguf
    src = _rtn_checkpoint(source, rtn) if rtn else source
    return write_gguf(src, args.out, family=args.family, qtype=args.type)
