"""Bit-exact export of quantized models to ggml runtimes (see docs/export.md).

Submodules (imported on demand so ``import tarq.export`` stays light):
  ggml_tensor     GgmlTensor: a named tensor as ggml stores it (types from tarq.ggml)
  whisper_cpp     whisper.cpp legacy ggml ``.bin``: WhisperModelFile, write_whisper_bin, read_whisper_cpp
  whisper_export  quantized directory / float model -> whisper.cpp file (export_whisper_cpp)
  gguf_writer     write_gguf / read_gguf with a model-family registry
  gguf_dialect    building blocks of the runtimes' GGUF dialects (families build the plans)
  integrity       MODEL.sha256 sidecars: write_checksum / verify_checksum (tarq eval/transcribe --verify)
  ggml_oracle     libggml-base via ctypes: the test oracle (never used by the product path)

Running exported files in the real runtimes is evaluation's: tarq.eval.runtimes.
"""
