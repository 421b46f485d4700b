"""Build whisper.cpp model files from what tarq has: a quantized directory, or a float model.

* :func:`checkpoint_to_whisper_file` writes the directory's ggml bytes verbatim (no re-quantization). Symmetric
  data may be stored in a wider container (``--type``): Q4_0 codes into Q4_1 as ``d, m = -8 d``, into Q5_0 /
  Q8_0 as they are (tarq.ggml.convert_exact checks the weights stay bit-identical).
* :func:`float_to_whisper_file` writes F16/F32 models, or the whisper.cpp ``quantize`` baseline: ggml's
  quantizer (tarq.ggml.ggml_quantize, bit-exact) on the fp16-rounded weights, optionally with per-weight
  importance vectors (imatrix RTN).
* :func:`rtn_quantized_tensors` gives that same baseline as QuantizedTensors, so it can be saved
  as a tarq quantized directory and evaluated with every other backend.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..ggml import F16, F32, GgmlType, as_f16_source, convert_exact, get_type, ggml_quantize
from ..ggml.plan import check_fits
from . import whisper_names as names
from .whisper_assets import mel_filters, vocab_bytes
from .ggml_tensor import GgmlTensor
from .whisper_cpp import WhisperHParams, WhisperModelFile, ftype_for, write_whisper_bin

log = logging.getLogger(__name__)


def _np(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    return np.asarray(t)


def _hparams(config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], wtype: GgmlType) -> WhisperHParams:
    try:
        enc_pos = shapes["encoder.positional_embedding"]
        dec_pos = shapes["decoder.positional_embedding"]
        return WhisperHParams(
            n_vocab=int(config["vocab_size"]), n_audio_ctx=int(enc_pos[0]), n_audio_state=int(config["d_model"]),
            n_audio_head=int(config["encoder_attention_heads"]), n_audio_layer=int(config["encoder_layers"]),
            n_text_ctx=int(dec_pos[0]), n_text_state=int(config["d_model"]),
            n_text_head=int(config["decoder_attention_heads"]), n_text_layer=int(config["decoder_layers"]),
            n_mels=int(config["num_mel_bins"]), ftype=ftype_for(wtype))
    except KeyError as e:
        raise ValueError(f"Whisper config/state dict lacks {e.args[0]!r}; is this a Whisper model?") from None


def _model_file(hp: WhisperHParams, tensors: dict[str, GgmlTensor], tokenizer: Any) -> WhisperModelFile:
    """Assemble the file with tensors in one canonical order, so equal content gives equal bytes."""
    order = {n: i for i, n in enumerate(names.expected_names(hp.n_audio_layer, hp.n_text_layer))}
    ordered = dict(sorted(tensors.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    return WhisperModelFile(hp, mel_filters(hp.n_mels), vocab_bytes(tokenizer), ordered)


def _float_tensor(cpp: str, value: np.ndarray, wtype: GgmlType) -> GgmlTensor:
    r = names.role(cpp, value.ndim)
    if r == "conv":
        return GgmlTensor.from_float(cpp, value, F32 if wtype is F32 else F16)
    if cpp in ("encoder.conv1.bias", "encoder.conv2.bias"):
        value = value.reshape(-1, 1)  # whisper.cpp wants ne [1, n_state]
    return GgmlTensor.from_float(cpp, value, F32)


def _map_floats(floats: Mapping[str, Any], wtype: GgmlType, where: str,
                weight_fn=None) -> dict[str, GgmlTensor]:
    """Float parameters -> whisper.cpp tensors. ``weight_fn(cpp, array)`` handles weight-role tensors."""
    out: dict[str, GgmlTensor] = {}
    for hf, t in floats.items():
        value = _np(t)
        if names.is_unstorable_key_bias(hf):
            if np.any(value != 0):
                raise ValueError(f"{where}: {hf} is non-zero, but whisper.cpp has no key bias")
            continue
        cpp = names.hf_to_cpp(hf)
        if cpp is None:
            continue
        if names.role(cpp, value.ndim) == "weight":
            if weight_fn is None:
                raise ValueError(f"{where}: {hf} is a float tensor, but whisper.cpp stores every Linear weight "
                                 f"and the token embedding in the one quantized type; quantize it too")
            out[cpp] = weight_fn(cpp, value)
        else:
            out[cpp] = _float_tensor(cpp, value, wtype)
    return out


def checkpoint_to_whisper_file(ckpt, *, qtype: str | None = None, tokenizer: Any = None) -> WhisperModelFile:
    """A QuantizedCheckpoint (or its directory) as a whisper.cpp model, ggml bytes verbatim."""
    from ..qmodel import QuantizedCheckpoint, load_quantized_dir

    if not isinstance(ckpt, QuantizedCheckpoint):
        ckpt = load_quantized_dir(ckpt)
    where = str(ckpt.path)
    if ckpt.meta.get("family", "whisper") != "whisper":
        raise ValueError(f"{where}: family {ckpt.meta.get('family')!r} cannot be exported to whisper.cpp")
    if qtype is None and ckpt.wtype is None:
        raise ValueError(f"{where}: tensors have different types ({', '.join(sorted(ckpt.types))}); whisper.cpp "
                         f"needs one type for every weight (export to GGUF, or pass --type to store all in one)")
    target = get_type(qtype) if qtype else ckpt.wtype
    if not target.quantized:
        raise ValueError(f"{where}: --type {target.name} is not a quantized type; export the float model instead")
    tensors: dict[str, GgmlTensor] = {}
    for hf, qt in ckpt.quantized.items():
        cpp = names.hf_to_cpp(hf)
        if cpp is None:
            continue
        if names.role(cpp, len(qt.shape)) != "weight":
            raise ValueError(f"{where}: {hf} is quantized, but whisper.cpp stores {cpp} as float")
        try:
            data = convert_exact(qt.qtype, qt.numpy(), qt.shape[1], target)
        except ValueError as e:
            raise ValueError(f"{where}: {hf}: {e}") from None
        tensors[cpp] = GgmlTensor(cpp, target, qt.shape, data)
    tensors.update(_map_floats({k: v for k, v in ckpt.floats.items() if k not in ckpt.quantized}, target, where))
    shapes = {k: t.shape for k, t in tensors.items()}
    return _model_file(_hparams(ckpt.config, shapes, target), tensors, tokenizer or ckpt.path)


def float_to_whisper_file(state_dict: Mapping[str, Any], config: Mapping[str, Any], tokenizer: Any, *,
                          wtype: str | GgmlType = "f16", imatrix: Mapping[str, Any] | None = None
                          ) -> WhisperModelFile:
    """A float Whisper model as F16 / F32, or RTN-quantized exactly as whisper.cpp's quantize tool would.

    For a quantized ``wtype`` the weights are rounded to fp16 first (the F16 file ``quantize`` reads) and
    quantized by ggml's quantizer; ``imatrix`` ({HF weight name: per-column importance}) passes importance
    weights to it for those weights (imatrix RTN)."""
    t = get_type(wtype)
    by_cpp = {names.hf_to_cpp(hf): v for hf, v in (imatrix or {}).items()}

    def weight(cpp: str, value: np.ndarray) -> GgmlTensor:
        if not t.quantized:
            return GgmlTensor.from_float(cpp, value, t)
        check_fits(cpp, t, value.shape[-1])
        imx = by_cpp.get(cpp)
        imx = None if imx is None else _np(imx).astype(np.float32)
        return GgmlTensor(cpp, t, value.shape, ggml_quantize(t, as_f16_source(value), imx))

    tensors = _map_floats(state_dict, t, "float model", weight_fn=weight)
    return _model_file(_hparams(config, {k: v.shape for k, v in tensors.items()}, t), tensors, tokenizer)


def quantizable_names(state_dict: Mapping[str, Any]) -> list[str]:
    """HF names whisper.cpp stores in the weight type: every Linear weight and the token embedding."""
    out = []
    for hf, v in state_dict.items():
        cpp = None if names.is_unstorable_key_bias(hf) else names.hf_to_cpp(hf)
        if cpp is not None and names.role(cpp, len(v.shape)) == "weight":
            out.append(hf)
    return out


def rtn_quantized_tensors(state_dict: Mapping[str, Any], fmt: str = "q4_0",
                          imatrix: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whisper.cpp ``quantize`` baseline as ``{hf_name: QuantizedTensor}``: the same bytes as the tensors
    :func:`float_to_whisper_file` writes for ``fmt`` (and ``imatrix``)."""
    from ..qmodel import QuantizedTensor

    t = get_type(fmt)
    out = {}
    for hf in quantizable_names(state_dict):
        w = _np(state_dict[hf])
        check_fits(hf, t, w.shape[-1])
        imx = (imatrix or {}).get(hf)
        imx = None if imx is None else _np(imx).astype(np.float32)
        out[hf] = QuantizedTensor(t, ggml_quantize(t, as_f16_source(w), imx), w.shape)
    return out


def save_rtn_quantized_dir(model: Any, out_dir: str | os.PathLike, fmt: str = "q4_0", *,
                           save_extras=None, meta: dict | None = None, imatrix=None) -> Path:
    """Save the whisper.cpp RTN baseline of a float model as a tarq quantized directory.

    ``model`` is a LoadedModel (its tokenizer files are saved too) or a transformers Whisper model
    (then pass ``save_extras(dir)`` to add tokenizer files). ``proj_out.weight`` (tied to the token
    embedding) is not stored.
    """
    from ..qmodel import save_quantized_model

    net = getattr(model, "model", model)
    if save_extras is None and hasattr(model, "save_pretrained_extras"):
        save_extras = model.save_pretrained_extras
    sd = net.state_dict()
    quantized = rtn_quantized_tensors(sd, fmt, imatrix)
    floats = {k: v for k, v in sd.items() if k not in quantized and names.hf_to_cpp(k) is not None}
    method = "ggml_rtn" if imatrix is None else "ggml_imatrix"
    return save_quantized_model(out_dir, family="whisper", config=net.config.to_dict(), quantized=quantized,
                                floats=floats, meta={"method": method, **(meta or {})},
                                save_extras=save_extras)


def _resolve_float_source(source: Any, tokenizer: Any):
    """(state_dict, config dict, tokenizer) from a LoadedModel, a transformers model or a model spec."""
    if isinstance(source, (str, os.PathLike)):
        from ..models import load_model
        source = load_model(str(source))
    net = getattr(source, "model", source)
    tok = tokenizer if tokenizer is not None else getattr(source, "tokenizer", None)
    if tok is None:
        raise ValueError("exporting a float model needs its tokenizer (pass tokenizer=...)")
    if not hasattr(net, "state_dict") or not hasattr(net, "config"):
        raise ValueError(f"cannot export {type(source).__name__}: expected a Whisper model")
    return net.state_dict(), net.config.to_dict(), tok


def export_whisper_cpp(source: Any, out_path: str | os.PathLike, *, qtype: str | None = None,
                       rtn: str | None = None, float_type: str | None = None, tokenizer: Any = None,
                       imatrix: Mapping[str, Any] | None = None) -> Path:
    """One entry point for the CLI.

    * ``source`` a quantized directory / QuantizedCheckpoint: codes verbatim (``qtype`` picks the
      container, default the directory's format).
    * ``source`` a float model (LoadedModel, transformers model, or model spec): ``float_type`` "f16"
      (default) or "f32", or ``rtn`` = a quantized type for the whisper.cpp quantize baseline (with
      ``imatrix`` {HF name: importance}: ggml's importance-weighted quantization).
    """
    from ..qmodel import QuantizedCheckpoint, is_quantized_dir

    if isinstance(source, QuantizedCheckpoint) or (isinstance(source, (str, os.PathLike)) and is_quantized_dir(source)):
        if rtn or float_type:
            raise ValueError(f"{source}: is already quantized; --rtn/--f16 apply to float models only")
        mf = checkpoint_to_whisper_file(source, qtype=qtype, tokenizer=tokenizer)
    else:
        if qtype:
            raise ValueError("--type applies to quantized directories; use --rtn TYPE for a float model")
        if rtn and float_type:
            raise ValueError("give either rtn or float_type, not both")
        if imatrix is not None and not rtn:
            raise ValueError("an importance matrix applies to --rtn TYPE")
        sd, config, tok = _resolve_float_source(source, tokenizer)
        mf = float_to_whisper_file(sd, config, tok, wtype=rtn or float_type or "f16", imatrix=imatrix)
    out = write_whisper_bin(out_path, mf)
    log.info("wrote %s (%s, %d tensors, %.1f MB)", out, mf.wtype.name, len(mf.tensors), out.stat().st_size / 1e6)
    return out
