"""LSH attention (Reformer) in O(n * chunk): against dense softmax attention with the equivalent boolean mask.

References, all independent of the chunked implementation:

* the mask of one round built by hand: positions sorted with Python's ``sorted`` by (bucket, position), chunk =
  rank // c, then ``explorer.masks.from_callable`` "same bucket and the key's chunk is the query's or the one before"
  rendered densely; several rounds are the union (``|``) of their masks;
* dense softmax attention with that mask in float64 (tolerance 1e-12: both sides sum the same few terms);
* ``F.scaled_dot_product_attention`` for the one-bucket, one-chunk case (full attention);
* a hand-worked three-token, two-round example written with ``math.exp``;
* the closed form ``explorer.analysis.cost.lsh_pairs`` for the size of the largest tensor (no n x n anywhere).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from explorer.analysis.cost import lsh_pairs
from explorer.layers import LSHAttention, lsh_attention
from explorer.layers.lsh_attention import combine_rounds, lsh_attention_rounds
from explorer.masks import from_callable, lsh_hash

TOL = 1e-12  # float64, sums of at most n terms


def round_mask(buckets: list[int], chunk: int) -> torch.Tensor:
    """BoolTensor [query, key] of one round: same bucket, and the key's chunk is the query's or the previous one."""
    n = len(buckets)
    c = min(chunk, n)
    order = sorted(range(n), key=lambda t: (buckets[t], t))  # sorted by (bucket, position)
    chunk_of = [0] * n
    for rank, token in enumerate(order):
        chunk_of[token] = rank // c
    bucket_t, chunk_t = torch.tensor(buckets), torch.tensor(chunk_of)
    mask = from_callable(lambda i, j: (bucket_t[i] == bucket_t[j])
                         & ((chunk_t[i] - chunk_t[j] == 0) | (chunk_t[i] - chunk_t[j] == 1)))
    return mask.dense(n, n)


def union_mask(buckets: torch.Tensor, chunk: int) -> torch.Tensor:
    """[query, key] union over rounds of ``round_mask``; ``buckets`` is ``[round, token]``."""
    masks = [round_mask(row.tolist(), chunk) for row in buckets]
    out = masks[0]
    for m in masks[1:]:
        out = out | m
    return out


def dense_attention(qk, v, allowed, normalize_keys=True, scale=None):
    """softmax(q k^T * scale) v over the allowed keys, keys = qk / |qk| (Reformer) unless told otherwise."""
    keys = F.normalize(qk, dim=-1) if normalize_keys else qk
    scale = 1 / math.sqrt(qk.shape[-1]) if scale is None else scale
    scores = (qk @ keys.transpose(-2, -1)) * scale
    return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1) @ v


def dense_lsh_reference(qk, v, n_buckets, n_rounds, chunk, seed=0, normalize_keys=True):
    """Per (batch, head): dense attention over the union of every round's hand-built mask (hashes: lsh_hash)."""
    batch, heads, n, _ = qk.shape
    buckets = lsh_hash(qk, n_buckets, n_rounds, seed) if n_buckets > 1 else torch.zeros(
        n_rounds, batch, heads, n, dtype=torch.int64)
    out = torch.empty(batch, heads, n, v.shape[-1], dtype=qk.dtype)
    for b in range(batch):
        for h in range(heads):
            allowed = union_mask(buckets[:, b, h], chunk)
            out[b, h] = dense_attention(qk[b, h], v[b, h], allowed, normalize_keys)
    return out


def inputs(batch=2, heads=2, n=37, h=8, hv=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, heads, n, h, generator=g, dtype=torch.float64),
            torch.randn(batch, heads, n, hv, generator=g, dtype=torch.float64))


# --- equal to dense attention with the equivalent mask ----------------------------------------------------------

@pytest.mark.parametrize("n, chunk, n_buckets", [
    (37, 8, 4),  # 5 chunks, the last padded (37 = 4 * 8 + 5)
    (32, 8, 4),  # chunks divide n
    (37, 1, 2),  # a chunk of one: each query sees itself and the previous slot if it shares the bucket
    (37, 37, 8),  # one chunk: every key of the query's bucket
    (20, 64, 4),  # a chunk longer than n is the whole sequence
    (50, 7, 16),
])
def test_single_round_equals_dense_masked_attention(n, chunk, n_buckets):
    qk, v = inputs(n=n)
    out = lsh_attention(qk, v, n_buckets, 1, chunk, seed=3)
    torch.testing.assert_close(out, dense_lsh_reference(qk, v, n_buckets, 1, chunk, seed=3), atol=TOL, rtol=0)


def test_unnormalised_keys_and_explicit_scale():
    qk, v = inputs(n=29)
    out = lsh_attention(qk, v, 4, 1, 6, seed=1, normalize_keys=False, scale=0.3)
    buckets = lsh_hash(qk, 4, 1, seed=1)
    for b in range(2):
        for h in range(2):
            ref = dense_attention(qk[b, h], v[b, h], round_mask(buckets[0, b, h].tolist(), 6), False, 0.3)
            torch.testing.assert_close(out[b, h], ref, atol=TOL, rtol=0)


def test_one_bucket_one_chunk_is_full_attention():
    qk, v = inputs(n=40)
    keys = F.normalize(qk, dim=-1)
    full = F.scaled_dot_product_attention(qk, keys, v)  # torch's full softmax attention, scale 1/sqrt(h)
    torch.testing.assert_close(lsh_attention(qk, v, 1, 1, 40), full, atol=TOL, rtol=0)
    torch.testing.assert_close(lsh_attention(qk, v, 1, 3, 64), full, atol=TOL, rtol=0)  # rounds all alike
    plain = F.scaled_dot_product_attention(qk, qk, v)
    torch.testing.assert_close(lsh_attention(qk, v, 1, 1, 100, normalize_keys=False), plain, atol=TOL, rtol=0)


def test_one_bucket_with_chunks_is_a_block_band():
    """No hashing: the sorted order is the sequence, so query i sees keys of chunk i // c and the one before."""
    qk, v = inputs(n=30)
    c = 7
    band = from_callable(lambda i, j: (i // c - j // c == 0) | (i // c - j // c == 1)).dense(30, 30)
    torch.testing.assert_close(lsh_attention(qk, v, 1, 1, c), dense_attention(qk, v, band), atol=TOL, rtol=0)


@pytest.mark.parametrize("n_rounds, chunk, n_buckets", [(2, 8, 4), (3, 5, 8), (4, 64, 2)])
def test_rounds_with_dedup_equal_softmax_over_the_union(n_rounds, chunk, n_buckets):
    """Reformer's correction (scores lowered by log N_ij) turns the combination into softmax over the union."""
    qk, v = inputs(n=37)
    out = lsh_attention(qk, v, n_buckets, n_rounds, chunk, seed=7)
    ref = dense_lsh_reference(qk, v, n_buckets, n_rounds, chunk, seed=7)
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)


def test_rounds_without_dedup_combine_by_log_sum_exp():
    """Each round equals dense attention with its own mask, and the output is sum_r softmax_r(lse_r) o_r."""
    qk, v = inputs(n=33)
    rounds, chunk = 3, 6
    round_out, round_lse = lsh_attention_rounds(qk, v, 4, rounds, chunk, seed=2, dedup=False)
    buckets = lsh_hash(qk, 4, rounds, seed=2)
    scores = (qk @ F.normalize(qk, dim=-1).transpose(-2, -1)) / math.sqrt(8)
    expected = torch.zeros_like(round_out[0])
    for b in range(2):
        for h in range(2):
            lse, outs = [], []
            for r in range(rounds):
                masked = scores[b, h].masked_fill(~round_mask(buckets[r, b, h].tolist(), chunk), float("-inf"))
                lse.append(torch.logsumexp(masked, dim=-1))
                outs.append(masked.softmax(dim=-1) @ v[b, h])
                torch.testing.assert_close(round_out[r, b, h], outs[-1], atol=TOL, rtol=0)
                torch.testing.assert_close(round_lse[r, b, h], lse[-1], atol=TOL, rtol=0)
            total = torch.logsumexp(torch.stack(lse), dim=0)
            expected[b, h] = sum(torch.exp(lse[r] - total)[:, None] * outs[r] for r in range(rounds))
    torch.testing.assert_close(lsh_attention(qk, v, 4, rounds, chunk, seed=2, dedup=False), expected,
                               atol=TOL, rtol=0)
    torch.testing.assert_close(combine_rounds(round_out, round_lse), expected, atol=TOL, rtol=0)


def test_two_rounds_by_hand():
    """Three 1-d tokens qk = 1, 2, -1 (keys = qk: no normalisation, scale 1), values 1, 10, 100.

    Round 0 buckets (0, 0, 1), round 1 buckets (0, 1, 1), one chunk. Token 0 (scores 1, 2, -1) sees {0, 1} then
    {0}; token 1 (scores 2, 4, -2) sees {0, 1} then {1, 2}; token 2 (scores -1, -2, 1) sees {2} then {1, 2}.
    Without dedup a key seen in both rounds counts twice; with dedup it is plain softmax over the union.
    """
    e = math.exp
    qk = torch.tensor([[1.0], [2.0], [-1.0]], dtype=torch.float64)
    v = torch.tensor([[1.0], [10.0], [100.0]], dtype=torch.float64)
    buckets = torch.tensor([[0, 0, 1], [0, 1, 1]])
    twice = [(2 * e(1) + 10 * e(2)) / (2 * e(1) + e(2)),
             (e(2) + 20 * e(4) + 100 * e(-2)) / (e(2) + 2 * e(4) + e(-2)),
             (10 * e(-2) + 200 * e(1)) / (e(-2) + 2 * e(1))]
    union = [(e(1) + 10 * e(2)) / (e(1) + e(2)),
             (e(2) + 10 * e(4) + 100 * e(-2)) / (e(2) + e(4) + e(-2)),
             (10 * e(-2) + 100 * e(1)) / (e(-2) + e(1))]
    kwargs = dict(n_buckets=2, chunk=3, scale=1.0, normalize_keys=False, buckets=buckets)
    no_dedup = lsh_attention(qk, v, dedup=False, **kwargs)
    dedup = lsh_attention(qk, v, dedup=True, **kwargs)
    torch.testing.assert_close(no_dedup[:, 0], torch.tensor(twice, dtype=torch.float64), atol=TOL, rtol=0)
    torch.testing.assert_close(dedup[:, 0], torch.tensor(union, dtype=torch.float64), atol=TOL, rtol=0)
    # and the per-round log-sum-exps of token 0: log(e + e^2) and 1 (dedup off)
    _, lse = lsh_attention_rounds(qk, v, dedup=False, **kwargs)
    torch.testing.assert_close(lse[:, 0], torch.tensor([math.log(e(1) + e(2)), 1.0], dtype=torch.float64),
                               atol=TOL, rtol=0)


def test_float32_matches_float64_reference():
    qk, v = inputs(n=64)
    out = lsh_attention(qk.float(), v.float(), 8, 2, 16, seed=4)
    ref = dense_lsh_reference(qk, v, 8, 2, 16, seed=4)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)  # fp32 rounding, same buckets here


# --- no n x n tensor ----------------------------------------------------------------------------------------------

class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an aten op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("n_rounds", [1, 2])
def test_largest_tensor_is_the_chunked_scores(n_rounds):
    """At n = 1024, chunk 16: the biggest tensor is the [round, chunk, c, 2c] scores, R * lsh_pairs = R * 32768
    elements, 1/32 of one n x n map."""
    n, chunk = 1024, 16
    qk, v = inputs(batch=1, heads=1, n=n, h=8, hv=8)
    with LargestTensor() as mode:
        lsh_attention(qk, v, 8, n_rounds, chunk)
    assert mode.largest == n_rounds * lsh_pairs(n, chunk) == n_rounds * n * 2 * chunk
    assert mode.largest < n * n


# --- the layer ----------------------------------------------------------------------------------------------------

def test_layer_is_projections_around_lsh_attention():
    torch.manual_seed(0)
    layer = LSHAttention(12, 3, n_buckets=4, n_rounds=2, chunk=5, seed=1, dtype=torch.float64)
    x = torch.randn(2, 23, 12, dtype=torch.float64)
    with torch.no_grad():
        qk = (x @ layer.qk_proj.weight.T + layer.qk_proj.bias).view(2, 23, 3, 4).transpose(1, 2)
        v = (x @ layer.v_proj.weight.T + layer.v_proj.bias).view(2, 23, 3, 4).transpose(1, 2)
        z = dense_lsh_reference(qk, v, 4, 2, 5, seed=1)
        expected = z.transpose(1, 2).reshape(2, 23, 12) @ layer.out_proj.weight.T + layer.out_proj.bias
        torch.testing.assert_close(layer(x), expected, atol=TOL, rtol=0)


# --- bad input ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, name", [
    (dict(n_buckets=0), ValueError, "n_buckets"),
    (dict(n_buckets=3), ValueError, "n_buckets must be 1 or even"),
    (dict(n_buckets=2.0), TypeError, "n_buckets"),
    (dict(n_rounds=0), ValueError, "n_rounds"),
    (dict(chunk=0), ValueError, "chunk"),
    (dict(chunk=-3), ValueError, "chunk"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(dedup=1), TypeError, "dedup"),
    (dict(normalize_keys="yes"), TypeError, "normalize_keys"),
])
def test_bad_arguments_name_the_argument(kwargs, error, name):
    qk, v = inputs(n=10)
    with pytest.raises(error, match=name):
        lsh_attention(qk, v, **kwargs)
    if name not in ("dedup", "normalize_keys"):
        with pytest.raises(error, match=name):
            LSHAttention(8, 2, **kwargs)


def test_bad_tensors_name_the_argument():
    qk, v = inputs(n=10)
    with pytest.raises(ValueError, match="v must have shape"):
        lsh_attention(qk, v[:, :, :9])
    with pytest.raises(TypeError, match="v "):
        lsh_attention(qk, v.float())
    with pytest.raises(TypeError, match="qk"):
        lsh_attention(qk.long(), v)
    with pytest.raises(ValueError, match="buckets must lie in"):
        lsh_attention(qk, v, 4, buckets=torch.full((1, 2, 2, 10), 4))
    with pytest.raises(ValueError, match="buckets must have shape"):
        lsh_attention(qk, v, 4, buckets=torch.zeros(1, 2, 10, dtype=torch.int64))
    with pytest.raises(ValueError, match="embed_dim"):
        LSHAttention(10, 3)
    with pytest.raises(ValueError, match="x must have shape"):
        LSHAttention(8, 2)(torch.randn(2, 5, 6))
