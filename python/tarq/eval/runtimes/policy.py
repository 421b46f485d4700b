"""Decoding policies for the ggml runtimes: ``greedy`` (the sensitive probe) and ``default`` (what users get).

* ``greedy``: one greedy decoder (best_of 1, no beam), **no temperature fallback** (temperature_inc 0), no timestamp
  tokens. The same policy as tarq's PyTorch decoder, so a difference between backends measures the weights and the
  runtime's arithmetic, not a decoding policy. Clips over 30 s are cut at quiet points by
  :func:`tarq.eval.segment.split_long` (exactly as the torch backend cuts them) and the pieces decoded one by one.
  For clips of at most 30 s this is ``whisper-cli -nt -bs 1 -nf``.
* ``default``: whisper-cli's out-of-the-box decoding (whisper.cpp ``examples/cli/cli.cpp``): beam search with 5 beams,
  best_of 5 for the sampled fallbacks, temperature fallback 0 → 0.2 → … → 1.0 when a window's entropy is above 2.4
  or its average log-probability below -1.0, no-speech threshold 0.6, timestamp tokens on, and long audio decoded
  whole by whisper.cpp's own timestamp-driven seeking (each window starts where the last timestamp ended, conditioned
  on the previous text). This is ``whisper-cli`` with no decoding flags.

CrispASR's Python API (0.8.45) exposes the sampling strategy and best_of, but no setter for temperature_inc or
no_timestamps: on a whisper ``.bin`` its ``greedy`` therefore keeps the library's temperature fallback and timestamp
tokens (recorded in the backend description), and GGUF models go through ``crispasr.Session``, which has no decoding
options at all (each backend decodes its own way).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GREEDY_STRATEGY, BEAM_SEARCH_STRATEGY = 0, 1   # whisper_sampling_strategy


@dataclass(frozen=True)
class DecodingPolicy:
    name: str
    summary: str
    long_audio: str                    # "split": tarq cuts > 30 s clips at quiet points; "seek": the runtime does
    strategy: int
    whisper_cpp: dict[str, Any] = field(default_factory=dict)   # whisper_full_params fields (pywhispercpp names)
    crispasr: dict[str, Any] = field(default_factory=dict)      # crispasr legacy decode options
    crispasr_notes: str = ""

    def describe(self, runtime: str) -> dict[str, Any]:
        """JSON-able record of what this policy sets in ``runtime`` (for result files and cache keys)."""
        if runtime == "crispasr":
            return {"policy": self.name, "strategy": self.strategy, "params": dict(self.crispasr),
                    "long_audio": "seek", "notes": self.crispasr_notes}
        return {"policy": self.name, "strategy": self.strategy, "params": dict(self.whisper_cpp),
                "long_audio": self.long_audio}


POLICIES: dict[str, DecodingPolicy] = {
    "greedy": DecodingPolicy(
        name="greedy", summary="greedy, no temperature fallback, no timestamps (whisper-cli -nt -bs 1 -nf)",
        long_audio="split", strategy=GREEDY_STRATEGY,
        whisper_cpp={"greedy": {"best_of": 1}, "temperature": 0.0, "temperature_inc": 0.0, "no_timestamps": True,
                     "no_context": True, "suppress_blank": True, "suppress_nst": False},
        crispasr={"best_of": 1, "temperature": 0.0, "no_context": True, "suppress_blank": True},
        crispasr_notes="CrispASR's API cannot switch off the temperature fallback or timestamp tokens"),
    "default": DecodingPolicy(
        name="default", summary="whisper-cli defaults: beam 5, best_of 5, temperature fallback, timestamps",
        long_audio="seek", strategy=BEAM_SEARCH_STRATEGY,
        whisper_cpp={"beam_search": {"beam_size": 5, "patience": -1.0}, "greedy": {"best_of": 5},
                     "temperature": 0.0, "temperature_inc": 0.2, "entropy_thold": 2.4, "logprob_thold": -1.0,
                     "no_speech_thold": 0.6, "no_timestamps": False, "no_context": True, "n_max_text_ctx": 16384,
                     "suppress_blank": True, "suppress_nst": False},
        crispasr={"best_of": 5, "temperature": 0.0, "no_context": True, "suppress_blank": True},
        crispasr_notes="library defaults for everything the API does not expose (fallback 0.2, thresholds 2.4/-1.0)"),
}
DEFAULT_POLICY = "greedy"


def policy_names() -> list[str]:
    return list(POLICIES)


def get_policy(name: str | DecodingPolicy) -> DecodingPolicy:
    if isinstance(name, DecodingPolicy):
        return name
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown decoding policy {name!r}; choose from {', '.join(POLICIES)}") from None
