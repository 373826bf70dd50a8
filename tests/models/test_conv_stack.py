import pytest
import torch
import torch.nn.functional as F

from explorer.layers import Conv2d, MaxPool2d
from explorer.models import ConvStackConfig, build_conv_stack


def test_layers_and_names():
    model = build_conv_stack(ConvStackConfig(layers=3, pool="max", pool_every=2, dilation="doubling"))
    assert list(dict(model.named_children())) == ["conv1", "act1", "conv2", "act2", "pool2", "conv3", "act3"]
    assert [m.dilation[0] for m in model if isinstance(m, Conv2d)] == [1, 2, 4]
    assert isinstance(model.pool2, MaxPool2d) and not model.training


def test_same_padding_keeps_size_and_stride_divides_it():
    x = torch.randn(1, 3, 32, 48)
    assert build_conv_stack(ConvStackConfig(layers=3, kernel_size=5, dilation=2))(x).shape == (1, 4, 32, 48)
    assert build_conv_stack(ConvStackConfig(layers=2, stride=2))(x).shape == (1, 4, 8, 12)


def test_uniform_weights_average_the_window():
    model = build_conv_stack(ConvStackConfig(layers=1, kernel_size=3, weights="uniform", activation="none"))
    x = torch.randn(1, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    # independent reference: a 3x3 box filter of the channel sum, divided by 27
    expected = F.conv2d(x.sum(1, keepdim=True), torch.ones(1, 1, 3, 3), padding=1) / 27
    torch.testing.assert_close(model(x)[:, :1], expected, atol=1e-6, rtol=0)  # fp32


def test_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = build_conv_stack(ConvStackConfig(seed=1)), build_conv_stack(ConvStackConfig(seed=1))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, build_conv_stack(ConvStackConfig(seed=2)).conv1.weight)


@pytest.mark.parametrize("kwargs, error, word", [
    ({"layers": 0}, ValueError, "layers"),
    ({"kernel_size": 16}, ValueError, "kernel_size"),
    ({"stride": 1.5}, TypeError, "stride"),
    ({"dilation": 9}, ValueError, "dilation"),
    ({"dilation": "tripling"}, TypeError, "dilation"),
    ({"pool": "min"}, ValueError, "pool"),
    ({"weights": "zeros"}, ValueError, "weights"),
    ({"channels": True}, TypeError, "channels"),
])
def test_bad_config(kwargs, error, word):
    with pytest.raises(error, match=word):
        ConvStackConfig(**kwargs)
