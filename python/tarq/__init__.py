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

import os as _os

__version__ = "0.1.0"

# Thread-count invariance (docs/methods.md §2): MKL, which PyTorch's x86 wheels use for float32/float64 GEMMs,
# picks thread-count-dependent kernels for small GEMMs (e.g. the decoder's [15, 384] Linears), so `--threads 1`
# and `--threads 2` gave different activations and codes. Strict conditional numerical reproducibility makes
# MKL's GEMMs bitwise independent of the thread count. MKL reads this on its first call, so it is set here,
# before tarq runs any GEMM; a value the user set wins.
_os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
