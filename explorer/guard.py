"""Memory guard used by every app: refuse a computation whose activations would not fit, before allocating anything.

``check`` is pure arithmetic on ``explorer.analysis.cost`` -- it never touches a tensor -- so apps can call it on
every slider move::

    from explorer.guard import RequestRefused, check

    try:
        check("attention_math", n, heads=4)
    except RequestRefused as err:
        status.value = str(err)  # "attention_math at n=65536 would need 34.4 GB of activations (budget ...)"
"""

from __future__ import annotations

import os

from explorer._checks import check_int, check_real
from explorer.analysis.cost import Cost, cost

__all__ = ["RequestRefused", "memory_budget", "check", "human_bytes", "ENV_BUDGET"]

ENV_BUDGET = "EXPLORER_MEMORY_BUDGET"  # bytes, an int; replaces the RAM-based budget when set
_FALLBACK_AVAILABLE = 4 * 1024**3  # bytes assumed available when the OS cannot tell us

# What to suggest instead, per op (same result, less activation memory); everything else gets "a smaller n or batch".
_ALTERNATIVES = {"attention_math": "attention_fused"}


class RequestRefused(ValueError):
    """A computation the guard refused; the message says what it would have needed and the budget."""


def human_bytes(x: float) -> str:
    """Format a byte count with decimal (SI) units, as disk and RAM sizes are usually quoted.

    Args:
        x: bytes, finite and non-negative.

    Returns:
        ``"512 B"`` below 1000, otherwise one decimal and ``kB``/``MB``/``GB``/``TB``/``PB``
        (``17179869184 -> "17.2 GB"``).
    """
    x = check_real("x", x, 0, finite=True, note="bytes")
    if x < 1000:
        return f"{int(round(x))} B"
    for unit in ("kB", "MB", "GB", "TB"):
        x /= 1000
        if round(x, 1) < 1000:
            return f"{x:.1f} {unit}"
    return f"{x / 1000:.1f} PB"


def _available_ram() -> int:
    """Bytes of RAM available: ``MemAvailable`` from ``/proc/meminfo``, else ``os.sysconf``, else 4 GiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the value is in kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return _FALLBACK_AVAILABLE


def memory_budget(fraction: float = 0.5) -> int:
    """Bytes of activations a single computation may use.

    Args:
        fraction: share of the currently available RAM, in ``(0, 1]``. Ignored when the environment variable
            ``EXPLORER_MEMORY_BUDGET`` is set: its value (an int, in bytes) is the budget.

    Returns:
        The budget in bytes.
    """
    check_real("fraction", fraction, 0, 1, low_open=True, note="a share of the available RAM")
    env = os.environ.get(ENV_BUDGET)
    if env is not None:
        try:
            budget = int(env)
        except ValueError:
            raise ValueError(f"{ENV_BUDGET} must be an int number of bytes, got {env!r}") from None
        if budget <= 0:
            raise ValueError(f"{ENV_BUDGET} must be positive, got {budget}")
        return budget
    return int(fraction * _available_ram())


def check(op: str, n: int, budget: int | None = None, **kwargs: object) -> Cost:
    """Estimate ``op`` at size ``n`` and refuse it if its peak activations exceed the budget.

    Args:
        op: one of ``explorer.analysis.cost.OPS``.
        n: sequence length (image side for ``conv2d``).
        budget: bytes; ``memory_budget()`` when ``None``.
        **kwargs: passed to ``explorer.analysis.cost.cost`` (``d``, ``heads``, ``batch``, ``dtype``, ...).

    Returns:
        The ``Cost`` when ``peak_memory <= budget``.

    Raises:
        RequestRefused: when it does not fit; the message names the need, the budget and an alternative.
    """
    if budget is None:
        budget = memory_budget()
    else:
        check_int("budget", budget, 1, note="bytes")
    estimate = cost(op, n, **kwargs)
    if estimate.peak_memory > budget:
        alternative = _ALTERNATIVES.get(op)
        hint = f"try {alternative} or a smaller n" if alternative else "try a smaller n or batch"
        raise RequestRefused(
            f"{op} at n={n} would need {human_bytes(estimate.peak_memory)} of activations "
            f"(budget {human_bytes(budget)}); {hint}"
        )
    return estimate
