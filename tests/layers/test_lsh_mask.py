"""LSH attention's mask (Reformer): hashing, the mask it gives, and each query's recall of its top-k keys.

References: Charikar's SimHash collision probability 1 - theta / pi for two buckets (a closed form; tolerance 4
standard errors of the binomial over the rounds), exact symmetries of argmax([xR, -xR]), and brute-force loops.
"""

import math

import pytest
import torch

from explorer.masks import LSHBuckets, lsh, lsh_hash, lsh_recall


def test_two_buckets_collide_with_probability_one_minus_angle_over_pi():
    rounds = 4000
    for theta in (0.3, 1.0, 2.0):
        x = torch.tensor([[1.0, 0.0, 0.0], [math.cos(theta), math.sin(theta), 0.0]], dtype=torch.float64)
        buckets = lsh_hash(x, n_buckets=2, n_rounds=rounds, seed=1)  # (round, token)
        observed = float((buckets[:, 0] == buckets[:, 1]).double().mean())
        expected = 1 - theta / math.pi
        assert abs(observed - expected) < 4 * math.sqrt(expected * (1 - expected) / rounds), (theta, observed)


def test_hash_symmetries():
    x = torch.randn(50, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    b = lsh_hash(x, 8, 3, seed=5)
    assert b.shape == (3, 50) and int(b.min()) >= 0 and int(b.max()) < 8
    assert torch.equal(lsh_hash(2.5 * x, 8, 3, seed=5), b)  # angular: positive scaling changes nothing
    assert torch.equal(lsh_hash(-x, 8, 3, seed=5), (b + 4) % 8)  # negation swaps x R and -x R
    assert torch.equal(lsh_hash(x[:10], 8, 3, seed=5), b[:, :10])  # hashed alone or with others: the same
    assert not torch.equal(lsh_hash(x, 8, 3, seed=6), b)


def test_mask_is_any_round_sharing_a_bucket():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(12, 8, generator=g), torch.randn(9, 8, generator=g)
    mask = lsh(q, k, 4, 2, seed=3)
    qb, kb = lsh_hash(q, 4, 2, seed=3), lsh_hash(k, 4, 2, seed=3)
    dense = mask.dense(12, 9)
    for i in range(12):
        for j in range(9):
            expected = any(int(qb[r, i]) == int(kb[r, j]) for r in range(2))
            assert bool(dense[i, j]) is expected and mask(i, j) is expected
    assert isinstance(mask, LSHBuckets) and repr(mask) == "lsh(rounds=2, queries=12, keys=9)"


def test_recall_matches_a_loop_and_grows_with_rounds():
    g = torch.Generator().manual_seed(4)
    x = torch.nn.functional.normalize(torch.randn(64, 16, generator=g), dim=-1)
    allowed = lsh(x, x, 8, 2, seed=0).dense(64, 64)
    scores = x @ x.T
    hits = 0
    for i in range(64):
        best = sorted(range(64), key=lambda j: -float(scores[i, j]))[:4]
        hits += sum(bool(allowed[i, j]) for j in best)
    assert lsh_recall(x, x, 8, 2, top_k=4, seed=0) == pytest.approx(hits / (64 * 4), abs=1e-12)
    recalls = [lsh_recall(x, x, 8, r, top_k=4, seed=0) for r in (1, 4, 16)]
    assert recalls[0] < recalls[1] < recalls[2] and recalls[2] > 0.9
    # one round, one bucket pair per rotation: two buckets let through more than 16
    assert lsh_recall(x, x, 2, 1, top_k=4) > lsh_recall(x, x, 16, 1, top_k=4)


def test_bad_arguments_are_named():
    x = torch.randn(5, 4)
    with pytest.raises(ValueError, match="n_buckets must be even"):
        lsh_hash(x, 3)
    with pytest.raises((ValueError, TypeError), match="n_buckets"):
        lsh_hash(x, 0)
    with pytest.raises((ValueError, TypeError), match="n_rounds"):
        lsh_hash(x, 4, 0)
    with pytest.raises(TypeError, match="vectors"):
        lsh_hash(torch.ones(5, 4, dtype=torch.int64), 4)
    with pytest.raises(ValueError, match="dim"):
        lsh(x, torch.randn(5, 3), 4)
    with pytest.raises(ValueError, match="top_k"):
        lsh_recall(x, x, 4, 1, top_k=6)
    with pytest.raises(ValueError, match="queries"):
        lsh(torch.randn(5), x, 4)
