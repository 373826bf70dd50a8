"""A plain stack of convolutions (optionally pooled), the model the receptive-field lesson builds."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, Union

import torch
from torch import nn

from explorer._checks import check_choice, check_int, check_type
from explorer.layers import AvgPool2d, Conv2d, MaxPool2d

__all__ = ["ConvStackConfig", "build_conv_stack"]

Dilation = Union[int, Literal["doubling"]]


@dataclass(frozen=True)
class ConvStackConfig:
    """What the student chooses. Every conv keeps the spatial size at stride 1 ("same" padding)."""

    layers: int = 4                      # number of conv layers, 1..16
    kernel_size: int = 3                 # k x k kernels, 1..15
    stride: int = 1                      # stride of every conv, 1..4
    dilation: Dilation = 1               # dilation of every conv, 1..8, or "doubling": 1, 2, 4, ... per layer
    pool: Literal["none", "max", "avg"] = "none"  # 2x2 stride-2 pooling ...
    pool_every: int = 1                  # ... after every `pool_every`-th conv, 1..16
    channels: int = 4                    # width of every conv, 1..64 (input has 3 channels)
    activation: Literal["relu", "none"] = "relu"
    weights: Literal["random", "uniform"] = "random"  # torch's default init (seeded) or all-equal kernels
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low, high in (("layers", 1, 16), ("kernel_size", 1, 15), ("stride", 1, 4),
                                ("pool_every", 1, 16), ("channels", 1, 64)):
            check_int(name, getattr(self, name), low, high)
        if self.dilation != "doubling":
            check_int("dilation", self.dilation, 1, 8, note="or 'doubling': 1, 2, 4, ... per layer")
        for name, allowed in (("pool", ("none", "max", "avg")), ("activation", ("relu", "none")),
                              ("weights", ("random", "uniform"))):
            check_choice(name, getattr(self, name), allowed)

    def dilation_of(self, layer: int) -> int:
        """Dilation of conv number ``layer`` (0-based)."""
        return 2 ** layer if self.dilation == "doubling" else int(self.dilation)


def build_conv_stack(config: ConvStackConfig, in_channels: int = 3) -> nn.Sequential:
    """Build the stack as an ``nn.Sequential`` of explorer layers.

    Module names are ``conv{i}``, ``act{i}`` and ``pool{i}`` (i counts convs from 1), so receptive-field
    rows and recorded hook points read ``conv1``, ``pool2.hook_out`` ...
    """
    check_type("config", config, ConvStackConfig, "a ConvStackConfig")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed)
    try:
        modules: dict[str, nn.Module] = {}
        channels = in_channels
        for i in range(config.layers):
            dilation = config.dilation_of(i)
            conv = Conv2d(channels, config.channels, config.kernel_size, stride=config.stride,
                          padding=dilation * (config.kernel_size - 1) // 2, dilation=dilation)
            if config.weights == "uniform":
                with torch.no_grad():
                    conv.weight.fill_(1.0 / (channels * config.kernel_size ** 2))
                    conv.bias.zero_()
            modules[f"conv{i + 1}"] = conv
            if config.activation == "relu":
                modules[f"act{i + 1}"] = nn.ReLU()
            if config.pool != "none" and (i + 1) % config.pool_every == 0:
                pool_cls = MaxPool2d if config.pool == "max" else AvgPool2d
                modules[f"pool{i + 1}"] = pool_cls(2, 2)
            channels = config.channels
    finally:
        torch.random.set_rng_state(generator_state)
    return nn.Sequential(OrderedDict(modules)).eval()
