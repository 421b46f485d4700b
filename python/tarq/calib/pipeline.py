"""The calibration driver: true-sequential, streamed, two-stream (FP and partly quantized) quantization.

For every block of the adapter's plan and every stage inside it:

1. *statistics*: each calibration utterance's stage inputs are computed from its cached per-utterance
   state, in the partly quantized stream (and the FP stream when the method uses H_Δ), and folded into
   the group's float64 accumulators (H_common, H_tail, H_Δ; eqs. 7 and 11). Groups that share a key
   (Whisper's cross-attention k/v) are accumulated once and reused.
2. *solve*: the method quantizes the group's weights onto the export lattice; the dequantized weights are
   written into the quantized-stream model.
3. *advance*: each utterance's state is pushed through the stage with the now-quantized weights (FP
   stream: FP weights), so the next stage sees true-sequential inputs without re-running whole blocks.

Decoder positions are teacher-forced on identical tokens (prompt + transcript + eot) in both streams.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import torch

from ..ggml import Lattice, TypePlan
from ..lexicon import DEFAULT_ZIPF_THRESHOLD
from ..methods.base import LinearResult, QuantMethod, h_inner
from ..methods.imatrix import imatrix_from_stats
from ..methods.rtn import rtn_quantize
from ..models.adapter import FRAMES, CalibSample, ModelAdapter
from .analysis import POSITION_WEIGHTS_KEY, AnalysisOptions, analyse
from .memory import release_free_memory
from .scale_tune import ScaleTuneOptions
from .stats import (SHRINKAGE, FoldedStatsAccumulator, GroupStats, StatsAccumulator, shrink_offdiagonal,
                    shrinkage_intensity)

log = logging.getLogger(__name__)

ENCODER_FRAMES = ("sampled", "all", "speech")
EMBEDDING_MODES = ("method", "rtn")
ENCODER_MODES = ("method", "rtn")
BIAS_CORRECTION = ("none", "mean", "mean-tokens")


@dataclass
class CalibConfig:
    n_calib: int = 128
    seed: int = 0
    calib_select: str = "random"      # "random" | "r-top" | "r-mix" | "r-cross" (calib/selection.py)
    zipf_threshold: float = DEFAULT_ZIPF_THRESHOLD   # tarq.lexicon: the scoring threshold too
    tag_by: str = "target"            # "target" | "input" (calib/rarity.py)
    # Encoder positions in the statistics (docs/methods.md §2). "sampled": every frame covering audio plus
    # pad_margin frames after it, and of the padding that fills the rest of the 30 s window one frame in every
    # pad_stride, weighted by the frames it stands for; "all": every frame of the window (exact, slower);
    # "speech": only the frames covering audio. The forward always runs the whole window.
    encoder_frames: str = "sampled"
    # stride 8 with the phase rotating over utterances: 25 % fewer statistics rows than stride 4 (middle frame,
    # the previous default) at the same H error (docs/methods.md §2, benchmarks/results/bench_padding_stats.json)
    pad_stride: int = 8
    pad_margin: int = 16
    pad_pick: str = "rotate"          # which frame of a run of pad_stride stands for it (padding_subsample)
    # Keep a stage's inputs (Whisper: fc2's [1500, 4d] input) from the statistics pass to the advance pass of the
    # quantized stream (faster) or rebuild them in the advance pass (one more fc1 per utterance; bounded memory).
    keep_stage_inputs: bool = True
    threads: int = 2
    device: str = "cpu"               # where the forward passes, statistics and solves run ("cuda", "cuda:1")
    progress: bool = True
    # The tied token embedding / output projection (docs/methods.md §5): "method" quantizes it with the chosen
    # method on final-hidden-state statistics; "rtn" uses whisper.cpp's RTN. embed_damp (relative, like damp;
    # None = the method's own) is larger by default because the same matrix is the decoder's input lookup,
    # where GPTQ's error shaping toward low-variance output directions is unchecked (measured in §5).
    embedding: str = "method"
    embed_damp: float | None = 1.0
    # "last": the tied embedding is quantized after every Linear (true-sequential statistics; the decoder's
    # statistics use the FP embedding for the input lookup); "first": before the decoder (issue 15, §5 of
    # docs/methods.md), so the decoder's statistics see the quantized lookup inference uses.
    embedding_order: str = "last"
    # The audio encoder's Linears (the family's audio_tower_pattern; Whisper: model.encoder.*): "method" solves them
    # like every other group; "rtn" gives them whisper.cpp's RTN codes and gathers no statistics for them, so the
    # decoder is calibrated on the RTN encoder's output, as inference runs it. Their biases stay FP (no statistics
    # to correct them with). Why it exists and what it measured: docs/methods.md "--encoder rtn" (base's rare-word
    # loss on technical prose followed the calibrated encoder; on tiny.en the calibrated encoder carries the gain).
    encoder: str = "method"
    # The FP analysis pass (calib/analysis.py, docs/methods.md): loss-sensitivity position weights and
    # encoder-frame tail tags from the alignment heads' cross-attention.
    sensitivity: str = "none"             # "none" | "fisher" | "stop"
    sensitivity_labels: str = "sampled"   # "sampled" (Fisher) | "reference" (empirical Fisher)
    sensitivity_mix: float = 1.0          # β in w = (1 − β) + β s / mean(s)
    frame_tags: str = "none"              # "none" | "attention"
    frame_rel_threshold: float = 0.5
    frame_dilation: int = 3
    # "diagonal": each group's H (H_common and H_tail) is shrunk toward its diagonal by the intensity its own
    # utterance-to-utterance variation supports (stats.shrinkage_intensity, Schäfer–Strimmer target D) before the
    # solve; "none": the sample H as accumulated. docs/methods.md §2 "Shrinkage".
    shrinkage: str = "none"
    # Acoustic augmentation (calib/augment.py, docs/methods.md §2 "Augmented copies"): "none", "all" or a comma list
    # of speed, reverb, band, noise; each chosen utterance then calibrates together with augment_copies seeded
    # copies of itself (same transcript, same tags).
    augment: str = "none"
    augment_copies: int = 1
    # "mean": after a group is solved, each of its Linears with a bias gets the bias that minimizes the method's
    # own output error over the calibration rows (corrected_bias; docs/methods.md §2 "Bias correction"), stored as
    # the float bias the runtimes read; "mean-tokens": only the groups whose rows are token positions (Whisper's
    # decoder; not the encoder, whose means are mostly the padding frames'); "none": the FP bias.
    bias_correction: str = "none"
    # After the solve, the block floats (d, m, dmin) of every quantized weight tuned end to end against the FP
    # model's teacher-forced token distributions, codes fixed, epoch chosen on held-out calibration utterances
    # (calib/scale_tune.py, docs/methods.md "End-to-end float tuning"): "none" | "kl".
    scale_tune: str = "none"
    scale_tune_epochs: int = 3
    scale_tune_lr: float = 1e-3
    scale_tune_batch: int = 4
    scale_tune_holdout: float = 0.125

    def scale_tune_options(self) -> ScaleTuneOptions:
        return ScaleTuneOptions(mode=self.scale_tune, epochs=self.scale_tune_epochs, lr=self.scale_tune_lr,
                                batch=self.scale_tune_batch, holdout=self.scale_tune_holdout, seed=self.seed)

    def analysis_options(self) -> AnalysisOptions:
        return AnalysisOptions(sensitivity=self.sensitivity, sensitivity_labels=self.sensitivity_labels,
                               sensitivity_mix=self.sensitivity_mix, frame_tags=self.frame_tags,
                               frame_rel_threshold=self.frame_rel_threshold, frame_dilation=self.frame_dilation,
                               seed=self.seed)

    def __post_init__(self):
        if self.embedding_order not in ("last", "first"):
            raise ValueError(f"embedding_order must be 'last' or 'first', got {self.embedding_order!r}")
        if self.embedding not in EMBEDDING_MODES:
            raise ValueError(f"embedding must be one of {EMBEDDING_MODES}, got {self.embedding!r}")
        if self.encoder not in ENCODER_MODES:
            raise ValueError(f"encoder must be one of {ENCODER_MODES}, got {self.encoder!r}")
        if self.bias_correction not in BIAS_CORRECTION:
            raise ValueError(f"bias_correction must be one of {BIAS_CORRECTION}, got {self.bias_correction!r}")
        if self.shrinkage not in SHRINKAGE:
            raise ValueError(f"shrinkage must be one of {SHRINKAGE}, got {self.shrinkage!r}")
        if self.encoder_frames not in ENCODER_FRAMES:
            raise ValueError(f"encoder_frames must be one of {ENCODER_FRAMES}, got {self.encoder_frames!r}")
        if self.n_calib <= 0:
            raise ValueError(f"n_calib must be positive, got {self.n_calib}")
        from .augment import parse_augment

        self.augment = ",".join(parse_augment(self.augment)) or "none"   # one spelling per setting in reports
        if self.augment_copies < 1:
            raise ValueError(f"augment_copies must be at least 1, got {self.augment_copies}")
        if self.pad_pick not in PAD_PICKS:
            raise ValueError(f"pad_pick must be one of {PAD_PICKS}, got {self.pad_pick!r}")
        if self.pad_stride < 1 or self.pad_margin < 0:
            raise ValueError(f"pad_stride must be >= 1 and pad_margin >= 0, got {self.pad_stride}, {self.pad_margin}")
        self.analysis_options()   # validates the analysis options
        self.scale_tune_options()  # and the float tuning's


def apply_method_overrides(cfg: CalibConfig, method: QuantMethod) -> CalibConfig:
    """``cfg`` with the calibration settings that are part of ``method``'s definition; an explicit different
    (non-default) setting is an error rather than silently replaced."""
    from dataclasses import fields

    over = dict(getattr(method, "calib_overrides", {}) or {})
    if not over:
        return cfg
    defaults = {f.name: f.default for f in fields(CalibConfig)}
    for k, v in over.items():
        cur = getattr(cfg, k)
        if cur != v and cur != defaults[k]:
            raise ValueError(f"method {method.name!r} calibrates with {k}={v!r}; it cannot be combined with "
                             f"{k}={cur!r}")
    return replace(cfg, **over)


@dataclass
class Timer:
    seconds: dict[str, float] = field(default_factory=Counter)
    spans: dict[str, list[tuple[float, float]]] = field(default_factory=dict)   # for peak RSS per phase

    def add(self, key: str, t0: float) -> float:
        t1 = time.perf_counter()
        self.seconds[key] += t1 - t0
        self.spans.setdefault(key, []).append((t0, t1))
        return t1


@dataclass
class CalibrationResult:
    quantized: dict[str, LinearResult]
    layers: dict[str, dict[str, Any]]
    timing: dict[str, float]
    n_positions: dict[str, int]
    spans: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)
    floats: dict[str, torch.Tensor] = field(default_factory=dict)   # float parameters the solve changed (biases)


def select_subset(items: Sequence, n: int, seed: int) -> list:
    """Deterministic subset: all items when n >= len, else a seeded sample kept in corpus order."""
    items = list(items)
    if n >= len(items):
        return items
    idx = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in idx]


_GOLDEN = 0.6180339887498949


PAD_PICKS = ("middle", "golden", "rotate")


def padding_subsample(n_frames: int, first_pad: int, stride: int, pick: str = "middle",
                      utterance: int = 0) -> list[tuple[torch.Tensor, float]]:
    """Frames standing for the padding [first_pad, n_frames): one frame of every run of ``stride`` consecutive
    frames, weighted by the run's length -> [(indices, weight)] (one entry per distinct weight).

    Which frame of a run: ``pick="middle"`` (this function's default; ``CalibConfig`` uses "rotate") the middle
    one (midpoint rule); ``pick="golden"`` offset ⌊frac(j·φ)·len⌋ in run j (φ = golden ratio), a low-discrepancy pick that avoids a fixed phase against the
    sinusoidal position embeddings the padding frames carry; ``pick="rotate"`` offset (utterance // 2) mod
    stride in every run of utterance number ``utterance``: across the calibration set each frame position of the
    padding is kept equally often (the padding frames at one position are nearly the same in every utterance,
    since the padding's features are constant), so the estimate of the set's H is unbiased per position instead of
    aliasing with a fixed phase; // 2 keeps both cross-fitting folds (utterance parity) on every phase. Measured
    on tiny.en in docs/methods.md §2."""
    if first_pad >= n_frames:
        return []
    starts = torch.arange(first_pad, n_frames, stride)
    lengths = (n_frames - starts).clamp(max=stride)
    if pick == "golden":
        frac = torch.remainder(torch.arange(starts.numel(), dtype=torch.float64) * _GOLDEN, 1.0)
        offsets = torch.minimum((frac * lengths).long(), lengths - 1)
    elif pick == "middle":
        offsets = lengths // 2
    elif pick == "rotate":
        offsets = torch.full_like(lengths, (utterance // 2) % stride).minimum(lengths - 1)
    else:
        raise ValueError(f"pick must be one of {PAD_PICKS}, got {pick!r}")
    out = []
    for w in sorted(set(lengths.tolist()), reverse=True):
        sel = lengths == w
        out.append((starts[sel] + offsets[sel], float(w)))
    return out


def _select_rows(x: torch.Tensor, x_fp: torch.Tensor | None, sample: CalibSample, domain: str, cfg: CalibConfig,
                 key: str | None = None, utterance: int = 0):
    """The positions that enter the statistics -> (rows, FP rows, tail tags, weights or None = all 1).

    Weights multiply two things: the number of frames a subsampled padding frame stands for, and the
    loss-sensitivity weight of the position (calib/analysis.py) when the analysis pass computed one for ``key``."""
    pw = sample.extra.get(POSITION_WEIGHTS_KEY, {}).get(key) if key is not None else None
    if pw is not None and pw.numel() != x.shape[0]:
        raise ValueError(f"{pw.numel()} position weights for {x.shape[0]} positions")
    if domain != FRAMES:
        return x, x_fp, sample.tail, pw
    tail = sample.frame_tail
    if cfg.encoder_frames == "all" or (cfg.encoder_frames == "sampled" and cfg.pad_stride == 1):
        return x, x_fp, tail, pw
    n_speech = sample.n_speech_frames
    if cfg.encoder_frames == "speech":
        return x[:n_speech], x_fp[:n_speech] if x_fp is not None else None, \
            tail[:n_speech] if tail is not None else None, pw[:n_speech] if pw is not None else None
    exact = min(x.shape[0], n_speech + cfg.pad_margin)
    parts = padding_subsample(x.shape[0], exact, cfg.pad_stride, cfg.pad_pick, utterance)
    idx = torch.cat([torch.arange(exact)] + [i for i, _ in parts]).to(x.device)
    weights = torch.cat([torch.ones(exact)] + [torch.full((i.numel(),), w) for i, w in parts]).to(x.device)
    if pw is not None:
        weights = weights * pw.to(weights.device)[idx]
    return x[idx], x_fp[idx] if x_fp is not None else None, tail[idx] if tail is not None else None, weights


def plan_lattices(model: torch.nn.Module, adapter: ModelAdapter, plan: TypePlan) -> dict[str, Lattice]:
    """The lattice of every weight the adapter quantizes, checked before any work: each weight's rows tile its
    type, and weights solved together (one group, one metric) share one type. Raises a one-line ValueError."""
    groups = [[(n, tuple(model.get_parameter(n).shape)) for n in g.weights]
              for b in adapter.blocks(model) for s in b.stages for g in s.groups]
    plan.check(groups)
    return {n: plan.lattice_for(n, shape) for group in groups for n, shape in group}


@contextlib.contextmanager
def ieee_float32_on_cuda():
    """No TF32 while calibrating on a GPU. PyTorch lets cuDNN convolutions round float32 inputs to TF32 (10-bit
    mantissa) by default, so Whisper's conv front end would feed every encoder activation and second moment at a
    precision the CPU run does not have. The statistics are float64 sums of float32 activations on the CPU; on
    the GPU they should be too. (On an H200 this did not measurably change how many codes the GPU run shares with
    the CPU run: docs/kernels.md "CUDA".)"""
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (cuda.allow_tf32, cudnn.allow_tf32)
    cuda.allow_tf32 = cudnn.allow_tf32 = False
    try:
        yield
    finally:
        cuda.allow_tf32, cudnn.allow_tf32 = saved


def run_calibration(model: torch.nn.Module, adapter: ModelAdapter, samples: list[CalibSample],
                    method: QuantMethod, plan: TypePlan, cfg: CalibConfig) -> CalibrationResult:
    """Quantize every weight of ``adapter.blocks(model)`` onto the plan's types; ``model`` (FP) is left untouched."""
    if any(p.is_cuda for p in model.parameters()):
        with ieee_float32_on_cuda():
            return _run_calibration(model, adapter, samples, method, plan, cfg)
    return _run_calibration(model, adapter, samples, method, plan, cfg)


def _run_calibration(model: torch.nn.Module, adapter: ModelAdapter, samples: list[CalibSample],
                     method: QuantMethod, plan: TypePlan, cfg: CalibConfig) -> CalibrationResult:
    from tqdm.auto import tqdm

    timer = Timer()
    lattices = plan_lattices(model, adapter, plan)
    cfg = apply_method_overrides(cfg, method)
    blocks = adapter.blocks(model)
    quantized: dict[str, LinearResult] = {}
    layers: dict[str, dict[str, Any]] = {}
    n_positions: dict[str, int] = {}
    analysis: dict[str, Any] = {}
    if method.needs_stats:
        device = next(model.parameters()).device
        samples = [s.to(device) for s in samples]
        opts = cfg.analysis_options()
        if opts.active:   # gradients: outside inference mode, before any quantization (FP model only)
            t0 = time.perf_counter()
            analysis = analyse(model, adapter, samples, opts, blocks)
            timer.add("analysis", t0)
        prepare = getattr(method, "prepare", None)
        if prepare is not None:
            t0 = time.perf_counter()
            prepare(model, [w for b in blocks for s in b.stages for g in s.groups for w in g.weights])
            timer.add("solve", t0)

    if cfg.bias_correction != "none" and not method.needs_stats:
        raise ValueError(f"bias correction needs calibration statistics; method {method.name!r} is data-free")
    floats: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        if not method.needs_stats:   # data-free (rtn): no forward at all
            for block in blocks:
                for stage in block.stages:
                    for g in stage.groups:
                        _solve_data_free(g, model, method, lattices, timer, quantized, layers, write=False)
            return CalibrationResult(quantized, layers, dict(timer.seconds), n_positions)

        embed_names = set(adapter.tied_parameters(model).values())
        rtn_keys = _encoder_rtn_keys(adapter, blocks, cfg)
        from ..methods import get_method   # not at module level: the method registry imports this package

        rtn = get_method("rtn") if rtn_keys else None
        track_fp = method.needs_fp_stream
        model_q = copy.deepcopy(model)
        model_fp = model
        key_uses = Counter(g.key for b in blocks for s in b.stages for g in s.groups)
        stats_cache: dict[str, GroupStats] = {}

        t0 = time.perf_counter()
        states_q = [adapter.init_state(model_q, s) for s in samples]
        states_fp = [dict(st) for st in states_q] if track_fp else None   # identical before any quantization
        timer.add("forward", t0)

        embed_first = _embedding_block(blocks, embed_names) if cfg.embedding_order == "first" else None
        loop_blocks = [b for b in blocks if b is not embed_first]
        first_token_block = next((b for b in loop_blocks if any(g.domain != FRAMES for st in b.stages
                                                                for g in st.groups)), None)
        bar = tqdm(loop_blocks, desc=f"{method.name}", unit="block", disable=not cfg.progress)
        t_run = time.perf_counter()
        for block in bar:
            if embed_first is not None and block is first_token_block:
                _quantize_embedding_first(adapter, model_q, model_fp, blocks, embed_first, samples, states_q,
                                          method, lattices, embed_names, cfg, timer, quantized, layers, n_positions,
                                          floats)
            t0 = time.perf_counter()
            for i, s in enumerate(samples):
                states_q[i] = adapter.enter_block(model_q, block, states_q[i], s)
                if track_fp:
                    states_fp[i] = adapter.enter_block(model_fp, block, states_fp[i], s)
            timer.add("forward", t0)
            for si, stage in enumerate(block.stages):
                bar.set_postfix_str(f"{block.name.split('model.')[-1]} {stage.name}")
                need = [g for g in stage.groups if g.key not in stats_cache and g.key not in rtn_keys]
                fp_advanced = False
                if need:
                    fp_advanced = _accumulate(adapter, model_q, model_fp if track_fp else None, block, si, need,
                                              samples, states_q, states_fp, stats_cache, cfg, timer,
                                              folds=method.needs_folds)
                for g in stage.groups:
                    if g.key in rtn_keys:   # --encoder rtn: no statistics; the decoder sees these RTN weights
                        _solve_data_free(g, model_q, rtn, lattices, timer, quantized, layers,
                                         write=method.true_sequential, note="--encoder rtn")
                        continue
                    stats = stats_cache[g.key]
                    n_positions[g.key] = stats.n_common + stats.n_tail
                    _solve_group(g, stats, model_q, method, lattices, embed_names, cfg, timer, quantized, layers,
                                 floats)
                    key_uses[g.key] -= 1
                    if key_uses[g.key] == 0:
                        del stats_cache[g.key]
                t0 = time.perf_counter()
                for i, s in enumerate(samples):
                    states_q[i] = adapter.advance(model_q, block, si, states_q[i], s)
                    if track_fp and not fp_advanced:
                        states_fp[i] = adapter.advance(model_fp, block, si, states_fp[i], s)
                release_free_memory()
                timer.add("forward", t0)
            log.debug("%s quantized (%.1f s elapsed; %s)", block.name, time.perf_counter() - t_run,
                      ", ".join(f"{k} {v:.1f}s" for k, v in timer.seconds.items()))
    if cfg.bias_correction != "none" and not floats:
        log.warning("bias correction: no quantized weight of this model has a bias it could correct; none changed")
    return CalibrationResult(quantized, layers, dict(timer.seconds), n_positions, timer.spans, analysis, floats)


def _encoder_rtn_keys(adapter: ModelAdapter, blocks, cfg: CalibConfig) -> set[str]:
    """Keys of the groups ``CalibConfig.encoder == "rtn"`` gives RTN codes: those whose weights are all in the
    audio tower. A group must lie wholly inside or outside it (its weights share one H)."""
    if cfg.encoder != "rtn":
        return set()
    keys = set()
    for g in (g for b in blocks for st in b.stages for g in st.groups):
        inside = adapter.audio_tower_weights(g.weights)
        if inside and len(inside) != len(g.weights):
            raise ValueError(f"--encoder rtn: group {g.key} ({', '.join(g.weights)}) lies partly in the audio tower")
        if inside:
            keys.add(g.key)
    if not keys:
        raise ValueError(f"--encoder rtn: no quantized weight of this {adapter.family} model is in its audio tower")
    return keys


def _solve_data_free(g, model, method: QuantMethod, lattices, timer, quantized, layers, *, write: bool,
                     note: str | None = None) -> None:
    """Quantize one group with a data-free method (no statistics; rtn). ``write``: its dequantized weights go into
    ``model`` (the quantized stream, which later groups' statistics see)."""
    weights = {n: model.get_parameter(n).detach().float() for n in g.weights}   # read before any write below
    lat = lattices[g.weights[0]]
    t0 = time.perf_counter()
    res = method.quantize_group(weights, None, lat)
    timer.add("solve", t0)
    for n, r in res.items():
        _check_result(n, weights[n], r, lat)
        if write:
            model.get_parameter(n).copy_(r.dequant)
        quantized[n] = r
        layers[n] = {"group": g.key, "type": lat.name, **({"method": method.name, "why": note} if note else {}),
                     **r.info}


def _method_for(group, method: QuantMethod, embed_names: set[str], cfg: CalibConfig) -> QuantMethod:
    """The method for one group: the run's method, except for the tied output embedding when configured."""
    if not embed_names.intersection(group.weights):
        return method
    from ..methods import get_method

    if cfg.embedding == "rtn":
        return get_method("rtn")
    if cfg.embed_damp is not None and getattr(method.config, "damp", cfg.embed_damp) != cfg.embed_damp:   # rtn/imatrix: none
        m = copy.copy(method)   # keeps what prepare() computed (e.g. FADE's V_int over every layer)
        m.config = replace(method.config, damp=cfg.embed_damp)
        return m
    return method


def corrected_bias(b: torch.Tensor, W: torch.Tensor, W_hat: torch.Tensor, mean_q: torch.Tensor,
                   mean_fp: torch.Tensor | None) -> torch.Tensor:
    """The bias b̂ minimizing E‖(W x^fp + b) − (Ŵ x + b̂)‖² over the calibration rows: b̂ = b + W E[x^fp] − Ŵ E[x]
    (the mean of the error is the only part of it a constant can cancel; what is left is its covariance part).

    x: the layer's input in the partly quantized stream; x^fp: in the FP stream when the method tracks it (QEP,
    TARQ's residual: their objective's target is the FP layer's output), else x^fp = x (GPTQ's target, the FP
    weights on the same input): b̂ = b + (W − Ŵ) E[x]. This is the empirical bias correction of Nagel et al. 2019
    (Data-Free Quantization, §4.2) applied to the solver's own objective."""
    target = mean_q if mean_fp is None else mean_fp
    shift = W.double() @ target.to(W.device) - W_hat.double() @ mean_q.to(W.device)
    return (b.double() + shift).to(b.dtype)


def _bias_of(model: torch.nn.Module, weight_name: str) -> tuple[str, torch.Tensor] | None:
    """(name, parameter) of the bias beside a Linear's ``*.weight``, or None (k_proj and the embedding have none)."""
    if not weight_name.endswith(".weight"):
        return None
    name = weight_name[: -len("weight")] + "bias"
    try:
        return name, model.get_parameter(name)
    except AttributeError:
        return None


def _correct_bias(n: str, W: torch.Tensor, r: LinearResult, stats: GroupStats, model_q, write: bool,
                  floats: dict[str, torch.Tensor], report: dict[str, Any]) -> None:
    """Bias correction of one solved Linear (CalibConfig.bias_correction "mean"): the corrected bias goes into
    ``floats`` (what is exported) and, for a true-sequential method, into the quantized stream; the report gets
    the squared mean error it removes per position, relative to the output energy tr(W H Wᵀ)/N — the units of
    rel_err, so for GPTQ (no FP stream) rel_err − bias_rel_err_removed is the error left."""
    found = _bias_of(model_q, n)
    if found is None or stats.mean_q is None:
        return
    name, b = found
    new = corrected_bias(b.detach(), W, r.dequant.to(W.device), stats.mean_q, stats.mean_fp)
    shift = new.double() - b.detach().double()
    energy = h_inner(W, W, stats.H) / max(stats.weight_sum, 1e-30)
    report["bias_shift_norm"] = float(shift.norm())
    report["bias_rel_err_removed"] = float(shift.pow(2).sum()) / energy if energy > 0 else 0.0
    floats[name] = new.detach().float().cpu().clone()
    if write:
        b.copy_(new)


def _solve_group(g, stats, model_q, method, lattices, embed_names, cfg, timer, quantized, layers,
                 floats: dict[str, torch.Tensor]) -> None:
    """Quantize one group under ``stats`` onto its lattice; a true-sequential method's dequantized weights go into
    the quantized stream (later layers see them). With bias correction, the Linears' corrected biases go into
    ``floats`` (and the quantized stream)."""
    weights = {n: model_q.get_parameter(n).detach().float().clone() for n in g.weights}
    lat = lattices[g.weights[0]]
    group_method = _method_for(g, method, embed_names, cfg)
    t0 = time.perf_counter()
    rho = shrinkage_intensity(stats) if cfg.shrinkage == "diagonal" else None
    res = group_method.quantize_group(weights, stats if rho is None else shrink_offdiagonal(stats, rho), lat)
    timer.add("solve", t0)
    for n, r in res.items():
        _check_result(n, weights[n], r, lat)
        if group_method.true_sequential:
            model_q.get_parameter(n).copy_(r.dequant)
        quantized[n] = r
        t0 = time.perf_counter()
        layers[n] = _layer_report(g.key, weights[n], r, stats, group_method, lat)   # errors under the sample H
        if rho is not None:
            layers[n]["shrinkage"] = rho
        if cfg.bias_correction == "mean" or (cfg.bias_correction == "mean-tokens" and g.domain != FRAMES):
            _correct_bias(n, weights[n], r, stats, model_q, group_method.true_sequential, floats, layers[n])
        timer.add("report", t0)


def _embedding_block(blocks, embed_names):
    """The block holding the tied token embedding (None when the model has none)."""
    return next((b for b in blocks if any(embed_names.intersection(g.weights) for st in b.stages
                                          for g in st.groups)), None)


def _quantize_embedding_first(adapter, model_q, model_fp, blocks, embed_block, samples, states_q, method, lattices,
                              embed_names, cfg, timer, quantized, layers, n_positions, floats) -> None:
    """``embedding_order="first"``: quantize the tied token embedding before the decoder, so the decoder's statistics
    see the quantized embedding in its input lookup, as inference does. Its statistics (the final decoder hidden
    states) come from the FP decoder run on the quantized stream's current state (the quantized encoder output):
    the decoder is not quantized yet. No FP-stream difference exists at that point, so H_Δ = 0 (no residual)."""
    start = blocks.index(next(b for b in blocks if b is not embed_block and any(
        g.domain != FRAMES for st in b.stages for g in st.groups)))
    between = [b for b in blocks[start:] if b is not embed_block]
    accs: dict[str, StatsAccumulator] = {}
    for i, s in enumerate(samples):
        t0 = time.perf_counter()
        st = dict(states_q[i])
        for b in between:
            st = adapter.enter_block(model_fp, b, st, s)
            for si in range(len(b.stages)):
                st = adapter.advance(model_fp, b, si, st, s)
        st = adapter.enter_block(model_fp, embed_block, st, s)
        groups = [g for stg in embed_block.stages for g in stg.groups]
        x = adapter.stage_inputs(model_fp, embed_block, 0, st, s, {g.key for g in groups})
        t0 = timer.add("forward", t0)
        for g in groups:
            if g.key not in accs:
                accs[g.key] = StatsAccumulator(x[g.key].shape[-1], track_delta=method.needs_fp_stream,
                                               device=x[g.key].device, track_units=cfg.shrinkage != "none")
            rows = _select_rows(x[g.key], x[g.key] if method.needs_fp_stream else None, s, g.domain, cfg, g.key, i)
            accs[g.key].add(*rows)
        timer.add("stats", t0)
    for stg in embed_block.stages:
        for g in stg.groups:
            stats = accs[g.key].finalize()
            if method.needs_folds:   # one fold per utterance parity would need a second pass; no correction here
                from .stats import FoldStats
                zero = torch.zeros_like(stats.H_common)
                stats.folds = [FoldStats(stats.H, zero, zero), FoldStats(stats.H, zero, zero)]
            n_positions[g.key] = stats.n_common + stats.n_tail
            _solve_group(g, stats, model_q, method, lattices, embed_names, cfg, timer, quantized, layers, floats)


def _accumulate(adapter, model_q, model_fp, block, si, groups, samples, states_q, states_fp, stats_cache, cfg,
                timer, folds: bool = False) -> bool:
    """Statistics of ``groups`` over all utterances. The FP stream's weights never change, so each utterance's
    FP state is advanced past the stage right after its inputs are used (same operations, same values as
    advancing it after the solve) and nothing of it (e.g. fc2's [frames, 4d] input) is kept across
    utterances. Returns whether the FP stream was advanced."""
    keys = {g.key for g in groups}
    accs: dict[str, StatsAccumulator] = {}
    for i, s in enumerate(samples):
        t0 = time.perf_counter()
        xq = adapter.stage_inputs(model_q, block, si, states_q[i], s, keys)
        if not cfg.keep_stage_inputs:
            for key in adapter.recomputable_state:
                states_q[i].pop(key, None)
        xfp = adapter.stage_inputs(model_fp, block, si, states_fp[i], s, keys) if model_fp is not None else None
        t0 = timer.add("forward", t0)
        for g in groups:
            if g.key not in accs:
                n, dev = xq[g.key].shape[-1], xq[g.key].device
                units = cfg.shrinkage != "none"   # one add() per utterance: the sampling unit
                accs[g.key] = (FoldedStatsAccumulator(n, device=dev, track_units=units) if folds else
                               StatsAccumulator(n, track_delta=model_fp is not None, device=dev, track_units=units))
            try:
                rows = _select_rows(xq[g.key], xfp[g.key] if xfp is not None else None, s, g.domain, cfg, g.key, i)
                if folds:
                    accs[g.key].add(*rows, fold=i % 2)   # folds split by utterance, never by position
                else:
                    accs[g.key].add(*rows)
            except ValueError as e:
                raise ValueError(f"{', '.join(g.weights)}: {e} (utterance {s.id})") from None
        t0 = timer.add("stats", t0)
        if model_fp is not None:
            del xfp
            states_fp[i] = adapter.advance(model_fp, block, si, states_fp[i], s)
            timer.add("forward", t0)
    for k, acc in accs.items():
        stats_cache[k] = acc.finalize()
    return model_fp is not None


def _check_result(name: str, W: torch.Tensor, r: LinearResult, lat: Lattice) -> None:
    rows, cols = W.shape
    want = (rows, lat.qtype.row_bytes(cols))
    if r.qtype is not lat.qtype or tuple(r.data.shape) != want or r.data.dtype != torch.uint8:
        raise RuntimeError(f"{name}: method returned {r.qtype.name} bytes {tuple(r.data.shape)} {r.data.dtype}, "
                           f"expected {lat.name} {want}")
    if tuple(r.dequant.shape) != (rows, cols) or not torch.isfinite(r.dequant).all():
        raise ValueError(f"{name}: quantized weight is not finite (or has the wrong shape)")


def _layer_report(key: str, W: torch.Tensor, r: LinearResult, stats: GroupStats, method: QuantMethod,
                  lat: Lattice) -> dict[str, Any]:
    """Per-layer diagnostics: relative H-weighted error of RTN (whisper.cpp's quantize), imatrix RTN (ggml's
    importance-weighted quantizer with this layer's per-column mean x^2) and the method, under the calibration
    metric H (and H_tail when tail positions exist)."""
    baselines = {"_rtn": rtn_quantize(W, lat).dequant.to(W.device),
                 "_imatrix": rtn_quantize(W, lat, imatrix_from_stats(stats)).dequant.to(W.device)}
    metrics = {"": stats.H, "_tail": stats.H_tail} if stats.n_tail else {"": stats.H}
    rep = {
        "group": key,
        "type": lat.name,
        "shape": list(W.shape),
        "n_common": stats.n_common, "n_tail": stats.n_tail,
        "tr_H_common": float(torch.trace(stats.H_common)), "tr_H_tail": float(torch.trace(stats.H_tail)),
    }
    for suffix, H in metrics.items():   # tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) for RTN, imatrix RTN and the method
        den = h_inner(W, W, H)
        for label, W_hat in (*baselines.items(), ("", r.dequant.to(W.device))):
            dW = W - W_hat
            rep[f"rel_err{suffix}{label}"] = h_inner(dW, dW, H) / den if den > 0 else 0.0
    rep.update({k: v for k, v in r.info.items()})
    return rep


def calib_config_dict(cfg: CalibConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d.pop("progress", None)
    d.pop("device", None)      # where it ran does not change the result's definition (the report's versions say)
    return d
