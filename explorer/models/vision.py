"""Four small image classifiers of about the same size, built from explorer layers, for the head-to-head lesson.

The lesson trains them on the same digits (:mod:`explorer.data.digits`) and compares what their architecture
builds in: weight sharing and translation equivariance (convolutions), permutation equivariance without positions
(attention), and input-dependent weights (attention, squeeze-and-excitation). To make the comparison about the
architecture and not the size, the defaults give each model 26.7-29.0 k learned parameters (within 9 % of each
other; :func:`parameter_table`).

==========  =====================================================================  ===========================
name        architecture (defaults: 1 x 16 x 16 input, 10 classes; parameters)     ``features`` / stride
==========  =====================================================================  ===========================
``cnn``     :class:`SmallCNN` (26 730): conv3x3(32)-ReLU, conv3x3(40)-ReLU,         ``[B, 40, 8, 8]``, 2
            maxpool 2, conv3x3(40)-ReLU, global average pool, linear
``vit``     :class:`SmallViT` (27 114): 4 x 4 patches (conv k4 s4) -> 16 tokens     ``[B, 32, 4, 4]``, 4
            of 32, + learned positions, [CLS], 3 pre-norm blocks (4 heads,
            MLP 64), LayerNorm, linear on [CLS]
``hybrid``  :class:`HybridViT` (28 730): conv3x3(16)-ReLU, conv3x3(16)-ReLU stem,   ``[B, 32, 4, 4]``, 4
            then the ViT's patchify and blocks (2 blocks, to stay in budget)
``se_cnn``  :class:`SECNN` (28 982): the CNN with a squeeze-and-excitation block    ``[B, 40, 8, 8]``, 2
            after each conv (channel gates computed from the input)
==========  =====================================================================  ===========================

Every model has ``forward(images) -> logits [B, num_classes]``, ``features(images) -> [B, C, H', W']`` (the last
spatial map before pooling; for the ViTs the patch tokens after the last block, [CLS] excluded, on the patch grid)
and ``feature_stride`` (input pixels per feature cell): the equivariance analysis shifts or permutes the input and
compares ``features``.

Hook points (``record(model, "*.hook_pattern")``):

===================================  ====================================================
name                                 shape
===================================  ====================================================
``body.conv{i}.hook_in/out``         ``[batch, channel, height, width]`` (CNNs)
``body.se{i}.hook_gates``            ``[batch, channel]``, sigmoid gates in (0, 1) (SE-CNN)
``stem.conv{i}.hook_in/out``         ``[batch, channel, height, width]`` (hybrid stem)
``patch_embed.hook_out``             ``[batch, embed, rows, cols]`` (ViTs)
``hook_tokens``                      ``[batch, query, embed]`` tokens entering the blocks
``blocks.{i}.attn.hook_pattern``     ``[batch, head, query, key]``; with [CLS], token 0 is
                                     [CLS] and patch ``(r, c)`` is token ``1 + r * cols + c``
``blocks.{i}.hook_resid_out``        ``[batch, query, embed]``
===================================  ====================================================
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from explorer._checks import check_bool, check_choice, check_int, check_tensor, check_type
from explorer.hooks import HookPoint, record
from explorer.layers import Conv2d, MaxPool2d, MultiheadAttention

__all__ = [
    "VISION_MODELS", "CNNConfig", "SECNNConfig", "ViTConfig", "HybridViTConfig", "SmallCNN", "SECNN", "SmallViT",
    "HybridViT", "SqueezeExcite", "ViTBlock", "build_vision_model", "parameter_table", "weight_sharing_table",
]

VISION_MODELS = ("cnn", "vit", "hybrid", "se_cnn")
PADDING_MODES = ("zeros", "circular")
POSITIONS = ("learned", "none")
POOLINGS = ("cls", "mean")


# --- configs ----------------------------------------------------------------------------------------------------


def _check_channels(name: str, value: object, length: int | None = None) -> None:
    what = f"a tuple of {length} ints in [1, 512]" if length else "a non-empty tuple of ints in [1, 512]"
    check_type(name, value, tuple, what)
    if not value or (length is not None and len(value) != length):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    for i, item in enumerate(value):
        check_int(f"{name}[{i}]", item, 1, 512)


@dataclass(frozen=True)
class CNNConfig:
    """Sizes of :class:`SmallCNN`. Every conv is 3 x 3, stride 1, padding 1 (the map keeps its size)."""

    in_channels: int = 1
    num_classes: int = 10
    image_size: int = 16                       # square inputs, side in [4, 256]
    channels: tuple[int, ...] = (32, 40, 40)   # output channels of each conv (1..8 convs)
    pool: bool = True                          # one 2 x 2 stride-2 max-pool after the second conv (the first if
                                               # there is one conv); False: no pooling, feature_stride 1
    padding_mode: str = "zeros"                # "zeros" or "circular" (circular + pool=False: exactly
                                               # equivariant to circular shifts)

    def __post_init__(self) -> None:
        check_int("in_channels", self.in_channels, 1, 64)
        check_int("num_classes", self.num_classes, 2, 10_000)
        check_int("image_size", self.image_size, 4, 256)
        _check_channels("channels", self.channels)
        if len(self.channels) > 8:
            raise ValueError(f"channels must hold 1..8 convs, got {len(self.channels)}")
        check_bool("pool", self.pool)
        check_choice("padding_mode", self.padding_mode, PADDING_MODES)


@dataclass(frozen=True)
class SECNNConfig(CNNConfig):
    """Sizes of :class:`SECNN`: a :class:`CNNConfig` plus the squeeze-and-excitation bottleneck."""

    reduction: int = 4  # the gate MLP maps C -> max(1, C // reduction) -> C

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("reduction", self.reduction, 1, 512)


@dataclass(frozen=True)
class ViTConfig:
    """Sizes of :class:`SmallViT`."""

    in_channels: int = 1
    num_classes: int = 10
    image_size: int = 16       # square inputs, a multiple of `patch`, side in [patch, 256]
    patch: int = 4             # patch side (the patch embedding is a conv with kernel = stride = patch)
    embed: int = 32            # token width, divisible by `heads`
    heads: int = 4
    depth: int = 3             # number of pre-norm transformer blocks
    mlp_ratio: int = 2         # MLP hidden width = mlp_ratio * embed
    positions: str = "learned"  # "learned" absolute position embeddings per patch, or "none"
    pooling: str = "cls"       # "cls": read out a [CLS] token; "mean": average the patch tokens

    def __post_init__(self) -> None:
        check_int("in_channels", self.in_channels, 1, 64)
        check_int("num_classes", self.num_classes, 2, 10_000)
        check_int("patch", self.patch, 1, 64)
        check_int("image_size", self.image_size, self.patch, 256)
        if self.image_size % self.patch:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch ({self.patch})")
        check_int("embed", self.embed, 1, 1024)
        check_int("heads", self.heads, 1, 64)
        if self.embed % self.heads:
            raise ValueError(f"embed ({self.embed}) must be divisible by heads ({self.heads})")
        check_int("depth", self.depth, 1, 24)
        check_int("mlp_ratio", self.mlp_ratio, 1, 16)
        check_choice("positions", self.positions, POSITIONS)
        check_choice("pooling", self.pooling, POOLINGS)


@dataclass(frozen=True)
class HybridViTConfig(ViTConfig):
    """Sizes of :class:`HybridViT`: a :class:`ViTConfig` (2 blocks by default, to match the others' size) plus
    the widths of the two 3 x 3 stem convs."""

    depth: int = 2
    stem_channels: tuple[int, int] = (16, 16)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_channels("stem_channels", self.stem_channels, 2)


def _make_config(cls: type, config: object, options: dict[str, Any]) -> Any:
    """``config`` (default ``cls()``) with ``options`` replacing fields; errors name the bad option."""
    if config is None:
        config = cls()
    elif type(config) is not cls:
        raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for {cls.__name__}; options are {known}")
    return replace(config, **options) if options else config


# --- shared pieces ----------------------------------------------------------------------------------------------


def _check_images(images: object, in_channels: int, size: int, dtype: torch.dtype) -> torch.Tensor:
    """``images`` converted to the model's ``dtype`` if it is a floating ``[B, in_channels, size, size]`` tensor."""
    expected = f"(batch, {in_channels}, {size}, {size})"
    check_tensor("images", images, expected, dtype="float")
    if images.ndim != 4 or tuple(images.shape[1:]) != (in_channels, size, size):
        raise ValueError(f"images must have shape {expected}, got {tuple(images.shape)}")
    return images.to(dtype)


# a symbolic trace (torch.fx, used by explorer.analysis.receptive_field) records the check as one call instead of
# running it on a Proxy, which its isinstance test would refuse
torch.fx.wrap("_check_images")


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018, https://arxiv.org/abs/1709.01507): attention over channels.

    ``gates = sigmoid(fc2(relu(fc1(mean over height, width of x))))``, ``out = x * gates``: one weight per channel,
    computed from the input -- the convolutional analogue of an attention pattern, and shift invariant (it only
    sees the spatial mean), so it keeps a conv stack's equivariance.

    Args:
        channels: number of channels (>= 1).
        reduction: bottleneck width is ``max(1, channels // reduction)``.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.channels = channels
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.hook_gates = HookPoint(("batch", "channel"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[batch, channel, height, width]`` -> same shape, each channel scaled by its gate."""
        squeezed = x.mean(dim=(2, 3))  # (batch, channel)
        gates = self.hook_gates(torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed)))))  # (batch, channel)
        return x * gates[:, :, None, None]


class ViTBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))`` (as in ViT)."""

    def __init__(self, embed: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed)
        self.attn = MultiheadAttention(embed, heads)
        self.norm2 = nn.LayerNorm(embed)
        self.mlp = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(embed, mlp_ratio * embed)), ("act", nn.GELU()),
            ("fc2", nn.Linear(mlp_ratio * embed, embed)),
        ]))
        self.hook_resid_out = HookPoint(("batch", "query", "embed"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[batch, token, embed]`` -> same shape."""
        x = x + self.attn(self.norm1(x))  # (batch, token, embed)
        x = x + self.mlp(self.norm2(x))  # (batch, token, embed)
        return self.hook_resid_out(x)


# --- CNNs -------------------------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """Stride-1 3 x 3 convolutions with ReLU, at most one 2 x 2 max-pool, global average pooling, a linear head.

    Args:
        config: a :class:`CNNConfig` (default: the lesson's sizes).
        **options: fields of :class:`CNNConfig` replacing those of ``config``
            (``SmallCNN(padding_mode="circular", pool=False)``).

    The conv stack is ``self.body``, an ``nn.Sequential`` of explorer layers named ``conv{i}``, ``act{i}``,
    ``pool``, which :func:`explorer.analysis.receptive_field` can read.
    """

    config_class: type = CNNConfig

    def __init__(self, config: CNNConfig | None = None, **options: Any) -> None:
        super().__init__()
        config = _make_config(self.config_class, config, options)
        self.config = config
        modules: dict[str, nn.Module] = {}
        channels = config.in_channels
        pool_after = min(2, len(config.channels))
        for i, width in enumerate(config.channels, start=1):
            modules[f"conv{i}"] = Conv2d(channels, width, 3, padding=1, padding_mode=config.padding_mode)
            modules[f"act{i}"] = nn.ReLU()
            se = self._channel_attention(width)
            if se is not None:
                modules[f"se{i}"] = se
            if config.pool and i == pool_after:
                modules["pool"] = MaxPool2d(2, 2)
            channels = width
        self.body = nn.Sequential(OrderedDict(modules))
        self.head = nn.Linear(channels, config.num_classes)

    def _channel_attention(self, channels: int) -> nn.Module | None:
        """The module after each conv's ReLU: none here, squeeze-and-excitation in :class:`SECNN`."""
        return None

    @property
    def feature_stride(self) -> int:
        """Input pixels per cell of :meth:`features`: 2 with the max-pool, 1 without."""
        return 2 if self.config.pool else 1

    def _check(self, images: object) -> torch.Tensor:
        return _check_images(images, self.config.in_channels, self.config.image_size, self.head.weight.dtype)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The last conv map (after its ReLU, and SE gates), what the head averages.

        Args:
            images: float ``[batch, in_channels, image_size, image_size]``.

        Returns:
            ``[batch, channels[-1], image_size / feature_stride, image_size / feature_stride]`` (rounded down).
        """
        return self.body(self._check(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``[batch, num_classes]`` for float ``images`` ``[batch, in_channels, size, size]``."""
        return self.head(self.features(images).mean(dim=(2, 3)))  # global average pool -> (batch, num_classes)


class SECNN(SmallCNN):
    """:class:`SmallCNN` with a :class:`SqueezeExcite` block after every conv's ReLU (``body.se{i}``).

    Args:
        config: a :class:`SECNNConfig`.
        **options: fields of :class:`SECNNConfig` replacing those of ``config``.
    """

    config_class = SECNNConfig

    def __init__(self, config: SECNNConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)

    def _channel_attention(self, channels: int) -> nn.Module | None:
        return SqueezeExcite(channels, self.config.reduction)


# --- ViTs -------------------------------------------------------------------------------------------------------


class SmallViT(nn.Module):
    """Vision transformer: non-overlapping patches -> tokens, pre-norm attention blocks, LayerNorm, linear head.

    Args:
        config: a :class:`ViTConfig` (default: the lesson's sizes).
        **options: fields of :class:`ViTConfig` replacing those of ``config``
            (``SmallViT(positions="none", pooling="mean")``: logits invariant to any permutation of the patches).

    With ``positions="none"`` nothing tells the blocks where a patch came from: each block is permutation
    equivariant over tokens, so the patch tokens (and :meth:`features`, as a set) are permuted with the patches
    and both poolings are invariant.
    """

    config_class: type = ViTConfig

    def __init__(self, config: ViTConfig | None = None, **options: Any) -> None:
        super().__init__()
        config = _make_config(self.config_class, config, options)
        self.config = config
        e = config.embed
        self.stem = self._make_stem()
        stem_out = config.in_channels if self.stem is None else config.stem_channels[-1]  # type: ignore[attr-defined]
        self.patch_embed = Conv2d(stem_out, e, config.patch, stride=config.patch)  # (batch, embed, rows, cols)
        rows, cols = self.grid
        if config.positions == "learned":
            self.pos_embed = nn.Parameter(torch.randn(1, rows * cols, e) * 0.02)  # (1, patch, embed)
        else:
            self.register_parameter("pos_embed", None)
        if config.pooling == "cls":
            self.cls_token = nn.Parameter(torch.randn(1, 1, e) * 0.02)  # (1, 1, embed)
        else:
            self.register_parameter("cls_token", None)
        self.hook_tokens = HookPoint(("batch", "query", "embed"))
        self.blocks = nn.ModuleList(ViTBlock(e, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(e)
        self.head = nn.Linear(e, config.num_classes)

    def _make_stem(self) -> nn.Module | None:
        """Layers before the patch embedding: none here, two convs in :class:`HybridViT`."""
        return None

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch grid; patch ``(r, c)`` covers pixels ``[r p, (r + 1) p) x [c p, (c + 1) p)``."""
        side = self.config.image_size // self.config.patch
        return side, side

    @property
    def num_tokens(self) -> int:
        """Tokens the attention layers see: the patches, plus one [CLS] with ``pooling="cls"``."""
        rows, cols = self.grid
        return rows * cols + (self.config.pooling == "cls")

    @property
    def feature_stride(self) -> int:
        """Input pixels per cell of :meth:`features`: the patch size."""
        return self.config.patch

    def _encode(self, images: object) -> torch.Tensor:
        """Tokens after the last block, ``[batch, token, embed]``, [CLS] first when there is one."""
        x = _check_images(images, self.config.in_channels, self.config.image_size, self.head.weight.dtype)
        if self.stem is not None:
            x = self.stem(x)  # (batch, stem_channels, size, size)
        x = self.patch_embed(x)  # (batch, embed, rows, cols)
        tokens = x.flatten(2).transpose(1, 2)  # (batch, patch, embed), patch index r * cols + c
        if self.pos_embed is not None:
            tokens = tokens + self.pos_embed
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)  # (batch, token, e)
        tokens = self.hook_tokens(tokens)
        for block in self.blocks:
            tokens = block(tokens)  # (batch, token, embed)
        return tokens

    def _patch_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 1:] if self.cls_token is not None else tokens  # (batch, patch, embed)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The patch tokens after the last block (before the final LayerNorm), [CLS] excluded, on the patch grid.

        Args:
            images: float ``[batch, in_channels, image_size, image_size]``.

        Returns:
            ``[batch, embed, rows, cols]``; cell ``(r, c)`` is the token of patch ``(r, c)``.
        """
        patches = self._patch_tokens(self._encode(images))  # (batch, patch, embed)
        rows, cols = self.grid
        return patches.transpose(1, 2).reshape(patches.shape[0], self.config.embed, rows, cols)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``[batch, num_classes]`` for float ``images`` ``[batch, in_channels, size, size]``."""
        tokens = self.norm(self._encode(images))  # (batch, token, embed)
        pooled = tokens[:, 0] if self.config.pooling == "cls" else self._patch_tokens(tokens).mean(dim=1)
        return self.head(pooled)  # (batch, num_classes)


class HybridViT(SmallViT):
    """:class:`SmallViT` on top of a convolutional stem: two 3 x 3 convs (stride 1, ReLU), then the same patchify.

    The stem gives every patch token a view 2 pixels beyond its patch and a shared, local first processing step --
    a convolutional prior under the attention blocks (ViT paper's "hybrid", Dosovitskiy et al. 2021,
    https://arxiv.org/abs/2010.11929).

    Args:
        config: a :class:`HybridViTConfig`.
        **options: fields of :class:`HybridViTConfig` replacing those of ``config``.
    """

    config_class = HybridViTConfig

    def __init__(self, config: HybridViTConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)

    def _make_stem(self) -> nn.Module | None:
        c1, c2 = self.config.stem_channels
        return nn.Sequential(OrderedDict([
            ("conv1", Conv2d(self.config.in_channels, c1, 3, padding=1)), ("act1", nn.ReLU()),
            ("conv2", Conv2d(c1, c2, 3, padding=1)), ("act2", nn.ReLU()),
        ]))


# --- building and tables ----------------------------------------------------------------------------------------

_CLASSES: dict[str, type[nn.Module]] = {"cnn": SmallCNN, "vit": SmallViT, "hybrid": HybridViT, "se_cnn": SECNN}


def build_vision_model(name: str, *, seed: int | None = None, **options: Any) -> nn.Module:
    """One of :data:`VISION_MODELS` with its default sizes, changed by ``options``.

    Args:
        name: ``"cnn"``, ``"vit"``, ``"hybrid"`` or ``"se_cnn"``.
        seed: seed the initial weights (torch's global generator is left as it was); None uses it as it is.
        **options: fields of the model's config (:class:`CNNConfig`, :class:`ViTConfig`, :class:`HybridViTConfig`,
            :class:`SECNNConfig`), e.g. ``padding_mode="circular"``, ``positions="none"``.

    Returns:
        The model, in training mode (no layer behaves differently in eval mode).
    """
    check_choice("name", name, VISION_MODELS)
    if check_int("seed", seed, optional=True) is None:
        return _CLASSES[name](**options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _CLASSES[name](**options)


def _layers(model: nn.Module) -> list[tuple[str, str, nn.Module | nn.Parameter, int]]:
    """``(name, type, module or parameter, learned parameters)`` per layer of ``model``, in module order.

    A layer is an attention module (:class:`~explorer.layers.MultiheadAttention` or :class:`SqueezeExcite`,
    counted with its projections), any other module with parameters whose children have none (an explorer
    ``Conv2d`` has hook points as children), or a parameter held directly by a module whose children have some
    (position embeddings, [CLS]: type ``"Embedding"``). Every parameter of the model is in exactly one layer.
    """
    rows: list[tuple[str, str, nn.Module | nn.Parameter, int]] = []
    units = (MultiheadAttention, SqueezeExcite)
    inside: list[str] = []  # prefixes of the attention units already counted
    for path, module in model.named_modules():
        if any(path.startswith(prefix + ".") for prefix in inside):
            continue
        if isinstance(module, units):
            inside.append(path)
            rows.append((path, type(module).__name__, module, sum(p.numel() for p in module.parameters())))
            continue
        direct = list(module.named_parameters(recurse=False))
        if not direct:
            continue
        if not any(True for child in module.children() for _ in child.parameters()):  # hook points hold none
            rows.append((path, type(module).__name__, module, sum(p.numel() for _, p in direct)))
        else:
            for pname, param in direct:
                rows.append((f"{path}.{pname}" if path else pname, "Embedding", param, param.numel()))
    return rows


def weight_sharing_table(model: nn.Module, images: torch.Tensor) -> list[dict[str, Any]]:
    """Per layer: weights learned (shared by every input and position) vs weights computed per input.

    "Attention weights are unique per query, conv weights are shared" is half true: an attention layer's
    *projections* are learned and shared like a conv kernel, but its *pattern* -- heads x queries x keys
    probabilities -- is computed afresh for every image. A conv or linear layer computes no weights. A
    squeeze-and-excitation block computes one gate per channel per image.

    The computed counts are read from what the layers produced on ``images`` (``hook_pattern`` of every
    :class:`~explorer.layers.MultiheadAttention`, ``hook_gates`` of every :class:`SqueezeExcite`, through
    :func:`explorer.record`), per image and summed over calls if a layer runs more than once.

    Args:
        model: any module (the models of this file, or others built from explorer layers).
        images: a batch the model accepts (at least one image); the model runs once on it, without gradients.

    Returns:
        One dict per layer (see :func:`_layers` for what a layer is): ``layer`` (module path), ``type``,
        ``learned`` (its parameters, ``sum(p.numel())``), ``computed_per_input`` (weights computed per image).
    """
    check_type("model", model, nn.Module, "an nn.Module")
    if not isinstance(images, torch.Tensor) or images.ndim < 1 or images.shape[0] < 1:
        raise ValueError("images must be a tensor holding a batch of at least one image")
    layers = _layers(model)
    dynamic = {name: f"{name}.{'hook_pattern' if kind == 'MultiheadAttention' else 'hook_gates'}"
               for name, kind, _, _ in layers if kind in ("MultiheadAttention", "SqueezeExcite")}
    computed = {name: 0 for name in dynamic}
    with torch.no_grad():
        if not dynamic:
            model(images)  # nothing to read, but the same input checks as for the other models
        else:
            with record(model, list(dynamic.values())) as trace:
                model(images)
            for name, hook in dynamic.items():
                if hook in trace:
                    computed[name] = sum(t[0].numel() for t in trace.history(hook))  # per image
    return [{"layer": name, "type": kind, "learned": count, "computed_per_input": computed.get(name, 0)}
            for name, kind, _, count in layers]


def parameter_table(names: Sequence[str] = VISION_MODELS, **options: Any) -> list[dict[str, Any]]:
    """Learned parameters of each model at its defaults, in total and per layer type (for a table in the lesson).

    Args:
        names: models from :data:`VISION_MODELS`.
        **options: config fields every model shares (``in_channels``, ``num_classes``, ``image_size``).

    Returns:
        One dict per model: ``model``, ``class``, ``parameters`` (total), then one key per layer type over all
        models (``Conv2d``, ``Linear``, ``LayerNorm``, ``MultiheadAttention``, ``SqueezeExcite``, ``Embedding``),
        0 where the model has none. The total is ``sum(p.numel() for p in model.parameters())``.
    """
    if isinstance(names, str):
        names = (names,)
    models = {name: build_vision_model(name, seed=0, **options) for name in names}
    per_model = {}
    kinds: list[str] = []
    for name, model in models.items():
        counts: dict[str, int] = {}
        for _, kind, _, count in _layers(model):
            counts[kind] = counts.get(kind, 0) + count
            if kind not in kinds:
                kinds.append(kind)
        per_model[name] = counts
    return [{"model": name, "class": type(model).__name__,
             "parameters": sum(p.numel() for p in model.parameters()),
             **{kind: per_model[name].get(kind, 0) for kind in kinds}}
            for name, model in models.items()]
