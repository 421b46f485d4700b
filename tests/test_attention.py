"""tarq.models.attention: the per-head attention every calibration adapter uses."""
import math

import pytest
import torch

from tarq.models.attention import attend_heads


def _softmax_attention(q, k, v, scale, causal):
    """The definition, in float64, one head at a time (the oracle)."""
    H, T, _ = q.shape
    group = H // k.shape[0]
    out = torch.empty(q.shape, dtype=torch.float64)
    for h in range(H):
        qh, kh, vh = q[h].double(), k[h // group].double(), v[h // group].double()
        scores = qh @ kh.T * scale
        if causal:
            scores = scores.masked_fill(torch.ones(T, kh.shape[0], dtype=torch.bool).triu(1), -math.inf)
        out[h] = torch.softmax(scores, dim=-1) @ vh
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_matches_the_softmax_definition(causal, kv_heads):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 37, 16, generator=g)
    k = torch.randn(kv_heads, 37, 16, generator=g)
    v = torch.randn(kv_heads, 37, 16, generator=g)
    got = attend_heads(q, k, v, scale=0.25, causal=causal, enable_gqa=kv_heads != 4)
    want = _softmax_attention(q, k, v, 0.25, causal)
    assert got.shape == q.shape
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_cross_attention_with_more_keys_than_queries():
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(2, 5, 8, generator=g), torch.randn(2, 50, 8, generator=g), torch.randn(2, 50, 8, generator=g)
    torch.testing.assert_close(attend_heads(q, k, v, scale=0.3).double(), _softmax_attention(q, k, v, 0.3, False),
                               rtol=1e-5, atol=1e-5)


def test_uses_the_fused_cpu_kernel():
    """3-D inputs sent PyTorch to the unfused math path (~5x slower at Whisper's 1,500 frames); the helper's whole
    point is to stay on the fused one."""
    from torch.profiler import ProfilerActivity, profile

    q = torch.randn(6, 64, 32)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        attend_heads(q, q, q, scale=0.1, causal=False)
    ops = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops, sorted(ops)
    assert "aten::_scaled_dot_product_attention_math" not in ops


def test_rejects_batched_inputs():
    x = torch.zeros(1, 2, 3, 4)
    with pytest.raises(ValueError, match=r"\[heads, T, head_dim\]"):
        attend_heads(x, x, x, scale=1.0)
