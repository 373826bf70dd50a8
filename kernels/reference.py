"""Attention with statistics, in plain PyTorch: the reference every fused path is tested against.

Two functions share one core:

* :func:`attention_reference` materialises the ``[query, key]`` score matrix (memory ``O(B·H·Nq·Nk)``), is
  differentiable in ``q, k, v`` and returns the output, the log-sum-exp of every row and, on request, the
  attention statistics;
* :func:`attention_stats_chunked` runs the same core on ``chunk`` query rows at a time (memory
  ``O(B·H·chunk·Nk)``), the CPU path for sequence lengths whose ``n×n`` map does not fit (no gradients).

Statistics of the attention row ``p_i = softmax(s_i)`` with ``s_ij = scale·q_i·k_j``:

* entropy ``H_i = -Σ_j p_ij log p_ij = lse_i - Σ_j p_ij s_ij`` (nats);
* mean distance ``Σ_j p_ij |i - j|`` (ViT's mean attention distance for one query);
* histogram: the attention mass per distance bucket (:func:`distance_buckets`).

Fully masked rows (every key masked out) give output 0, ``lse = -inf`` and all statistics 0, never NaN, with
zero gradients -- the policy of :class:`explorer.layers.MultiheadAttention`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from explorer import masks
from explorer._checks import check_bool, check_int, check_real, check_tensor

__all__ = [
    "AttentionStats",
    "AttentionResult",
    "attention_reference",
    "attention_stats_chunked",
    "distance_buckets",
]

MIN_BUCKETS, MAX_BUCKETS = 2, 32


class AttentionStats(NamedTuple):
    """Per-query statistics of the attention distribution (forward only, no gradient)."""

    entropy: Tensor  # [batch, head, query] fp32, nats
    mean_distance: Tensor  # [batch, head, query] fp32, E_p |i - j|
    histogram: Tensor  # [batch, head, query, n_buckets] fp32, attention mass per distance bucket


class AttentionResult(NamedTuple):
    """What every attention path here returns."""

    out: Tensor  # [batch, head, query, channel], dtype of q
    lse: Tensor  # [batch, head, query] fp32, natural-log log-sum-exp of the scaled, masked scores
    stats: AttentionStats | None  # None unless return_stats=True


# ----------------------------------------------------------------------------------------------------------------
# Distance buckets


def _check_n_buckets(n_buckets: object) -> int:
    return check_int("n_buckets", n_buckets, MIN_BUCKETS, MAX_BUCKETS)


def distance_buckets(n_buckets: int) -> list[tuple[int, int | None]]:
    """The distance range of each histogram bucket, for plot labels.

    Bucket 0 holds ``d = |i - j| = 0``; bucket ``b`` for ``1 <= b <= n_buckets - 2`` holds ``2^(b-1) <= d < 2^b``;
    the last bucket holds every ``d >= 2^(n_buckets - 2)``.

    Args:
        n_buckets: number of buckets, in ``[2, 32]``.

    Returns:
        ``[(lo, hi)]`` per bucket, ``lo <= d < hi``; ``hi`` is None for the open last bucket.
    """
    n_buckets = _check_n_buckets(n_buckets)
    edges = [0] + [2**t for t in range(n_buckets - 1)]  # lower edges: 0, 1, 2, 4, ...
    return [(lo, hi) for lo, hi in zip(edges, edges[1:] + [None])]


def bucket_index(distance: Tensor, n_buckets: int) -> Tensor:
    """Bucket of each distance: ``Σ_{t=0}^{n_buckets-2} [d >= 2^t]`` (0 for d = 0, bit length of d, capped)."""
    index = torch.zeros_like(distance)
    for t in range(n_buckets - 1):
        index += (distance >= 2**t).to(distance.dtype)
    return index


# ----------------------------------------------------------------------------------------------------------------
# Argument checks (shared with the fused path)

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_QKV = "[batch, head, seq, channel]"


def check_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool,
    window: int | None,
    key_padding_mask: Tensor | None,
    scale: float | None,
    n_buckets: int,
) -> float:
    """Validate the arguments of an attention call; return the scale to use (default ``1/sqrt(D)``)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, _QKV, dtype=_DTYPES)
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D {_QKV}, got shape {tuple(t.shape)}")
        check_tensor(name, t, _QKV, nonempty=True)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    b, h, n_q, d = q.shape
    if (k.shape[0], k.shape[1], k.shape[3]) != (b, h, d):
        raise ValueError(
            f"k must be [batch={b}, head={h}, key, channel={d}] to match q {tuple(q.shape)}, got {tuple(k.shape)}"
        )
    n_k = k.shape[2]
    check_bool("causal", causal)
    if causal and n_q != n_k:
        raise ValueError(f"causal=True needs as many queries as keys, got Nq={n_q}, Nk={n_k}")
    if check_int("window", window, 1, optional=True) is not None and n_q != n_k:
        raise ValueError(f"window needs as many queries as keys, got Nq={n_q}, Nk={n_k}")
    if key_padding_mask is not None:
        check_tensor("key_padding_mask", key_padding_mask, "[batch, key] (True = padding)", dtype=torch.bool)
        if tuple(key_padding_mask.shape) != (b, n_k):
            raise ValueError(
                f"key_padding_mask must have shape [batch={b}, key={n_k}], got {tuple(key_padding_mask.shape)}"
            )
        if key_padding_mask.device != q.device:
            raise ValueError(f"key_padding_mask must be on {q.device}, got {key_padding_mask.device}")
    _check_n_buckets(n_buckets)
    scale = check_real("scale", scale, 0, low_open=True, finite=True, optional=True)
    return 1.0 / math.sqrt(d) if scale is None else scale


def _mask_of(causal: bool, window: int | None) -> masks.Mask:
    """The position mask as an :mod:`explorer.masks` callable (padding is handled separately): the one reading of
    ``(causal, window)``, shared with the Triton wrapper's band (:func:`band_offsets`)."""
    if window is not None:
        return masks.sliding_window(window, causal=causal)  # the causal window already has offset <= 0
    return masks.causal() if causal else masks.full()


def band_offsets(n_q: int, n_k: int, causal: bool, window: int | None) -> tuple[int, int, bool]:
    """``(lo, hi, has_band)``: the allowed offsets ``lo <= key - query <= hi`` of ``(causal, window)`` as the fused
    kernel takes them (``±(n_q + n_k)``, beyond any offset, for an unbounded side), and whether any side is bounded.

    Read from the mask's own :meth:`~explorer.masks.Mask.band`, so kernel, reference and mask cannot drift apart.
    """
    band = _mask_of(causal, window).band()
    far = n_q + n_k  # beyond any offset: no constraint
    lo = -far if band.low is None else band.low
    hi = far if band.high is None else band.high
    return lo, hi, band.low is not None or band.high is not None


# ----------------------------------------------------------------------------------------------------------------
# Core


def _attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    query_start: int,
    mask: masks.Mask,
    key_padding_mask: Tensor | None,
    scale: float,
    return_stats: bool,
    n_buckets: int,
) -> AttentionResult:
    """Attention of the query rows ``query_start ..`` of ``q`` against all keys, materialising their scores.

    Memory: the ``[B, H, nq, Nk]`` scores and probabilities in fp32 (plus the same again in autograd buffers).
    """
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32  # accumulation dtype
    n_q, n_k = q.shape[2], k.shape[2]
    query_pos = torch.arange(query_start, query_start + n_q, device=q.device)[:, None]  # (query, 1)
    key_pos = torch.arange(n_k, device=q.device)[None, :]  # (1, key)
    allowed = mask(query_pos, key_pos)  # (query, key) or a bool
    allowed = torch.as_tensor(allowed, device=q.device).expand(n_q, n_k)[None, None]  # (1, 1, query, key)
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]  # (B, 1, query, key)

    s = scale * torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2))  # (B, H, query, key)
    s = s.masked_fill(~allowed, -math.inf)
    row_max = s.amax(dim=-1, keepdim=True).detach()  # (B, H, query, 1); -inf on fully masked rows
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(s - row_max)  # (B, H, query, key); 0 where masked
    l = e.sum(dim=-1, keepdim=True)  # (B, H, query, 1)
    valid = l > 0  # rows with at least one key
    p = e / torch.where(valid, l, torch.ones_like(l))  # (B, H, query, key); all 0 on fully masked rows
    out = torch.matmul(p, v.to(acc)).to(q.dtype)  # (B, H, query, channel)
    lse = torch.where(valid, row_max + torch.log(torch.where(valid, l, torch.ones_like(l))), -math.inf)
    lse = lse.squeeze(-1).detach().float()  # (B, H, query)

    stats = None
    if return_stats:
        with torch.no_grad():
            p = p.detach()
            valid = valid.squeeze(-1)  # (B, H, query)
            p_s = (p * torch.where(p > 0, s.detach(), torch.zeros_like(s))).sum(-1)  # E_p[s]; masked s = -inf
            entropy = torch.where(valid, lse.to(acc) - p_s, torch.zeros_like(p_s))
            distance = (query_pos - key_pos).abs()  # (query, key)
            mean_distance = (p * distance.to(acc)).sum(-1)
            bucket = bucket_index(distance, n_buckets).expand_as(p)  # (B, H, query, key)
            histogram = torch.zeros(*p.shape[:-1], n_buckets, dtype=acc, device=p.device)
            histogram.scatter_add_(-1, bucket, p)  # (B, H, query, bucket)
            stats = AttentionStats(entropy.float(), mean_distance.float(), histogram.float())
    return AttentionResult(out, lse, stats)


def attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    window: int | None = None,
    key_padding_mask: Tensor | None = None,
    scale: float | None = None,
    return_stats: bool = False,
    n_buckets: int = 16,
) -> AttentionResult:
    """Scaled dot-product attention that materialises the ``n×n`` map; differentiable in ``q, k, v``.

    Args:
        q: queries ``[batch, head, query, channel]``, float16/bfloat16/float32/float64.
        k: keys ``[batch, head, key, channel]``, q's dtype.
        v: values ``[batch, head, key, channel]``, q's dtype.
        causal: key ``j`` allowed for query ``i`` iff ``j <= i`` (needs ``Nq == Nk``).
        window: sliding window width (>= 1), :func:`explorer.masks.sliding_window` convention (needs ``Nq == Nk``).
        key_padding_mask: BoolTensor ``[batch, key]``, True = padding (ignored), as in torch.
        scale: score scale, default ``1/sqrt(channel)``.
        return_stats: also return entropy, mean distance and distance histogram (no gradient).
        n_buckets: number of distance buckets, in ``[2, 32]``.

    Returns:
        :class:`AttentionResult` ``(out, lse, stats)``; ``stats`` is None unless ``return_stats``.
    """
    scale = check_inputs(q, k, v, causal, window, key_padding_mask, scale, n_buckets)
    check_bool("return_stats", return_stats)
    return _attend(q, k, v, 0, _mask_of(causal, window), key_padding_mask, scale, return_stats, n_buckets)


def attention_stats_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    window: int | None = None,
    key_padding_mask: Tensor | None = None,
    scale: float | None = None,
    n_buckets: int = 16,
    chunk: int = 1024,
) -> AttentionResult:
    """:func:`attention_reference` with statistics, ``chunk`` query rows at a time (no gradients).

    Memory ``O(B·H·chunk·Nk)`` instead of ``O(B·H·Nq·Nk)``: the CPU path for long sequences.

    Args:
        q, k, v, causal, window, key_padding_mask, scale, n_buckets: as :func:`attention_reference`.
        chunk: number of query rows per step (>= 1).

    Returns:
        :class:`AttentionResult` with ``stats`` always set.
    """
    scale = check_inputs(q, k, v, causal, window, key_padding_mask, scale, n_buckets)
    check_int("chunk", chunk, 1)
    mask = _mask_of(causal, window)
    parts = []
    with torch.no_grad():
        for start in range(0, q.shape[2], chunk):
            parts.append(
                _attend(q[:, :, start : start + chunk], k, v, start, mask, key_padding_mask, scale, True, n_buckets)
            )
    stats = AttentionStats(*(torch.cat([getattr(p.stats, f) for p in parts], dim=2) for f in AttentionStats._fields))
    return AttentionResult(
        torch.cat([p.out for p in parts], dim=2), torch.cat([p.lse for p in parts], dim=2), stats
    )
