"""What a receptive-field analysis returns: :class:`RFLayer` (one node's field), :class:`ReceptiveField`
(every node's), :class:`EffectiveRF` (a gradient map and its statistics) and :class:`ZeroGradient`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as _dc_field
from typing import Any, NamedTuple, Union

import torch


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
