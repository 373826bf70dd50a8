"""Translation equivariance and invariance, measured: how a model's feature maps and logits follow a shifted image.

A map ``f`` from images to feature maps is *equivariant* to a translation ``S`` when shifting the input shifts
the output, ``f(S x) = S' f(x)``; a map ``g`` to logits is *invariant* when ``g(S x) = g(x)``. ``S`` moves the
image by ``(dy, dx)`` whole pixels (positive = down / right) and ``S'`` moves the feature map by the same
amount in feature cells, ``(dy / stride, dx / stride)``, where ``stride`` is the number of input pixels per
feature cell (``model.feature_stride``: a conv stack's total stride, a ViT's patch size).

The closed forms this module measures against:

- **A stride-1 convolution with circular padding is exactly equivariant to circular shifts**: it is a circular
  cross-correlation, ``y[i] = sum_k w[k] x[(i + k - p) mod H]``, which commutes with ``x -> x[(n - d) mod H]``.
  Pointwise nonlinearities (ReLU) commute with any shift, so a stack of such layers is equivariant too, and a
  global average pool after it is exactly *invariant* (a sum over a cycle does not depend on where it starts).
  In float64 the measured error is rounding only (~1e-16); this is the sanity check of the measurement.
- **Stride breaks it**: a stride-``s`` layer keeps every ``s``-th output, so a shift by a multiple of ``s``
  moves the kept samples by whole cells (still exact, when ``s`` divides the image size), while any other
  shift selects a different phase of the dense output -- aliasing (Zhang 2019, "Making Convolutional Networks
  Shift-Invariant Again", https://arxiv.org/abs/1904.11486; Azulay & Weiss 2019, https://arxiv.org/abs/1805.12177).
- **Self-attention without positions is permutation equivariant**: ``Attn(P X) = P Attn(X)`` for any
  permutation ``P`` of the tokens, and a circular shift of a pixel grid is such a permutation. A learned
  absolute position embedding ``X + E`` breaks it (``P X + E != P (X + E)`` unless ``P E = E``), which is the
  ViT's equivariance error in miniature (Dosovitskiy et al. 2021, https://arxiv.org/abs/2010.11929).

Two shift modes (``SHIFT_MODES``):

- ``"circular"``: ``torch.roll``; content leaving one side comes back on the other. Feature maps are compared
  over their whole extent (nothing is cropped: every cell has a counterpart).
- ``"zeros"``: content moves, the vacated pixels are zero and content leaving the frame is lost -- what a camera
  sees when an object moves. Two errors are reported:

  * ``error`` (uncropped): over the whole feature map. It includes the *vacated band* (the first ``|dy'|``
    rows / ``|dx'|`` columns on the side the content moved away from, where ``S' f(x)`` is zero fill) and the
    *border band* on the opposite side, where ``f(x)`` saw content that ``S x`` lost and ``f(S x)`` sees padding.
  * ``error_cropped``: over the region both maps can see validly: ``c_y = ceil(|dy| / stride) + margin`` rows
    cut from the top *and* the bottom and ``c_x = ceil(|dx| / stride) + margin`` columns from the left and the
    right (none along an axis that is not shifted). With ``margin=0`` this removes both bands exactly when each
    feature cell reaches at most ``|dy'|`` cells beyond itself (one 3x3 zero-padded conv: reach 1; its cropped
    error is rounding only). Deeper models reach further (the reach is the receptive-field radius in feature
    cells; biases also make the vacated band nonzero after the first layer): pass that as ``margin`` to crop
    it, or leave ``margin=0`` and read the cropped error as "border effects beyond the shift".

Shifts that are not multiples of ``stride`` are **reported, flagged** (``aligned=False``), not refused: the
error is against the better of the (up to four) nearest feature shifts, ``floor`` or ``ceil`` of
``d / stride`` on each axis, chosen by the smaller cropped error (uncropped when the crop is empty). So a flagged
error is the least any nearby whole-cell shift of the features can explain; it is how large aliasing is.

Relative errors are Frobenius norms over the whole batch, computed in float64 from the model's outputs:
``||f(S x) - S' f(x)|| / ||f(x)||`` (uncropped), ``||crop(f(S x) - S' f(x))|| / ||crop(S' f(x))||`` (cropped),
``||g(S x) - g(x)|| / ||g(x)||`` (logits). ``0 / 0`` counts as 0 (both maps are zero, they agree); an empty crop
(a shift of half the feature map or more, since both sides are cut) gives NaN. Everything runs under ``torch.no_grad()``. Exact zeros come out at rounding level only in float64:
run the sanity checks there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product

import torch
from torch import nn

from explorer._checks import check_callable, check_choice, check_int, check_int_tuple, check_tensor, check_type
from explorer._modes import evaluating

__all__ = [
    "SHIFT_MODES",
    "FeatureShiftError",
    "LogitShiftError",
    "EquivarianceRow",
    "shift_images",
    "equivariance_error",
    "invariance_error",
    "report_shifts",
    "equivariance_report",
]

SHIFT_MODES = ("circular", "zeros")


@dataclass(frozen=True)
class FeatureShiftError:
    """Equivariance error of a feature map under one input shift (see the module docstring for the norms)."""

    shift: tuple[int, int]  # (dy, dx) applied to the images, in pixels
    feature_shift: tuple[int, int]  # (dy', dx') applied to f(x), in feature cells
    aligned: bool  # both dy and dx are multiples of the stride (else feature_shift is the best nearby one)
    error: float  # ||f(S x) - S' f(x)|| / ||f(x)|| over the whole feature map
    error_cropped: float  # the same over the validly comparable region (= error in circular mode; NaN if empty)
    crop: tuple[int, int]  # feature cells cut from each side: (top and bottom, left and right); (0, 0) circular


@dataclass(frozen=True)
class LogitShiftError:
    """Invariance error of the logits under one input shift."""

    shift: tuple[int, int]  # (dy, dx) applied to the images, in pixels
    error: float  # ||g(S x) - g(x)|| / ||g(x)||
    flips: float  # share of images whose argmax prediction changed


@dataclass(frozen=True)
class EquivarianceRow:
    """One row of :func:`equivariance_report`: one model, one shift mode, one shift.

    Fields a model cannot provide are None (no feature map: the feature fields; no logits: the logit fields).
    """

    model: str
    mode: str  # "circular" or "zeros"
    shift: tuple[int, int]  # (dy, dx) in pixels
    feature_stride: tuple[int, int] | None  # input pixels per feature cell (rows, cols) used for feature_shift
    feature_shift: tuple[int, int] | None  # (dy', dx') in feature cells
    aligned: bool | None  # shift is a multiple of the feature stride
    feature_error: float | None  # uncropped relative feature error
    feature_error_cropped: float | None  # cropped relative feature error (= feature_error in circular mode)
    logit_error: float | None  # relative logit change
    prediction_flips: float | None  # share of argmax predictions that changed


# --- validation ---------------------------------------------------------------------------------------------------


def _check_images(images: object) -> torch.Tensor:
    return check_tensor("images", images, "[batch, channel, height, width]", dtype="float", ndim=4, nonempty=True)


def _check_offset(name: str, value: object, size: int, axis: str, where: str = "") -> int:
    """``value`` as an int with ``|value| < size``; TypeError / ValueError naming ``name``."""
    value = check_int(f"{where}{name}", value, integral=True, note="a whole-pixel shift")
    if abs(value) >= size:
        raise ValueError(f"{where}{name}={value} is a shift larger than the image: |{name}| must be below the "
                         f"image {axis} {size}")
    return value


def _check_shifts(shifts: object, height: int, width: int) -> list[tuple[int, int]]:
    accepted = "a sequence of (dy, dx) pairs of ints, e.g. [(1, 0), (0, 1)]"
    if not isinstance(shifts, Sequence) or isinstance(shifts, (str, bytes)):
        raise TypeError(f"shifts must be {accepted}, got {type(shifts).__name__}")
    if len(shifts) == 0:
        raise ValueError(f"shifts must be {accepted}, got an empty sequence")
    checked = []
    for i, pair in enumerate(shifts):
        if not isinstance(pair, Sequence) or isinstance(pair, (str, bytes)) or len(pair) != 2:
            raise TypeError(f"shifts must be {accepted}, got shifts[{i}] = {pair!r}")
        where = f"shifts[{i}]: "
        checked.append((_check_offset("dy", pair[0], height, "height", where),
                        _check_offset("dx", pair[1], width, "width", where)))
    return checked


def _check_stride(stride: object) -> tuple[int, int]:
    return check_int_tuple("stride", stride, 2, 1, integral=True, note="rows, cols: input pixels per feature cell")


def _check_output(name: str, output: object, ndim: int, dims: str, batch: int) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or not output.is_floating_point():
        got = f"dtype {output.dtype}" if isinstance(output, torch.Tensor) else type(output).__name__
        raise TypeError(f"{name} must return a floating-point tensor {dims}, got {got}")
    if output.ndim != ndim or output.shape[0] != batch:
        raise ValueError(f"{name} must return a tensor {dims} with batch {batch}, got shape {tuple(output.shape)}")
    return output


# --- shifting -----------------------------------------------------------------------------------------------------


def _shift(tensor: torch.Tensor, dy: int, dx: int, mode: str) -> torch.Tensor:
    """Shift the last two dims by ``(dy, dx)`` (unchecked; in ``"zeros"`` mode any ``|d| >= size`` empties it)."""
    if mode == "circular":
        return torch.roll(tensor, shifts=(dy, dx), dims=(-2, -1))
    height, width = tensor.shape[-2:]
    out = torch.zeros_like(tensor)
    if abs(dy) >= height or abs(dx) >= width:
        return out
    # destination rows [max(dy, 0), height + min(dy, 0)) receive source rows [max(-dy, 0), height - max(dy, 0))
    out[..., max(dy, 0): height + min(dy, 0), max(dx, 0): width + min(dx, 0)] = (
        tensor[..., max(-dy, 0): height - max(dy, 0), max(-dx, 0): width - max(dx, 0)]
    )
    return out


def shift_images(images: torch.Tensor, dy: int, dx: int, mode: str = "circular") -> torch.Tensor:
    """Translate a batch of images by whole pixels.

    Args:
        images: ``[batch, channel, height, width]``, floating point.
        dy: rows to move down (negative: up); ``|dy| < height``.
        dx: columns to move right (negative: left); ``|dx| < width``.
        mode: ``"circular"`` (``torch.roll``: what leaves one side re-enters on the other) or ``"zeros"``
            (vacated pixels are zero, content leaving the frame is lost).

    Returns:
        A new tensor of the same shape, dtype and device: ``out[..., i, j] = images[..., i - dy, j - dx]``
        (indices mod the size in circular mode; zero where ``i - dy`` or ``j - dx`` falls outside in zeros mode).

    Raises:
        TypeError / ValueError naming ``images``, ``dy``, ``dx`` or ``mode``; a shift of the image size or more
        is refused (circularly it would wrap to a smaller one, with zeros it would leave nothing).
    """
    images = _check_images(images)
    mode = check_choice("mode", mode, SHIFT_MODES)
    height, width = images.shape[-2:]
    dy = _check_offset("dy", dy, height, "height")
    dx = _check_offset("dx", dx, width, "width")
    return _shift(images, dy, dx, mode)


# --- measurements -------------------------------------------------------------------------------------------------


def _relative(diff: torch.Tensor, reference: torch.Tensor) -> float:
    """``||diff|| / ||reference||`` in float64; 0/0 -> 0.0, x/0 -> inf, empty -> NaN."""
    if diff.numel() == 0:
        return math.nan
    num = torch.linalg.vector_norm(diff.to(torch.float64)).item()
    den = torch.linalg.vector_norm(reference.to(torch.float64)).item()
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def _candidates(d: int, stride: int) -> list[int]:
    """Feature shifts for an input shift ``d``: ``d / stride`` if whole, else its floor and ceil."""
    if d % stride == 0:
        return [d // stride]
    return [math.floor(d / stride), math.ceil(d / stride)]


def _crop(tensor: torch.Tensor, cy: int, cx: int) -> torch.Tensor:
    height, width = tensor.shape[-2:]
    return tensor[..., cy: max(height - cy, cy), cx: max(width - cx, cx)]


def _shifted_output(name: str, fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, dy: int, dx: int,
                    mode: str, dims: str, base: torch.Tensor) -> torch.Tensor:
    """``fn`` of the shifted images, checked like ``base`` (its output for the originals) and of the same shape."""
    moved = _check_output(name, fn(_shift(images, dy, dx, mode)), base.ndim, dims, base.shape[0])
    if moved.shape != base.shape:
        raise ValueError(f"{name} returned shape {tuple(moved.shape)} for the shifted images but "
                         f"{tuple(base.shape)} for the originals")
    return moved


def equivariance_error(
    features_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    shifts: Sequence[tuple[int, int]],
    *,
    mode: str = "circular",
    stride: int | tuple[int, int] = 1,
    margin: int = 0,
) -> list[FeatureShiftError]:
    """Relative error of ``f(S x) = S' f(x)`` for each shift: how far a feature map is from equivariant.

    Args:
        features_fn: images ``[batch, channel, height, width]`` -> feature map ``[batch, channel', height',
            width']`` (``model.features``, a conv stack, any callable). Called once on ``images`` and once per
            shift, as given: put a module in ``eval()`` first if it has dropout or batch-norm statistics.
        images: ``[batch, channel, height, width]``, in the dtype ``features_fn`` expects.
        shifts: ``(dy, dx)`` pairs in pixels, ``|dy| < height``, ``|dx| < width``.
        mode: ``"circular"`` or ``"zeros"`` (see :func:`shift_images`); the feature map is shifted the same way.
        stride: input pixels per feature cell, an int or ``(rows, cols)``. Shifts that are not multiples are
            measured against the better nearby feature shift and flagged ``aligned=False`` (module docstring).
        margin: extra feature cells cropped on each side of a shifted axis in zeros mode, beyond
            ``ceil(|d| / stride)`` (the reach of a deeper model's receptive field); ignored in circular mode.

    Returns:
        One :class:`FeatureShiftError` per shift, in order.
    """
    images = _check_images(images)
    mode = check_choice("mode", mode, SHIFT_MODES)
    batch, _, height, width = images.shape
    checked = _check_shifts(shifts, height, width)
    sy, sx = _check_stride(stride)
    margin = check_int("margin", margin, 0, integral=True, note="extra feature cells to crop")
    dims = "[batch, channel, height, width]"
    with torch.no_grad():
        base = _check_output("features_fn", features_fn(images), 4, dims, batch)
        results = []
        for dy, dx in checked:
            moved = _shifted_output("features_fn", features_fn, images, dy, dx, mode, dims, base)
            if mode == "circular":
                cy = cx = 0
            else:
                cy = math.ceil(abs(dy) / sy) + margin if dy else 0
                cx = math.ceil(abs(dx) / sx) + margin if dx else 0
            candidates = []  # (selection key, error, cropped error, feature shift)
            for fy, fx in product(_candidates(dy, sy), _candidates(dx, sx)):
                reference = _shift(base, fy, fx, mode)
                diff = moved - reference
                error = _relative(diff, base)
                cropped = error if mode == "circular" else _relative(_crop(diff, cy, cx), _crop(reference, cy, cx))
                candidates.append((error if math.isnan(cropped) else cropped, error, cropped, (fy, fx)))
            _, error, cropped, feature_shift = min(candidates, key=lambda c: c[0])  # first of equals: floor
            results.append(FeatureShiftError(
                shift=(dy, dx),
                feature_shift=feature_shift,
                aligned=dy % sy == 0 and dx % sx == 0,
                error=error,
                error_cropped=cropped,
                crop=(cy, cx),
            ))
    return results


def invariance_error(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    shifts: Sequence[tuple[int, int]],
    *,
    mode: str = "circular",
) -> list[LogitShiftError]:
    """Relative change of the logits ``||g(S x) - g(x)|| / ||g(x)||`` and the share of flipped predictions.

    Args:
        logits_fn: images ``[batch, channel, height, width]`` -> logits ``[batch, classes]`` (a model's
            forward, any callable), called as given (``eval()`` a module with dropout first).
        images: ``[batch, channel, height, width]``.
        shifts: ``(dy, dx)`` pairs in pixels, ``|dy| < height``, ``|dx| < width``.
        mode: ``"circular"`` or ``"zeros"`` (see :func:`shift_images`).

    Returns:
        One :class:`LogitShiftError` per shift, in order; ``flips`` is the share of images whose argmax class
        (first maximum on ties, as ``torch.argmax``) differs between ``g(S x)`` and ``g(x)``.
    """
    images = _check_images(images)
    mode = check_choice("mode", mode, SHIFT_MODES)
    batch, _, height, width = images.shape
    checked = _check_shifts(shifts, height, width)
    dims = "[batch, classes]"
    with torch.no_grad():
        base = _check_output("logits_fn", logits_fn(images), 2, dims, batch)
        predictions = base.argmax(dim=-1)  # (batch,)
        results = []
        for dy, dx in checked:
            moved = _shifted_output("logits_fn", logits_fn, images, dy, dx, mode, dims, base)
            flips = (moved.argmax(dim=-1) != predictions).to(torch.float64).mean().item()
            results.append(LogitShiftError(shift=(dy, dx), error=_relative(moved - base, base), flips=flips))
    return results


# --- report -------------------------------------------------------------------------------------------------------


def report_shifts(max_shift: int) -> list[tuple[int, int]]:
    """The shifts of :func:`equivariance_report`: ``(0, s)`` then ``(s, 0)`` for ``s = 1 ... max_shift``."""
    max_shift = check_int("max_shift", max_shift, 1, integral=True)
    return [(0, s) for s in range(1, max_shift + 1)] + [(s, 0) for s in range(1, max_shift + 1)]


def _model_name(model: object) -> str:
    if isinstance(model, nn.Module):
        return type(model).__name__
    return getattr(model, "__name__", type(model).__name__)


def _infer_stride(images: torch.Tensor, features: torch.Tensor) -> tuple[int, int]:
    """Input pixels per feature cell, per axis: ``round(size / feature size)`` (at least 1).

    Exact for ``"same"``-padded stacks whose strides divide the size (10 -> 5 at stride 2, 28 -> 7 at 4), and
    right for ceil-sized maps (9 -> 5 at stride 2) and a few cells lost to ``"valid"`` padding (8 -> 6 at 1).
    """
    return tuple(  # type: ignore[return-value]
        max(1, round(size / cells)) for size, cells in zip(images.shape[-2:], features.shape[-2:])
    )


def equivariance_report(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    max_shift: int = 4,
    modes: Sequence[str] = SHIFT_MODES,
    *,
    shifts: Sequence[tuple[int, int]] | None = None,
    stride: int | tuple[int, int] | None = None,
    margin: int = 0,
    name: str | None = None,
) -> list[EquivarianceRow]:
    """Feature equivariance and logit invariance of one model, as tidy rows for a table or a plot.

    What is measured depends on what the model has:

    - ``model.features`` (``[batch, channel, height', width']``): the feature errors; the logits come from
      ``model(images)``.
    - no ``features`` (a plain callable or module): ``model(images)`` is taken as a feature map if it has 4 dims
      (logit fields None) and as logits if it has 2 dims (feature fields None).

    The feature stride is ``stride`` if given, else ``model.feature_stride``, else inferred from one image as
    ``round(image size / feature-map size)`` per axis (stated in each row's ``feature_stride``).

    A module is switched to ``eval()`` for the measurement (dropout off; training flags restored afterwards);
    the images are moved to its parameters' device and dtype (their own dtype for a callable); everything runs
    under ``torch.no_grad()``. No randomness is involved, so the same model and images give the same rows.

    Args:
        model: an ``nn.Module`` or callable, as above.
        images: ``[batch, channel, height, width]``.
        max_shift: shifts ``(0, s)`` and ``(s, 0)`` for ``s = 1 ... max_shift`` (:func:`report_shifts`).
        modes: shift modes to measure, a subset of ``SHIFT_MODES``.
        shifts: explicit ``(dy, dx)`` pairs instead of ``max_shift``'s.
        stride: feature stride override, an int or ``(rows, cols)``.
        margin: extra crop for the cropped zeros-mode error (see :func:`equivariance_error`).
        name: the ``model`` column (default: the class name, or a function's ``__name__``).

    Returns:
        One :class:`EquivarianceRow` per mode and shift, modes outer.
    """
    check_callable("model", model, "callable (an nn.Module or a function)")
    images = _check_images(images)
    if isinstance(modes, str) or not isinstance(modes, Sequence) or len(modes) == 0:
        raise TypeError(f"modes must be a non-empty sequence of modes from {SHIFT_MODES}, got {modes!r}")
    for mode in modes:
        check_choice("mode", mode, SHIFT_MODES)
    shift_list = _check_shifts(report_shifts(max_shift) if shifts is None else shifts, *images.shape[-2:])
    if stride is not None:
        stride = _check_stride(stride)
    margin = check_int("margin", margin, 0, integral=True, note="extra feature cells to crop")
    if name is None:
        name = _model_name(model)
    else:
        check_type("name", name, str, "a str or None")

    parameter = next((p for p in model.parameters() if p.is_floating_point()), None) \
        if isinstance(model, nn.Module) else None
    if parameter is not None:
        images = images.to(device=parameter.device, dtype=parameter.dtype)

    features_fn = getattr(model, "features", None)
    if features_fn is not None:
        check_callable("model.features", features_fn)

    rows = []
    with evaluating(model), torch.no_grad():
        logits_fn: Callable[[torch.Tensor], torch.Tensor] | None = model
        if features_fn is None:
            probe = model(images[:1])
            ndim = probe.ndim if isinstance(probe, torch.Tensor) else None
            if ndim == 4:
                features_fn, logits_fn = model, None
            elif ndim != 2:
                raise ValueError(f"model has no features method, so its output must be a feature map [batch, "
                                 f"channel, height, width] or logits [batch, classes]; got "
                                 f"{'shape ' + str(tuple(probe.shape)) if ndim else type(probe).__name__}")
        if features_fn is not None and stride is None:
            declared = getattr(model, "feature_stride", None)
            if declared is not None:
                stride = _check_stride(declared)
            else:
                probe = _check_output("model.features", features_fn(images[:1]), 4,
                                      "[batch, channel, height, width]", 1)
                stride = _infer_stride(images, probe)
        for mode in modes:
            features = None if features_fn is None else equivariance_error(
                features_fn, images, shift_list, mode=mode, stride=stride, margin=margin)  # type: ignore[arg-type]
            logits = None if logits_fn is None else invariance_error(logits_fn, images, shift_list, mode=mode)
            for i, shift in enumerate(shift_list):
                f = None if features is None else features[i]
                g = None if logits is None else logits[i]
                rows.append(EquivarianceRow(
                    model=name,
                    mode=mode,
                    shift=shift,
                    feature_stride=None if f is None else stride,  # type: ignore[arg-type]
                    feature_shift=None if f is None else f.feature_shift,
                    aligned=None if f is None else f.aligned,
                    feature_error=None if f is None else f.error,
                    feature_error_cropped=None if f is None else f.error_cropped,
                    logit_error=None if g is None else g.error,
                    prediction_flips=None if g is None else g.flips,
                ))
    return rows
