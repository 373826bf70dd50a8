"""Rank statistics and intervals of the agreement study: Spearman, Kendall, top-``k`` overlap, Student-t
intervals, paired differences, and the measures over a batch of maps (:func:`agreement`, :func:`pointing`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from explorer._checks import check_int, check_real
from explorer.analysis.agreement.settings import LEVEL


# --- rank statistics ----------------------------------------------------------------------------------------------


def _vector(name: str, values: object) -> np.ndarray:
    """``values`` as a finite float64 vector; TypeError / ValueError naming ``name``."""
    if isinstance(values, torch.Tensor):
        if values.is_complex() or values.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
        array = values.detach().cpu().to(torch.float64).numpy()
    elif isinstance(values, np.ndarray):
        if values.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
        array = values.astype(np.float64)
    elif isinstance(values, (list, tuple)):
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            raise TypeError(f"{name} must hold real numbers")
        array = np.asarray(values, dtype=np.float64)
    else:
        raise TypeError(f"{name} must be a 1-D tensor, array or sequence of numbers, got {type(values).__name__}")
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per unit), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty (no unit to rank)")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return array


def _pair(a: object, b: object, minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x, y = _vector("a", a), _vector("b", b)
    if x.shape != y.shape:
        raise ValueError(f"b must have the length of a ({x.size}), got {y.size}")
    if x.size < minimum:
        raise ValueError(f"a must have at least {minimum} units to rank, got {x.size}")
    return x, y


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # rank of the last member of each group of equal values
    return (last - (counts - 1) / 2.0)[inverse]


def spearman(a: object, b: object) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks (ties share their mean rank).

    Args:
        a, b: 1-D tensors, arrays or sequences of the same length (>= 2), finite.

    Returns:
        rho in ``[-1, 1]``; NaN when either input is constant (no ranking), as ``scipy.stats.spearmanr``.
    """
    x, y = _pair(a, b)
    rx, ry = _average_ranks(x), _average_ranks(y)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denominator == 0.0:
        return math.nan
    return float(np.clip(float(dx @ dy) / denominator, -1.0, 1.0))


def kendall(a: object, b: object) -> float:
    """Kendall's tau-b: ``(concordant - discordant) / sqrt((n0 - ties_a) (n0 - ties_b))`` over all pairs.

    ``n0 = n (n - 1) / 2``; ``ties_a`` counts the pairs tied in ``a`` (likewise ``b``). Without ties it is
    Kendall's tau-a. O(n^2) time and memory (fine for the tens of units of a map).

    Args:
        a, b: 1-D tensors, arrays or sequences of the same length (>= 2), finite.

    Returns:
        tau-b in ``[-1, 1]``; NaN when either input is constant, as ``scipy.stats.kendalltau``.
    """
    x, y = _pair(a, b)
    upper = np.triu_indices(x.size, k=1)
    sx = np.sign(x[:, None] - x[None, :])[upper]  # (pairs,)
    sy = np.sign(y[:, None] - y[None, :])[upper]
    untied_x, untied_y = float(np.count_nonzero(sx)), float(np.count_nonzero(sy))
    if untied_x == 0.0 or untied_y == 0.0:
        return math.nan
    return float(np.clip(float(sx @ sy) / math.sqrt(untied_x * untied_y), -1.0, 1.0))


def _top_k_weights(x: np.ndarray, k: int) -> np.ndarray:
    """Probability of each unit to be in the top ``k`` when ties at the ``k``-th place are broken at random."""
    kth = np.sort(x)[::-1][k - 1]
    above = x > kth
    tied = x == kth
    weights = above.astype(np.float64)
    weights[tied] = (k - int(above.sum())) / int(tied.sum())
    return weights


def top_k_overlap(a: object, b: object, k: int) -> float:
    """``|top_k(a) & top_k(b)| / k``: the share of ``a``'s ``k`` highest units that are among ``b``'s.

    Ties at the ``k``-th value: every tied unit counts with the probability that a random tie-break puts it in
    the top ``k``, so the result is the expected overlap under independent random tie-breaking (without ties,
    the plain overlap). Two random rankings of ``n`` units overlap ``k / n`` on average (:func:`random_top_k`).

    Args:
        a, b: 1-D tensors, arrays or sequences of the same length, finite.
        k: int in ``[1, len(a)]``.

    Returns:
        A float in ``[0, 1]``.
    """
    x, y = _pair(a, b, minimum=1)
    k = check_int("k", k, 1, x.size, integral=True, note="the number of ranked units")
    return float(_top_k_weights(x, k) @ _top_k_weights(y, k)) / k


def random_top_k(n: int, k: int) -> float:
    """Expected top-``k`` overlap of two independent uniformly random rankings of ``n`` units: ``k / n``."""
    n = check_int("n", n, 1, integral=True, note="the number of ranked units")
    return check_int("k", k, 1, n, integral=True, note="at most the number of ranked units") / n


# --- intervals ----------------------------------------------------------------------------------------------------


def interval(values: Sequence[float], level: float = LEVEL) -> dict[str, Any]:
    """Mean, sample std (n - 1) and the two-sided Student-t interval of the mean.

    Args:
        values: one number per input (non-empty, finite).
        level: coverage in (0, 1); the quantile is ``scipy.stats.t.ppf``.

    Returns:
        ``{"mean", "std", "ci95": [low, high], "n"}`` (``ci95`` holds the ``level`` interval; ``[mean, mean]`` and
        std 0 for a single value).
    """
    from scipy import stats  # scikit-learn's dependency; imported here, as interval is the only user

    level = check_real("level", level, 0, 1, low_open=True, high_open=True, note="the coverage")
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(f"values must be a sequence of numbers, got {type(values).__name__}")
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("values must be finite")
    n = int(x.size)
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n) if n > 1 else 0.0
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": n}


def _round(value: float) -> float:
    """9 significant digits: what the JSON stores (summaries are computed from the rounded values)."""
    return float(f"{value:.9g}")


def _summary(values: list[float]) -> dict[str, Any]:
    """Interval over the defined (finite) values, rounded by :func:`_round`; undefined ones stored as None, counted."""
    stored = [_round(v) if v is not None and math.isfinite(v) else None for v in values]
    defined = [v for v in stored if v is not None]
    if not defined:
        return {"mean": None, "std": None, "ci95": None, "n": 0, "n_undefined": len(values), "values": stored}
    return {**interval(defined), "n_undefined": len(values) - len(defined), "values": stored}


def paired_difference(a: Sequence[float | None], b: Sequence[float | None]) -> dict[str, Any]:
    """Interval of the per-input differences ``a_i - b_i`` over the inputs where both are defined (not None/NaN)."""
    if len(a) != len(b):
        raise ValueError(f"b must have one value per input of a ({len(a)}), got {len(b)}")
    diffs = [x - y for x, y in zip(a, b)
             if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    if not diffs:
        raise ValueError("a and b have no input where both are defined")
    return interval(diffs)


# --- agreement over a batch ---------------------------------------------------------------------------------------


def _rows(name: str, maps: object, boolean: bool = False) -> list[np.ndarray]:
    """A batch of per-input vectors: a 2-D tensor/array ``[input, unit]`` or a sequence of 1-D ones."""
    if isinstance(maps, (torch.Tensor, np.ndarray)):
        if maps.ndim != 2:
            raise ValueError(f"{name} must be [input, unit] (2-D) or a list of 1-D maps, got shape "
                             f"{tuple(maps.shape)}")
        rows = list(maps)
    elif isinstance(maps, (list, tuple)):
        rows = list(maps)
    else:
        raise TypeError(f"{name} must be a 2-D tensor/array [input, unit] or a list of 1-D maps, got "
                        f"{type(maps).__name__}")
    if not rows:
        raise ValueError(f"{name} must hold at least one input (empty batch)")
    if not boolean:
        return [_vector(f"{name}[{i}]", row) for i, row in enumerate(rows)]
    out = []
    for i, row in enumerate(rows):
        array = row.detach().cpu().numpy() if isinstance(row, torch.Tensor) else np.asarray(row)
        if array.dtype != np.bool_:
            raise TypeError(f"{name}[{i}] must be boolean (True = rank this unit), got dtype {array.dtype}")
        if array.ndim != 1:
            raise ValueError(f"{name}[{i}] must be 1-D, got shape {array.shape}")
        out.append(array)
    return out


def _batch(maps: object, reference: object, keep: object, other: str = "reference",
           minimum: int = 2, boolean: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Rows of ``maps`` and ``reference`` (same shapes; ``reference`` boolean when ``boolean``), restricted to
    ``keep``; ValueError on an empty input."""
    a = _rows("maps", maps)
    b = _rows(other, reference, boolean=boolean)
    if len(b) != len(a):
        raise ValueError(f"{other} must have one row per input of maps ({len(a)}), got {len(b)}")
    for i, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape:
            raise ValueError(f"{other}[{i}] must have the shape of maps[{i}] {x.shape}, got {y.shape}")
    if keep is None:
        kept = [np.ones(x.shape, dtype=bool) for x in a]
    else:
        kept = _rows("keep", keep, boolean=True)
        if len(kept) != len(a):
            raise ValueError(f"keep must have one row per input of maps ({len(a)}), got {len(kept)}")
    for i, (x, mask) in enumerate(zip(a, kept)):
        if mask.shape != x.shape:
            raise ValueError(f"keep[{i}] must have the shape of maps[{i}] {x.shape}, got {mask.shape}")
        if int(mask.sum()) < minimum:
            raise ValueError(f"keep leaves input {i} with {int(mask.sum())} unit(s) (empty input after removing "
                             f"special tokens); at least {minimum} are needed to rank")
    return [x[m] for x, m in zip(a, kept)], [y[m] for y, m in zip(b, kept)]


def agreement(maps: object, reference: object, k: int, keep: object = None) -> dict[str, Any]:
    """Rank agreement of a batch of maps with a reference map (e.g. IG), per input and averaged with intervals.

    Args:
        maps: one score per unit per input: a 2-D tensor/array ``[input, unit]`` or a list of 1-D maps (inputs
            may differ in length, as sentences do).
        reference: the same shapes as ``maps``.
        k: top-``k`` size, ``1 <= k <=`` every input's number of ranked units.
        keep: optional boolean rows of the same shapes: False drops a unit (``[CLS]``, ``[SEP]``) before ranking.

    Returns:
        ``{"spearman": S, "kendall": S, "top_k": {**S, "k", "random"}, "n_units": [...]}`` where ``S`` is
        ``{"mean", "std", "ci95", "n", "n_undefined", "values", "ceiling"}``: ``values`` per input, rounded to 9
        significant digits (None where a map is constant and the correlation undefined), the rest over the
        defined values (:func:`interval`); ``ceiling`` is the mean over inputs of the best value any map can reach
        when the reference has ties: the measure of the reference's own order with its ties broken (the same
        whichever way they are broken; 1 without ties). ``random`` is the mean over inputs of ``k / n_units``
        (two random rankings' expected overlap).

    Raises:
        ValueError: empty batch, shapes that differ, an input with fewer than 2 kept units, ``k`` out of range.
        TypeError: not tensors/arrays/sequences of numbers, ``keep`` not boolean, ``k`` not an int.
    """
    a, b = _batch(maps, reference, keep)
    sizes = [int(x.size) for x in a]
    smallest = min(sizes)
    k = check_int("k", k, 1, smallest, integral=True,
                  note=f"the number of ranked units of the smallest input, {sizes.index(smallest)}")
    rho = [spearman(x, y) for x, y in zip(a, b)]
    tau = [kendall(x, y) for x, y in zip(a, b)]
    top = [top_k_overlap(x, y, k) for x, y in zip(a, b)]
    best = [np.argsort(np.argsort(y, kind="stable"), kind="stable").astype(np.float64) for y in b]  # ties broken
    ceilings = {"spearman": [spearman(s, y) for s, y in zip(best, b)],
                "kendall": [kendall(s, y) for s, y in zip(best, b)],
                "top_k": [top_k_overlap(s, y, k) for s, y in zip(best, b)]}
    ceiling = {name: _round(float(np.nanmean(values))) if not np.isnan(values).all() else None
               for name, values in ceilings.items()}
    return {
        "spearman": {**_summary(rho), "ceiling": ceiling["spearman"]},
        "kendall": {**_summary(tau), "ceiling": ceiling["kendall"]},
        "top_k": {**_summary(top), "ceiling": ceiling["top_k"], "k": k,
                  "random": _round(float(np.mean([random_top_k(n, k) for n in sizes])))},
        "n_units": sizes,
    }


def pointing(maps: object, targets: object, keep: object = None) -> dict[str, Any]:
    """Pointing game: is a map's highest unit on the target (ink patches, the shared word's tokens)?

    Per input the score is the share of the map's maximal units (ties shared out) that are targets, i.e. the hit
    probability under random tie-breaking; ``random`` is the mean over inputs of ``targets / units`` (the hit rate
    of a random unit), both over the kept units.

    Returns:
        ``{"mean", "std", "ci95", "n", "n_undefined", "values", "random"}``.
    """
    a, hits = _batch(maps, targets, keep, other="targets", minimum=1, boolean=True)
    values = []
    for x, target in zip(a, hits):
        top = x == x.max()
        values.append(float((top & target).sum()) / float(top.sum()))
    return {**_summary(values), "random": _round(float(np.mean([t.mean() for t in hits])))}
