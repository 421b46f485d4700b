"""Evaluation: Whisper-normalised WER / rare-WER / common-WER / numeral-WER, paired bootstrap CIs, backends.

See docs/evaluation.md for the metric conventions.
"""
from .backends import Backend, backend_names, get_backend, register_backend
from .bootstrap import BootstrapResult, paired_bootstrap
from .metrics import (DEFAULT_INSERTION_RULE, DEFAULT_ZIPF_THRESHOLD, INSERTION_RULES, Scores, UttCounts,
                      align_counts, is_numeral, is_rare, mean_over_datasets, pool, score_corpus)
from .normalizer import normalize, normalizer_info
from .results import DatasetResult, EvalResult, load_result, paired_counts, save_result

__all__ = [
    "Backend", "backend_names", "get_backend", "register_backend", "BootstrapResult", "paired_bootstrap",
    "DEFAULT_INSERTION_RULE", "DEFAULT_ZIPF_THRESHOLD", "INSERTION_RULES", "Scores", "UttCounts", "align_counts",
    "is_numeral", "is_rare", "mean_over_datasets",
    "pool", "score_corpus", "normalize", "normalizer_info", "DatasetResult", "EvalResult", "load_result",
    "paired_counts", "save_result",
]
