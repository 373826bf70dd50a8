"""Argument checks: the one home of the library's input validation.

Every public function and class of :mod:`explorer` checks its arguments with these helpers, so that a bad argument
gets the same kind of error everywhere:

* ``TypeError`` for a value of the wrong type, ``ValueError`` for a value of the right type that is out of range;
* the message starts with the argument's name, says what is accepted (type, range or choices, and a short hint at
  what the value means where that helps), and ends with ``got ...``: the offending value (``repr``), preceded by
  its type name in a TypeError, e.g.::

      window must be an int >= 1, got 0
      window must be an int >= 1, got float 2.5
      mode must be one of ('zeros', 'circular'), got 'wrap'
      images must be a floating-point tensor [batch, channel, height, width], got dtype torch.int64

``bool`` is never accepted where an int or a number is expected (``True`` is an ``int`` to Python, but passing it
as a size is always a mistake). Each check returns the value (converted where it says so), so a caller can write
``n = check_int("n", n, 1)``.

Checks that know a model or a layer (the image size a model takes, the dtype of a layer's weights) stay beside that
model or layer and call these primitives.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import torch

__all__ = [
    "describe",
    "check_bool",
    "check_int",
    "check_positive_int",
    "check_int_tuple",
    "check_real",
    "check_choice",
    "check_type",
    "check_callable",
    "check_tensor",
    "check_floating",
    "check_shape",
]

_SIMPLE = (str, bytes, numbers.Number, tuple, list, type(None))
_REPR_LIMIT = 60


def describe(value: object) -> str:
    """``value`` as a TypeError names it: its type, and its repr when that is short and plain.

    ``describe(2.5) == "float 2.5"``; a tensor gives its dtype and shape, any other object just its type name.
    """
    if isinstance(value, torch.Tensor):
        return f"Tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
    name = type(value).__name__
    if not isinstance(value, _SIMPLE):
        return name
    text = repr(value).replace("\n", " ")
    if len(text) > _REPR_LIMIT:
        text = text[: _REPR_LIMIT - 3] + "..."
    return f"{name} {text}"


def _hint(note: str | None) -> str:
    return f" ({note})" if note else ""


def _is_int(value: object, integral: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, numbers.Integral if integral else int)


def _int_range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


# --- scalars ------------------------------------------------------------------------------------------------------


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a ``bool`` (not 0/1, not a numpy bool); TypeError otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {describe(value)}")
    return value


def check_int(
    name: str,
    value: object,
    low: int | None = None,
    high: int | None = None,
    *,
    integral: bool = False,
    optional: bool = False,
    note: str | None = None,
) -> int:
    """``value`` if it is an int in ``[low, high]`` (either bound may be None: unbounded).

    Args:
        name: the argument's name, first in the message.
        value: the value to check.
        low: smallest accepted value, or None.
        high: largest accepted value, or None.
        integral: also accept any ``numbers.Integral`` (numpy integers); the result is then a Python ``int``.
        optional: also accept None (returned as is).
        note: a few words on what the value means, shown in parentheses after the range.

    Returns:
        ``value`` (``int(value)`` when ``integral``).

    Raises:
        TypeError: not an int (bools never are); ValueError: outside ``[low, high]``.
    """
    if optional and value is None:
        return value  # type: ignore[return-value]
    accepted = ("None or " if optional else "") + "an int" + _int_range(low, high) + _hint(note)
    if not _is_int(value, integral):
        raise TypeError(f"{name} must be {accepted}, got {describe(value)}")
    if (low is not None and value < low) or (high is not None and value > high):  # type: ignore[operator]
        raise ValueError(f"{name} must be {accepted}, got {value!r}")
    return int(value) if integral else value  # type: ignore[return-value,arg-type]


def check_positive_int(name: str, value: object, *, integral: bool = False, note: str | None = None) -> int:
    """``check_int(name, value, 1)``: an int >= 1 (a size, a count, a window)."""
    return check_int(name, value, 1, integral=integral, note=note)


def check_int_tuple(
    name: str,
    value: object,
    length: int,
    low: int | None = None,
    *,
    integral: bool = False,
    note: str | None = None,
) -> tuple[int, ...]:
    """An int, or a tuple / list of ``length`` ints, each ``>= low``, as a tuple of ``length`` ints.

    ``3`` with ``length=2`` gives ``(3, 3)``, as torch's ``kernel_size`` arguments do.

    Raises:
        TypeError: neither an int nor a tuple / list, or an item that is not an int; ValueError: a tuple / list of
        another length, or an item below ``low``.
    """
    accepted = f"an int{_int_range(low, None)} or a tuple of {length} such ints{_hint(note)}"
    if isinstance(value, (tuple, list)):
        if len(value) != length:
            raise ValueError(f"{name} must be {accepted}, got {len(value)} values: {value!r}")
        items: Sequence[object] = value
    elif _is_int(value, integral):
        items = (value,) * length
    else:
        raise TypeError(f"{name} must be {accepted}, got {describe(value)}")
    for item in items:
        if not _is_int(item, integral):
            raise TypeError(f"{name} must be {accepted}, got an item {describe(item)} in {value!r}")
        if low is not None and item < low:  # type: ignore[operator]
            raise ValueError(f"{name} must be {accepted}, got {value!r}")
    return tuple(int(item) if integral else item for item in items)  # type: ignore[misc,arg-type]


def check_real(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = False,
    optional: bool = False,
    note: str | None = None,
) -> float:
    """``value`` as a float if it is a real number (int, float, numpy scalar; not bool, not NaN) in the range.

    Args:
        name: the argument's name, first in the message.
        value: the value to check.
        low, high: bounds (None: unbounded), closed unless ``low_open`` / ``high_open``.
        finite: refuse ``inf`` and ``-inf``.
        optional: also accept None (returned as is).
        note: a few words on what the value means, shown in parentheses after the range.

    Returns:
        ``float(value)`` (or None when ``optional``).

    Raises:
        TypeError: not a real number; ValueError: NaN, infinite when ``finite``, or outside the range.
    """
    if optional and value is None:
        return value  # type: ignore[return-value]
    kind = "a finite number" if finite else "a number"
    if low is not None and high is not None:
        bounds = f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        bounds = f" {'>' if low_open else '>='} {low}"
    elif high is not None:
        bounds = f" {'<' if high_open else '<='} {high}"
    else:
        bounds = ""
    accepted = ("None or " if optional else "") + kind + bounds + _hint(note)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {accepted}, got {describe(value)}")
    number = float(value)
    below = low is not None and (number <= low if low_open else number < low)
    above = high is not None and (number >= high if high_open else number > high)
    if math.isnan(number) or (finite and math.isinf(number)) or below or above:
        raise ValueError(f"{name} must be {accepted}, got {value!r}")
    return number


def _matches(value: object, choice: object) -> bool:
    if isinstance(value, bool) != isinstance(choice, bool):  # True is not the choice 1
        return False
    try:
        return bool(value == choice)
    except (TypeError, ValueError, RuntimeError):  # e.g. a tensor compared with a str
        return False


def check_choice(name: str, value: object, choices: Iterable[object], *, note: str | None = None) -> object:
    """``value`` if it equals one of ``choices``; ValueError otherwise (whatever its type: it is not a choice).

    The message lists the choices as a tuple: ``mode must be one of ('zeros', 'circular'), got 'wrap'``.
    """
    options = tuple(choices)
    if not any(_matches(value, choice) for choice in options):
        raise ValueError(f"{name} must be one of {options!r}{_hint(note)}, got {value!r}")
    return value


def check_type(name: str, value: object, types: type | tuple[type, ...], what: str) -> object:
    """``value`` if it is an instance of ``types``; TypeError ``"{name} must be {what}, got {type}"`` otherwise."""
    if not isinstance(value, types):
        raise TypeError(f"{name} must be {what}, got {describe(value)}")
    return value


def check_callable(name: str, value: object, what: str = "callable") -> object:
    """``value`` if it is callable; TypeError ``"{name} must be {what}, got {type}"`` otherwise."""
    if not callable(value):
        raise TypeError(f"{name} must be {what}, got {describe(value)}")
    return value


# --- tensors ------------------------------------------------------------------------------------------------------

def _dtype_words(dtype: object) -> tuple[str, str]:
    """How messages name the accepted dtypes: after "a torch.Tensor" (wrong type), and as what the tensor must be
    (wrong dtype)."""
    if dtype == "float":
        return "of floating-point dtype", "a floating-point tensor"
    if dtype == "int":
        return "of integer dtype", "an integer tensor"
    if dtype is torch.bool:
        return "of dtype bool", "a BoolTensor"
    dtypes = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)  # type: ignore[arg-type]
    names = [str(d).removeprefix("torch.") for d in dtypes]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    if len(names) == 1:
        return f"of dtype {listed}", f"a tensor of dtype {listed}"
    return f"of dtype {listed}", listed  # "q must be float16, bfloat16 or float32 [...], got dtype torch.int64"


def _dtype_ok(tensor: torch.Tensor, dtype: object) -> bool:
    if dtype == "float":
        return tensor.is_floating_point()
    if dtype == "int":
        return not (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool)
    if isinstance(dtype, torch.dtype):
        return tensor.dtype == dtype
    return tensor.dtype in tuple(dtype)  # type: ignore[arg-type]


def check_tensor(
    name: str,
    value: object,
    dims: str = "",
    *,
    dtype: str | torch.dtype | tuple[torch.dtype, ...] | None = None,
    ndim: int | None = None,
    min_ndim: int | None = None,
    nonempty: bool = False,
) -> torch.Tensor:
    """``value`` if it is a tensor of the right kind, number of dimensions and no empty named dimension.

    Checked in this order: a ``torch.Tensor`` (TypeError), its dtype (TypeError), its number of dimensions
    (ValueError), no size-0 dimension among the last ``ndim`` (or ``min_ndim``) ones (ValueError).

    Args:
        name: the argument's name, first in the message.
        value: the value to check.
        dims: the expected layout for messages, e.g. ``"[batch, channel, height, width]"``.
        dtype: None (any), ``"float"`` (any floating-point dtype), ``"int"`` (any integer dtype, not bool),
            a ``torch.dtype`` (``torch.bool`` for masks) or a tuple of dtypes.
        ndim: exact number of dimensions, or None.
        min_ndim: smallest number of dimensions (leading ``...`` dims allowed), or None.
        nonempty: refuse a size-0 dimension among the named ones (all of them with ``ndim``, the last
            ``min_ndim`` with ``min_ndim``; leading batch-like dims may be empty).

    Returns:
        ``value``, unchanged.
    """
    layout = f" {dims}" if dims else ""
    of_dtype, kind = _dtype_words(dtype) if dtype is not None else ("", "")
    if not isinstance(value, torch.Tensor):
        suffix = f" {of_dtype}" if of_dtype else ""
        raise TypeError(f"{name} must be a torch.Tensor{layout}{suffix}, got {describe(value)}")
    if dtype is not None and not _dtype_ok(value, dtype):
        raise TypeError(f"{name} must be {kind}{layout}, got dtype {value.dtype}")
    shape = tuple(value.shape)
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have shape{layout} ({ndim} dim{'' if ndim == 1 else 's'}), got shape {shape}")
    if min_ndim is not None and value.ndim < min_ndim:
        raise ValueError(f"{name} must have shape{layout} (at least {min_ndim} dims), got {value.ndim} dims: {shape}")
    if nonempty:
        named = ndim if ndim is not None else (min_ndim if min_ndim is not None else value.ndim)
        if any(size == 0 for size in shape[value.ndim - named:]):
            raise ValueError(f"{name} must not be empty (no dimension of size 0){layout}, got shape {shape}")
    return value


def check_floating(name: str, value: object, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A layer's input: a floating-point tensor, of the layer weights' ``dtype`` when given.

    Raises:
        TypeError: not a tensor, not floating-point, or another dtype than the weights (the message says to convert
        one of them).
    """
    tensor = check_tensor(name, value, dtype="float")
    if dtype is not None and tensor.dtype != dtype:
        raise TypeError(f"{name} has dtype {tensor.dtype} but the layer's weights are {dtype}; convert one of them")
    return tensor


def check_shape(name: str, tensor: torch.Tensor, expected: tuple[int | None, ...], dims: str) -> torch.Tensor:
    """ValueError unless ``tensor.shape`` matches ``expected`` (None = any size); ``dims`` names the axes.

    ``check_shape("key", key, (2, None, 8), "(batch, key, kdim)")`` -> ``key must have shape (batch, key, kdim) =
    (2, *, 8), got (2, 5, 7)``.
    """
    ok = tensor.ndim == len(expected) and all(e is None or s == e for s, e in zip(tensor.shape, expected))
    if not ok:
        sizes = ", ".join("*" if e is None else str(e) for e in expected)
        raise ValueError(f"{name} must have shape {dims} = ({sizes}), got {tuple(tensor.shape)}")
    return tensor
