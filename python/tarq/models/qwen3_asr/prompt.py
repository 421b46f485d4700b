"""Qwen3-ASR's ChatML transcription prompt and audio features, one definition for calibration, decoding and tests.

The prompt is what CrispASR's session builds (src/crispasr_c_api.cpp, qwen3 branch of transcribe) and what the
transformers processor's ``apply_transcription_request(language=...)`` renders:

    <|im_start|>system\\n<|im_end|>\\n<|im_start|>user\\n<|audio_start|> <|audio_pad|> x N <|audio_end|><|im_end|>\\n
    <|im_start|>assistant\\nlanguage English<asr_text>{transcript}<|im_end|>

N = audio encoder frames (13 per 100 mel frames). A forced language is an assistant-turn prefill, so the model
emits only transcript text.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SAMPLE_RATE = 16000
BEFORE_AUDIO = "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n"
AUDIO_START, AUDIO_PAD, AUDIO_END = "<|audio_start|>", "<|audio_pad|>", "<|audio_end|>"
AFTER_AUDIO = "<|im_end|>\n<|im_start|>assistant\n"
END_OF_TURN = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"


def language_name(code: str) -> str:
    """ISO code -> the English language name the model was trained with ("en" -> "English")."""
    from transformers.models.qwen3_asr.processing_qwen3_asr import LANGUAGE_CODE_TO_NAME

    if code in LANGUAGE_CODE_TO_NAME.values():
        return code
    try:
        return LANGUAGE_CODE_TO_NAME[code]
    except KeyError:
        raise ValueError(f"Qwen3-ASR has no language {code!r}; known: {', '.join(LANGUAGE_CODE_TO_NAME)}") from None


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


@dataclass(frozen=True)
class PromptIds:
    before_audio: tuple[int, ...]   # ... <|audio_start|>
    audio_pad: int
    after_audio: tuple[int, ...]    # <|audio_end|> ... assistant\n language English<asr_text>
    end_of_turn: int                # <|im_end|>: ends the transcript
    end_of_text: int

    def full(self, n_audio: int, transcript: list[int] | tuple[int, ...] = ()) -> list[int]:
        return [*self.before_audio, *([self.audio_pad] * n_audio), *self.after_audio, *transcript]


def prompt_ids(tokenizer, language: str) -> PromptIds:
    def single(tok: str) -> int:
        ids = _ids(tokenizer, tok)
        if len(ids) != 1:
            raise ValueError(f"Qwen3-ASR tokenizer: {tok} is not a single token ({ids}); not a Qwen3-ASR tokenizer")
        return ids[0]

    return PromptIds(
        before_audio=tuple(_ids(tokenizer, BEFORE_AUDIO)) + (single(AUDIO_START),),
        audio_pad=single(AUDIO_PAD),
        after_audio=(single(AUDIO_END),) + tuple(_ids(tokenizer, AFTER_AUDIO + f"language {language_name(language)}<asr_text>")),
        end_of_turn=single(END_OF_TURN), end_of_text=single(END_OF_TEXT))


def audio_features(feature_extractor, audio: np.ndarray) -> tuple[torch.Tensor, int]:
    """(log-mel [n_mels, T_pad] with T_pad a multiple of the encoder chunk, number of valid mel frames)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono 1-D audio, got shape {audio.shape}")
    f = feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding="longest",
                          return_attention_mask=True)
    return f["input_features"][0].float(), int(f["attention_mask"][0].sum())


def feature_mask(n_frames_padded: int, n_valid: int, device=None) -> torch.Tensor:
    mask = torch.zeros(n_frames_padded, dtype=torch.long, device=device)
    mask[:n_valid] = 1
    return mask


def n_audio_frames(n_mel_frames: int, n_window: int = 50) -> int:
    """Encoder output frames for ``n_mel_frames`` valid mel frames: three k=3 s=2 p=1 convs per chunk of 2*n_window
    (transformers ``Qwen3ASREncoder._post_cnn_length``; 100 mel frames -> 13)."""
    chunk = 2 * n_window
    total = 0
    for start in range(0, n_mel_frames, chunk):
        n = min(chunk, n_mel_frames - start)
        for _ in range(3):
            n = (n - 1) // 2 + 1 if n > 0 else 0
        total += n
    return total
