"""LinearAttention vs its quadratic form, written here independently from the paper's equations."""

import pytest
import torch
import torch.nn.functional as F

from explorer import record
from explorer.layers import LinearAttention

EMBED, HEADS = 12, 3


def quadratic_reference(layer, query, key, value, phi, is_causal, eps=1e-6):
    """Katharopoulos et al. eq. 4 with the n x n matrix materialised: returns (output, pattern)."""
    batch, n_query, _ = query.shape
    n_key = key.shape[1]

    def heads(t, n):  # (batch, length, embed) -> (batch, head, length, head_dim)
        return t.reshape(batch, n, HEADS, EMBED // HEADS).permute(0, 2, 1, 3)

    q = heads(F.linear(query, layer.q_proj.weight, layer.q_proj.bias), n_query)
    k = heads(F.linear(key, layer.k_proj.weight, layer.k_proj.bias), n_key)
    v = heads(F.linear(value, layer.v_proj.weight, layer.v_proj.bias), n_key)
    similarity = torch.einsum("bhqd,bhkd->bhqk", phi(q), phi(k))  # (batch, head, query, key)
    if is_causal:
        future = torch.arange(n_key)[None, :] > torch.arange(n_query)[:, None]
        similarity = similarity.masked_fill(future, 0.0)
    pattern = similarity / (similarity.sum(-1, keepdim=True) + eps)
    z = pattern @ v  # (batch, head, query, head_dim)
    out = F.linear(z.permute(0, 2, 1, 3).reshape(batch, n_query, EMBED), layer.out_proj.weight, layer.out_proj.bias)
    return out, pattern


def elu_plus_one(x):
    return F.elu(x) + 1


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("feature_map, phi", [("elu+1", elu_plus_one), ("relu", F.relu)])
def test_matches_quadratic_form(is_causal, feature_map, phi):
    layer = LinearAttention(EMBED, HEADS, feature_map=feature_map, causal=is_causal)
    x = torch.randn(2, 9, EMBED)
    expected_out, expected_pattern = quadratic_reference(layer, x, x, x, phi, is_causal)
    with record(layer) as trace:
        out = layer(x)
    torch.testing.assert_close(out, expected_out, atol=1e-5, rtol=1e-5)  # fp32
    torch.testing.assert_close(trace["hook_pattern"], expected_pattern, atol=1e-5, rtol=1e-5)  # fp32
    torch.testing.assert_close(out, layer(x), atol=0.0, rtol=0.0)  # recording changes nothing


def test_cross_attention_matches_quadratic_form():
    layer = LinearAttention(EMBED, HEADS)
    query, key, value = torch.randn(2, 4, EMBED), torch.randn(2, 10, EMBED), torch.randn(2, 10, EMBED)
    expected_out, _ = quadratic_reference(layer, query, key, value, elu_plus_one, False)
    torch.testing.assert_close(layer(query, key, value), expected_out, atol=1e-5, rtol=1e-5)  # fp32


def test_pattern_rows_sum_to_one_and_causal_pattern_is_lower_triangular():
    layer = LinearAttention(EMBED, HEADS, causal=True)
    with record(layer, "hook_pattern") as trace:
        layer(torch.randn(2, 6, EMBED))
    pattern = trace["hook_pattern"]  # (batch, head, query, key)
    assert trace.dims("hook_pattern") == ("batch", "head", "query", "key")
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, HEADS, 6), atol=1e-5, rtol=0)  # fp32, eps=1e-6
    assert torch.equal(pattern.triu(diagonal=1), torch.zeros_like(pattern))


def test_causal_output_ignores_future_positions():
    layer = LinearAttention(EMBED, HEADS, causal=True)
    x = torch.randn(1, 8, EMBED)
    changed = x.clone()
    changed[:, 5:] = torch.randn(1, 3, EMBED)
    torch.testing.assert_close(layer(changed)[:, :5], layer(x)[:, :5], atol=1e-6, rtol=1e-5)  # fp32


def test_pattern_only_computed_while_recorded(monkeypatch):
    calls = []
    real = LinearAttention._pattern
    monkeypatch.setattr(LinearAttention, "_pattern", lambda self, *a: calls.append(1) or real(self, *a))
    layer = LinearAttention(EMBED, HEADS)
    x = torch.randn(1, 5, EMBED)
    layer(x)
    with record(layer, "hook_z"):
        layer(x)
    assert calls == []
    with record(layer, "hook_pattern"):
        layer(x)
    assert calls == [1]


def test_custom_feature_map():
    def softplus(t):
        return F.softplus(t)

    layer = LinearAttention(EMBED, HEADS, feature_map=softplus)
    x = torch.randn(2, 5, EMBED)
    expected_out, _ = quadratic_reference(layer, x, x, x, softplus, False)
    torch.testing.assert_close(layer(x), expected_out, atol=1e-5, rtol=1e-5)  # fp32


@pytest.mark.parametrize("make, error, match", [
    (lambda: LinearAttention(10, 3), ValueError, r"embed_dim \(10\) must be divisible by num_heads \(3\)"),
    (lambda: LinearAttention(12, 3, feature_map="softmax"), ValueError, "feature_map must be one of"),
    (lambda: LinearAttention(12, 3, feature_map=2), TypeError, "feature_map"),
    (lambda: LinearAttention(12, 3, causal="yes"), TypeError, "causal"),
    (lambda: LinearAttention(12, 0), ValueError, "num_heads"),
    (lambda: LinearAttention(12, 3, eps=-1.0), ValueError, "eps"),
    (lambda: LinearAttention(12, 3, eps="small"), TypeError, "eps"),
])
def test_constructor_checks(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_forward_checks():
    layer = LinearAttention(EMBED, HEADS, causal=True)
    with pytest.raises(ValueError, match="causal linear attention needs as many keys as queries"):
        layer(torch.randn(1, 3, EMBED), torch.randn(1, 4, EMBED))
    with pytest.raises(ValueError, match=r"query must have shape \(batch, query, embed\)"):
        layer(torch.randn(1, 3, EMBED + 1))
    with pytest.raises(TypeError, match="query must be a floating-point tensor"):
        layer(torch.zeros(1, 3, EMBED, dtype=torch.long))
