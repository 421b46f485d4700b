"""The FP analysis pass: loss-sensitivity position weights and encoder-frame tail tags (issue 15).

One teacher-forced forward (and, for sensitivity weights, one backward) of the *FP* model per calibration utterance,
before the true-sequential quantization starts. It produces per-utterance data the statistics then use:

* **Loss-sensitivity weights** (TARQ paper §6.2 / §4.1's family H(α) = Σ_f α_f H̄_f, its stated future work). For
  the Linears of a group G and position t, s_t = Σ_{ℓ∈G} ‖∂L/∂y_{ℓ,t}‖² (y = the Linear's output), a diagonal
  Fisher proxy of how much the teacher-forced loss L reacts to an error in that position's output. The group's
  second moments become H = Σ_t w_t x_t x_tᵀ (and H_Δ likewise) with
        w_t = (1 − β) + β · s_t / mean(s)          mean over every position of every calibration utterance,
  so β = 0 is plain GPTQ (w ≡ 1) and β = 1 the pure Fisher weighting; the floor 1 − β keeps positions the FP model
  is confident about from losing all protection.
  The loss uses labels **sampled** from the FP model's own predictive distribution at every position (the true
  Fisher's expectation, one Monte-Carlo draw; the cross terms between positions then vanish in expectation), or
  the **reference** transcript (the "empirical Fisher", which over-weights positions the FP model gets wrong).
* **Stop-decision sensitivity** (``stop``): the same s_t, with L the binary cross-entropy of the decision to end
  the utterance, made at every position from the end-of-text probability p_t = softmax(z_t)[eot]:
        L_stop = −Σ_t [ y_t log p_t + (1 − y_t) log(1 − p_t) ],   y_t = 1 only where the transcript ends.
  Its gradient at the logits is (p_t − y_t) times the end token's softmax sensitivity, so the weight concentrates
  on the few positions where stopping is a live option — the transcript's end and the sentence ends the FP model
  would almost stop at — which the token loss (dominated by the text tokens) leaves with ordinary weight. Early
  stops and loops are errors in exactly that decision (benchmarks/README.md "stop margins"). The label is the
  transcript's end (a Bernoulli draw of a decision with p ≈ 10⁻⁴ would almost never draw a stop), so
  ``sensitivity_labels`` applies to ``fisher`` only.
* **Encoder-frame tags** (calib/frame_tags.py): frames the alignment heads attend to from tail decoder positions
  become tail rows of the encoder groups and of the cross-attention k/v, so rareBAL/TARQ act there too.

Adapters provide ``analysis_forward(model, sample, attention_heads)`` -> (logits [P, V], targets [P], cross-attention
map [P, F] or None) and ``sensitivity_module(weight_name)`` (the module whose output a weight produces).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from .frame_tags import DEFAULT_DILATION, DEFAULT_REL_THRESHOLD, frames_from_attention

log = logging.getLogger(__name__)

SENSITIVITY = ("none", "fisher", "stop")
SENSITIVITY_LABELS = ("sampled", "reference")
FRAME_TAGS = ("none", "attention")
POSITION_WEIGHTS_KEY = "position_weights"


@dataclass(frozen=True)
class AnalysisOptions:
    sensitivity: str = "none"
    sensitivity_labels: str = "sampled"
    sensitivity_mix: float = 1.0          # β
    frame_tags: str = "none"
    frame_rel_threshold: float = DEFAULT_REL_THRESHOLD
    frame_dilation: int = DEFAULT_DILATION
    seed: int = 0

    def __post_init__(self):
        if self.sensitivity not in SENSITIVITY:
            raise ValueError(f"sensitivity must be one of {SENSITIVITY}, got {self.sensitivity!r}")
        if self.sensitivity_labels not in SENSITIVITY_LABELS:
            raise ValueError(f"sensitivity labels must be one of {SENSITIVITY_LABELS}, got {self.sensitivity_labels!r}")
        if not 0.0 <= self.sensitivity_mix <= 1.0:
            raise ValueError(f"sensitivity mix must be in [0, 1], got {self.sensitivity_mix}")
        if self.frame_tags not in FRAME_TAGS:
            raise ValueError(f"frame tags must be one of {FRAME_TAGS}, got {self.frame_tags!r}")

    @property
    def active(self) -> bool:
        return self.sensitivity != "none" or self.frame_tags != "none"


def _group_modules(adapter, blocks) -> dict[str, list[str]]:
    """{group key: [module names whose outputs carry the group's sensitivity]} (keys shared across blocks merge)."""
    out: dict[str, list[str]] = {}
    for b in blocks:
        for s in b.stages:
            for g in s.groups:
                mods = out.setdefault(g.key, [])
                for w in g.weights:
                    m = adapter.sensitivity_module(w)
                    if m not in mods:
                        mods.append(m)
    return out


def analyse(model: torch.nn.Module, adapter, samples: list, opts: AnalysisOptions, blocks=None) -> dict[str, Any]:
    """Run the analysis pass; sets ``sample.frame_tail`` and ``sample.extra["position_weights"]`` in place and
    returns a JSON-able summary for report.json."""
    if not opts.active:
        return {}
    blocks = blocks if blocks is not None else adapter.blocks(model)
    want_grad = opts.sensitivity != "none"
    heads = adapter.alignment_heads(model) if opts.frame_tags == "attention" else ()
    group_mods = _group_modules(adapter, blocks) if want_grad else {}
    module_names = sorted({m for mods in group_mods.values() for m in mods})
    gen = torch.Generator(device="cpu").manual_seed(opts.seed)
    raw: list[dict[str, torch.Tensor]] = []
    n_tagged, n_frames = 0, 0
    # gradients are wanted at activations only: the weights must not require grad (no .grad buffers, no side effect)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        _run(model, adapter, samples, opts, want_grad, heads, group_mods, module_names, gen, raw)
    finally:
        for p, f in flags:
            p.requires_grad_(f)
    for s in samples:
        if s.frame_tail is not None:
            n_tagged += int(s.frame_tail.sum())
            n_frames += int(s.n_speech_frames)

    summary: dict[str, Any] = {"options": {k: getattr(opts, k) for k in opts.__dataclass_fields__}}
    if opts.frame_tags == "attention":
        summary["frame_tags"] = {"tagged_frames": n_tagged, "speech_frames": n_frames,
                                 "tagged_share_of_speech": n_tagged / n_frames if n_frames else 0.0,
                                 "heads": [list(h) for h in heads]}
    if want_grad:
        summary["position_weights"] = _normalise(samples, raw, opts.sensitivity_mix)
    return summary


def _run(model, adapter, samples, opts, want_grad, heads, group_mods, module_names, gen, raw) -> None:
    from tqdm.auto import tqdm

    for s in tqdm(samples, desc="analysis", unit="utt", leave=False, disable=len(samples) < 8):
        if want_grad:
            sq, attn = _one_sample(model, adapter, s, module_names, heads, opts, gen)
            raw.append({key: sum(sq[m] for m in mods) for key, mods in group_mods.items()})
        else:
            with torch.no_grad():
                _, _, attn = adapter.analysis_forward(model, s, heads)
        if opts.frame_tags == "attention":
            s.frame_tail = frames_from_attention(attn, s.tail, rel_threshold=opts.frame_rel_threshold,
                                                 dilation=opts.frame_dilation).to(s.tail.device)


def _one_sample(model, adapter, sample, module_names, heads, opts, gen):
    """({module: squared output-gradient norm per position}, cross-attention map or None) for one utterance."""
    sq: dict[str, torch.Tensor] = {}
    handles = []

    def capture(name):
        def fwd_hook(_mod, _inp, out):
            if out.requires_grad:
                out.register_hook(lambda g, name=name: sq.__setitem__(
                    name, sq.get(name, 0) + g.detach().float().pow(2).sum(-1).reshape(-1)))
        return fwd_hook

    for name in module_names:
        handles.append(model.get_submodule(name).register_forward_hook(capture(name)))
    try:
        with torch.enable_grad():
            logits, targets, attn = adapter.analysis_forward(model, sample, heads, requires_grad=True)
            if opts.sensitivity == "stop":
                loss = stop_decision_loss(logits, targets)
            else:
                if opts.sensitivity_labels == "sampled":
                    probs = torch.softmax(logits.detach().float(), dim=-1).cpu()
                    labels = torch.multinomial(probs, 1, generator=gen).reshape(-1).to(logits.device)
                else:
                    labels = targets
                loss = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
            loss.backward()
    finally:
        for h in handles:
            h.remove()
    missing = [m for m in module_names if m not in sq]
    if missing:
        raise RuntimeError(f"analysis pass: no gradient reached {missing[:3]} (utterance {sample.id})")
    return sq, (attn.detach() if attn is not None else None)


def stop_decision_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L_stop = −Σ_t [y_t log p_t + (1 − y_t) log(1 − p_t)], p_t = softmax(z_t)[eot], y_t = [targets_t = eot].

    The end token is the last target: every adapter's teacher-forced sequence ends with it (models/adapter.py)."""
    if targets.numel() == 0:
        raise ValueError("stop sensitivity: an utterance without decoder positions")
    eot = int(targets[-1])
    log_p = torch.log_softmax(logits.float(), dim=-1)[:, eot]
    # log(1 − p) = log(−expm1(log p)); the floor keeps a position the FP model is certain to stop at finite
    log_not = torch.log(torch.clamp(-torch.expm1(log_p), min=1e-30))
    stop = targets == eot
    return -(torch.where(stop, log_p, log_not)).sum()


def _normalise(samples, raw: list[dict[str, torch.Tensor]], beta: float) -> dict[str, Any]:
    """w = (1 − β) + β s / mean(s) per group key; stored on each sample; returns a per-key summary."""
    summary = {}
    keys = raw[0].keys() if raw else ()
    for key in keys:
        allv = torch.cat([r[key] for r in raw])
        mean = float(allv.double().mean())
        if not mean > 0:
            raise ValueError(f"{key}: the loss gradient is zero at every calibration position")
        for s, r in zip(samples, raw):
            w = (1.0 - beta) + beta * (r[key].double() / mean)
            s.extra.setdefault(POSITION_WEIGHTS_KEY, {})[key] = w.float().to(s.tail.device)
        rel = allv.double() / mean
        summary[key] = {"positions": int(allv.numel()), "cv": float(rel.std()),
                        "max_over_mean": float(rel.max()), "share_top_1pct": _top_share(rel, 0.01)}
    return summary


def _top_share(rel: torch.Tensor, frac: float) -> float:
    k = max(1, int(round(frac * rel.numel())))
    return float(rel.topk(k).values.sum() / rel.sum())
