"""End to end: calibration utterances -> samples -> quantized weights -> quantized-model directory."""
from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.audio import SAMPLE_RATE
from ..ggml import TypePlan
from ..methods.base import QuantMethod
from ..models.adapter import CalibSample, ModelAdapter, get_adapter
from .memory import RssSampler, peak_rss_mb
from .pipeline import CalibConfig, apply_method_overrides, calib_config_dict, plan_lattices, run_calibration
from .scale_tune import tune_block_floats
from .selection import select_calibration

log = logging.getLogger(__name__)


PSEUDO_LABEL_MAX_TOKENS = 224   # Whisper's own per-window sample_len


def pseudo_label(loaded, audios: Sequence) -> list[str]:
    """Greedy FP transcripts for utterances without a reference (the eval engineer's torch backend)."""
    from ..eval.backends import get_backend

    backend = get_backend("torch", loaded, threads=None, max_new_tokens=PSEUDO_LABEL_MAX_TOKENS)
    return backend.transcribe(list(audios))


WINDOW_SAMPLES = 30 * SAMPLE_RATE   # Whisper's encoder window


def split_long_utterances(utterances: Sequence, audios: Sequence, texts: Sequence):
    """Calibration clips over 30 s cut at quiet points into <= 30-s pieces (tarq.eval.segment.split_long).

    A reference transcript cannot be split without a word alignment, so the pieces get the FP model's own greedy
    transcripts (the pseudo-label path, as for clips without a reference); the statistics then describe what the
    model hears in each window. Returns (utterances, audios, texts, number of clips split)."""
    from dataclasses import replace

    from ..eval.segment import split_long

    out_u, out_a, out_t, n_long, n_pieces = [], [], [], 0, 0
    for u, a, t in zip(utterances, audios, texts):
        if a.shape[0] <= WINDOW_SAMPLES:
            out_u.append(u), out_a.append(a), out_t.append(t)
            continue
        n_long += 1
        pieces = split_long(a)
        n_pieces += len(pieces)
        for k, piece in enumerate(pieces):
            out_u.append(replace(u, id=f"{u.id}#{k + 1}", text=None, duration=piece.shape[0] / SAMPLE_RATE))
            out_a.append(piece)
            out_t.append(None)
    if n_long:
        log.warning("%d calibration clip(s) over 30 s cut at quiet points into %d pieces of <= 30 s, transcribed by "
                    "the FP model (a reference text cannot be split without an alignment)", n_long, n_pieces)
    return out_u, out_a, out_t, n_long


def prepare_samples(loaded, adapter: ModelAdapter, utterances: Sequence, cfg: CalibConfig
                    ) -> tuple[list[CalibSample], dict[str, Any]]:
    """Load audio, fill missing transcripts with FP greedy pseudo-labels, tokenize and tag."""
    from ..data import load_audio

    audios = [load_audio(u.audio) for u in utterances]
    texts = [u.text if (u.text and u.text.strip()) else None for u in utterances]
    utterances, audios, texts, n_long = split_long_utterances(utterances, audios, texts)
    missing = [i for i, t in enumerate(texts) if t is None]
    if missing:
        log.info("%d/%d calibration utterances have no transcript: pseudo-labelling with the FP model (greedy)",
                 len(missing), len(texts))
        for i, t in zip(missing, pseudo_label(loaded, [audios[i] for i in missing])):
            texts[i] = t
    ids = [u.id for u in utterances]
    augmented = add_augmented_copies(ids, audios, texts, cfg)
    samples = [adapter.prepare_sample(loaded, i, a, t, zipf_threshold=cfg.zipf_threshold, tag_by=cfg.tag_by)
               for i, a, t in zip(ids, audios, texts)]
    n_pos = sum(s.tail.numel() for s in samples)
    n_tail = sum(int(s.tail.sum()) for s in samples)
    info = {"n_utterances": len(samples), "n_pseudo_labelled": len(missing), "n_long_split": n_long,
            "ids": [s.id for s in samples],
            "decoder_positions": n_pos, "tail_positions": n_tail,
            "tail_share": n_tail / n_pos if n_pos else 0.0,
            "audio_seconds": sum(a.shape[0] for a in audios) / SAMPLE_RATE,
            **({"augmented": augmented} if augmented else {})}
    return samples, info


def add_augmented_copies(ids: list[str], audios: list, texts: list, cfg: CalibConfig) -> list[dict[str, Any]]:
    """Append ``cfg.augment_copies`` augmented copies of every utterance to ``ids``/``audios``/``texts`` (in place;
    id ``ID#augC``, the original's transcript) and return what each copy drew, for the report."""
    from .augment import augmented_copies, parse_augment

    kinds = parse_augment(cfg.augment)
    if not kinds:
        return []
    records, n_originals, too_long = [], len(ids), []
    for copy, i, audio, drawn in augmented_copies(list(audios), kinds, cfg.augment_copies, cfg.seed):
        if audio.shape[0] > WINDOW_SAMPLES:   # slowed down or reverberated past the window: its transcript would
            too_long.append(f"{ids[i]}#aug{copy}")   # run beyond the audio the encoder sees
            continue
        ids.append(f"{ids[i]}#aug{copy}")
        audios.append(audio)
        texts.append(texts[i])
        records.append({"id": ids[-1], **drawn})
    if too_long:
        log.warning("%d augmented calibration copies over 30 s left out: %s", len(too_long), ", ".join(too_long))
        records.append({"left_out_over_30s": too_long})
    log.info("calibration: %d augmented copies (%s) beside %d utterances", len(ids) - n_originals, cfg.augment,
             n_originals)
    return records


def resolve_device(spec: str) -> torch.device:
    """``cfg.device`` as a torch device, with a clear error when this machine cannot provide it."""
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"--device {spec!r}: not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA device is visible")
            raise ValueError(f"--device {spec}: {why} (torch {torch.__version__})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device.type != "cpu":
        raise ValueError(f"--device {spec}: only cpu and cuda (cuda:N) are supported")
    return device


def thread_report() -> dict[str, Any]:
    """What each pool uses now (after ``tarq._threads.set_threads``): torch's intra-op pool, tarq._C's OpenMP pool."""
    out: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    try:
        from .. import _C
    except ImportError:
        return out
    out.update(native_threads=_C.max_threads(), isa=_C.isa())
    return out


def _versions(device: torch.device) -> dict:
    import transformers

    from .. import __version__
    from .._machine import cpu_record
    from .._numerics import numerics_record
    from ..kernels import backend_name, native_info

    native = native_info()
    out = {"tarq": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "kernels": backend_name(), "device": str(device),
           **cpu_record(), **native, "numerics": numerics_record(native["native_blas"])}
    if device.type == "cuda":
        out["cuda_device"] = torch.cuda.get_device_name(device)
    return out


def quantize_loaded_model(loaded, method: QuantMethod, plan: TypePlan | str, utterances: Sequence, out_dir,
                          cfg: CalibConfig | None = None, calib_name: str | None = None,
                          calib_origin: Sequence[str] | None = None) -> Path:
    """Quantize ``loaded`` (a tarq LoadedModel) onto ``plan``'s types and write the quantized-model directory.

    ``calib_origin``: the source (``--calib`` set) of each utterance, for the per-source selection strategies."""
    from ..qmodel import QuantizedTensor, save_quantized_model

    cfg = cfg or CalibConfig()
    plan = plan if isinstance(plan, TypePlan) else TypePlan(plan)
    device = resolve_device(cfg.device)
    from .._threads import set_threads

    set_threads(cfg.threads)   # torch pools and the native kernels' OpenMP pool
    threads = thread_report()
    torch.manual_seed(cfg.seed)
    t_start = time.perf_counter()
    cfg = apply_method_overrides(cfg, method)
    adapter = get_adapter(getattr(loaded, "family", "whisper"))
    model = loaded.model.eval()
    plan_lattices(model, adapter, plan)   # a type that does not fit fails here, before any audio is read
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(f"{getattr(loaded, 'name', 'model')}: parameter {name} contains NaN or Inf")

    samples, calib_info = [], {}
    t0 = time.perf_counter()
    tune = cfg.scale_tune_options()
    if method.needs_stats or tune.mode != "none":
        if not utterances:
            why = f"method {method.name!r}" if method.needs_stats else f"--scale-tune {tune.mode}"
            raise ValueError(f"{why} needs calibration data, but the calibration set is empty")
        chosen = select_calibration(utterances, cfg.n_calib, cfg.seed, cfg.calib_select, calib_origin,
                                    cfg.zipf_threshold)
        samples, calib_info = prepare_samples(loaded, adapter, chosen, cfg)
    t_prep = time.perf_counter() - t0

    home = next(model.parameters()).device
    model.to(device)
    try:
        with RssSampler() as rss:
            result = run_calibration(model, adapter, samples if method.needs_stats else [], method, plan, cfg)
            tuned, tune_report = None, None
            if tune.mode != "none":
                t0 = time.perf_counter()
                tuned, tune_report = tune_block_floats(
                    model, adapter, samples, {n: (r.qtype, r.data.cpu().numpy()) for n, r in result.quantized.items()},
                    result.floats, tune, progress=cfg.progress)
                result.timing["scale_tune"] = time.perf_counter() - t0
    finally:
        model.to(home)   # the caller's model comes back where it was

    quantized = {n: QuantizedTensor(r.qtype, (torch.from_numpy(tuned[n]) if tuned else r.data.cpu()).contiguous(),
                                    tuple(r.dequant.shape))
                 for n, r in result.quantized.items()}
    tied = adapter.tied_parameters(model)
    floats = {k: v.detach().float().cpu() for k, v in model.state_dict().items()
              if k not in quantized and k not in tied}
    floats.update(result.floats)   # biases the solve corrected (CalibConfig.bias_correction)
    config = json.loads(model.config.to_json_string())
    timing = {"prepare": t_prep, **result.timing}
    timing["total"] = time.perf_counter() - t_start
    report = {
        "method": method.config_dict(),
        "format": plan.describe(),
        "threads": threads,
        "model": getattr(loaded, "name", None),
        "calibration": {"name": calib_name, **calib_config_dict(cfg), **calib_info},
        "seed": cfg.seed,
        "versions": _versions(device),
        "timing_s": timing,
        "memory": {"peak_rss_mb": peak_rss_mb(), "peak_rss_mb_by_phase": rss.peaks(result.spans)},
        "tied_parameters": tied,
        **({"analysis": result.analysis} if result.analysis else {}),
        **({"scale_tune": tune_report} if tune_report else {}),
        "layers": result.layers,
    }
    meta = {"method": method.name, "source_model": getattr(loaded, "name", None), "format": plan.default.name,
            "group_size": plan.group_size, "lattice_fit": plan.fit,
            "calibration": calib_name, "method_config": method.config_dict()}
    save_extras = getattr(loaded, "save_pretrained_extras", None)
    path = save_quantized_model(out_dir, family=adapter.family, config=config, quantized=quantized, floats=floats,
                                meta=meta, report=report, save_extras=save_extras)
    log.info("wrote %s (%d quantized tensors) in %.1f s", path, len(quantized), timing["total"])
    return path
