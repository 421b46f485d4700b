"""Whisper (transformers ``WhisperForConditionalGeneration``) adapter for the calibration pipeline.

Quantization order (true-sequential), per encoder layer then per decoder layer:

    encoder layer i:  [q,k,v] -> [out_proj] -> [fc1] -> [fc2]
    decoder layer i:  [q,k,v] -> [out_proj] -> [cross q | cross k,v] -> [cross out_proj] -> [fc1] -> [fc2]
    output:           [embed_tokens]  (tied output projection; input = decoder.layer_norm(h))

Cross-attention k/v of every decoder layer read the same tensor (the final encoder output), so they share
one statistics key and their H (and H_Δ) is accumulated once. The forward is computed stage by stage
(LN -> qkv -> attention -> out_proj -> residual -> LN -> fc1 -> gelu -> fc2), so every Linear runs once per
stream. fc2's input ([frames, 4d] per utterance, ~1.2 GB per stream for tiny on 128 utterances) is kept from
the statistics pass to the advance pass of the fc2 stage only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...calib.rarity import tag_positions
from ..adapter import FRAMES, Block, CalibSample, LinearGroup, ModelAdapter, Stage
from ..attention import attend_heads
from .names import TIED, TOKEN_EMBEDDING

SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = 320  # hop 160 x conv2 stride 2
CROSS_KV_KEY = "model.decoder.encoder_attn.kv"
EMBED = TOKEN_EMBEDDING.removesuffix(".weight")


def _w(prefix: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{n}.weight" for n in names)


class WhisperAdapter(ModelAdapter):
    family = "whisper"
    recomputable_state = ("fc2_in",)

    # ---------------------------------------------------------------- structure
    def blocks(self, model) -> list[Block]:
        cfg = model.config
        out: list[Block] = []
        for i in range(cfg.encoder_layers):
            p = f"model.encoder.layers.{i}"
            out.append(Block(p, (
                Stage("self_attn.qkv", (LinearGroup(f"{p}.self_attn.qkv", _w(f"{p}.self_attn", "q_proj", "k_proj", "v_proj"), FRAMES),)),
                Stage("self_attn.out_proj", (LinearGroup(f"{p}.self_attn.out_proj", _w(f"{p}.self_attn", "out_proj"), FRAMES),)),
                Stage("fc1", (LinearGroup(f"{p}.fc1", _w(p, "fc1"), FRAMES),)),
                Stage("fc2", (LinearGroup(f"{p}.fc2", _w(p, "fc2"), FRAMES),)),
            )))
        for i in range(cfg.decoder_layers):
            p = f"model.decoder.layers.{i}"
            out.append(Block(p, (
                Stage("self_attn.qkv", (LinearGroup(f"{p}.self_attn.qkv", _w(f"{p}.self_attn", "q_proj", "k_proj", "v_proj")),)),
                Stage("self_attn.out_proj", (LinearGroup(f"{p}.self_attn.out_proj", _w(f"{p}.self_attn", "out_proj")),)),
                Stage("encoder_attn.qkv", (
                    LinearGroup(f"{p}.encoder_attn.q_proj", _w(f"{p}.encoder_attn", "q_proj")),
                    LinearGroup(CROSS_KV_KEY, _w(f"{p}.encoder_attn", "k_proj", "v_proj"), FRAMES),
                )),
                Stage("encoder_attn.out_proj", (LinearGroup(f"{p}.encoder_attn.out_proj", _w(f"{p}.encoder_attn", "out_proj")),)),
                Stage("fc1", (LinearGroup(f"{p}.fc1", _w(p, "fc1")),)),
                Stage("fc2", (LinearGroup(f"{p}.fc2", _w(p, "fc2")),)),
            )))
        out.append(Block("model.decoder.output", (
            Stage("embed_tokens", (LinearGroup(EMBED, (f"{EMBED}.weight",)),)),
        )))
        return out

    def tied_parameters(self, model=None) -> dict[str, str]:
        return dict(TIED)

    # ---------------------------------------------------------------- samples
    def prepare_sample(self, loaded, utt_id, audio, text, *, zipf_threshold, tag_by) -> CalibSample:
        import numpy as np

        audio = np.asarray(audio, dtype=np.float32)
        max_samples = 30 * SAMPLE_RATE
        if audio.shape[0] > max_samples:
            raise ValueError(f"utterance {utt_id}: {audio.shape[0] / SAMPLE_RATE:.1f} s is longer than Whisper's "
                             f"30 s window; split it or leave it out of the calibration set")
        feats = loaded.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features[0]
        prompt = list(loaded.decoder_prompt_ids())
        eot = int(loaded.eot_id)
        text_ids = loaded.tokenizer.encode(" " + text.strip(), add_special_tokens=False) if text else []
        max_len = loaded.model.config.max_target_positions
        tokens = (prompt + list(text_ids))[: max_len - 1] + [eot]
        special = set(prompt) | {eot} | set(getattr(loaded.tokenizer, "all_special_ids", []))
        tail = tag_positions(loaded.tokenizer, tokens, special, threshold=zipf_threshold, tag_by=tag_by)
        n_frames = loaded.model.config.max_source_positions
        n_speech = min(n_frames, max(1, math.ceil(audio.shape[0] / SAMPLES_PER_FRAME)))
        return CalibSample(utt_id, feats.float(), tokens, tail, n_speech, text=text)

    # ---------------------------------------------------------------- forward pieces
    @staticmethod
    def _mod(model, name):
        return model.get_submodule(name)

    @staticmethod
    def _attend(attn, q_in: torch.Tensor, kv_in: torch.Tensor | None, causal: bool,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Multi-head attention without out_proj. q_in [T, d]; k/v from kv_in or given."""
        h, hd = attn.num_heads, attn.head_dim
        q = attn.q_proj(q_in)
        if kv is None:
            k, v = attn.k_proj(kv_in), attn.v_proj(kv_in)
        else:
            k, v = kv
        T, S = q.shape[0], k.shape[0]
        q = q.view(T, h, hd).transpose(0, 1)
        k = k.view(S, h, hd).transpose(0, 1)
        v = v.view(S, h, hd).transpose(0, 1)
        o = attend_heads(q, k, v, causal=causal, scale=attn.scaling)
        return o.transpose(0, 1).reshape(T, h * hd)

    def init_state(self, model, sample: CalibSample) -> dict:
        enc = model.model.encoder
        x = sample.features.unsqueeze(0)
        x = F.gelu(enc.conv1(x))
        x = F.gelu(enc.conv2(x))[0].T
        return {"h": x + enc.embed_positions.weight[: x.shape[0]]}

    def enter_block(self, model, block: Block, state: dict, sample: CalibSample) -> dict:
        if block.name == "model.decoder.layers.0":
            enc_out = model.model.encoder.layer_norm(state["h"])
            dec = model.model.decoder
            ids = torch.tensor(sample.tokens[:-1], device=sample.features.device)
            h = dec.embed_tokens(ids) + dec.embed_positions.weight[: ids.shape[0]]
            return {"h": h, "enc": enc_out}
        return state

    def stage_inputs(self, model, block, stage_idx, state, sample, keys) -> dict[str, torch.Tensor]:
        stage = block.stages[stage_idx]
        if block.name == "model.decoder.output":
            return {EMBED: model.model.decoder.layer_norm(state["h"])}
        layer = self._mod(model, block.name)
        name = stage.name
        g0 = stage.groups[0].key
        if name == "self_attn.qkv":
            return {g0: layer.self_attn_layer_norm(state["h"])}
        if name in ("self_attn.out_proj", "encoder_attn.out_proj"):
            return {g0: state["attn"]}
        if name == "encoder_attn.qkv":
            out = {}
            if g0 in keys:
                out[g0] = layer.encoder_attn_layer_norm(state["h"])
            if CROSS_KV_KEY in keys:
                out[CROSS_KV_KEY] = state["enc"]
            return out
        if name == "fc1":
            return {g0: layer.final_layer_norm(state["h"])}
        if name == "fc2":
            # kept for advance(): fc1 (already quantized) is not run a second time
            state["fc2_in"] = layer.activation_fn(layer.fc1(layer.final_layer_norm(state["h"])))
            return {g0: state["fc2_in"]}
        raise KeyError(f"unknown Whisper stage {name!r}")

    def advance(self, model, block, stage_idx, state, sample) -> dict:
        if block.name == "model.decoder.output":
            return state
        layer = self._mod(model, block.name)
        name = block.stages[stage_idx].name
        h = state["h"]
        causal = block.name.startswith("model.decoder.")
        if name == "self_attn.qkv":
            x = layer.self_attn_layer_norm(h)
            state["attn"] = self._attend(layer.self_attn, x, x, causal)
        elif name == "self_attn.out_proj":
            state["h"] = h + layer.self_attn.out_proj(state.pop("attn"))
        elif name == "encoder_attn.qkv":
            x = layer.encoder_attn_layer_norm(h)
            state["attn"] = self._attend(layer.encoder_attn, x, state["enc"], False)
        elif name == "encoder_attn.out_proj":
            state["h"] = h + layer.encoder_attn.out_proj(state.pop("attn"))
        elif name == "fc1":
            pass  # fc1's output is built once, in fc2's stage_inputs, and kept there for fc2's advance
        elif name == "fc2":
            x = state.pop("fc2_in", None)
            if x is None:
                x = layer.activation_fn(layer.fc1(layer.final_layer_norm(h)))
            state["h"] = h + layer.fc2(x)
        else:
            raise KeyError(f"unknown Whisper stage {name!r}")
        return state

    # ---------------------------------------------------------------- the FP analysis pass (calib/analysis.py)
    def sensitivity_module(self, weight_name: str) -> str:
        # the tied token embedding's output role is the output projection (proj_out shares its weight)
        return "proj_out" if weight_name == TOKEN_EMBEDDING else weight_name.removesuffix(".weight")

    def alignment_heads(self, model) -> list[tuple[int, int]]:
        from ...calib.frame_tags import alignment_heads_or_upper

        gen = getattr(model, "generation_config", None)
        return alignment_heads_or_upper(getattr(gen, "alignment_heads", None), model.config.decoder_layers,
                                        model.config.decoder_attention_heads)

    def analysis_forward(self, model, sample, attention_heads=(), requires_grad=False):
        """transformers' own forward (so every Linear runs as a module and its hooks fire); the cross-attention
        probabilities of the requested heads are rebuilt from the q/k projections' outputs (softmax(q kᵀ · scaling),
        as WhisperAttention computes them; no mask over the encoder frames)."""
        feats = sample.features.unsqueeze(0)
        if requires_grad:
            feats = feats.detach().clone().requires_grad_(True)
        ids = torch.tensor([sample.tokens[:-1]], device=feats.device)
        layers = sorted({l for l, _ in attention_heads})
        captured: dict[tuple[int, str], torch.Tensor] = {}
        handles = []
        for l in layers:
            attn = model.model.decoder.layers[l].encoder_attn
            for part in ("q_proj", "k_proj"):
                handles.append(getattr(attn, part).register_forward_hook(
                    lambda _m, _i, out, key=(l, part): captured.__setitem__(key, out.detach()[0])))
        inputs = {"decoder_input_ids": ids}
        if requires_grad:   # the token lookup too, so gradients reach the decoder's first self-attention
            inputs = {"decoder_inputs_embeds": model.model.decoder.embed_tokens(ids).detach().requires_grad_(True)}
        try:
            out = model(input_features=feats, use_cache=False, **inputs)
        finally:
            for h in handles:
                h.remove()
        logits = out.logits[0]
        targets = torch.tensor(sample.tokens[1:], device=logits.device)
        attn_map = None
        if attention_heads:
            maps = []
            for l, h in attention_heads:
                a = model.model.decoder.layers[l].encoder_attn
                hd = a.head_dim
                q = captured[(l, "q_proj")][:, h * hd:(h + 1) * hd].float()
                k = captured[(l, "k_proj")][:, h * hd:(h + 1) * hd].float()
                maps.append(torch.softmax((q @ k.T) * a.scaling, dim=-1))
            attn_map = torch.stack(maps).mean(0)
        return logits, targets, attn_map

    # ---------------------------------------------------------------- helpers for tests / pseudo-labels
    def logits(self, model, state: dict) -> torch.Tensor:
        """Logits of a state after the output block (tied projection)."""
        x = model.model.decoder.layer_norm(state["h"])
        return x @ model.model.decoder.embed_tokens.weight.T
