"""Masks: dense renderings vs loops written from the documented definitions, combinators, the conv analogy."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from explorer.analysis.cost import sliding_window_pairs
from explorer.masks import (
    Band,
    Full,
    Mask,
    SlidingWindow,
    band_of,
    block_sparse,
    causal,
    dilated_window,
    from_callable,
    full,
    sliding_window,
    window_offsets,
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
    for mask in (None, full(), causal(), sliding_window(5), sliding_window(6), sliding_window(4, causal=True)):
        is_causal, window = band_of(mask)
        rebuilt = sliding_window(window, causal=is_causal) if window else (causal() if is_causal else full())
        expected = full() if mask is None else mask
        assert torch.equal(rebuilt.dense(23, 23), expected.dense(23, 23))
    for mask in (dilated_window(3, 2), block_sparse(4), causal() & sliding_window(3), causal() | full()):
        assert band_of(mask) is None


# --- bands: every mask answers for its own window ------------------------------------------------------------------

WINDOWS = [1, 2, 3, 4, 5, 8, 9, 16, 128]
LENGTHS = [1, 2, 3, 7, 16, 33, 130]


def closed_form_keys(i, n, window, is_causal):
    """Keys query i sees in a sequence of n, from the documented convention: the causal window is the query and the
    window - 1 keys before it; the centred one has (window - 1) // 2 keys before and window // 2 after."""
    if is_causal:
        return min(i + 1, window)
    before, after = (window - 1) // 2, window // 2
    return min(i, before) + 1 + min(n - 1 - i, after)


def band_dense(band, n_query, n_key):
    """BoolTensor [query, key]: True where ``key - query`` lies in the band, built from the offsets alone."""
    offset = torch.arange(n_key)[None, :] - torch.arange(n_query)[:, None]  # (query, key): key - query
    inside = offset % band.step == 0
    if band.low is not None:
        inside &= offset >= band.low
    if band.high is not None:
        inside &= offset <= band.high
    return inside


def keys_in_band(band, n):
    """LongTensor [query]: how many keys of 0..n-1 lie in the band of each query."""
    return band_dense(band, n, n).sum(dim=1)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("window", WINDOWS)
def test_keys_per_query_dense_band_and_closed_form_agree(window, is_causal):
    low, high = window_offsets(window, is_causal)
    assert high - low + 1 == window and low <= 0 <= high
    mask = sliding_window(window, causal=is_causal)
    for n in LENGTHS:
        expected = torch.tensor([closed_form_keys(i, n, window, is_causal) for i in range(n)])
        assert torch.equal(mask.dense(n, n).sum(dim=1), expected), (window, is_causal, n)
        assert torch.equal(keys_in_band(mask.band(), n), expected), (window, is_causal, n)
        if window <= n and not is_causal:  # the cost model's pair count (explorer.analysis.cost), exact integers
            assert int(expected.sum()) == sliding_window_pairs(n, window), (window, n)
        if n >= window:  # away from the ends a query sees exactly `window` keys
            assert int(expected.max()) == window


def test_band_reproduces_the_dense_mask():
    masks = [full(), causal(), sliding_window(1), sliding_window(6), sliding_window(5, causal=True),
             dilated_window(3, 2), dilated_window(4, 3), dilated_window(3, 2, causal=True), dilated_window(5, 1)]
    for mask in masks:
        band = mask.band()
        assert isinstance(band, Band)
        for n_query, n_key in [(1, 1), (9, 9), (6, 11), (11, 6)]:
            assert torch.equal(band_dense(band, n_query, n_key), mask.dense(n_query, n_key)), (mask, n_query, n_key)
    assert full().band() == Band(None, None, 1)
    assert causal().band() == Band(None, 0, 1)
    assert sliding_window(4).band() == Band(-1, 2, 1)
    assert sliding_window(4, causal=True).band() == Band(-3, 0, 1)
    assert dilated_window(3, 2).band() == Band(-2, 2, 2)


def test_masks_without_a_band_say_so():
    masks = [block_sparse(4), block_sparse(4, ()), from_callable(lambda q, k: q == k), causal() & sliding_window(3),
             causal() | full()]
    for mask in masks:
        assert mask.band() is None and mask.kernel_band() is None and not mask.fused_support


class _Shifted(SlidingWindow):
    """A subclass that changes the rule: it must not inherit the parent's band or kernel support."""

    def __call__(self, query, key):
        return super().__call__(query, key - 1)


class _Relabelled(Full):
    """A subclass that keeps the rule but does not declare a band: it gets none (every class answers for itself)."""


def test_fused_support_is_true_exactly_for_full_causal_and_sliding_window():
    supported = [full(), causal(), sliding_window(1), sliding_window(4), sliding_window(4, causal=True)]
    others = [dilated_window(3, 1), dilated_window(3, 2), block_sparse(2), from_callable(lambda q, k: q >= k),
              causal() & full(), full() | causal(), _Shifted(3), _Relabelled()]
    for mask in supported:
        assert mask.fused_support, mask
    for mask in others:
        assert not mask.fused_support, mask
        assert mask.kernel_band() is None, mask
    assert _Shifted(3).band() is None  # its parent's band would be wrong for it
    assert not torch.equal(_Shifted(3).dense(5, 5), sliding_window(3).dense(5, 5))


def test_band_of_is_the_masks_own_answer():
    expected = [(full(), (False, None)), (causal(), (True, None)), (sliding_window(5), (False, 5)),
                (sliding_window(6), (False, 6)), (sliding_window(4, causal=True), (True, 4)),
                (dilated_window(3, 2), None), (block_sparse(4), None), (causal() & sliding_window(3), None),
                (_Shifted(3), None)]
    for mask, answer in expected:
        assert band_of(mask) == mask.kernel_band() == answer, mask
    assert full().kernel_band() == (False, None)
    assert causal().kernel_band() == (True, None)
    assert sliding_window(6, causal=True).kernel_band() == (True, 6)
    assert band_of(None) == (False, None)  # no mask
    assert band_of(torch.ones(3, 3, dtype=torch.bool)) is None  # a dense matrix: the fused kernel cannot take it


@pytest.mark.parametrize("window, is_causal, error", [(0, False, ValueError), (2.0, False, TypeError),
                                                      (True, False, TypeError), (3, 1, TypeError)])
def test_window_offsets_checks_its_arguments(window, is_causal, error):
    with pytest.raises(error, match="window" if window != 3 else "causal"):
        window_offsets(window, is_causal)
