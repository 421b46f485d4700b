"""``tarq quantize MODEL --method ... --calib DATA --out DIR``: calibrate and write a quantized-model directory."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..calib.analysis import FRAME_TAGS, SENSITIVITY, SENSITIVITY_LABELS
from ..calib.pipeline import BIAS_CORRECTION, ENCODER_MODES
from ..calib.selection import STRATEGIES
from ..calib.scale_tune import SCALE_TUNE
from ..calib.stats import SHRINKAGE
from ..lexicon import DEFAULT_ZIPF_THRESHOLD

log = logging.getLogger(__name__)

# method options: CLI flag -> the methods' Config field (a flag given for a method without that field is an error)
METHOD_FLAGS = {"damp": "damp", "cost_ratio": "cost_ratio", "qep_alpha": "qep_alpha", "alpha_rule": "alpha_rule",
                "fade_alpha_fit": "alpha_fit"}


def register(subparsers) -> None:
    from ..ggml import PLAN_FITS, QUANT_TYPES
    from ..ggml.lattice import REFIT_MODES
    from ._choices import (DEFAULT_FORMAT, DEFAULT_METHOD, DEFAULT_OPTIONS, LOW_BIT_BELOW, LOW_BIT_DEFAULT_METHOD,
                           methods)

    p = subparsers.add_parser("quantize", help="quantize a model (methods: tarq quantize --help)",
                              description="Calibrate on DATA and write a tarq quantized-model directory.")
    p.add_argument("model", help="tiny.en | base | CTranslate2 dir | Hugging Face dir of Whisper, Qwen3-ASR or Moonshine "
                                 "| cached hub id")
    p.add_argument("--method", default=None, choices=methods(),
                   help=f"quantization method (default {DEFAULT_METHOD} with "
                        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in DEFAULT_OPTIONS.items())
                        + f"; {LOW_BIT_DEFAULT_METHOD} when --format has under {LOW_BIT_BELOW:g} bits per weight, "
                        "e.g. q3_k, q2_k)")
    p.add_argument("--format", default=DEFAULT_FORMAT, choices=list(QUANT_TYPES), metavar="TYPE",
                   help=f"ggml type every quantized weight gets (default {DEFAULT_FORMAT}, Q4_0's size with "
                        "non-uniform levels; " + ", ".join(QUANT_TYPES) + "; see --tensor-type)")
    p.add_argument("--tensor-type", "--type-override", dest="tensor_type", action="append", default=[],
                   metavar="REGEX=TYPE",
                   help="quantize the weights whose Hugging Face name matches REGEX onto TYPE instead (repeatable; "
                        "first match wins; weights quantized together, e.g. q/k/v, must match alike)")
    p.add_argument("--audio-tower-type", default=None, metavar="TYPE",
                   help="quantize the model's audio encoder (and projector) onto TYPE, e.g. q8_0 as CrispASR's own "
                        "quantizer keeps Qwen3-ASR's audio tower")
    p.add_argument("--group-size", type=int, default=None,
                   help="columns sharing one fitted scale: the type's block (default); Q4_0/Q5_0/Q8_0 also 64, 128")
    p.add_argument("--lattice-fit", choices=PLAN_FITS, default="auto",
                   help="how the solver fits each group's scales from the current weights: ggml's own search "
                        "(plain), its importance-weighted search with diag(H) as importance (weighted), or auto "
                        "(weighted, except plain for q4_0 so its codes match earlier releases)")
    p.add_argument("--lattice-refit", choices=REFIT_MODES, default="none",
                   help="after the sweep, refit each group's float parameters (d, m, dmin) to its final codes by "
                        "least squares under the method's metric, keeping a row's swept values unless the refit "
                        "lowers its error (least-squares), or keep the swept values (none)")
    p.add_argument("--calib", type=Path, action="append", default=[],
                   help="calibration set: manifest.jsonl/.tsv, LibriSpeech tree or audio folder; repeat to mix sets "
                        "(their concatenation)")
    p.add_argument("--calib-select", choices=STRATEGIES, default="random",
                   help="which --n-calib utterances: seeded random (default), or the TARQ paper's rare-biased pools "
                        "r-top / r-mix / r-cross (top rare-word density; half top, half random; top per source)")
    p.add_argument("--out", type=Path, required=True, help="output directory (written atomically)")
    p.add_argument("--n-calib", type=int, default=128, help="calibration utterances (seeded subset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zipf-threshold", type=float, default=DEFAULT_ZIPF_THRESHOLD,
                   help="rare word: wordfreq Zipf below this (default: the scoring threshold, tarq.lexicon)")
    p.add_argument("--tag-by", choices=("target", "input"), default="target",
                   help="tag a decoder position by the word it predicts (target) or reads (input)")
    p.add_argument("--cost-ratio", type=float, default=None,
                   help="rarebal/tarq: c in λ = c·tr(H_common)/tr(H_tail) (default 1.0)")
    p.add_argument("--damp", type=float, default=None,
                   help="GPTQ-family methods: relative damping (× mean diag H, default 0.01)")
    p.add_argument("--qep-alpha", type=float, default=None,
                   help="qep: correction strength α (default 0.5; 0.75 when --method is not given)")
    # defaults live in one place, tarq.calib.pipeline.CalibConfig (docs/methods.md §2)
    p.add_argument("--encoder-frames", choices=("sampled", "all", "speech"), default=None,
                   help="encoder positions in the statistics: frames covering audio + every --pad-stride-th padding "
                        "frame, weighted (sampled, the default), every frame of the 30 s window (all: exact, "
                        "slower), or only frames covering audio (speech)")
    p.add_argument("--pad-stride", type=int, default=None,
                   help="with --encoder-frames sampled: one padding frame in N enters the statistics, weighted N, "
                        "its phase rotating over utterances (default 8)")
    p.add_argument("--low-memory", action="store_true",
                   help="rebuild fc2's input in the advance pass instead of keeping it for all calibration utterances "
                        "(tiny.en, 128 utterances: ~1.2 GB less peak memory, ~10 %% more forward time; same codes)")
    p.add_argument("--shrinkage", choices=SHRINKAGE, default="none",
                   help="shrink each group's H toward its diagonal by the intensity its utterance-to-utterance "
                        "variation supports (diagonal; per-layer intensity in report.json) or not (none)")
    p.add_argument("--bias-correction", choices=BIAS_CORRECTION, default=None,
                   help="mean: give every solved Linear the bias that cancels the mean of its output error over the "
                        "calibration rows (stored as the float bias the runtimes read); mean-tokens: only Linears "
                        "that read token positions (Whisper's decoder; the default without --method for 4-bit and "
                        "wider types); none (the default otherwise): the FP bias")
    p.add_argument("--augment", default="none", metavar="KINDS",
                   help="calibrate on every chosen utterance plus --augment-copies seeded copies with another "
                        "speaking rate, room, band or noise: none (default), all, or a comma list of speed, reverb, "
                        "band, noise (docs/methods.md §2)")
    p.add_argument("--augment-copies", type=int, default=1, help="augmented copies per utterance (default 1)")
    p.add_argument("--embedding", choices=("method", "rtn"), default="method",
                   help="tied token embedding / output projection: the chosen method on final-hidden-state "
                        "statistics (default) or whisper.cpp's RTN")
    p.add_argument("--embed-damp", type=float, default=1.0,
                   help="relative damping for the token embedding (default 1.0; it is also the input lookup)")
    p.add_argument("--embedding-order", choices=("last", "first"), default="last",
                   help="quantize the tied embedding after every Linear (last) or before the decoder, so the "
                        "decoder's statistics see the quantized input lookup (first)")
    p.add_argument("--encoder", choices=ENCODER_MODES, default="method",
                   help="the audio encoder's Linears: the chosen method (default) or whisper.cpp's RTN, with no "
                        "encoder statistics (tiny.en: half the time) and the decoder calibrated on the RTN encoder's output")
    t = p.add_argument_group("end-to-end float tuning (docs/methods.md \"End-to-end float tuning\")")
    t.add_argument("--scale-tune", choices=SCALE_TUNE, default="none",
                   help="after the solve, tune every quantized weight's stored block floats (d, m, dmin; codes "
                        "fixed) so that the model's teacher-forced token distributions on the calibration "
                        "transcripts match the FP model's (kl), keeping the epoch with the lowest KL on held-out "
                        "calibration utterances, the solver's own floats included; or not (none, default)")
    t.add_argument("--scale-tune-epochs", type=int, default=3, help="passes over the training utterances (default 3)")
    t.add_argument("--scale-tune-lr", type=float, default=1e-3,
                   help="Adam's step on the floats' relative offsets (default 1e-3)")
    t.add_argument("--scale-tune-holdout", type=float, default=0.125,
                   help="share of the calibration utterances held out to choose the epoch (default 0.125)")
    a = p.add_argument_group("FP analysis pass (docs/methods.md: loss sensitivity, encoder-frame tags)")
    a.add_argument("--sensitivity", choices=SENSITIVITY, default="none",
                   help="weight each position's statistics by the squared gradient, at the layer's output, of the token "
                        "loss (fisher) or of the decision to end the utterance (stop)")
    a.add_argument("--sensitivity-labels", choices=SENSITIVITY_LABELS, default="sampled",
                   help="fisher: labels of the loss sampled from the FP model (Fisher, default) or the transcript "
                        "(stop always uses the transcript's end)")
    a.add_argument("--sensitivity-mix", type=float, default=1.0, metavar="BETA",
                   help="w = (1 - BETA) + BETA * s / mean(s) (1: pure sensitivity weights, 0: none)")
    a.add_argument("--frame-tags", choices=FRAME_TAGS, default="none",
                   help="tag encoder frames that tail decoder positions attend to (alignment heads) as tail rows")
    a.add_argument("--frame-dilation", type=int, default=3, help="frames added on each side of a tagged peak")
    a.add_argument("--alpha-rule", choices=("closed-form", "fade"), default=None,
                   help="tarq: the residual's α by eq. 12 (closed-form) or per layer by FADE's scores (fade)")
    a.add_argument("--fade-alpha-fit", choices=("scores", "held-out"), default=None,
                   help="fade: α per layer from the vulnerability + reliability scores (scores, default) or the α "
                        "minimising the cross-fitted residual on the other calibration fold (held-out)")
    p.add_argument("--threads", type=int, default=2,
                   help="CPU threads for every pool (PyTorch, native kernels; default 2)")
    p.add_argument("--device", default="cpu",
                   help="where the calibration forward, statistics and solves run: cpu (default), cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _overrides(args) -> dict[str, str]:
    """--tensor-type REGEX=TYPE items, in order (validated before any model loading)."""
    out: dict[str, str] = {}
    for item in args.tensor_type:
        pattern, sep, type_name = item.rpartition("=")
        if not sep or not pattern or not type_name:
            raise ValueError(f"--tensor-type {item!r}: expected REGEX=TYPE, e.g. '^model\\.audio_tower\\.=q8_0'")
        out[pattern] = type_name
    return out


def resolve_method(args: argparse.Namespace) -> dict:
    """Without --method: the default method for --format and, for 4-bit and wider types, its default options
    (cli/_choices.DEFAULT_OPTIONS) where their flags were not given. Returns the options it set."""
    applied: dict = {}
    if args.method is None:
        from ._choices import default_method, default_options

        args.method = default_method(args.format)
        applied = {dest: value for dest, value in default_options(args.method).items() if getattr(args, dest) is None}
        for dest, value in applied.items():
            setattr(args, dest, value)
        log.info("method: %s%s (the default for %s)", args.method,
                 "".join(f" --{dest.replace('_', '-')} {value}" for dest, value in applied.items()), args.format)
    if args.bias_correction is None:
        args.bias_correction = "none"
    return applied


def run(args: argparse.Namespace) -> int:
    from ..calib.driver import quantize_loaded_model, resolve_device
    from ..calib.pipeline import CalibConfig
    from ..ggml import TypePlan, get_type
    from ..methods import get_method

    resolve_device(args.device)   # fail before minutes of model loading and audio decoding
    if args.threads < 1:
        raise ValueError("--threads must be at least 1")
    if args.pad_stride is not None and args.pad_stride < 1:
        raise ValueError("--pad-stride must be at least 1")
    overrides = _overrides(args)
    plan = TypePlan(args.format, overrides, group_size=args.group_size, fit=args.lattice_fit,
                    refit=args.lattice_refit)   # validate early
    resolve_method(args)
    if args.audio_tower_type and not get_type(args.audio_tower_type).quantized:
        raise ValueError(f"--audio-tower-type {args.audio_tower_type}: not a quantized type")
    given = {field: getattr(args, flag) for flag, field in METHOD_FLAGS.items() if getattr(args, flag) is not None}
    from ..methods.registry import method_options

    wrong = [flag for flag, field in METHOD_FLAGS.items() if field in given and field not in method_options(args.method)]
    if wrong:
        raise ValueError(f"{', '.join('--' + f.replace('_', '-') for f in wrong)} does not apply to "
                         f"--method {args.method}")
    method = get_method(args.method, **given)
    # every calibration option is checked here (CalibConfig.__post_init__), before minutes of model loading
    frames = {k: v for k, v in (("encoder_frames", args.encoder_frames), ("pad_stride", args.pad_stride))
              if v is not None}
    cfg = CalibConfig(n_calib=args.n_calib, seed=args.seed, zipf_threshold=args.zipf_threshold,
                      tag_by=args.tag_by, **frames, threads=args.threads, keep_stage_inputs=not args.low_memory,
                      device=args.device, embedding=args.embedding, embed_damp=args.embed_damp,
                      embedding_order=args.embedding_order, encoder=args.encoder, calib_select=args.calib_select,
                      sensitivity=args.sensitivity, sensitivity_labels=args.sensitivity_labels,
                      sensitivity_mix=args.sensitivity_mix, frame_tags=args.frame_tags,
                      frame_dilation=args.frame_dilation, shrinkage=args.shrinkage, augment=args.augment,
                      bias_correction=args.bias_correction, scale_tune=args.scale_tune,
                      scale_tune_epochs=args.scale_tune_epochs, scale_tune_lr=args.scale_tune_lr,
                      scale_tune_holdout=args.scale_tune_holdout,
                      augment_copies=args.augment_copies, progress=not args.no_progress)
    if cfg.bias_correction != "none" and not method.needs_stats:
        raise ValueError(f"--bias-correction needs calibration statistics; --method {args.method} is data-free")
    utterances, origin = [], None
    if method.needs_stats or cfg.scale_tune != "none":
        if not args.calib:
            why = f"--method {args.method}" if method.needs_stats else f"--scale-tune {cfg.scale_tune}"
            raise ValueError(f"{why} needs calibration data: pass --calib DATA")
        from ..calib.selection import combine_sources
        from ..data import dataset_name, load_dataset

        sources = []
        for path in args.calib:
            if not path.exists():
                raise FileNotFoundError(f"{path}: calibration set not found")
            utts = load_dataset(path)
            if not utts:
                raise ValueError(f"{path}: no utterances found")
            sources.append((dataset_name(path), utts))
        utterances, origin = combine_sources(sources)
    from ..models import load_model

    loaded = load_model(args.model)
    if args.audio_tower_type:
        pattern = loaded.spec.audio_tower_pattern
        plan = TypePlan(args.format, {pattern: args.audio_tower_type, **overrides}, group_size=args.group_size,
                        fit=args.lattice_fit, refit=args.lattice_refit)
    out = quantize_loaded_model(loaded, method, plan, utterances, args.out, cfg,
                                calib_name=",".join(str(c) for c in args.calib) if args.calib else None,
                                calib_origin=origin)
    print(out)
    return 0
