"""LSH attention (Kitaev, Kaiser & Levskaya 2020, "Reformer", https://arxiv.org/abs/2001.04451) in O(n * chunk).

Softmax attention gives almost all of a query's weight to the few keys with the largest ``q . k``. Reformer finds
those keys by hashing instead of scoring all ``n`` of them: vectors at a small angle land in the same bucket of
an angular LSH (:func:`explorer.masks.lsh_hash`), so a query only needs the keys of its own bucket. Per
``(batch, head)`` and per hashing round ``r``:

1. **shared QK**: one projection ``qk`` serves as queries; keys are ``qk / |qk|`` (Reformer normalises the keys
   so that a shared vector does not simply attend to itself by norm; ``normalize_keys=False`` keeps ``qk``).
   Buckets are ``lsh_hash(qk, n_buckets, n_rounds, seed)`` (``n_buckets=1``: one bucket, no hashing), the
   same for queries and keys because they are the same vectors.
2. **sort** the positions by ``(bucket, position)`` -- ``perm_r`` -- so each bucket is a contiguous run.
3. **chunk** the sorted order into ``m = ceil(n / c)`` chunks of ``c = min(chunk, n)`` slots (the last chunk is
   padded with dummy slots that no real query can see).
4. each query attends to the keys of **its own chunk and the previous chunk** (a bucket that straddles a chunk
   boundary is still seen) that **share its bucket**. The first chunk has no previous chunk: unlike Reformer's
   code there is no wrap-around to the last chunk (which matters only when the whole round is one bucket). With
   a single chunk (``chunk >= n``) the query sees its own chunk only.
5. each round gives an output ``o_r`` and the log-sum-exp ``lse_r`` of its (masked) scores;
6. **rounds are combined** by their log-sum-exp, as in the Reformer paper (section 2.3 and its appendix)::

       out_i = sum_r exp(lse_r(i) - logsumexp_r' lse_r'(i)) o_r(i)

   With ``dedup=True`` (default) a key that query ``i`` sees in ``N_ij`` rounds has its score lowered by
   ``log N_ij`` in every one of them (Reformer's duplicate correction), which makes ``out_i`` exactly softmax
   attention over the *union* of the keys seen in any round. With ``dedup=False`` such a key is weighted
   ``N_ij`` times (``out_i = sum_j N_ij e^{s_ij} v_j / sum_j N_ij e^{s_ij}``).

Cost per round and head: ``m * c`` query slots times ``2c`` key slots (``c`` with one chunk) -- O(n * c) scores,
never an ``n x n`` tensor -- plus the hashing (``n * h * n_buckets / 2`` multiply-adds) and an O(n log n) sort.
``explorer.analysis.cost.cost("lsh_attention", ...)`` counts exactly these; ``dedup`` adds ``R^2`` integer
comparisons per score slot (which round sees which pair), counted as zero FLOPs like every mask.

Not done here (Reformer does them, this teaching version does not): masking a token's attention to itself,
causal masking, reversible layers and chunked feed-forward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from explorer._checks import check_bool, check_floating, check_int, check_shape, check_tensor
from explorer.hooks import HookPoint
from explorer.masks import lsh_hash

__all__ = ["LSHAttention", "lsh_attention", "lsh_attention_rounds", "combine_rounds", "lsh_chunks"]


def lsh_chunks(n: int, chunk: int) -> tuple[int, int, int]:
    """``(c, m, keys)``: chunk length ``c = min(chunk, n)``, ``m = ceil(n / c)`` chunks, key slots per query.

    ``keys`` is ``2 c`` (own and previous chunk) when there are several chunks and ``c`` when there is one.
    A round computes ``m * c * keys`` scores per head (padding slots included).
    """
    check_int("n", n, 1)
    check_int("chunk", chunk, 1)
    c = min(chunk, n)
    m = -(-n // c)
    return c, m, (2 * c if m > 1 else c)


def _check_buckets_args(n_buckets: object, n_rounds: object, chunk: object, seed: object) -> None:
    check_int("n_buckets", n_buckets, 1)
    if n_buckets > 1 and n_buckets % 2:
        raise ValueError(f"n_buckets must be 1 or even (lsh_hash splits a rotation and its negation), "
                         f"got {n_buckets}")
    check_int("n_rounds", n_rounds, 1)
    check_int("chunk", chunk, 1)
    check_int("seed", seed, 0)


def lsh_attention_rounds(
    qk: torch.Tensor,
    v: torch.Tensor,
    n_buckets: int = 8,
    n_rounds: int = 2,
    chunk: int = 64,
    *,
    seed: int = 0,
    scale: float | None = None,
    normalize_keys: bool = True,
    dedup: bool = True,
    buckets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each hashing round's LSH attention output and log-sum-exp (steps 1-5 of the module docstring).

    Args:
        qk: shared queries/keys ``[..., token, head_dim]`` (float).
        v: values ``[..., token, value_dim]``, same leading dims and tokens as ``qk``.
        n_buckets: 1 or an even int >= 2.
        n_rounds: hashing rounds (>= 1).
        chunk: chunk length of the sorted order (>= 1); a chunk longer than the sequence is the whole sequence.
        seed: seed of the random rotations (int >= 0), see :func:`explorer.masks.lsh_hash`.
        scale: score scale; default ``1 / sqrt(head_dim)``.
        normalize_keys: keys are ``qk / |qk|`` (Reformer) when True, ``qk`` itself when False.
        dedup: lower the score of a key seen in ``N`` rounds by ``log N`` (see the module docstring).
        buckets: optional LongTensor ``[round, ..., token]`` of buckets in ``[0, n_buckets)`` to use instead of
            hashing (``n_rounds`` is then its first size); for experiments and hand-made examples.

    Returns:
        ``(round_out, round_lse)``: ``[round, ..., token, value_dim]`` and ``[round, ..., token]``.
    """
    check_tensor("qk", qk, "[..., token, head_dim]", dtype="float", min_ndim=2)
    check_floating("v", v)
    if v.dtype != qk.dtype:
        raise TypeError(f"v must have the dtype of qk ({qk.dtype}), got {v.dtype}")
    if v.ndim != qk.ndim or v.shape[:-1] != qk.shape[:-1]:
        raise ValueError(f"v must have shape [..., token, value_dim] with qk's leading dims and tokens "
                         f"{tuple(qk.shape[:-1])}, got {tuple(v.shape)}")
    if buckets is not None:
        check_tensor("buckets", buckets, "[round, ..., token]", dtype=torch.int64)
        if buckets.ndim != qk.ndim or buckets.shape[1:] != qk.shape[:-1]:
            raise ValueError(f"buckets must have shape [round, ...qk leading dims, token] = "
                             f"(*, {', '.join(map(str, qk.shape[:-1]))}), got {tuple(buckets.shape)}")
        n_rounds = buckets.shape[0]
    _check_buckets_args(n_buckets, n_rounds, chunk, seed)
    if buckets is not None and buckets.numel() and (int(buckets.min()) < 0 or int(buckets.max()) >= n_buckets):
        raise ValueError(f"buckets must lie in [0, n_buckets={n_buckets}), got values in "
                         f"[{int(buckets.min())}, {int(buckets.max())}]")
    check_bool("normalize_keys", normalize_keys)
    check_bool("dedup", dedup)

    *lead, n, h = qk.shape
    hv = v.shape[-1]
    g = math.prod(lead)
    x = qk.reshape(g, n, h)  # (group, token, head_dim)
    if buckets is None:
        if n_buckets == 1:
            b = torch.zeros(n_rounds, g, n, dtype=torch.int64, device=qk.device)
        else:
            b = lsh_hash(x, n_buckets, n_rounds, seed)  # (round, group, token)
    else:
        b = buckets.reshape(n_rounds, g, n).to(qk.device)
    scale = 1.0 / math.sqrt(h) if scale is None else float(scale)
    c, m, _ = lsh_chunks(n, chunk)
    n_pad = m * c

    # a sentinel token (index n): zero vectors, bucket -1, so no real query ever sees it
    keys = F.normalize(x, dim=-1) if normalize_keys else x
    x_ext = F.pad(x * scale, (0, 0, 0, 1))  # (group, token + 1, head_dim); the scale folded into the queries
    k_ext = F.pad(keys, (0, 0, 0, 1))  # (group, token + 1, head_dim)
    v_ext = F.pad(v.reshape(g, n, hv), (0, 0, 0, 1))  # (group, token + 1, value_dim)
    b_ext = F.pad(b, (0, 1), value=-1)  # (round, group, token + 1)

    position = torch.arange(n, device=qk.device)
    perm = (b * n + position).argsort(dim=-1)  # (round, group, slot) -> token, sorted by (bucket, position)
    inv = torch.empty_like(perm).scatter_(-1, perm, position.expand_as(perm))  # (round, group, token) -> slot
    q_ids = F.pad(perm, (0, n_pad - n), value=n).view(n_rounds, g, m, c)  # (round, group, chunk, slot)
    if m > 1:  # keys: previous chunk (the first chunk's is all sentinels), then own chunk
        previous = F.pad(q_ids[:, :, :-1], (0, 0, 1, 0), value=n)  # (round, group, chunk, slot)
        k_ids = torch.cat([previous, q_ids], dim=-1)  # (round, group, chunk, 2c)
    else:
        k_ids = q_ids  # (round, group, 1, c)
    row = torch.arange(g, device=qk.device).view(1, g, 1, 1)
    q_c = x_ext[row, q_ids]  # (round, group, chunk, c, head_dim)
    k_c = k_ext[row, k_ids]  # (round, group, chunk, keys, head_dim)
    v_c = v_ext[row, k_ids]  # (round, group, chunk, keys, value_dim)

    scores = q_c @ k_c.transpose(-2, -1)  # (round, group, chunk, c, keys), scaled
    r_idx = torch.arange(n_rounds, device=qk.device).view(n_rounds, 1, 1, 1)
    bq, bk = b_ext[r_idx, row, q_ids], b_ext[r_idx, row, k_ids]  # (round, group, chunk, c | keys)
    scores.masked_fill_(bq[..., :, None] != bk[..., None, :], float("-inf"))  # other buckets
    if dedup and n_rounds > 1:
        scores.sub_(_round_counts(b_ext, inv, q_ids, k_ids, c, m).to(scores.dtype).log_())
    lse = torch.logsumexp(scores, dim=-1)  # (round, group, chunk, c); finite: every query sees itself
    pattern = scores.sub_(lse[..., None]).exp_()  # (round, group, chunk, c, keys), in place
    out_sorted = (pattern @ v_c).view(n_rounds, g, n_pad, hv)  # (round, group, slot, value_dim)

    round_out = out_sorted.gather(2, inv[..., None].expand(n_rounds, g, n, hv))  # (round, group, token, value_dim)
    round_lse = lse.view(n_rounds, g, n_pad).gather(2, inv)  # (round, group, token)
    return round_out.view(n_rounds, *lead, n, hv), round_lse.view(n_rounds, *lead, n)


def _round_counts(b_ext: torch.Tensor, inv: torch.Tensor, q_ids: torch.Tensor, k_ids: torch.Tensor, c: int,
                  m: int) -> torch.Tensor:
    """``N_ij``: in how many rounds query ``i`` sees key ``j``, for every score slot (at least 1).

    In round ``r'`` the pair is seen when the two share a bucket and ``j``'s chunk is ``i``'s or the one before.
    Both tests are one: with ``code = bucket * (2 m + 2) + chunk`` (``chunk = slot // c`` in ``0 .. m - 1``),
    ``code_i - code_j`` is 0 or 1 exactly when the buckets are equal and ``chunk_i - chunk_j`` is 0 or 1 (a bucket
    difference moves the code by at least ``2 m + 2``, more than any chunk difference can make up). Sentinels have
    bucket -1 and chunk -2 and so never pair with a real token.
    """
    rounds, g = inv.shape[:2]
    chunk_of = F.pad(torch.div(inv, c, rounding_mode="floor"), (0, 1), value=-2)  # (round, group, token + 1)
    code = (b_ext * (2 * m + 2) + chunk_of).to(torch.int32)  # (round, group, token + 1)
    row = torch.arange(g, device=inv.device).view(1, g, 1, 1)
    counts = torch.zeros(q_ids.shape + k_ids.shape[-1:], dtype=torch.int32, device=inv.device)
    for r in range(rounds):
        step = code[r][row, q_ids][..., :, None] - code[r][row, k_ids][..., None, :]  # (.., c, keys)
        counts += step.bitwise_right_shift_(1) == 0  # step in {0, 1}: seen in round r
    return counts.clamp_(min=1)  # sentinel-only rows; every real pair of a round counts that round


def combine_rounds(round_out: torch.Tensor, round_lse: torch.Tensor) -> torch.Tensor:
    """``sum_r softmax_r(lse_r) o_r``: the rounds weighted by their share of the total softmax mass.

    Args:
        round_out: ``[round, ..., token, value_dim]``; round_lse: ``[round, ..., token]``.

    Returns:
        ``[..., token, value_dim]`` (the single round itself when there is one).
    """
    if round_out.shape[0] == 1:
        return round_out[0]
    weights = torch.softmax(round_lse, dim=0)  # (round, ..., token)
    return (weights[..., None] * round_out).sum(dim=0)


def lsh_attention(
    qk: torch.Tensor,
    v: torch.Tensor,
    n_buckets: int = 8,
    n_rounds: int = 2,
    chunk: int = 64,
    *,
    seed: int = 0,
    scale: float | None = None,
    normalize_keys: bool = True,
    dedup: bool = True,
    buckets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reformer's LSH attention with shared queries/keys: O(n * chunk) time and memory per round.

    Arguments as in :func:`lsh_attention_rounds`; the rounds are combined by :func:`combine_rounds`.

    Returns:
        ``[..., token, value_dim]``.
    """
    return combine_rounds(*lsh_attention_rounds(qk, v, n_buckets, n_rounds, chunk, seed=seed, scale=scale,
                                                normalize_keys=normalize_keys, dedup=dedup, buckets=buckets))


class LSHAttention(nn.Module):
    """Multi-head LSH self-attention (shared QK), batch-first, with named hook points.

    Args:
        embed_dim: model width (>= 1), divisible by ``num_heads``.
        num_heads: number of heads (>= 1).
        n_buckets, n_rounds, chunk, seed, normalize_keys, dedup: as in :func:`lsh_attention_rounds`.
        bias: add biases to the three projections (``qk``, ``v``, ``out``).
        device, dtype: of the parameters.

    Hook points (shapes): ``hook_qk`` / ``hook_v`` ``[batch, head, query, head_dim]``, ``hook_z``
    ``[batch, head, query, head_dim]``, ``hook_out`` ``[batch, query, embed]``. There is no ``hook_pattern``:
    the pattern is never an ``n x n`` tensor here.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        n_buckets: int = 8,
        n_rounds: int = 2,
        chunk: int = 64,
        seed: int = 0,
        normalize_keys: bool = True,
        dedup: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_int("embed_dim", embed_dim, 1)
        check_int("num_heads", num_heads, 1)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        _check_buckets_args(n_buckets, n_rounds, chunk, seed)
        check_bool("normalize_keys", normalize_keys)
        check_bool("dedup", dedup)
        check_bool("bias", bias)
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.n_buckets, self.n_rounds, self.chunk, self.seed = n_buckets, n_rounds, chunk, seed
        self.normalize_keys, self.dedup = normalize_keys, dedup
        factory = {"device": device, "dtype": dtype}
        self.qk_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.hook_qk = HookPoint(("batch", "head", "query", "head_dim"))
        self.hook_v = HookPoint(("batch", "head", "query", "head_dim"))
        self.hook_z = HookPoint(("batch", "head", "query", "head_dim"))
        self.hook_out = HookPoint(("batch", "query", "embed"))

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, n_buckets={self.n_buckets}, "
                f"n_rounds={self.n_rounds}, chunk={self.chunk}, seed={self.seed}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """LSH self-attention of ``x`` ``[batch, token, embed]``; returns ``[batch, token, embed]``."""
        check_floating("x", x, self.qk_proj.weight.dtype)
        check_shape("x", x, (None, None, self.embed_dim), "(batch, token, embed)")
        batch, n, _ = x.shape
        qk = self.qk_proj(x).view(batch, n, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, n, self.num_heads, self.head_dim).transpose(1, 2)
        qk = self.hook_qk(qk)  # (batch, head, token, head_dim)
        v = self.hook_v(v)  # (batch, head, token, head_dim)
        z = lsh_attention(qk, v, self.n_buckets, self.n_rounds, self.chunk, seed=self.seed,
                          normalize_keys=self.normalize_keys, dedup=self.dedup)
        z = self.hook_z(z)  # (batch, head, token, head_dim)
        out = z.transpose(1, 2).reshape(batch, n, self.embed_dim)  # (batch, token, embed)
        return self.hook_out(self.out_proj(out))
