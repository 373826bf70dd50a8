"""bertviz's "neuron view" on any explorer attention layer: one head and query taken apart.

:func:`query_key_view` records a layer's ``hook_q``, ``hook_k`` and ``hook_scores`` and returns the query and key
vectors of one head and query, their elementwise product, the dot products, the bias the layer added and the softmax,
equal to ``hook_pattern`` (:class:`QueryKeyView`). :mod:`explorer.analysis.intervention` re-exports both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from explorer._checks import check_int, check_type
from explorer._modes import evaluating
from explorer.hooks import hook_points, nearest_names, record

__all__ = ["QueryKeyView", "query_key_view"]


@dataclass
class QueryKeyView:
    """One head's attention from one query, taken apart (bertviz's "neuron view").

    ``q`` ``[head_dim]``, ``k`` ``[key, head_dim]``, ``product = q * k`` ``[key, head_dim]``, ``dots`` ``[key]``
    (``product.sum(-1) * scale``), ``bias`` ``[key]`` (what the layer added: score bias, ``-inf`` where masked;
    zeros for plain attention), ``scores = dots + bias`` and ``softmax`` ``[key]`` (equal to ``hook_pattern``).
    """

    layer: str
    head: int
    query: int
    scale: float
    q: torch.Tensor
    k: torch.Tensor
    product: torch.Tensor
    dots: torch.Tensor
    bias: torch.Tensor
    scores: torch.Tensor
    softmax: torch.Tensor


def query_key_view(model: nn.Module, forward: Callable[[nn.Module, Any], Any], inputs: Any, layer: str, head: int,
                   query: int, batch: int = 0) -> QueryKeyView:
    """Record ``layer``'s ``hook_q``, ``hook_k`` and ``hook_scores`` and take one head and query apart.

    Args:
        model: the model; ``layer`` is the module path of one of its attention layers (``"blocks.2.attn"``).
        forward: ``forward(model, inputs)`` runs it.
        inputs: the inputs.
        layer, head, query, batch: which layer, head, query position and input.
    """
    check_type("layer", layer, str, "a module path such as 'blocks.0.attn'")
    try:
        attn = model.get_submodule(layer)
    except AttributeError:
        layers = sorted({n.rsplit(".", 1)[0] for n in hook_points(model) if n.endswith(".hook_q")})
        raise ValueError(f"layer {layer!r} is not a module of the model; attention layers: "
                         f"{nearest_names(layer, layers) or layers[:6]}") from None
    if not all(hasattr(attn, a) for a in ("hook_q", "hook_k", "hook_scores", "scale")):
        raise ValueError(f"layer {layer!r} is a {type(attn).__name__}, not an attention layer with hook_q, hook_k "
                         "and hook_scores")
    names = [f"{layer}.hook_q", f"{layer}.hook_k", f"{layer}.hook_scores"]
    with evaluating(model), torch.no_grad(), record(model, names) as trace:
        forward(model, inputs)
    q_all, k_all, scores_all = (trace[n] for n in names)  # (batch, head, query|key, head_dim|key)
    check_int("batch", batch, 0, q_all.shape[0] - 1)
    check_int("head", head, 0, q_all.shape[1] - 1)
    check_int("query", query, 0, q_all.shape[2] - 1)
    q = q_all[batch, head, query]  # (head_dim,)
    k = k_all[batch, head]  # (key, head_dim)
    product = q[None, :] * k  # (key, head_dim)
    dots = product.sum(-1) * attn.scale  # (key,)
    scores = scores_all[batch, head, query]  # (key,)
    bias = torch.where(torch.isinf(scores), scores, scores - dots)  # (key,), -inf where masked
    scores = dots + bias
    finite = ~torch.isinf(scores)
    softmax = torch.zeros_like(scores)
    if finite.any():
        softmax[finite] = torch.softmax(scores[finite], dim=-1)
    return QueryKeyView(layer, head, query, float(attn.scale), q, k, product, dots, bias, scores, softmax)
