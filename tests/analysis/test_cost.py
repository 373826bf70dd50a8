"""Analytic cost model: FLOPs against ``torch.utils.flop_counter.FlopCounterMode``, pair counts against dense
masks built with torch, hand-worked arithmetic, and asymptotic scaling.

``FlopCounterMode`` counts matmuls and convolutions as ``2 * multiply-adds`` -- the same convention as the model --
but not elementwise ops: the softmax (``SOFTMAX_FLOPS_PER_SCORE`` per score), the linear-attention normaliser's
sum and divide, and LSH attention's duplicate correction and round combination are subtracted before comparing.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from explorer.analysis import OPS, Cost, attention_matrix_bytes, cost
from explorer.analysis.cost import (
    LSH_DEDUP_FLOPS_PER_SCORE,
    SOFTMAX_FLOPS_PER_SCORE,
    block_sparse_pairs,
    cost_table,
    lsh_pairs,
    sliding_window_pairs,
)
from explorer.bench.scaling import make_op
from explorer.layers.lsh_attention import lsh_attention


def counted_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# ------------------------------------------------------------------------------------------------------------------
# FLOPs against FlopCounterMode
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # k = 4: pads a copy, same FLOPs
@pytest.mark.parametrize("batch,d,n,k", [(1, 4, 16, 3), (2, 8, 33, 5), (3, 5, 10, 4)])
def test_conv1d_flops_match_counter(batch, d, n, k):
    x, w = torch.randn(batch, d, n), torch.randn(d, d, k)
    expected = counted_flops(lambda: F.conv1d(x, w, padding="same"))
    assert cost("conv1d", n, d, kernel_size=k, batch=batch).flops == expected  # exact: both integers


@pytest.mark.parametrize("batch,d,n,k", [(1, 4, 16, 3), (2, 8, 33, 7)])
def test_depthwise_flops_match_counter(batch, d, n, k):
    x, w = torch.randn(batch, d, n), torch.randn(d, 1, k)
    expected = counted_flops(lambda: F.conv1d(x, w, padding="same", groups=d))
    assert cost("depthwise_conv1d", n, d, kernel_size=k, batch=batch).flops == expected


@pytest.mark.parametrize("batch,d,n,k", [(1, 3, 8, 3), (2, 4, 9, 5)])
def test_conv2d_flops_match_counter(batch, d, n, k):
    x, w = torch.randn(batch, d, n, n), torch.randn(d, d, k, k)
    expected = counted_flops(lambda: F.conv2d(x, w, padding="same"))
    assert cost("conv2d", n, d, kernel_size=k, batch=batch).flops == expected


@pytest.mark.parametrize("op", ["attention_math", "attention_fused"])
@pytest.mark.parametrize("batch,heads,n,d", [(1, 1, 16, 8), (2, 4, 12, 32)])
def test_attention_matmul_flops_match_counter(op, batch, heads, n, d):
    h = d // heads
    q, k, v = (torch.randn(batch, heads, n, h) for _ in range(3))

    def core():
        p = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(h), dim=-1)  # [B, H, n, n]
        torch.matmul(p, v)

    softmax = SOFTMAX_FLOPS_PER_SCORE * batch * heads * n * n  # not seen by the counter
    assert cost(op, n, d, heads=heads, batch=batch).flops - softmax == counted_flops(core)


@pytest.mark.parametrize("batch,heads,n,d", [(1, 1, 10, 8), (2, 4, 7, 16)])
def test_linear_attention_matmul_flops_match_counter(batch, heads, n, d):
    h = d // heads
    q, k, v = (F.elu(torch.randn(batch, heads, n, h)) + 1 for _ in range(3))  # phi(Q), phi(K) > 0

    def core():
        s = torch.matmul(k.transpose(-2, -1), v)  # [B, H, h, h]
        num = torch.matmul(q, s)  # [B, H, n, h]
        z = k.sum(dim=-2)  # [B, H, h]      n h adds per head, not counted
        den = torch.matmul(q, z.unsqueeze(-1))  # [B, H, n, 1]
        num / den  # n h divides per head, not counted

    elementwise = 2 * batch * n * d  # z sum + divide
    assert cost("linear_attention", n, d, heads=heads, batch=batch).flops - elementwise == counted_flops(core)


def lsh_elementwise(batch, heads, n, d, n_rounds, chunk):
    """The parts of the LSH model FlopCounterMode does not see: softmax, and with R > 1 the -log N_ij correction
    (per score slot) and the weighted sum of the rounds (2 B n d R)."""
    slots = batch * heads * lsh_pairs(n, chunk) * n_rounds
    extra = LSH_DEDUP_FLOPS_PER_SCORE * slots + 2 * batch * n * d * n_rounds if n_rounds > 1 else 0
    return SOFTMAX_FLOPS_PER_SCORE * slots + extra


@pytest.mark.parametrize("batch,heads,n,d,n_buckets,n_rounds,chunk", [
    (1, 1, 64, 8, 4, 1, 16),  # chunks divide n
    (2, 2, 37, 16, 8, 3, 8),  # padded last chunk, three rounds
    (1, 4, 50, 32, 2, 2, 64),  # one chunk (chunk > n)
    (2, 1, 30, 8, 1, 1, 7),  # one bucket: no hashing
])
def test_lsh_attention_matmul_flops_match_counter(batch, heads, n, d, n_buckets, n_rounds, chunk):
    """Hashing (x R_r) and the chunked Q K^T and P V matmuls of the implementation, exactly."""
    h = d // heads
    qk, v = torch.randn(batch, heads, n, h), torch.randn(batch, heads, n, h)
    counted = counted_flops(lambda: lsh_attention(qk, v, n_buckets, n_rounds, chunk))
    model = cost("lsh_attention", n, d, heads=heads, batch=batch, n_buckets=n_buckets, n_rounds=n_rounds,
                 chunk=chunk).flops
    assert model - lsh_elementwise(batch, heads, n, d, n_rounds, chunk) == counted  # exact: both integers


def test_lsh_attention_benchmarked_op_flops_match_counter():
    """The closure the scaling sweep times (defaults: 8 buckets, 2 rounds, chunk 64) at d = 64, batch 4."""
    fn = make_op("lsh_attention", 1000, d=64, batch=4)
    model = cost("lsh_attention", 1000, 64, batch=4).flops
    assert model - lsh_elementwise(4, 1, 1000, 64, 2, 64) == counted_flops(fn)


# ------------------------------------------------------------------------------------------------------------------
# hand-worked examples and pair counts against dense masks
# ------------------------------------------------------------------------------------------------------------------


def test_fft_conv_hand_example():
    # n = 4, d = 1, B = 1: L = 8, one real FFT = 2.5 * 8 * log2(8) = 60; F = 8/2 + 1 = 5 bins * 6 = 30
    # X = rfft(x), Y = X * K, y = irfft(Y): 60 + 30 + 60; K = rfft(filter) once per channel: 60 -> 210
    assert cost("fft_conv", 4, 1).flops == 210
    # B = 2, d = 3: 2 * 3 * (120 + 30) + 3 * 60 = 900 + 180 = 1080
    assert cost("fft_conv", 4, 3, batch=2).flops == 1080
    # bytes at float32 for n=4, d=1: x 4 + filter 4 + X,K,Y 3 * 5 complex = 30 reals + y 8 -> 46 * 4 = 184
    assert cost("fft_conv", 4, 1).bytes_moved == 184
    assert cost("fft_conv", 4, 1).peak_memory == (4 + 30 + 8) * 4  # no filter: weights are not activations


def test_fft_conv_is_n_log_n():
    # doubling n: L log2 L grows by 2 (L' log2 L') / (L log2 L) -> 2 for large n, far below conv's d-fold factor
    ratio = cost("fft_conv", 2**20, 8).flops / cost("fft_conv", 2**19, 8).flops
    assert 2.0 < ratio < 2.1  # tolerance: the log factor adds 2/log2(L) ~ 0.1


def dense_window_pairs(n: int, window: int) -> int:
    offset = torch.arange(n)[None, :] - torch.arange(n)[:, None]  # [query, key]: key - query
    mask = (offset >= -((window - 1) // 2)) & (offset <= window // 2)
    return int(mask.sum())


def dense_block_pairs(n: int, block: int) -> int:
    block_id = torch.arange(n) // block
    return int((block_id[:, None] == block_id[None, :]).sum())


@pytest.mark.parametrize("n", [1, 2, 5, 8, 13])
def test_sliding_window_pairs_match_dense_mask(n):
    for window in range(1, n + 1):
        assert sliding_window_pairs(n, window) == dense_window_pairs(n, window), (n, window)


def test_sliding_window_hand_example():
    # n = 5, window = 3: rows see 2, 3, 3, 3, 2 keys = 13 = 5 * 3 - 1 - 1
    assert sliding_window_pairs(5, 3) == 13
    # FLOPs = 4 B d P + 5 B H P = 4 * 8 * 13 + 5 * 13 = 416 + 65 = 481
    assert cost("sliding_window_attention", 5, 8, window=3).flops == 481


def test_sliding_window_extremes():
    # window = 1: the diagonal, n pairs; window = n: centred, so edge queries are clipped -- fewer than n^2 pairs
    assert sliding_window_pairs(9, 1) == 9
    assert sliding_window_pairs(9, 9) == 81 - 10 - 10  # left = right = 4: 4 * 5 / 2 = 10 lost on each side
    assert cost("sliding_window_attention", 9, 8, window=9).peak_memory == cost("attention_fused", 9, 8).peak_memory


@pytest.mark.parametrize("n", [1, 4, 10, 17])
@pytest.mark.parametrize("block", [1, 3, 4, 20])
def test_block_sparse_pairs_match_dense_mask(n, block):
    assert block_sparse_pairs(n, block) == dense_block_pairs(n, block)


def test_block_sparse_hand_example():
    # n = 10, block = 4: blocks of 4, 4, 2 -> 16 + 16 + 4 = 36 pairs
    assert block_sparse_pairs(10, 4) == 36
    assert cost("block_sparse_attention", 10, 4, block=4).flops == 4 * 4 * 36 + 5 * 36


def test_lsh_pairs_hand_examples():
    # n = 10, chunk = 4: 3 chunks of 4 (12 slots, 2 of them padding), each query slot scores 2 * 4 keys -> 96
    assert lsh_pairs(10, 4) == 96
    # chunk >= n: one chunk of n, its own keys only -> n^2
    assert lsh_pairs(10, 16) == lsh_pairs(10, 10) == 100
    # chunk divides n: exactly n * 2c
    assert lsh_pairs(4096, 64) == 4096 * 128
    assert lsh_pairs(5, 1) == 5 * 2  # a chunk of one: the slot and the one before


def test_lsh_attention_flops_hand_example():
    # n = 10, d = 8, one head, b = 4 buckets, chunk = 4 -> P = 96 slots per round
    # one round: hashing 10 * 8 * 4 = 320; attention 4 * 8 * 96 + 5 * 96 = 3072 + 480 -> 3872
    assert cost("lsh_attention", 10, 8, n_buckets=4, n_rounds=1, chunk=4).flops == 3872
    # two rounds: hashing 640 + 2 * 3552 + dedup 2 * 96 + combining 2 * 10 * 8 * 2 = 640 + 7104 + 192 + 320 = 8256
    assert cost("lsh_attention", 10, 8, n_buckets=4, n_rounds=2, chunk=4).flops == 8256
    # one bucket, one chunk: no hashing, dense n^2 core = attention_fused's FLOPs
    assert cost("lsh_attention", 10, 8, n_buckets=1, n_rounds=1, chunk=10).flops == cost("attention_fused", 10, 8).flops


def test_lsh_attention_memory_hand_example():
    # n = 4, d = 2, one head, chunk = 2, float32: c = 2, m = 2 chunks, n_pad = 4, K = 4 keys, P = 16 slots
    # qk, v 16 + normalised keys and scaled queries 16 + padded copies of those and v 3 * 5 * 2 = 30
    # per round: sorted queries 8 + key/value windows 2 * 4 * 2 * 2 = 32 + scores 16 + lse 4 + 4 + outputs 8 + 8
    # = 80; output 8.  One round: (16 + 16 + 30 + 80 + 8) * 4 bytes = 600
    assert cost("lsh_attention", 4, 2, n_buckets=2, n_rounds=1, chunk=2).peak_memory == 600
    # two rounds: (16 + 16 + 30 + 160 + 8) * 4 = 920, plus int32 round counts 4 bytes * 16 slots * 2 rounds = 128
    assert cost("lsh_attention", 4, 2, n_buckets=2, n_rounds=2, chunk=2).peak_memory == 1048
    # bytes moved: the same plus the rotations, 2 rounds * h 2 * (2 / 2) columns * 4 bytes = 16
    assert cost("lsh_attention", 4, 2, n_buckets=2, n_rounds=2, chunk=2).bytes_moved == 1064


def test_attention_math_memory_hand_example():
    # n = 4, d = 2, float32: q, k, v, out 4 * 4 * 2 = 32 elements + S, P 2 * 16 = 32 -> 64 * 4 bytes
    assert cost("attention_math", 4, 2).peak_memory == 256
    assert attention_matrix_bytes(4) == 64
    assert attention_matrix_bytes(4, heads=2, batch=3, dtype=torch.float16) == 3 * 2 * 16 * 2


# ------------------------------------------------------------------------------------------------------------------
# scaling
# ------------------------------------------------------------------------------------------------------------------


def test_math_peak_memory_is_quadratic_fused_linear():
    n = 2**16
    math_ratio = cost("attention_math", 2 * n).peak_memory / cost("attention_math", n).peak_memory
    # peak = (4 n d + 2 n^2) s at B = H = 1, d = 64: ratio = (8 n d + 8 n^2) / (4 n d + 2 n^2) = 4 (n + 64) / (n + 128)
    assert math_ratio == pytest.approx(4 * (n + 64) / (n + 128), rel=1e-12)  # -> 4 as n >> d
    fused_ratio = cost("attention_fused", 2 * n).peak_memory / cost("attention_fused", n).peak_memory
    assert fused_ratio == pytest.approx(2, abs=1e-12)  # exactly linear
    assert cost("attention_fused", n).flops == cost("attention_math", n).flops


def test_linear_ops_scale_linearly():
    for op in ("conv1d", "depthwise_conv1d", "linear_attention", "sliding_window_attention", "block_sparse_attention",
               "lsh_attention"):
        small, large = cost(op, 2**14, 64, window=128), cost(op, 2**15, 64, window=128)
        assert large.flops / small.flops == pytest.approx(2, rel=1e-2), op  # edges of windows/blocks: < 1 %


def test_lsh_attention_is_linear_and_far_below_full_attention():
    # chunk 64 divides n: P = 2 * 64 * n per round, every term linear -> FLOPs double exactly with n
    small, large = cost("lsh_attention", 2**14), cost("lsh_attention", 2**15)
    assert large.flops == 2 * small.flops
    # memory: every term linear except the sentinel rows of the padded copies (3 B d elements): ratio 2 - 1e-5
    assert large.peak_memory / small.peak_memory == pytest.approx(2, abs=1e-5)
    # at n = 16384 (defaults: 2 rounds of 2 * 64 keys per query) the core scores 2 * 128 / 16384 = 1/64 of the pairs
    ratio = cost("lsh_attention", 2**14).flops / cost("attention_math", 2**14).flops
    assert 1 / 64 < ratio < 1.1 / 64  # + hashing (n d b R vs 4 d (2 c n) R: b / 8c = 1.6 %), dedup, combining (< 1 %)


def test_dtype_scales_bytes_not_flops():
    a, b = cost("attention_math", 256, dtype=torch.float32), cost("attention_math", 256, dtype=torch.bfloat16)
    assert a.flops == b.flops
    assert a.bytes_moved == 2 * b.bytes_moved and a.peak_memory == 2 * b.peak_memory


@pytest.mark.parametrize("op", OPS)
def test_every_op_returns_positive_cost(op):
    c = cost(op, 256, 64, heads=4, window=16, block=32, batch=2)
    assert isinstance(c, Cost) and c.flops > 0 and c.bytes_moved > 0 and c.peak_memory > 0


# ------------------------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------------------------


def test_unknown_op_lists_ops():
    with pytest.raises(ValueError, match="attention_fused") as err:
        cost("attention_magic", 16)
    assert all(op in str(err.value) for op in OPS)


@pytest.mark.parametrize("name", ["n", "d", "heads", "kernel_size", "window", "block", "n_buckets", "n_rounds",
                                  "chunk", "batch"])
def test_bad_sizes_name_the_argument(name):
    kwargs = dict(n=256, d=64, heads=1, kernel_size=3, window=16, block=32, n_buckets=8, n_rounds=2, chunk=64,
                  batch=1)
    for bad, error in ((0, ValueError), (-1, ValueError), (2.0, TypeError), (True, TypeError), ("8", TypeError)):
        with pytest.raises(error, match=name):
            cost("sliding_window_attention", **{**kwargs, name: bad})


def test_odd_bucket_count():
    with pytest.raises(ValueError, match="n_buckets must be 1 or even"):
        cost("lsh_attention", 256, n_buckets=5)
    assert cost("lsh_attention", 256, n_buckets=1).flops > 0  # one bucket: no hashing, allowed


def test_window_larger_than_n():
    with pytest.raises(ValueError, match="window"):
        cost("sliding_window_attention", 16, window=17)
    cost("attention_math", 16)  # the default window=128 > n matters only where window is used


def test_heads_must_divide_d():
    with pytest.raises(ValueError, match="heads"):
        cost("attention_math", 16, 10, heads=3)


def test_bad_dtype():
    with pytest.raises(TypeError, match="dtype"):
        cost("conv1d", 16, dtype="float32")


def test_cost_table_cells_are_cost_values():
    from explorer.guard import human_bytes

    ops, ns = ["conv1d", "attention_math", "sliding_window_attention"], [256, 1024]
    lines = cost_table(ops, ns, d=32, window=64).splitlines()
    assert lines[0].split() == ["op", "n=256", "n=1024"]
    assert [line.split()[0] for line in lines[1:]] == ops
    for op, line in zip(ops, lines[1:]):
        fields = line.split()[1:]  # flops, bytes value, bytes unit per size
        for i, n in enumerate(ns):
            c = cost(op, n, 32, window=64)
            flops, value, unit = fields[3 * i: 3 * i + 3]
            assert float(flops) == pytest.approx(c.flops, rel=5e-3)  # printed to 3 significant digits
            assert f"{value} {unit}" == human_bytes(c.peak_memory)
