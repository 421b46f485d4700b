"""The Qwen3-ASR family (transformers ``Qwen3ASRForConditionalGeneration``): audio tower + projector + Qwen3 LLM."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..family import ExportTarget, ModelFamily, Verification
from . import load
from .prompt import prompt_ids


def _write_crispasr(ckpt, out_path, *, qtype=None):
    from .gguf import write_crispasr

    return write_crispasr(ckpt, out_path, qtype=qtype)


def _write_cpp(ckpt, out_path, *, qtype=None):
    from .gguf import write_qwen3_asr_cpp

    return write_qwen3_asr_cpp(ckpt, out_path, qtype=qtype)


class Qwen3AsrFamily(ModelFamily):
    name = "qwen3_asr"
    model_types = ("qwen3_asr",)
    description = "Qwen3-ASR 0.6B / 1.7B (transformers Qwen3ASRForConditionalGeneration, '-hf' checkpoints)"
    audio_tower_pattern = r"^model\.(audio_tower|multi_modal_projector)\."
    verification = Verification(
        real_weights="none (no Qwen3-ASR weights are installable here); loaders, adapter and exporters are written "
                     "for the 0.6B/1.7B configs and checked on their shapes (meta device, no data)",
        random_weights="small random model with the 0.6B layout scaled down (tarq.testing): calibration with every "
                       "method, torch decoding, both GGUF dialects; CrispASR 0.8.45 loads and runs the crispasr file, "
                       "reads the token embedding back bit-exactly, encoder/LLM outputs match the fake-quant model; "
                       "the qwen3-asr.cpp file passes a re-implementation of that project's loaders (not built)")
    export_targets = (
        ExportTarget("gguf", "crispasr", "CrispASR (PyPI crispasr >= 0.8.45), backend qwen3: arch qwen3asr",
                     _write_crispasr),
        ExportTarget("gguf", "qwen3-asr.cpp", "predict-woo/qwen3-asr.cpp (source only; structural check against its "
                     "loaders at 17725d71): arch qwen3-asr", _write_cpp),
    )

    def load_pretrained(self, directory: Path, *, name: str, source_kind: str, dtype=None):
        return load.load_pretrained(directory, name=name, kind=source_kind, dtype=dtype)

    def load_quantized(self, ckpt, *, dtype=None):
        return load.load_quantized(ckpt, dtype=dtype)

    def adapter(self):
        from .adapter import Qwen3AsrAdapter

        return Qwen3AsrAdapter()

    def tied_parameters(self, config: dict[str, Any]) -> dict[str, str]:
        return load.tied_parameters(config)

    def eot_id(self, loaded) -> int:
        return prompt_ids(loaded.tokenizer, loaded.language).end_of_turn

    def decoder_prompt_ids(self, loaded) -> list[int]:
        return list(prompt_ids(loaded.tokenizer, loaded.language).after_audio)

    def summary(self, loaded) -> dict[str, Any]:
        return load.summary(loaded)

    def torch_backend(self, loaded, **options):
        from .decode import Qwen3AsrTorchBackend

        return Qwen3AsrTorchBackend(loaded, **options)
