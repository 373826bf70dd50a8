"""Three small sequence classifiers for the long-range lesson: a CNN, a dilated CNN and an attention model.

They read the one-hot sequences of :mod:`explorer.data.sequences` (``[batch, channel, length]``) and answer the
order task (logits ``[batch, 2]``). The two CNNs are the same network except for the dilations, so any difference
between them is the receptive field's; the attention model has about the same number of parameters
(:func:`parameter_counts`: 16 866, 16 866 and 16 418 with the defaults).

=================  ==========================================================================================
name               architecture (defaults)
=================  ==========================================================================================
``cnn``            :class:`SequenceCNN`: ``features`` = 1x1 conv stem (32 channels), 5 residual blocks
                   ``x + conv_k3(relu(x))`` with dilation 1, ReLU; global max pool over length; MLP head
                   (32 -> 32 -> 2). Receptive field 1 + 5 * 2 = 11 positions.
``dilated_cnn``    the same with dilations 1, 2, 4, 8, 16: receptive field 1 + 2 * 31 = 63 positions.
``attention``      :class:`SequenceAttention`: linear embedding (32) + fixed sinusoidal positions, 2 pre-norm
                   blocks (causal :class:`~explorer.layers.MultiheadAttention`, 2 heads; MLP 48), LayerNorm,
                   global max pool over length, the same MLP head.
=================  ==========================================================================================

The convolutions pad **circularly**: with zero padding a feature near either end of the sequence knows how far it
is from that end, which tells a CNN the order of a pair near an end without seeing both tokens (see
:mod:`explorer.data.sequences`). With circular padding and a global pool a CNN's prediction depends only on
the set of windows of ``r`` (its receptive field) consecutive positions, wherever they are.

The attention layers are **causal** (a query sees itself and the keys before it): then the later marked token can
look back at the earlier one and the mask itself says which came first. Without the mask, left and right would have
to be told apart from the sinusoidal positions alone (``causal=False`` builds that variant; it is not trained or
measured in this repository). The mask does not limit reach: every query sees every earlier key, whatever the
distance.

``features`` of the CNNs (``[batch, channel, length]`` in, the same out) is fx-traceable, so
``explorer.analysis.receptive_field(model.features, spatial_dims=1)`` measures the field from the graph.

Hook points (``explorer.record(model, "*.hook_pattern")``):

=================================  ===============================================================
``features.stem.hook_in/out``      ``[batch, channel, length]`` (CNNs; every conv has them)
``features.block{i}.conv.hook_*``  ``[batch, channel, length]``
``hook_tokens``                    ``[batch, query, embed]``: embedded tokens + positions (attention)
``blocks.{i}.attn.hook_pattern``   ``[batch, head, query, key]``, rows sum to 1; zero above the diagonal
``blocks.{i}.hook_resid_out``      ``[batch, query, embed]``
=================================  ===============================================================
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from explorer._checks import check_bool, check_choice, check_int

from explorer.data.sequences import LENGTH, channels
from explorer.hooks import HookPoint
from explorer.layers import Conv1d, MultiheadAttention
from explorer.masks import causal

__all__ = ["SEQUENCE_MODELS", "SequenceCNNConfig", "SequenceAttentionConfig", "ResidualConv1d", "SequenceCNN",
           "SequenceBlock", "SequenceAttention", "LayerStack", "build_sequence_model", "sinusoidal_positions",
           "parameter_counts"]

SEQUENCE_MODELS = ("cnn", "dilated_cnn", "attention")
PADDING_MODES = ("circular", "zeros")
POSITIONS = ("sinusoidal", "none")


@dataclass(frozen=True)
class SequenceCNNConfig:
    """Sizes of :class:`SequenceCNN`. ``dilations``: one residual block per entry (its conv's dilation)."""

    in_channels: int = channels()
    channels: int = 32
    kernel_size: int = 3
    dilations: tuple[int, ...] = (1, 1, 1, 1, 1)
    padding_mode: str = "circular"
    hidden: int = 32
    num_classes: int = 2

    def __post_init__(self) -> None:
        for name in ("in_channels", "channels", "hidden"):
            check_int(name, getattr(self, name), 1)
        check_int("num_classes", self.num_classes, 2)
        check_int("kernel_size", self.kernel_size, 1)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centred window keeps the length), got {self.kernel_size}")
        if not isinstance(self.dilations, tuple) or not self.dilations:
            raise TypeError(f"dilations must be a non-empty tuple of ints >= 1, got {self.dilations!r}")
        for d in self.dilations:
            check_int("dilations", d, 1)
        check_choice("padding_mode", self.padding_mode, PADDING_MODES)


@dataclass(frozen=True)
class SequenceAttentionConfig:
    """Sizes of :class:`SequenceAttention`."""

    in_channels: int = channels()
    embed: int = 32
    heads: int = 2
    depth: int = 2
    mlp: int = 48
    causal: bool = True
    positions: str = "sinusoidal"
    max_length: int = LENGTH
    hidden: int = 32
    num_classes: int = 2

    def __post_init__(self) -> None:
        for name in ("in_channels", "embed", "heads", "depth", "mlp", "max_length", "hidden"):
            check_int(name, getattr(self, name), 1)
        check_int("num_classes", self.num_classes, 2)
        if self.embed % self.heads:
            raise ValueError(f"embed ({self.embed}) must be divisible by heads ({self.heads})")
        if self.positions == "sinusoidal" and self.embed % 2:
            raise ValueError(f"embed must be even for sinusoidal positions, got {self.embed}")
        check_bool("causal", self.causal)
        check_choice("positions", self.positions, POSITIONS)


def _make_config(cls: type, config: Any, options: dict[str, Any]) -> Any:
    if config is None:
        config = cls()
    elif not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for {cls.__name__}; accepted: {sorted(names)}")
    if "dilations" in options and isinstance(options["dilations"], list):
        options = {**options, "dilations": tuple(options["dilations"])}
    return replace(config, **options)


def _check_sequences(x: object, in_channels: int, dtype: torch.dtype, max_length: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor [batch, channel, length], got {type(x).__name__}")
    if not x.is_floating_point() or x.dtype != dtype:
        raise TypeError(f"x must be a {dtype} tensor (one-hot tokens), got {x.dtype}")
    if x.ndim != 3 or x.shape[1] != in_channels or x.shape[0] == 0 or x.shape[2] == 0:
        raise ValueError(f"x must have shape [batch, {in_channels}, length] (batch, length >= 1), got "
                         f"{tuple(x.shape)}")
    if max_length is not None and x.shape[2] > max_length:
        raise ValueError(f"x must have length <= max_length={max_length}, got length {x.shape[2]}")
    return x


class ResidualConv1d(nn.Module):
    """``x + conv(relu(x))``: a length-preserving conv (odd kernel, padding ``dilation * (k - 1) / 2``) with a skip.

    The skip leaves the receptive field of the block's output that of its conv path (the union of the two paths'
    windows): ``r_out = r_in + dilation * (k - 1)``.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int, padding_mode: str) -> None:
        super().__init__()
        self.conv = Conv1d(channels, channels, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                           dilation=dilation, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(torch.relu(x))  # (batch, channel, length)


class SequenceCNN(nn.Module):
    """Residual 1-D CNN: ``features`` (stem, residual conv blocks, ReLU), global max pool over length, MLP head.

    Args:
        config: a :class:`SequenceCNNConfig`; ``**options`` replace its fields (``dilations=(1, 2, 4, 8, 16)``).
    """

    def __init__(self, config: SequenceCNNConfig | None = None, **options: Any) -> None:
        super().__init__()
        config = _make_config(SequenceCNNConfig, config, options)
        self.config = config
        c = config.channels
        layers: list[tuple[str, nn.Module]] = [("stem", Conv1d(config.in_channels, c, 1))]
        layers += [(f"block{i}", ResidualConv1d(c, config.kernel_size, d, config.padding_mode))
                   for i, d in enumerate(config.dilations)]
        layers.append(("relu", nn.ReLU()))
        self.features = nn.Sequential(OrderedDict(layers))  # [batch, in_channels, L] -> [batch, channels, L]
        self.head = nn.Sequential(nn.Linear(c, config.hidden), nn.ReLU(), nn.Linear(config.hidden, config.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[batch, in_channels, length]`` -> logits ``[batch, num_classes]``."""
        x = _check_sequences(x, self.config.in_channels, self.head[0].weight.dtype)
        return self.head(self.features(x).amax(dim=-1))  # max over length: (batch, channels)


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """Fixed positions of Vaswani et al. (2017): ``[length, dim]``, ``sin(p w_i)`` at even ``2i`` and ``cos(p w_i)``
    at odd ``2i + 1``, ``w_i = 10000 ** (-2 i / dim)``."""
    check_int("length", length, 1)
    check_int("dim", dim, 2)
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    pos = torch.arange(length, dtype=torch.float64)[:, None]  # (length, 1)
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim / 2,)
    out = torch.zeros(length, dim, dtype=torch.float64)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)
    return out.to(torch.float32)


class SequenceBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + MLP(LN(x))``; ``hook_resid_out`` after both."""

    def __init__(self, embed: int, heads: int, mlp: int, is_causal: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed)
        self.attn = MultiheadAttention(embed, heads, mask=causal() if is_causal else None)
        self.norm2 = nn.LayerNorm(embed)
        self.mlp = nn.Sequential(nn.Linear(embed, mlp), nn.ReLU(), nn.Linear(mlp, embed))
        self.hook_resid_out = HookPoint(("batch", "query", "embed"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (batch, query, embed)
        return self.hook_resid_out(x + self.mlp(self.norm2(x)))


class SequenceAttention(nn.Module):
    """Attention classifier: linear token embedding + sinusoidal positions, pre-norm blocks, LayerNorm, global max
    pool over positions, MLP head.

    Args:
        config: a :class:`SequenceAttentionConfig`; ``**options`` replace its fields (``causal=False``).
    """

    def __init__(self, config: SequenceAttentionConfig | None = None, **options: Any) -> None:
        super().__init__()
        config = _make_config(SequenceAttentionConfig, config, options)
        self.config = config
        e = config.embed
        self.embed = nn.Linear(config.in_channels, e)
        if config.positions == "sinusoidal":  # not learned, not saved: rebuilt from the config
            self.register_buffer("positions", sinusoidal_positions(config.max_length, e), persistent=False)
        else:
            self.register_buffer("positions", torch.zeros(config.max_length, e), persistent=False)
        self.hook_tokens = HookPoint(("batch", "query", "embed"))
        self.blocks = nn.ModuleList(SequenceBlock(e, config.heads, config.mlp, config.causal)
                                    for _ in range(config.depth))
        self.norm = nn.LayerNorm(e)
        self.head = nn.Sequential(nn.Linear(e, config.hidden), nn.ReLU(), nn.Linear(config.hidden, config.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[batch, in_channels, length]`` (length <= ``max_length``) -> logits ``[batch, num_classes]``."""
        x = _check_sequences(x, self.config.in_channels, self.embed.weight.dtype, self.config.max_length)
        h = self.embed(x.transpose(1, 2)) + self.positions[: x.shape[2]]  # (batch, query, embed)
        h = self.hook_tokens(h)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).amax(dim=1))  # max over positions: (batch, embed)


class LayerStack(nn.Module):
    """Layers applied in turn to ``[batch, channel, length]``; a :class:`~explorer.layers.MultiheadAttention` layer
    sees ``[batch, length, channel]`` (transposed in and out), so convolutions and attention stack freely -- e.g. to
    compare their receptive fields with ``explorer.analysis.receptive_field(LayerStack(layers), spatial_dims=1)``.
    """

    def __init__(self, layers: Any) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x.transpose(1, 2)).transpose(1, 2) if isinstance(layer, MultiheadAttention) else layer(x)
        return x


_BUILDERS: dict[str, tuple[type, dict[str, Any]]] = {
    "cnn": (SequenceCNN, {"dilations": (1, 1, 1, 1, 1)}),
    "dilated_cnn": (SequenceCNN, {"dilations": (1, 2, 4, 8, 16)}),
    "attention": (SequenceAttention, {}),
}


def build_sequence_model(name: str, *, seed: int | None = None, **options: Any) -> nn.Module:
    """One of :data:`SEQUENCE_MODELS` with its default sizes, changed by ``options`` (config fields).

    Args:
        name: ``"cnn"``, ``"dilated_cnn"`` or ``"attention"``.
        seed: seed the initial weights (torch's global generator is left as it was); None uses it as it is.

    Returns:
        The model in training mode (no layer behaves differently in eval mode).
    """
    check_choice("name", name, SEQUENCE_MODELS)
    check_int("seed", seed, 0, optional=True)
    cls, defaults = _BUILDERS[name]
    if seed is None:
        return cls(**{**defaults, **options})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(**{**defaults, **options})


def parameter_counts(**options: Any) -> dict[str, int]:
    """Learned parameters of each of :data:`SEQUENCE_MODELS` (defaults; ``options`` apply to all)."""
    return {name: sum(p.numel() for p in build_sequence_model(name, seed=0, **options).parameters())
            for name in SEQUENCE_MODELS}
