"""Instrumented layers: convolution and pooling, multi-head attention, linear attention, attention built from a conv.

Every layer declares :class:`~explorer.hooks.HookPoint` s (``hook_in``, ``hook_out``, ``hook_pattern`` ...) that
:func:`explorer.record` captures; see each class for the names and shapes. Masks live in :mod:`explorer.masks`.
"""

from explorer.layers.attention import MultiheadAttention, alibi_bias, alibi_slopes
from explorer.layers.conv_attention import ConvAttention, attention_from_conv
from explorer.layers.conv import AvgPool1d, AvgPool2d, Conv1d, Conv2d, MaxPool1d, MaxPool2d
from explorer.layers.geometry import Geometry
from explorer.layers.linear_attention import LinearAttention
from explorer.layers.lsh_attention import LSHAttention, lsh_attention

__all__ = [
    "Conv1d",
    "Conv2d",
    "MaxPool1d",
    "MaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "MultiheadAttention",
    "LinearAttention",
    "alibi_bias",
    "alibi_slopes",
    "Geometry",
    "ConvAttention",
    "attention_from_conv",
]
