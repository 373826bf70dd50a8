"""Reading a traced graph: the ``torch.fx`` tracer that keeps conv, pooling and attention layers whole, node
descriptions for errors, constant arguments, and the geometry of functional ops and attention masks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch import nn

from explorer.layers.geometry import Geometry
from explorer.analysis.receptive_field.results import _INF
from explorer.analysis.receptive_field.ops import _SIGNATURES, _WINDOWED_MODULES, _attention_modules


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
