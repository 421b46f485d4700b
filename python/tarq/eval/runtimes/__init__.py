"""Real ggml runtimes behind tarq's evaluation: whisper.cpp (pywhispercpp) and CrispASR.

* :mod:`.checks`   validate a model file with tarq's readers before a runtime sees it
* :mod:`.policy`   decoding policies ``greedy`` (sensitive probe) and ``default`` (whisper-cli's out of the box)
* :mod:`.session`  runtime worker processes: crashes become one-line errors; several workers decode in parallel
* :mod:`.worker`   the child-process script (standard library, numpy and the runtime package only)
* :mod:`.backend`  the ``whisper.cpp`` / ``crispasr`` evaluation backends and :func:`transcribe_file`

See docs/evaluation.md ("Runtime backends").
"""
from .backend import CrispAsrBackend, RuntimeBackend, WhisperCppBackend, plan_workers, transcribe_file
from .checks import ModelFileInfo, check_model_file
from .policy import DEFAULT_POLICY, POLICIES, DecodingPolicy, get_policy, policy_names
from .session import RuntimeCrash

RUNTIMES = ("whisper.cpp", "crispasr")

__all__ = ["CrispAsrBackend", "RuntimeBackend", "WhisperCppBackend", "plan_workers", "transcribe_file",
           "ModelFileInfo", "check_model_file", "DEFAULT_POLICY", "POLICIES", "DecodingPolicy", "get_policy",
           "policy_names", "RuntimeCrash", "RUNTIMES"]
