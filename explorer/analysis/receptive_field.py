"""Receptive fields of convolutional networks: theoretical (from the graph) and effective (from the gradient).

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
- **keep** it (op ``"elementwise"``): activations, dropout, ``Identity``, arithmetic with constants, dtype/device
  moves, channel slicing ``x[:, :c]``, ``torch.cat(..., dim=1)`` of one path, and normalisation layers. Batch,
  group, instance and layer norm are treated as pointwise, as in the published tables: their statistics are
  per-channel scalars, although formally they couple every position to every other;
- **merge** (op ``"merge"``): the same ops with two or more inputs that depend on the image (residual ``x + f(x)``,
  gating ``a * b``, ``torch.cat([a, b], dim=1)``) take the worst case over paths: the box of the merge is the
  bounding box of the union of its inputs' boxes (start = min, end = max). The effective strides of the inputs
  must agree, otherwise no single ``(size, stride, padding)`` describes the union and a ``ValueError`` names the
  node;
- **refuse** anything else that depends on the image with a ``ValueError`` naming the node and the op: global or
  adaptive pooling (every output sees the whole input, which ``(size, stride, padding)`` cannot express),
  ``flatten``/``view``/``Linear`` heads, interpolation, transposed convolution, spatial indexing. Pass the
  convolutional trunk of such a model (``model.features``), whose output is the last feature map.

Padding mode (zeros, reflect, circular) does not change the box: coordinates outside ``[0, size)`` are the padded
border, whatever fills it. Shared modules called twice get one row per call: ``"block"``, ``"block@1"``, ...
A lone conv/pool layer passed as the model is reported under its lower-case class name (``"conv2d"``).
Nodes that do not lead to the returned tensor (dead code) are left out, and so are values that do not depend on
the input (weights, shapes).

**Effective field** -- Luo, Li, Urtasun & Zemel, "Understanding the Effective Receptive Field in Deep
Convolutional Neural Networks", NeurIPS 2016, https://arxiv.org/abs/1701.04128. :func:`effective_receptive_field`
back-propagates a one-hot gradient at one output position and reports ``|dy/dx|`` over the input, its centre of
mass, spread and the square radii holding a given share of the mass: roughly Gaussian, its standard deviation
grows like sqrt(depth) while the theoretical size grows like depth.
"""

from __future__ import annotations

import math
import operator
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from explorer.layers.geometry import Geometry

__all__ = ["RFLayer", "ReceptiveField", "EffectiveRF", "ZeroGradient", "receptive_field", "effective_receptive_field",
           "AttentionRF", "attention_receptive_field"]


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


@dataclass(frozen=True)
class RFLayer:
    """Theoretical receptive field of one node of the graph, one entry per spatial dimension.

    Attributes:
        name: fx node name; for a module, its path in the model (``"features.3"``); the input is the name of the
            forward argument (``"x"``).
        op: ``"input"``, ``"conv"``, ``"max_pool"``, ``"avg_pool"``, ``"pad"``, ``"elementwise"`` or ``"merge"``.
        size: receptive field size, in input pixels.
        stride: effective stride (jump): input pixels between the fields of neighbouring outputs.
        padding: effective padding: how far the field of output 0 starts before input pixel 0.
    """

    name: str
    op: str
    size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]

    def box(self, position: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """Input pixels seen by output ``position``: inclusive ``(start, end)`` per dimension.

        ``start = position * stride - padding`` and ``end = start + size - 1``; either may lie outside the image
        (the padded border). Clip to ``[0, input_size - 1]`` for the pixels that exist. The box is the bounding
        box of the pixels that can influence the output: with dilation, or a stride longer than the next layer's
        window, some pixels inside it are skipped.

        Args:
            position: output index per spatial dimension.

        Returns:
            ``((start, end), ...)``, one pair per spatial dimension.
        """
        pos = _int_tuple(position)
        if pos is None or len(pos) != len(self.size):
            raise ValueError(f"position must hold {len(self.size)} ints (one per spatial dim), got {position!r}")
        return tuple(
            (p * j - pad, p * j - pad + r - 1) for p, r, j, pad in zip(pos, self.size, self.stride, self.padding)
        )


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
        """One row ``{name, op, size, stride, padding}`` per node, for display (e.g. ``pandas.DataFrame(rows)``)."""
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


# ----------------------------------------------------------------------------------------------------------------
# Theoretical receptive field
# ----------------------------------------------------------------------------------------------------------------


class _Field(NamedTuple):
    size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]


def _grow(field: _Field, geometry: Geometry) -> _Field:
    """Araujo et al. recursion, per dimension (Distill 2019, eq. for r, j and P)."""
    return _Field(
        tuple(r + (k - 1) * j for r, k, j in zip(field.size, geometry.effective_kernel, field.stride)),
        tuple(j * s for j, s in zip(field.stride, geometry.stride)),
        tuple(pad + p * j for pad, p, j in zip(field.padding, geometry.padding, field.stride)),
    )


def _union(fields: list[_Field], name: str) -> _Field:
    """Bounding box of the union of the boxes of ``fields`` (worst case over paths)."""
    strides = {f.stride for f in fields}
    if len(strides) > 1:
        raise ValueError(
            f"receptive_field: merge node {name!r} combines inputs with different effective strides "
            f"{sorted(strides)}; their boxes cannot be combined position by position"
        )
    # start = i*j - P (min over paths -> max P); end = i*j - P + r - 1 (max over paths -> max of r - P).
    padding = tuple(max(pads) for pads in zip(*(f.padding for f in fields)))
    reach = tuple(max(ends) for ends in zip(*((r - p for r, p in zip(f.size, f.padding)) for f in fields)))
    size = tuple(pad + e for pad, e in zip(padding, reach))
    return _Field(size, fields[0].stride, padding)


class _LeafTracer(fx.Tracer):
    """fx tracer keeping conv and pooling modules (torch's and their subclasses) whole, as one node each."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _WINDOWED_MODULES) or super().is_leaf_module(m, module_qualified_name)


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
        f"max-pool / avg-pool modules and functions, F.pad, pointwise activations, normalisation and dropout, "
        f"add/mul/cat(dim=1) merges. For a model with a pooling or linear head, pass its convolutional trunk "
        f"(e.g. model.features)."
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


def _keeps_space(index: Any) -> bool:
    """``x[index]`` leaves the spatial dims alone: at most (batch, channel) slices, optionally a trailing ``...``."""
    items = list(index) if isinstance(index, tuple) else [index]
    if items and items[-1] is Ellipsis:
        items.pop()
    return len(items) <= 2 and all(isinstance(i, slice) for i in items)


def _cat_dim(node: fx.Node) -> Any:
    return node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)


def receptive_field(model: nn.Module, spatial_dims: int = 2) -> ReceptiveField:
    """Theoretical receptive field of every node of ``model`` (Araujo et al., Distill 2019).

    The model is traced symbolically with ``torch.fx`` (no forward pass, no input size needed); conv and pooling
    modules, including explorer's subclasses, stay single nodes. See the module docstring for the ops that grow,
    keep, merge or are refused.

    Args:
        model: a module whose ``forward`` takes one ``[batch, channel, *spatial]`` tensor and returns one such
            tensor, and is fx-traceable (no data-dependent Python control flow).
        spatial_dims: number of spatial dimensions of the input, 1, 2 or 3.

    Returns:
        A :class:`ReceptiveField` with one :class:`RFLayer` per node that depends on the input, input first,
        output last; sizes, strides and paddings are in input pixels, one entry per spatial dimension.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: if ``spatial_dims`` is not 1, 2 or 3; if the model cannot be traced by ``torch.fx``; if it
            contains an unsupported op on the path from input to output (the node and op are named); if a merge
            combines different effective strides.

    Example::

        rf = receptive_field(vgg16_features)  # 13 convs 3x3 p1 + 5 max pools 2x2/2
        rf.output.size                        # (212, 212)
        rf.output.box((0, 0))                 # ((-90, 121), (-90, 121))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(spatial_dims, bool) or spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    if isinstance(model, _WINDOWED_MODULES):  # a lone layer: trace it as a leaf, named after its class
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

    fields: dict[fx.Node, _Field | None] = {}  # None: value does not depend on the input (weight, shape, ...)
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
        op, field = _visit(node, name, fields, model, spatial_dims)
        fields[node] = field
        if field is not None:
            layers.append(RFLayer(name, op, field.size, field.stride, field.padding))
    if fields[returned] is None:
        raise ValueError("receptive_field: the model's output does not depend on its input")
    return ReceptiveField(tuple(layers))


def _visit(
    node: fx.Node, name: str, fields: dict[fx.Node, _Field | None], model: nn.Module, ndim: int
) -> tuple[str, _Field | None]:
    """Op label and field of one node, given the fields of its inputs."""
    if node.op == "placeholder":
        return "input", _Field((1,) * ndim, (1,) * ndim, (0,) * ndim)
    if node.op == "get_attr":
        return "constant", None
    spatial = [fields[n] for n in node.all_input_nodes if fields[n] is not None]  # inputs that depend on x
    if not spatial:
        return "constant", None

    def check_ndim(geometry: Geometry) -> Geometry:
        if geometry.ndim != ndim:
            raise ValueError(
                f"receptive_field: node {name!r} is a {geometry.ndim}-D window but spatial_dims={ndim}"
            )
        return geometry

    def windowed(op: str, geometry: Geometry) -> tuple[str, _Field]:
        first = node.args[0] if node.args else node.kwargs.get("input")
        if len(spatial) != 1 or not isinstance(first, fx.Node) or fields[first] is None:
            raise _unsupported(name, node, model, "only its first argument may depend on the input")
        return op, _grow(fields[first], check_ndim(geometry))

    def pointwise() -> tuple[str, _Field]:
        return ("elementwise", spatial[0]) if len(spatial) == 1 else ("merge", _union(spatial, name))

    if node.op == "call_module":
        module = model.get_submodule(node.target)
        if isinstance(module, _WINDOWED_MODULES):
            op = (
                "conv" if isinstance(module, _CONV_MODULES)
                else "max_pool" if isinstance(module, _MAX_POOL_MODULES) else "avg_pool"
            )
            if getattr(module, "return_indices", False):
                raise _unsupported(name, node, model, "return_indices=True returns a tuple")
            return windowed(op, Geometry.from_module(module))
        if isinstance(module, _POINTWISE_MODULES):
            return pointwise()
        if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                               nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
            raise _unsupported(name, node, model, "adaptive/global pooling lets every output see the whole input, "
                               "which (size, stride, padding) cannot express")
        raise _unsupported(name, node, model)

    if node.op == "call_method":
        if node.target in _METADATA_METHODS:
            return "constant", None
        if node.target in _POINTWISE_METHODS:
            return pointwise()
        raise _unsupported(name, node, model)

    # call_function
    target = node.target
    if target in _WINDOWED_FUNCTIONS:
        op, fn_ndim = _WINDOWED_FUNCTIONS[target]
        if fn_ndim != ndim:
            raise ValueError(f"receptive_field: node {name!r} is a {fn_ndim}-D {op} but spatial_dims={ndim}")
        return windowed(op, _functional_geometry(node, op, ndim, model, name))
    if target is F.pad:
        return windowed("pad", _pad_geometry(node, ndim, name))
    if target is getattr and len(node.args) > 1 and node.args[1] in _METADATA_ATTRS:
        return "constant", None
    if target is operator.getitem:
        if _keeps_space(node.args[1]):
            return pointwise()
        raise _unsupported(name, node, model, f"indexing with {node.args[1]!r} touches the spatial dims")
    if target in _CONCAT_FUNCTIONS:
        if _cat_dim(node) in (1, -(ndim + 1)):
            return pointwise()
        raise _unsupported(name, node, model, f"concatenation along dim {_cat_dim(node)!r}, not channels (dim=1)")
    if target in _POINTWISE_FUNCTIONS:
        return pointwise()
    raise _unsupported(name, node, model)


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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}")
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
