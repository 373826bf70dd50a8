"""Statistics of attention patterns: entropy, mean attention distance, distance histograms, rollout, sinks.

Every function here is a pure tensor function of patterns recorded at ``hook_pattern``
(``[batch, head, query, key]``, softmax rows that sum to 1) or stacked over layers by :func:`stack_patterns`
(``[layer, batch, head, query, key]``); any leading dimensions are carried through.

Conventions shared by all functions:

- **Rows.** A pattern row is the attention of one query over the keys. Rows must sum to 1 within ``1e-3``; an
  all-zero row is also accepted: it is how :class:`explorer.layers.MultiheadAttention` reports a query whose every
  key was masked. Such a query has no distribution, so per-query results are NaN there and per-head averages leave
  it out (a head with no usable query at all gets NaN).
- **keep.** A BoolTensor ``[token]`` over the shared token axis of self-attention (``query == key``): tokens where
  it is False (``[CLS]``, ``[SEP]``, padding; see :func:`special_token_mask`) are dropped as queries and as keys,
  and each remaining row is renormalised to sum to 1 over the kept keys. Kept tokens keep their original index as
  position, so the distance between the tokens at 1 and 3 stays 2 whatever lies between them.
- **Distances** are ``|i - j|`` in token positions, or Euclidean between the rows of ``positions`` ``[token, dim]``
  (patch coordinates of a ViT, in patches or pixels).

Papers:

- Mean attention distance: Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", Fig. 7 (right),
  https://arxiv.org/abs/2010.11929.
- Attention rollout: Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers",
  https://arxiv.org/abs/2005.00928.
- Attention to [CLS]/[SEP] and head entropy: Clark et al. 2019, "What Does BERT Look At?",
  https://arxiv.org/abs/1906.04341.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping, Sequence

import torch

from explorer._checks import check_bool, check_choice, check_int, check_real, check_tensor, check_type
from explorer.hooks import Trace

__all__ = [
    "stack_patterns",
    "row_entropy",
    "head_entropy",
    "mean_attention_distance",
    "distance_histogram",
    "attention_rollout",
    "sink_share",
    "special_token_mask",
    "downsample_pattern",
    "streamed_statistics",
]

ROW_SUM_TOL = 1e-3  # how far a row sum may be from 1
NEGATIVE_TOL = 1e-6  # entries above -NEGATIVE_TOL count as non-negative (and are clamped to 0)
HEAD_FUSIONS = ("mean", "max", "min")


# --- validation ---------------------------------------------------------------------------------------------------


def _check_pattern(name: str, pattern: object, min_ndim: int, dims: str) -> torch.Tensor:
    """A validated attention pattern (rows sum to 1 or are all zero), promoted to at least float32, clamped >= 0."""
    pattern = check_tensor(name, pattern, dims, dtype="float", min_ndim=min_ndim, nonempty=True)
    if pattern.dtype in (torch.float16, torch.bfloat16):
        pattern = pattern.float()
    with torch.no_grad():
        smallest = pattern.min()
        if not smallest >= -NEGATIVE_TOL:  # also catches NaN
            raise ValueError(f"{name} must hold probabilities (>= 0), got a minimum of {smallest.item():.3g}")
        sums = pattern.sum(dim=-1, dtype=torch.float64)  # (..., query)
        ok = ((sums - 1.0).abs() <= ROW_SUM_TOL) | (sums == 0)  # all-zero rows: fully masked queries
        if not bool(ok.all()):
            bad = sums[~ok]
            raise ValueError(
                f"{name} rows (over the last dim, key) must sum to 1 within {ROW_SUM_TOL} (or be all zero for a "
                f"fully masked query); {bad.numel()} rows do not, e.g. sums {bad[:3].tolist()}"
            )
    return pattern.clamp_min(0.0) if smallest < 0 else pattern


def _check_square(name: str, pattern: torch.Tensor) -> int:
    n_query, n_key = pattern.shape[-2:]
    if n_query != n_key:
        raise ValueError(
            f"{name} must be self-attention with query == key, got query={n_query}, key={n_key}"
        )
    return n_key


def _check_bool_vector(name: str, mask: object, length: int, axis: str, device: torch.device) -> torch.Tensor:
    check_tensor(name, mask, f"[{axis}]", dtype=torch.bool, ndim=1)
    if mask.shape[0] != length:
        raise ValueError(f"{name} has length {mask.shape[0]} but the pattern has {length} {axis} positions")
    return mask.to(device)


def _check_keep(keep: object, n: int, device: torch.device) -> torch.Tensor | None:
    if keep is None:
        return None
    keep = _check_bool_vector("keep", keep, n, "token", device)
    if not bool(keep.any()):
        raise ValueError("keep must keep at least one token, got all False")
    return keep


def _distances(n: int, positions: object, keep: torch.Tensor | None, device: torch.device,
               dtype: torch.dtype) -> torch.Tensor:
    """``[kept, kept]`` distances between the kept tokens (original indices, or Euclidean between ``positions``)."""
    if positions is None:
        points = torch.arange(n, device=device, dtype=torch.float64)[:, None]  # (token, 1)
    else:
        check_tensor("positions", positions, "[token, dim]", ndim=2)
        if positions.shape[1] == 0:
            raise ValueError(f"positions must have shape [token, dim] (2 dims), got {tuple(positions.shape)}")
        if positions.shape[0] != n:
            raise ValueError(f"positions has {positions.shape[0]} rows but the pattern has {n} tokens")
        if positions.dtype == torch.bool or positions.is_complex():
            raise TypeError(f"positions must be a real-valued tensor, got dtype {positions.dtype}")
        points = positions.to(device=device, dtype=torch.float64)
        if not bool(torch.isfinite(points).all()):
            raise ValueError("positions must be finite")
    if keep is not None:
        points = points[keep]  # (kept, dim)
    return (points[:, None, :] - points[None, :, :]).norm(dim=-1).to(dtype)  # (kept, kept)


def _kept_rows(pattern: torch.Tensor, keep: torch.Tensor | None,
               renormalise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop non-kept queries (and keys, renormalising the rows); also return which rows have any mass."""
    if keep is not None:
        pattern = pattern[..., keep, :]  # (..., kept query, key)
        if renormalise:
            pattern = pattern[..., keep]  # (..., kept query, kept key)
    mass = pattern.sum(dim=-1, keepdim=True)  # (..., query, 1)
    valid = mass[..., 0] > 0  # (..., query)
    if renormalise:
        pattern = pattern / torch.where(mass > 0, mass, torch.ones_like(mass))  # empty rows stay zero
    return pattern, valid


def _mean_over_queries(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the last dim (query) of ``values`` where ``valid``; NaN where no query is valid."""
    values = torch.where(valid, values, torch.zeros_like(values))
    return values.sum(dim=-1) / valid.sum(dim=-1).to(values.dtype)


# --- collecting patterns ------------------------------------------------------------------------------------------


def _natural_key(name: str) -> list[object]:
    """``"blocks.10.attn"`` -> ``["blocks.", 10, ".attn"]``, so ``blocks.9`` sorts before ``blocks.10``."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name)]


def stack_patterns(trace: Trace | Mapping[str, torch.Tensor], pattern: str = "*.hook_pattern") -> torch.Tensor:
    """Stack the recorded attention patterns of every matching hook point, ordered by layer.

    Args:
        trace: a :class:`~explorer.hooks.Trace` from :func:`explorer.record` (or a mapping name -> tensor).
            For a hook point that fired several times, the last firing is used (``trace[name]``).
        pattern: glob over the recorded names (``fnmatch``, case-sensitive); ``"*.hook_pattern"`` takes every
            attention layer's pattern. Names are sorted naturally (``blocks.9`` before ``blocks.10``).

    Returns:
        Tensor ``[layer, batch, head, query, key]``.

    Raises:
        ValueError: if no recorded name matches, a match is not 4-D, or the shapes differ.
    """
    check_type("trace", trace, (Trace, Mapping), "an explorer Trace (from explorer.record) or a mapping")
    check_type("pattern", pattern, str, "a str (a glob over hook-point names)")
    recorded = list(trace.keys())
    names = sorted((n for n in recorded if fnmatch.fnmatchcase(n, pattern)), key=_natural_key)
    if not names:
        raise ValueError(
            f"pattern={pattern!r} matches none of the {len(recorded)} recorded names: "
            f"{sorted(recorded)[:8]}{' ...' if len(recorded) > 8 else ''}; record them with "
            f"explorer.record(model, names={pattern!r})"
        )
    tensors = [trace[n] for n in names]
    for name, tensor in zip(names, tensors):
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"pattern={pattern!r} matched {name!r}, which is not [batch, head, query, key]: {got}")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        listing = ", ".join(f"{n}: {tuple(t.shape)}" for n, t in zip(names, tensors))
        raise ValueError(f"pattern={pattern!r} matched patterns of different shapes, cannot stack: {listing}")
    return torch.stack(tensors)  # (layer, batch, head, query, key)


# --- entropy ------------------------------------------------------------------------------------------------------


def row_entropy(pattern: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of each attention row, in nats (``0 log 0 = 0``).

    ``0`` for a row that attends to one key, ``log(key)`` for uniform attention.

    Args:
        pattern: ``[..., query, key]``, rows summing to 1 (all-zero rows give NaN).

    Returns:
        Tensor ``[..., query]``.
    """
    pattern = _check_pattern("pattern", pattern, 2, "[..., query, key]")
    entropy = torch.special.entr(pattern).sum(dim=-1)  # (..., query); entr(p) = -p log p, entr(0) = 0
    empty = pattern.sum(dim=-1) == 0
    return torch.where(empty, torch.full_like(entropy, math.nan), entropy)


def head_entropy(pattern: torch.Tensor, keep: torch.Tensor | None = None, renormalise: bool = True) -> torch.Tensor:
    """Mean row entropy of each head, in nats: low = focused heads, ``log(key)`` = uniform (Clark et al. 2019).

    Args:
        pattern: ``[..., head, query, key]``, rows summing to 1.
        keep: BoolTensor ``[token]`` (self-attention only): average over the kept queries only.
        renormalise: with ``keep``, also drop the non-kept keys and renormalise each row over the kept keys
            before taking its entropy (default). False: the entropy of the full rows, averaged over kept queries.

    Returns:
        Tensor ``[..., head]``.
    """
    pattern = _check_pattern("pattern", pattern, 3, "[..., head, query, key]")
    check_bool("renormalise", renormalise)
    if keep is not None:
        _check_square("pattern", pattern)
    keep = _check_keep(keep, pattern.shape[-1], pattern.device)
    rows, valid = _kept_rows(pattern, keep, renormalise)  # (..., head, query, key), (..., head, query)
    entropy = torch.special.entr(rows).sum(dim=-1)  # (..., head, query)
    return _mean_over_queries(entropy, valid)  # (..., head)


# --- distance -----------------------------------------------------------------------------------------------------


def mean_attention_distance(pattern: torch.Tensor, keep: torch.Tensor | None = None,
                            positions: torch.Tensor | None = None) -> torch.Tensor:
    """Mean attention distance of each head: ``sum_j a_ij dist(i, j)`` averaged over queries ``i``.

    The ViT paper's measure of how local a head is (Dosovitskiy et al. 2021, Fig. 7 right): a conv-like head has a
    small distance in every layer; uniform attention over ``n`` tokens gives ``(n^2 - 1) / (3 n)``.

    Args:
        pattern: ``[..., head, query, key]`` self-attention (``query == key``), rows summing to 1.
        keep: BoolTensor ``[token]``: drop the other tokens as queries and keys, renormalise rows over the kept
            keys. Kept tokens keep their original positions.
        positions: ``[token, dim]`` coordinates (e.g. ``(row, col)`` of image patches): Euclidean distance between
            them. Default: ``|i - j|`` in token positions.

    Returns:
        Tensor ``[..., head]``, in the unit of ``positions`` (tokens by default).
    """
    pattern = _check_pattern("pattern", pattern, 3, "[..., head, query, key]")
    n = _check_square("pattern", pattern)
    keep = _check_keep(keep, n, pattern.device)
    distance = _distances(n, positions, keep, pattern.device, pattern.dtype)  # (kept, kept)
    rows, valid = _kept_rows(pattern, keep)  # (..., head, kept, kept), (..., head, kept)
    per_query = (rows * distance).sum(dim=-1)  # (..., head, kept)
    return _mean_over_queries(per_query, valid)  # (..., head)


def local_share(pattern: torch.Tensor, window: int, keep: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
    """How convolution-like each head is: the share of its attention within ``window`` of the query.

    ``sum_{j : dist(i, j) <= window} a_ij`` averaged over queries ``i``: 1 for a head that only mixes a
    ``2 window + 1`` neighbourhood (what a 1-D conv of that width sees), ``(2 window + 1) / n`` or less for uniform
    attention over ``n`` tokens (less at the ends). Pass ``keep`` to drop sink tokens (``[CLS]``, ``[SEP]``:
    :func:`special_token_mask` inverted) as queries and keys first and renormalise the rows over the rest, so
    attention parked on a sink does not count as local or global.

    Args:
        pattern: ``[..., head, query, key]`` self-attention, rows summing to 1.
        window: int >= 0, in tokens (or in the unit of ``positions``).
        keep: BoolTensor ``[token]``; kept tokens keep their original positions.
        positions: ``[token, dim]`` coordinates, Euclidean distance; default ``|i - j|``.

    Returns:
        Tensor ``[..., head]`` in [0, 1].
    """
    pattern = _check_pattern("pattern", pattern, 3, "[..., head, query, key]")
    n = _check_square("pattern", pattern)
    try:
        window = check_int("window", window, 0, integral=True)
    except TypeError as error:  # local_share has always refused a non-int window with a ValueError (tests pin it)
        raise ValueError(str(error)) from None
    keep = _check_keep(keep, n, pattern.device)
    near = _distances(n, positions, keep, pattern.device, torch.float64) <= window  # (kept, kept)
    rows, valid = _kept_rows(pattern, keep)  # (..., head, kept, kept), (..., head, kept)
    per_query = (rows * near.to(rows.dtype)).sum(dim=-1)  # (..., head, kept)
    return _mean_over_queries(per_query, valid)  # (..., head)


def distance_histogram(
    pattern: torch.Tensor,
    edges: Sequence[float] | None = None,
    keep: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Share of each head's attention that falls at each query-key distance bucket, averaged over queries.

    Distances, ``keep`` and ``positions`` as in :func:`mean_attention_distance`. Bucket ``b`` holds distances
    ``edges[b] <= d < edges[b + 1]``; the last bucket also includes its right edge (as ``numpy.histogram``).
    The default edges ``0, 1, 2, 4, 8, ...`` end at the first power of two above the largest distance between any
    two tokens (kept or not; for token positions, the first power of two ``>= n``), so bucket 0 is the query itself,
    bucket 1 its neighbours at distance 1, bucket 2 distances 2-3, and so on; they cover every distance and the
    shares of a head sum to 1. Attention at distances outside ``[edges[0], edges[-1]]`` is not
    counted.

    Args:
        pattern: ``[..., head, query, key]`` self-attention, rows summing to 1.
        edges: increasing bucket edges (at least 2), or None for the default.
        keep: BoolTensor ``[token]`` of tokens to keep (see :func:`mean_attention_distance`).
        positions: ``[token, dim]`` coordinates for Euclidean distances.

    Returns:
        ``(shares [..., head, bucket], edges [bucket + 1])``, edges in the pattern's dtype.
    """
    pattern = _check_pattern("pattern", pattern, 3, "[..., head, query, key]")
    n = _check_square("pattern", pattern)
    keep = _check_keep(keep, n, pattern.device)
    distance = _distances(n, positions, None, pattern.device, torch.float64)  # (token, token)
    if edges is None:  # from all tokens, kept or not, so that keep does not move the edges
        top = 1
        while top <= distance.max().item():
            top *= 2
        edge_list = [0.0] + [float(2**k) for k in range(int(math.log2(top)) + 1)]
    else:
        if isinstance(edges, (str, bytes)):
            raise TypeError(f"edges must be a sequence of numbers or None, got {type(edges).__name__}")
        try:
            edge_list = [float(e) for e in edges]
        except (TypeError, ValueError):
            raise TypeError(f"edges must be a sequence of numbers or None, got {edges!r}") from None
        if len(edge_list) < 2:
            raise ValueError(f"edges must hold at least 2 values (one bucket), got {edge_list}")
        if not all(math.isfinite(e) for e in edge_list) or any(b <= a for a, b in zip(edge_list, edge_list[1:])):
            raise ValueError(f"edges must be finite and strictly increasing, got {edge_list}")
    if keep is not None:
        distance = distance[keep][:, keep]  # (kept, kept)
    edge_tensor = torch.tensor(edge_list, dtype=torch.float64, device=pattern.device)  # (bucket + 1,)
    n_bucket = len(edge_list) - 1
    bucket = torch.bucketize(distance, edge_tensor, right=True) - 1  # (kept, kept); -1 below, n_bucket above
    bucket = torch.where(distance == edge_tensor[-1], torch.full_like(bucket, n_bucket - 1), bucket)
    inside = (bucket >= 0) & (bucket < n_bucket)
    one_hot = torch.zeros(*distance.shape, n_bucket, dtype=pattern.dtype, device=pattern.device)  # (q, k, bucket)
    one_hot[inside, bucket[inside]] = 1.0
    rows, valid = _kept_rows(pattern, keep)  # (..., head, kept, kept), (..., head, kept)
    per_query = torch.einsum("...qk,qkb->...qb", rows, one_hot)  # (..., head, kept, bucket)
    per_query = torch.where(valid[..., None], per_query, torch.zeros_like(per_query))
    shares = per_query.sum(dim=-2) / valid.sum(dim=-1, keepdim=True).to(pattern.dtype)  # (..., head, bucket)
    return shares, edge_tensor.to(pattern.dtype)


# --- statistics without the matrix -------------------------------------------------------------------------------

def streamed_statistics(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: object = None,
    key_padding_mask: torch.Tensor | None = None,
    n_buckets: int = 16,
    chunk: int = 1024,
):
    """Per-query entropy, mean distance and distance histogram of ``softmax(q k^T / sqrt(d))``, never holding n x n.

    The functions above need the recorded pattern, ``O(n^2)`` memory per head; this one needs only what
    ``hook_q`` / ``hook_k`` / ``hook_v`` record, ``O(n d)``. On CUDA (with Triton) it runs the fused kernel of
    :mod:`explorer.kernels`, which accumulates the statistics with the same online-softmax rescaling as the output;
    elsewhere the chunked reference, ``O(chunk * n)`` memory. Both give the quantities of :func:`row_entropy`,
    :func:`mean_attention_distance` (per query) and :func:`distance_histogram` with edges
    ``0, 1, 2, 4, ..., 2^(n_buckets - 2), inf`` (the last bucket is open-ended).

    Args:
        q, k, v: ``[batch, head, n, d]`` as recorded at ``hook_q`` / ``hook_k`` / ``hook_v`` of self-attention.
        mask: None, or an :mod:`explorer.masks` ``Full``, ``Causal`` or ``SlidingWindow`` mask (what the fused
            kernel supports); others raise a ValueError.
        key_padding_mask: BoolTensor ``[batch, n]``, True = padding.
        n_buckets: histogram buckets (2 .. 32).
        chunk: query rows per step of the CPU path.

    Returns:
        :class:`explorer.kernels.AttentionStats` with ``entropy`` / ``mean_distance`` ``[batch, head, n]`` and
        ``histogram`` ``[batch, head, n, bucket]`` (fp32). Fully masked queries get zeros.
    """
    from explorer import kernels
    from explorer.masks import band_of

    band = band_of(mask)
    if band is None:
        raise ValueError(f"mask must be None, Full, Causal or SlidingWindow for streamed statistics, got {mask!r}")
    causal, window = band
    options = {"causal": causal, "window": window, "key_padding_mask": key_padding_mask, "n_buckets": n_buckets}
    with torch.no_grad():
        if q.is_cuda and kernels.triton_suits(q):  # on CPU the interpreter would be correct but slow
            return kernels.fused_attention(q, k, v, return_stats=True, backend="triton", **options).stats
        return kernels.attention_stats_chunked(q, k, v, chunk=chunk, **options).stats


# --- rollout ------------------------------------------------------------------------------------------------------


def attention_rollout(patterns: torch.Tensor, head_fusion: str = "mean", residual: float = 0.5) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): how much each input token flows into each position, layer by layer.

    Per layer ``l``: fuse the heads (``mean``, elementwise ``max`` or ``min``) into ``A_l``, account for the
    residual connection with ``A_hat_l = residual * I + (1 - residual) * A_l``, renormalise each row to sum to 1
    (``keepdim=True``: rows, not columns; rows of max/min fusion do not sum to 1 before this), then multiply:
    ``R_0 = A_hat_0``, ``R_l = A_hat_l @ R_{l-1}``. The paper's choice is ``residual = 0.5``.

    Args:
        patterns: ``[layer, ..., head, query, key]`` self-attention (``query == key``), rows summing to 1
            (e.g. :func:`stack_patterns`).
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        residual: weight of the identity, in ``[0, 1]``; 0 = raw attention product, 1 = identity.

    Returns:
        Tensor ``[layer, ..., query, key]``: the rollout after every layer; ``[-1]`` is the full rollout.
        Row ``i`` of ``R_l`` is how the output at position ``i`` of layer ``l`` is mixed from the input tokens.
    """
    patterns = _check_pattern("patterns", patterns, 4, "[layer, ..., head, query, key]")
    n = _check_square("patterns", patterns)
    check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    residual = check_real("residual", residual, 0, 1)

    if head_fusion == "mean":
        fused = patterns.mean(dim=-3)  # (layer, ..., query, key)
    elif head_fusion == "max":
        fused = patterns.amax(dim=-3)
    else:
        fused = patterns.amin(dim=-3)
    eye = torch.eye(n, dtype=fused.dtype, device=fused.device)  # (query, key)
    mixed = residual * eye + (1.0 - residual) * fused  # (layer, ..., query, key)
    sums = mixed.sum(dim=-1, keepdim=True)  # (layer, ..., query, 1)
    mixed = mixed / torch.where(sums > 0, sums, torch.ones_like(sums))  # an all-zero row (residual 0) stays zero

    rollout = [mixed[0]]  # R_0 = A_hat_0
    for layer in range(1, mixed.shape[0]):
        rollout.append(mixed[layer] @ rollout[-1])  # R_l = A_hat_l @ R_{l-1}
    return torch.stack(rollout)  # (layer, ..., query, key)


# --- special tokens -----------------------------------------------------------------------------------------------


def sink_share(pattern: torch.Tensor, sink: torch.Tensor) -> torch.Tensor:
    """Share of each head's attention that goes to the ``sink`` keys, averaged over queries.

    BERT heads park much of their attention on ``[CLS]`` and ``[SEP]`` (Clark et al. 2019, Sec. 3); a share near 1
    means the head is mostly "switched off" for this input.

    Args:
        pattern: ``[..., head, query, key]``, rows summing to 1.
        sink: BoolTensor ``[key]`` marking the sink keys (e.g. :func:`special_token_mask`).

    Returns:
        Tensor ``[..., head]`` in ``[0, 1]``.
    """
    pattern = _check_pattern("pattern", pattern, 3, "[..., head, query, key]")
    sink = _check_bool_vector("sink", sink, pattern.shape[-1], "key", pattern.device)
    valid = pattern.sum(dim=-1) > 0  # (..., head, query)
    on_sink = pattern[..., sink].sum(dim=-1)  # (..., head, query)
    return _mean_over_queries(on_sink, valid)  # (..., head)


def special_token_mask(tokens: Sequence[str], special: Iterable[str] = ("[CLS]", "[SEP]", "[PAD]")) -> torch.Tensor:
    """True where a token is one of ``special``: pass ``~mask`` as ``keep`` and ``mask`` as ``sink``.

    Args:
        tokens: the token strings of one input, in order.
        special: token strings to mark (exact match).

    Returns:
        BoolTensor ``[token]``.
    """
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError(f"tokens must be a sequence of str (one per token), got {type(tokens).__name__}")
    if not all(isinstance(t, str) for t in tokens):
        raise TypeError("tokens: every item must be a str")
    if isinstance(special, str):
        raise TypeError(f"special must be an iterable of str such as ('[CLS]', '[SEP]'), got the str {special!r}")
    try:
        marked = set(special)
    except TypeError:
        raise TypeError(f"special must be an iterable of str, got {type(special).__name__}") from None
    if not all(isinstance(s, str) for s in marked):
        raise TypeError("special: every item must be a str")
    return torch.tensor([t in marked for t in tokens], dtype=torch.bool)


# --- display ------------------------------------------------------------------------------------------------------


def downsample_pattern(pattern: torch.Tensor, max_size: int) -> tuple[torch.Tensor, int]:
    """Aggregate a pattern into ``f x f`` token blocks so that neither side exceeds ``max_size`` cells.

    ``f = ceil(max(query, key) / max_size)``. Cell ``(I, J)`` is the attention that the queries of block ``I``
    give, on average, to the keys of block ``J`` together: the key axis is **summed** within a block and the query
    axis **averaged** (the last, partial block over its real size), so rows that summed to 1 still do. A pattern in
    which every query of block ``I`` spreads ``C[I, J]`` evenly over the keys of block ``J`` comes back as ``C``.
    Any ``[..., query, key]`` tensor is accepted (rows need not sum to 1); with ``f == 1`` it is returned as is.

    Args:
        pattern: ``[..., query, key]`` floating tensor.
        max_size: largest number of cells per side (>= 1).

    Returns:
        ``(pooled [..., ceil(query / f), ceil(key / f)], f)``.
    """
    pattern = check_tensor("pattern", pattern, "[..., query, key]", dtype="float", min_ndim=2, nonempty=True)
    check_int("max_size", max_size, 1)
    n_query, n_key = pattern.shape[-2:]
    f = -(-max(n_query, n_key) // max_size)  # ceil
    if f == 1:
        return pattern, 1
    out_q, out_k = -(-n_query // f), -(-n_key // f)
    lead = pattern.shape[:-2]
    padded = torch.nn.functional.pad(pattern, (0, out_k * f - n_key, 0, out_q * f - n_query))  # zeros
    blocks = padded.reshape(*lead, out_q, f, out_k, f).sum(dim=(-3, -1))  # (..., out_q, out_k)
    rows_per_block = torch.full((out_q,), float(f), dtype=pattern.dtype, device=pattern.device)
    rows_per_block[-1] = n_query - (out_q - 1) * f  # the last block may be partial
    return blocks / rows_per_block[:, None], f
