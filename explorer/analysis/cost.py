"""Analytic cost model: FLOPs, bytes moved and peak activation memory of the layers the explorer compares.

Everything here is closed-form arithmetic on the shapes -- no tensor is ever allocated -- so it is cheap enough to run
on every slider move and to guard a computation before it starts (``explorer.guard``).

Conventions (one for every op):

* **FLOPs**: a multiply-add counts as 2 FLOPs, so a matmul ``[m, k] @ [k, n]`` costs ``2 m n k`` -- the same
  convention as ``torch.utils.flop_counter.FlopCounterMode``. Bias terms are not counted (the layers have none here).
* **bytes_moved**: reads of the inputs and weights, plus writes of the outputs and of every materialised
  intermediate, each at ``dtype`` size (complex intermediates at twice ``dtype`` size). Re-reads of intermediates
  are *not* counted, so this is a lower bound on memory traffic that still separates "materialises n x n" from
  "does not".
* **peak_memory**: bytes of activations alive at the peak -- inputs + outputs + intermediates -- not weights. The
  model is the straight-line eager reference implementation in which every named tensor stays alive until the
  function returns, so the peak is the sum of all of them.

Shapes (``B = batch``, ``H = heads``, ``h = d / H`` the head width, ``s`` = bytes per element of ``dtype``):

* sequence ops take ``x [B, n, d]``; attention ops take ``q, k, v [B, H, n, h]`` each, i.e. ``d`` is the model width.
  Only the attention *core* is counted -- ``Q K^T``, softmax, ``P V`` -- not the q/k/v/output projections, which
  cost the same ``8 B n d^2`` for every attention variant and would hide the difference being shown;
* ``conv1d``: ``[B, d, n] -> [B, d, n]``, weight ``[d, d, kernel_size]``, ``padding="same"``;
* ``depthwise_conv1d``: the same with ``groups = d``, weight ``[d, 1, kernel_size]``;
* ``conv2d``: ``n`` is the image side, ``[B, d, n, n] -> [B, d, n, n]``, weight ``[d, d, kernel_size, kernel_size]``;
* ``fft_conv``: a causal long convolution of each channel with its own length-``n`` filter (weight ``[d, n]``),
  computed with ``rfft`` at length ``L = 2 n`` (zero padding so the circular convolution equals the linear one).

``lsh_attention`` is Reformer's LSH attention as implemented in ``explorer.layers.lsh_attention`` (shared q/k:
inputs ``qk, v [B, H, n, h]``): ``n_rounds`` hashings into ``n_buckets`` buckets, sorted, cut into chunks of
``chunk``; each query sees its own and the previous chunk. Defaults ``n_buckets = 8``, ``n_rounds = 2``,
``chunk = 64`` (Reformer's chunk length; fixed buckets keep the hashing linear in ``n``).

Windowed attention uses the convention of ``explorer.masks``: a non-causal window of ``window`` keys covers offsets
``-((window - 1) // 2) .. window // 2`` around the query, clipped at the sequence edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from explorer._checks import check_choice, check_positive_int, check_type
from explorer.layers.lsh_attention import lsh_chunks
from explorer.masks import window_offsets

__all__ = ["OPS", "Cost", "cost", "cost_table", "attention_matrix_bytes"]

OPS = (
    "conv1d",
    "depthwise_conv1d",
    "conv2d",
    "fft_conv",
    "attention_math",
    "attention_fused",
    "sliding_window_attention",
    "block_sparse_attention",
    "linear_attention",
    "lsh_attention",
)

# FLOPs per score of a numerically stable softmax: running max (1 compare), subtract max (1), exp (1), row sum (1),
# divide by the sum (1). The 1/sqrt(h) scale is folded into q (B n d FLOPs, not counted). FlopCounterMode counts
# none of these, so tests compare ``flops - SOFTMAX_FLOPS_PER_SCORE * scores`` with the counter.
SOFTMAX_FLOPS_PER_SCORE = 5

# FLOPs of one real FFT of length L: 2.5 L log2 L, i.e. half the classic 5 N log2 N of a radix-2 complex FFT
# (a real transform of length L is done as a complex one of length L/2 plus O(L) post-processing, ignored here).
RFFT_FLOPS_CONSTANT = 2.5

# FLOPs of one complex multiply (a + ib)(c + id): 4 multiplies + 2 adds.
COMPLEX_MUL_FLOPS = 6

# LSH attention with several rounds lowers each score by log N_ij (how many rounds see the pair): 1 FLOP per score
# slot (the subtraction; the integer count and its log, like every mask comparison, are not counted).
LSH_DEDUP_FLOPS_PER_SCORE = 1


@dataclass(frozen=True)
class Cost:
    """Analytic cost of one forward pass of an op."""

    flops: float  # multiply-adds counted as 2 FLOPs
    bytes_moved: float  # reads of inputs/weights + writes of outputs and materialised intermediates, at dtype size
    peak_memory: float  # bytes of activations alive at the peak (inputs + outputs + intermediates), not weights


def _itemsize(dtype: object) -> int:
    check_type("dtype", dtype, torch.dtype, "a torch.dtype")
    return dtype.itemsize  # attribute lookup only: no tensor is allocated


def attention_matrix_bytes(n: int, heads: int = 1, batch: int = 1, dtype: torch.dtype = torch.float32) -> float:
    """Bytes of one ``[batch, heads, n, n]`` attention tensor (scores or probabilities).

    Args:
        n: sequence length (queries = keys).
        heads: number of heads.
        batch: batch size.
        dtype: element type.

    Returns:
        ``batch * heads * n * n * dtype.itemsize``.
    """
    check_positive_int("n", n)
    check_positive_int("heads", heads)
    check_positive_int("batch", batch)
    return float(batch * heads * n * n * _itemsize(dtype))


def sliding_window_pairs(n: int, window: int) -> int:
    """Number of (query, key) pairs of a centred window of ``window`` keys over ``n`` positions, edges clipped.

    Query ``i`` sees keys ``i - left .. i + right`` with ``left = (window - 1) // 2`` and ``right = window // 2``
    (``left + right + 1 = window``). Away from the edges that is ``window`` keys; the first ``left`` queries lose
    ``left - i`` keys on the left, ``sum_{i<left} (left - i) = left (left + 1) / 2``, and symmetrically the last
    ``right`` queries lose ``right (right + 1) / 2``. No query is clipped on both sides while ``window <= n``, so

        pairs = n * window - left (left + 1) / 2 - right (right + 1) / 2.

    Example: ``n = 5, window = 3`` -> ``15 - 1 - 1 = 13`` (rows see 2, 3, 3, 3, 2 keys).
    """
    check_positive_int("n", n)
    check_positive_int("window", window)
    if window > n:
        raise ValueError(f"window must be <= n, got window={window} > n={n}")
    low, high = window_offsets(window, causal=False)  # the one definition of a window: explorer.masks
    left, right = -low, high
    return n * window - left * (left + 1) // 2 - right * (right + 1) // 2


def block_sparse_pairs(n: int, block: int) -> int:
    """Number of (query, key) pairs of a block-diagonal mask with blocks of ``block`` positions.

    The sequence splits into ``n // block`` full blocks and one last block of ``r = n % block`` positions (if any);
    every position attends to its whole block, so ``pairs = (n // block) * block^2 + r^2``. ``block >= n`` gives one
    block and ``n^2`` pairs (dense).

    Example: ``n = 10, block = 4`` -> ``2 * 16 + 2^2 = 36``.
    """
    check_positive_int("n", n)
    check_positive_int("block", block)
    full, rest = divmod(n, block)
    return full * block * block + rest * rest


def _attention_over_pairs(pairs: int, *, n: int, d: int, heads: int, batch: int, s: int, scores: bool) -> Cost:
    """Attention core over ``pairs`` (query, key) pairs per head.

    FLOPs: each pair costs a dot product of width ``h`` in ``Q K^T`` (``2 h``) and an axpy of width ``h`` in ``P V``
    (``2 h``), plus the softmax on its score; summed over ``B H`` heads:

        flops = 4 B H pairs h + 5 B H pairs = 4 B d pairs + 5 B H pairs.

    With ``scores=True`` (math path) the scores ``S`` and probabilities ``P`` are materialised as ``[B, H, pairs]``
    tensors; otherwise (fused / flash-style kernels) they live in on-chip tiles and only the per-row log-sum-exp
    ``[B, H, n]`` is written (at ``dtype`` size, kept for the backward pass).
    """
    h = d // heads
    flops = 4 * batch * heads * pairs * h + SOFTMAX_FLOPS_PER_SCORE * batch * heads * pairs
    qkv = 3 * batch * n * d  # q, k, v
    out = batch * n * d
    inter = 2 * batch * heads * pairs if scores else batch * heads * n  # S and P, or lse
    bytes_moved = (qkv + out + inter) * s
    peak = (qkv + out + inter) * s
    return Cost(float(flops), float(bytes_moved), float(peak))


def _conv(n: int, d: int, kernel_size: int, batch: int, s: int, *, depthwise: bool, two_d: bool) -> Cost:
    """Stride-1 ``padding="same"`` convolution, no bias.

    Every output element is a dot product over ``c_in / groups`` channels times the kernel footprint, so

        flops = 2 * (output elements) * (c_in / groups) * (kernel footprint)

    which is ``2 B d^2 k n`` (conv1d), ``2 B d k n`` (depthwise) and ``2 B d^2 k^2 n^2`` (conv2d) -- exactly
    ``FlopCounterMode``'s ``conv_flop_count``. Bytes: read ``x`` and the weight, write the output; peak: ``x`` +
    output (no intermediates).
    """
    positions = n * n if two_d else n
    footprint = kernel_size * kernel_size if two_d else kernel_size
    c_in_per_group = 1 if depthwise else d
    act = batch * d * positions  # x and output have the same shape
    weight = d * c_in_per_group * footprint
    flops = 2 * act * c_in_per_group * footprint
    return Cost(float(flops), float((2 * act + weight) * s), float(2 * act * s))


def _fft_conv(n: int, d: int, batch: int, s: int) -> Cost:
    """Causal long convolution of each of ``d`` channels with a length-``n`` filter via ``rfft`` at ``L = 2 n``.

    Steps (per batch element and channel unless noted): ``X = rfft(x, L)``; ``K = rfft(k, L)`` once per channel
    (the filter is shared over the batch); ``Y = X * K`` on ``F = L / 2 + 1`` complex bins; ``y = irfft(Y, L)``,
    of which the first ``n`` samples are the output (a view). With a real FFT of length ``L`` costing
    ``2.5 L log2 L`` FLOPs (``RFFT_FLOPS_CONSTANT``; ``log2`` of a non-power-of-two ``L`` is used as is) and a
    complex multiply 6 FLOPs:

        flops = B d (2 * 2.5 L log2 L + 6 F) + d * 2.5 L log2 L.

    Hand example ``n = 4, d = 1, B = 1``: ``L = 8``, one FFT ``2.5 * 8 * 3 = 60``, ``F = 5`` bins ``* 6 = 30``,
    total ``2 * 60 + 30 + 60 = 210``.

    Bytes: read ``x [B, n, d]`` and the filter ``[d, n]``; write ``X, Y [B, d, F]`` complex, ``K [d, F]`` complex
    and ``y [B, d, L]``. Peak: ``x, X, K, Y, y`` (``K`` is an activation of the filter, so it counts).
    """
    L = 2 * n
    F = L // 2 + 1
    fft = RFFT_FLOPS_CONSTANT * L * math.log2(L)
    flops = batch * d * (2 * fft + COMPLEX_MUL_FLOPS * F) + d * fft
    x = batch * n * d
    weight = d * n
    spectra = (2 * batch * d * F + d * F) * 2  # X, Y and K, complex = 2 reals
    y = batch * d * L
    return Cost(float(flops), float((x + weight + spectra + y) * s), float((x + spectra + y) * s))


def _linear_attention(n: int, d: int, heads: int, batch: int, s: int) -> Cost:
    """Kernelised linear attention (Katharopoulos et al. 2020, https://arxiv.org/abs/2006.16236).

    ``out_i = phi(q_i) S / (phi(q_i) . z)`` with the summaries ``S = phi(K)^T V  [h, h]`` and ``z = sum_j phi(k_j)
    [h]`` per head. Per head (``h = d / H``):

    * ``S = phi(K)^T V``: ``[h, n] @ [n, h]`` -> ``2 n h^2``;
    * ``num = phi(Q) S``: ``[n, h] @ [h, h]`` -> ``2 n h^2``;
    * ``z = sum_j phi(k_j)``: ``n h`` adds; ``den = phi(Q) z``: ``[n, h] @ [h, 1]`` -> ``2 n h``;
    * ``out = num / den``: ``n h`` divides.

    Summed over ``B H`` heads: ``flops = 4 B n d^2 / H + 4 B n d`` -- linear in ``n``. The elementwise feature map
    ``phi = elu + 1`` is not counted (it is O(n d), like the scale of softmax attention). The matmul part
    (``4 B n d^2 / H + 2 B n d``) is what ``FlopCounterMode`` sees.

    Bytes: read q, k, v; write ``phi(Q), phi(K), num, out [B, n, d]``, ``S [B, H, h, h]``, ``z [B, H, h]``,
    ``den [B, H, n]``. Peak: all of those plus q, k, v.
    """
    h = d // heads
    flops = 4 * batch * n * d * h + 4 * batch * n * d
    qkv = 3 * batch * n * d
    inter = 4 * batch * n * d + batch * heads * h * h + batch * heads * h + batch * heads * n
    return Cost(float(flops), float((qkv + inter) * s), float((qkv + inter) * s))


def lsh_pairs(n: int, chunk: int) -> int:
    """Score slots of one LSH attention round and head: ``m * c * K``, every slot the chunked kernel computes.

    The sorted order is cut into ``m = ceil(n / c)`` chunks of ``c = min(chunk, n)`` slots (the last one padded);
    each query slot scores ``K = 2 c`` keys (its own chunk and the previous one) when ``m > 1``, and ``K = c`` when
    the whole sequence is one chunk. Slots of other buckets, of padding and of the first chunk's (absent) previous
    chunk are computed and then masked, so they count. About ``2 n c`` -- linear in ``n`` for a fixed chunk.

    Example: ``n = 10, chunk = 4`` -> ``m = 3`` chunks of 4 (12 slots, 2 padding), ``K = 8``: ``96`` slots.
    ``n = 10, chunk = 16`` -> one chunk of 10: ``100`` (dense).
    """
    c, m, keys = lsh_chunks(n, chunk)  # the layer's own chunking (checks n and chunk)
    return m * c * keys


def _lsh_attention(n: int, d: int, heads: int, batch: int, s: int, n_buckets: int, n_rounds: int,
                   chunk: int) -> Cost:
    """Reformer's LSH attention with shared q/k (``explorer.layers.lsh_attention``), ``R = n_rounds`` rounds.

    With ``c = min(chunk, n)``, ``m = ceil(n / c)`` chunks, ``n_pad = m c`` sorted slots, ``K = 2 c`` key slots per
    query (``c`` when ``m = 1``) and ``P = n_pad K`` score slots per head and round (``lsh_pairs``):

    * hashing: ``x R_r`` with ``R_r [h, n_buckets / 2]`` per round and head -> ``2 n h (n_buckets / 2)``;
      summed: ``B n d n_buckets R`` (0 when ``n_buckets = 1``: no hashing);
    * sorting by (bucket, position): O(R B H n log n) comparisons, counted as **0 FLOPs** (no arithmetic; like
      every mask comparison here);
    * per round, the attention core over the ``P`` slots: ``4 B d P + 5 B H P`` as for the other attentions
      (``Q K^T`` and ``P V`` matmuls plus the softmax), plus, when ``R > 1``, ``1`` FLOP per slot for the
      duplicate correction ``- log N_ij`` (``LSH_DEDUP_FLOPS_PER_SCORE``; the layer's default ``dedup=True``);
    * combining the rounds (``R > 1``): ``out = sum_r w_r o_r`` -> ``2 B n d R``; the softmax over the ``R``
      log-sum-exps (O(B H n R)) is not counted, nor the key normalisation and the ``1/sqrt(h)`` scale (O(B n d)).

    So ``flops = B n d b R + R (4 B d P + 5 B H P) + [R > 1] (B H P R + 2 B n d R)``; the matmul part
    (``B n d b R + 4 B d P R``) is what ``FlopCounterMode`` sees.

    Peak memory -- the float tensors of the implementation, all alive at the end (``dtype`` size):
    inputs ``qk, v`` (``2 B n d``); normalised keys and scaled queries (``2 B n d``); their padded copies with
    ``v`` (``3 B (n + 1) d``); per round the sorted queries (``B n_pad d``), the key and value windows
    (``2 B n_pad d K / c``), the scores (the pattern overwrites them: ``B H P``), the log-sum-exp sorted and
    unsorted (``B H (n_pad + n)``), the output sorted and unsorted (``B (n_pad + n) d``); the output (``B n d``).
    When ``R > 1`` the per-slot round counts ``N_ij`` are int32 (``4 B H P R`` bytes). Not counted: the int64
    bookkeeping (buckets, sort permutations, slot ids -- O(R B H n) values) and boolean masks. Bytes moved: the
    same plus the read of the random rotations (``R h n_buckets / 2``, regenerated per call like a weight).
    """
    h = d // heads
    c, m, keys = lsh_chunks(n, chunk)
    n_pad = m * c
    pairs = n_pad * keys  # lsh_pairs(n, chunk)
    hashing = batch * n * d * n_buckets * n_rounds if n_buckets > 1 else 0
    core = n_rounds * (4 * batch * d * pairs + SOFTMAX_FLOPS_PER_SCORE * batch * heads * pairs)
    extra = 0
    if n_rounds > 1:
        extra = LSH_DEDUP_FLOPS_PER_SCORE * batch * heads * pairs * n_rounds + 2 * batch * n * d * n_rounds
    flops = hashing + core + extra
    floats = (2 * batch * n * d + 2 * batch * n * d + 3 * batch * (n + 1) * d
              + n_rounds * (batch * n_pad * d + 2 * batch * n_pad * d * keys // c + batch * heads * pairs
                            + batch * heads * (n_pad + n) + batch * (n_pad + n) * d)
              + batch * n * d)
    counts = 4 * batch * heads * pairs * n_rounds if n_rounds > 1 else 0
    peak = floats * s + counts
    rotations = n_rounds * h * (n_buckets // 2) * s
    return Cost(float(flops), float(peak + rotations), float(peak))


def cost(
    op: str,
    n: int,
    d: int = 64,
    *,
    heads: int = 1,
    kernel_size: int = 3,
    window: int = 128,
    block: int = 64,
    n_buckets: int = 8,
    n_rounds: int = 2,
    chunk: int = 64,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
) -> Cost:
    """Analytic FLOPs, bytes moved and peak activation memory of one forward pass of ``op``.

    Per op (``B = batch``, ``H = heads``, ``k = kernel_size``, ``s = dtype.itemsize``; see the module docstring for
    shapes and the private helpers for the derivations):

    * ``conv1d``: ``flops = 2 B d^2 k n``; ``depthwise_conv1d``: ``2 B d k n``; ``conv2d``: ``2 B d^2 k^2 n^2``;
    * ``fft_conv``: ``B d (5 L log2 L + 6 (L/2 + 1)) + 2.5 d L log2 L`` with ``L = 2 n``;
    * ``attention_math``: ``4 B d n^2 + 5 B H n^2``; materialises ``S`` and ``P`` ``[B, H, n, n]``, so
      ``peak = (4 B n d + 2 B H n^2) s`` -- quadratic;
    * ``attention_fused``: same FLOPs, ``peak = (4 B n d + B H n) s`` (q, k, v, out and the per-row lse) -- linear;
    * ``sliding_window_attention``: ``4 B d P + 5 B H P`` with the exact pair count ``P`` of
      ``sliding_window_pairs`` (about ``n * window``); fused-kernel memory;
    * ``block_sparse_attention``: the same with ``P`` from ``block_sparse_pairs``; fused-kernel memory;
    * ``linear_attention``: ``4 B n d^2 / H + 4 B n d``;
    * ``lsh_attention``: ``B n d b R + R (4 B d P + 5 B H P) + [R > 1] (B H P R + 2 B n d R)`` with ``b =
      n_buckets``, ``R = n_rounds`` and ``P = lsh_pairs(n, chunk)`` (about ``2 n chunk``) score slots per head and
      round: hashing + chunked attention, sorting counted as 0 FLOPs; memory ``O(R B n (d + H chunk))``, linear
      in ``n`` (see ``_lsh_attention``).

    Attention counts only the core (``Q K^T``, softmax, ``P V``), not the projections.

    Args:
        op: one of ``OPS``.
        n: sequence length (image side for ``conv2d``).
        d: model width / channels.
        heads: attention heads; must divide ``d``.
        kernel_size: convolution kernel size.
        window: keys per query for ``sliding_window_attention``; must be ``<= n``.
        block: block size for ``block_sparse_attention``.
        n_buckets: hash buckets for ``lsh_attention``: 1 (no hashing) or even.
        n_rounds: hashing rounds for ``lsh_attention``.
        chunk: chunk length of ``lsh_attention``'s sorted order (a chunk longer than ``n`` is the whole sequence).
        batch: batch size.
        dtype: element type; sets the bytes per element.

    Returns:
        A ``Cost``.

    Raises:
        ValueError: unknown ``op``; a non-positive size; ``window > n`` (for ``sliding_window_attention``, the only
            op that uses ``window``); an odd ``n_buckets > 1``; ``d % heads != 0``.
        TypeError: a size that is not an int, or ``dtype`` that is not a ``torch.dtype``.
    """
    check_choice("op", op, OPS)
    for name, value in (
        ("n", n),
        ("d", d),
        ("heads", heads),
        ("kernel_size", kernel_size),
        ("window", window),
        ("block", block),
        ("n_buckets", n_buckets),
        ("n_rounds", n_rounds),
        ("chunk", chunk),
        ("batch", batch),
    ):
        check_positive_int(name, value)
    if n_buckets > 1 and n_buckets % 2:
        raise ValueError(f"n_buckets must be 1 or even (LSH splits a rotation and its negation), got {n_buckets}")
    s = _itemsize(dtype)
    if op == "sliding_window_attention" and window > n:  # only checked where it is used: the default is 128
        raise ValueError(f"window must be <= n, got window={window} > n={n}")
    if d % heads != 0:
        raise ValueError(f"d must be divisible by heads, got d={d}, heads={heads}")

    if op == "conv1d":
        return _conv(n, d, kernel_size, batch, s, depthwise=False, two_d=False)
    if op == "depthwise_conv1d":
        return _conv(n, d, kernel_size, batch, s, depthwise=True, two_d=False)
    if op == "conv2d":
        return _conv(n, d, kernel_size, batch, s, depthwise=False, two_d=True)
    if op == "fft_conv":
        return _fft_conv(n, d, batch, s)
    if op == "linear_attention":
        return _linear_attention(n, d, heads, batch, s)
    if op == "lsh_attention":
        return _lsh_attention(n, d, heads, batch, s, n_buckets, n_rounds, chunk)
    common = dict(n=n, d=d, heads=heads, batch=batch, s=s)
    if op == "attention_math":
        return _attention_over_pairs(n * n, scores=True, **common)
    if op == "attention_fused":
        return _attention_over_pairs(n * n, scores=False, **common)
    if op == "sliding_window_attention":
        return _attention_over_pairs(sliding_window_pairs(n, window), scores=False, **common)
    return _attention_over_pairs(block_sparse_pairs(n, block), scores=False, **common)  # block_sparse_attention


def cost_table(ops, ns, d: int = 64, window: int = 128) -> str:
    """A text table of ``cost`` per op (rows) and size (columns): FLOPs and peak activation memory.

    Each cell is ``cost(op, n, d, window=window)`` (defaults otherwise: one head, batch 1, float32) printed as
    FLOPs in ``%.2e`` and the peak in ``explorer.guard.human_bytes`` units.

    Args:
        ops: op names, each one of ``OPS``.
        ns: sizes, one column each.
        d: model width / channels.
        window: keys per query for ``sliding_window_attention`` (must be ``<= n`` for it).

    Returns:
        The table, header line first, lines joined by newlines (no trailing newline).
    """
    from explorer.guard import human_bytes  # explorer.guard imports this module

    ns = list(ns)
    lines = [f"{'op':<26}" + "".join(f"{'n=' + str(n):>22}" for n in ns)]
    for op in ops:
        cells = [cost(op, n, d, window=window) for n in ns]
        lines.append(f"{op:<26}" + "".join(f"{c.flops:>10.2e} {human_bytes(c.peak_memory):>10}" for c in cells))
    return "\n".join(lines)
