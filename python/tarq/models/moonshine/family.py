"""The Moonshine family (transformers ``MoonshineForConditionalGeneration``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..family import ExportTarget, ModelFamily, Verification
from . import load


def _write_crispasr(ckpt, out_path, *, qtype=None):
    from .gguf import write_crispasr

    return write_crispasr(ckpt, out_path, qtype=qtype)


class MoonshineFamily(ModelFamily):
    name = "moonshine"
    model_types = ("moonshine",)
    description = "Moonshine tiny / base (transformers MoonshineForConditionalGeneration)"
    audio_tower_pattern = r"^model\.encoder\."
    verification = Verification(
        real_weights="none (no Moonshine weights are installable here); loader, adapter and exporter written for "
                     "the released tiny/base configs and checked on their shapes (meta device, no data)",
        random_weights="small random model with moonshine-tiny's layout scaled down (tarq.testing): calibration with "
                       "every method, torch decoding, CrispASR GGUF + tokenizer.bin; CrispASR 0.8.45 loads and runs "
                       "it, encoder output and per-token probabilities match the fake-quant model")
    export_targets = (
        ExportTarget("gguf", "crispasr", "CrispASR (PyPI crispasr >= 0.8.45), backend moonshine: arch moonshine + "
                     "tokenizer.bin beside the model", _write_crispasr),
    )

    def load_pretrained(self, directory: Path, *, name: str, source_kind: str, dtype=None):
        return load.load_pretrained(directory, name=name, kind=source_kind, dtype=dtype)

    def load_quantized(self, ckpt, *, dtype=None):
        return load.load_quantized(ckpt, dtype=dtype)

    def adapter(self):
        from .adapter import MoonshineAdapter

        return MoonshineAdapter()

    def tied_parameters(self, config: dict[str, Any]) -> dict[str, str]:
        return load.tied_parameters(config)

    def eot_id(self, loaded) -> int:
        return int(loaded.model.config.eos_token_id)

    def decoder_prompt_ids(self, loaded) -> list[int]:
        return [int(loaded.model.config.decoder_start_token_id)]

    def summary(self, loaded) -> dict[str, Any]:
        return load.summary(loaded)

    def torch_backend(self, loaded, **options):
        from .decode import MoonshineTorchBackend

        return MoonshineTorchBackend(loaded, **options)
