"""Conv and pooling layers: parity with torch.nn.functional, geometry, hook points, input checks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer import record
from explorer.layers import AvgPool1d, AvgPool2d, Conv1d, Conv2d, Geometry, MaxPool1d, MaxPool2d

# (in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
CONV1D_CONFIGS = [
    (3, 4, 3, 1, 0, 1, 1),
    (4, 6, 5, 2, 2, 1, 2),
    (2, 4, 3, 1, "same", 2, 1),
    (4, 4, 4, 1, "same", 1, 4),
    (3, 5, 3, 3, 1, 2, 1),
    (2, 2, 2, 1, "valid", 1, 1),
]

CONV2D_CONFIGS = [
    (3, 4, 3, 1, 0, 1, 1),
    (4, 6, (3, 5), (2, 1), (1, 2), 1, 2),
    (2, 4, 3, 1, "same", (2, 1), 1),
    (4, 8, 4, 1, "same", 1, 4),
    (3, 6, (2, 3), 2, 1, (1, 2), 3),
]


@pytest.mark.parametrize("config", CONV1D_CONFIGS)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_conv1d_matches_functional(config):
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups = config
    conv = Conv1d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
    x = torch.randn(2, in_channels, 17)
    expected = F.conv1d(x, conv.weight, conv.bias, stride, padding, dilation, groups)
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)  # fp32


@pytest.mark.parametrize("config", CONV2D_CONFIGS)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_conv2d_matches_functional(config):
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups = config
    conv = Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
    x = torch.randn(2, in_channels, 13, 11)
    expected = F.conv2d(x, conv.weight, conv.bias, stride, padding, dilation, groups)
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)  # fp32


def test_conv2d_reflect_padding_matches_explicit_pad():
    conv = Conv2d(3, 4, 3, padding=2, padding_mode="reflect", bias=False)
    x = torch.randn(2, 3, 9, 10)
    expected = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), conv.weight)
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)  # fp32


def test_conv_loads_torch_state_dict():
    reference = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    conv = Conv2d(3, 5, 3, stride=2, padding=1)
    conv.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 12, 12)
    torch.testing.assert_close(conv(x), reference(x), atol=0.0, rtol=0.0)  # same kernel, same numbers


@pytest.mark.parametrize(
    "kernel_size, stride, padding, dilation, ceil_mode",
    [(2, None, 0, 1, False), (3, 2, 1, 1, True), (3, 1, 1, 2, False), (4, 3, 2, 1, True)],
)
def test_max_pool_matches_functional(kernel_size, stride, padding, dilation, ceil_mode):
    x1 = torch.randn(2, 3, 19)
    pool1 = MaxPool1d(kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)
    expected1 = F.max_pool1d(x1, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)
    torch.testing.assert_close(pool1(x1), expected1, atol=1e-5, rtol=1e-5)  # fp32

    x2 = torch.randn(2, 3, 15, 14)
    pool2 = MaxPool2d(kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)
    expected2 = F.max_pool2d(x2, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)
    torch.testing.assert_close(pool2(x2), expected2, atol=1e-5, rtol=1e-5)  # fp32


def test_max_pool_return_indices():
    pool = MaxPool2d(2, return_indices=True)
    x = torch.randn(1, 2, 6, 6)
    with record(pool) as trace:
        values, indices = pool(x)
    expected_values, expected_indices = F.max_pool2d(x, 2, return_indices=True)
    torch.testing.assert_close(values, expected_values, atol=0.0, rtol=0.0)  # same kernel
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(trace["hook_out"], expected_values, atol=0.0, rtol=0.0)  # identity hook


@pytest.mark.parametrize(
    "kernel_size, stride, padding, ceil_mode, count_include_pad",
    [(2, None, 0, False, True), (3, 2, 1, True, False), (3, 1, 1, False, True), (4, 3, 2, True, False)],
)
def test_avg_pool_matches_functional(kernel_size, stride, padding, ceil_mode, count_include_pad):
    x1 = torch.randn(2, 3, 19)
    pool1 = AvgPool1d(kernel_size, stride, padding, ceil_mode, count_include_pad)
    expected1 = F.avg_pool1d(x1, kernel_size, stride, padding, ceil_mode, count_include_pad)
    torch.testing.assert_close(pool1(x1), expected1, atol=1e-5, rtol=1e-5)  # fp32

    x2 = torch.randn(2, 3, 15, 14)
    pool2 = AvgPool2d(kernel_size, stride, padding, ceil_mode, count_include_pad)
    expected2 = F.avg_pool2d(x2, kernel_size, stride, padding, ceil_mode, count_include_pad)
    torch.testing.assert_close(pool2(x2), expected2, atol=1e-5, rtol=1e-5)  # fp32


def test_avg_pool2d_divisor_override():
    pool = AvgPool2d(3, stride=1, divisor_override=2)
    x = torch.randn(1, 2, 7, 7)
    expected = F.avg_pool2d(x, 3, 1, divisor_override=2)
    torch.testing.assert_close(pool(x), expected, atol=1e-5, rtol=1e-5)  # fp32


@pytest.mark.parametrize(
    "layer, geometry",
    [
        (Conv2d(3, 4, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
         Geometry((3, 5), (2, 1), (1, 2), (1, 2))),
        (Conv1d(2, 2, 4, padding="same"), Geometry((4,), (1,), (1,), (1,))),  # total 3: 1 before, 2 after
        (Conv1d(2, 2, 4, padding="same", dilation=2), Geometry((4,), (1,), (3,), (2,))),  # total 6
        (Conv2d(2, 2, 3, padding="valid"), Geometry((3, 3), (1, 1), (0, 0), (1, 1))),
        (MaxPool2d(3), Geometry((3, 3), (3, 3), (0, 0), (1, 1))),  # stride defaults to kernel_size
        (MaxPool1d(3, 2, 1, dilation=2), Geometry((3,), (2,), (1,), (2,))),
        (AvgPool1d(4, 2, 1), Geometry((4,), (2,), (1,), (1,))),
        (AvgPool2d((2, 3), stride=(1, 2)), Geometry((2, 3), (1, 2), (0, 0), (1, 1))),
    ],
)
def test_geometry(layer, geometry):
    assert layer.geometry == geometry


def test_geometry_effective_kernel_predicts_output_size():
    conv = Conv1d(1, 1, 3, stride=2, padding=1, dilation=3)
    geometry = conv.geometry
    x = torch.randn(1, 1, 30)
    span = geometry.effective_kernel[0]  # 3 * (3 - 1) + 1 = 7
    expected_length = (30 + 2 * geometry.padding[0] - span) // geometry.stride[0] + 1
    assert span == 7
    assert conv(x).shape[-1] == expected_length


@pytest.mark.parametrize("layer, shape", [
    (Conv1d(3, 4, 3), (2, 3, 10)),
    (Conv2d(3, 4, 3, stride=2), (2, 3, 9, 8)),
    (MaxPool1d(2), (2, 3, 10)),
    (AvgPool2d(2), (2, 3, 8, 8)),
])
def test_hook_points_record_input_and_output(layer, shape):
    x = torch.randn(shape)
    with record(layer) as trace:
        y = layer(x)
    torch.testing.assert_close(trace["hook_in"], x, atol=0.0, rtol=0.0)  # identity
    torch.testing.assert_close(trace["hook_out"], y, atol=0.0, rtol=0.0)  # identity
    spatial = ("length",) if len(shape) == 3 else ("height", "width")
    assert trace.dims("hook_out") == ("batch", "channel", *spatial)


def test_forward_rejects_unbatched_input():
    with pytest.raises(ValueError, match=r"input must have shape \(batch, channel, length\)"):
        Conv1d(3, 4, 3)(torch.randn(3, 10))
    with pytest.raises(ValueError, match=r"input must have shape \(batch, channel, height, width\)"):
        MaxPool2d(2)(torch.randn(3, 8, 8))


def test_forward_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"input .*channel=3"):
        Conv2d(3, 4, 3)(torch.randn(1, 2, 8, 8))


def test_forward_rejects_too_small_input():
    with pytest.raises(ValueError, match="input is too small"):
        Conv1d(1, 1, 5, dilation=2)(torch.randn(1, 1, 8))  # span 9 > 8
    assert Conv1d(1, 1, 4, padding="same")(torch.randn(1, 1, 1)).shape == (1, 1, 1)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_forward_rejects_non_float_input(dtype):
    with pytest.raises(TypeError, match="input must be a floating-point tensor"):
        Conv1d(1, 1, 3)(torch.zeros(1, 1, 8, dtype=dtype))
    with pytest.raises(TypeError, match="input must be a floating-point tensor"):
        AvgPool1d(2)(torch.zeros(1, 1, 8, dtype=dtype))


def test_forward_rejects_dtype_different_from_weight():
    with pytest.raises(TypeError, match="input has dtype torch.float64"):
        Conv2d(1, 1, 3)(torch.zeros(1, 1, 8, 8, dtype=torch.float64))


def test_float64_layer_matches_functional():
    conv = Conv1d(2, 3, 3, dtype=torch.float64)
    x = torch.randn(1, 2, 9, dtype=torch.float64)
    expected = F.conv1d(x, conv.weight, conv.bias)
    torch.testing.assert_close(conv(x), expected, atol=1e-12, rtol=1e-12)  # fp64


def test_symbolic_trace_goes_through_layers_and_hook_points():
    """torch.fx sees torch's conv / pool calls (the receptive-field analysis reads them) and no hook points."""
    model = nn.Sequential(Conv2d(3, 4, 3, stride=2, padding=1), MaxPool2d(2), Conv2d(4, 4, 3, dilation=2), AvgPool2d(2))
    graph_module = torch.fx.symbolic_trace(model)
    targets = [node.target for node in graph_module.graph.nodes if node.op == "call_function"]
    assert len(targets) == 4
    assert not any(node.op == "call_module" for node in graph_module.graph.nodes)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(graph_module(x), model(x), atol=0.0, rtol=0.0)  # same ops, same numbers
