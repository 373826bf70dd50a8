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

Masks are frozen dataclasses: their parameters are fields (``SlidingWindow.window``, ``SlidingWindow.causal``),
so a fused kernel can read them instead of a dense matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Union

import torch

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
    "band_of",
    "LSHBuckets",
    "lsh_hash",
    "lsh",
    "lsh_recall",
]

Index = Union[int, torch.Tensor]
"""A position: a Python int or an integer tensor (broadcasting against the other index)."""


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value}")
    return value


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


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
        _check_positive_int("n_query", n_query)
        _check_positive_int("n_key", n_key)
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


@dataclass(frozen=True, repr=False)
class Causal(Mask):
    """Query ``i`` sees keys ``j <= i``."""

    _factory = "causal"

    def __call__(self, query: Index, key: Index) -> Index:
        return key <= query


@dataclass(frozen=True, repr=False)
class SlidingWindow(Mask):
    """``window`` keys around (or, if ``causal``, up to) each query; see the module docstring for the offsets."""

    window: int
    causal: bool = False
    _factory = "sliding_window"

    def __post_init__(self) -> None:
        _check_positive_int("window", self.window)
        _check_bool("causal", self.causal)

    def __call__(self, query: Index, key: Index) -> Index:
        offset = key - query
        if self.causal:
            return _in_range(offset, -(self.window - 1), 0)
        return _in_range(offset, -((self.window - 1) // 2), self.window // 2)


@dataclass(frozen=True, repr=False)
class DilatedWindow(Mask):
    """``window`` keys spaced ``dilation`` apart around (or, if ``causal``, up to) each query."""

    window: int
    dilation: int
    causal: bool = False
    _factory = "dilated_window"

    def __post_init__(self) -> None:
        _check_positive_int("window", self.window)
        _check_positive_int("dilation", self.dilation)
        _check_bool("causal", self.causal)

    def __call__(self, query: Index, key: Index) -> Index:
        offset = key - query
        step = offset // self.dilation  # exact where offset % dilation == 0
        if self.causal:
            in_window = _in_range(step, -(self.window - 1), 0)
        else:
            in_window = _in_range(step, -((self.window - 1) // 2), self.window // 2)
        return (offset % self.dilation == 0) & in_window


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
        _check_positive_int("block_size", self.block_size)
        if not isinstance(self.global_tokens, tuple):
            raise TypeError(f"global_tokens must be a tuple of int, got {type(self.global_tokens).__name__}")
        for token in self.global_tokens:
            if isinstance(token, bool) or not isinstance(token, int):
                raise TypeError(f"global_tokens must be a tuple of int, got an item {token!r}")
            if token < 0:
                raise ValueError(f"global_tokens must be positions >= 0, got {token}")

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
        if not callable(self.fn):
            raise TypeError(f"fn must be callable, got {type(self.fn).__name__}")

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
    if not isinstance(vectors, torch.Tensor) or not vectors.is_floating_point() or vectors.ndim < 2:
        raise TypeError(f"vectors must be a float tensor [..., token, dim], got "
                        f"{getattr(vectors, 'dtype', type(vectors).__name__)}")
    n_buckets = _check_positive_int("n_buckets", n_buckets)
    if n_buckets % 2:
        raise ValueError(f"n_buckets must be even (a rotation and its negation), got {n_buckets}")
    n_rounds = _check_positive_int("n_rounds", n_rounds)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
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
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or value.dtype != torch.int64 or value.ndim != 2:
                raise TypeError(f"{name} must be a LongTensor [round, token], got "
                                f"{getattr(value, 'dtype', type(value).__name__)}")
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
        if not isinstance(value, torch.Tensor) or value.ndim != 2 or not value.is_floating_point():
            raise ValueError(f"{name} must be a float tensor [token, dim], got "
                             f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}")
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries and keys must have the same dim, got {queries.shape[1]} and {keys.shape[1]}")
    return LSHBuckets(lsh_hash(queries, n_buckets, n_rounds, seed), lsh_hash(keys, n_buckets, n_rounds, seed))


def lsh_recall(queries: torch.Tensor, keys: torch.Tensor, n_buckets: int, n_rounds: int, top_k: int,
               seed: int = 0) -> float:
    """Share of each query's true top-``top_k`` keys (by ``q . k``) that the LSH mask lets it attend to, averaged.

    Returns:
        A float in [0, 1]: 1 means LSH attention sees every key full attention weights most.
    """
    top_k = _check_positive_int("top_k", top_k)
    mask = lsh(queries, keys, n_buckets, n_rounds, seed)
    if top_k > keys.shape[0]:
        raise ValueError(f"top_k must be <= the number of keys ({keys.shape[0]}), got {top_k}")
    best = (queries @ keys.T).topk(top_k, dim=-1).indices  # (query, top_k)
    allowed = mask.dense(queries.shape[0], keys.shape[0])  # (query, key)
    return float(allowed.gather(1, best).double().mean())


def band_of(mask: Mask | None) -> tuple[bool, int | None] | None:
    """``(causal, window)`` for a mask a fused kernel can read from its fields, or None if it cannot.

    The fused attention of :mod:`explorer.kernels` takes no dense matrix, only a causal flag and a sliding window
    (this module's convention). ``None`` and :class:`Full` give ``(False, None)``, :class:`Causal`
    ``(True, None)``, :class:`SlidingWindow` ``(causal, window)``; every other mask gives None. Exact type checks:
    a subclass may change ``__call__``, so only the classes themselves qualify.
    """
    if mask is None or type(mask) is Full:
        return False, None
    if type(mask) is Causal:
        return True, None
    if type(mask) is SlidingWindow:
        return mask.causal, mask.window
    return None
