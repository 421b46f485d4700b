"""``LoadedModel``: a ready-to-run FP model with its tokenizer, feature extractor and prompt conventions."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class LoadedModel:
    model: torch.nn.Module               # transformers WhisperForConditionalGeneration, eval mode
    tokenizer: Any                       # transformers WhisperTokenizerFast (repaired)
    feature_extractor: Any               # transformers WhisperFeatureExtractor
    name: str                            # alias or directory / hub id as given
    source: dict[str, Any]               # where it came from: {"kind": "ct2"|"hf"|"tarq", "path": ..., ...}
    multilingual: bool
    family: str = "whisper"
    language: str = "en"

    # -- token ids -------------------------------------------------------------------------------------------
    def token_id(self, token: str) -> int:
        idx = self.tokenizer.convert_tokens_to_ids(token)
        if idx is None or idx == self.tokenizer.unk_token_id and token != self.tokenizer.unk_token:
            raise KeyError(f"{self.name}: token {token} is not in the vocabulary")
        return int(idx)

    @property
    def eot_id(self) -> int:
        return self.token_id("<|endoftext|>")

    @property
    def sot_id(self) -> int:
        return self.token_id("<|startoftranscript|>")

    @property
    def notimestamps_id(self) -> int:
        return self.token_id("<|notimestamps|>")

    def decoder_prompt_ids(self) -> list[int]:
        """[sot, notimestamps] for English-only models, [sot, <|en|>, transcribe, notimestamps] otherwise."""
        ids = [self.sot_id]
        if self.multilingual:
            ids += [self.token_id(f"<|{self.language}|>"), self.token_id("<|transcribe|>")]
        return ids + [self.notimestamps_id]

    # -- description -----------------------------------------------------------------------------------------
    def model_summary(self) -> dict[str, Any]:
        cfg = self.model.config
        n_params = sum(p.numel() for p in self.model.parameters())
        return {
            "name": self.name, "family": self.family, "source": self.source, "multilingual": self.multilingual,
            "d_model": cfg.d_model, "encoder_layers": cfg.encoder_layers, "decoder_layers": cfg.decoder_layers,
            "heads": cfg.encoder_attention_heads, "vocab_size": cfg.vocab_size, "n_mels": cfg.num_mel_bins,
            "parameters": n_params, "prompt": self.decoder_prompt_ids(), "eot": self.eot_id,
        }

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
            {"name": self.name, "multilingual": self.multilingual, "language": self.language,
             "source": self.source}, indent=2, default=str))
