"""Property tests: random invalid arguments raise errors that name the argument; random valid ones match torch."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from explorer.layers import (
    AvgPool1d,
    AvgPool2d,
    Conv1d,
    Conv2d,
    LinearAttention,
    MaxPool1d,
    MaxPool2d,
    MultiheadAttention,
)
from explorer.masks import block_sparse, dilated_window, sliding_window

SETTINGS = settings(max_examples=40, deadline=None)

non_positive = st.integers(max_value=0)
negative = st.integers(max_value=-1)
not_an_int = st.one_of(st.floats(allow_nan=False), st.text(max_size=3), st.booleans())

WINDOWED = {
    "Conv1d": lambda **kw: Conv1d(2, 2, **kw),
    "Conv2d": lambda **kw: Conv2d(2, 2, **kw),
    "MaxPool1d": lambda **kw: MaxPool1d(**kw),
    "MaxPool2d": lambda **kw: MaxPool2d(**kw),
    "AvgPool1d": lambda **kw: AvgPool1d(**kw),
    "AvgPool2d": lambda **kw: AvgPool2d(**kw),
}
DILATED = ["Conv1d", "Conv2d", "MaxPool1d", "MaxPool2d"]


# --- invalid arguments ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", list(WINDOWED))
@SETTINGS
@given(value=non_positive)
def test_kernel_size_below_one(layer, value):
    with pytest.raises(ValueError, match="kernel_size must be an int >= 1"):
        WINDOWED[layer](kernel_size=value)


@pytest.mark.parametrize("layer", list(WINDOWED))
@SETTINGS
@given(value=non_positive)
def test_stride_below_one(layer, value):
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        WINDOWED[layer](kernel_size=3, stride=value)


@pytest.mark.parametrize("layer", DILATED)
@SETTINGS
@given(value=non_positive)
def test_dilation_below_one(layer, value):
    with pytest.raises(ValueError, match="dilation must be an int >= 1"):
        WINDOWED[layer](kernel_size=3, dilation=value)


@pytest.mark.parametrize("layer", list(WINDOWED))
@SETTINGS
@given(value=negative)
def test_negative_padding(layer, value):
    with pytest.raises(ValueError, match="padding must be an int >= 0"):
        WINDOWED[layer](kernel_size=3, padding=value)


@pytest.mark.parametrize("layer", ["MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d"])
@SETTINGS
@given(kernel_size=st.integers(1, 6), extra=st.integers(1, 5))
def test_pool_padding_above_half_kernel(layer, kernel_size, extra):
    with pytest.raises(ValueError, match="padding must be at most half of"):
        WINDOWED[layer](kernel_size=kernel_size, padding=kernel_size // 2 + extra)


@pytest.mark.parametrize("layer", list(WINDOWED))
@pytest.mark.parametrize("argument", ["kernel_size", "stride", "padding"])
@SETTINGS
@given(value=not_an_int)
def test_non_int_types(layer, argument, value):
    kwargs = {"kernel_size": 3, argument: value}
    # a conv accepts the strings "same" / "valid" for padding, so another string is a bad value, not a bad type
    error = ValueError if argument == "padding" and isinstance(value, str) and layer.startswith("Conv") else TypeError
    with pytest.raises(error, match=argument):
        WINDOWED[layer](**kwargs)


@pytest.mark.parametrize("layer", ["Conv2d", "MaxPool2d", "AvgPool2d"])
@SETTINGS
@given(size=st.integers(0, 5).filter(lambda n: n != 2))
def test_wrong_tuple_length(layer, size):
    with pytest.raises(ValueError, match="kernel_size must be an int >= 1 or a tuple of 2"):
        WINDOWED[layer](kernel_size=(3,) * size)


@pytest.mark.parametrize("conv", [Conv1d, Conv2d])
@SETTINGS
@given(in_channels=non_positive | st.integers(1, 8), out_channels=non_positive | st.integers(1, 8))
def test_conv_channels(conv, in_channels, out_channels):
    assume(in_channels < 1 or out_channels < 1)
    name = "in_channels" if in_channels < 1 else "out_channels"
    with pytest.raises(ValueError, match=f"{name} must be an int >= 1"):
        conv(in_channels, out_channels, 3)


@pytest.mark.parametrize("conv", [Conv1d, Conv2d])
@SETTINGS
@given(groups=st.integers(2, 6), in_groups=st.integers(1, 4), remainder=st.integers(1, 5))
def test_conv_channels_not_divisible_by_groups(conv, groups, in_groups, remainder):
    assume(remainder < groups)
    in_channels = groups * in_groups + remainder
    with pytest.raises(ValueError, match=rf"in_channels \({in_channels}\) must be divisible by groups \({groups}\)"):
        conv(in_channels, groups, 3, groups=groups)
    with pytest.raises(ValueError, match=rf"out_channels \({in_channels}\) must be divisible by groups"):
        conv(groups, in_channels, 3, groups=groups)


@SETTINGS
@given(window=non_positive, dilation=st.integers(1, 4), block_size=non_positive)
def test_mask_arguments_below_one(window, dilation, block_size):
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        sliding_window(window)
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        dilated_window(window, dilation)
    with pytest.raises(ValueError, match="dilation must be an int >= 1"):
        dilated_window(dilation, window)  # window >= 1 here, dilation <= 0
    with pytest.raises(ValueError, match="block_size must be an int >= 1"):
        block_sparse(block_size)


@SETTINGS
@given(value=not_an_int)
def test_mask_arguments_not_int(value):
    with pytest.raises(TypeError, match="window"):
        sliding_window(value)
    with pytest.raises(TypeError, match="dilation"):
        dilated_window(3, value)
    with pytest.raises(TypeError, match="block_size"):
        block_sparse(value)


@pytest.mark.parametrize("layer", [MultiheadAttention, LinearAttention])
@SETTINGS
@given(embed_dim=st.integers(1, 64), num_heads=st.integers(-3, 16))
def test_attention_heads(layer, embed_dim, num_heads):
    if num_heads < 1:
        with pytest.raises(ValueError, match="num_heads must be an int >= 1"):
            layer(embed_dim, num_heads)
    elif embed_dim % num_heads:
        message = rf"embed_dim \({embed_dim}\) must be divisible by num_heads \({num_heads}\)"
        with pytest.raises(ValueError, match=message):
            layer(embed_dim, num_heads)
    else:
        assert layer(embed_dim, num_heads).head_dim == embed_dim // num_heads


@SETTINGS
@given(n_query=st.integers(1, 5), n_key=st.integers(1, 5), wrong=st.integers(1, 5))
def test_attention_key_padding_mask_shape(n_query, n_key, wrong):
    assume(wrong != n_key)
    layer = MultiheadAttention(8, 2)
    query, key = torch.randn(2, n_query, 8), torch.randn(2, n_key, 8)
    with pytest.raises(ValueError, match=rf"key_padding_mask must have shape \(batch, key\) = \(2, {n_key}\)"):
        layer(query, key, key_padding_mask=torch.zeros(2, wrong, dtype=torch.bool))


# --- random valid arguments: parity with torch ---------------------------------------------------------------

@SETTINGS
@given(
    in_groups=st.integers(1, 3), out_groups=st.integers(1, 3), groups=st.integers(1, 3),
    kernel_size=st.integers(1, 5), stride=st.integers(1, 3), padding=st.integers(0, 3),
    dilation=st.integers(1, 3), length=st.integers(1, 20),
)
def test_conv1d_parity(in_groups, out_groups, groups, kernel_size, stride, padding, dilation, length):
    assume(length + 2 * padding >= dilation * (kernel_size - 1) + 1)
    conv = Conv1d(in_groups * groups, out_groups * groups, kernel_size, stride, padding, dilation, groups)
    x = torch.randn(2, in_groups * groups, length)
    expected = F.conv1d(x, conv.weight, conv.bias, stride, padding, dilation, groups)
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)  # fp32


@SETTINGS
@given(
    kernel_size=st.tuples(st.integers(1, 4), st.integers(1, 4)), stride=st.integers(1, 3),
    dilation=st.integers(1, 2), height=st.integers(4, 12), width=st.integers(4, 12), same=st.booleans(),
)
def test_conv2d_parity(kernel_size, stride, dilation, height, width, same):
    padding = "same" if same else 1
    stride = 1 if same else stride
    assume(same or all(n + 2 >= dilation * (k - 1) + 1 for n, k in zip((height, width), kernel_size)))
    conv = Conv2d(3, 4, kernel_size, stride, padding, dilation)
    x = torch.randn(2, 3, height, width)
    expected = F.conv2d(x, conv.weight, conv.bias, stride, padding, dilation)
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)  # fp32


@SETTINGS
@given(
    kernel_size=st.integers(1, 4), stride=st.integers(1, 3), pad_fraction=st.floats(0, 1),
    dilation=st.integers(1, 2), size=st.integers(8, 14), ceil_mode=st.booleans(),
)
def test_pool2d_parity(kernel_size, stride, pad_fraction, dilation, size, ceil_mode):
    padding = int(pad_fraction * (kernel_size // 2))
    x = torch.randn(2, 3, size, size)
    max_pool = MaxPool2d(kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)
    avg_pool = AvgPool2d(kernel_size, stride, padding, ceil_mode=ceil_mode)
    expected_max = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)
    expected_avg = F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode=ceil_mode)
    torch.testing.assert_close(max_pool(x), expected_max, atol=1e-5, rtol=1e-5)  # fp32
    torch.testing.assert_close(avg_pool(x), expected_avg, atol=1e-5, rtol=1e-5)  # fp32


@SETTINGS
@given(
    batch=st.integers(1, 3), n_query=st.integers(1, 6), n_key=st.integers(1, 6), num_heads=st.integers(1, 4),
    head_dim=st.integers(1, 4), kdim=st.integers(1, 6), use_padding=st.booleans(),
    backend=st.sampled_from(["math", "sdpa"]),
)
def test_attention_parity(batch, n_query, n_key, num_heads, head_dim, kdim, use_padding, backend):
    embed_dim = num_heads * head_dim
    mha = nn.MultiheadAttention(embed_dim, num_heads, kdim=kdim, vdim=kdim, batch_first=True).eval()
    ours = MultiheadAttention.from_torch(mha, backend=backend)
    query, key = torch.randn(batch, n_query, embed_dim), torch.randn(batch, n_key, kdim)
    kpm = None
    if use_padding:  # pad the last key of every element except the first, keeping at least one key
        kpm = torch.zeros(batch, n_key, dtype=torch.bool)
        kpm[1:, -1] = n_key > 1
    expected, _ = mha(query, key, key, key_padding_mask=kpm)
    torch.testing.assert_close(ours(query, key, key_padding_mask=kpm), expected, atol=1e-5, rtol=1e-5)  # fp32


@SETTINGS
@given(window=st.integers(1, 7), dilation=st.integers(1, 3), is_causal=st.booleans(), n=st.integers(1, 12))
def test_dilated_window_matches_loop(window, dilation, is_causal, n):
    low, high = (-(window - 1), 0) if is_causal else (-((window - 1) // 2), window // 2)
    expected = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for m in range(low, high + 1):
            if 0 <= i + dilation * m < n:
                expected[i, i + dilation * m] = True
    assert torch.equal(dilated_window(window, dilation, causal=is_causal).dense(n, n), expected)
