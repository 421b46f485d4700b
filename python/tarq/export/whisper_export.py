"""Build whisper.cpp model files from what tarq has: a quantized directory, or a float model.

* :func:`checkpoint_to_whisper_file` writes the solver's codes and fp16 scales verbatim (no
  re-quantization). Codes may be stored in a wider container than their lattice: Q4_0 codes go
  into Q4_1 as ``d = s, m = -8 s`` (and Q5_1 as ``m = -16 s``), into Q5_0 / Q8_0 as they are; the
  dequantized values stay bit-identical (formats.md §2.1).
* :func:`float_to_whisper_file` writes F16/F32 models, or the whisper.cpp ``quantize`` baseline:
  RTN by the bit-exact clone of ggml's reference quantizer applied to the fp16-rounded weights.
* :func:`rtn_quantized_tensors` gives that same baseline as QuantizedTensors, so it can be saved
  as a tarq quantized directory and evaluated with every other backend.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import whisper_names as names
from .ggml_blocks import F16, F32, GgmlType, QuantType, get_type
from .ggml_rtn import as_f16_source, ggml_reference_quantize
from .whisper_assets import mel_filters, vocab_bytes
from .ggml_tensor import GgmlTensor
from .whisper_cpp import WhisperHParams, WhisperModelFile, ftype_for, write_whisper_bin

log = logging.getLogger(__name__)

# offset that turns a symmetric code into the unsigned code of an asymmetric container (m = -offset * d)
_ASYM_OFFSET = {"q4_1": 8, "q5_1": 16}


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


def _container_codes(codes: np.ndarray, scales: np.ndarray, target: QuantType, what: str):
    """Store symmetric codes (d * q) in ``target``; returns (codes, scales, mins) for pack()."""
    if not target.has_min:
        return codes, scales, None
    off = _ASYM_OFFSET[target.name]
    s32 = scales.astype(np.float32)
    with np.errstate(over="ignore"):
        mins = (s32 * np.float32(-off)).astype(np.float16)
    if not np.array_equal(mins.astype(np.float32), s32 * np.float32(-off)):
        raise ValueError(f"{what}: -{off}*scale overflows fp16; cannot store exactly as {target.name}")
    return codes.astype(np.int16) + off, scales, mins


def checkpoint_to_whisper_file(ckpt, *, qtype: str | None = None, tokenizer: Any = None) -> WhisperModelFile:
    """A QuantizedCheckpoint (or its directory) as a whisper.cpp model, codes and scales verbatim."""
    from ..qmodel import QuantizedCheckpoint, load_quantized_dir

    if not isinstance(ckpt, QuantizedCheckpoint):
        ckpt = load_quantized_dir(ckpt)
    where = str(ckpt.path)
    if ckpt.meta.get("family", "whisper") != "whisper":
        raise ValueError(f"{where}: family {ckpt.meta.get('family')!r} cannot be exported to whisper.cpp")
    target = get_type(qtype or ckpt.fmt.name)
    if not isinstance(target, QuantType):
        raise ValueError(f"{where}: --type {target.name} is not a quantized type; export the float model instead")
    tensors: dict[str, GgmlTensor] = {}
    for hf, qt in ckpt.quantized.items():
        cpp = names.hf_to_cpp(hf)
        if cpp is None:
            continue
        if names.role(cpp, qt.codes.ndim) != "weight":
            raise ValueError(f"{where}: {hf} is quantized, but whisper.cpp stores {cpp} as float")
        what = f"{where}: {hf}"
        codes, scales, mins = _container_codes(_np(qt.codes), _np(qt.scales), target, what)
        try:
            tensors[cpp] = GgmlTensor.from_blocks(cpp, target, codes, scales, mins)
        except ValueError as e:
            raise ValueError(f"{what}: cannot store {ckpt.fmt.name} codes as {target.name}: {e}") from None
    tensors.update(_map_floats({k: v for k, v in ckpt.floats.items() if k not in ckpt.quantized}, target, where))
    shapes = {k: t.shape for k, t in tensors.items()}
    return _model_file(_hparams(ckpt.config, shapes, target), tensors, tokenizer or ckpt.path)


def float_to_whisper_file(state_dict: Mapping[str, Any], config: Mapping[str, Any], tokenizer: Any, *,
                          wtype: str | GgmlType = "f16") -> WhisperModelFile:
    """A float Whisper model as F16 / F32, or RTN-quantized exactly as whisper.cpp's quantize tool would.

    For a quantized ``wtype`` the weights are rounded to fp16 first (the F16 file ``quantize`` reads)
    and then quantized by the NumPy clone of ggml's reference quantizer.
    """
    t = get_type(wtype)

    def weight(cpp: str, value: np.ndarray) -> GgmlTensor:
        if not t.quantized:
            return GgmlTensor.from_float(cpp, value, t)
        bd = ggml_reference_quantize(t, as_f16_source(value))
        return GgmlTensor.from_blocks(cpp, t, bd.codes, bd.scales, bd.mins)

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


def rtn_quantized_tensors(state_dict: Mapping[str, Any], fmt: str = "q4_0") -> dict[str, Any]:
    """The whisper.cpp ``quantize`` baseline as ``{hf_name: QuantizedTensor}`` (group size 32).

    Identical codes and scales to the tensors :func:`float_to_whisper_file` writes for ``fmt``.
    """
    import torch

    from ..formats import get_format

    qfmt = get_format(fmt, 32)
    out = {}
    for hf in quantizable_names(state_dict):
        bd = ggml_reference_quantize(fmt, as_f16_source(_np(state_dict[hf])))
        out[hf] = _QT(torch.from_numpy(bd.codes), torch.from_numpy(bd.scales), qfmt)
    return out


def _QT(codes, scales, fmt):
    from ..qmodel import QuantizedTensor
    return QuantizedTensor(codes, scales, fmt)


def save_rtn_quantized_dir(model: Any, out_dir: str | os.PathLike, fmt: str = "q4_0", *,
                           save_extras=None, meta: dict | None = None) -> Path:
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
    quantized = rtn_quantized_tensors(sd, fmt)
    floats = {k: v for k, v in sd.items() if k not in quantized and names.hf_to_cpp(k) is not None}
    return save_quantized_model(out_dir, family="whisper", config=net.config.to_dict(), quantized=quantized,
                                floats=floats, meta={"method": "ggml_rtn", **(meta or {})},
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
                       rtn: str | None = None, float_type: str | None = None, tokenizer: Any = None) -> Path:
    """One entry point for the CLI.

    * ``source`` a quantized directory / QuantizedCheckpoint: codes verbatim (``qtype`` picks the
      container, default the directory's format).
    * ``source`` a float model (LoadedModel, transformers model, or model spec): ``float_type`` "f16"
      (default) or "f32", or ``rtn`` = a quantized type for the whisper.cpp quantize baseline.
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
        sd, config, tok = _resolve_float_source(source, tokenizer)
        mf = float_to_whisper_file(sd, config, tok, wtype=rtn or float_type or "f16")
    out = write_whisper_bin(out_path, mf)
    log.info("wrote %s (%s, %d tensors, %.1f MB)", out, mf.wtype.name, len(mf.tensors), out.stat().st_size / 1e6)
    return out
