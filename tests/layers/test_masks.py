"""Masks: dense renderings vs loops written from the documented definitions, combinators, the conv analogy."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from explorer.masks import (
    Mask,
    block_sparse,
    causal,
    dilated_window,
    from_callable,
    full,
    sliding_window,
)


def loop_dense(allowed, n_query, n_key):
    """Reference: a [query, key] BoolTensor filled one entry at a time."""
    out = torch.zeros(n_query, n_key, dtype=torch.bool)
    for i in range(n_query):
        for j in range(n_key):
            out[i, j] = bool(allowed(i, j))
    return out


def window_keys(i, window, dilation, is_causal):
    """Keys visible from query i, from the module docstring's offsets."""
    if is_causal:
        steps = range(-(window - 1), 1)
    else:
        steps = range(-((window - 1) // 2), window // 2 + 1)
    return {i + dilation * m for m in steps}


@pytest.mark.parametrize("n_query, n_key", [(1, 1), (5, 5), (4, 7), (7, 4)])
def test_full_and_causal(n_query, n_key):
    assert torch.equal(full().dense(n_query, n_key), torch.ones(n_query, n_key, dtype=torch.bool))
    assert torch.equal(causal().dense(n_query, n_key), loop_dense(lambda i, j: j <= i, n_query, n_key))


@pytest.mark.parametrize("window", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("is_causal", [False, True])
def test_sliding_window(window, is_causal):
    n = 9
    expected = loop_dense(lambda i, j: j in window_keys(i, window, 1, is_causal), n, n)
    assert torch.equal(sliding_window(window, causal=is_causal).dense(n, n), expected)


def test_sliding_window_counts_window_keys_away_from_the_ends():
    n, window = 12, 4
    symmetric = sliding_window(window).dense(n, n)
    causal_window = sliding_window(window, causal=True).dense(n, n)
    assert symmetric[2:-2].sum(dim=1).tolist() == [window] * (n - 4)  # offsets -1..2
    assert causal_window.sum(dim=1).tolist() == [min(i + 1, window) for i in range(n)]


@pytest.mark.parametrize("window, dilation", [(1, 3), (3, 2), (4, 2), (2, 3), (5, 1)])
@pytest.mark.parametrize("is_causal", [False, True])
def test_dilated_window(window, dilation, is_causal):
    n = 11
    expected = loop_dense(lambda i, j: j in window_keys(i, window, dilation, is_causal), n, n)
    assert torch.equal(dilated_window(window, dilation, causal=is_causal).dense(n, n), expected)


def test_dilated_window_with_dilation_one_is_sliding_window():
    for window in range(1, 7):
        for is_causal in (False, True):
            dense = dilated_window(window, 1, causal=is_causal).dense(8, 8)
            assert torch.equal(dense, sliding_window(window, causal=is_causal).dense(8, 8))


@pytest.mark.parametrize("block_size, global_tokens", [(3, (0,)), (2, ()), (4, (0, 5)), (1, (2,))])
def test_block_sparse(block_size, global_tokens):
    n = 10

    def allowed(i, j):
        return i // block_size == j // block_size or i in global_tokens or j in global_tokens

    assert torch.equal(block_sparse(block_size, global_tokens).dense(n, n), loop_dense(allowed, n, n))


@pytest.mark.parametrize("window, dilation", [(1, 1), (2, 1), (3, 1), (4, 1), (6, 1), (3, 2), (5, 3)])
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_window_matches_conv_same_receptive_field(window, dilation):
    """Query i sees key j exactly when Conv1d(kernel_size=window, padding='same') output i reads input j."""
    n = 13
    weight = torch.ones(1, 1, window)
    eye = torch.eye(n)[:, None, :]  # (key, channel=1, length): one-hot input at each key position
    reads = F.conv1d(eye, weight, padding="same", dilation=dilation)[:, 0, :] != 0  # (key, query)
    assert torch.equal(dilated_window(window, dilation).dense(n, n), reads.T)


def test_causal_window_matches_left_padded_conv():
    n, window = 10, 3
    eye = torch.eye(n)[:, None, :]  # (key, 1, length)
    reads = F.conv1d(F.pad(eye, (window - 1, 0)), torch.ones(1, 1, window))[:, 0, :] != 0  # (key, query)
    assert torch.equal(sliding_window(window, causal=True).dense(n, n), reads.T)


def test_call_on_ints_returns_bool_and_agrees_with_dense():
    masks = [causal(), full(), sliding_window(3), dilated_window(3, 2, causal=True), block_sparse(2, (1,)),
             causal() & sliding_window(2), from_callable(lambda q, k: (q + k) % 3 == 0)]
    for mask in masks:
        dense = mask.dense(6, 6)
        for i in range(6):
            for j in range(6):
                value = mask(i, j)
                assert isinstance(value, bool), mask
                assert value == bool(dense[i, j]), (mask, i, j)


def test_combinators():
    a, b = sliding_window(5), causal()
    c = block_sparse(3, ())
    assert torch.equal((a & b).dense(8, 8), a.dense(8, 8) & b.dense(8, 8))
    assert torch.equal((a | c).dense(8, 8), a.dense(8, 8) | c.dense(8, 8))
    assert torch.equal(((a & b) | c).dense(8, 8), (a.dense(8, 8) & b.dense(8, 8)) | c.dense(8, 8))
    assert torch.equal((a & b).dense(8, 8), sliding_window(3, causal=True).dense(8, 8))  # offsets -2..0


def test_combinators_reject_non_masks():
    with pytest.raises(TypeError):
        causal() & True  # noqa: B018


def test_from_callable():
    mask = from_callable(lambda q, k: (k <= q) & ((q - k) % 2 == 0))
    assert torch.equal(mask.dense(7, 7), loop_dense(lambda i, j: j <= i and (i - j) % 2 == 0, 7, 7))


def test_from_callable_returning_non_bool_raises():
    with pytest.raises(TypeError, match="must return bool"):
        from_callable(lambda q, k: q - k).dense(3, 3)
    with pytest.raises(TypeError, match="fn must be callable"):
        from_callable(3)


def test_repr_is_readable():
    assert repr(causal()) == "causal()"
    assert repr(sliding_window(4, causal=True)) == "sliding_window(window=4, causal=True)"
    assert repr(causal() & block_sparse(2)) == "(causal() & block_sparse(block_size=2, global_tokens=(0,)))"
    assert repr(dilated_window(3, 2) | full()) == "(dilated_window(window=3, dilation=2, causal=False) | full())"

    def local(q, k):
        return k <= q

    assert "local" in repr(from_callable(local))


def test_masks_are_frozen_with_parameter_fields():
    mask = sliding_window(4, causal=True)
    assert (mask.window, mask.causal) == (4, True)
    assert mask == sliding_window(4, causal=True)
    assert len({mask, sliding_window(4, causal=True)}) == 1  # hashable, equal by value
    with pytest.raises(dataclasses.FrozenInstanceError):
        mask.window = 3
    assert isinstance(mask, Mask)


@pytest.mark.parametrize("factory, name", [
    (lambda: sliding_window(0), "window"),
    (lambda: dilated_window(3, 0), "dilation"),
    (lambda: dilated_window(-1, 2), "window"),
    (lambda: block_sparse(0), "block_size"),
    (lambda: block_sparse(2, (-1,)), "global_tokens"),
    (lambda: causal().dense(0, 3), "n_query"),
])
def test_invalid_values_raise_value_error(factory, name):
    with pytest.raises(ValueError, match=name):
        factory()


@pytest.mark.parametrize("factory, name", [
    (lambda: sliding_window(2.0), "window"),
    (lambda: sliding_window(2, causal=1), "causal"),
    (lambda: block_sparse(2, [0, "a"]), "global_tokens"),
    (lambda: block_sparse(True), "block_size"),
])
def test_invalid_types_raise_type_error(factory, name):
    with pytest.raises(TypeError, match=name):
        factory()


def test_dense_device():
    assert sliding_window(3).dense(4, 4, device="cpu").device == torch.device("cpu")


def test_band_of_reads_the_fields_a_fused_kernel_takes():
    """(causal, window) for the masks the fused kernel expresses; None for the rest (then it must not be used).
    The band reproduces the dense mask exactly: rebuilt from (causal, window) with this module's own factories."""
    from explorer.masks import band_of, block_sparse, dilated_window

    for mask in (None, full(), causal(), sliding_window(5), sliding_window(6), sliding_window(4, causal=True)):
        is_causal, window = band_of(mask)
        rebuilt = sliding_window(window, causal=is_causal) if window else (causal() if is_causal else full())
        expected = full() if mask is None else mask
        assert torch.equal(rebuilt.dense(23, 23), expected.dense(23, 23))
    for mask in (dilated_window(3, 2), block_sparse(4), causal() & sliding_window(3), causal() | full()):
        assert band_of(mask) is None
