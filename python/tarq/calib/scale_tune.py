"""End-to-end tuning of the stored block floats against the FP model's token distributions (``--scale-tune kl``).

Every earlier stage fits one Linear at a time: GPTQ / QEP minimise that layer's H-weighted output error, and the
least-squares refit (tarq.ggml.refit) re-solves a group's floats for the same per-layer objective. Greedy decoding
fails on decisions of the whole network, though: a first word 0.16 nats from flipping, or an end-of-text token
that wins one position early (benchmarks/README.md "Stop margins", "Where the new greedy failures start"). This
stage keeps every code and every integer field the solver chose. It moves only the floats the file stores in fp16
(d; Q4_1/Q5_1's m; the K-quants' dmin), so that the quantized model's teacher-forced token distribution comes
closer to the FP model's on the calibration transcripts:

    ŵ = Σ_f expand(p_f ⊙ (1 + s_f)) ⊙ u_f                                                                    (1)
    L(s) = mean_u 1/|P_u| Σ_{t ∈ P_u} KL( p_FP(· | x_u, y_<t) ‖ p_Q(· | x_u, y_<t; s) )                      (2)

In (1), p_f are the solver's stored floats of field f, one per ggml block; ``expand`` repeats each over its
block's columns; u_f are the field's unit values (tarq.ggml.refit.unit_values: the weights the codes give with
that float set to 1). s_f is one relative offset per stored float, and 0 is the solver's file. In (2), P_u is every
decoder row of calibration utterance u's teacher-forced sequence (the adapter's ``analysis_forward``), the
end-of-text position included (the stop decision) and so are the forced prompt's rows, which the file should match
too. The KL is tarq.eval.token_kl's. L is minimised with Adam, a few utterances per step. The encoder's floats
learn from the same loss, through cross-attention.

A held-out slice of the calibration utterances is never trained on. After every epoch it is scored with the
floats rounded to fp16, as the file stores them. The stage keeps the epoch with the lowest held-out KL, and
epoch 0 (the solver's file, byte for byte) competes too, so the stage never ships floats that fit the held-out
utterances worse than the solver's.

The idea belongs to AdaRound / OmniQuant / AutoRound: learned rounding or clipping, fitted against a block's or a
network's output. Here it is restricted to what a ggml file can still change once the codes are fixed.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..eval.token_kl import kl_rows
from ..ggml.refit import unit_values

log = logging.getLogger(__name__)

SCALE_TUNE = ("none", "kl")


@dataclass(frozen=True)
class ScaleTuneOptions:
    mode: str = "none"        # "none" | "kl" (eq. 2)
    epochs: int = 3
    lr: float = 1e-3          # Adam's step on s; fp16 floats resolve relative steps of 2⁻¹¹ ≈ 5e-4
    batch: int = 4            # utterances per Adam step
    holdout: float = 0.125    # share of the calibration utterances held out for the epoch choice
    seed: int = 0

    def __post_init__(self):
        if self.mode not in SCALE_TUNE:
            raise ValueError(f"scale tuning must be one of {SCALE_TUNE}, got {self.mode!r}")
        if self.epochs < 0:
            raise ValueError(f"scale-tune epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"scale-tune learning rate must be positive, got {self.lr}")
        if self.batch < 1:
            raise ValueError(f"scale-tune batch must be >= 1, got {self.batch}")
        if not 0 < self.holdout < 1:
            raise ValueError(f"scale-tune holdout must be in (0, 1), got {self.holdout}")


class BlockFloats:
    """One quantized tensor's fp16 block floats as a differentiable function of the offsets s (eq. 1)."""

    def __init__(self, qtype, data: np.ndarray, n: int, device: torch.device | str = "cpu"):
        self.qtype, self.n = qtype, int(n)
        self.data = np.ascontiguousarray(data)
        self.codes, self.params = qtype.decode(self.data, self.n)
        self.fields = qtype.refit_fields
        units = unit_values(qtype, self.codes, self.params)
        self.units = [torch.from_numpy(u.astype(np.float32)).to(device) for u in units]
        p0 = np.stack([self.params[f].astype(np.float32) for f in self.fields]) if self.fields else \
            np.zeros((0,) + self.params.shape, np.float32)
        self.p0 = torch.from_numpy(p0).to(device)                            # [F, rows, blocks]
        self.offset = torch.zeros_like(self.p0, requires_grad=True)          # s, eq. (1)

    def values(self, rounded: bool = False) -> torch.Tensor:
        """p ⊙ (1 + s) [F, rows, blocks]; ``rounded``: at fp16, as the file stores them."""
        p = self.p0 * (1 + self.offset)
        return p.half().float() if rounded else p

    def weight(self, rounded: bool = False) -> torch.Tensor:
        """ŵ [rows, n] of eq. (1)."""
        p = self.values(rounded)
        w = None
        for k, u in enumerate(self.units):
            term = p[k].repeat_interleave(self.qtype.block_size, dim=1) * u
            w = term if w is None else w + term
        return w

    def stored(self) -> tuple[np.ndarray, dict[str, float]]:
        """The ggml bytes with the tuned floats at fp16 (a block whose float would not be finite at fp16 keeps the
        solver's), and a summary of how far they moved. With every offset 0 these are the solver's own bytes."""
        if not self.fields or not bool(self.offset.detach().any()):
            return self.data, {"blocks": int(self.p0[0].numel()) if self.fields else 0, "blocks_changed": 0,
                               "median_rel_change": 0.0, "max_rel_change": 0.0}
        new = self.params.copy()
        p = self.values(rounded=True).detach().cpu().numpy()
        changed = np.zeros(self.params.shape, dtype=bool)
        rel = []
        for k, f in enumerate(self.fields):
            old = self.params[f].astype(np.float32)
            with np.errstate(over="ignore", invalid="ignore"):
                v = p[k].astype(np.float16)
            ok = np.isfinite(v.astype(np.float32))
            v = np.where(ok, v, self.params[f])
            new[f] = v
            changed |= v != self.params[f]
            nz = old != 0
            rel.append(np.abs(v.astype(np.float32)[nz] / old[nz] - 1))
        rel = np.concatenate(rel)
        data = self.qtype.encode(self.codes, new)
        return data, {"blocks": int(changed.size), "blocks_changed": int(changed.sum()),
                      "median_rel_change": float(np.median(rel)) if rel.size else 0.0,
                      "max_rel_change": float(rel.max()) if rel.size else 0.0}


def token_kl(teacher_logp: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Eq. (2) for one utterance: the mean over positions of KL(teacher ‖ student), nats (tarq.eval.token_kl's
    definition, which also scores held-out sets against F16)."""
    return kl_rows(teacher_logp, student_logits).mean()


def _install(model: torch.nn.Module, names: Sequence[str], tensor: torch.Tensor) -> None:
    """Make ``tensor`` the weight every name in ``names`` reads in the forward (a plain attribute in place of the
    Parameter, so that gradients flow to whatever ``tensor`` was computed from)."""
    for full in names:
        mod_name, _, leaf = full.rpartition(".")
        mod = model.get_submodule(mod_name)
        mod._parameters.pop(leaf, None)
        setattr(mod, leaf, tensor)


def _split(n: int, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    if n < 2:
        raise ValueError(f"--scale-tune needs at least 2 calibration utterances (one is held out), got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_hold = min(n - 1, max(1, round(holdout * n)))
    return sorted(order[n_hold:]), sorted(order[:n_hold])


def tune_block_floats(model_fp: torch.nn.Module, adapter, samples: Sequence,
                      quantized: dict[str, tuple[Any, np.ndarray]], floats: dict[str, torch.Tensor],
                      opts: ScaleTuneOptions, progress: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tune the block floats of every quantized weight (eq. 1–2).

    ``quantized``: weight name -> (ggml type, bytes uint8 [rows, row_bytes]); ``floats``: float parameters that
    differ from ``model_fp``'s (corrected biases). Returns the new bytes per weight (the solver's where the
    held-out choice is epoch 0) and the report section."""
    import copy

    from tqdm.auto import tqdm

    train, hold = _split(len(samples), opts.holdout, opts.seed)
    device = next(model_fp.parameters()).device
    samples = [s.to(device) for s in samples]      # once: every epoch reads them again
    aliases: dict[str, list[str]] = {n: [n] for n in quantized}
    for alias, target in adapter.tied_parameters(model_fp).items():
        if target in aliases:
            aliases[target].append(alias)

    with torch.no_grad():
        teacher = []
        for s in tqdm(samples, desc="scale tune: FP targets", disable=not progress, leave=False):
            logits = adapter.analysis_forward(model_fp, s)[0]
            teacher.append(torch.log_softmax(logits.float(), dim=-1))

    student = copy.deepcopy(model_fp).eval().requires_grad_(False)
    if floats:
        sd = student.state_dict()
        with torch.no_grad():
            for k, v in floats.items():
                sd[k].copy_(v.to(sd[k].device, sd[k].dtype))
    shapes = dict(model_fp.named_parameters())
    blocks = {n: BlockFloats(t, d, shapes[n].shape[1], device) for n, (t, d) in quantized.items()}
    opt = torch.optim.Adam([b.offset for b in blocks.values()], lr=opts.lr)
    steps = math.ceil(len(train) / opts.batch)

    def install(rounded: bool, leaves: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        out = {}
        for n, b in blocks.items():
            w = b.weight(rounded)
            leaf = w.detach().requires_grad_(True) if leaves else w.detach()
            _install(student, aliases[n], leaf)
            out[n] = (w, leaf)
        return out

    def mean_kl(idx: list[int]) -> float:
        with torch.no_grad():
            install(rounded=True)
            return float(np.mean([float(token_kl(teacher[i], adapter.analysis_forward(student, samples[i])[0]))
                                  for i in idx]))

    # every score is taken with the floats at fp16, as the file stores them
    history = [{"epoch": 0, "train_kl": mean_kl(train), "held_out_kl": mean_kl(hold)}]
    best_epoch, best_kl = 0, history[0]["held_out_kl"]
    best = [b.offset.detach().clone() for b in blocks.values()]
    gen = torch.Generator().manual_seed(opts.seed)
    for epoch in range(1, opts.epochs + 1):
        perm = [train[i] for i in torch.randperm(len(train), generator=gen).tolist()]
        losses = []
        bar = tqdm(range(steps), desc=f"scale tune: epoch {epoch}/{opts.epochs}", disable=not progress, leave=False)
        for step in bar:
            batch = perm[step * opts.batch:(step + 1) * opts.batch]
            opt.zero_grad(set_to_none=True)
            # every utterance of the batch backpropagates into the installed weights (leaves); one backward
            # through eq. (1) per step then carries their summed gradient to the offsets
            weights = install(rounded=False, leaves=True)
            for i in batch:
                loss = token_kl(teacher[i], adapter.analysis_forward(student, samples[i])[0]) / len(batch)
                loss.backward()
                losses.append(float(loss.detach()) * len(batch))
            pairs = [(w, leaf.grad) for w, leaf in weights.values() if leaf.grad is not None]
            torch.autograd.backward([w for w, _ in pairs], [g for _, g in pairs])
            opt.step()
            bar.set_postfix(kl=f"{np.mean(losses):.4f}")
        held = mean_kl(hold)
        history.append({"epoch": epoch, "train_kl": mean_kl(train), "train_kl_running": float(np.mean(losses)),
                        "held_out_kl": held})
        log.info("scale tune: epoch %d, train KL %.4f, held-out KL %.4f (solver's %.4f / %.4f)", epoch,
                 history[-1]["train_kl"], held, history[0]["train_kl"], history[0]["held_out_kl"])
        if held < best_kl:
            best_epoch, best_kl = epoch, held
            best = [b.offset.detach().clone() for b in blocks.values()]

    new_data, layers = {}, {}
    with torch.no_grad():
        for (n, b), off in zip(blocks.items(), best):
            b.offset.copy_(off)              # epoch 0: all zero, so stored() gives the solver's bytes
            new_data[n], layers[n] = b.stored()
            if not np.array_equal(b.qtype.decode(new_data[n], b.n)[0], b.codes):
                raise AssertionError(f"scale tune changed the codes of {n}")   # a bug, never an input
    report = {"mode": opts.mode, "epochs": opts.epochs, "lr": opts.lr, "batch": opts.batch,
              "n_train": len(train), "n_held_out": len(hold), "history": history, "chosen_epoch": best_epoch,
              "held_out_kl_solver": history[0]["held_out_kl"], "held_out_kl_chosen": best_kl, "layers": layers}
    return new_data, report
