"""Attention masks as small callables ``(query_index, key_index) -> bool``.

A mask says which keys a query may attend to (``True`` = may attend). Masks are written once and work both on
plain ints and on broadcasting integer tensors, like FlexAttention's ``mask_mod``, so a dense ``[query, key]``
rendering is one vectorised call::

    m = causal() & sliding_window(4, causal=True)
    m(5, 3)                 # True
    m.dense(6, 6)           # BoolTensor[query, key]

Query and key positions both start at 0 (top-left alignment, as ``torch.nn.functional.scaled_dot_product_attention``
with ``is_causal=True``): query ``i`` and key ``i`` are the same position.

Window convention (one for every windowed mask): ``window`` is the number of keys a query sees away from the
sequence ends. With ``offset = key - query``:

* ``causal=True``:  ``-(window - 1) <= offset <= 0`` -- the current key and the ``window - 1`` before it;
* ``causal=False``: ``-((window - 1) // 2) <= offset <= window // 2`` -- centred; an even window has one more key
  after the query than before it.

These are exactly the input positions read by output position ``i`` of a ``Conv1d(kernel_size=window)`` with
``padding="same"`` (non-causal) or with ``window - 1`` positions of left padding (causal), so a sliding-window
attention layer and a convolution of the same width have the same receptive field. ``dilated_window`` spaces the
``window`` keys ``dilation`` apart (``offset = dilation * m`` for the same range of ``m``), as in Longformer's
dilated sliding window (Beltagy et al. 2020, https://arxiv.org/abs/2004.05150).

The window's offsets are computed in one place, :func:`window_offsets`: the masks here and the fused kernel and its
reference (through :meth:`Mask.band`) read them from there, and anything else that needs them should call it or ask
the mask rather than restate them.

Masks are frozen dataclasses: their parameters are fields (``SlidingWindow.window``, ``SlidingWindow.causal``),
and each mask answers for itself what a fused kernel needs instead of a dense matrix: :meth:`Mask.band` (the
allowed offsets ``key - query`` as a :class:`Band`, or None), :meth:`Mask.kernel_band` (the ``(causal, window)``
that :func:`explorer.kernels.fused_attention` takes, or None) and :attr:`Mask.fused_support`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import NamedTuple, Union

import torch

from explorer._checks import check_bool, check_callable, check_int, check_positive_int, check_tensor, check_type

__all__ = [
    "Mask",
    "Causal",
    "Full",
    "SlidingWindow",
    "DilatedWindow",
    "BlockSparse",
    "FromCallable",
    "And",
    "Or",
    "causal",
    "full",
    "sliding_window",
    "dilated_window",
    "block_sparse",
    "from_callable",
    "Band",
    "window_offsets",
    "band_of",
    "LSHBuckets",
    "lsh_hash",
    "lsh",
    "lsh_recall",
]

Index = Union[int, torch.Tensor]
"""A position: a Python int or an integer tensor (broadcasting against the other index)."""


class Band(NamedTuple):
    """The keys a query may attend to, as offsets ``key - query``: ``low <= offset <= high`` and
    ``offset % step == 0``, clipped to the keys that exist. ``None`` is unbounded on that side.

    ``full()`` is ``Band(None, None)``, ``causal()`` ``Band(None, 0)``, ``sliding_window(4, causal=True)``
    ``Band(-3, 0)``, ``dilated_window(3, 2)`` ``Band(-2, 2, 2)``.
    """

    low: int | None  # smallest offset key - query, None = no limit to the left
    high: int | None  # largest offset key - query, None = no limit to the right
    step: int = 1  # only offsets that are multiples of step (a dilated window's dilation)


def window_offsets(window: int, causal: bool) -> tuple[int, int]:
    """``(low, high)``: the smallest and largest offset ``key - query`` of a window of ``window`` keys.

    The one definition of a window (see the module docstring): ``causal=True`` gives ``(-(window - 1), 0)``, the
    query and the ``window - 1`` keys before it; ``causal=False`` gives ``(-((window - 1) // 2), window // 2)``,
    centred, an even window holding one more key after the query than before it. Either way
    ``high - low + 1 == window``.

    Args:
        window: number of keys (>= 1).
        causal: whether the window ends at the query.

    Returns:
        ``(low, high)``, ints with ``low <= 0 <= high``.
    """
    check_positive_int("window", window)
    check_bool("causal", causal)
    if causal:
        return -(window - 1), 0
    return -((window - 1) // 2), window // 2


def _constant(query: Index, key: Index, value: bool) -> Index:
    """``value`` for every (query, key) pair: a bool for ints, a broadcast BoolTensor for tensors."""
    tensors = [x for x in (query, key) if isinstance(x, torch.Tensor)]
    if not tensors:
        return value
    shape = torch.broadcast_shapes(*(t.shape for t in tensors))
    return torch.full(shape, value, dtype=torch.bool, device=tensors[0].device)


def _in_range(offset: Index, low: int, high: int) -> Index:
    """``low <= offset <= high``, elementwise for tensors."""
    return (offset >= low) & (offset <= high)


@dataclass(frozen=True, repr=False)
class Mask:
    """Base class: a callable ``(query_index, key_index) -> bool`` with a dense rendering and ``&`` / ``|``.

    Subclasses implement :meth:`__call__` with operations that work on ints and on integer tensors alike
    (comparisons, ``+ - // %``, ``&``, ``|``; no ``if`` on the indices).
    """

    _factory = "Mask"

    def __init_subclass__(cls, **kwargs: object) -> None:
        # A band is a promise about __call__: every class answers for its own rule. A subclass that does not define
        # band / kernel_band itself (it may have changed __call__) has none, as if it were any other mask.
        super().__init_subclass__(**kwargs)
        for name in ("band", "kernel_band"):
            if name not in cls.__dict__:
                setattr(cls, name, getattr(Mask, name))

    def band(self) -> Band | None:
        """The allowed offsets ``key - query`` when they do not depend on where the query is, else None.

        None for masks whose rule is not a band of offsets (block-sparse, LSH, callables, ``&`` / ``|``).
        """
        return None

    def kernel_band(self) -> tuple[bool, int | None] | None:
        """``(causal, window)`` -- the arguments of :func:`explorer.kernels.fused_attention` that express this
        mask -- or None when the fused kernel cannot run it.

        ``full()`` gives ``(False, None)``, ``causal()`` ``(True, None)``, ``sliding_window(w, causal=c)``
        ``(c, w)``; every other mask (subclasses of these included, see ``__init_subclass__``) None.
        """
        return None

    @property
    def fused_support(self) -> bool:
        """True when the fused Triton kernel can run this mask (read from its fields, no dense matrix)."""
        return self.kernel_band() is not None

    def __call__(self, query: Index, key: Index) -> Index:
        """True where ``query`` may attend to ``key``.

        Args:
            query: query position(s), an int or an integer tensor.
            key: key position(s), an int or an integer tensor broadcasting against ``query``.

        Returns:
            A bool for int arguments, otherwise a BoolTensor of the broadcast shape.
        """
        raise NotImplementedError

    def dense(self, n_query: int, n_key: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Render the mask as a matrix.

        Args:
            n_query: number of query positions (>= 1).
            n_key: number of key positions (>= 1).
            device: device of the result.

        Returns:
            BoolTensor ``[query, key]``, True where the query may attend to the key.
        """
        check_positive_int("n_query", n_query)
        check_positive_int("n_key", n_key)
        query = torch.arange(n_query, device=device)[:, None]  # (query, 1)
        key = torch.arange(n_key, device=device)[None, :]  # (1, key)
        allowed = self(query, key)
        if not isinstance(allowed, torch.Tensor):
            allowed = torch.tensor(allowed, device=device)
        if allowed.dtype != torch.bool:
            raise TypeError(f"{self!r} returned {allowed.dtype} for tensor indices; a mask must return bool")
        return allowed.expand(n_query, n_key).contiguous()  # (query, key)

    def __and__(self, other: Mask) -> Mask:
        if not isinstance(other, Mask):
            return NotImplemented
        return And(self, other)

    def __or__(self, other: Mask) -> Mask:
        if not isinstance(other, Mask):
            return NotImplemented
        return Or(self, other)

    def __repr__(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"{self._factory}({args})"


@dataclass(frozen=True, repr=False)
class Full(Mask):
    """Every query sees every key."""

    _factory = "full"

    def __call__(self, query: Index, key: Index) -> Index:
        return _constant(query, key, True)

    def band(self) -> Band:
        return Band(None, None)

    def kernel_band(self) -> tuple[bool, int | None]:
        return False, None


@dataclass(frozen=True, repr=False)
class Causal(Mask):
    """Query ``i`` sees keys ``j <= i``."""

    _factory = "causal"

    def __call__(self, query: Index, key: Index) -> Index:
        return key <= query

    def band(self) -> Band:
        return Band(None, 0)

    def kernel_band(self) -> tuple[bool, int | None]:
        return True, None


@dataclass(frozen=True, repr=False)
class SlidingWindow(Mask):
    """``window`` keys around (or, if ``causal``, up to) each query; see the module docstring for the offsets."""

    window: int
    causal: bool = False
    _factory = "sliding_window"

    def __post_init__(self) -> None:
        window_offsets(self.window, self.causal)  # checks both

    def __call__(self, query: Index, key: Index) -> Index:
        return _in_range(key - query, *window_offsets(self.window, self.causal))

    def band(self) -> Band:
        return Band(*window_offsets(self.window, self.causal))

    def kernel_band(self) -> tuple[bool, int | None]:
        return self.causal, self.window


@dataclass(frozen=True, repr=False)
class DilatedWindow(Mask):
    """``window`` keys spaced ``dilation`` apart around (or, if ``causal``, up to) each query."""

    window: int
    dilation: int
    causal: bool = False
    _factory = "dilated_window"

    def __post_init__(self) -> None:
        check_positive_int("window", self.window)
        check_positive_int("dilation", self.dilation)
        check_bool("causal", self.causal)

    def __call__(self, query: Index, key: Index) -> Index:
        offset = key - query
        step = offset // self.dilation  # exact where offset % dilation == 0
        in_window = _in_range(step, *window_offsets(self.window, self.causal))
        return (offset % self.dilation == 0) & in_window

    def band(self) -> Band:
        low, high = window_offsets(self.window, self.causal)
        return Band(low * self.dilation, high * self.dilation, self.dilation)


@dataclass(frozen=True, repr=False)
class BlockSparse(Mask):
    """Block-diagonal attention plus global tokens.

    Positions are cut into blocks of ``block_size`` (``0..block_size-1``, ...); a query sees the keys of its own
    block. A global token sees every key and is seen by every query (BigBird / Longformer style,
    https://arxiv.org/abs/2007.14062).
    """

    block_size: int
    global_tokens: tuple[int, ...] = (0,)
    _factory = "block_sparse"

    def __post_init__(self) -> None:
        check_positive_int("block_size", self.block_size)
        check_type("global_tokens", self.global_tokens, tuple, "a tuple of positions (ints >= 0)")
        for i, token in enumerate(self.global_tokens):
            check_int(f"global_tokens[{i}]", token, 0, note="a position")

    def __call__(self, query: Index, key: Index) -> Index:
        allowed = query // self.block_size == key // self.block_size
        for token in self.global_tokens:
            allowed = allowed | (query == token) | (key == token)
        return allowed


@dataclass(frozen=True, repr=False)
class FromCallable(Mask):
    """Any function ``(query, key) -> bool``; for :meth:`Mask.dense` it must also accept integer tensors."""

    fn: Callable[[Index, Index], Index]
    _factory = "from_callable"

    def __post_init__(self) -> None:
        check_callable("fn", self.fn)

    def __call__(self, query: Index, key: Index) -> Index:
        return self.fn(query, key)

    def __repr__(self) -> str:
        return f"from_callable({getattr(self.fn, '__qualname__', repr(self.fn))})"


@dataclass(frozen=True, repr=False)
class And(Mask):
    """Both masks allow the pair (written ``left & right``)."""

    left: Mask
    right: Mask

    def __call__(self, query: Index, key: Index) -> Index:
        return self.left(query, key) & self.right(query, key)

    def __repr__(self) -> str:
        return f"({self.left!r} & {self.right!r})"


@dataclass(frozen=True, repr=False)
class Or(Mask):
    """Either mask allows the pair (written ``left | right``)."""

    left: Mask
    right: Mask

    def __call__(self, query: Index, key: Index) -> Index:
        return self.left(query, key) | self.right(query, key)

    def __repr__(self) -> str:
        return f"({self.left!r} | {self.right!r})"


def full() -> Full:
    """No masking: every query sees every key."""
    return Full()


def causal() -> Causal:
    """Causal (autoregressive) mask: query ``i`` sees keys ``j <= i``."""
    return Causal()


def sliding_window(window: int, causal: bool = False) -> SlidingWindow:
    """Local attention over ``window`` keys.

    Args:
        window: number of keys each query sees (>= 1), fewer at the sequence ends.
        causal: if True the keys are the query's position and the ``window - 1`` before it; otherwise they are
            centred on the query (offsets ``-((window - 1) // 2) .. window // 2``).

    Returns:
        A :class:`SlidingWindow` mask.
    """
    return SlidingWindow(window, causal)


def dilated_window(window: int, dilation: int, causal: bool = False) -> DilatedWindow:
    """Local attention over ``window`` keys spaced ``dilation`` apart (Longformer's dilated window).

    Args:
        window: number of keys each query sees (>= 1), fewer at the sequence ends.
        dilation: spacing between visible keys (>= 1); ``dilation=1`` is :func:`sliding_window`.
        causal: as in :func:`sliding_window`, with offsets multiplied by ``dilation``.

    Returns:
        A :class:`DilatedWindow` mask.
    """
    return DilatedWindow(window, dilation, causal)


def block_sparse(block_size: int, global_tokens: tuple[int, ...] = (0,)) -> BlockSparse:
    """Block-diagonal attention plus global tokens that see and are seen by every position.

    Args:
        block_size: length of each block (>= 1).
        global_tokens: positions of the global tokens (>= 0); ``()`` for none.

    Returns:
        A :class:`BlockSparse` mask.
    """
    return BlockSparse(block_size, tuple(global_tokens) if isinstance(global_tokens, list) else global_tokens)


def from_callable(fn: Callable[[Index, Index], Index]) -> FromCallable:
    """Wrap a function ``(query, key) -> bool`` as a :class:`Mask`.

    Args:
        fn: called with ints, or with broadcasting integer tensors by :meth:`Mask.dense`; write it with
            comparisons and ``& |`` rather than ``and / or / if`` so that both work.

    Returns:
        A :class:`FromCallable` mask.
    """
    return FromCallable(fn)


# --- LSH attention (Reformer) ----------------------------------------------------------------------------------------


def lsh_hash(vectors: torch.Tensor, n_buckets: int, n_rounds: int = 1, seed: int = 0) -> torch.Tensor:
    """Angular LSH by random rotations (Kitaev, Kaiser & Levskaya 2020, Reformer, https://arxiv.org/abs/2001.04451).

    Per round ``r`` a random Gaussian matrix ``R_r`` ``[dim, n_buckets / 2]`` (drawn from ``seed``, the same for
    every call with the same ``seed``, ``dim`` and sizes, so queries and keys hashed separately share it) gives
    ``bucket = argmax([x R_r, -x R_r])``: vectors at a small angle land in the same bucket with high probability.

    Args:
        vectors: float ``[..., token, dim]``.
        n_buckets: even int >= 2.
        n_rounds: int >= 1 (independent hashings; more rounds, more chances to share a bucket).
        seed: int >= 0.

    Returns:
        LongTensor ``[n_rounds, ..., token]`` of buckets in ``[0, n_buckets)``.
    """
    check_tensor("vectors", vectors, "[..., token, dim]", dtype="float", min_ndim=2)
    n_buckets = check_positive_int("n_buckets", n_buckets)
    if n_buckets % 2:
        raise ValueError(f"n_buckets must be even (a rotation and its negation), got {n_buckets}")
    n_rounds = check_positive_int("n_rounds", n_rounds)
    check_int("seed", seed, 0)
    generator = torch.Generator().manual_seed(seed)
    rotations = torch.randn(n_rounds, vectors.shape[-1], n_buckets // 2, generator=generator,
                            dtype=torch.float64).to(device=vectors.device, dtype=vectors.dtype)  # (round, dim, b/2)
    projected = torch.einsum("...td,rdb->r...tb", vectors, rotations)  # (round, ..., token, b/2)
    return torch.cat([projected, -projected], dim=-1).argmax(dim=-1)  # (round, ..., token)


@dataclass(frozen=True, repr=False, eq=False)
class LSHBuckets(Mask):
    """A query may attend to a key when they share a bucket in at least one round (Reformer's LSH attention).

    Content-dependent, unlike the other masks: it holds the buckets of one sequence (``query_buckets`` and
    ``key_buckets``, LongTensors ``[round, token]`` from :func:`lsh_hash`); indices beyond them raise IndexError.
    """

    query_buckets: torch.Tensor
    key_buckets: torch.Tensor
    _factory = "lsh"

    def __post_init__(self) -> None:
        for name in ("query_buckets", "key_buckets"):
            check_tensor(name, getattr(self, name), "[round, token]", dtype=torch.int64, ndim=2)
        if self.query_buckets.shape[0] != self.key_buckets.shape[0]:
            raise ValueError(f"query_buckets and key_buckets must have the same rounds, got "
                             f"{self.query_buckets.shape[0]} and {self.key_buckets.shape[0]}")

    def __call__(self, query: Index, key: Index) -> Index:
        same = self.query_buckets[:, query] == self.key_buckets[:, key]  # (round, *broadcast)
        return bool(same.any()) if not isinstance(query, torch.Tensor) and not isinstance(key, torch.Tensor) \
            else same.any(dim=0)

    def __repr__(self) -> str:
        rounds, n = self.query_buckets.shape
        return f"lsh(rounds={rounds}, queries={n}, keys={self.key_buckets.shape[1]})"


def lsh(queries: torch.Tensor, keys: torch.Tensor, n_buckets: int, n_rounds: int = 1, seed: int = 0) -> LSHBuckets:
    """The LSH mask of one sequence: ``queries`` ``[token, dim]`` and ``keys`` ``[token, dim]`` hashed alike."""
    for name, value in (("queries", queries), ("keys", keys)):
        check_tensor(name, value, "[token, dim]", dtype="float", ndim=2)
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries and keys must have the same dim, got {queries.shape[1]} and {keys.shape[1]}")
    return LSHBuckets(lsh_hash(queries, n_buckets, n_rounds, seed), lsh_hash(keys, n_buckets, n_rounds, seed))


def lsh_recall(queries: torch.Tensor, keys: torch.Tensor, n_buckets: int, n_rounds: int, top_k: int,
               seed: int = 0) -> float:
    """Share of each query's true top-``top_k`` keys (by ``q . k``) that the LSH mask lets it attend to, averaged.

    Returns:
        A float in [0, 1]: 1 means LSH attention sees every key full attention weights most.
    """
    top_k = check_positive_int("top_k", top_k)
    mask = lsh(queries, keys, n_buckets, n_rounds, seed)
    if top_k > keys.shape[0]:
        raise ValueError(f"top_k must be <= the number of keys ({keys.shape[0]}), got {top_k}")
    best = (queries @ keys.T).topk(top_k, dim=-1).indices  # (query, top_k)
    allowed = mask.dense(queries.shape[0], keys.shape[0])  # (query, key)
    return float(allowed.gather(1, best).double().mean())


def band_of(mask: object) -> tuple[bool, int | None] | None:
    """``(causal, window)`` for a mask the fused kernel can run, or None: :meth:`Mask.kernel_band`, for any value.

    ``None`` (no mask) gives ``(False, None)``; a :class:`Mask` answers for itself (``mask.kernel_band()``); anything
    else (a dense BoolTensor) gives None. For callers that hold "a mask or None or a tensor".
    """
    if mask is None:
        return False, None
    if not isinstance(mask, Mask):
        return None
    return mask.kernel_band()
