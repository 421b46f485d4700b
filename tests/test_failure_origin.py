"""tarq.eval.failure_origin on a tiny random Whisper: the divergence, its gap and the reference's own continuation,
each against an independent computation (the no-cache reference decoder, a plain forward, hand-made logits)."""
import math

import pytest
import torch

from tarq.eval.decode import greedy_decode_reference
from tarq.eval.failure_origin import (continue_greedy, failure_origin, first_divergence, forced_logits)
from test_eval_decode import EOT, _opts, _tiny_model


class _Tokenizer:
    """Token i is the word "tI"; ids at or above EOT are special and vanish when decoded."""

    def encode(self, text, add_special_tokens=False):
        return [int(w[1:]) for w in text.split()]

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"t{i}" for i in ids if i < EOT)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return _tiny_model()


def _features(seed):
    return torch.randn(8, 40, generator=torch.Generator().manual_seed(seed))


def _own_greedy(model, feats, opts):
    return greedy_decode_reference(model, feats[None], opts)[0]


def test_first_divergence_on_hand_made_logits():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.5, -1.0], [0.0, 0.0, 4.0]])
    assert first_divergence(logits, [1, 0, 2]).position is None
    d = first_divergence(logits, [1, 2, 2])
    assert (d.position, d.choice) == (1, 0) and d.gap == pytest.approx(4.0)
    masked = logits.clone()
    masked[0, 2] = -math.inf
    assert first_divergence(masked, [2, 0, 2]).gap == math.inf
    with pytest.raises(ValueError, match="2 logit rows for 3 tokens"):
        first_divergence(logits[:2], [1, 0, 2])


def test_own_greedy_transcript_has_no_divergence(model):
    """Forced through its own greedy tokens (and EOT), the model's masked argmax is that token at every step."""
    opts = _opts()
    for seed in range(4):
        feats = _features(seed)
        own = _own_greedy(model, feats, opts)
        tokens = own + ([EOT] if len(own) < opts.max_new_tokens else [])    # a capped transcript did not stop
        assert first_divergence(forced_logits(model, feats, opts, tokens), tokens).position is None


def test_forced_logits_equal_a_plain_forward_with_the_greedy_masks(model):
    opts = _opts()
    feats = _features(1)
    tokens = [10, 11, 12, EOT]
    got = forced_logits(model, feats, opts, tokens)
    for j in range(len(tokens)):
        ids = torch.tensor([list(opts.prompt_ids) + tokens[:j]])
        with torch.no_grad():
            raw = model(input_features=feats[None], decoder_input_ids=ids).logits[0, -1].clone()
        raw[EOT + 1:] = -math.inf
        raw[[3, 4, 5]] = -math.inf
        if j == 0:
            raw[[7, EOT]] = -math.inf
        finite = ~raw.isinf()
        assert torch.equal(got[j].isinf(), raw.isinf())
        assert torch.allclose(got[j][finite], raw[finite], atol=1e-5)


def test_continuation_equals_the_reference_decoder_with_the_prefix_as_prompt(model):
    opts = _opts()
    for seed in range(3):
        feats = _features(10 + seed)
        prefix = [20 + seed, 30]
        want = greedy_decode_reference(model, feats[None], _opts(prompt_ids=opts.prompt_ids + tuple(prefix),
                                                                 begin_suppress_tokens=(),
                                                                 max_new_tokens=opts.max_new_tokens - 2))[0]
        assert continue_greedy(model, feats, opts, prefix) == want


def test_origin_of_a_flipped_first_word(model):
    """A hypothesis that starts with another token than the model's own: divergence 0, the gap is the logit
    difference there, and the verdict follows the model's own continuation from that token."""
    opts = _opts()
    tok = _Tokenizer()
    feats = _features(2)
    own = _own_greedy(model, feats, opts)
    row0 = forced_logits(model, feats, opts, [own[0]])[0]
    other = int(torch.topk(row0, 2).indices[1])                  # the runner-up first token
    cont = continue_greedy(model, feats, opts, [other])
    branch = [other] + cont
    hyp = " ".join(f"t{i}" for i in [other] + cont[:1])           # the system's transcript leaves the branch later
    ref_text = " ".join(f"t{i}" for i in own)
    o = failure_origin(model, tok, feats, opts, "u", ref_text, hyp, "truncation")
    assert o.position == 0 and o.gap == pytest.approx(float(row0[own[0]] - row0[other]), abs=1e-5)
    from tarq.eval.damage import failure_kind
    from tarq.eval.metrics import words

    n_ref, n_branch = len(words(ref_text)), len(words(tok.decode(branch)))

    assert o.n_words == n_branch and o.reference_kind == failure_kind(n_ref, n_branch)
    assert o.inherited == (failure_kind(n_ref, n_branch) is not None)


def test_the_models_own_failure_is_inherited_and_a_stop_is_the_systems(model):
    opts = _opts()
    tok = _Tokenizer()
    feats = _features(8)                                           # a transcript that stops before the cap
    own = _own_greedy(model, feats, opts)
    assert 1 < len(own) < opts.max_new_tokens
    long_ref = " ".join(["word"] * (4 * len(own) + 8))             # the model's own transcript is a truncation here
    o = failure_origin(model, tok, feats, opts, "u", long_ref, " ".join(f"t{i}" for i in own), "truncation")
    assert o.position is None and o.reference_kind == "truncation" and o.inherited
    # the system stopped after the first token where the model goes on: the branch is the stop, and the gap is
    # how far the model's EOT was below its own choice there
    o = failure_origin(model, tok, feats, opts, "u", long_ref, f"t{own[0]}", "truncation")
    row1 = forced_logits(model, feats, opts, [own[0], EOT])[1]
    assert o.position == 1 and o.stopped and o.reference_kind == "truncation" and o.inherited
    assert o.gap == pytest.approx(float(row1[own[1]] - row1[EOT]), abs=1e-5) and o.gap > 0
    assert o.to_dict()["stopped"] is True and not _origin_of_own(model, tok, feats, opts, own).stopped


def _origin_of_own(model, tok, feats, opts, own):
    return failure_origin(model, tok, feats, opts, "u", "w", " ".join(f"t{i}" for i in own), "loop")


def test_a_loop_is_not_forced_to_stop(model):
    """A transcript the token cap cut (the model's own loop) is judged without an EOT after it: the model
    reproduces it, so the loop is inherited."""
    opts = _opts()
    loops = [(s, own) for s in range(8) if len(own := _own_greedy(model, _features(s), opts)) == opts.max_new_tokens]
    assert loops, "test needs a seed whose greedy transcript runs to the token cap"
    seed, own = loops[0]
    o = failure_origin(model, _Tokenizer(), _features(seed), opts, "u", "t1 t2", " ".join(f"t{i}" for i in own),
                       "loop")
    assert o.position is None and o.reference_kind == "loop" and o.inherited


def test_a_suppressed_token_gives_a_masked_gap(model):
    opts = _opts()
    o = failure_origin(model, _Tokenizer(), _features(4), opts, "u", "t1 t2 t3 t4", "t3", "truncation")
    assert o.position == 0 and o.masked and o.to_dict()["gap"] is None and o.to_dict()["masked"] is True
