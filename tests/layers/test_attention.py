"""MultiheadAttention: parity with torch.nn.MultiheadAttention, math vs sdpa backends, masks, padding, ALiBi."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer import HookPoint, record
from explorer.layers import MultiheadAttention, alibi_bias, alibi_slopes
from explorer.masks import block_sparse, causal, dilated_window, from_callable, full, sliding_window

EMBED, HEADS = 16, 4


def torch_pair(embed_dim=EMBED, num_heads=HEADS, **kwargs):
    """A torch layer in eval mode and our copy of it."""
    backend = kwargs.pop("backend", "auto")
    mha = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True, **kwargs).eval()
    return mha, MultiheadAttention.from_torch(mha, backend=backend)


def padding_mask(batch, n_key):
    """BoolTensor [batch, key], True = padding: element b has its last b keys padded."""
    positions = torch.arange(n_key)[None, :]
    return positions >= n_key - torch.arange(batch)[:, None]


# --- parity with torch.nn.MultiheadAttention ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["math", "sdpa", "auto"])
@pytest.mark.parametrize("use_padding", [False, True])
@pytest.mark.parametrize("use_causal", [False, True])
def test_self_attention_matches_torch(backend, use_padding, use_causal):
    mha, ours = torch_pair(backend=backend)
    x = torch.randn(3, 6, EMBED)
    kpm = padding_mask(3, 6) if use_padding else None
    attn_mask = ~causal().dense(6, 6) if use_causal else None  # torch: True = not allowed
    expected, weights = mha(x, x, x, key_padding_mask=kpm, attn_mask=attn_mask, need_weights=True,
                            average_attn_weights=False)
    out = ours(x, mask=causal() if use_causal else None, key_padding_mask=kpm)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)  # fp32
    if backend != "sdpa":
        with record(ours, "hook_pattern") as trace:
            ours(x, mask=causal() if use_causal else None, key_padding_mask=kpm)
        torch.testing.assert_close(trace["hook_pattern"], weights, atol=1e-5, rtol=1e-5)  # fp32


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_cross_attention_matches_torch(backend):
    mha, ours = torch_pair(kdim=10, vdim=12, backend=backend)
    query, key, value = torch.randn(2, 5, EMBED), torch.randn(2, 7, 10), torch.randn(2, 7, 12)
    kpm = padding_mask(2, 7)
    expected, weights = mha(query, key, value, key_padding_mask=kpm, need_weights=True,
                            average_attn_weights=False)
    out = ours(query, key, value, key_padding_mask=kpm)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)  # fp32
    ours.backend = "math"
    with record(ours) as trace:
        ours(query, key, value, key_padding_mask=kpm)
    torch.testing.assert_close(trace["hook_pattern"], weights, atol=1e-5, rtol=1e-5)  # fp32
    assert trace["hook_k"].shape == (2, HEADS, 7, EMBED // HEADS)


def test_cross_attention_value_defaults_to_key():
    mha, ours = torch_pair()
    query, memory = torch.randn(2, 3, EMBED), torch.randn(2, 8, EMBED)
    expected, _ = mha(query, memory, memory)
    torch.testing.assert_close(ours(query, memory), expected, atol=1e-5, rtol=1e-5)  # fp32


def test_no_bias_matches_torch():
    mha, ours = torch_pair(bias=False)
    assert ours.q_proj.bias is None and ours.out_proj.bias is None
    x = torch.randn(2, 5, EMBED)
    expected, _ = mha(x, x, x)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)  # fp32


def test_float64_matches_torch():
    mha = nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64).eval()
    ours = MultiheadAttention.from_torch(mha)
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    expected, _ = mha(x, x, x, attn_mask=~causal().dense(4, 4))
    torch.testing.assert_close(ours(x, mask=causal()), expected, atol=1e-12, rtol=1e-12)  # fp64


def test_score_bias_matches_torch_float_attn_mask():
    mha, ours = torch_pair()
    x = torch.randn(2, 6, EMBED)
    bias = alibi_bias(HEADS, 6, 6, causal=True)  # (head, query, key)
    allowed = causal().dense(6, 6)
    torch_mask = bias.masked_fill(~allowed, float("-inf")).repeat(2, 1, 1)  # (batch * head, query, key)
    expected, _ = mha(x, x, x, attn_mask=torch_mask)
    for backend in ("math", "sdpa"):
        ours.backend = backend
        out = ours(x, mask=causal(), score_bias=bias)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)  # fp32


def test_layer_mask_is_default_and_call_mask_overrides_it():
    mha, ours = torch_pair()
    ours.mask = causal()
    x = torch.randn(2, 5, EMBED)
    expected_causal, _ = mha(x, x, x, attn_mask=~causal().dense(5, 5))
    expected_full, _ = mha(x, x, x)
    torch.testing.assert_close(ours(x), expected_causal, atol=1e-5, rtol=1e-5)  # fp32
    torch.testing.assert_close(ours(x, mask=full()), expected_full, atol=1e-5, rtol=1e-5)  # fp32


def test_bool_tensor_mask_means_may_attend():
    mha, ours = torch_pair()
    x = torch.randn(2, 5, EMBED)
    allowed = torch.rand(2, 1, 5, 5) > 0.4
    allowed |= torch.eye(5, dtype=torch.bool)  # every query keeps one key
    torch_mask = (~allowed).expand(2, HEADS, 5, 5).reshape(2 * HEADS, 5, 5)
    expected, _ = mha(x, x, x, attn_mask=torch_mask)
    for backend in ("math", "sdpa"):
        ours.backend = backend
        torch.testing.assert_close(ours(x, mask=allowed), expected, atol=1e-5, rtol=1e-5)  # fp32


# --- math vs sdpa ------------------------------------------------------------------------------------------

MASKS = [
    None,
    full(),
    causal(),
    sliding_window(3),
    sliding_window(4, causal=True),
    dilated_window(3, 2),
    dilated_window(2, 3, causal=True),
    block_sparse(2, (0,)),
    causal() & block_sparse(3, ()),
    sliding_window(2) | block_sparse(4, (5,)),
    from_callable(lambda q, k: (q - k) % 3 != 1),
]


@pytest.mark.parametrize("mask", MASKS, ids=repr)
@pytest.mark.parametrize("use_padding", [False, True])
@pytest.mark.parametrize("use_bias", [False, True])
def test_math_and_sdpa_agree(mask, use_padding, use_bias):
    layer = MultiheadAttention(EMBED, HEADS, backend="math")
    x = torch.randn(3, 7, EMBED)
    kwargs = {
        "mask": mask,
        "key_padding_mask": padding_mask(3, 7) if use_padding else None,
        "score_bias": alibi_bias(HEADS, 7, 7) if use_bias else None,
    }
    math_out = layer(x, **kwargs)
    layer.backend = "sdpa"
    sdpa_out = layer(x, **kwargs)
    assert not math_out.isnan().any()
    torch.testing.assert_close(sdpa_out, math_out, atol=1e-5, rtol=1e-5)  # fp32


def test_math_and_sdpa_gradients_agree():
    layer = MultiheadAttention(EMBED, HEADS)
    x = torch.randn(2, 6, EMBED)
    kwargs = {"mask": sliding_window(3), "key_padding_mask": padding_mask(2, 6),
              "score_bias": alibi_bias(HEADS, 6, 6)}
    grads = {}
    for backend in ("math", "sdpa"):
        layer.backend = backend
        layer.zero_grad()
        x_grad = x.clone().requires_grad_(True)
        layer(x_grad, **kwargs).square().sum().backward()
        grads[backend] = (x_grad.grad, layer.q_proj.weight.grad.clone())
    for math_grad, sdpa_grad in zip(grads["math"], grads["sdpa"]):
        torch.testing.assert_close(sdpa_grad, math_grad, atol=1e-5, rtol=1e-5)  # fp32


# --- fully masked rows -------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["mask", "padding", "bias"])
def test_fully_masked_rows_give_zero_pattern_and_zero_z(how):
    layer = MultiheadAttention(EMBED, HEADS, backend="math")
    x = torch.randn(2, 5, EMBED)
    kwargs = {}
    if how == "mask":  # query 2 may attend to nothing, in every batch element
        kwargs["mask"] = from_callable(lambda q, k: (q != 2) & (k <= q))
        empty = torch.zeros(2, 5, dtype=torch.bool)
        empty[:, 2] = True
    elif how == "padding":  # batch element 1 is all padding
        kwargs["key_padding_mask"] = torch.tensor([[False] * 5, [True] * 5])
        empty = torch.tensor([[False] * 5, [True] * 5])
    else:  # a -inf bias removes every key of query 4
        bias = torch.zeros(5, 5)
        bias[4] = float("-inf")
        kwargs["score_bias"] = bias
        empty = torch.zeros(2, 5, dtype=torch.bool)
        empty[:, 4] = True

    with record(layer) as trace:
        math_out = layer(x, **kwargs)
    layer.backend = "sdpa"
    with record(layer, "hook_z") as sdpa_trace:
        sdpa_out = layer(x, **kwargs)

    pattern, z = trace["hook_pattern"], trace["hook_z"]  # (batch, head, query, key), (batch, head, query, head_dim)
    rows = empty[:, None, :].expand(2, HEADS, 5)  # (batch, head, query)
    assert not math_out.isnan().any() and not sdpa_out.isnan().any()
    assert torch.equal(pattern[rows], torch.zeros_like(pattern[rows]))  # exact zeros
    assert torch.equal(z[rows], torch.zeros_like(z[rows]))
    assert torch.equal(sdpa_trace["hook_z"][rows], torch.zeros_like(z[rows]))
    torch.testing.assert_close(pattern[~rows].sum(-1), torch.ones((~rows).sum().item()), atol=1e-6, rtol=0)  # fp32
    expected_empty = layer.out_proj.bias.expand(int(empty.sum()), EMBED)
    torch.testing.assert_close(math_out[empty], expected_empty, atol=1e-6, rtol=0)  # fp32: out_proj(0) = bias
    torch.testing.assert_close(sdpa_out, math_out, atol=1e-5, rtol=1e-5)  # fp32


def test_fully_masked_rows_have_finite_gradients():
    layer = MultiheadAttention(EMBED, HEADS)
    mask = from_callable(lambda q, k: (q != 0) & (k <= q))
    for backend in ("math", "sdpa"):
        layer.backend = backend
        layer.zero_grad()
        x = torch.randn(2, 4, EMBED, requires_grad=True)
        layer(x, mask=mask).sum().backward()
        assert torch.isfinite(x.grad).all()
        assert torch.isfinite(layer.q_proj.weight.grad).all()


# --- backend choice ----------------------------------------------------------------------------------------

def test_auto_uses_sdpa_when_nothing_records(sdpa_calls):
    layer = MultiheadAttention(EMBED, HEADS)
    layer(torch.randn(1, 4, EMBED))
    assert len(sdpa_calls) == 1


@pytest.mark.parametrize("names", ["hook_pattern", "hook_scores", None])
def test_auto_uses_math_when_scores_or_pattern_recorded(sdpa_calls, names):
    layer = MultiheadAttention(EMBED, HEADS)
    x = torch.randn(2, 4, EMBED)
    reference = layer(x)
    sdpa_calls.clear()
    with record(layer, names) as trace:
        out = layer(x)
    assert sdpa_calls == []
    assert (names or "hook_pattern") in trace
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)  # fp32, math vs sdpa


def test_auto_keeps_sdpa_when_other_hooks_recorded(sdpa_calls):
    layer = MultiheadAttention(EMBED, HEADS)
    with record(layer, ["hook_q", "hook_z", "hook_out"]) as trace:
        layer(torch.randn(2, 4, EMBED))
    assert len(sdpa_calls) == 1
    assert sorted(trace.keys()) == ["hook_out", "hook_q", "hook_z"]


def test_math_backend_never_calls_sdpa(sdpa_calls):
    layer = MultiheadAttention(EMBED, HEADS, backend="math")
    layer(torch.randn(2, 4, EMBED), mask=causal())
    assert sdpa_calls == []


def test_sdpa_uses_is_causal_for_a_plain_causal_mask(sdpa_calls):
    layer = MultiheadAttention(EMBED, HEADS, mask=causal(), backend="sdpa")
    x = torch.randn(2, 6, EMBED)
    out = layer(x)
    assert sdpa_calls[0].get("is_causal") is True and sdpa_calls[0].get("attn_mask") is None
    layer.backend = "math"
    torch.testing.assert_close(out, layer(x), atol=1e-5, rtol=1e-5)  # fp32


@pytest.mark.parametrize("names", ["hook_pattern", "hook_scores", "*"])
def test_sdpa_backend_refuses_to_record_patterns(names):
    layer = MultiheadAttention(EMBED, HEADS, backend="sdpa")
    model = nn.Sequential(layer)
    with pytest.raises(RuntimeError, match="backend='sdpa'.*hook_scores or hook_pattern"):
        with record(model, "*" if names == "*" else f"0.{names}"):
            model(torch.randn(1, 3, EMBED))
    assert all(not hp._hooks for hp in model.modules() if isinstance(hp, HookPoint))


# --- recorded values ---------------------------------------------------------------------------------------

def test_recorded_scores_are_scaled_biased_masked_logits():
    layer = MultiheadAttention(EMBED, HEADS, backend="math")
    x = torch.randn(2, 5, EMBED)
    bias = alibi_bias(HEADS, 5, 5)
    kpm = padding_mask(2, 5)
    with record(layer) as trace:
        layer(x, mask=sliding_window(3), score_bias=bias, key_padding_mask=kpm)
    q, k = trace["hook_q"], trace["hook_k"]  # (batch, head, query/key, head_dim)
    expected = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(EMBED // HEADS) + bias
    allowed = sliding_window(3).dense(5, 5) & ~kpm[:, None, None, :]
    expected = expected.masked_fill(~allowed, float("-inf"))
    torch.testing.assert_close(trace["hook_scores"], expected, atol=1e-5, rtol=1e-5)  # fp32, -inf compared exactly
    torch.testing.assert_close(trace["hook_pattern"], torch.softmax(expected, -1), atol=1e-6, rtol=1e-5)  # fp32
    z = trace["hook_pattern"] @ trace["hook_v"]
    torch.testing.assert_close(trace["hook_z"], z, atol=1e-6, rtol=1e-5)  # fp32


def test_recorded_projections_match_linear_layers():
    layer = MultiheadAttention(EMBED, HEADS, kdim=6, vdim=5)
    query, key, value = torch.randn(2, 3, EMBED), torch.randn(2, 4, 6), torch.randn(2, 4, 5)
    with record(layer, ["hook_q", "hook_k", "hook_v", "hook_out"]) as trace:
        out = layer(query, key, value)

    def heads(t):  # (batch, length, embed) -> (batch, head, length, head_dim)
        return t.view(t.shape[0], t.shape[1], HEADS, -1).permute(0, 2, 1, 3)

    expected_q = heads(F.linear(query, layer.q_proj.weight, layer.q_proj.bias))
    expected_k = heads(F.linear(key, layer.k_proj.weight, layer.k_proj.bias))
    expected_v = heads(F.linear(value, layer.v_proj.weight, layer.v_proj.bias))
    torch.testing.assert_close(trace["hook_q"], expected_q, atol=1e-6, rtol=1e-5)  # fp32
    torch.testing.assert_close(trace["hook_k"], expected_k, atol=1e-6, rtol=1e-5)  # fp32
    torch.testing.assert_close(trace["hook_v"], expected_v, atol=1e-6, rtol=1e-5)  # fp32
    torch.testing.assert_close(trace["hook_out"], out, atol=0.0, rtol=0.0)  # identity
    assert trace.dims("hook_v") == ("batch", "head", "key", "head_dim")


# --- ALiBi -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_heads, expected", [
    (1, [2 ** -8]),
    (8, [2 ** -i for i in range(1, 9)]),  # the paper's example: 1/2, 1/4, ..., 1/256
    (16, [2 ** (-i / 2) for i in range(1, 17)]),
    (6, [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3]),  # 4 heads' slopes, then odd ones of 8 heads
    (12, [2 ** -i for i in range(1, 9)] + [2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5]),
])
def test_alibi_slopes(num_heads, expected):
    torch.testing.assert_close(alibi_slopes(num_heads), torch.tensor(expected, dtype=torch.float64),
                               atol=1e-15, rtol=0)  # fp64, exact powers of two


@pytest.mark.parametrize("is_causal", [False, True])
def test_alibi_bias_matches_loop(is_causal):
    num_heads, n_query, n_key = 4, 5, 7
    slopes = alibi_slopes(num_heads).tolist()
    bias = alibi_bias(num_heads, n_query, n_key, causal=is_causal)
    assert bias.shape == (num_heads, n_query, n_key) and bias.dtype == torch.float32
    expected = torch.zeros(num_heads, n_query, n_key)
    for h in range(num_heads):
        for i in range(n_query):
            for j in range(n_key):
                if not is_causal:
                    expected[h, i, j] = -slopes[h] * abs(i - j)
                elif j <= i:
                    expected[h, i, j] = -slopes[h] * (i - j)
    torch.testing.assert_close(bias, expected, atol=1e-7, rtol=0)  # fp32


# --- argument checks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    ({"embed_dim": 10, "num_heads": 4}, ValueError, r"embed_dim \(10\) must be divisible by num_heads \(4\)"),
    ({"embed_dim": 0, "num_heads": 1}, ValueError, "embed_dim must be an int >= 1"),
    ({"embed_dim": 8, "num_heads": 0}, ValueError, "num_heads must be an int >= 1"),
    ({"embed_dim": 8.0, "num_heads": 2}, TypeError, "embed_dim"),
    ({"embed_dim": 8, "num_heads": 2, "backend": "flash"}, ValueError,
     r"backend must be one of \('auto', 'math', 'sdpa', 'triton'\)"),
    ({"embed_dim": 8, "num_heads": 2, "kdim": 0}, ValueError, "kdim"),
    ({"embed_dim": 8, "num_heads": 2, "mask": "causal"}, TypeError, "mask"),
])
def test_constructor_checks(kwargs, error, match):
    with pytest.raises(error, match=match):
        MultiheadAttention(**kwargs)


@pytest.mark.parametrize("call, error, match", [
    (lambda m: m(torch.randn(2, 3, 8)), ValueError, r"query must have shape \(batch, query, embed\) = \(\*, \*, 16\)"),
    (lambda m: m(torch.randn(3, EMBED)), ValueError, "query must have shape"),
    (lambda m: m(torch.randn(2, 3, EMBED), torch.randn(1, 4, EMBED)), ValueError,
     r"key must have shape \(batch, key, kdim\) = \(2, \*, 16\)"),
    (lambda m: m(torch.randn(2, 3, EMBED), torch.randn(2, 4, EMBED), torch.randn(2, 5, EMBED)), ValueError,
     r"value must have shape \(batch, key, vdim\) = \(2, 4, 16\)"),
    (lambda m: m(torch.randn(2, 3, EMBED), key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)), ValueError,
     r"key_padding_mask must have shape \(batch, key\) = \(2, 3\)"),
    (lambda m: m(torch.randn(2, 3, EMBED), key_padding_mask=torch.zeros(2, 3)), TypeError, "key_padding_mask"),
    (lambda m: m(torch.randn(2, 3, EMBED), score_bias=torch.zeros(5, 3, 3)), ValueError,
     r"score_bias must broadcast to \(batch, head, query, key\) = \(2, 4, 3, 3\)"),
    (lambda m: m(torch.randn(2, 3, EMBED), score_bias=torch.zeros(3, 3, dtype=torch.long)), TypeError, "score_bias"),
    (lambda m: m(torch.randn(2, 3, EMBED), mask=torch.ones(4, 4, dtype=torch.bool)), ValueError, "mask must broadcast"),
    (lambda m: m(torch.randn(2, 3, EMBED), mask=torch.ones(3, 3)), TypeError, "mask must be a Mask or a BoolTensor"),
    (lambda m: m(torch.zeros(2, 3, EMBED, dtype=torch.long)), TypeError, "query must be a floating-point tensor"),
    (lambda m: m(torch.zeros(2, 3, EMBED, dtype=torch.float64)), TypeError, "query has dtype torch.float64"),
])
def test_forward_checks(call, error, match):
    with pytest.raises(error, match=match):
        call(MultiheadAttention(EMBED, HEADS))


def test_backend_is_checked_when_reassigned():
    layer = MultiheadAttention(EMBED, HEADS)
    layer.backend = "math"
    assert layer.backend == "math"
    with pytest.raises(ValueError, match="backend must be one of"):
        layer.backend = "flash"


def test_from_torch_rejects_bias_kv():
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiheadAttention.from_torch(nn.MultiheadAttention(8, 2, add_bias_kv=True))
    with pytest.raises(TypeError, match="mha"):
        MultiheadAttention.from_torch(nn.Linear(2, 2))
