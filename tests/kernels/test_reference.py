"""The pure-PyTorch reference against independent computations: torch's SDPA, torch.logsumexp, explicit loops for
the statistics, autograd through plain torch math; the chunked path against the reference; argument checks."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explorer.kernels import (
    AttentionResult,
    attention_reference,
    attention_stats_chunked,
    distance_buckets,
    fused_attention,
)
from explorer.masks import causal as causal_mask
from explorer.masks import sliding_window

# (causal, window, padded) -- every mask family the kernels support
MASKS = [
    (False, None, False),
    (True, None, False),
    (True, 4, False),
    (False, 5, False),
    (False, 4, True),  # even centred window + padding
    (False, None, True),
    (True, None, True),
]


def allowed_matrix(n_q, n_k, causal, window, pad):
    """BoolTensor [B, 1, Nq, Nk] built from explorer.masks' dense rendering and the padding."""
    if window is not None:
        dense = sliding_window(window, causal=causal).dense(n_q, n_k)
    elif causal:
        dense = causal_mask().dense(n_q, n_k)
    else:
        dense = torch.ones(n_q, n_k, dtype=torch.bool)
    allowed = dense[None, None]
    if pad is not None:
        allowed = allowed & ~pad[:, None, None, :]
    return allowed


def padding(batch, n_k):
    """Sample 0 pads its last third, sample 1 its first two keys (so early causal rows see nothing), sample 2 all."""
    pad = torch.zeros(batch, n_k, dtype=torch.bool)
    pad[0, n_k - n_k // 3 :] = True
    if batch > 1:
        pad[1, :2] = True
    if batch > 2:
        pad[2] = True
    return pad


def inputs(b, h, n_q, n_k, d, dtype=torch.float64):
    return [torch.randn(b, h, n, d, dtype=dtype) for n in (n_q, n_k, n_k)]


@pytest.mark.parametrize("causal,window,padded", MASKS)
def test_output_and_lse_match_sdpa_and_logsumexp(causal, window, padded):
    b, h, n, d = 3, 2, 13, 8
    q, k, v = inputs(b, h, n, n, d)
    pad = padding(b, n) if padded else None
    res = attention_reference(q, k, v, causal=causal, window=window, key_padding_mask=pad)
    allowed = allowed_matrix(n, n, causal, window, pad).expand(b, h, n, n)
    rows = allowed.any(-1)  # rows with at least one key; SDPA gives NaN on the others
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    assert res.out.dtype == q.dtype and res.lse.dtype == torch.float32
    torch.testing.assert_close(res.out[rows], expected[rows], atol=1e-12, rtol=1e-10)  # float64 throughout
    assert (res.out[~rows] == 0).all()
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    lse = torch.logsumexp(scores.masked_fill(~allowed, -math.inf), dim=-1)  # -inf on fully masked rows
    # lse is returned in fp32: rounding 6e-8 relative
    torch.testing.assert_close(res.lse, lse.float(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("causal,window,padded", MASKS)
def test_statistics_match_explicit_loops(causal, window, padded):
    b, h, n, d, n_buckets = 3, 1, 11, 4, 5
    q, k, v = inputs(b, h, n, n, d)
    pad = padding(b, n) if padded else None
    stats = attention_reference(
        q, k, v, causal=causal, window=window, key_padding_mask=pad, return_stats=True, n_buckets=n_buckets
    ).stats
    allowed = allowed_matrix(n, n, causal, window, pad).expand(b, h, n, n).numpy()
    s = (q @ k.transpose(-1, -2)).numpy() / math.sqrt(d)
    for bi in range(b):
        for i in range(n):
            keys = [j for j in range(n) if allowed[bi, 0, i, j]]
            if not keys:
                expected_entropy = expected_distance = 0.0
                expected_hist = np.zeros(n_buckets)
            else:
                w = np.exp([s[bi, 0, i, j] for j in keys])
                p = w / w.sum()
                expected_entropy = float(-(p * np.log(p)).sum())
                expected_distance = float(sum(pj * abs(i - j) for pj, j in zip(p, keys)))
                expected_hist = np.zeros(n_buckets)
                for pj, j in zip(p, keys):  # bucket of d: its bit length, capped at the last bucket
                    expected_hist[min(abs(i - j).bit_length(), n_buckets - 1)] += pj
            # float64 inputs, fp32 statistics: fp32 rounding of O(1) values
            assert stats.entropy[bi, 0, i].item() == pytest.approx(expected_entropy, abs=1e-6)
            assert stats.mean_distance[bi, 0, i].item() == pytest.approx(expected_distance, abs=1e-5)
            np.testing.assert_allclose(stats.histogram[bi, 0, i].numpy(), expected_hist, atol=1e-6)
    assert stats.histogram.dtype == stats.entropy.dtype == stats.mean_distance.dtype == torch.float32


def test_entropy_matches_torch_entr_on_a_larger_case():
    q, k, v = inputs(2, 3, 70, 70, 16)
    stats = attention_reference(q, k, v, causal=True, return_stats=True).stats
    p = torch.softmax((q @ k.transpose(-1, -2) / 4.0).masked_fill(~causal_mask().dense(70, 70), -math.inf), -1)
    torch.testing.assert_close(stats.entropy, torch.special.entr(p).sum(-1).float(), atol=1e-6, rtol=1e-6)
    assert torch.allclose(stats.histogram.sum(-1), torch.ones(2, 3, 70), atol=1e-6)  # rows sum to 1


@pytest.mark.parametrize("causal,window,padded", MASKS)
def test_gradients_match_autograd_through_sdpa(causal, window, padded):
    b, h, n, d = 3, 2, 9, 8
    q, k, v = (t.requires_grad_() for t in inputs(b, h, n, n, d))
    pad = padding(b, n) if padded else None
    out = attention_reference(q, k, v, causal=causal, window=window, key_padding_mask=pad).out
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    allowed = allowed_matrix(n, n, causal, window, pad).expand(b, h, n, n)
    rows = allowed.any(-1, keepdim=True)
    # SDPA has NaN on fully masked rows: drop their upstream gradient (their output is 0 and has no gradient)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | ~rows)
    expected_grads = torch.autograd.grad(expected, (q, k, v), grad_out * rows)
    for g, e in zip(grads, expected_grads):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, e, atol=1e-12, rtol=1e-10)  # float64
    if padded:  # fully masked rows: zero gradient for their query
        assert (grads[0][~rows.expand_as(grads[0])] == 0).all()


def test_fully_masked_rows_are_zero_and_finite():
    q, k, v = (t.requires_grad_() for t in inputs(2, 1, 6, 6, 4, torch.float32))
    pad = torch.ones(2, 6, dtype=torch.bool)
    res = attention_reference(q, k, v, key_padding_mask=pad, return_stats=True)
    assert (res.out == 0).all() and (res.lse == -math.inf).all()
    assert all((t == 0).all() for t in res.stats)
    res.out.sum().backward()
    assert all((t.grad == 0).all() for t in (q, k, v))


@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
@pytest.mark.parametrize("causal,window,padded", [(True, None, True), (False, 6, False), (False, None, True)])
def test_chunked_matches_reference(chunk, causal, window, padded):
    q, k, v = inputs(2, 2, 37, 37, 8, torch.float32)
    pad = padding(2, 37) if padded else None
    kw = dict(causal=causal, window=window, key_padding_mask=pad, n_buckets=7)
    ref = attention_reference(q, k, v, return_stats=True, **kw)
    got = attention_stats_chunked(q, k, v, chunk=chunk, **kw)
    assert isinstance(got, AttentionResult)
    # same formulas on the same rows: only matmul blocking can differ
    for a, e in [(got.out, ref.out), (got.lse, ref.lse), *zip(got.stats, ref.stats)]:
        torch.testing.assert_close(a, e, atol=1e-6, rtol=1e-6)


def test_chunked_cross_attention():
    q, k, v = inputs(1, 2, 23, 50, 8, torch.float32)
    ref = attention_reference(q, k, v, return_stats=True, n_buckets=4)
    got = attention_stats_chunked(q, k, v, n_buckets=4, chunk=7)
    torch.testing.assert_close(got.stats.histogram, ref.stats.histogram, atol=1e-6, rtol=1e-6)


def test_distance_buckets():
    assert distance_buckets(2) == [(0, 1), (1, None)]
    assert distance_buckets(6) == [(0, 1), (1, 2), (2, 4), (4, 8), (8, 16), (16, None)]
    assert len(distance_buckets(32)) == 32 and distance_buckets(32)[-1] == (2**30, None)


def test_reference_accepts_any_head_dim_and_scale():
    q, k, v = inputs(1, 1, 5, 5, 3)
    out = attention_reference(q, k, v, scale=0.3).out
    expected = F.scaled_dot_product_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)


def test_fused_reference_backend_is_the_reference():
    q, k, v = inputs(1, 2, 9, 9, 5, torch.float32)  # D=5: only the reference can run it
    a = fused_attention(q, k, v, causal=True, return_stats=True, backend="reference")
    b = attention_reference(q, k, v, causal=True, return_stats=True)
    assert torch.equal(a.out, b.out) and torch.equal(a.stats.histogram, b.stats.histogram)
    assert fused_attention(q, k, v).stats is None


def _good():
    return [torch.randn(2, 2, 6, 8) for _ in range(3)]


@pytest.mark.parametrize(
    "change,error,word",
    [
        (dict(q=torch.randn(2, 6, 8)), ValueError, "q must be 4-D"),
        (dict(k=torch.randn(2, 2, 6, 4), v=torch.randn(2, 2, 6, 4)), ValueError, "k must be"),
        (dict(v=torch.randn(2, 2, 5, 8)), ValueError, "k and v"),
        (dict(q=torch.randn(2, 2, 6, 8, dtype=torch.float16)), TypeError, "dtype"),
        (dict(q=torch.randint(0, 3, (2, 2, 6, 8))), TypeError, "q must be float"),
        (dict(k="k"), TypeError, "k must be a torch.Tensor"),
        (dict(window=0), ValueError, "window"),
        (dict(window=2.0), TypeError, "window"),
        (dict(causal=1), TypeError, "causal"),
        (dict(n_buckets=1), ValueError, "n_buckets"),
        (dict(n_buckets=33), ValueError, "n_buckets"),
        (dict(key_padding_mask=torch.zeros(2, 6)), TypeError, "key_padding_mask"),
        (dict(key_padding_mask=torch.zeros(2, 5, dtype=torch.bool)), ValueError, "key_padding_mask"),
        (dict(scale=-1.0), ValueError, "scale"),
        (dict(scale="x"), TypeError, "scale"),
        (dict(return_stats="yes"), TypeError, "return_stats"),
        (dict(backend="cuda"), ValueError, "backend"),
    ],
)
def test_bad_arguments_name_the_argument(change, error, word):
    q, k, v = _good()
    kwargs = {**dict(q=q, k=k, v=v), **change}
    with pytest.raises(error, match=word):
        fused_attention(kwargs.pop("q"), kwargs.pop("k"), kwargs.pop("v"), **kwargs)


@pytest.mark.parametrize("kw", [dict(causal=True), dict(window=3)])
def test_masks_need_square_attention(kw):
    q = torch.randn(1, 1, 4, 8)
    k = v = torch.randn(1, 1, 6, 8)
    with pytest.raises(ValueError, match="Nq=4, Nk=6"):
        attention_reference(q, k, v, **kw)
    with pytest.raises(ValueError, match="chunk"):
        attention_stats_chunked(q, q, q, chunk=0)
