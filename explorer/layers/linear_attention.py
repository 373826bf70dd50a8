"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs", https://arxiv.org/abs/2006.16236).

Softmax attention ``softmax(q k^T) v`` costs ``O(query * key)``. Replacing ``exp(q . k)`` by a kernel
``phi(q) . phi(k)`` with a positive feature map ``phi`` lets the sum over keys be done once::

    z_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j))

The ``[head_dim, head_dim]`` summary ``sum_j phi(k_j) v_j^T`` costs ``O(key * head_dim^2)``; for causal attention it
becomes a running (cumulative) sum over positions. The quadratic pattern
``A_ij = phi(q_i) . phi(k_j) / sum_j' phi(q_i) . phi(k_j')`` (``j, j' <= i`` when causal) is never needed, so it is
only computed when ``hook_pattern`` is being recorded, for students to compare with softmax attention.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from explorer._checks import check_bool, check_floating, check_int, check_real, check_shape
from explorer.hooks import HookPoint

__all__ = ["LinearAttention", "FEATURE_MAPS"]


def _elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1.0


FEATURE_MAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "elu+1": _elu_plus_one,  # the paper's choice: positive, smooth
    "relu": F.relu,  # sparse; a row whose features are all 0 gets z = 0 (the eps keeps it finite)
}


class LinearAttention(nn.Module):
    """Multi-head linear attention, batch-first, with named hook points.

    Args:
        embed_dim: model width (>= 1), divisible by ``num_heads``.
        num_heads: number of heads (>= 1).
        feature_map: ``"elu+1"`` (default, the paper's), ``"relu"``, or a callable mapping a tensor to a
            non-negative tensor of the same shape.
        causal: query ``i`` attends to keys ``j <= i`` (needs as many keys as queries).
        bias: add biases to the four projections.
        eps: added to the normaliser ``phi(q_i) . sum_j phi(k_j)`` (the paper uses 1e-6).
        device, dtype: of the parameters.

    Hook points (shapes): ``hook_q`` ``[batch, head, query, head_dim]`` and ``hook_k`` / ``hook_v``
    ``[batch, head, key, head_dim]`` (projections, before the feature map), ``hook_pattern``
    ``[batch, head, query, key]`` (only computed while recorded), ``hook_z`` ``[batch, head, query, head_dim]``,
    ``hook_out`` ``[batch, query, embed]``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        feature_map: str | Callable[[torch.Tensor], torch.Tensor] = "elu+1",
        causal: bool = False,
        bias: bool = True,
        eps: float = 1e-6,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_int("embed_dim", embed_dim, 1)
        check_int("num_heads", num_heads, 1)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if isinstance(feature_map, str):
            if feature_map not in FEATURE_MAPS:
                raise ValueError(f"feature_map must be one of {tuple(FEATURE_MAPS)} or a callable, "
                                 f"got {feature_map!r}")
            self.feature_map = FEATURE_MAPS[feature_map]
        elif callable(feature_map):
            self.feature_map = feature_map
        else:
            raise TypeError(f"feature_map must be a str or a callable, got {type(feature_map).__name__}")
        check_bool("causal", causal)
        check_bool("bias", bias)
        eps = check_real("eps", eps, 0)

        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.causal = causal
        self.eps = eps
        self.feature_map_name = feature_map if isinstance(feature_map, str) else getattr(
            feature_map, "__qualname__", repr(feature_map))

        factory = {"device": device, "dtype": dtype}
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)

        self.hook_q = HookPoint(("batch", "head", "query", "head_dim"))
        self.hook_k = HookPoint(("batch", "head", "key", "head_dim"))
        self.hook_v = HookPoint(("batch", "head", "key", "head_dim"))
        self.hook_pattern = HookPoint(("batch", "head", "query", "key"))
        self.hook_z = HookPoint(("batch", "head", "query", "head_dim"))
        self.hook_out = HookPoint(("batch", "query", "embed"))

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"feature_map={self.feature_map_name!r}, causal={self.causal}")

    def forward(
        self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Linear attention from ``query`` to ``key`` / ``value`` in O(query + key) time and memory.

        Args:
            query: ``[batch, query, embed]``.
            key: ``[batch, key, embed]``; default ``query`` (self-attention).
            value: ``[batch, key, embed]``; default ``key``.

        Returns:
            Tensor ``[batch, query, embed]``.
        """
        key = query if key is None else key
        value = key if value is None else value
        dtype = self.q_proj.weight.dtype
        for name, tensor in (("query", query), ("key", key), ("value", value)):
            check_floating(name, tensor, dtype)
        check_shape("query", query, (None, None, self.embed_dim), "(batch, query, embed)")
        batch, n_query, _ = query.shape
        check_shape("key", key, (batch, None, self.embed_dim), "(batch, key, embed)")
        n_key = key.shape[1]
        check_shape("value", value, (batch, n_key, self.embed_dim), "(batch, key, embed)")
        if self.causal and n_key != n_query:
            raise ValueError(f"causal linear attention needs as many keys as queries: key has {n_key} "
                             f"positions, query has {n_query}")

        q = self.q_proj(query).view(batch, n_query, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).view(batch, n_key, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).view(batch, n_key, self.num_heads, self.head_dim).transpose(1, 2)
        q = self.hook_q(q)  # (batch, head, query, head_dim)
        k = self.hook_k(k)  # (batch, head, key, head_dim)
        v = self.hook_v(v)  # (batch, head, key, head_dim)
        phi_q = self.feature_map(q)  # (batch, head, query, head_dim)
        phi_k = self.feature_map(k)  # (batch, head, key, head_dim)

        if self.causal:
            # running sums over positions: memory O(batch * head * length * head_dim^2)
            kv = torch.einsum("bhkd,bhke->bhkde", phi_k, v).cumsum(dim=2)  # (batch, head, key, head_dim, head_dim)
            k_sum = phi_k.cumsum(dim=2)  # (batch, head, key, head_dim)
            numerator = torch.einsum("bhqd,bhqde->bhqe", phi_q, kv)  # (batch, head, query, head_dim)
            normaliser = (phi_q * k_sum).sum(dim=-1)  # (batch, head, query)
        else:
            kv = torch.einsum("bhkd,bhke->bhde", phi_k, v)  # (batch, head, head_dim, head_dim)
            k_sum = phi_k.sum(dim=2)  # (batch, head, head_dim)
            numerator = torch.einsum("bhqd,bhde->bhqe", phi_q, kv)  # (batch, head, query, head_dim)
            normaliser = torch.einsum("bhqd,bhd->bhq", phi_q, k_sum)  # (batch, head, query)
        z = numerator / (normaliser + self.eps)[..., None]  # (batch, head, query, head_dim)

        if self.hook_pattern.edited:  # the pattern is shown, never used: an edit there would change nothing
            raise RuntimeError(
                f"{self.hook_pattern.name or 'hook_pattern'}: linear attention never multiplies by its pattern "
                "(it is materialised only for recording), so an edit there would be silently ignored; edit "
                "hook_q, hook_k, hook_v or hook_z instead")
        if self.hook_pattern.active:
            self.hook_pattern(self._pattern(phi_q, phi_k))
        z = self.hook_z(z)  # (batch, head, query, head_dim)
        out = z.transpose(1, 2).reshape(batch, n_query, self.embed_dim)  # (batch, query, embed)
        return self.hook_out(self.out_proj(out))  # (batch, query, embed)

    def _pattern(self, phi_q: torch.Tensor, phi_k: torch.Tensor) -> torch.Tensor:
        """The quadratic pattern the linear form computes implicitly; rows sum to 1 (up to eps)."""
        scores = phi_q @ phi_k.transpose(-2, -1)  # (batch, head, query, key)
        if self.causal:
            scores = scores.tril()
        return scores / (scores.sum(dim=-1, keepdim=True) + self.eps)  # (batch, head, query, key)
