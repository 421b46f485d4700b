"""argparse ``choices`` read from a registry only when argparse needs them (parsing that option, or printing that
subcommand's help), so ``tarq --help`` does not import torch to list the quantization methods."""
from __future__ import annotations

from typing import Callable, Iterable


class RegistryChoices:
    def __init__(self, names: Callable[[], Iterable[str]]):
        self._names = names
        self._cache: list[str] | None = None

    def _all(self) -> list[str]:
        if self._cache is None:
            self._cache = list(self._names())
        return self._cache

    def __contains__(self, item) -> bool:
        return item in self._all()

    def __iter__(self):
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


# The type `tarq quantize` and `tarq demo` use without --format: IQ4_NL, Q4_0's 4.5 bits per weight (one fp16 scale
# per 32 weights) with ggml's non-uniform 16-level codebook, which whisper.cpp 1.8.5 and CrispASR 0.8.45 load (checked
# on CPU). Measured with the default method on every dev-set clip (benchmarks/README.md "The default recipe on
# IQ4_NL", "Where the new greedy failures start"): on tiny.en it lost fewer words than the same recipe on Q4_0
# (pooled damage −1.39 points, CI excluding zero) and none of its new greedy failures is its own; on base it is level
# with whisper.cpp's Q4_0 on real speech and better than the Q4_0 default on technical prose. `--format q4_0` gives
# the earlier default; whisper.cpp's own `quantize` does not write IQ4_NL.
DEFAULT_FORMAT = "iq4_nl"
# The method `tarq quantize` and `tarq demo` use without --method for types of 4 bits per weight and more, chosen by
# the evidence in benchmarks/README.md ("Choosing the default", issue 15). Kept here, torch-free, so `tarq --help`
# stays fast.
DEFAULT_METHOD = "qep"
# Options the default method gets when --method is not given, each unless its own flag is: QEP's correction
# strength α = 0.75 (the method's own default, 0.5, is the OneCompression paper's) and bias correction of the
# decoder's Linears. On every clip of the five dev sets this combination lost fewer words than plain QEP (pooled
# damage −0.75 points, CI excluding zero) and had fewer greedy failures (benchmarks/README.md "A better default").
# `--method qep` alone is still plain QEP.
DEFAULT_OPTIONS = {"qep_alpha": 0.75, "bias_correction": "mean-tokens"}
# Below 4 bits per weight (Q3_K, Q2_K) the default is GPTQ: on base at Q3_K, QEP's error-propagation correction
# damaged real speech more than plain GPTQ did (benchmarks/README.md "Method ablation on base at Q3_K").
LOW_BIT_DEFAULT_METHOD = "gptq"
LOW_BIT_BELOW = 4.0


def default_method(type_name: str) -> str:
    """The method used without --method for weights quantized onto ``type_name`` (the --format type)."""
    from ..ggml import get_type

    return LOW_BIT_DEFAULT_METHOD if get_type(type_name).bits_per_weight < LOW_BIT_BELOW else DEFAULT_METHOD


def default_options(method: str) -> dict:
    """The options a defaulted ``method`` gets (argparse dest -> value); none for the low-bit default."""
    return dict(DEFAULT_OPTIONS) if method == DEFAULT_METHOD else {}


def methods() -> RegistryChoices:
    def names():
        from ..methods import available_methods
        return available_methods()
    return RegistryChoices(names)


def backends() -> RegistryChoices:
    def names():
        from ..eval import backend_names
        return backend_names()
    return RegistryChoices(names)


def runtimes() -> RegistryChoices:
    def names():
        from ..eval.runtimes import RUNTIMES
        return RUNTIMES
    return RegistryChoices(names)


def policies() -> RegistryChoices:
    def names():
        from ..eval.runtimes.policy import policy_names
        return policy_names()
    return RegistryChoices(names)
