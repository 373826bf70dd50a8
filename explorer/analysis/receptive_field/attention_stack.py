"""What each output position of a stack of attention layers with one mask sees:
:func:`attention_receptive_field` (measured from the mask) and its prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


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
