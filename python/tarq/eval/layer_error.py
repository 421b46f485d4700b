"""Held-out layer error: how much of a quantizer's per-layer gain over a reference survives away from its
calibration data.

Each quantized Linear is judged alone, on the FP model's own inputs: for utterance u (reference transcript
teacher-forced) and a system's dequantized weight Ŵ,

    e_u(Ŵ) = Σ_{t∈u} ‖(W − Ŵ) x_t‖²                   x_t: the Linear's input in the FP model

summed over a set, tr(ΔW H ΔWᵀ) with H that set's second moment: the quantity GPTQ and its relatives minimise on
the calibration set (the TARQ paper's eq. 7 metric with λ = 0). Two systems' sums give their error ratio
R = Σ_u e_u(Ŵ_sys) / Σ_u e_u(Ŵ_ref) for that Linear and set: on the calibration set the in-sample gain the solver
reports (report.json ``rel_err`` against ``rel_err_rtn``), on another set the part of it that generalizes. Per kind
of Linear the ratios are summarised by their geometric mean, with a percentile bootstrap over utterances that
resamples every Linear with the same utterances (the layers stay paired, as they are in one model).

Rows: every decoder position, and of the encoder's 30-s window only the frames covering audio
(``CalibSample.n_speech_frames``): the padding frames have the same features in every set, so they carry no domain
difference and would only dilute one. Cross-attention k/v read the encoder output, so they get the same frames.
This is a per-layer measure under FP inputs, not an end-to-end one: it isolates where a solver's fit stops
transferring, not what the errors do downstream (the stop margins and the decoded damage measure that).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

def linear_kind(name: str) -> str:
    """Which part of Whisper a quantized weight belongs to (the rows of the summary table)."""
    if ".encoder." in name:
        return "encoder attention" if ".self_attn." in name else "encoder MLP"
    if ".encoder_attn." in name:
        return "cross-attention k/v" if ("k_proj" in name or "v_proj" in name) else "cross-attention q/out"
    if ".self_attn." in name:
        return "decoder self-attention"
    if ".fc1." in name or ".fc2." in name:
        return "decoder MLP"
    return "output projection"


def reads_encoder_frames(name: str) -> bool:
    """Whether the Linear's rows are encoder frames (the encoder, and cross-attention's k/v on its output)."""
    return ".encoder." in name or ".encoder_attn.k_proj" in name or ".encoder_attn.v_proj" in name


@dataclass
class LayerErrors:
    """e_u per system, Linear and utterance (``errors[label]``: float64 [n_linears, n_utts]) and the signal
    Σ_t ‖W x_t‖² of the FP weights (``signal``: [n_linears, n_utts]), over ``linears`` and ``ids``."""
    linears: list[str]
    ids: list[str]
    errors: dict[str, np.ndarray]
    signal: np.ndarray


def _linear_modules(model: torch.nn.Module, weight_names: Sequence[str]) -> dict[str, torch.nn.Linear]:
    """The nn.Linear that applies each weight (a tied embedding is applied by the output projection)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    by_id: dict[int, str] = {}
    for n in weight_names:
        if n not in params:
            raise ValueError(f"{n}: not a parameter of the FP model")
        by_id[id(params[n])] = n
    found: dict[str, torch.nn.Linear] = {}
    for _, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and id(mod.weight) in by_id:
            found.setdefault(by_id[id(mod.weight)], mod)
    return found


def layer_errors(fp, adapter, samples: Sequence, systems: dict[str, dict[str, torch.Tensor]],
                 progress: Callable[[int], None] | None = None) -> LayerErrors:
    """e_u for every system on ``samples`` (``adapter.prepare_sample`` results of the FP model ``fp``; their
    ``n_speech_frames`` are the encoder rows kept). ``systems[label]`` maps each quantized weight's name to its
    dequantized tensor (every system names the same weights)."""
    labels = list(systems)
    names = sorted(systems[labels[0]])
    for label in labels[1:]:
        if sorted(systems[label]) != names:
            raise ValueError(f"{label}: quantizes other weights than {labels[0]}")
    modules = _linear_modules(fp.model, names)
    names = [n for n in names if n in modules]   # weights no Linear applies (none in Whisper) are skipped
    if not names:
        raise ValueError("no quantized weight is applied by a Linear of the FP model")
    # W and every system's ΔW of one Linear stacked along the output dimension: one GEMM per Linear and forward
    stacked = {n: torch.cat([modules[n].weight.detach().float()] +
                            [modules[n].weight.detach().float() - systems[label][n].float() for label in labels])
               for n in names}
    errors = {label: np.zeros((len(names), len(samples))) for label in labels}
    signal = np.zeros((len(names), len(samples)))
    state = {"u": 0, "frames": 0}

    def hook(i: int, name: str):
        frames = reads_encoder_frames(name)

        def f(_mod, inputs, _out):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
            if frames:
                x = x[: state["frames"]]
            u = state["u"]
            sums = (x @ stacked[name].T).reshape(x.shape[0], len(labels) + 1, -1).pow(2).sum(dim=(0, 2)).tolist()
            signal[i, u] += sums[0]
            for label, e in zip(labels, sums[1:]):
                errors[label][i, u] += e
        return f

    handles = [modules[n].register_forward_hook(hook(i, n)) for i, n in enumerate(names)]
    try:
        for u, s in enumerate(samples):
            state["u"], state["frames"] = u, max(1, int(s.n_speech_frames))
            with torch.inference_mode():
                adapter.analysis_forward(fp.model, s)
            if progress is not None:
                progress(u + 1)
    finally:
        for h in handles:
            h.remove()
    return LayerErrors(names, [s.id for s in samples], errors, signal)


@dataclass
class ErrorRatio:
    """Geometric mean over ``n_linears`` Linears of Σ_u e_u(system) / Σ_u e_u(reference), with its bootstrap CI."""
    ratio: float
    lo: float
    hi: float
    n_linears: int


def geomean_error_ratio(system: np.ndarray, reference: np.ndarray, n_boot: int = 2000, seed: int = 0,
                        confidence: float = 0.95) -> ErrorRatio | None:
    """``system`` and ``reference``: e_u [n_linears, n_utts] on the same utterances. Linears whose reference error
    is zero on the set are left out (no ratio); None when none is left."""
    system, reference = np.asarray(system, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if system.shape != reference.shape or system.ndim != 2 or system.shape[1] == 0:
        raise ValueError("layer error ratio: two [n_linears, n_utts] arrays of one shape are needed")
    keep = reference.sum(axis=1) > 0
    if not keep.any():
        return None
    system, reference = system[keep], reference[keep]

    def geo(s_sum: np.ndarray, r_sum: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.exp(np.mean(np.log(s_sum / r_sum), axis=0))

    observed = float(geo(system.sum(axis=1), reference.sum(axis=1)))
    rng = np.random.default_rng(seed)
    n = system.shape[1]
    boot = np.empty(n_boot)
    for b in range(n_boot):   # one resample of utterances for every Linear
        idx = rng.integers(0, n, size=n)
        r_sum = reference[:, idx].sum(axis=1)
        ok = r_sum > 0
        boot[b] = geo(system[ok][:, idx].sum(axis=1), r_sum[ok]) if ok.any() else np.nan
    boot = boot[np.isfinite(boot)]
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(boot, [tail, 100 - tail]) if len(boot) else (math.nan, math.nan)
    return ErrorRatio(observed, float(lo), float(hi), int(keep.sum()))


def relative_error(errors: np.ndarray, signal: np.ndarray) -> float | None:
    """Geometric mean over Linears of Σ_u e_u / Σ_u ‖W x‖² (the solver report's ``rel_err``, on this set)."""
    e, s = np.asarray(errors).sum(axis=1), np.asarray(signal).sum(axis=1)
    ok = (s > 0) & (e > 0)
    return float(np.exp(np.mean(np.log(e[ok] / s[ok])))) if ok.any() else None
