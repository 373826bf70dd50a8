"""Attention statistics: hand-computed examples, closed forms and independent references.

Independent references used here:

- ``torch.distributions.Categorical(probs).entropy()`` for row entropy;
- closed forms for uniform attention over ``n`` tokens: entropy ``log n``, mean distance ``(n^2 - 1) / (3 n)``;
- plain-Python / numpy loops that follow the papers literally (mean attention distance with dropped tokens,
  Abnar & Zuidema's rollout with ``keepdims=True``);
- a plain matrix product (rollout with ``residual=0``, identical heads);
- a real ``explorer.record`` trace of 12 ``explorer.layers.MultiheadAttention`` layers for ``stack_patterns``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from explorer.analysis import (
    attention_rollout,
    distance_histogram,
    downsample_pattern,
    head_entropy,
    mean_attention_distance,
    row_entropy,
    sink_share,
    special_token_mask,
    stack_patterns,
)
from explorer.hooks import record
from explorer.layers import MultiheadAttention

LN2 = math.log(2.0)

# A 3x3 pattern used by several hand-computed examples (rows = queries 0, 1, 2; columns = keys 0, 1, 2):
HAND = torch.tensor(
    [
        [1.00, 0.00, 0.00],  # query 0 looks only at itself
        [0.50, 0.50, 0.00],  # query 1 splits between key 0 and itself
        [0.50, 0.25, 0.25],  # query 2 spreads over all keys
    ],
    dtype=torch.float64,
)


def _random_pattern(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(*shape, generator=generator, dtype=dtype) * 2.0
    return torch.softmax(scores, dim=-1)


# ------------------------------------------------------------------------------------------------------------------
# entropy
# ------------------------------------------------------------------------------------------------------------------


def test_row_entropy_hand_example() -> None:
    # H(row) = -sum p ln p:
    #   [1, 0, 0]        -> 0
    #   [.5, .5, 0]      -> -2 * .5 ln .5 = ln 2
    #   [.5, .25, .25]   -> -(.5 ln .5 + 2 * .25 ln .25) = .5 ln 2 + .5 * 2 ln 2 = 1.5 ln 2
    expected = torch.tensor([0.0, LN2, 1.5 * LN2], dtype=torch.float64)
    torch.testing.assert_close(row_entropy(HAND), expected, atol=1e-12, rtol=0)  # exact up to rounding


def test_head_entropy_hand_example() -> None:
    # mean of the three row entropies: (0 + 1 + 1.5) ln 2 / 3 = (2.5 / 3) ln 2
    got = head_entropy(HAND[None])  # one head
    torch.testing.assert_close(got, torch.tensor([2.5 / 3 * LN2], dtype=torch.float64), atol=1e-12, rtol=0)


def test_row_entropy_matches_categorical() -> None:
    pattern = _random_pattern(2, 3, 5, 7, seed=1)
    pattern[0, 0, 0] = torch.tensor([0.5, 0.5, 0, 0, 0, 0, 0], dtype=torch.float64)  # exact zeros: 0 log 0 = 0
    reference = torch.distributions.Categorical(probs=pattern).entropy()  # (2, 3, 5)
    torch.testing.assert_close(row_entropy(pattern), reference, atol=1e-10, rtol=0)  # float64


@pytest.mark.parametrize("n", [1, 2, 5, 16, 33])
def test_uniform_attention_closed_forms(n: int) -> None:
    # Uniform rows a_ij = 1/n: entropy -n (1/n) ln(1/n) = ln n.
    # Mean distance = (1/n) sum_i sum_j (1/n) |i - j| = S / n^2 with S = sum_{i,j} |i - j|.
    # Each distance d = 1 .. n-1 occurs for 2 (n - d) ordered pairs, so
    #   S = 2 sum_d d (n - d) = 2 [n * n(n-1)/2 - (n-1) n (2n-1)/6] = n (n-1) [n - (2n-1)/3] = n (n-1)(n+1) / 3,
    # and the mean distance is S / n^2 = (n^2 - 1) / (3 n).
    uniform = torch.full((2, n, n), 1.0 / n, dtype=torch.float64)  # (head, query, key)
    torch.testing.assert_close(head_entropy(uniform), torch.full((2,), math.log(n), dtype=torch.float64),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(mean_attention_distance(uniform),
                               torch.full((2,), (n * n - 1) / (3 * n), dtype=torch.float64), atol=1e-12, rtol=0)


def test_identity_attention_is_local_and_certain() -> None:
    eye = torch.eye(6, dtype=torch.float64).expand(2, 3, 6, 6)  # (batch, head, query, key)
    assert torch.equal(mean_attention_distance(eye), torch.zeros(2, 3, dtype=torch.float64))
    assert torch.equal(head_entropy(eye), torch.zeros(2, 3, dtype=torch.float64))
    shares, edges = distance_histogram(eye)
    assert edges.tolist() == [0, 1, 2, 4, 8]  # n = 6: powers of two up to the first >= 6
    assert torch.equal(shares[..., 0], torch.ones(2, 3, dtype=torch.float64))  # all mass at distance 0


def test_keep_renormalises_before_entropy_and_distance() -> None:
    # tokens: [CLS] a b [SEP]; keep = a, b (indices 1, 2)
    pattern = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0],  # [CLS]: dropped as a query
            [0.5, 0.25, 0.25, 0.0],  # a: kept keys (a, b) = (.25, .25) -> renormalised (.5, .5)
            [0.4, 0.3, 0.0, 0.3],  # b: kept keys (a, b) = (.3, 0)    -> renormalised (1, 0)
            [0.0, 0.0, 0.0, 1.0],  # [SEP]: dropped
        ],
        dtype=torch.float64,
    )[None]  # (head=1, query, key)
    keep = torch.tensor([False, True, True, False])
    # entropies after renormalising: a -> ln 2, b -> 0; mean = ln 2 / 2
    torch.testing.assert_close(head_entropy(pattern, keep=keep), torch.tensor([LN2 / 2], dtype=torch.float64),
                               atol=1e-12, rtol=0)
    # renormalise=False: entropy of the full rows of a and b, averaged
    #   a: -(.5 ln .5 + 2 * .25 ln .25) = 1.5 ln 2;   b: -(.4 ln .4 + 2 * .3 ln .3)
    full_b = -(0.4 * math.log(0.4) + 2 * 0.3 * math.log(0.3))
    torch.testing.assert_close(head_entropy(pattern, keep=keep, renormalise=False),
                               torch.tensor([(1.5 * LN2 + full_b) / 2], dtype=torch.float64), atol=1e-12, rtol=0)
    # mean distance: a (index 1) -> .5 * 0 + .5 * |1 - 2| = .5;  b (index 2) -> 1 * |2 - 1| = 1;  mean = .75
    torch.testing.assert_close(mean_attention_distance(pattern, keep=keep),
                               torch.tensor([0.75], dtype=torch.float64), atol=1e-12, rtol=0)
    # keeping everything is the same as no keep
    everything = torch.ones(4, dtype=torch.bool)
    torch.testing.assert_close(head_entropy(pattern, keep=everything), head_entropy(pattern), atol=1e-12, rtol=0)


def test_kept_tokens_keep_their_original_positions() -> None:
    # drop the middle token of 3: the distance between tokens 0 and 2 stays 2
    pattern = torch.tensor(
        [
            [0.5, 0.0, 0.5],  # query 0: kept (.5, .5) -> .5 * 0 + .5 * |0 - 2| = 1
            [0.2, 0.6, 0.2],  # query 1: dropped
            [0.0, 0.5, 0.5],  # query 2: kept (0, .5) -> (0, 1) -> 0
        ],
        dtype=torch.float64,
    )[None]
    keep = torch.tensor([True, False, True])
    # mean (1 + 0) / 2 = .5 (renumbering the kept tokens 0, 1 would give .25)
    torch.testing.assert_close(mean_attention_distance(pattern, keep=keep), torch.tensor([0.5], dtype=torch.float64),
                               atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# mean attention distance and its histogram
# ------------------------------------------------------------------------------------------------------------------


def test_mean_attention_distance_hand_example() -> None:
    # query 0: 1 * 0 = 0;  query 1: .5 * |1 - 0| = .5;  query 2: .5 * 2 + .25 * 1 + .25 * 0 = 1.25
    # mean = (0 + .5 + 1.25) / 3 = 1.75 / 3
    torch.testing.assert_close(mean_attention_distance(HAND[None]), torch.tensor([1.75 / 3], dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_distance_histogram_hand_example() -> None:
    # n = 3, largest distance 2 -> default edges 0, 1, 2, 4: buckets d = 0, d = 1, 2 <= d < 4
    #   query 0: (1, 0, 0);  query 1: (.5, .5, 0);  query 2: key 2 at d 0 (.25), key 1 at d 1 (.25), key 0 at d 2 (.5)
    #   mean over queries: (1.75 / 3, .75 / 3, .5 / 3)
    shares, edges = distance_histogram(HAND[None])
    assert edges.tolist() == [0.0, 1.0, 2.0, 4.0]
    torch.testing.assert_close(shares, torch.tensor([[1.75, 0.75, 0.5]], dtype=torch.float64) / 3,
                               atol=1e-12, rtol=0)
    # explicit edges; the last bucket includes its right edge (distance 2 falls in [1, 2])
    shares, edges = distance_histogram(HAND[None], edges=[0, 1, 2])
    torch.testing.assert_close(shares, torch.tensor([[1.75, 1.25]], dtype=torch.float64) / 3, atol=1e-12, rtol=0)


def test_positions_give_euclidean_distances_in_2d() -> None:
    # 4 patches on a 2x2 grid (row, col). Head 0 looks at the diagonally opposite patch (distance sqrt 2);
    # head 1 is uniform: from any patch the distances are 0, 1, 1, sqrt 2 -> (2 + sqrt 2) / 4.
    positions = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    opposite = torch.eye(4, dtype=torch.float64).flip(-1)  # 0 -> 3, 1 -> 2, 2 -> 1, 3 -> 0
    uniform = torch.full((4, 4), 0.25, dtype=torch.float64)
    pattern = torch.stack([opposite, uniform])  # (head, query, key)
    expected = torch.tensor([math.sqrt(2), (2 + math.sqrt(2)) / 4], dtype=torch.float64)
    torch.testing.assert_close(mean_attention_distance(pattern, positions=positions), expected, atol=1e-12, rtol=0)
    # histogram, default edges: largest distance sqrt 2 -> edges 0, 1, 2
    #   head 0: all mass at sqrt 2 -> (0, 1);  head 1: .25 at 0, .5 at 1 and .25 at sqrt 2 -> (.25, .75)
    shares, edges = distance_histogram(pattern, positions=positions)
    assert edges.tolist() == [0.0, 1.0, 2.0]
    torch.testing.assert_close(shares, torch.tensor([[0.0, 1.0], [0.25, 0.75]], dtype=torch.float64),
                               atol=1e-12, rtol=0)
    # pixel units: 16-pixel patches scale every distance by 16
    torch.testing.assert_close(mean_attention_distance(pattern, positions=positions * 16.0), expected * 16,
                               atol=1e-10, rtol=0)


def _reference_mean_distance(pattern: np.ndarray, keep: np.ndarray, positions: np.ndarray) -> float:
    """ViT paper's measure, literally: drop tokens, renormalise each row, sum_j a_ij * dist(i, j), mean over i."""
    kept = [i for i in range(len(keep)) if keep[i]]
    total = 0.0
    for i in kept:
        mass = sum(pattern[i, j] for j in kept)
        total += sum(pattern[i, j] / mass * float(np.linalg.norm(positions[i] - positions[j])) for j in kept)
    return total / len(kept)


def test_mean_distance_matches_reference_loop() -> None:
    pattern = _random_pattern(2, 3, 9, 9, seed=2)  # (batch, head, query, key)
    keep = torch.tensor([False, True, True, False, True, True, True, True, False])
    positions = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij"), -1).reshape(9, 2)
    got = mean_attention_distance(pattern, keep=keep, positions=positions)
    for b in range(2):
        for h in range(3):
            ref = _reference_mean_distance(pattern[b, h].numpy(), keep.numpy(), positions.numpy().astype(float))
            assert got[b, h].item() == pytest.approx(ref, abs=1e-12)  # float64 both ways
    # 1-D: positions = arange gives the default |i - j|
    torch.testing.assert_close(mean_attention_distance(pattern, keep=keep, positions=torch.arange(9)[:, None]),
                               mean_attention_distance(pattern, keep=keep), atol=1e-12, rtol=0)


def test_histogram_with_unit_buckets_reproduces_mean_distance() -> None:
    # edges 0, 1, ..., n put each integer distance d in its own bucket; sum_b d_b * share_b is the mean distance
    pattern = _random_pattern(3, 4, 10, 10, seed=3)
    keep = torch.tensor([True] * 9 + [False])
    shares, edges = distance_histogram(pattern, edges=list(range(11)), keep=keep)
    torch.testing.assert_close((shares * edges[:-1]).sum(-1), mean_attention_distance(pattern, keep=keep),
                               atol=1e-12, rtol=0)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), heads=st.integers(1, 3), seed=st.integers(0, 2**16), drop=st.integers(0, 3))
def test_statistics_bounds_property(n: int, heads: int, seed: int, drop: int) -> None:
    pattern = _random_pattern(heads, n, n, seed=seed)
    keep = torch.ones(n, dtype=torch.bool)
    keep[: min(drop, n - 1)] = False
    kept = int(keep.sum())
    entropy = head_entropy(pattern, keep=keep)
    assert bool(((entropy >= -1e-12) & (entropy <= math.log(kept) + 1e-12)).all())  # 0 <= H <= ln(kept)
    distance = mean_attention_distance(pattern, keep=keep)
    assert bool(((distance >= 0) & (distance <= n - 1 + 1e-9)).all())
    shares, edges = distance_histogram(pattern, keep=keep)
    torch.testing.assert_close(shares.sum(-1), torch.ones(heads, dtype=torch.float64), atol=1e-12, rtol=0)
    assert edges[-1] >= n and edges[-2] < n  # ends at the first power of two >= n, whatever keep drops


# ------------------------------------------------------------------------------------------------------------------
# rollout
# ------------------------------------------------------------------------------------------------------------------


def _reference_rollout(patterns: np.ndarray, fusion: str, residual: float) -> np.ndarray:
    """Abnar & Zuidema 2020 as a loop: fuse heads, add identity, normalise rows (keepdims), multiply."""
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[fusion]
    n = patterns.shape[-1]
    out = []
    result = None
    for layer in range(patterns.shape[0]):
        a = fuse(patterns[layer], axis=-3)  # (..., query, key)
        a = residual * np.eye(n) + (1 - residual) * a
        a = a / a.sum(axis=-1, keepdims=True)
        result = a if result is None else a @ result
        out.append(result)
    return np.stack(out)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("residual", [0.5, 0.2, 1.0])
def test_rollout_matches_reference_loop(fusion: str, residual: float) -> None:
    patterns = _random_pattern(3, 2, 4, 5, 5, seed=4)  # (layer, batch, head, query, key)
    got = attention_rollout(patterns, head_fusion=fusion, residual=residual)
    assert got.shape == (3, 2, 5, 5)
    np.testing.assert_allclose(got.numpy(), _reference_rollout(patterns.numpy(), fusion, residual), atol=1e-12)
    torch.testing.assert_close(got.sum(-1), torch.ones(3, 2, 5, dtype=torch.float64), atol=1e-12, rtol=0)


def test_rollout_hand_example() -> None:
    # 2 layers, 2 tokens, one head, residual .5:
    #   layer 0: A = [[1, 0], [1, 0]] -> .5 I + .5 A = [[1, 0], [.5, .5]] (rows already sum to 1)
    #   layer 1: A = [[0, 1], [0, 1]] -> [[.5, .5], [0, 1]]
    #   R_1 = A_hat_1 @ A_hat_0 = [[.5 + .25, .25], [.5, .5]] = [[.75, .25], [.5, .5]]
    patterns = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]], [[[0.0, 1.0], [0.0, 1.0]]]], dtype=torch.float64)
    got = attention_rollout(patterns)
    expected = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.75, 0.25], [0.5, 0.5]]], dtype=torch.float64)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_rollout_max_fusion_normalises_rows_not_columns() -> None:
    # heads [[1, 0], [1, 0]] and [[1, 0], [0, 1]]: max = [[1, 0], [1, 1]] (row sums 1 and 2)
    # .5 I + .5 max = [[1, 0], [.5, 1]] -> rows / row sums (1, 1.5) = [[1, 0], [1/3, 2/3]]
    # (dividing without keepdim would scale columns instead: [[1, 0], [.5, 2/3]])
    patterns = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]], dtype=torch.float64)
    got = attention_rollout(patterns, head_fusion="max")
    torch.testing.assert_close(got[0], torch.tensor([[1.0, 0.0], [1 / 3, 2 / 3]], dtype=torch.float64),
                               atol=1e-12, rtol=0)
    # min = [[1, 0], [0, 0]] -> .5 I + .5 min = [[1, 0], [0, .5]] -> [[1, 0], [0, 1]]
    torch.testing.assert_close(attention_rollout(patterns, head_fusion="min")[0], torch.eye(2, dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_rollout_without_residual_is_the_plain_product() -> None:
    # identical heads + mean fusion = that head; residual 0 = no identity; rows already sum to 1
    layers = _random_pattern(4, 6, 6, seed=5)  # (layer, query, key)
    patterns = layers[:, None].expand(4, 3, 6, 6)  # (layer, head, query, key), 3 identical heads
    got = attention_rollout(patterns, residual=0.0)
    product = layers[0]
    torch.testing.assert_close(got[0], product, atol=1e-12, rtol=0)
    for layer in range(1, 4):
        product = layers[layer] @ product
        torch.testing.assert_close(got[layer], product, atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# sinks, special tokens, fully masked rows
# ------------------------------------------------------------------------------------------------------------------


def test_sink_share_hand_example() -> None:
    # mass on key 0: (1 + .5 + .5) / 3 = 2/3;  on keys 0 and 2: (1 + .5 + (.5 + .25)) / 3 = .75
    torch.testing.assert_close(sink_share(HAND[None], torch.tensor([True, False, False])),
                               torch.tensor([2 / 3], dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(sink_share(HAND[None], torch.tensor([True, False, True])),
                               torch.tensor([0.75], dtype=torch.float64), atol=1e-12, rtol=0)


def test_special_token_mask() -> None:
    tokens = ["[CLS]", "the", "cat", "[SEP]", "[PAD]"]
    assert special_token_mask(tokens).tolist() == [True, False, False, True, True]
    assert special_token_mask(tokens, special=["[SEP]"]).tolist() == [False, False, False, True, False]
    assert special_token_mask(tokens).dtype == torch.bool


def test_fully_masked_rows_are_left_out() -> None:
    # explorer's attention layer reports a query whose every key is masked as an all-zero row
    pattern = HAND.clone()
    pattern[1] = 0.0
    entropy = row_entropy(pattern)
    assert math.isnan(entropy[1]) and entropy[0] == 0 and entropy[2] == pytest.approx(1.5 * LN2, abs=1e-12)
    # per head: the mean over the two remaining queries
    assert head_entropy(pattern[None]).item() == pytest.approx(1.5 * LN2 / 2, abs=1e-12)
    # distances: query 0 -> 0, query 2 -> 1.25
    assert mean_attention_distance(pattern[None]).item() == pytest.approx(1.25 / 2, abs=1e-12)
    assert sink_share(pattern[None], torch.tensor([True, False, False])).item() == pytest.approx(0.75, abs=1e-12)
    shares, _ = distance_histogram(pattern[None])
    assert shares.sum().item() == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------------------------------------------------------
# downsampling for display
# ------------------------------------------------------------------------------------------------------------------


def test_downsample_hand_example_with_partial_blocks() -> None:
    # uniform 5x5 (every entry .2), max_size 2 -> f = ceil(5 / 2) = 3, blocks {0, 1, 2} and {3, 4}
    # cell (I, 0): each query gives 3 * .2 = .6 to keys 0-2; cell (I, 1): 2 * .2 = .4 to keys 3-4;
    # averaging over the queries of a block (3 of them, then 2) keeps .6 and .4
    pooled, factor = downsample_pattern(torch.full((5, 5), 0.2, dtype=torch.float64), 2)
    assert factor == 3
    torch.testing.assert_close(pooled, torch.tensor([[0.6, 0.4], [0.6, 0.4]], dtype=torch.float64),
                               atol=1e-12, rtol=0)
    # a non-uniform case: rows 0-2 give (.6, .4), rows 3-4 give (.1, .9) and (.3, .7) -> block 1 averages to (.2, .8)
    pattern = torch.zeros(5, 5, dtype=torch.float64)
    pattern[:3, 0], pattern[:3, 4] = 0.6, 0.4
    pattern[3, 1], pattern[3, 3] = 0.1, 0.9
    pattern[4, 2], pattern[4, 4] = 0.3, 0.7
    pooled, _ = downsample_pattern(pattern, 2)
    torch.testing.assert_close(pooled, torch.tensor([[0.6, 0.4], [0.2, 0.8]], dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_downsample_preserves_block_constant_pattern() -> None:
    # every query of block I spreads C[I, J] evenly over the 4 keys of block J: P = kron(C, ones(4, 4)) / 4
    coarse = _random_pattern(2, 3, 3, seed=6)  # (head, query block, key block)
    fine = torch.kron(coarse, torch.ones(4, 4, dtype=torch.float64)) / 4  # (head, 12, 12), rows sum to 1
    pooled, factor = downsample_pattern(fine, 3)
    assert factor == 4
    torch.testing.assert_close(pooled, coarse, atol=1e-12, rtol=0)


def test_downsample_keeps_row_sums() -> None:
    pattern = _random_pattern(2, 3, 50, 50, seed=7)
    pooled, factor = downsample_pattern(pattern, 8)  # f = ceil(50 / 8) = 7 -> 8 x 8, last block 1 token
    assert factor == 7 and pooled.shape == (2, 3, 8, 8)
    torch.testing.assert_close(pooled.sum(-1), torch.ones(2, 3, 8, dtype=torch.float64), atol=1e-12, rtol=0)
    # non-square (cross-attention): the same factor on both axes, from the longer side
    cross = _random_pattern(3, 7, seed=8)
    pooled, factor = downsample_pattern(cross, 3)
    assert factor == 3 and pooled.shape == (1, 3)
    torch.testing.assert_close(pooled.sum(-1), torch.ones(1, dtype=torch.float64), atol=1e-12, rtol=0)
    # small enough: returned as is
    same, factor = downsample_pattern(pattern, 50)
    assert factor == 1 and same is pattern


# ------------------------------------------------------------------------------------------------------------------
# stacking a real trace
# ------------------------------------------------------------------------------------------------------------------


class _Stack(nn.Module):
    def __init__(self, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MultiheadAttention(8, 2) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


def test_stack_patterns_on_a_recorded_trace_sorts_layers_naturally() -> None:
    torch.manual_seed(0)
    model = _Stack(12).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad(), record(model, "*.hook_pattern") as trace:
        model(x)
    stacked = stack_patterns(trace)
    assert stacked.shape == (12, 2, 2, 5, 5)  # (layer, batch, head, query, key)
    for layer in range(12):  # lexical order would put blocks.10 and blocks.11 before blocks.2
        assert torch.equal(stacked[layer], trace[f"blocks.{layer}.hook_pattern"])
    torch.testing.assert_close(stacked.sum(-1), torch.ones(12, 2, 2, 5), atol=1e-5, rtol=0)  # float32 softmax
    # a narrower glob, still in layer order
    subset = stack_patterns(trace, "blocks.1*.hook_pattern")
    assert torch.equal(subset, torch.stack([trace[f"blocks.{i}.hook_pattern"] for i in (1, 10, 11)]))
    # statistics carry the leading dims through: [layer, batch, head]
    assert head_entropy(stacked).shape == (12, 2, 2)
    assert attention_rollout(stacked).shape == (12, 2, 5, 5)

    # nn.Sequential names its children 0 .. 11
    sequential = nn.Sequential(*(MultiheadAttention(8, 2) for _ in range(11)))
    with torch.no_grad(), record(sequential, "*.hook_pattern") as trace:
        sequential(x)
    stacked = stack_patterns(trace)
    assert [torch.equal(stacked[i], trace[f"{i}.hook_pattern"]) for i in range(11)] == [True] * 11


def test_stack_patterns_errors() -> None:
    good = _random_pattern(1, 2, 3, 3)
    with pytest.raises(ValueError, match="pattern="):
        stack_patterns({"blocks.0.hook_out": good})
    with pytest.raises(ValueError, match="different shapes"):
        stack_patterns({"a.0.hook_pattern": good, "a.1.hook_pattern": _random_pattern(1, 2, 4, 4)})
    with pytest.raises(ValueError, match="not \\[batch, head, query, key\\]"):
        stack_patterns({"a.0.hook_pattern": good[0]})
    with pytest.raises(TypeError, match="trace"):
        stack_patterns([good])
    with pytest.raises(TypeError, match="pattern"):
        stack_patterns({"a.0.hook_pattern": good}, pattern=3)


# ------------------------------------------------------------------------------------------------------------------
# invalid inputs
# ------------------------------------------------------------------------------------------------------------------

P3 = HAND[None]  # (head=1, 3, 3)
NOT_STOCHASTIC = torch.ones(1, 3, 3, dtype=torch.float64)

INVALID = [
    (lambda: row_entropy(torch.ones(3) / 3), ValueError, "pattern"),  # 1-D
    (lambda: row_entropy(NOT_STOCHASTIC), ValueError, "pattern"),  # rows sum to 3
    (lambda: row_entropy(-HAND), ValueError, "pattern"),  # negative
    (lambda: row_entropy(torch.full((2, 2), float("nan"))), ValueError, "pattern"),
    (lambda: row_entropy(torch.eye(3, dtype=torch.long)), TypeError, "pattern"),
    (lambda: row_entropy(HAND.numpy()), TypeError, "pattern"),
    (lambda: head_entropy(HAND), ValueError, "pattern"),  # needs [..., head, query, key]
    (lambda: head_entropy(P3, keep=torch.tensor([True, False])), ValueError, "keep"),  # length
    (lambda: head_entropy(P3, keep=torch.tensor([1, 0, 1])), TypeError, "keep"),  # not bool
    (lambda: head_entropy(P3, keep=torch.zeros(3, dtype=torch.bool)), ValueError, "keep"),  # empty
    (lambda: head_entropy(P3, keep=torch.ones(1, 3, dtype=torch.bool)), ValueError, "keep"),  # 2-D
    (lambda: head_entropy(P3, renormalise="yes"), TypeError, "renormalise"),
    (lambda: head_entropy(_random_pattern(1, 2, 3), keep=torch.ones(3, dtype=torch.bool)), ValueError, "pattern"),
    (lambda: mean_attention_distance(_random_pattern(1, 2, 3)), ValueError, "pattern"),  # query != key
    (lambda: mean_attention_distance(P3, positions=torch.zeros(4, 2)), ValueError, "positions"),
    (lambda: mean_attention_distance(P3, positions=torch.zeros(3)), ValueError, "positions"),
    (lambda: mean_attention_distance(P3, positions=[[0], [1], [2]]), TypeError, "positions"),
    (lambda: mean_attention_distance(NOT_STOCHASTIC), ValueError, "pattern"),
    (lambda: distance_histogram(P3, edges=[0, 2, 1]), ValueError, "edges"),
    (lambda: distance_histogram(P3, edges=[0]), ValueError, "edges"),
    (lambda: distance_histogram(P3, edges="0123"), TypeError, "edges"),
    (lambda: distance_histogram(P3, keep=torch.tensor([True])), ValueError, "keep"),
    (lambda: attention_rollout(P3), ValueError, "patterns"),  # 3-D: no layer axis
    (lambda: attention_rollout(P3[None], head_fusion="median"), ValueError, "head_fusion"),
    (lambda: attention_rollout(P3[None], residual=1.5), ValueError, "residual"),
    (lambda: attention_rollout(P3[None], residual=-0.1), ValueError, "residual"),
    (lambda: attention_rollout(P3[None], residual="0.5"), TypeError, "residual"),
    (lambda: attention_rollout(_random_pattern(2, 1, 2, 3)), ValueError, "patterns"),  # query != key
    (lambda: attention_rollout(NOT_STOCHASTIC[None]), ValueError, "patterns"),
    (lambda: sink_share(P3, torch.tensor([True, False])), ValueError, "sink"),
    (lambda: sink_share(P3, [True, False, False]), TypeError, "sink"),
    (lambda: sink_share(NOT_STOCHASTIC, torch.tensor([True, False, False])), ValueError, "pattern"),
    (lambda: special_token_mask("[CLS] a [SEP]"), TypeError, "tokens"),
    (lambda: special_token_mask(["a", 1]), TypeError, "tokens"),
    (lambda: special_token_mask(["a"], special="[CLS]"), TypeError, "special"),
    (lambda: downsample_pattern(HAND, 0), ValueError, "max_size"),
    (lambda: downsample_pattern(HAND, 2.5), TypeError, "max_size"),
    (lambda: downsample_pattern(HAND[0], 2), ValueError, "pattern"),
]


@pytest.mark.parametrize("call, error, argument", INVALID, ids=[f"{i}-{a}" for i, (_, _, a) in enumerate(INVALID)])
def test_invalid_inputs_name_the_argument(call, error, argument: str) -> None:
    with pytest.raises(error, match=argument):
        call()


def test_row_sum_tolerance_is_1e_3() -> None:
    # rows off by 5e-4 pass, rows off by 5e-3 do not
    row_entropy(torch.tensor([[0.5, 0.5005]], dtype=torch.float64))
    with pytest.raises(ValueError, match="within 0.001"):
        row_entropy(torch.tensor([[0.5, 0.505]], dtype=torch.float64))


def test_half_precision_is_computed_in_float32() -> None:
    pattern = _random_pattern(2, 4, 4, seed=9, dtype=torch.float32)
    got = head_entropy(pattern.half())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, head_entropy(pattern), atol=5e-3, rtol=0)  # fp16 rounding of the inputs


def test_streamed_statistics_match_the_pattern_functions_and_refuse_other_masks():
    """q, k, v only, in chunks that do not divide n, against the functions of the recorded pattern (fp32: 1e-5)."""
    from explorer.analysis import distance_histogram, mean_attention_distance, row_entropy, streamed_statistics
    from explorer.masks import dilated_window, sliding_window

    gen = torch.Generator().manual_seed(5)
    q, k, v = torch.randn(3, 2, 3, 70, 16, generator=gen).unbind(0)
    mask = sliding_window(9, causal=True)
    stats = streamed_statistics(q, k, v, mask=mask, n_buckets=6, chunk=32)
    scores = (q @ k.transpose(-2, -1) / 4.0).masked_fill(~mask.dense(70, 70), float("-inf"))
    pattern = scores.softmax(-1)  # (batch, head, query, key)
    shares, _ = distance_histogram(pattern, edges=[0, 1, 2, 4, 8, 16, 1e9])
    torch.testing.assert_close(stats.histogram.mean(-2), shares, atol=1e-5, rtol=0)
    torch.testing.assert_close(stats.mean_distance.mean(-1), mean_attention_distance(pattern), atol=1e-5, rtol=0)
    torch.testing.assert_close(stats.entropy, row_entropy(pattern), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="mask"):
        streamed_statistics(q, k, v, mask=dilated_window(3, 2))


# --- local_share: how convolution-like a head is ----------------------------------------------------------------------

def test_local_share_closed_forms():
    from explorer.analysis import local_share

    n = 10
    i = torch.arange(n)
    band = ((i[:, None] - i[None, :]).abs() <= 2).double()  # (query, key): a width-5 "conv" head
    band = band / band.sum(-1, keepdim=True)
    assert local_share(band[None], 2).item() == pytest.approx(1.0, abs=1e-15)
    # window 1 keeps 3 of the 5 keys inside, fewer at the ends: sum over queries of |{|j-i|<=1}| / |{|j-i|<=2}|
    per_q = [(min(q, 1) + min(n - 1 - q, 1) + 1) / (min(q, 2) + min(n - 1 - q, 2) + 1) for q in range(n)]
    assert local_share(band[None], 1).item() == pytest.approx(sum(per_q) / n, abs=1e-15)
    uniform = torch.full((1, n, n), 1.0 / n, dtype=torch.float64)
    assert local_share(uniform, 1).item() == pytest.approx((2 * 2 + 8 * 3) / n / n, abs=1e-15)  # 0.28
    assert local_share(uniform, n).item() == pytest.approx(1.0, abs=1e-15)


def test_local_share_drops_sinks_before_measuring():
    from explorer.analysis import local_share

    n = 6
    pattern = torch.zeros(1, n, n, dtype=torch.float64)
    pattern[0, :, 0] = 0.5  # every query parks half its attention on token 0 (a [CLS]-like sink)
    pattern[0, torch.arange(n), torch.arange(n)] += 0.5  # and half on itself
    assert local_share(pattern, 0).item() == pytest.approx((1.0 + 0.5 * (n - 1)) / n, abs=1e-15)
    keep = torch.ones(n, dtype=torch.bool)
    keep[0] = False
    assert local_share(pattern, 0, keep=keep).item() == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(ValueError, match="window"):
        local_share(pattern, -1)
    with pytest.raises(ValueError, match="window"):
        local_share(pattern, 1.5)
