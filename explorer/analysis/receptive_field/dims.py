"""The field along one axis (:class:`_Dim`, periodic boxes) and the layouts of the values the analysis follows
through a graph: the arithmetic of the theoretical receptive field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

from explorer.analysis.receptive_field.results import Num, RFLayer, _Dim, _WHOLE_BOX, _width


# ----------------------------------------------------------------------------------------------------------------
# Theoretical receptive field
# ----------------------------------------------------------------------------------------------------------------


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
