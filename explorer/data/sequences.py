"""A synthetic long-range sequence task: which of two marked tokens comes first, ``d`` positions apart?

Each sequence has ``length`` positions of random filler tokens ``0 .. vocab - 1``; two positions ``d`` apart hold the
two marked tokens ``A = vocab`` and ``B = vocab + 1``, one each, in random order. The label is 1 when ``A`` comes
first (``tokens[first] == A``), else 0; labels are balanced (an exact half of each call's samples when ``balanced``).
The earlier position ``first`` is uniform on ``0 .. length - 1 - d``, so the pair never wraps around.

Why the order and not "are the two marked tokens equal": a model with a global pooling readout can answer
*equality* without ever seeing both tokens together (the pooled features say which tokens are marked; equal iff
there is one kind), so equality does not test reach. The order of ``A`` and ``B`` cannot be read from pooled local
features: a window that holds only one of them looks the same whichever order the pair is in. A model whose every
feature sees fewer than ``d + 1`` consecutive positions -- a CNN whose receptive field ``r <= d`` -- can only guess
(exactly 50 % in expectation), provided it cannot tell where a window lies in the sequence: with zero padding a
feature near an end knows its distance to that end, and a marked token within ``d`` of the start must be the first;
:mod:`explorer.models.sequence` therefore pads its convolutions circularly (and ``length - d >= r`` keeps the
wrapped-around pair out of reach too).

Inputs are one-hot, ``[batch, channel, length]`` with ``channel = vocab + 2`` (the layout of ``Conv1d``; attention
models transpose it). Deterministic: every call draws from its own ``torch.Generator`` (seeded by ``seed``, or one
passed in); torch's global generator is not used.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from explorer._checks import check_bool, check_int, check_type

__all__ = ["LENGTH", "VOCAB", "MAX_DISTANCE", "SequenceBatch", "channels", "long_range_batch", "long_range_test_set",
           "log_uniform_distances", "log_uniform_probability"]

LENGTH = 320        # positions per sequence: d up to 256 fits, and 320 - 256 = 64 keeps the wrapped pair apart too
VOCAB = 4           # filler tokens 0..3; A = 4, B = 5
MAX_DISTANCE = 256  # the largest distance the lesson uses (training and test)


def channels(vocab: int = VOCAB) -> int:
    """Input channels of the one-hot encoding: ``vocab`` fillers + the two marked tokens ``A`` and ``B``."""
    return check_int("vocab", vocab, 1) + 2


@dataclass(frozen=True)
class SequenceBatch:
    """A batch of the long-range order task.

    Attributes:
        inputs: float32 ``[batch, channel, length]``, one-hot of ``tokens`` (``channel = vocab + 2``).
        tokens: int64 ``[batch, length]``: fillers ``0 .. vocab - 1``, ``A = vocab``, ``B = vocab + 1``.
        labels: int64 ``[batch]``: 1 when ``A`` is the earlier marked token, else 0.
        first: int64 ``[batch]``: position of the earlier marked token.
        distance: int64 ``[batch]``: distance from the earlier to the later marked token (``d >= 1``).
        vocab: number of filler tokens.
    """

    inputs: torch.Tensor
    tokens: torch.Tensor
    labels: torch.Tensor
    first: torch.Tensor
    distance: torch.Tensor
    vocab: int

    @property
    def second(self) -> torch.Tensor:
        """Position of the later marked token, ``first + distance`` (int64 ``[batch]``)."""
        return self.first + self.distance

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _check_distances(distances: object, length: int) -> list[int]:
    """``distances`` as a list of ints in ``[1, length - 1]``; TypeError / ValueError naming ``distances``."""
    accepted = f"a non-empty sequence (list, tuple or 1-D integer tensor) of ints in [1, {length - 1}]"
    if isinstance(distances, torch.Tensor):
        if distances.ndim != 1 or distances.dtype.is_floating_point or distances.dtype.is_complex \
                or distances.dtype == torch.bool:
            raise TypeError(f"distances must be {accepted}, got a tensor of dtype {distances.dtype} and shape "
                            f"{tuple(distances.shape)}")
        values: list[object] = distances.tolist()
    elif isinstance(distances, (str, bytes)) or not isinstance(distances, Sequence):
        raise TypeError(f"distances must be {accepted}, got {type(distances).__name__} {distances!r}")
    else:
        values = list(distances)
    if not values:
        raise ValueError(f"distances must be {accepted}, got an empty sequence")
    out = []
    for d in values:
        if isinstance(d, bool):
            raise TypeError(f"distances must be {accepted}, got bool {d!r}")
        try:
            out.append(operator.index(d))  # ints, numpy integers
        except TypeError:
            raise TypeError(f"distances must be {accepted}, got {type(d).__name__} {d!r}") from None
    bad = [d for d in out if not 1 <= d <= length - 1]
    if bad:
        raise ValueError(f"distances must be {accepted} (two positions d apart must fit in length={length}), "
                         f"got {bad[:5]}{' ...' if len(bad) > 5 else ''}")
    return out


def _generator(seed: object, generator: object) -> torch.Generator:
    if generator is not None:
        return check_type("generator", generator, torch.Generator, "a torch.Generator or None")
    return torch.Generator().manual_seed(check_int("seed", seed, 0))


def long_range_batch(distances: Sequence[int] | torch.Tensor, *, length: int = LENGTH, vocab: int = VOCAB,
                     seed: int = 0, generator: torch.Generator | None = None,
                     balanced: bool = True) -> SequenceBatch:
    """One sample per entry of ``distances``: random fillers, ``A`` and ``B`` that far apart, in random order.

    Args:
        distances: the distance of each sample's pair, ints in ``[1, length - 1]`` (a list, tuple or 1-D integer
            tensor; one sample each).
        length: positions per sequence (>= 2).
        vocab: number of filler tokens (>= 1).
        seed: seeds a fresh ``torch.Generator`` (ignored when ``generator`` is given).
        generator: draw from this generator instead (it advances), e.g. one stream of training batches.
        balanced: exactly half the labels are 1 (``len // 2``; an odd sample is drawn at random), in random
            order; False: each label a fair coin.

    Returns:
        A :class:`SequenceBatch`. Draw order: fillers, labels, first positions (fixed, so a seed always gives the
        same batch).

    Raises:
        TypeError / ValueError: naming the bad argument (``distances``, ``length``, ``vocab``, ``seed``,
        ``generator``, ``balanced``).
    """
    check_int("length", length, 2)
    check_int("vocab", vocab, 1)
    d = torch.tensor(_check_distances(distances, length), dtype=torch.int64)  # (batch,)
    check_bool("balanced", balanced)
    g = _generator(seed, generator)
    n = d.shape[0]
    tokens = torch.randint(vocab, (n, length), generator=g)  # (batch, length) fillers
    if balanced:
        labels = torch.zeros(n, dtype=torch.int64)
        labels[: n // 2] = 1
        if n % 2:
            labels[-1] = torch.randint(2, (1,), generator=g)
        labels = labels[torch.randperm(n, generator=g)]
    else:
        labels = torch.randint(2, (n,), generator=g)
    first = (torch.rand(n, generator=g, dtype=torch.float64) * (length - d)).floor().long()  # 0 .. length-1-d
    first = torch.minimum(first, length - 1 - d)  # float rounding guard
    rows = torch.arange(n)
    a, b = vocab, vocab + 1
    tokens[rows, first] = torch.where(labels == 1, a, b)
    tokens[rows, first + d] = torch.where(labels == 1, b, a)
    inputs = F.one_hot(tokens, vocab + 2).transpose(1, 2).to(torch.float32).contiguous()  # (batch, channel, length)
    return SequenceBatch(inputs, tokens, labels, first, d, vocab)


def log_uniform_distances(n: int, max_distance: int = MAX_DISTANCE, *, seed: int = 0,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` integer distances, log-uniform on ``[1, max_distance]``: ``floor(exp(U * ln(max_distance + 1)))``.

    Every octave gets the same share, so short and long distances are equally represented in training; the
    probability of each ``d`` is :func:`log_uniform_probability`. Returns int64 ``[n]``.
    """
    check_int("n", n, 1)
    check_int("max_distance", max_distance, 1)
    g = _generator(seed, generator)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    d = torch.exp(u * math.log(max_distance + 1)).floor().long()
    return d.clamp(1, max_distance)


def log_uniform_probability(d: int, max_distance: int = MAX_DISTANCE) -> float:
    """Probability that :func:`log_uniform_distances` draws ``d``: ``ln((d + 1) / d) / ln(max_distance + 1)``."""
    check_int("max_distance", max_distance, 1)
    check_int("d", d, 1)
    if d > max_distance:
        return 0.0
    return math.log((d + 1) / d) / math.log(max_distance + 1)


def long_range_test_set(distances: Sequence[int], per_distance: int, *, length: int = LENGTH, vocab: int = VOCAB,
                        seed: int = 0) -> SequenceBatch:
    """A fixed test set: ``per_distance`` samples at each distance, labels balanced within each distance.

    Distance ``distances[i]`` is drawn by its own generator, seeded ``seed + i``, so adding distances to the list
    does not change the samples of the others. Samples are grouped by distance, in the order given.
    """
    grid = _check_distances(distances, length)
    if len(set(grid)) != len(grid):
        raise ValueError(f"distances must not repeat, got {list(distances)!r}")
    check_int("per_distance", per_distance, 1)
    check_int("seed", seed, 0)
    parts = [long_range_batch([d] * per_distance, length=length, vocab=vocab, seed=seed + i)
             for i, d in enumerate(grid)]
    return SequenceBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in
                           ("inputs", "tokens", "labels", "first", "distance")), vocab)
