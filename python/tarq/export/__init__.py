"""Bit-exact export of quantized models to ggml runtimes (see docs/export.md).

Submodules (imported on demand so ``import tarq.export`` stays light):
  ggml_blocks     codes + fp16 scales <-> ggml block bytes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16, F32)
  ggml_rtn        bit-exact clone of ggml's reference quantizers (whisper.cpp ``quantize`` baseline)
  whisper_cpp     whisper.cpp legacy ggml ``.bin``: WhisperModelFile, write_whisper_bin, read_whisper_cpp
  whisper_export  quantized directory / float model -> whisper.cpp file (export_whisper_cpp)
  gguf_writer     write_gguf / read_gguf with a model-family registry
  integrity       MODEL.sha256 sidecars: write_checksum / verify_checksum (tarq eval/transcribe --verify)

Running exported files in the real runtimes is evaluation's: tarq.eval.runtimes.
"""
