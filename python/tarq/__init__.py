"""tarq: tail-aware post-training quantization for speech recognition models.

Subpackages, one concern each:
  kernels  - GPTQ numerics (native C++/CUDA extension ``tarq._C`` + PyTorch reference)
  models   - model loading (Hugging Face, CTranslate2) and family adapters
  data     - speech corpora (manifests, LibriSpeech layout, audio folders)
  calib    - rarity tagging and streamed second-moment statistics
  methods  - quantization methods (rtn, gptq, rarebal, tarq, qep) behind one registry
  export   - ggml block packing, whisper.cpp .bin and GGUF writers/readers
  eval     - WER / rare-WER scoring and decoding backends
  cli      - the ``tarq`` command
"""

__version__ = "0.1.0"

# CPU numerics (tarq/_numerics.py): pin every per-CPU kernel choice (OpenBLAS, MKL, ATen, oneDNN) to one code path,
# so a calibrated file is the same from any x86 CPU with AVX2 (TARQ_NUMERICS=portable; about 2x the build time), or
# leave the choice to the libraries with MKL's strict thread-count invariance (TARQ_NUMERICS=native, the default).
# The libraries read these variables once, when they start, so this runs before tarq imports torch or tarq._C.
from . import _numerics as _numerics_module  # noqa: E402

_numerics_module.apply_from_environment()
