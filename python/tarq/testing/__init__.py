"""Test support shipped with the package: small random checkpoints with the real families' layout.

``write_random_qwen3_asr(dir)`` and ``write_random_moonshine(dir)`` write Hugging Face directories that
``tarq.models.load_model`` loads like a real checkpoint (see ``checkpoints.py`` for what is scaled down).
"""
from .checkpoints import REAL_CONFIGS, moonshine_config, qwen3_asr_config, write_random_moonshine, write_random_qwen3_asr
from .tokenizers import moonshine_tokenizer, qwen3_asr_tokenizer

__all__ = ["REAL_CONFIGS", "moonshine_config", "moonshine_tokenizer", "qwen3_asr_config", "qwen3_asr_tokenizer",
           "write_random_moonshine", "write_random_qwen3_asr"]
