"""The long-range order task: labels, positions and distances against brute-force loops over the tokens.

Tolerances: labels, positions and one-hot inputs exact; the log-uniform sampler's frequencies within 5 binomial
standard errors of the closed form ln((d + 1) / d) / ln(max + 1) (a false alarm about once in 1.7 million).
"""

import math

import numpy as np
import pytest
import torch

from explorer.data.sequences import (
    LENGTH, MAX_DISTANCE, VOCAB, channels, log_uniform_distances, log_uniform_probability, long_range_batch,
    long_range_test_set,
)


def _brute_force(tokens: list[int], vocab: int) -> tuple[int, int, int]:
    """(label, first, distance) by scanning the sequence for the two marked tokens A = vocab, B = vocab + 1."""
    where_a = [i for i, t in enumerate(tokens) if t == vocab]
    where_b = [i for i, t in enumerate(tokens) if t == vocab + 1]
    assert len(where_a) == 1 and len(where_b) == 1  # exactly one of each
    a, b = where_a[0], where_b[0]
    return int(a < b), min(a, b), abs(a - b)


@pytest.mark.parametrize("length,vocab", [(LENGTH, VOCAB), (17, 1), (40, 7)])
def test_labels_positions_and_inputs_match_a_loop_over_the_tokens(length, vocab):
    distances = [1, 2, length - 1, length // 2, 3, 1, length - 2, 5] * 4
    batch = long_range_batch(distances, length=length, vocab=vocab, seed=3)
    assert batch.inputs.shape == (len(distances), vocab + 2, length) and batch.inputs.dtype == torch.float32
    assert channels(vocab) == vocab + 2
    for i, d in enumerate(distances):
        tokens = batch.tokens[i].tolist()
        label, first, distance = _brute_force(tokens, vocab)
        assert (label, first, distance) == (int(batch.labels[i]), int(batch.first[i]), d)
        assert int(batch.distance[i]) == d and int(batch.second[i]) == first + d
        assert 0 <= first <= length - 1 - d  # the pair never wraps
        for pos in range(length):  # one-hot, position by position
            column = batch.inputs[i, :, pos].tolist()
            assert column == [1.0 if c == tokens[pos] else 0.0 for c in range(vocab + 2)]
        assert all(0 <= t < vocab for j, t in enumerate(tokens) if j not in (first, first + d))


def test_labels_are_balanced_and_first_positions_cover_their_range():
    batch = long_range_batch([5] * 1000, length=40, seed=0)
    assert int(batch.labels.sum()) == 500  # exactly half
    assert set(batch.first.tolist()) == set(range(40 - 5))  # every start 0..34 drawn (1000 draws, 35 values)
    odd = long_range_batch([3] * 7, seed=1)
    assert int(odd.labels.sum()) in (3, 4)
    free = long_range_batch([3] * 4000, seed=2, balanced=False)
    assert abs(float(free.labels.float().mean()) - 0.5) < 5 * 0.5 / math.sqrt(4000)  # fair coins, 5 sigma
    assert long_range_batch([LENGTH - 1] * 20, seed=0).first.tolist() == [0] * 20  # the only place that fits


def test_seeded_and_independent_of_the_global_generator():
    torch.manual_seed(123)
    a = long_range_batch([1, 50, 200], seed=7)
    state = torch.get_rng_state()
    b = long_range_batch([1, 50, 200], seed=7)
    assert torch.equal(state, torch.get_rng_state())  # the global generator is left alone
    for field in ("inputs", "tokens", "labels", "first", "distance"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    c = long_range_batch([1, 50, 200], seed=8)
    assert not torch.equal(a.tokens, c.tokens)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(long_range_batch([1, 50, 200], generator=g).tokens, a.tokens)  # same stream as seed 7
    assert not torch.equal(long_range_batch([1, 50, 200], generator=g).tokens, a.tokens)  # the generator advanced


def test_test_set_groups_distances_and_balances_each():
    grid = [1, 11, 63, 256]
    data = long_range_test_set(grid, 10, seed=1000)
    assert data.distance.tolist() == [d for d in grid for _ in range(10)]
    for k, d in enumerate(grid):
        part = slice(10 * k, 10 * k + 10)
        assert int(data.labels[part].sum()) == 5
        alone = long_range_batch([d] * 10, seed=1000 + k)  # each distance has its own seed
        assert torch.equal(alone.tokens, data.tokens[part])
    bigger = long_range_test_set([1, 11, 63, 256, 128], 10, seed=1000)
    assert torch.equal(bigger.tokens[:40], data.tokens)  # adding a distance leaves the others alone
    with pytest.raises(ValueError, match="distances"):
        long_range_test_set([4, 4], 10)
    with pytest.raises(ValueError, match="per_distance"):
        long_range_test_set([4], 0)


def test_log_uniform_distances_follow_their_closed_form():
    n = 200_000
    d = log_uniform_distances(n, MAX_DISTANCE, seed=0)
    assert d.dtype == torch.int64 and int(d.min()) >= 1 and int(d.max()) <= MAX_DISTANCE
    counts = np.bincount(d.numpy(), minlength=MAX_DISTANCE + 1)
    total = sum(log_uniform_probability(k) for k in range(1, MAX_DISTANCE + 1))
    assert total == pytest.approx(1.0, abs=1e-12)  # the probabilities telescope to 1
    for k in (1, 2, 3, 10, 63, 200):
        p = log_uniform_probability(k)
        assert p == pytest.approx(math.log((k + 1) / k) / math.log(MAX_DISTANCE + 1), rel=1e-15)
        assert abs(counts[k] / n - p) < 5 * math.sqrt(p * (1 - p) / n), k
    for lo, hi in ((1, 16), (16, 64), (64, 257)):  # octave bands: share ln(hi / lo) / ln(257)
        p = math.log(hi / lo) / math.log(MAX_DISTANCE + 1)
        assert abs(counts[lo:hi].sum() / n - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert log_uniform_probability(MAX_DISTANCE + 1) == 0.0


@pytest.mark.parametrize("bad,error", [
    ([0], ValueError), ([-3], ValueError), ([LENGTH], ValueError), ([LENGTH + 5], ValueError), ([], ValueError),
    ([2.5], TypeError), ([True], TypeError), (["3"], TypeError), (3, TypeError), ("12", TypeError),
    (torch.tensor([2.0, 3.0]), TypeError), (torch.tensor([[1, 2]]), TypeError),
])
def test_bad_distances_are_refused_by_name(bad, error):
    with pytest.raises(error, match="distances"):
        long_range_batch(bad)


def test_bad_arguments_are_refused_by_name():
    assert long_range_batch(torch.tensor([1, 2]), seed=0).distance.tolist() == [1, 2]  # an int tensor is fine
    assert long_range_batch((np.int64(4),), seed=0).distance.tolist() == [4]           # numpy ints too
    with pytest.raises(ValueError, match="distances"):
        long_range_batch([10], length=10)  # d must be < length
    with pytest.raises(ValueError, match="length"):
        long_range_batch([1], length=1)
    with pytest.raises(TypeError, match="vocab"):
        long_range_batch([1], vocab=2.0)
    with pytest.raises(ValueError, match="vocab"):
        long_range_batch([1], vocab=0)
    with pytest.raises(ValueError, match="seed"):
        long_range_batch([1], seed=-1)
    with pytest.raises(TypeError, match="generator"):
        long_range_batch([1], generator=5)
    with pytest.raises(TypeError, match="balanced"):
        long_range_batch([1], balanced=1)
    with pytest.raises(ValueError, match="max_distance"):
        log_uniform_distances(5, 0)
    with pytest.raises(ValueError, match="n"):
        log_uniform_distances(0)
