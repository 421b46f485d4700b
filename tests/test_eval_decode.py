"""The KV-cached batched greedy decoder against the slow no-cache reference, on a tiny random Whisper."""
import numpy as np
import pytest
import torch

from tarq.eval.decode import DecodeOptions, _mask_logits, greedy_decode, greedy_decode_reference

EOT, SOT, NOTS = 45, 60, 62   # a random model (seed 0) that ends transcripts at varied steps with this eot


def _tiny_model(seed=0, max_source_positions=20, n_mels=8):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=n_mels,
                        max_source_positions=max_source_positions, max_target_positions=40, pad_token_id=50,
                        bos_token_id=50, eos_token_id=50, decoder_start_token_id=SOT, init_std=0.5)
    return WhisperForConditionalGeneration(cfg).eval()


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return _tiny_model()


def _opts(**kw):
    base = dict(prompt_ids=(SOT, NOTS), eot_id=EOT, suppress_tokens=(3, 4, 5), begin_suppress_tokens=(7, EOT),
                max_new_tokens=30)
    base.update(kw)
    return DecodeOptions(**base)


def test_cached_batched_decoder_matches_reference(model):
    x = torch.randn(12, 8, 40, generator=torch.Generator().manual_seed(3))
    fast = greedy_decode(model, x, _opts())
    slow = greedy_decode_reference(model, x, _opts())
    assert fast == slow
    lengths = {len(s) for s in fast}
    assert len(lengths) > 1, f"test needs transcripts of different lengths to exercise row dropping: {lengths}"


def test_token_rules(model):
    x = torch.randn(12, 8, 40, generator=torch.Generator().manual_seed(4))
    for seq in greedy_decode(model, x, _opts()):
        assert all(t < EOT for t in seq)                       # no special tokens, eot stripped
        assert not {3, 4, 5} & set(seq)                        # suppress_tokens
        assert seq and seq[0] != 7                              # begin_suppress: no blank, no empty transcript
    logits = torch.zeros(2, 64)
    first = _mask_logits(logits, _opts(), first_step=True)
    later = _mask_logits(logits, _opts(), first_step=False)
    assert torch.isinf(first[:, [3, 4, 5, 7, EOT] + list(range(EOT + 1, 64))]).all()
    assert not torch.isinf(later[:, EOT]).any() and not torch.isinf(later[:, 7]).any()


def test_max_new_tokens_caps_length(model):
    x = torch.randn(4, 8, 40, generator=torch.Generator().manual_seed(5))
    assert all(len(s) <= 3 for s in greedy_decode(model, x, _opts(max_new_tokens=3)))


class _StubTokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return " " + " ".join(f"t{i}" for i in ids)

    def convert_tokens_to_ids(self, tok):
        return 7


class _StubLoaded:
    """Just what TorchBackend uses from tarq.models.LoadedModel."""

    def __init__(self):
        from transformers import WhisperFeatureExtractor

        self.model = _tiny_model(max_source_positions=1500, n_mels=8)
        self.model.generation_config.suppress_tokens = [3, 4, 5]
        self.model.generation_config.begin_suppress_tokens = [7, EOT]
        self.tokenizer = _StubTokenizer()
        self.feature_extractor = WhisperFeatureExtractor(feature_size=8)
        self.eot_id = EOT
        self.name = "stub"

    def decoder_prompt_ids(self):
        return [SOT, NOTS]


def test_torch_backend_batches_in_length_order_and_restores_input_order():
    from tarq.eval import get_backend

    torch.set_num_threads(1)
    loaded = _StubLoaded()
    rng = np.random.default_rng(0)
    audios = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 24000, 4000, 16000, 12000)]
    batched = get_backend("torch", loaded, batch_size=2, threads=1, max_new_tokens=20).transcribe(audios)
    single = [get_backend("torch", loaded, batch_size=1, threads=1, max_new_tokens=20).transcribe([a])[0]
              for a in audios]
    assert batched == single
    assert all(t == t.strip() for t in batched)


def test_unknown_backend_is_a_clear_error():
    from tarq.eval import get_backend

    with pytest.raises(ValueError, match="unknown backend 'onnx'"):
        get_backend("onnx", "tiny.en")
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        get_backend("whisper.cpp", "/nonexistent/nope.bin")


def test_torch_backend_decodes_clips_over_30_s_in_pieces():
    from tarq.eval import get_backend
    from tarq.eval.segment import split_long

    torch.set_num_threads(1)
    backend = get_backend("torch", _StubLoaded(), batch_size=4, threads=1, max_new_tokens=10)
    long = np.random.default_rng(1).standard_normal(35 * 16000).astype(np.float32) * 0.1
    pieces = split_long(long)
    assert len(pieces) == 2
    expected = " ".join(backend.transcribe([p])[0] for p in pieces)
    short = np.zeros(16000, dtype=np.float32)
    assert backend.transcribe([short, long]) == [backend.transcribe([short])[0], expected]


def test_silence_rule_matches_reference_and_thresholds(model):
    x = torch.randn(12, 8, 40, generator=torch.Generator().manual_seed(3))
    plain = greedy_decode(model, x, _opts())
    # prob(no-speech) > 0 always holds; every avg logprob is < 0 and > -100
    assert all(s == [] for s in greedy_decode(model, x, _opts(no_speech_id=10, no_speech_threshold=0.0,
                                                              logprob_threshold=0.0)))
    assert greedy_decode(model, x, _opts(no_speech_id=10, no_speech_threshold=0.0,
                                         logprob_threshold=-100.0)) == plain
    assert greedy_decode(model, x, _opts(no_speech_id=10, no_speech_threshold=1.0, logprob_threshold=0.0)) == plain
    mid = _opts(no_speech_id=10, no_speech_threshold=0.0, logprob_threshold=-1.0)
    assert greedy_decode(model, x, mid) == greedy_decode_reference(model, x, mid)
