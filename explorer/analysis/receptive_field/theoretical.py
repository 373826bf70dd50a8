"""The theoretical receptive field of every node of a model (Araujo et al., Distill 2019):
:func:`receptive_field` traces the model and :class:`_Analysis` runs the recursion over its graph.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from explorer._checks import check_choice, check_type
from explorer.layers.geometry import Geometry
from explorer.analysis.receptive_field.results import RFLayer, ReceptiveField, _Dim
from explorer.analysis.receptive_field.ops import (
    _CHANNEL_FUNCTIONS, _CONCAT_FUNCTIONS, _CONV_MODULES, _LAYOUT_FUNCTIONS, _LAYOUT_METHODS, _MAX_POOL_MODULES,
    _METADATA_ATTRS, _METADATA_METHODS, _POINTWISE_FUNCTIONS, _POINTWISE_METHODS, _POINTWISE_MODULES, _REDUCE_FUNCTIONS,
    _REDUCE_NAMES, _TRANSPOSE_NAMES, _WINDOWED_FUNCTIONS, _WINDOWED_MODULES, _attention_modules, _transparent_functions
)
from explorer.analysis.receptive_field.dims import (
    _Tuple, _Value, _block_dim, _conv_dim, _grid_axes, _is_position, _is_whole, _layer, _layout_str, _token_axes,
    _union_dims, _whole_dim, _window_dim
)
from explorer.analysis.receptive_field.graph import (
    _LeafTracer, _bind, _cat_dim, _constant, _describe, _fetch_attr, _functional_geometry, _mask_geometry,
    _pad_geometry, _unsupported
)


def receptive_field(model: nn.Module, spatial_dims: int = 2, *, input_layout: str = "auto") -> ReceptiveField:
    """Theoretical receptive field of every node of ``model`` (Araujo et al., Distill 2019).

    The model is traced symbolically with ``torch.fx`` (no forward pass, no input size needed); conv, pooling and
    attention modules, including explorer's subclasses, stay single nodes. See the docstring of
    :mod:`explorer.analysis.receptive_field` for the ops that grow, keep, merge, re-lay or are refused, for attention
    masks and for unbounded (``math.inf``) fields.

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
