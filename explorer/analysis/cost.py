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

Windowed attention uses the convention of ``explorer.masks``: a non-causal window of ``window`` keys covers offsets
``-((window - 1) // 2) .. window // 2`` around the query, clipped at the sequence edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

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


@dataclass(frozen=True)
class Cost:
    """Analytic cost of one forward pass of an op."""

    flops: float  # multiply-adds counted as 2 FLOPs
    bytes_moved: float  # reads of inputs/weights + writes of outputs and materialised intermediates, at dtype size
    peak_memory: float  # bytes of activations alive at the peak (inputs + outputs + intermediates), not weights


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _itemsize(dtype: object) -> int:
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
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
    _check_positive_int("n", n)
    _check_positive_int("heads", heads)
    _check_positive_int("batch", batch)
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
    _check_positive_int("n", n)
    _check_positive_int("window", window)
    if window > n:
        raise ValueError(f"window must be <= n, got window={window} > n={n}")
    left, right = (window - 1) // 2, window // 2
    return n * window - left * (left + 1) // 2 - right * (right + 1) // 2


def block_sparse_pairs(n: int, block: int) -> int:
    """Number of (query, key) pairs of a block-diagonal mask with blocks of ``block`` positions.

    The sequence splits into ``n // block`` full blocks and one last block of ``r = n % block`` positions (if any);
    every position attends to its whole block, so ``pairs = (n // block) * block^2 + r^2``. ``block >= n`` gives one
    block and ``n^2`` pairs (dense).

    Example: ``n = 10, block = 4`` -> ``2 * 16 + 2^2 = 36``.
    """
    _check_positive_int("n", n)
    _check_positive_int("block", block)
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


def cost(
    op: str,
    n: int,
    d: int = 64,
    *,
    heads: int = 1,
    kernel_size: int = 3,
    window: int = 128,
    block: int = 64,
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
    * ``linear_attention``: ``4 B n d^2 / H + 4 B n d``.

    Attention counts only the core (``Q K^T``, softmax, ``P V``), not the projections.

    Args:
        op: one of ``OPS``.
        n: sequence length (image side for ``conv2d``).
        d: model width / channels.
        heads: attention heads; must divide ``d``.
        kernel_size: convolution kernel size.
        window: keys per query for ``sliding_window_attention``; must be ``<= n``.
        block: block size for ``block_sparse_attention``.
        batch: batch size.
        dtype: element type; sets the bytes per element.

    Returns:
        A ``Cost``.

    Raises:
        ValueError: unknown ``op``; a non-positive size; ``window > n`` (for ``sliding_window_attention``, the only
            op that uses ``window``); ``d % heads != 0``.
        TypeError: a size that is not an int, or ``dtype`` that is not a ``torch.dtype``.
    """
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {', '.join(OPS)}")
    for name, value in (
        ("n", n),
        ("d", d),
        ("heads", heads),
        ("kernel_size", kernel_size),
        ("window", window),
        ("block", block),
        ("batch", batch),
    ):
        _check_positive_int(name, value)
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
