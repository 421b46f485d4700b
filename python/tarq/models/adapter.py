"""Model adapters: what the calibration pipeline needs to know about a model family.

An adapter is declarative about *structure* (``blocks()``: the quantization order as a list of blocks,
each a list of stages, each stage a list of Linear groups that share one input and therefore one H) and
procedural only about the *forward*: how to get one stage's inputs from a per-utterance state and how to
advance that state past the stage once its Linears are quantized. The pipeline runs the same adapter on
the FP model and on the partly quantized model (true-sequential: every stage sees inputs produced by the
already-quantized stages before it).

Weights are addressed by Hugging Face parameter names and laid out ``[out, in]``; an output embedding
(tied token embedding) is treated like a Linear whose input is the final hidden state.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any

import torch

FRAMES = "frames"   # positions are encoder frames (untagged unless the sample carries frame tags)
TOKENS = "tokens"   # positions are teacher-forced decoder positions (tagged rare/common)


@dataclass(frozen=True)
class LinearGroup:
    """Weights quantized under one shared metric. Groups with the same ``key`` share statistics across
    blocks (e.g. Whisper's cross-attention k/v all read the encoder output: one H for every decoder layer)."""
    key: str
    weights: tuple[str, ...]
    domain: str = TOKENS


@dataclass(frozen=True)
class Stage:
    name: str
    groups: tuple[LinearGroup, ...]


@dataclass(frozen=True)
class Block:
    name: str
    stages: tuple[Stage, ...]


@dataclass
class CalibSample:
    """One calibration utterance, ready for the teacher-forced forward."""
    id: str
    features: torch.Tensor            # model input (Whisper: log-mel [n_mels, 3000])
    tokens: list[int]                 # prompt + transcript tokens + eot (teacher forcing)
    tail: torch.Tensor                # bool [len(tokens) - 1]: rare tag per decoder position
    n_speech_frames: int              # encoder frames covering real audio (rest is 30 s padding)
    frame_tail: torch.Tensor | None = None  # optional bool [n_frames] hook for frame-level tags
    text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "CalibSample":
        """A copy whose tensors live on ``device`` (the calibration forward runs where the model is)."""
        frame_tail = self.frame_tail.to(device) if self.frame_tail is not None else None
        return replace(self, features=self.features.to(device), tail=self.tail.to(device), frame_tail=frame_tail)


class ModelAdapter(ABC):
    family: str = ""
    #: state entries that ``stage_inputs`` leaves for ``advance`` only to save recomputing them (Whisper: fc2's
    #: input); ``advance`` rebuilds any that are missing, so the pipeline may drop them to bound memory.
    recomputable_state: tuple[str, ...] = ()

    @abstractmethod
    def blocks(self, model: torch.nn.Module) -> list[Block]:
        """All quantized weights, in true-sequential quantization order."""

    @abstractmethod
    def prepare_sample(self, loaded, utt_id: str, audio, text: str | None, *, zipf_threshold: float,
                       tag_by: str) -> CalibSample:
        """Features, teacher-forcing tokens and rarity tags for one utterance."""

    @abstractmethod
    def init_state(self, model: torch.nn.Module, sample: CalibSample) -> dict:
        """Per-utterance state at the input of the first block."""

    @abstractmethod
    def enter_block(self, model: torch.nn.Module, block: Block, state: dict, sample: CalibSample) -> dict:
        """Transform the state when entering ``block`` (e.g. encoder -> decoder hand-over)."""

    @abstractmethod
    def stage_inputs(self, model: torch.nn.Module, block: Block, stage_idx: int, state: dict,
                     sample: CalibSample, keys: set[str]) -> dict[str, torch.Tensor]:
        """Inputs [positions, in] of the requested groups (by key) of one stage."""

    @abstractmethod
    def advance(self, model: torch.nn.Module, block: Block, stage_idx: int, state: dict,
                sample: CalibSample) -> dict:
        """Run the stage's (now quantized) weights and return the state at the next stage's input."""

    def tied_parameters(self, model: torch.nn.Module | None = None) -> dict[str, str]:
        """Parameter names that alias a quantized weight (not saved separately): alias -> quantized name."""
        return {}

    def audio_tower_weights(self, names) -> set[str]:
        """The weights among ``names`` that belong to the audio encoder (its projector included): the family's
        ``audio_tower_pattern``, the one definition ``--audio-tower-type`` uses too."""
        import re

        from .family import get_family

        pattern = get_family(self.family).audio_tower_pattern
        if not pattern:
            raise ValueError(f"family {self.family!r}: no audio tower is defined for it")
        return {n for n in names if re.match(pattern, n)}

    # -- the FP analysis pass (calib/analysis.py): loss-sensitivity weights and encoder-frame tags ----------------
    def analysis_forward(self, model: torch.nn.Module, sample: CalibSample, attention_heads=(),
                         requires_grad: bool = False):
        """Teacher-forced FP forward -> (logits [P, V] of the tagged decoder positions, their target token ids [P],
        mean cross-attention of ``attention_heads`` ((layer, head) pairs) [P, frames], or None when none asked).
        The last target is the end-of-text token (``--sensitivity stop`` reads the stop decision from it).
        With ``requires_grad`` the input is marked so that gradients reach every Linear's output."""
        raise ValueError(f"family {self.family!r}: the FP analysis pass (--sensitivity / --frame-tags) is not "
                         f"implemented for this family")

    def sensitivity_module(self, weight_name: str) -> str:
        """The module whose output a quantized weight produces (its loss sensitivity is measured there)."""
        return weight_name.removesuffix(".weight")

    def alignment_heads(self, model: torch.nn.Module) -> list[tuple[int, int]]:
        """(decoder layer, head) pairs whose cross-attention aligns tokens with encoder frames."""
        raise ValueError(f"family {self.family!r}: no cross-attention alignment heads (--frame-tags attention)")


def get_adapter(family: str) -> ModelAdapter:
    """The calibration adapter of a registered family (``tarq.models.family``)."""
    from .family import get_family

    return get_family(family).adapter()
