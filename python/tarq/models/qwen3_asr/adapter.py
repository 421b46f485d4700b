"""Qwen3-ASR (transformers ``Qwen3ASRForConditionalGeneration``) adapter for the calibration pipeline.

Quantization order (true-sequential):

    audio front:      [conv_out]            (input: the flattened conv2d features of each encoder frame)
    audio layer i:    [q,k,v] -> [out_proj] -> [fc1] -> [fc2]          (windowed bidirectional attention)
    projector:        [linear_1] -> [linear_2]                        (input: ln_post(h), then gelu)
    LLM layer i:      [q,k,v] -> [o_proj] -> [gate,up] -> [down]      (RMSNorm, q/k RMSNorm, RoPE, GQA, causal)
    output:           [embed_tokens] (tied lm_head; input = norm(h))  or [lm_head] when untied

Audio-tower and projector positions are encoder frames (all real audio: no 30 s padding), LLM positions are the
teacher-forced ChatML sequence (``prompt.py``) in which the audio-pad tokens carry the projector's output. Rare/common
tags apply to positions that predict transcript tokens; prompt and audio positions are common. The forward is the
transformers model cut into stages (same modules, same windows: ``get_audio_cu_seqlens``), checked against the full
forward in tests/test_qwen3_asr.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...calib.rarity import tag_positions
from ..adapter import FRAMES, Block, CalibSample, LinearGroup, ModelAdapter, Stage
from ..attention import attend_heads
from .load import EMBED, LM_HEAD, tied_parameters
from .prompt import audio_features, n_audio_frames, prompt_ids

AUDIO = "model.audio_tower"
PROJ = "model.multi_modal_projector"
LLM = "model.language_model"
FRONT_BLOCK = f"{AUDIO}.front"
OUTPUT_BLOCK = f"{LLM}.output"


def _w(prefix: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{n}.weight" for n in names)


class Qwen3AsrAdapter(ModelAdapter):
    family = "qwen3_asr"

    # ---------------------------------------------------------------- structure
    def blocks(self, model) -> list[Block]:
        a, t = model.config.audio_config, model.config.text_config
        out = [Block(FRONT_BLOCK, (Stage("conv_out", (LinearGroup(f"{AUDIO}.conv_out", _w(AUDIO, "conv_out"), FRAMES),)),))]
        for i in range(a.encoder_layers):
            p = f"{AUDIO}.layers.{i}"
            out.append(Block(p, (
                Stage("self_attn.qkv", (LinearGroup(f"{p}.self_attn.qkv", _w(f"{p}.self_attn", "q_proj", "k_proj", "v_proj"), FRAMES),)),
                Stage("self_attn.out_proj", (LinearGroup(f"{p}.self_attn.out_proj", _w(f"{p}.self_attn", "out_proj"), FRAMES),)),
                Stage("fc1", (LinearGroup(f"{p}.fc1", _w(p, "fc1"), FRAMES),)),
                Stage("fc2", (LinearGroup(f"{p}.fc2", _w(p, "fc2"), FRAMES),)),
            )))
        out.append(Block(PROJ, (
            Stage("linear_1", (LinearGroup(f"{PROJ}.linear_1", _w(PROJ, "linear_1"), FRAMES),)),
            Stage("linear_2", (LinearGroup(f"{PROJ}.linear_2", _w(PROJ, "linear_2"), FRAMES),)),
        )))
        for i in range(t.num_hidden_layers):
            p = f"{LLM}.layers.{i}"
            out.append(Block(p, (
                Stage("self_attn.qkv", (LinearGroup(f"{p}.self_attn.qkv", _w(f"{p}.self_attn", "q_proj", "k_proj", "v_proj")),)),
                Stage("self_attn.o_proj", (LinearGroup(f"{p}.self_attn.o_proj", _w(f"{p}.self_attn", "o_proj")),)),
                Stage("mlp.gate_up", (LinearGroup(f"{p}.mlp.gate_up", _w(f"{p}.mlp", "gate_proj", "up_proj")),)),
                Stage("mlp.down_proj", (LinearGroup(f"{p}.mlp.down_proj", _w(f"{p}.mlp", "down_proj")),)),
            )))
        head = EMBED if self.tied_parameters(model) else LM_HEAD
        out.append(Block(OUTPUT_BLOCK, (Stage("output", (LinearGroup(head.removesuffix(".weight"), (head,)),)),)))
        return out

    def tied_parameters(self, model=None) -> dict[str, str]:
        return tied_parameters(model.config.to_dict()) if model is not None else {LM_HEAD: EMBED}

    # ---------------------------------------------------------------- samples
    def prepare_sample(self, loaded, utt_id, audio, text, *, zipf_threshold, tag_by) -> CalibSample:
        feats, n_mel = audio_features(loaded.feature_extractor, audio)
        n_audio = n_audio_frames(n_mel, loaded.model.config.audio_config.n_window)
        ids = prompt_ids(loaded.tokenizer, loaded.language)
        transcript = loaded.tokenizer.encode(text.strip(), add_special_tokens=False) if text else []
        tokens = ids.full(n_audio, transcript) + [ids.end_of_turn]
        # Tag only positions that predict the transcript (and its end): start at the last prompt token.
        start = len(tokens) - len(transcript) - 2
        special = set(getattr(loaded.tokenizer, "all_special_ids", [])) | {ids.end_of_turn, ids.end_of_text}
        tail = torch.zeros(len(tokens) - 1, dtype=torch.bool)
        tail[start:] = tag_positions(loaded.tokenizer, tokens[start:], special | {tokens[start]},
                                     threshold=zipf_threshold, tag_by=tag_by)
        return CalibSample(utt_id, feats, tokens, tail, n_audio, text=text, extra={"n_mel_frames": n_mel})

    # ---------------------------------------------------------------- forward pieces
    @staticmethod
    def audio_front(model, features: torch.Tensor, n_mel: int):
        """(conv_out inputs of the valid frames [N, C*F], their positional rows [N, d], cu_seqlens windows)."""
        from transformers.models.qwen3_asr.modeling_qwen3_asr import get_audio_cu_seqlens

        enc = model.model.audio_tower
        n_mels, t_pad = features.shape
        chunk = enc.n_window * 2
        n_chunks = t_pad // chunk
        mask = torch.zeros(t_pad, dtype=torch.long, device=features.device)
        mask[:n_mel] = 1
        chunk_lens = mask.view(n_chunks, chunk).sum(-1)
        cu = get_audio_cu_seqlens(chunk_lens, mask.sum()[None], enc.n_window_infer, enc.n_window)
        x = features.view(n_mels, n_chunks, chunk).permute(1, 0, 2).reshape(n_chunks, 1, n_mels, chunk)
        x = F.gelu(enc.conv2d3(F.gelu(enc.conv2d2(F.gelu(enc.conv2d1(x))))))
        nc, c, f, t = x.shape
        rows = x.permute(0, 3, 1, 2).reshape(nc * t, c * f)
        valid = (torch.arange(t, device=x.device) < enc._post_cnn_length(chunk_lens)[:, None]).flatten()
        idx = valid.nonzero().squeeze(-1)
        pos = enc.positional_embedding.positional_embedding[:t].to(x.dtype).repeat(nc, 1)
        return rows[idx], pos[idx], cu

    @staticmethod
    def _audio_attention(attn, x: torch.Tensor, cu: torch.Tensor) -> torch.Tensor:
        """Bidirectional attention inside each window of ``cu`` (no out_proj)."""
        h, hd = attn.num_heads, attn.head_dim
        q, k, v = (p(x).view(-1, h, hd).transpose(0, 1) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        outs = []
        for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
            outs.append(attend_heads(q[:, s:e], k[:, s:e], v[:, s:e], scale=attn.scaling))
        return torch.cat(outs, dim=1).transpose(0, 1).reshape(x.shape[0], h * hd)

    @staticmethod
    def _llm_attention(attn, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Qwen3 causal GQA attention with per-head q/k RMSNorm and RoPE (no o_proj)."""
        from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb

        hd = attn.head_dim
        q = attn.q_norm(attn.q_proj(x).view(x.shape[0], -1, hd)).transpose(0, 1)[None]
        k = attn.k_norm(attn.k_proj(x).view(x.shape[0], -1, hd)).transpose(0, 1)[None]
        v = attn.v_proj(x).view(x.shape[0], -1, hd).transpose(0, 1)[None]
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        o = attend_heads(q[0], k[0], v[0], causal=True, scale=attn.scaling, enable_gqa=True)
        return o.transpose(0, 1).reshape(x.shape[0], -1)

    def init_state(self, model, sample: CalibSample) -> dict:
        rows, pos, cu = self.audio_front(model, sample.features, int(sample.extra["n_mel_frames"]))
        if rows.shape[0] != sample.n_speech_frames:
            raise RuntimeError(f"utterance {sample.id}: {rows.shape[0]} encoder frames, prompt has "
                               f"{sample.n_speech_frames} audio tokens")
        return {"conv": rows, "pos": pos, "cu": cu}

    def enter_block(self, model, block: Block, state: dict, sample: CalibSample) -> dict:
        if block.name == f"{LLM}.layers.0":
            lm = model.model.language_model
            ids = torch.tensor(sample.tokens[:-1], device=state["audio"].device)
            h = lm.embed_tokens(ids).clone()
            where = ids == model.config.audio_token_id
            if int(where.sum()) != state["audio"].shape[0]:
                raise RuntimeError(f"utterance {sample.id}: {int(where.sum())} audio tokens for "
                                   f"{state['audio'].shape[0]} audio frames")
            h[where] = state["audio"].to(h.dtype)
            pos = torch.arange(ids.shape[0], device=h.device)[None]
            cos, sin = lm.rotary_emb(h[None], pos)
            return {"h": h, "cos": cos, "sin": sin}
        return state

    def stage_inputs(self, model, block, stage_idx, state, sample, keys) -> dict[str, torch.Tensor]:
        stage = block.stages[stage_idx]
        g0 = stage.groups[0].key
        if block.name == FRONT_BLOCK:
            return {g0: state["conv"]}
        if block.name == PROJ:
            if stage.name == "linear_1":
                return {g0: model.model.audio_tower.ln_post(state["h"])}
            return {g0: state["proj_act"]}
        if block.name == OUTPUT_BLOCK:
            return {g0: model.model.language_model.norm(state["h"])}
        layer = model.get_submodule(block.name)
        audio = block.name.startswith(AUDIO)
        name = stage.name
        if name == "self_attn.qkv":
            return {g0: (layer.self_attn_layer_norm if audio else layer.input_layernorm)(state["h"])}
        if name in ("self_attn.out_proj", "self_attn.o_proj"):
            return {g0: state["attn"]}
        if name == "fc1":
            return {g0: layer.final_layer_norm(state["h"])}
        if name == "fc2":
            state["mlp_mid"] = layer.activation_fn(layer.fc1(layer.final_layer_norm(state["h"])))
            return {g0: state["mlp_mid"]}
        if name == "mlp.gate_up":
            return {g0: layer.post_attention_layernorm(state["h"])}
        if name == "mlp.down_proj":
            x = layer.post_attention_layernorm(state["h"])
            state["mlp_mid"] = layer.mlp.act_fn(layer.mlp.gate_proj(x)) * layer.mlp.up_proj(x)
            return {g0: state["mlp_mid"]}
        raise KeyError(f"unknown Qwen3-ASR stage {block.name}.{name}")

    def advance(self, model, block, stage_idx, state, sample) -> dict:
        name = block.stages[stage_idx].name
        if block.name == FRONT_BLOCK:
            state["h"] = model.model.audio_tower.conv_out(state.pop("conv")) + state.pop("pos")
            return state
        if block.name == PROJ:
            proj = model.model.multi_modal_projector
            if name == "linear_1":
                state["proj_act"] = proj.act(proj.linear_1(model.model.audio_tower.ln_post(state.pop("h"))))
            else:
                state["audio"] = proj.linear_2(state.pop("proj_act"))
            return state
        if block.name == OUTPUT_BLOCK:
            return state
        layer = model.get_submodule(block.name)
        h = state["h"]
        if name == "self_attn.qkv":
            if block.name.startswith(AUDIO):
                state["attn"] = self._audio_attention(layer.self_attn, layer.self_attn_layer_norm(h), state["cu"])
            else:
                state["attn"] = self._llm_attention(layer.self_attn, layer.input_layernorm(h), state["cos"],
                                                    state["sin"])
        elif name == "self_attn.out_proj":
            state["h"] = h + layer.self_attn.out_proj(state.pop("attn"))
        elif name == "self_attn.o_proj":
            state["h"] = h + layer.self_attn.o_proj(state.pop("attn"))
        elif name in ("fc1", "mlp.gate_up"):
            pass  # the MLP's middle is built once, in the next stage's stage_inputs, and kept for its advance
        elif name == "fc2":
            x = state.pop("mlp_mid", None)
            if x is None:
                x = layer.activation_fn(layer.fc1(layer.final_layer_norm(h)))
            state["h"] = h + layer.fc2(x)
        elif name == "mlp.down_proj":
            x = state.pop("mlp_mid", None)
            if x is None:
                y = layer.post_attention_layernorm(h)
                x = layer.mlp.act_fn(layer.mlp.gate_proj(y)) * layer.mlp.up_proj(y)
            state["h"] = h + layer.mlp.down_proj(x)
        else:
            raise KeyError(f"unknown Qwen3-ASR stage {block.name}.{name}")
        return state

    # ---------------------------------------------------------------- helpers for tests
    def logits(self, model, state: dict) -> torch.Tensor:
        return model.lm_head(model.model.language_model.norm(state["h"]))
