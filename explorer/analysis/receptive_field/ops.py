"""Op tables of the theoretical field: which modules, functions and methods grow, keep, re-lay, merge or reduce
the field (see :mod:`explorer.analysis.receptive_field`).
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


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
