"""Moonshine (transformers ``MoonshineForConditionalGeneration``) adapter for the calibration pipeline.

Quantization order (true-sequential):

    encoder layer i:  [q,k,v] -> [o_proj] -> [fc1] -> [fc2]                           (partial RoPE, bidirectional)
    decoder layer i:  [q,k,v] -> [o_proj] -> [cross q | cross k,v] -> [cross o_proj] -> [fc1] -> [fc2 (gated SiLU)]
    output:           [embed_tokens]  (tied proj_out; input = decoder.norm(h))

The conv stem (conv1/tanh/GroupNorm/conv2/conv3) stays float (CrispASR runs it as F32 im2col). Encoder positions are
the stem's output frames (all real audio: Moonshine has no fixed window), decoder positions are teacher-forced on
<s> + transcript + </s>. Cross-attention k/v of every decoder layer read the final encoder output: one shared H, as
for Whisper. Layer norms have no bias (nn.LayerNorm(bias=False)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...calib.rarity import tag_positions
from ..adapter import FRAMES, Block, CalibSample, LinearGroup, ModelAdapter, Stage
from ..attention import attend_heads
from .load import EMBED, input_values, tied_parameters

CROSS_KV_KEY = "model.decoder.encoder_attn.kv"
OUTPUT_BLOCK = "model.decoder.output"


def _w(prefix: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{n}.weight" for n in names)


def encoder_frames(n_samples: int) -> int:
    """Conv stem output length (MoonshineEncoder._get_feat_extract_output_lengths): k127/s64, k7/s3, k3/s2."""
    n = (n_samples - 127) // 64 + 1
    n = (n - 7) // 3 + 1
    return (n - 3) // 2 + 1


class MoonshineAdapter(ModelAdapter):
    family = "moonshine"

    def blocks(self, model) -> list[Block]:
        cfg = model.config
        out: list[Block] = []
        for i in range(cfg.encoder_num_hidden_layers):
            p = f"model.encoder.layers.{i}"
            out.append(Block(p, (
                Stage("self_attn.qkv", (LinearGroup(f"{p}.self_attn.qkv", _w(f"{p}.self_attn", "q_proj", "k_proj", "v_proj"), FRAMES),)),
                Stage("self_attn.o_proj", (LinearGroup(f"{p}.self_attn.o_proj", _w(f"{p}.self_attn", "o_proj"), FRAMES),)),
                Stage("mlp.fc1", (LinearGroup(f"{p}.mlp.fc1", _w(f"{p}.mlp", "fc1"), FRAMES),)),
                Stage("mlp.fc2", (LinearGroup(f"{p}.mlp.fc2", _w(f"{p}.mlp", "fc2"), FRAMES),)),
            )))
        for i in range(cfg.decoder_num_hidden_layers):
            p = f"model.decoder.layers.{i}"
            out.append(Block(p, (
                Stage("self_attn.qkv", (LinearGroup(f"{p}.self_attn.qkv", _w(f"{p}.self_attn", "q_proj", "k_proj", "v_proj")),)),
                Stage("self_attn.o_proj", (LinearGroup(f"{p}.self_attn.o_proj", _w(f"{p}.self_attn", "o_proj")),)),
                Stage("encoder_attn.qkv", (
                    LinearGroup(f"{p}.encoder_attn.q_proj", _w(f"{p}.encoder_attn", "q_proj")),
                    LinearGroup(CROSS_KV_KEY, _w(f"{p}.encoder_attn", "k_proj", "v_proj"), FRAMES),
                )),
                Stage("encoder_attn.o_proj", (LinearGroup(f"{p}.encoder_attn.o_proj", _w(f"{p}.encoder_attn", "o_proj")),)),
                Stage("mlp.fc1", (LinearGroup(f"{p}.mlp.fc1", _w(f"{p}.mlp", "fc1")),)),
                Stage("mlp.fc2", (LinearGroup(f"{p}.mlp.fc2", _w(f"{p}.mlp", "fc2")),)),
            )))
        if not self.tied_parameters(model):
            raise ValueError("Moonshine with an untied proj_out is not supported by tarq's calibration plan "
                             "(the released checkpoints tie it)")
        out.append(Block(OUTPUT_BLOCK, (Stage("embed_tokens", (LinearGroup(EMBED.removesuffix(".weight"), (EMBED,)),)),)))
        return out

    def tied_parameters(self, model=None) -> dict[str, str]:
        return tied_parameters(model.config.to_dict()) if model is not None else {"proj_out.weight": EMBED}

    # ---------------------------------------------------------------- samples
    def prepare_sample(self, loaded, utt_id, audio, text, *, zipf_threshold, tag_by) -> CalibSample:
        x = input_values(loaded, audio)
        if x.shape[0] < 127 + 64 * 3 * 2 * 2:
            raise ValueError(f"utterance {utt_id}: {x.shape[0]} samples is too short for Moonshine's conv stem")
        cfg = loaded.model.config
        bos, eos = int(cfg.decoder_start_token_id), int(loaded.eot_id)
        text_ids = loaded.tokenizer.encode(text.strip(), add_special_tokens=False) if text else []
        tokens = ([bos] + list(text_ids))[: cfg.max_position_embeddings - 1] + [eos]
        special = {bos, eos} | set(getattr(loaded.tokenizer, "all_special_ids", []))
        tail = tag_positions(loaded.tokenizer, tokens, special, threshold=zipf_threshold, tag_by=tag_by)
        return CalibSample(utt_id, x, tokens, tail, encoder_frames(x.shape[0]), text=text)

    # ---------------------------------------------------------------- forward pieces
    @staticmethod
    def _attend(attn, q_in, kv_in, rope, causal: bool) -> torch.Tensor:
        """Attention without o_proj; ``rope``: (cos, sin) for self-attention, None for cross-attention."""
        from transformers.models.moonshine.modeling_moonshine import apply_rotary_pos_emb

        hd = attn.head_dim
        q = attn.q_proj(q_in).view(q_in.shape[0], -1, hd).transpose(0, 1)[None]
        k = attn.k_proj(kv_in).view(kv_in.shape[0], -1, hd).transpose(0, 1)[None]
        v = attn.v_proj(kv_in).view(kv_in.shape[0], -1, hd).transpose(0, 1)[None]
        if rope is not None:
            q, k = apply_rotary_pos_emb(q, k, *rope)
        o = attend_heads(q[0], k[0], v[0], causal=causal, scale=attn.scaling, enable_gqa=True)
        return o.transpose(0, 1).reshape(q_in.shape[0], -1)

    def init_state(self, model, sample: CalibSample) -> dict:
        enc = model.model.encoder
        x = sample.features[None, None]
        x = enc.groupnorm(torch.tanh(enc.conv1(x)))
        x = F.gelu(enc.conv3(F.gelu(enc.conv2(x))))[0].T
        pos = torch.arange(x.shape[0], device=x.device)[None]
        return {"h": x, "rope": enc.rotary_emb(x[None], pos)}

    def enter_block(self, model, block: Block, state: dict, sample: CalibSample) -> dict:
        if block.name == "model.decoder.layers.0":
            dec = model.model.decoder
            ids = torch.tensor(sample.tokens[:-1], device=state["h"].device)
            h = dec.embed_tokens(ids)
            pos = torch.arange(ids.shape[0], device=h.device)[None]
            return {"h": h, "rope": dec.rotary_emb(h[None], pos), "enc": model.model.encoder.layer_norm(state["h"])}
        return state

    def stage_inputs(self, model, block, stage_idx, state, sample, keys) -> dict[str, torch.Tensor]:
        stage = block.stages[stage_idx]
        g0 = stage.groups[0].key
        if block.name == OUTPUT_BLOCK:
            return {g0: model.model.decoder.norm(state["h"])}
        layer = model.get_submodule(block.name)
        name = stage.name
        decoder = block.name.startswith("model.decoder.")
        if name == "self_attn.qkv":
            return {g0: layer.input_layernorm(state["h"])}
        if name in ("self_attn.o_proj", "encoder_attn.o_proj"):
            return {g0: state["attn"]}
        if name == "encoder_attn.qkv":
            out = {}
            if g0 in keys:
                out[g0] = layer.post_attention_layernorm(state["h"])
            if CROSS_KV_KEY in keys:
                out[CROSS_KV_KEY] = state["enc"]
            return out
        ffn_norm = layer.final_layernorm if decoder else layer.post_attention_layernorm
        if name == "mlp.fc1":
            return {g0: ffn_norm(state["h"])}
        if name == "mlp.fc2":
            state["mlp_mid"] = self._mlp_mid(layer.mlp, ffn_norm(state["h"]), decoder)
            return {g0: state["mlp_mid"]}
        raise KeyError(f"unknown Moonshine stage {block.name}.{name}")

    @staticmethod
    def _mlp_mid(mlp, x, gated: bool) -> torch.Tensor:
        y = mlp.fc1(x)
        if gated:
            y, gate = y.chunk(2, dim=-1)       # MoonshineDecoderMLP: act(gate) * value
            return mlp.activation_fn(gate) * y
        return mlp.activation_fn(y)

    def advance(self, model, block, stage_idx, state, sample) -> dict:
        if block.name == OUTPUT_BLOCK:
            return state
        layer = model.get_submodule(block.name)
        name = block.stages[stage_idx].name
        decoder = block.name.startswith("model.decoder.")
        h = state["h"]
        if name == "self_attn.qkv":
            x = layer.input_layernorm(h)
            state["attn"] = self._attend(layer.self_attn, x, x, state["rope"], causal=decoder)
        elif name == "self_attn.o_proj":
            state["h"] = h + layer.self_attn.o_proj(state.pop("attn"))
        elif name == "encoder_attn.qkv":
            state["attn"] = self._attend(layer.encoder_attn, layer.post_attention_layernorm(h), state["enc"], None,
                                         causal=False)
        elif name == "encoder_attn.o_proj":
            state["h"] = h + layer.encoder_attn.o_proj(state.pop("attn"))
        elif name == "mlp.fc1":
            pass  # the MLP's middle is built once, in fc2's stage_inputs, and kept for fc2's advance
        elif name == "mlp.fc2":
            x = state.pop("mlp_mid", None)
            if x is None:
                x = self._mlp_mid(layer.mlp, (layer.final_layernorm if decoder else layer.post_attention_layernorm)(h),
                                  decoder)
            state["h"] = h + layer.mlp.fc2(x)
        else:
            raise KeyError(f"unknown Moonshine stage {block.name}.{name}")
        return state

    def logits(self, model, state: dict) -> torch.Tensor:
        return model.proj_out(model.model.decoder.norm(state["h"]))
