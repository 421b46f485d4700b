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
