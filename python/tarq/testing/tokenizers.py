"""Small tokenizers with the structure of the real ones, trained deterministically on the bundled demo transcripts.

* ``qwen3_asr_tokenizer()``: byte-level BPE (GPT-2 alphabet) with Qwen2's pre-tokenizer regex and the Qwen3-ASR
  special tokens (<|endoftext|>, <|im_start|>, <|im_end|>, <|audio_start|>, <|audio_end|>, <|audio_pad|>,
  <asr_text>), so CrispASR's and transformers' tokenizers can both read it.
* ``moonshine_tokenizer()``: "▁" (Metaspace) BPE with byte fallback, <unk>=0, <s>=1, </s>=2 and the 256 <0xXX>
  byte tokens, like UsefulSensors/moonshine's.
"""
from __future__ import annotations

import functools
import json
from importlib import resources

# Qwen2/Qwen3's pre-tokenizer split (tokenizer.json of Qwen/Qwen3-*), verbatim.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
QWEN3_ASR_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_end|>",
                     "<|audio_pad|>", "<asr_text>")
# Words of the prompts the models see, so they are single tokens as in the real vocabularies.
_PROMPT_TEXT = ["system\n", "user\n", "assistant\n", "language English", "language Chinese", "\n"]


def _demo_texts() -> list[str]:
    manifest = resources.files("tarq") / "demo_data" / "calib" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    eval_manifest = resources.files("tarq") / "demo_data" / "eval" / "manifest.jsonl"
    rows += [json.loads(line) for line in eval_manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["text"] for r in rows if r.get("text")]


@functools.lru_cache(maxsize=None)
def _qwen3_json(vocab_size: int) -> str:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_demo_texts() + _PROMPT_TEXT * 4, trainer)
    tok.add_special_tokens(list(QWEN3_ASR_SPECIAL))
    return tok.to_str()


def qwen3_asr_tokenizer(vocab_size: int = 640):
    """A transformers fast tokenizer; ``vocab_size`` BPE tokens + the 7 special tokens after them."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_qwen3_json(vocab_size)),
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.audio_token, tok.audio_bos_token, tok.audio_eos_token = "<|audio_pad|>", "<|audio_start|>", "<|audio_end|>"
    return tok


@functools.lru_cache(maxsize=None)
def _moonshine_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="▁",
                                                                                 prepend_scheme="always", split=True)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(_demo_texts(), trainer)
    return tok.to_str()


def moonshine_tokenizer(vocab_size: int = 512):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_moonshine_json(vocab_size)),
                                   unk_token="<unk>", bos_token="<s>", eos_token="</s>")
