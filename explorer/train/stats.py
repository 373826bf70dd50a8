"""What both training scripts report over seeds, and how they check seeds and model names: one rule for both.

:func:`interval` (mean, sample std and the two-sided 95 % Student-t interval from :data:`T_975`) is used by
``explorer.train.head_to_head`` and ``explorer.train.long_range`` (each re-exports it).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from explorer.models.head_to_head import MODELS

__all__ = ["T_975", "interval"]

# two-sided 95 % quantiles of Student's t (any statistics table), by degrees of freedom
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def _mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (n - 1; 0.0 for a single value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def interval(values: list[float]) -> dict[str, Any]:
    """Mean, sample std (n - 1) and the two-sided 95 % Student-t interval of the mean (``[mean, mean]`` for one value).

    Returns:
        ``{"mean", "std", "ci95": [low, high], "n"}``.
    """
    if not values:
        raise ValueError("values must not be empty")
    stat = _mean_std(list(values))
    k = len(values)
    half = T_975[k - 1] * stat["std"] / math.sqrt(k) if k > 1 else 0.0
    return {**stat, "ci95": [stat["mean"] - half, stat["mean"] + half], "n": k}


def _check_seeds(seeds: object) -> list[int]:
    if (not isinstance(seeds, (list, tuple)) or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)):
        raise ValueError(f"seeds must be a non-empty list of ints >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must not repeat, got {seeds!r}")
    if len(seeds) > len(T_975) + 1:
        raise ValueError(f"seeds must be at most {len(T_975) + 1}, got {len(seeds)}")
    return list(seeds)


def _check_names(names: object, allowed: tuple[str, ...] = tuple(MODELS)) -> list[str]:
    """``names`` as a list if every one is in ``allowed`` (default: the head-to-head models); None: all of them."""
    if names is None:
        return list(allowed)
    if not isinstance(names, (list, tuple)) or not names or any(n not in allowed for n in names):
        raise ValueError(f"names must be a non-empty list from {allowed}, got {names!r}")
    return list(names)
