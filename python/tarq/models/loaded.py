"""``LoadedModel``: a ready-to-run FP (or fake-quantized) model with its tokenizer, feature extractor and family.

Family-specific conventions (end-of-text token, forced prompt, summary) come from the family object
(``tarq.models.family``), so this class is the same for every family.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class LoadedModel:
    model: torch.nn.Module               # a transformers model (Whisper / Qwen3-ASR / Moonshine), eval mode
    tokenizer: Any                       # its tokenizer (Whisper: WhisperTokenizerFast, repaired)
    feature_extractor: Any               # its feature extractor (log-mel or raw-waveform)
    name: str                            # alias or directory / hub id as given
    source: dict[str, Any]               # where it came from: {"kind": "ct2"|"hf-dir"|"tarq"|..., "path": ...}
    multilingual: bool
    family: str = "whisper"
    language: str = "en"

    @property
    def spec(self):
        """The family object (``tarq.models.family.ModelFamily``)."""
        from .family import get_family

        return get_family(self.family)

    # -- token ids -------------------------------------------------------------------------------------------
    def token_id(self, token: str) -> int:
        idx = self.tokenizer.convert_tokens_to_ids(token)
        if idx is None or idx == self.tokenizer.unk_token_id and token != self.tokenizer.unk_token:
            raise KeyError(f"{self.name}: token {token} is not in the vocabulary")
        return int(idx)

    @property
    def eot_id(self) -> int:
        """The token that ends a transcript (Whisper <|endoftext|>, Qwen3-ASR <|im_end|>, Moonshine </s>)."""
        return self.spec.eot_id(self)

    @property
    def sot_id(self) -> int:          # Whisper's prompt tokens (KeyError for other vocabularies)
        return self.token_id("<|startoftranscript|>")

    @property
    def notimestamps_id(self) -> int:
        return self.token_id("<|notimestamps|>")

    def decoder_prompt_ids(self) -> list[int]:
        """Tokens forced before the transcript: Whisper [sot, (<|en|>, transcribe,) notimestamps]; Moonshine [bos];
        Qwen3-ASR the assistant turn after the audio ("<|im_start|>assistant\\nlanguage English<asr_text>")."""
        return self.spec.decoder_prompt_ids(self)

    # -- description -----------------------------------------------------------------------------------------
    def model_summary(self) -> dict[str, Any]:
        n_params = sum(p.numel() for p in self.model.parameters())
        return {"name": self.name, "family": self.family, "source": self.source, "multilingual": self.multilingual,
                **self.spec.summary(self), "parameters": n_params, "prompt": self.decoder_prompt_ids(),
                "eot": self.eot_id}

    # -- persistence -----------------------------------------------------------------------------------------
    def save_pretrained_extras(self, directory: str | os.PathLike) -> None:
        """Write tokenizer, feature-extractor and generation-config files so ``directory`` is self-contained."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(d))
        self.feature_extractor.save_pretrained(str(d))
        gen = getattr(self.model, "generation_config", None)
        if gen is not None:
            gen.save_pretrained(str(d))
        (d / "tarq_model_info.json").write_text(json.dumps(
            {"name": self.name, "family": self.family, "multilingual": self.multilingual, "language": self.language,
             "source": self.source}, indent=2, default=str))
