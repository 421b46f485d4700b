"""``tarq quantize MODEL --method ... --calib DATA --out DIR``: calibrate and write a quantized-model directory."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class MethodChoices:
    """argparse choices read from the method registry when first needed (keeps `tarq --help` free of torch)."""

    def _names(self):
        from ..methods import available_methods
        return available_methods()

    def __contains__(self, item):
        return item in self._names()

    def __iter__(self):
        return iter(self._names())


def parse_override(text: str) -> tuple[str, str]:
    """REGEX=TYPE (a --type-override value)."""
    regex, sep, qtype = text.rpartition("=")
    if not sep or not regex:
        raise argparse.ArgumentTypeError(f"expected REGEX=TYPE, got {text!r}")
    return regex, qtype


def register(subparsers) -> None:
    from ..ggml import PLAN_FITS, QUANT_TYPES

    p = subparsers.add_parser("quantize", help="quantize a model (rtn, imatrix, gptq, rarebal, tarq, qep)",
                              description="Calibrate on DATA and write a tarq quantized-model directory.")
    p.add_argument("model", help="tiny.en | base | CTranslate2 dir | Hugging Face dir")
    p.add_argument("--method", default="tarq", choices=MethodChoices())
    p.add_argument("--format", default="q4_0", choices=list(QUANT_TYPES),
                   help="ggml type every quantized weight gets (see --type-override)")
    p.add_argument("--type-override", action="append", type=parse_override, default=[], metavar="REGEX=TYPE",
                   help="give weights whose name matches REGEX another type (repeatable; first match wins)")
    p.add_argument("--group-size", type=int, default=None,
                   help="columns sharing one fitted scale: the type's block (default); Q4_0/Q5_0/Q8_0 also 64, 128")
    p.add_argument("--lattice-fit", choices=PLAN_FITS, default="auto",
                   help="how the solver fits each group's scales from the current weights: ggml's own search "
                        "(plain), its importance-weighted search with diag(H) as importance (weighted), or auto "
                        "(weighted, except plain for q4_0 so its codes match earlier releases)")
    p.add_argument("--calib", type=Path, help="calibration set: manifest.jsonl/.tsv, LibriSpeech tree or audio folder")
    p.add_argument("--out", type=Path, required=True, help="output directory (written atomically)")
    p.add_argument("--n-calib", type=int, default=128, help="calibration utterances (seeded subset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zipf-threshold", type=float, default=3.0, help="rare word: wordfreq Zipf below this")
    p.add_argument("--tag-by", choices=("target", "input"), default="target",
                   help="tag a decoder position by the word it predicts (target) or reads (input)")
    p.add_argument("--cost-ratio", type=float, default=1.0, help="c in λ = c·tr(H_common)/tr(H_tail)")
    p.add_argument("--damp", type=float, default=0.01, help="relative damping (× mean diag H)")
    p.add_argument("--qep-alpha", type=float, default=0.5, help="QEP correction strength α")
    p.add_argument("--encoder-frames", choices=("all", "speech"), default="all",
                   help="encoder positions in the statistics: the whole 30 s window or only frames covering audio")
    p.add_argument("--embedding", choices=("method", "rtn"), default="method",
                   help="tied token embedding / output projection: the chosen method on final-hidden-state "
                        "statistics (default) or whisper.cpp's RTN")
    p.add_argument("--embed-damp", type=float, default=1.0,
                   help="relative damping for the token embedding (default 1.0; it is also the input lookup)")
    p.add_argument("--threads", type=int, default=2, help="torch and native (OpenMP) threads")
    p.add_argument("--device", default="cpu",
                   help="where the calibration forward, statistics and solves run: cpu (default), cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..calib.driver import quantize_loaded_model, resolve_device
    from ..calib.pipeline import CalibConfig
    from ..ggml import TypePlan
    from ..methods import get_method

    resolve_device(args.device)   # fail before minutes of model loading and audio decoding
    plan = TypePlan(args.format, dict(args.type_override), group_size=args.group_size, fit=args.lattice_fit)
    method = get_method(args.method, damp=args.damp, cost_ratio=args.cost_ratio, qep_alpha=args.qep_alpha)
    utterances = []
    if method.needs_stats:
        if args.calib is None:
            raise ValueError(f"--method {args.method} needs calibration data: pass --calib DATA")
        if not args.calib.exists():
            raise FileNotFoundError(f"{args.calib}: calibration set not found")
        from ..data import load_dataset

        utterances = load_dataset(args.calib)
        if not utterances:
            raise ValueError(f"{args.calib}: no utterances found")
    from ..models import load_model

    loaded = load_model(args.model)
    cfg = CalibConfig(n_calib=args.n_calib, seed=args.seed, zipf_threshold=args.zipf_threshold,
                      tag_by=args.tag_by, encoder_frames=args.encoder_frames, threads=args.threads,
                      device=args.device, embedding=args.embedding, embed_damp=args.embed_damp,
                      progress=not args.no_progress)
    out = quantize_loaded_model(loaded, method, plan, utterances, args.out, cfg,
                                calib_name=str(args.calib) if args.calib else None)
    print(out)
    return 0
