"""The fused kernel, its reference and the masks read one window: keys per query counted three independent ways.

With ``q = 0`` every score is 0, so a query's log-sum-exp is ``log(number of keys it may attend to)``: the count
comes out of the attention computation itself, not out of a re-derivation of the band.
"""

import math

import pytest
import torch

from explorer.kernels import attention_reference, attention_stats_chunked, fused_attention
from explorer.kernels.reference import band_offsets
from explorer.masks import sliding_window

WINDOWS = [1, 2, 3, 4, 5, 8, 9, 16, 128]
LENGTHS = [1, 2, 3, 7, 16, 33, 130]


def closed_form_keys(n, window, is_causal):
    """LongTensor [query]: keys per query from the documented convention (see explorer.masks)."""
    if window is None:
        return torch.tensor([i + 1 if is_causal else n for i in range(n)])
    if is_causal:
        return torch.tensor([min(i + 1, window) for i in range(n)])
    before, after = (window - 1) // 2, window // 2
    return torch.tensor([min(i, before) + 1 + min(n - 1 - i, after) for i in range(n)])


def keys_from_lse(lse):
    """Keys per query from a log-sum-exp of all-zero scores; rounded (fp32 exp/log)."""
    return torch.exp(lse.double()).round().long()


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("window", [None] + WINDOWS)
def test_reference_band_and_its_attention_match_the_mask_and_the_closed_form(window, is_causal):
    for n in LENGTHS:
        expected = closed_form_keys(n, window, is_causal)
        lo, hi, has_band = band_offsets(n, n, is_causal, window)
        offset = torch.arange(n)[None, :] - torch.arange(n)[:, None]  # (query, key)
        assert torch.equal(((offset >= lo) & (offset <= hi)).sum(dim=1), expected), (window, is_causal, n)
        assert has_band == (window is not None or is_causal)
        if window is not None:
            assert torch.equal(sliding_window(window, causal=is_causal).dense(n, n).sum(dim=1), expected)
        q = torch.zeros(1, 1, n, 8, dtype=torch.float64)
        v = torch.randn(1, 1, n, 8, dtype=torch.float64)
        result = attention_reference(q, q, v, causal=is_causal, window=window)
        assert torch.equal(keys_from_lse(result.lse[0, 0]), expected), (window, is_causal, n)
        chunked = attention_stats_chunked(q, q, v, causal=is_causal, window=window, chunk=16)
        assert torch.equal(keys_from_lse(chunked.lse[0, 0]), expected), (window, is_causal, n)


# The Triton kernel (interpreter on CPU, compiled on CUDA): a few lengths around its 64-key tiles, and the window
# of 128 whose centred form once drifted to 129 keys.
TRITON_CASES = [(n, w, c) for n, w in [(7, 3), (7, 4), (65, 8), (70, 1), (130, 16), (300, 128)] for c in (False, True)]
TRITON_CASES += [(65, None, False), (65, None, True)]


@pytest.mark.parametrize("n, window, is_causal", TRITON_CASES)
def test_triton_kernel_sees_the_same_keys(n, window, is_causal):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    q = torch.zeros(1, 1, n, 16, device=device)
    v = torch.randn(1, 1, n, 16, device=device)
    result = fused_attention(q, q, v, causal=is_causal, window=window, backend="triton")
    expected = closed_form_keys(n, window, is_causal)
    assert torch.equal(keys_from_lse(result.lse[0, 0].cpu()), expected)
    assert math.isclose(float(result.lse[0, 0, -1]), math.log(int(expected[-1])), rel_tol=1e-6)  # fp32 lse
