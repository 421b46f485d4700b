"""End to end: calibration utterances -> samples -> quantized weights -> quantized-model directory."""
from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..formats import QuantFormat
from ..methods.base import QuantMethod
from ..models.adapter import CalibSample, ModelAdapter, get_adapter
from .memory import RssSampler, peak_rss_mb
from .pipeline import CalibConfig, apply_method_overrides, calib_config_dict, run_calibration
from .selection import select_calibration
from .type_policy import TypePolicy, as_policy

log = logging.getLogger(__name__)


PSEUDO_LABEL_MAX_TOKENS = 224   # Whisper's own per-window sample_len


def pseudo_label(loaded, audios: Sequence) -> list[str]:
    """Greedy FP transcripts for utterances without a reference (the eval engineer's torch backend)."""
    from ..eval.backends import get_backend

    backend = get_backend("torch", loaded, threads=None, max_new_tokens=PSEUDO_LABEL_MAX_TOKENS)
    return backend.transcribe(list(audios))


def prepare_samples(loaded, adapter: ModelAdapter, utterances: Sequence, cfg: CalibConfig
                    ) -> tuple[list[CalibSample], dict[str, Any]]:
    """Load audio, fill missing transcripts with FP greedy pseudo-labels, tokenize and tag."""
    from ..data import load_audio

    audios = [load_audio(u.audio) for u in utterances]
    texts = [u.text if (u.text and u.text.strip()) else None for u in utterances]
    missing = [i for i, t in enumerate(texts) if t is None]
    if missing:
        log.info("%d/%d calibration utterances have no transcript: pseudo-labelling with the FP model (greedy)",
                 len(missing), len(texts))
        for i, t in zip(missing, pseudo_label(loaded, [audios[i] for i in missing])):
            texts[i] = t
    samples = [adapter.prepare_sample(loaded, u.id, a, t, zipf_threshold=cfg.zipf_threshold, tag_by=cfg.tag_by)
               for u, a, t in zip(utterances, audios, texts)]
    n_pos = sum(s.tail.numel() for s in samples)
    n_tail = sum(int(s.tail.sum()) for s in samples)
    info = {"n_utterances": len(samples), "n_pseudo_labelled": len(missing), "ids": [s.id for s in samples],
            "decoder_positions": n_pos, "tail_positions": n_tail,
            "tail_share": n_tail / n_pos if n_pos else 0.0,
            "audio_seconds": sum(a.shape[0] for a in audios) / 16000.0}
    return samples, info


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


def _versions(device: torch.device) -> dict[str, str]:
    import transformers

    from .. import __version__
    from ..kernels import backend_name

    from ..kernels import native_info

    out = {"tarq": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "kernels": backend_name(), "device": str(device),
           **native_info()}
    if device.type == "cuda":
        out["cuda_device"] = torch.cuda.get_device_name(device)
    return out


def quantize_loaded_model(loaded, method: QuantMethod, fmt: QuantFormat | TypePolicy, utterances: Sequence, out_dir,
                          cfg: CalibConfig | None = None, calib_name: str | None = None,
                          calib_origin: Sequence[str] | None = None) -> Path:
    """Quantize ``loaded`` (a tarq LoadedModel) and write the quantized-model directory ``out_dir``.

    ``fmt``: one lattice for every weight, or a ``TypePolicy`` (per-name overrides, e.g. a Q8_0 audio tower)."""
    from ..qmodel import QuantizedTensor, save_quantized_model

    cfg = cfg or CalibConfig()
    device = resolve_device(cfg.device)
    from ..kernels import set_num_threads

    set_num_threads(max(1, int(cfg.threads)))   # torch's pool and tarq._C's OpenMP pool
    torch.manual_seed(cfg.seed)
    t_start = time.perf_counter()
    cfg = apply_method_overrides(cfg, method)
    adapter = get_adapter(getattr(loaded, "family", "whisper"))
    policy = as_policy(fmt)
    model = loaded.model.eval()
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(f"{getattr(loaded, 'name', 'model')}: parameter {name} contains NaN or Inf")

    samples, calib_info = [], {}
    t0 = time.perf_counter()
    if method.needs_stats:
        if not utterances:
            raise ValueError(f"method {method.name!r} needs calibration data, but the calibration set is empty")
        chosen = select_calibration(utterances, cfg.n_calib, cfg.seed, cfg.calib_select, calib_origin,
                                    cfg.zipf_threshold)
        samples, calib_info = prepare_samples(loaded, adapter, chosen, cfg)
    t_prep = time.perf_counter() - t0

    home = next(model.parameters()).device
    model.to(device)
    try:
        with RssSampler() as rss:
            result = run_calibration(model, adapter, samples, method, fmt, cfg)
    finally:
        model.to(home)   # the caller's model comes back where it was

    quantized = {n: QuantizedTensor(r.codes.cpu().contiguous(), r.scales.cpu().contiguous(), policy.format_for(n))
                 for n, r in result.quantized.items()}
    tied = adapter.tied_parameters(model)
    floats = {k: v.detach().float().cpu() for k, v in model.state_dict().items()
              if k not in quantized and k not in tied}
    config = json.loads(model.config.to_json_string())
    timing = {"prepare": t_prep, **result.timing}
    timing["total"] = time.perf_counter() - t_start
    report = {
        "method": method.config_dict(),
        "format": {"name": policy.default.name, "group_size": policy.default.group_size,
                   **({"overrides": policy.describe()["overrides"]} if not policy.is_uniform else {})},
        "model": getattr(loaded, "name", None),
        "calibration": {"name": calib_name, **calib_config_dict(cfg), **calib_info},
        "seed": cfg.seed,
        "versions": _versions(device),
        "timing_s": timing,
        "memory": {"peak_rss_mb": peak_rss_mb(), "peak_rss_mb_by_phase": rss.peaks(result.spans)},
        "tied_parameters": tied,
        **({"analysis": result.analysis} if result.analysis else {}),
        "layers": result.layers,
    }
    meta = {"method": method.name, "source_model": getattr(loaded, "name", None),
            "calibration": calib_name, "method_config": method.config_dict()}
    save_extras = getattr(loaded, "save_pretrained_extras", None)
    path = save_quantized_model(out_dir, family=adapter.family, config=config, quantized=quantized, floats=floats,
                                meta=meta, report=report, save_extras=save_extras)
    log.info("wrote %s (%d quantized tensors) in %.1f s", path, len(quantized), timing["total"])
    return path
