"""Receptive fields of convolutional and attention networks: theoretical (from the graph) and effective (gradient).

**Theoretical field** -- Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks",
Distill 2019, https://distill.pub/2019/computing-receptive-fields/. Per spatial dimension, a layer with
kernel ``k``, dilation ``d`` (span ``k_eff = d (k - 1) + 1``), stride ``s`` and left padding ``p`` maps the field
``(r, j, P)`` of its input (size, jump = effective stride, effective padding) to::

    r_out = r_in + (k_eff - 1) * j_in        j_out = j_in * s        P_out = P_in + p * j_in

and output position ``i`` sees input pixels ``i * j - P`` ... ``i * j - P + r - 1`` (:meth:`RFLayer.box`).

:func:`receptive_field` traces the model with ``torch.fx`` and runs that recursion over the graph:

- **grow** the field: ``Conv{1,2,3}d``, ``MaxPool{1,2,3}d``, ``AvgPool{1,2,3}d`` modules (explorer subclasses
  included, kept whole as one leaf), their functional forms (``F.conv2d``, ``F.max_pool2d``, ``torch.max_pool2d``,
  ``F.avg_pool2d``, ... with their arguments) and ``F.pad`` (a 1-wide window with padding; negative = crop);
- **attend** (op ``"attention"``): self-attention layers -- :class:`explorer.layers.MultiheadAttention`,
  :class:`explorer.layers.LinearAttention` and ``torch.nn.MultiheadAttention``, each kept whole as one leaf --
  grow the field along the sequence axis by their mask's geometry (below);
- **keep** it (op ``"elementwise"``): activations, dropout, ``Identity``, arithmetic with constants, dtype/device
  moves, channel slicing ``x[:, :c]``, ``torch.cat(..., dim=1)`` of one path, normalisation layers, and layers
  acting on the channel axis of tokens (``Linear`` on ``[batch, seq, embed]``, an MLP). Batch, group, instance
  and layer norm are treated as pointwise, as in the published tables: their statistics are per-channel scalars,
  although formally they couple every position to every other;
- **re-lay** it (op ``"layout"``): moving between the conv layout ``[batch, channel, *spatial]`` and the token
  layout ``[batch, seq, embed]`` (below);
- **merge** (op ``"merge"``): the same ops with two or more inputs that depend on the image (residual ``x + f(x)``,
  gating ``a * b``, ``torch.cat([a, b], dim=1)``) take the worst case over paths: the box of the merge is the
  bounding box of the union of its inputs' boxes (start = min, end = max). The inputs must be laid out alike, and
  their effective strides must agree unless one of them already sees the whole input, otherwise no single field
  describes the union and a ``ValueError`` names the node;
- **reduce** (op ``"reduce"``): ``mean`` / ``sum`` / ``amax`` / ``amin`` over every spatial (or sequence) axis,
  e.g. a mean-pooled ViT head: the union of the fields of all positions, i.e. the whole input;
- **refuse** anything else that depends on the image with a ``ValueError`` naming the node and the op: adaptive
  pooling modules (their output grid depends on the input size), ``flatten``/``view``/``Linear`` applied across
  channel and space, interpolation, transposed convolution, spatial indexing, cross-attention whose keys depend on
  the input. Pass the convolutional trunk of such a model (``model.body``, ``model.features``), whose output is
  the last feature map.

**Unbounded fields.** Attention can make a field unbounded: :attr:`RFLayer.size` (and :attr:`RFLayer.padding`)
then hold ``math.inf`` and :meth:`RFLayer.box` returns ``-math.inf`` as the start (the field reaches the first
input position, whatever the input length) and/or ``math.inf`` as the end (it reaches the last one). Clipped to
the image, ``(-inf, inf)`` is the whole input; :attr:`RFLayer.whole_input` says so. Every layer after a
whole-input layer sees the whole input too.

**Attention geometry** (one layer; the sequence axis is the spatial axis of a 1-D input, or the flattened grid of
a 2-D/3-D input):

=====================================  ==============================================================================
mask                                   field of output position ``t`` (in the layer's input positions)
=====================================  ==============================================================================
None / ``full()``                      every position: the whole input (``(-inf, inf)``)
``causal()``                           the prefix ``(-inf, t]``: the last position sees everything
``sliding_window(w)``                  ``t - (w-1)//2 .. t + w//2``: a stride-1 conv of kernel ``w``, ``w - 1`` more
                                       per layer (``1 + L (w - 1)`` for ``L`` layers, as
                                       :func:`attention_receptive_field` predicts); ``causal=True``: ``t - (w-1) ..
                                       t``
``dilated_window(w, d)``               the same with the ``w`` keys ``d`` apart: a conv of kernel ``w``, dilation
                                       ``d``; the box is the bounding box (span ``1 + L d (w - 1)``)
``block_sparse(b, ())``                the block of ``t``: ``b * (t // b) .. b * (t // b) + b - 1`` -- one block of
                                       ``b``, however many such layers are stacked (exact, see *periodic boxes*)
``block_sparse(b, (g, ...))``          the whole input (the global token sees everything after one layer, every
                                       token after two; for a non-global token after one layer this box is a
                                       superset of its block plus the global tokens)
``from_callable``, ``&``, ``|``,       refused (ValueError naming the mask and the node): no geometry to read
``lsh``                                (LSH buckets depend on the input)
=====================================  ==============================================================================

``nn.MultiheadAttention`` (no ``attn_mask``) and non-causal :class:`~explorer.layers.LinearAttention` are full
attention; causal linear attention is causal. A key-padding mask or score bias given as a constant is ignored: it
can only hide keys, so the field is an upper bound. With a 2-D (3-D) input, windowed, causal and block-sparse
masks over flattened patch tokens have no 2-D box and are refused by name; full attention gives the whole image.

**Periodic boxes.** A block-sparse layer's box depends on where a position sits in its block, which one
``(size, stride, padding)`` cannot express. Every field is therefore stored exactly as :attr:`RFLayer.boxes`: the
boxes of outputs ``0 .. g - 1`` (``g`` the period, 1 for convolutions, pooling and windowed attention), output
``m g + q`` seeing ``boxes[q]`` shifted by ``m g j``. ``size`` is the largest box over positions, ``padding``
how far output 0's box starts before input pixel 0.

**Layouts.** Conv and pooling layers read ``[batch, channel, *spatial]``; attention reads ``[batch, seq, embed]``
(``[seq, batch, embed]`` for ``nn.MultiheadAttention(batch_first=False)``). The analysis follows the axes through
``flatten(2)`` (the spatial grid becomes the sequence, row-major), ``transpose`` / ``permute`` / ``swapaxes`` /
``movedim``, ``reshape`` / ``view`` / ``unflatten`` that split the last axis (the sequence) back into the grid,
constant tokens concatenated in front (a ViT's ``[CLS]``: positions keep counting the image's tokens, the
prefix tokens sit before position 0) and sliced off again (``tokens[:, 1:]``), position embeddings added, and
picking one token (``tokens[:, 0]``, only once it sees the whole input). Positions of a token-layout output count
the image's tokens; an output without positions (logits) is given the field of any position (pass zeros). The
model's input is taken as ``[batch, channel, *spatial]`` unless the first layer that cares is an attention layer
(then ``[batch, seq, embed]``), or as ``input_layout`` says.

Padding mode (zeros, reflect, circular) does not change the box: coordinates outside ``[0, size)`` are the padded
border, whatever fills it. Shared modules called twice get one row per call: ``"block"``, ``"block@1"``, ...
A lone conv/pool/attention layer passed as the model is reported under its lower-case class name
(``"conv2d"``, ``"multiheadattention"``). Nodes that do not lead to the returned tensor (dead code) are left out,
and so are values that do not depend on the input (weights, shapes). The input checks of explorer's vision models
(``_check_images``) are traced as pass-through calls.

**Effective field** -- Luo, Li, Urtasun & Zemel, "Understanding the Effective Receptive Field in Deep
Convolutional Neural Networks", NeurIPS 2016, https://arxiv.org/abs/1701.04128. :func:`effective_receptive_field`
back-propagates a one-hot gradient at one output position and reports ``|dy/dx|`` over the input, its centre of
mass, spread and the square radii holding a given share of the mass: roughly Gaussian, its standard deviation
grows like sqrt(depth) while the theoretical size grows like depth.
"""

from __future__ import annotations

import math
import operator
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as _dc_field
from typing import Any, NamedTuple, Union

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from explorer._checks import check_choice, check_tensor, check_type
from explorer.layers.geometry import Geometry

__all__ = ["RFLayer", "ReceptiveField", "EffectiveRF", "ZeroGradient", "receptive_field", "effective_receptive_field",
           "AttentionRF", "attention_receptive_field"]

Num = Union[int, float]
"""An int, or ``-math.inf`` / ``math.inf`` for a field unbounded on that side."""

_INF = math.inf
_WHOLE_BOX = (-_INF, _INF)


class ZeroGradient(ValueError):
    """No gradient reaches the input from the chosen output position (e.g. every path runs through a dead ReLU):
    the position has no effective receptive field for this input."""


# ----------------------------------------------------------------------------------------------------------------
# Result types
# ----------------------------------------------------------------------------------------------------------------


def _int_tuple(values: Any) -> tuple[int, ...] | None:
    """``values`` as a tuple of ints (Python or numpy integers, not bools); None if it is not one."""
    try:
        items = tuple(values)
        if any(isinstance(v, bool) for v in items):
            return None
        return tuple(operator.index(v) for v in items)
    except TypeError:
        return None


def _width(box: tuple[Num, Num]) -> Num:
    return box[1] - box[0] + 1  # inf when either side is unbounded


@dataclass(frozen=True)
class RFLayer:
    """Theoretical receptive field of one node of the graph, one entry per spatial dimension.

    Attributes:
        name: fx node name; for a module, its path in the model (``"features.3"``); the input is the name of the
            forward argument (``"x"``).
        op: ``"input"``, ``"conv"``, ``"max_pool"``, ``"avg_pool"``, ``"pad"``, ``"attention"``,
            ``"elementwise"``, ``"layout"`` (axes moved, prefix tokens added or removed, one token picked),
            ``"merge"`` or ``"reduce"``.
        size: receptive field size, in input pixels: the largest box over output positions. ``math.inf`` when
            the field is unbounded on either side (causal or full attention, see :attr:`whole_input`).
        stride: effective stride (jump): input pixels between the fields of neighbouring outputs (on average
            over a period, for periodic boxes).
        padding: effective padding: how far the field of output 0 starts before input pixel 0; ``math.inf`` when
            it has no start (it reaches the first input position, whatever the input length).
        boxes: per spatial dim, the inclusive ``(start, end)`` of the fields of outputs ``0 .. g - 1`` (``g`` the
            period, 1 unless a block-sparse attention layer lies on the path); ``-inf`` / ``inf`` for an unbounded
            side. Default: the single box ``(-padding, size - 1 - padding)`` of the Araujo et al. recursion.
    """

    name: str
    op: str
    size: tuple[Num, ...]
    stride: tuple[int, ...]
    padding: tuple[Num, ...]
    boxes: tuple[tuple[tuple[Num, Num], ...], ...] = _dc_field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.boxes is None:
            derived = []
            for r, pad in zip(self.size, self.padding):
                start = -pad
                end = _INF if math.isinf(r) or math.isinf(pad) else r - 1 - pad
                derived.append(((start, end),))
            object.__setattr__(self, "boxes", tuple(derived))

    @property
    def period(self) -> tuple[int, ...]:
        """Per dim, how many output positions until the boxes repeat (shifted by ``period * stride``)."""
        return tuple(len(b) for b in self.boxes)

    @property
    def whole_input(self) -> bool:
        """True when every output position sees the whole input (every box is ``(-inf, inf)``)."""
        return all(box == _WHOLE_BOX for dim in self.boxes for box in dim)

    def box(self, position: Sequence[int]) -> tuple[tuple[Num, Num], ...]:
        """Input pixels seen by output ``position``: inclusive ``(start, end)`` per dimension.

        ``start = position * stride - padding`` and ``end = start + size - 1`` (for periodic boxes: the box of
        the position's phase, shifted); either may lie outside the image (the padded border), and either may be
        infinite (``-inf``: from the first input position on, ``inf``: up to the last). Clip to
        ``[0, input_size - 1]`` for the pixels that exist. The box is the bounding box of the pixels that can
        influence the output: with dilation, or a stride longer than the next layer's window, some pixels inside
        it are skipped.

        Args:
            position: output index per spatial dimension.

        Returns:
            ``((start, end), ...)``, one pair per spatial dimension.
        """
        pos = _int_tuple(position)
        if pos is None or len(pos) != len(self.size):
            raise ValueError(f"position must hold {len(self.size)} ints (one per spatial dim), got {position!r}")
        return tuple(_Dim(j, boxes).box(p) for p, j, boxes in zip(pos, self.stride, self.boxes))


@dataclass(frozen=True)
class ReceptiveField:
    """Theoretical receptive fields of every node of a model that depends on its input.

    Attributes:
        layers: one :class:`RFLayer` per node, in topological order; the input first, the model's output last.
    """

    layers: tuple[RFLayer, ...]

    @property
    def output(self) -> RFLayer:
        """Field of the tensor the model returns."""
        return self.layers[-1]

    def __getitem__(self, name: str) -> RFLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no node named {name!r}; nodes: {[layer.name for layer in self.layers]}")

    def __len__(self) -> int:
        return len(self.layers)

    def table(self) -> list[dict]:
        """One row ``{name, op, size, stride, padding}`` per node, for display (e.g. ``pandas.DataFrame(rows)``);
        ``math.inf`` marks an unbounded field."""
        return [
            {"name": lay.name, "op": lay.op, "size": lay.size, "stride": lay.stride, "padding": lay.padding}
            for lay in self.layers
        ]


@dataclass(frozen=True, eq=False)
class EffectiveRF:
    """Effective receptive field of one output position (Luo et al. 2016).

    Attributes:
        grad: ``[*spatial]`` float64 on CPU: ``|d y[position] / d x|`` summed over batch and input channels,
            normalised to sum 1.
        position: output position that was back-propagated.
        centre: gradient-weighted centre of mass, in input coordinates.
        std: gradient-weighted standard deviation per dimension, in input pixels.
        radius: ``{q: r}``: the smallest integer Chebyshev radius ``r`` such that the square (cube) of side
            ``2 r + 1`` centred on the *anchor* pixel holds at least a share ``q`` of the mass (up to ``1e-9``
            float slack). The anchor is the pixel nearest the centre of mass (rounding halves up, clipped into the
            image); the square is clipped to the image.
    """

    grad: torch.Tensor
    position: tuple[int, ...]
    centre: tuple[float, ...]
    std: tuple[float, ...]
    radius: dict[float, float]


# ----------------------------------------------------------------------------------------------------------------
# Op tables
# ----------------------------------------------------------------------------------------------------------------

_CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MAX_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_AVG_POOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_WINDOWED_MODULES = _CONV_MODULES + _MAX_POOL_MODULES + _AVG_POOL_MODULES

_POINTWISE_MODULES = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign,
    nn.Tanhshrink, nn.LogSigmoid, nn.Softmax2d, nn.ChannelShuffle,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm,
)


def _functions(*names: str) -> set[Callable]:
    """The callables behind ``names`` in torch, torch.nn.functional and torch._C._nn (fx records either)."""
    found = set()
    for name in names:
        for namespace in (torch, F, torch._C._nn):
            fn = getattr(namespace, name, None)
            if callable(fn):
                found.add(fn)
    return found


def _by_dim(kind: str, stem: str) -> dict[Callable, tuple[str, int]]:
    table = {}
    for ndim in (1, 2, 3):
        for fn in _functions(f"{stem}{ndim}d"):
            table[fn] = (kind, ndim)
    return table


# target -> (op, ndim)
_WINDOWED_FUNCTIONS = {**_by_dim("conv", "conv"), **_by_dim("max_pool", "max_pool"), **_by_dim("avg_pool", "avg_pool")}

# Argument names in call order, to read positional and keyword arguments alike.
_SIGNATURES = {
    "conv": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "max_pool": ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg_pool": ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
}

_POINTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod, operator.pow,
    operator.neg, operator.pos, operator.abs,
    operator.iadd, operator.isub, operator.imul, operator.itruediv,
} | _functions(
    "add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "neg", "abs", "exp", "log",
    "pow", "sqrt", "rsqrt", "square", "sin", "cos", "erf", "clamp", "clip", "maximum", "minimum", "where",
    "relu", "relu_", "relu6", "leaky_relu", "prelu", "rrelu", "elu", "selu", "celu", "gelu", "silu", "mish",
    "sigmoid", "tanh", "hardtanh", "hardswish", "hardsigmoid", "softplus", "softsign", "tanhshrink", "logsigmoid",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "batch_norm", "group_norm", "instance_norm", "layer_norm", "local_response_norm",
)

_POINTWISE_METHODS = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "abs", "exp", "log", "pow", "sqrt",
    "rsqrt", "square", "clamp", "clamp_", "clip", "maximum", "minimum", "relu", "relu_", "sigmoid", "sigmoid_",
    "tanh", "tanh_", "contiguous", "clone", "detach", "to", "type", "type_as", "float", "double", "half",
    "bfloat16", "masked_fill",
}

# Ops reading only metadata of a tensor (its shape, dtype, ...): their result carries no field.
_METADATA_METHODS = {"size", "dim", "numel", "nelement", "ndimension", "element_size", "get_device"}
_METADATA_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "layout"}

_CONCAT_FUNCTIONS = _functions("cat", "concat", "concatenate")


_TRANSPOSE_NAMES = ("transpose", "swapaxes", "swapdims")
_LAYOUT_METHODS = {*_TRANSPOSE_NAMES, "permute", "movedim", "moveaxis", "flatten", "reshape", "view", "unflatten"}
_LAYOUT_FUNCTIONS = {
    fn: name for name in (*_TRANSPOSE_NAMES, "permute", "movedim", "moveaxis", "flatten", "reshape")
    for fn in _functions(name)
}
_REDUCE_NAMES = ("mean", "sum", "amax", "amin")
_REDUCE_FUNCTIONS = {fn: name for name in _REDUCE_NAMES for fn in _functions(name)}
_CHANNEL_FUNCTIONS = _functions("linear")  # act on the last axis only


def _attention_modules() -> tuple[type, ...]:
    """Self-attention layers kept whole by the tracer (explorer's imported lazily: no import cycle)."""
    from explorer.layers.attention import MultiheadAttention
    from explorer.layers.linear_attention import LinearAttention

    return (MultiheadAttention, LinearAttention, nn.MultiheadAttention)


# Input checks of explorer's models (``isinstance`` on the image, then the image, possibly cast): a symbolic trace
# cannot pass them, so their modules register them with ``torch.fx.wrap`` and they are treated as pass-through.
# (module, function name).
_TRANSPARENT = (("explorer.models.vision", "_check_images"),)


def _transparent_functions() -> tuple[Callable, ...]:
    """The checks of :data:`_TRANSPARENT` whose module is imported (a model that calls one has imported it; nothing
    is imported here)."""
    found = (getattr(sys.modules.get(module_name), attr, None) for module_name, attr in _TRANSPARENT)
    return tuple(fn for fn in found if callable(fn))


# ----------------------------------------------------------------------------------------------------------------
# Theoretical receptive field
# ----------------------------------------------------------------------------------------------------------------


class _Dim(NamedTuple):
    """The field along one spatial dim: output ``m g + q`` (``g = len(boxes)``) sees ``boxes[q]`` shifted by
    ``m g stride``; starts and ends are non-decreasing in the position, ``-inf`` / ``inf`` when unbounded."""

    stride: int
    boxes: tuple[tuple[Num, Num], ...]

    def box(self, t: int) -> tuple[Num, Num]:
        """The box of output ``t``."""
        m, q = divmod(t, len(self.boxes))
        shift = m * len(self.boxes) * self.stride
        start, end = self.boxes[q]
        return start + shift, end + shift

    def start(self, t: Num) -> Num:
        return t if math.isinf(t) else self.box(t)[0]  # -inf: the first input position, whatever comes before

    def end(self, t: Num) -> Num:
        return t if math.isinf(t) else self.box(t)[1]


def _normalise(dim: _Dim) -> _Dim:
    """The same field with its shortest period."""
    g, j = len(dim.boxes), dim.stride
    for p in range(1, g):
        if g % p == 0 and all(
            (dim.boxes[q - p][0] + p * j, dim.boxes[q - p][1] + p * j) == dim.boxes[q] for q in range(p, g)
        ):
            return _Dim(j, dim.boxes[:p])
    return dim


def _remap(dim: _Dim, lo: Callable[[int], Num], hi: Callable[[int], Num], period: int, stride: int) -> _Dim:
    """Field of a layer whose output ``u`` reads input positions ``lo(u) .. hi(u)`` (both non-decreasing in ``u``,
    ``lo(u + period) = lo(u) + period * stride``): the union of their fields, from the first one's start to the last
    one's end."""
    boxes = tuple((dim.start(lo(q)), dim.end(hi(q))) for q in range(period))
    return _normalise(_Dim(dim.stride * stride, boxes))


def _conv_dim(dim: _Dim, kernel: int, stride: int, padding: int) -> _Dim:
    """Araujo et al. recursion, generalised to periodic boxes: output ``u`` reads ``u s - p .. u s - p + k_eff - 1``."""
    period = len(dim.boxes) // math.gcd(len(dim.boxes), stride)
    return _remap(dim, lambda u: u * stride - padding, lambda u: u * stride - padding + kernel - 1, period, stride)


def _window_dim(dim: _Dim, before: Num, after: Num) -> _Dim:
    """Attention over the positions ``t - before .. t + after`` (``inf`` for an unbounded side)."""
    return _remap(dim, lambda u: u - before, lambda u: u + after, len(dim.boxes), 1)


def _block_dim(dim: _Dim, block: int, shift: int) -> _Dim:
    """Block-diagonal attention: token ``i = t + shift`` sees the tokens of block ``i // block``."""

    def first(u: int) -> int:
        return block * ((u + shift) // block) - shift

    return _remap(dim, first, lambda u: first(u) + block - 1, math.lcm(len(dim.boxes), block), 1)


def _whole_dim(dim: _Dim) -> _Dim:
    return _Dim(dim.stride, (_WHOLE_BOX,))


def _is_whole(dim: _Dim) -> bool:
    return dim.boxes == (_WHOLE_BOX,)


def _union_dims(dims: list[_Dim]) -> _Dim:
    """Bounding box of the union of the boxes, position by position (worst case over paths); equal strides."""
    whole = [d for d in dims if _is_whole(d)]
    if whole:
        return whole[0]
    period = math.lcm(*(len(d.boxes) for d in dims))
    boxes = tuple((min(d.start(q) for d in dims), max(d.end(q) for d in dims)) for q in range(period))
    return _normalise(_Dim(dims[0].stride, boxes))


class _Value(NamedTuple):
    """What the analysis knows of one tensor that depends on the input.

    ``dims``: the field per spatial dim of the input. ``axes``: a label per tensor axis -- ``"batch"``,
    ``"channel"`` (channels, embedding), ``"s0"`` ... (spatial dim ``d`` of the input, positions along it) or
    ``"seq"`` (every spatial dim of a 2-D/3-D input flattened row-major). ``prefix``: constant tokens (e.g.
    ``[CLS]``) before position 0 along the positions axis.
    """

    dims: tuple[_Dim, ...]
    axes: tuple[str, ...]
    prefix: int = 0


class _Tuple(NamedTuple):
    """A tuple output (``nn.MultiheadAttention`` returns ``(output, weights)``); None: not analysable."""

    items: tuple[_Value | None, ...]


def _grid_axes(ndim: int) -> tuple[str, ...]:
    return ("batch", "channel", *(f"s{d}" for d in range(ndim)))


def _positions_label(ndim: int) -> str:
    return "s0" if ndim == 1 else "seq"


def _token_axes(ndim: int, batch_first: bool = True) -> tuple[str, ...]:
    pos = _positions_label(ndim)
    return ("batch", pos, "channel") if batch_first else (pos, "batch", "channel")


def _is_position(label: str) -> bool:
    return label == "seq" or label.startswith("s")


def _layout_str(axes: tuple[str, ...]) -> str:
    return "[" + ", ".join(axes) + "]"


def _layer(name: str, op: str, value: _Value) -> RFLayer:
    return RFLayer(
        name, op,
        tuple(max(_width(b) for b in d.boxes) for d in value.dims),
        tuple(d.stride for d in value.dims),
        tuple(-d.boxes[0][0] for d in value.dims),
        tuple(d.boxes for d in value.dims),
    )


class _LeafTracer(fx.Tracer):
    """fx tracer keeping conv, pooling and attention modules (torch's and explorer's, subclasses included) whole,
    as one node each. Explorer models' input checks (:data:`_TRANSPARENT`) are registered with ``torch.fx.wrap`` in
    their modules, so they arrive as ``call_function`` nodes (treated as pass-through)."""

    def __init__(self) -> None:
        super().__init__()
        self._leaves = _WINDOWED_MODULES + _attention_modules()

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self._leaves) or super().is_leaf_module(m, module_qualified_name)


def _describe(node: fx.Node, model: nn.Module) -> str:
    if node.op == "call_module":
        return f"module {type(model.get_submodule(node.target)).__name__}"
    if node.op == "call_method":
        return f"method .{node.target}()"
    if node.op == "call_function":
        target = node.target
        module = getattr(target, "__module__", None) or ""
        name = getattr(target, "__name__", repr(target))
        return f"function {module + '.' if module and module != 'builtins' else ''}{name}"
    return node.op


def _unsupported(name: str, node: fx.Node, model: nn.Module, reason: str = "") -> ValueError:
    why = reason or "it may change the spatial layout"
    return ValueError(
        f"receptive_field: node {name!r} ({_describe(node, model)}) is not supported: {why}. Supported: conv / "
        f"max-pool / avg-pool modules and functions, F.pad, self-attention layers with a geometric mask, "
        f"pointwise activations, normalisation and dropout, Linear on the channel axis of tokens, "
        f"add/mul/cat(dim=1) merges, flatten/transpose/permute/reshape between [batch, channel, *spatial] and "
        f"[batch, seq, embed]. For a model with a pooling or linear head on a feature map, pass its convolutional "
        f"trunk (e.g. model.features)."
    )


def _ints(value: Any, ndim: int, what: str, name: str) -> tuple[int, ...]:
    if isinstance(value, bool) or isinstance(value, fx.Node):
        raise ValueError(f"receptive_field: node {name!r}: {what} must be a constant int or tuple, got {value!r}")
    if isinstance(value, int):
        return (value,) * ndim
    try:
        values = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"receptive_field: node {name!r}: {what} must be an int or tuple, got {value!r}") from None
    if len(values) == 1:
        values = values * ndim
    if len(values) != ndim:
        raise ValueError(f"receptive_field: node {name!r}: {what}={value!r} has not {ndim} entries")
    return values


def _bind(node: fx.Node, names: tuple[str, ...]) -> dict[str, Any]:
    bound = dict(zip(names, node.args))
    bound.update(node.kwargs)
    return bound


def _fetch_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _constant(node: Any, root: nn.Module, name: str) -> Any:
    """Value of a graph value that does not depend on the input (e.g. a conv weight), evaluated on the spot."""
    if not isinstance(node, fx.Node):
        return node

    def value(arg: Any) -> Any:
        return fx.node.map_arg(arg, lambda n: _constant(n, root, name))

    with torch.no_grad():
        if node.op == "get_attr":
            return _fetch_attr(root, node.target)
        if node.op == "call_function":
            return node.target(*value(node.args), **value(node.kwargs))
        if node.op == "call_method":
            self_obj, *rest = value(node.args)
            return getattr(self_obj, node.target)(*rest, **value(node.kwargs))
        if node.op == "call_module":
            return root.get_submodule(node.target)(*value(node.args), **value(node.kwargs))
    raise ValueError(f"receptive_field: node {name!r}: cannot evaluate {node.name!r} ({node.op}) to a constant")


def _functional_geometry(node: fx.Node, op: str, ndim: int, root: nn.Module, name: str) -> Geometry:
    """Geometry of ``F.conv2d(x, w, ...)``, ``F.max_pool2d(x, k, ...)``, ``F.avg_pool2d(x, k, ...)`` and kin."""
    args = _bind(node, _SIGNATURES[op])
    if op == "conv":
        weight = _constant(args["weight"], root, name)
        kernel = tuple(int(k) for k in weight.shape[2:])  # weight: [out_channel, in_channel / groups, *kernel]
        dilation = _ints(args.get("dilation", 1), ndim, "dilation", name)
        stride = _ints(args.get("stride", 1), ndim, "stride", name)
        padding = args.get("padding", 0)
        if padding == "valid":
            padding = 0
        elif padding == "same":  # torch pads d*(k-1) in total, the smaller half first
            padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    else:
        if args.get("return_indices", False):
            raise ValueError(f"receptive_field: node {name!r}: max pooling with return_indices=True is not supported")
        kernel = _ints(args["kernel_size"], ndim, "kernel_size", name)
        dilation = _ints(args.get("dilation", 1), ndim, "dilation", name)
        stride = args.get("stride")
        stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and not stride) else stride
        stride = _ints(stride, ndim, "stride", name)
        padding = args.get("padding", 0)
    return Geometry(kernel, stride, _ints(padding, ndim, "padding", name), dilation)


def _pad_geometry(node: fx.Node, ndim: int, name: str) -> Geometry:
    """``F.pad(x, pad)``: ``pad`` lists (left, right) pairs starting from the *last* dimension."""
    pad = _bind(node, ("input", "pad", "mode", "value"))["pad"]
    pad = _ints(pad, len(pad), "pad", name) if isinstance(pad, (list, tuple)) else _ints(pad, 1, "pad", name)
    left = tuple(pad[2 * (ndim - 1 - i)] if 2 * (ndim - 1 - i) < len(pad) else 0 for i in range(ndim))
    return Geometry((1,) * ndim, (1,) * ndim, left, (1,) * ndim)


def _cat_dim(node: fx.Node) -> Any:
    return node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)


def _mask_geometry(mask: Any, where: str) -> tuple:
    """``("whole",)``, ``("window", before, after)`` or ``("block", b)`` for a mask; ValueError without geometry."""
    from explorer import masks

    kind = type(mask)  # exact types: a subclass may change __call__ (as masks.band_of)
    if mask is None or kind is masks.Full:
        return ("whole",)
    # Causal, sliding and dilated windows: the mask's own band of offsets key - query (a subclass has none). The
    # field spans the band's ends; a dilated window's step (its dilation) skips keys inside that span, not beyond.
    band = mask.band() if isinstance(mask, masks.Mask) else None
    if band is not None:
        return ("window", _INF if band.low is None else -band.low, _INF if band.high is None else band.high)
    if kind is masks.BlockSparse:
        return ("whole",) if mask.global_tokens else ("block", mask.block_size)
    if isinstance(mask, masks.LSHBuckets):
        why = "is content-dependent (LSH buckets of one input): it has no receptive field of its own"
    elif isinstance(mask, masks.Mask):
        why = ("has no geometry to read (from_callable, & and | of masks are refused; measure one with "
               "attention_receptive_field)")
    else:
        why = "is not an explorer.masks.Mask"
    raise ValueError(f"receptive_field: {where}: mask {mask!r} {why}")


def receptive_field(model: nn.Module, spatial_dims: int = 2, *, input_layout: str = "auto") -> ReceptiveField:
    """Theoretical receptive field of every node of ``model`` (Araujo et al., Distill 2019).

    The model is traced symbolically with ``torch.fx`` (no forward pass, no input size needed); conv, pooling and
    attention modules, including explorer's subclasses, stay single nodes. See the module docstring for the ops
    that grow, keep, merge, re-lay or are refused, for attention masks and for unbounded (``math.inf``) fields.

    Args:
        model: a module whose ``forward`` takes one input tensor and returns one tensor, and is fx-traceable (no
            data-dependent Python control flow): a CNN, an attention stack or a hybrid.
        spatial_dims: number of spatial dimensions of the input, 1, 2 or 3 (1 for a sequence).
        input_layout: ``"channels"``: the input is ``[batch, channel, *spatial]``; ``"tokens"``: it is
            ``[batch, seq, embed]`` (the sequence is the spatial axis, or for ``spatial_dims >= 2`` the flattened
            grid); ``"auto"`` (default): ``"tokens"`` when the first layer that cares about the layout is an
            attention layer, else ``"channels"``.

    Returns:
        A :class:`ReceptiveField` with one :class:`RFLayer` per node that depends on the input, input first,
        output last; sizes, strides and paddings are in input pixels (tokens), one entry per spatial dimension,
        ``math.inf`` where a field is unbounded.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: if ``spatial_dims`` or ``input_layout`` is not one of the values above; if the model cannot be
            traced by ``torch.fx``; if it contains an unsupported op on the path from input to output (the node
            and op are named), or an attention layer whose mask has no geometry (the mask and node are named); if
            a merge combines different effective strides or layouts.

    Example::

        rf = receptive_field(vgg16_features)  # 13 convs 3x3 p1 + 5 max pools 2x2/2
        rf.output.size                        # (212, 212)
        rf.output.box((0, 0))                 # ((-90, 121), (-90, 121))
        receptive_field(HybridViT()).output.whole_input  # True: full attention sees the whole image
    """
    check_type("model", model, nn.Module, "an nn.Module")
    check_choice("spatial_dims", spatial_dims, (1, 2, 3))
    check_choice("input_layout", input_layout, ("auto", "channels", "tokens"))
    if isinstance(model, _WINDOWED_MODULES + _attention_modules()):  # a lone layer: trace it as a leaf
        model = nn.Sequential(OrderedDict([(type(model).__name__.lower(), model)]))
    try:
        graph = _LeafTracer().trace(model)
    except Exception as err:  # fx raises TraceError, TypeError, RuntimeError, ... depending on the construct
        raise ValueError(
            f"receptive_field: cannot trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err}); "
            f"the forward pass must be fx-traceable: no Python control flow on tensor values, one tensor in and "
            f"one tensor out"
        ) from err

    nodes = list(graph.nodes)
    out_node = next(n for n in nodes if n.op == "output")
    returned = out_node.args[0]
    if not isinstance(returned, fx.Node):
        raise ValueError(
            f"receptive_field: the model must return a single tensor, it returns {type(returned).__name__}"
        )
    live: set[fx.Node] = set()  # ancestors of the returned node: only they are analysed
    stack = [returned]
    while stack:
        n = stack.pop()
        if n not in live:
            live.add(n)
            stack.extend(n.all_input_nodes)
    inputs = [n for n in nodes if n.op == "placeholder" and n in live]
    if len(inputs) != 1:
        raise ValueError(
            f"receptive_field: the output must depend on exactly one forward argument (the image), "
            f"it depends on {[n.name for n in inputs]}"
        )

    analysis = _Analysis(model, spatial_dims, inputs[0], input_layout)
    layers: list[RFLayer] = []
    calls: dict[str, int] = {}
    for node in nodes:
        if node not in live:
            continue
        name = node.name
        if node.op == "placeholder":  # the forward argument's name (fx renames "input" to "input_1")
            name = str(node.target).lstrip("*")
        elif node.op == "call_module":
            count = calls.get(node.target, 0)
            calls[node.target] = count + 1
            name = node.target if count == 0 else f"{node.target}@{count}"
        op, value = analysis.visit(node, name)
        analysis.values[node] = value
        if isinstance(value, _Tuple):
            value = value.items[0]
        if value is not None:
            layers.append(_layer(name, op, value))
    result = analysis.values[returned]
    if result is None:
        raise ValueError("receptive_field: the model's output does not depend on its input")
    if isinstance(result, _Tuple):
        raise ValueError("receptive_field: the model must return a single tensor, it returns a tuple "
                         "(nn.MultiheadAttention returns (output, weights): return its [0])")
    return ReceptiveField(tuple(layers))


class _Analysis:
    """Fields and layouts of the nodes of one traced graph, visited in topological order."""

    def __init__(self, model: nn.Module, ndim: int, placeholder: fx.Node, input_layout: str) -> None:
        self.model = model
        self.ndim = ndim
        self.values: dict[fx.Node, _Value | _Tuple | None] = {}  # None: does not depend on the input
        self.transparent = _transparent_functions()
        self.attention = _attention_modules()
        self.input_axes = self._input_axes(placeholder, input_layout)

    # --- the input's layout ------------------------------------------------------------------------------------

    def _passes(self, node: fx.Node) -> bool:
        """Ops that neither care about nor change the layout of [batch, seq, embed] tokens (pointwise, Linear)."""
        if node.op == "call_module":
            return isinstance(self.model.get_submodule(node.target), (*_POINTWISE_MODULES, nn.Linear))
        if node.op == "call_method":
            return node.target in _POINTWISE_METHODS
        if node.op == "call_function":
            return (node.target in _POINTWISE_FUNCTIONS or node.target in _CHANNEL_FUNCTIONS
                    or node.target in self.transparent)
        return False

    def _input_axes(self, placeholder: fx.Node, input_layout: str) -> tuple[str, ...]:
        """Axis labels of the model's input, as ``input_layout`` says (``"auto"``: see :func:`receptive_field`)."""
        if input_layout == "channels":
            return _grid_axes(self.ndim)
        if input_layout == "tokens":
            return _token_axes(self.ndim)
        tokens, other = None, False
        seen: set[fx.Node] = set()
        stack = [placeholder]
        while stack:  # the first layout-sensitive users of the input, through pointwise ops
            for user in stack.pop().users:
                if user in seen:
                    continue
                seen.add(user)
                if user.op == "output" or (user.op == "call_method" and user.target in _METADATA_METHODS) or (
                    user.target is getattr and len(user.args) > 1 and user.args[1] in _METADATA_ATTRS
                ):
                    continue
                module = self.model.get_submodule(user.target) if user.op == "call_module" else None
                if isinstance(module, self.attention):
                    tokens = _token_axes(self.ndim, getattr(module, "batch_first", True))
                elif self._passes(user):
                    stack.append(user)
                else:
                    other = True
        return tokens if tokens is not None and not other else _grid_axes(self.ndim)

    # --- visiting ----------------------------------------------------------------------------------------------

    def visit(self, node: fx.Node, name: str) -> tuple[str, _Value | _Tuple | None]:
        """Op label and value of one node, given the values of its inputs."""
        ndim = self.ndim
        if node.op == "placeholder":
            return "input", _Value(tuple(_Dim(1, ((0, 0),)) for _ in range(ndim)), self.input_axes)
        if node.op == "get_attr":
            return "constant", None
        spatial = [self.values[n] for n in node.all_input_nodes if self.values[n] is not None]
        if not spatial:
            return "constant", None
        model = self.model
        is_getitem = node.op == "call_function" and node.target is operator.getitem
        if any(isinstance(v, _Tuple) for v in spatial) and not is_getitem:
            raise _unsupported(name, node, model, "it takes the tuple returned by an attention layer; index it "
                                                  "with [0] first")

        if node.op == "call_module":
            module = model.get_submodule(node.target)
            if isinstance(module, _WINDOWED_MODULES):
                op = (
                    "conv" if isinstance(module, _CONV_MODULES)
                    else "max_pool" if isinstance(module, _MAX_POOL_MODULES) else "avg_pool"
                )
                if getattr(module, "return_indices", False):
                    raise _unsupported(name, node, model, "return_indices=True returns a tuple")
                return self._windowed(node, name, op, Geometry.from_module(module), spatial)
            if isinstance(module, self.attention):
                return self._attention(node, name, module)
            if isinstance(module, _POINTWISE_MODULES):
                return self._pointwise(node, name, spatial)
            if isinstance(module, nn.Linear):
                return self._channel_op(node, name, spatial)
            if isinstance(module, nn.Flatten):
                return self._flatten(node, name, self._first(node, name, spatial), module.start_dim, module.end_dim)
            if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                                   nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
                raise _unsupported(name, node, model, "adaptive pooling: its output grid depends on the input size "
                                   "(for a global pool, take x.mean(dim=(2, 3)): the whole input)")
            raise _unsupported(name, node, model)

        if node.op == "call_method":
            if node.target in _METADATA_METHODS:
                return "constant", None
            if node.target in _POINTWISE_METHODS:
                return self._pointwise(node, name, spatial)
            if node.target in _LAYOUT_METHODS:
                return self._layout(node, name, node.target, spatial)
            if node.target in _REDUCE_NAMES:
                return self._reduce(node, name, spatial)
            raise _unsupported(name, node, model)

        # call_function
        target = node.target
        if target in _WINDOWED_FUNCTIONS:
            op, fn_ndim = _WINDOWED_FUNCTIONS[target]
            if fn_ndim != ndim:
                raise ValueError(f"receptive_field: node {name!r} is a {fn_ndim}-D {op} but spatial_dims={ndim}")
            return self._windowed(node, name, op, _functional_geometry(node, op, ndim, model, name), spatial)
        if target is F.pad:
            return self._windowed(node, name, "pad", _pad_geometry(node, ndim, name), spatial)
        if target is getattr and len(node.args) > 1 and node.args[1] in _METADATA_ATTRS:
            return "constant", None
        if is_getitem:
            return self._getitem(node, name, spatial)
        if target in _CONCAT_FUNCTIONS:
            return self._cat(node, name, spatial)
        if target in _POINTWISE_FUNCTIONS:
            return self._pointwise(node, name, spatial)
        if target in _CHANNEL_FUNCTIONS:
            return self._channel_op(node, name, spatial)
        if target in _LAYOUT_FUNCTIONS:
            return self._layout(node, name, _LAYOUT_FUNCTIONS[target], spatial)
        if target in _REDUCE_FUNCTIONS:
            return self._reduce(node, name, spatial)
        if target in self.transparent:
            return "elementwise", self._first(node, name, spatial)
        raise _unsupported(name, node, model)

    # --- helpers -----------------------------------------------------------------------------------------------

    def _first(self, node: fx.Node, name: str, spatial: list) -> _Value:
        """The value of the node's first argument, which must be its only input that depends on the image."""
        first = node.args[0] if node.args else next(iter(node.kwargs.values()), None)
        if len(spatial) != 1 or not isinstance(first, fx.Node) or self.values.get(first) is None:
            raise _unsupported(name, node, self.model, "only its first argument may depend on the input")
        return self.values[first]

    def _require(self, node: fx.Node, name: str, value: _Value, axes: tuple[str, ...], what: str,
                 prefix_ok: bool = False) -> None:
        if value.axes != axes or (value.prefix and not prefix_ok):
            prefix = f" after {value.prefix} prefix token(s)" if value.prefix else ""
            raise _unsupported(name, node, self.model, f"it reads {what} {_layout_str(axes)}, but its input is laid "
                                                       f"out as {_layout_str(value.axes)}{prefix}")

    def _windowed(self, node: fx.Node, name: str, op: str, geometry: Geometry, spatial: list) -> tuple[str, _Value]:
        value = self._first(node, name, spatial)
        if geometry.ndim != self.ndim:
            raise ValueError(
                f"receptive_field: node {name!r} is a {geometry.ndim}-D window but spatial_dims={self.ndim}"
            )
        self._require(node, name, value, _grid_axes(self.ndim), "a feature map")
        dims = tuple(
            _conv_dim(d, k, s, p)
            for d, k, s, p in zip(value.dims, geometry.effective_kernel, geometry.stride, geometry.padding)
        )
        return op, value._replace(dims=dims)

    def _merge(self, node: fx.Node, name: str, values: list[_Value]) -> _Value:
        layouts = {(v.axes, v.prefix) for v in values}
        if len(layouts) > 1:
            raise ValueError(
                f"receptive_field: merge node {name!r} combines inputs laid out differently "
                f"{sorted(_layout_str(a) + (f'+{p} prefix' if p else '') for a, p in layouts)}"
            )
        dims = []
        for per_dim in zip(*(v.dims for v in values)):
            strides = {d.stride for d in per_dim if not _is_whole(d)}
            if len(strides) > 1:
                raise ValueError(
                    f"receptive_field: merge node {name!r} combines inputs with different effective strides "
                    f"{sorted({tuple(d.stride for d in v.dims) for v in values})}; their boxes cannot be combined "
                    f"position by position"
                )
            dims.append(_union_dims(list(per_dim)))
        return values[0]._replace(dims=tuple(dims))

    def _pointwise(self, node: fx.Node, name: str, spatial: list) -> tuple[str, _Value]:
        if len(spatial) == 1:
            return "elementwise", spatial[0]
        return "merge", self._merge(node, name, spatial)

    def _channel_op(self, node: fx.Node, name: str, spatial: list) -> tuple[str, _Value]:
        value = self._first(node, name, spatial)
        if not value.axes or value.axes[-1] != "channel":
            raise _unsupported(name, node, self.model, f"it mixes the last axis, which holds positions "
                                                       f"({_layout_str(value.axes)}), not channels")
        return "elementwise", value

    def _axis_list(self, node: fx.Node, name: str, raw: Any, rank: int) -> list[int]:
        """Integer dim arguments (an int, or a list/tuple of ints), normalised to ``0 .. rank - 1``."""
        items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        dims = []
        for d in items:
            if isinstance(d, bool) or not isinstance(d, int) or not -rank <= d < rank:
                raise _unsupported(name, node, self.model, f"dim {d!r} is not a constant axis of a {rank}-D tensor")
            dims.append(d % rank)
        return dims

    def _flatten(self, node: fx.Node, name: str, value: _Value, start: Any, end: Any) -> tuple[str, _Value]:
        start, end = self._axis_list(node, name, [start, end], len(value.axes))
        merged = value.axes[start:end + 1]
        if len(merged) <= 1:
            return "layout", value
        if merged == _grid_axes(self.ndim)[2:] and not value.prefix:
            return "layout", value._replace(axes=value.axes[:start] + ("seq",) + value.axes[end + 1:])
        raise _unsupported(name, node, self.model, f"flattening {list(merged)} of {_layout_str(value.axes)} mixes "
                                                   f"positions with other axes; only the spatial dims flatten "
                                                   f"(into a row-major sequence)")

    def _layout(self, node: fx.Node, name: str, kind: str, spatial: list) -> tuple[str, _Value]:
        value = self._first(node, name, spatial)
        axes = list(value.axes)
        rank = len(axes)
        method = node.op == "call_method"
        if kind in _TRANSPOSE_NAMES:
            bound = _bind(node, ("input", "dim0", "dim1"))
            a, b = self._axis_list(node, name, [bound.get("dim0"), bound.get("dim1")], rank)
            axes[a], axes[b] = axes[b], axes[a]
            return "layout", value._replace(axes=tuple(axes))
        if kind == "permute":
            raw = node.kwargs.get("dims", list(node.args[1:]))
            if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], (list, tuple)):
                raw = raw[0]
            dims = self._axis_list(node, name, raw, rank)
            if sorted(dims) != list(range(rank)):
                raise _unsupported(name, node, self.model, f"permutation {dims} of a {rank}-D tensor")
            return "layout", value._replace(axes=tuple(axes[d] for d in dims))
        if kind in ("movedim", "moveaxis"):
            bound = _bind(node, ("input", "source", "destination"))
            src = self._axis_list(node, name, bound.get("source"), rank)
            dst = self._axis_list(node, name, bound.get("destination"), rank)
            if len(src) != len(dst):
                raise _unsupported(name, node, self.model, "source and destination differ in length")
            order = [d for d in range(rank) if d not in src]
            for s, d in sorted(zip(src, dst), key=lambda pair: pair[1]):
                order.insert(d, s)
            return "layout", value._replace(axes=tuple(axes[d] for d in order))
        if kind == "flatten":
            bound = _bind(node, ("input", "start_dim", "end_dim"))
            return self._flatten(node, name, value, bound.get("start_dim", 0), bound.get("end_dim", -1))
        if kind == "unflatten":
            bound = _bind(node, ("input", "dim", "sizes"))
            dim, sizes = bound.get("dim"), bound.get("sizes")
            ok = isinstance(dim, int) and -rank <= dim < rank and isinstance(sizes, (list, tuple))
            if ok and axes[dim % rank] == "seq" and len(sizes) == self.ndim and not value.prefix:
                d = dim % rank
                return "layout", value._replace(axes=tuple(axes[:d]) + _grid_axes(self.ndim)[2:] + tuple(axes[d + 1:]))
            raise _unsupported(name, node, self.model, f"unflatten of {_layout_str(value.axes)} that does not split "
                                                       f"the sequence back into the {self.ndim}-D grid")
        # reshape / view: only the split of a trailing sequence back into the grid
        shape = list(node.args[1:]) if method else list(node.args[1:2]) + list(node.kwargs.values())
        if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
            shape = list(shape[0])
        if not method and "shape" in node.kwargs:
            shape = list(node.kwargs["shape"])
        if axes and axes[-1] == "seq" and not value.prefix and len(shape) == rank - 1 + self.ndim:
            return "layout", value._replace(axes=tuple(axes[:-1]) + _grid_axes(self.ndim)[2:])
        raise _unsupported(name, node, self.model, f"{kind} of {_layout_str(value.axes)}: only splitting a trailing "
                                                   f"sequence back into the {self.ndim}-D grid is understood")

    def _reduce(self, node: fx.Node, name: str, spatial: list) -> tuple[str, _Value]:
        value = self._first(node, name, spatial)
        rank = len(value.axes)
        bound = _bind(node, ("input", "dim", "keepdim", "dtype"))
        if bound.get("keepdim", False):
            raise _unsupported(name, node, self.model, "keepdim=True reductions are not supported")
        dim = bound.get("dim")
        reduced = set(range(rank)) if dim is None or dim == () else set(self._axis_list(node, name, dim, rank))
        positions = {i for i, label in enumerate(value.axes) if _is_position(label)}
        kept = tuple(label for i, label in enumerate(value.axes) if i not in reduced)
        if not reduced & positions:
            return "elementwise", value._replace(axes=kept)
        if not positions <= reduced:
            raise _unsupported(name, node, self.model, f"it reduces some spatial axes of {_layout_str(value.axes)} "
                                                       f"but not all")
        return "reduce", _Value(tuple(_whole_dim(d) for d in value.dims), kept)

    def _getitem(self, node: fx.Node, name: str, spatial: list) -> tuple[str, _Value | None]:
        source, index = node.args[0], node.args[1]
        value = self.values.get(source) if isinstance(source, fx.Node) else None
        if isinstance(value, _Tuple):
            if isinstance(index, bool) or not isinstance(index, int) or not -len(value.items) <= index < len(
                value.items
            ) or value.items[index] is None:
                raise _unsupported(name, node, self.model, f"item {index!r} of the attention layer's (output, "
                                                           f"weights) tuple; only [0], the output, has a field")
            return "elementwise", value.items[index]
        if value is None or len(spatial) != 1:
            raise _unsupported(name, node, self.model, "the index depends on the input")
        items = list(index) if isinstance(index, tuple) else [index]
        if sum(i is Ellipsis for i in items) > 1:
            raise _unsupported(name, node, self.model, f"indexing with {index!r}")
        rank = len(value.axes)
        if Ellipsis in items:
            at = items.index(Ellipsis)
            items[at:at + 1] = [slice(None)] * (rank - len(items) + 1)
        if len(items) > rank:
            raise _unsupported(name, node, self.model, f"indexing with {index!r} touches the spatial dims")
        items += [slice(None)] * (rank - len(items))
        axes, prefix, op, whole = [], value.prefix, "elementwise", all(_is_whole(d) for d in value.dims)
        for label, item in zip(value.axes, items):
            full = isinstance(item, slice) and item == slice(None)
            if not _is_position(label):
                if not isinstance(item, slice):
                    raise _unsupported(name, node, self.model, f"indexing with {index!r} drops the {label} axis")
                axes.append(label)
            elif full:
                axes.append(label)
            elif (isinstance(item, slice) and item.stop is None and item.step in (None, 1)
                  and isinstance(item.start, int) and not isinstance(item.start, bool) and 0 <= item.start <= prefix):
                prefix -= item.start  # drops prefix tokens ([CLS]) only
                axes.append(label)
                op = "layout"
            elif isinstance(item, int) and not isinstance(item, bool) and whole:
                op = "layout"  # one token that sees the whole input: no positions left
            else:
                raise _unsupported(name, node, self.model, f"indexing with {index!r} touches the spatial dims (only "
                                                           f"prefix tokens may be sliced off, and one token picked "
                                                           f"once it sees the whole input)")
        if not any(_is_position(label) for label in axes):
            prefix = 0
        return op, _Value(value.dims, tuple(axes), prefix)

    def _length(self, node: Any, axis: int, name: str) -> int:
        """Length along ``axis`` of a constant tensor (a [CLS] token ``cls.expand(batch, -1, -1)``)."""
        if isinstance(node, torch.Tensor):
            return int(node.shape[axis])
        if isinstance(node, fx.Node):
            if node.op == "get_attr":
                return int(_fetch_attr(self.model, node.target).shape[axis])
            if node.op == "call_method" and node.target in ("expand", "repeat") and node.args:
                sizes = node.args[1:]
                if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
                    sizes = tuple(sizes[0])
                size = sizes[axis] if -len(sizes) <= axis < len(sizes) else None
                inner = self._length(node.args[0], axis, name)
                if node.target == "repeat":
                    return inner * size if isinstance(size, int) else -1
                return size if isinstance(size, int) and size != -1 else inner
            if node.op in ("call_method", "call_function") and node.args and (
                node.target in _POINTWISE_METHODS or node.target in _POINTWISE_FUNCTIONS
            ):
                return self._length(node.args[0], axis, name)
            try:
                return int(_constant(node, self.model, name).shape[axis])
            except Exception:  # noqa: BLE001 - any failure means: not a constant we can measure
                pass
        return -1

    def _cat(self, node: fx.Node, name: str, spatial: list) -> tuple[str, _Value]:
        dim = _cat_dim(node)
        tensors = node.args[0] if node.args else node.kwargs.get("tensors", ())
        values = [v for v in spatial if isinstance(v, _Value)]
        rank = len(values[0].axes)
        label = values[0].axes[dim] if isinstance(dim, int) and -rank <= dim < rank else None
        if label in ("channel", "batch"):
            return self._pointwise(node, name, spatial)
        if label is not None and _is_position(label) and len(values) == 1 and (self.ndim == 1 or label == "seq"):
            position = next(i for i, t in enumerate(tensors) if isinstance(t, fx.Node) and self.values.get(t))
            if position == len(tensors) - 1:  # constant tokens in front: the prefix grows
                lengths = [self._length(t, dim, name) for t in tensors[:-1]]
                if all(n >= 0 for n in lengths):
                    return "layout", values[0]._replace(prefix=values[0].prefix + sum(lengths))
        raise _unsupported(name, node, self.model, f"concatenation along dim {dim!r}, not channels (dim=1) nor "
                                                   f"constant tokens in front of the sequence")

    # --- attention -----------------------------------------------------------------------------------------------

    def _attention(self, node: fx.Node, name: str, module: nn.Module) -> tuple[str, _Value | _Tuple]:
        model = self.model
        where = f"node {name!r} ({_describe(node, model)})"
        torch_mha = isinstance(module, nn.MultiheadAttention)
        if torch_mha:
            bound = _bind(node, ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
                                 "average_attn_weights", "is_causal"))
            if bound.get("attn_mask") is not None or bound.get("is_causal", False):
                raise ValueError(f"receptive_field: {where}: an attn_mask has no geometry to read; use "
                                 f"explorer.layers.MultiheadAttention with an explorer.masks mask")
            mask, extras = None, ("key_padding_mask",)
            axes = _token_axes(self.ndim, module.batch_first)
        else:
            bound = _bind(node, ("query", "key", "value"))
            if hasattr(module, "mask"):  # explorer's MultiheadAttention: the call's mask replaces the layer's
                mask = bound.get("mask")
                if isinstance(mask, fx.Node):
                    raise ValueError(f"receptive_field: {where}: a tensor mask has no geometry to read; pass an "
                                     f"explorer.masks mask")
                mask = module.mask if mask is None else mask
                extras = ("key_padding_mask", "score_bias")
            else:  # LinearAttention
                from explorer.masks import causal

                mask, extras = (causal() if module.causal else None), ()
            axes = _token_axes(self.ndim)
        for extra in extras:
            if isinstance(bound.get(extra), fx.Node) and self.values.get(bound[extra]) is not None:
                raise ValueError(f"receptive_field: {where}: its {extra} depends on the input (content-dependent "
                                 f"attention has no receptive field of its own)")
        query = bound.get("query")
        if not isinstance(query, fx.Node) or self.values.get(query) is None:
            raise _unsupported(name, node, model, "its query does not depend on the input, its keys do "
                                                  "(cross-attention from constants)")
        value = self.values[query]
        for role in ("key", "value"):
            other = bound.get(role)
            if other is not None and other is not query and self.values.get(other) is not None:
                raise _unsupported(name, node, model, f"cross-attention: its {role} is another tensor that "
                                                      f"depends on the input; only self-attention is understood")
        self_attention = all(bound.get(role) in (None, query) for role in ("key", "value"))
        self._require(node, name, value, axes, "tokens", prefix_ok=True)
        if not self_attention:  # keys and values are constants: each query is processed on its own
            result = value
        else:
            geometry = _mask_geometry(mask, where)
            if geometry[0] == "whole":
                result = value._replace(dims=tuple(_whole_dim(d) for d in value.dims))
            elif self.ndim > 1:
                raise ValueError(
                    f"receptive_field: {where}: mask {mask!r} over the flattened {self.ndim}-D grid of tokens has "
                    f"no {self.ndim}-D box; with spatial_dims={self.ndim} only full attention (no mask, full(), or "
                    f"block_sparse with a global token) is supported -- use spatial_dims=1 for a sequence"
                )
            elif geometry[0] == "window":
                result = value._replace(dims=(_window_dim(value.dims[0], geometry[1], geometry[2]),))
            else:
                result = value._replace(dims=(_block_dim(value.dims[0], geometry[1], value.prefix),))
        return "attention", (_Tuple((result, None)) if torch_mha else result)
# ----------------------------------------------------------------------------------------------------------------
# Effective receptive field
# ----------------------------------------------------------------------------------------------------------------


def _check_position(position: Sequence[int] | None, out_size: tuple[int, ...]) -> tuple[int, ...]:
    if position is None:
        return tuple(s // 2 for s in out_size)
    pos = _int_tuple(position)
    if pos is None or len(pos) != len(out_size) or not all(0 <= p < s for p, s in zip(pos, out_size)):
        raise ValueError(
            f"position must hold one int per spatial dim with 0 <= position[d] < {list(out_size)} "
            f"(the output's spatial size), got {position!r}"
        )
    return pos


def _check_mass(mass: Sequence[float]) -> tuple[float, ...]:
    try:
        masses = tuple(float(q) for q in mass)
    except (TypeError, ValueError):
        raise ValueError(f"mass must be a sequence of floats in (0, 1], got {mass!r}") from None
    if not all(0.0 < q <= 1.0 for q in masses):
        raise ValueError(f"mass must be a sequence of floats in (0, 1], got {mass!r}")
    return masses


def effective_receptive_field(
    model: nn.Module,
    x: torch.Tensor,
    position: Sequence[int] | None = None,
    channel: int | None = None,
    mass: Sequence[float] = (0.5, 0.95),
) -> EffectiveRF:
    """Effective receptive field: the input gradient of one output position (Luo et al., NeurIPS 2016).

    Back-propagates a one-hot gradient at ``y[:, channel, *position]`` (every batch element; all channels summed
    when ``channel`` is None) to a copy of ``x`` with ``torch.autograd.grad``, so no parameter ``.grad`` is
    touched. The model runs in eval mode (dropout off, batch-norm running statistics); the train/eval flag of every
    submodule is restored afterwards. https://arxiv.org/abs/1701.04128

    Args:
        model: maps ``[batch, channel, *spatial]`` to ``[batch, channel', *spatial']``.
        x: input ``[batch, channel, *spatial]`` with 1 to 3 spatial dims, floating point. Luo et al. average over
            random inputs: pass a batch of them.
        position: output index per spatial dim; default: the centre ``size // 2`` of the output.
        channel: output channel to back-propagate; default: all channels summed.
        mass: shares of the gradient mass whose square radius to report, each in (0, 1].

    Returns:
        An :class:`EffectiveRF`: the normalised map ``|dy/dx|`` ``[*spatial]`` (float64, CPU), its centre of mass
        and standard deviation per dim, and ``radius[q]`` for each ``q`` in ``mass``.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module`` or ``x`` not a floating-point tensor.
        ValueError: bad ``x`` shape, ``position``, ``channel`` or ``mass``; the output is not
            ``[batch, channel, *spatial]`` like ``x``; the gradient is zero everywhere (:class:`ZeroGradient`, a
            ValueError).
    """
    check_type("model", model, nn.Module, "an nn.Module")
    check_tensor("x", x, "[batch, channel, *spatial]", dtype="float")
    if not 3 <= x.ndim <= 5:
        raise ValueError(f"x must be [batch, channel, *spatial] with 1 to 3 spatial dims, got shape {tuple(x.shape)}")
    masses = _check_mass(mass)

    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        inp = x.detach().clone().requires_grad_(True)  # [batch, channel, *spatial]
        with torch.enable_grad():
            y = model(inp)  # [batch, channel', *spatial']
            if not isinstance(y, torch.Tensor) or y.ndim != x.ndim:
                shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                raise ValueError(f"model output must be [batch, channel, *spatial] like x ({x.ndim}-D), got {shape}")
            pos = _check_position(position, tuple(y.shape[2:]))
            if channel is not None and (
                isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < y.shape[1]
            ):
                raise ValueError(f"channel must be None or an int in [0, {y.shape[1]}), got {channel!r}")
            picked = y[(slice(None), slice(None) if channel is None else channel, *pos)]  # [batch(, channel')]
            if not picked.requires_grad:
                raise ValueError("effective_receptive_field: the model's output does not depend on x")
            (grad,) = torch.autograd.grad(picked.sum(), inp, allow_unused=True)
    finally:
        for module, flag in flags:
            module.training = flag
    if grad is None:
        raise ValueError("effective_receptive_field: the model's output does not depend on x")

    gmap = grad.detach().abs().sum(dim=(0, 1)).to(device="cpu", dtype=torch.float64)  # [*spatial]
    total = gmap.sum()
    if not total > 0:
        raise ZeroGradient(
            f"effective_receptive_field: the gradient at position {pos} is zero everywhere "
            f"(e.g. dead ReLUs for this input); try another input or position"
        )
    prob = gmap / total  # [*spatial], sums to 1

    centre, std = [], []
    for d, n in enumerate(prob.shape):
        others = tuple(i for i in range(prob.ndim) if i != d)
        marginal = prob.sum(dim=others) if others else prob  # [n]; sum(dim=()) would reduce everything
        coords = torch.arange(n, dtype=torch.float64)
        mean = float((marginal * coords).sum())
        centre.append(mean)
        std.append(math.sqrt(float((marginal * (coords - mean) ** 2).sum())))

    anchor = [min(max(math.floor(c + 0.5), 0), n - 1) for c, n in zip(centre, prob.shape)]
    grids = torch.meshgrid(*(torch.arange(n) for n in prob.shape), indexing="ij")
    chebyshev = torch.stack([(g - a).abs() for g, a in zip(grids, anchor)]).amax(dim=0)  # [*spatial]
    per_ring = torch.bincount(chebyshev.flatten(), weights=prob.flatten())  # mass at each Chebyshev distance
    inside = torch.cumsum(per_ring, dim=0)  # mass inside the square of radius r
    last = len(inside) - 1
    radius = {
        q: float(min(int(torch.searchsorted(inside, torch.tensor(q - 1e-9, dtype=torch.float64))), last))
        for q in masses
    }
    return EffectiveRF(prob, pos, tuple(centre), tuple(std), radius)


# ----------------------------------------------------------------------------------------------------------------
# Receptive field of a stack of attention layers
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AttentionRF:
    """What each output position of ``layers`` attention layers with one mask sees of ``n`` input positions.

    Attributes:
        reach: BoolTensor ``[query, key]``: input ``key`` can influence output ``query`` after ``layers`` layers.
        size: LongTensor ``[query]``: how many input positions each output sees.
        start, end: LongTensor ``[query]``: first and last input position it sees (its span is ``end - start + 1``).
        predicted: the largest ``size`` over queries from the mask's geometry (see :func:`attention_receptive_field`),
            or None for a mask without one (``from_callable``).
        predicted_span: the largest span over queries from the geometry, or None.
        formula: the rule used, in words.
    """

    reach: torch.Tensor
    size: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor
    predicted: int | None
    predicted_span: int | None
    formula: str


def attention_receptive_field(mask: Any, n: int, layers: int = 1) -> AttentionRF:
    """Receptive field of ``layers`` stacked self-attention layers that all use ``mask`` over ``n`` positions.

    Measured: output ``i`` of a layer mixes the inputs its mask row allows, so after ``L`` layers it sees the
    positions reachable in ``L`` steps of the mask's graph (the boolean ``L``-th power of ``mask.dense(n, n)``,
    each layer's residual connection included). Predicted from the geometry, as the largest field over queries:

    * full attention (``None`` or :func:`explorer.masks.full`) and causal: the whole input after one layer (the
      last query, for causal);
    * a sliding window of ``w`` keys: ``1 + L (w - 1)`` -- it grows by ``w - 1`` per layer, exactly like a stack of
      ``L`` stride-1 convolutions of kernel ``w`` (clipped to ``n``);
    * a dilated window (``w`` keys ``d`` apart): span ``1 + L d (w - 1)``, of which ``1 + L (w - 1)`` positions
      are seen (those congruent to the query mod ``d``), clipped to what ``n`` holds;
    * block-sparse (blocks of ``b``, global tokens): ``b`` plus the global tokens outside the block after one
      layer for a non-global query; with a global token, every query sees all ``n`` after two layers (and a global
      query after one).

    Args:
        mask: a mask of :mod:`explorer.masks`, or None (full attention).
        n: sequence length (>= 1).
        layers: number of stacked layers (>= 1).

    Raises:
        ValueError: a bad ``n`` or ``layers``; a content-dependent mask (LSH buckets: its field depends on the
        input, named in the message); TypeError: ``mask`` is not a mask.
    """
    from explorer import masks

    for name, value in (("n", n), ("layers", layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if mask is not None and not isinstance(mask, masks.Mask):
        raise TypeError(f"mask must be an explorer.masks.Mask or None, got {type(mask).__name__}")
    if isinstance(mask, masks.LSHBuckets):
        raise ValueError(f"mask {mask!r} is content-dependent (LSH buckets of one input): it has no receptive field "
                         "of its own; measure one input's buckets with from_callable instead")
    allowed = torch.ones(n, n, dtype=torch.bool) if mask is None else mask.dense(n, n)
    step = (allowed | torch.eye(n, dtype=torch.bool)).to(torch.float64)  # (query, key), residual included
    reach = torch.eye(n, dtype=torch.float64)
    for _ in range(layers):
        reach = ((step @ reach) > 0).to(torch.float64)  # (query, key): reachable in one more layer
    reach = reach > 0
    positions = torch.arange(n)
    size = reach.sum(dim=-1)
    start = torch.where(reach, positions, n).amin(dim=-1)
    end = torch.where(reach, positions, -1).amax(dim=-1)
    predicted, span, formula = _predicted_field(mask, n, layers)
    return AttentionRF(reach, size, start, end, predicted, span, formula)


def _predicted_field(mask: Any, n: int, layers: int) -> tuple[int | None, int | None, str]:
    from explorer import masks

    kind = type(mask)
    if mask is None or kind is masks.Full:
        return n, n, "full attention: every position after one layer"
    if kind is masks.Causal:
        return n, n, "causal: the last position sees the whole input after one layer"
    if kind is masks.SlidingWindow:
        grow = min(n, 1 + layers * (mask.window - 1))
        return grow, grow, f"sliding window: 1 + layers * (window - 1) = 1 + {layers} * {mask.window - 1}"
    if kind is masks.DilatedWindow:
        d, w = mask.dilation, mask.window
        count = min(1 + layers * (w - 1), (n - 1) // d + 1)  # positions congruent to the query mod d
        return count, 1 + d * (count - 1), (f"dilated window: 1 + layers * (window - 1) = 1 + {layers} * {w - 1} "
                                            f"positions, {d} apart")
    if kind is masks.BlockSparse:
        b = mask.block_size
        globals_in = sorted(t for t in mask.global_tokens if t < n)
        if globals_in:
            return n, n, "block-sparse with a global token: the global query sees everything after one layer"
        block = min(b, n)
        return block, block, f"block-sparse without global tokens: one block of {b}, whatever the depth"
    return None, None, f"{kind.__name__}: no geometry to predict from (measured only)"
