"""Whisper ``GenerationConfig`` from the special ids we derived (never from one model's hard-coded ids)."""
from __future__ import annotations

from .tokenizer_fixes import SpecialIds


def whisper_generation_config(ids: SpecialIds, *, multilingual: bool, suppress_tokens: list[int],
                              begin_suppress_tokens: list[int], max_length: int,
                              alignment_heads: list[list[int]] | None = None):
    from transformers import GenerationConfig

    gen = GenerationConfig(
        decoder_start_token_id=ids.sot,
        bos_token_id=ids.eot,
        eos_token_id=ids.eot,
        pad_token_id=ids.eot,
        max_length=max_length,
        suppress_tokens=list(suppress_tokens),
        begin_suppress_tokens=list(begin_suppress_tokens),
        no_timestamps_token_id=ids.notimestamps,
        is_multilingual=multilingual,
        return_timestamps=False,
    )
    # transformers' Whisper generate() reads these when language/task are given.
    gen.task_to_id = {"transcribe": ids.transcribe, "translate": ids.translate}
    if multilingual:
        gen.lang_to_id = {f"<|{code}|>": i for code, i in ids.lang.items()}
        gen.language = "en"
        gen.task = "transcribe"
    if ids.startofprev is not None:
        gen.prev_sot_token_id = ids.startofprev
    if alignment_heads:
        gen.alignment_heads = [list(map(int, h)) for h in alignment_heads]
    return gen
