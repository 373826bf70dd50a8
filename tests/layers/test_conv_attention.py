"""Attention that is a convolution (Cordonnier et al. 2020): the layer built from an nn.Conv2d equals it.

Reference: torch's own ``nn.Conv2d`` forward on the same input. Tolerance: float64, atol 1e-12 (relative to outputs
of order 1-10): with the default sharpness 100 each head leaks exp(-100) = 3.7e-44 of its weight to the next key,
so only round-off separates the two.
"""

import math

import pytest
import torch
from torch import nn

from explorer.hooks import record
from explorer.layers import Conv2d
from explorer.layers.conv_attention import attention_from_conv

CASES = [  # (in, out, kernel, dilation, padding_mode, bias)
    (1, 1, 3, 1, "zeros", True),
    (3, 5, 3, 1, "zeros", False),
    (2, 4, 5, 1, "circular", True),
    (4, 2, (3, 5), 1, "reflect", True),
    (2, 3, 3, 2, "replicate", True),
    (3, 3, 1, 1, "zeros", True),
]


def _conv(cin, cout, kernel, dilation, mode, bias, seed=0):
    torch.manual_seed(seed)
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    padding = tuple(dilation * (x - 1) // 2 for x in k)
    return nn.Conv2d(cin, cout, k, padding=padding, dilation=dilation, padding_mode=mode, bias=bias,
                     dtype=torch.float64)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}to{c[1]}-k{c[2]}-d{c[3]}-{c[4]}-bias{c[5]}")
def test_equals_the_conv_on_random_inputs(case):
    conv = _conv(*case)
    layer = attention_from_conv(conv)
    k = conv.kernel_size
    assert layer.num_heads == k[0] * k[1]
    x = torch.randn(2, case[0], 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = conv(x), layer(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=0, atol=1e-12), float((got - expected).abs().max())


def test_explorer_conv_and_padding_same_are_accepted():
    torch.manual_seed(2)
    conv = Conv2d(2, 3, 3, padding=1, dtype=torch.float64)
    same = nn.Conv2d(2, 3, 3, padding="same", dtype=torch.float64)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        for c in (conv, same):
            assert torch.allclose(attention_from_conv(c)(x), c(x), rtol=0, atol=1e-12)


def test_each_head_is_a_one_hot_shift_by_its_tap():
    conv = _conv(1, 1, 3, 1, "zeros", True)
    layer = attention_from_conv(conv)
    h, w = 5, 6
    x = torch.randn(1, 1, h, w, dtype=torch.float64)
    with record(layer, "hook_pattern") as trace:
        layer(x)
    pattern = trace["hook_pattern"][0]  # (head, query, key)
    (ph, pw), width = layer.padding, w + 2 * layer.padding[1]
    for head, (dy, dx) in enumerate(layer.offsets):
        for q in range(h * w):
            r, c = divmod(q, w)
            key = (r + ph + dy) * width + (c + pw + dx)
            assert pattern[head, q, key] == 1.0  # the tap's pixel takes all the weight, in float64
            assert pattern[head, q].sum() - pattern[head, q, key] < 1e-40  # the rest: the leak, 4 exp(-100) or less


def test_a_soft_layer_is_not_the_conv_and_sharpness_closes_the_gap():
    conv = _conv(2, 2, 3, 1, "zeros", False)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        errors = [float((attention_from_conv(conv, s)(x) - conv(x)).abs().max()) for s in (0.5, 2.0, 8.0, 32.0)]
    assert errors[0] > 1e-2  # a soft positional attention blurs: not the conv
    assert all(b < a for a, b in zip(errors, errors[1:]))
    # closed form for the leak: the weight outside the tap is at most 4 * exp(-s) / (1 + 4 exp(-s)) per head
    assert errors[-1] < 10 * 9 * 4 * math.exp(-32.0) * float(x.abs().max()) * float(conv.weight.detach().abs().max())


@pytest.mark.parametrize("kwargs, name", [
    ({"stride": 2, "padding": 1}, "stride"),
    ({"groups": 2, "padding": 1}, "groups"),
    ({"kernel_size": 2, "padding": 0}, "kernel_size"),
    ({"padding": 0}, "padding"),
])
def test_convs_the_construction_does_not_cover_are_refused_by_name(kwargs, name):
    args = {"in_channels": 2, "out_channels": 2, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=f"conv.{name}"):
        attention_from_conv(nn.Conv2d(**args))


def test_bad_arguments():
    with pytest.raises(TypeError, match="conv"):
        attention_from_conv(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="sharpness"):
        attention_from_conv(nn.Conv2d(1, 1, 3, padding=1), sharpness=0)
    layer = attention_from_conv(nn.Conv2d(2, 1, 3, padding=1))
    with pytest.raises(ValueError, match="x must be"):
        layer(torch.zeros(1, 3, 4, 4))
    with pytest.raises(TypeError, match="x must be"):
        layer(torch.zeros(1, 2, 4, 4, dtype=torch.int64))
