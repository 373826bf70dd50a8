"""Interventions: ablate or patch heads and channels and measure what the output does.

Attention maps and gradients are correlational; this module changes one unit (an attention head or a conv channel)
and measures the effect, built on :func:`explorer.intervene` in the TransformerLens manner: a few small edit
builders, one generic sweep, and metrics passed in as functions.

Units. A *unit hook* is a hook point with a ``"head"`` dimension (``*.hook_z`` ``[batch, head, query, head_dim]``,
before the output projection, where heads are separable) or a ``"channel"`` dimension (a conv's ``hook_out``
``[batch, channel, *spatial]``). A selection of units is ``{hook_name: [index, ...]}``; a sweep walks the hooks
matched by a glob in model order (the ``layer`` axis) and every index of each (the ``head`` / ``channel`` axis).
Hooks may have different widths (convs of 32, 40 and 40 channels): a sweep's ``unit`` axis is then as long as the
widest and padded with NaN (:class:`Sweep`, :func:`flat_units`); :func:`pruning_order` leaves NaN out.

Edits (each returns ``{hook_name: fn}`` for :func:`explorer.intervene`):

* :func:`zero_ablation` -- the units' activations set to 0;
* :func:`mean_ablation` -- set to their mean over a reference batch (:func:`unit_means`);
* :func:`resample_ablation` -- set to the activation of another input of a reference batch;
* :func:`patching` -- set to the activation recorded on another input (clean -> corrupted activation patching),
  optionally at one position only;
* :func:`scaling` -- multiplied by a factor per unit (the multiplicative mask of Michel et al.).

:func:`run_with_edits` runs the model with edits applied. Sweeps (:class:`Sweep`, a tensor with named dims):
:func:`ablation_sweep` ``[layer, unit]``, :func:`patching_sweep` ``[layer, unit]`` or ``[layer, position, unit]``,
:func:`gradient_importance` ``[layer, unit]`` (the gradient of the metric w.r.t. a mask at 1: a first-order
predictor of the ablation effect, ``effect_h ~ -grad_h``; Michel, Levy & Neubig 2019,
https://arxiv.org/abs/1905.10650).

Chunks. ``chunk=k`` runs the inputs ``k`` at a time (less memory, and on one CPU thread batches of ~100 run about
twice as fast as one of 1000) and joins the outputs along dim 0 before the metric, so a metric built for the whole
batch (``accuracy(labels)``) works unchanged. The inputs must then be a tensor or a tuple/list of tensors whose
dim 0 is the batch, and ``forward`` must return a tensor or a tuple/list of them with the batch first.

Metrics (:mod:`explorer.analysis.intervention_metrics`) take the model's output and return one number per input:
:func:`logit_difference`, :func:`class_probability`, :func:`kl_divergence`, :func:`pair_similarity`,
:func:`accuracy`. Pruning (Michel et al.'s test): :func:`pruning_order` ranks units by a score, :func:`pruning_curve`
removes them cumulatively and measures the metric after each removal. :func:`query_key_view`
(:mod:`explorer.analysis.query_key`) is bertviz's "neuron view" of one head and query.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from explorer._checks import check_callable, check_choice, check_int, check_tensor, check_type
from explorer._modes import evaluating
from explorer.analysis.chunks import Part, record_parts, run_parts, slices, splice, take
from explorer.analysis.intervention_metrics import (
    Metric, accuracy, class_probability, kl_divergence, logit_difference, pair_similarity,
)
from explorer.analysis.query_key import QueryKeyView, query_key_view
from explorer.hooks import Edit, HookPoint, Trace, hook_points, intervene, nearest_names

__all__ = [
    "UNIT_DIMS", "Sweep", "QueryKeyView", "unit_hooks", "unit_axis", "unit_counts", "flat_units", "zero_ablation",
    "mean_ablation", "resample_ablation", "patching", "scaling", "unit_means", "run_with_edits", "ablation_sweep",
    "patching_sweep", "gradient_importance", "logit_difference", "class_probability", "kl_divergence",
    "pair_similarity", "query_key_view", "accuracy", "pruning_order", "pruning_curve",
]

UNIT_DIMS = ("head", "channel")  # the dimension a unit indexes, in the hook point's dims
ABLATIONS = ("zero", "mean", "resample")
Forward = Callable[[nn.Module, Any], Any]  # forward(model, inputs) -> output
Units = Mapping[str, Sequence[int]]


# --- units ------------------------------------------------------------------------------------------------------


def unit_axis(hook: HookPoint) -> int:
    """Position of the ``"head"`` or ``"channel"`` dimension in ``hook.dims``.

    Raises:
        ValueError: the hook point has neither (name the hook and its dims).
    """
    for dim in UNIT_DIMS:
        if dim in hook.dims:
            return hook.dims.index(dim)
    raise ValueError(f"hook point {hook.name!r} has dims {hook.dims}, with no 'head' or 'channel' axis to index "
                     "units by; per-head edits act on '*.hook_z', per-channel edits on a conv's 'hook_out'")


def unit_hooks(model: nn.Module, hooks: str | Sequence[str]) -> list[HookPoint]:
    """The unit hook points matched by ``hooks`` (a name, a glob or a list of them), in model order.

    Raises:
        ValueError: nothing matches (the nearest names are listed) or a matched hook point has no unit axis.
    """
    points = hook_points(model)
    patterns = [hooks] if isinstance(hooks, str) else list(hooks)
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"hooks must be a str (name or glob) or a non-empty list of str, got {hooks!r}")
    found = [hp for path, hp in points.items() if any(path == p or fnmatch.fnmatchcase(path, p) for p in patterns)]
    if not found:
        raise ValueError(f"hooks={hooks!r} matches no hook point of the model; nearest: "
                         f"{nearest_names(patterns[0], points)}")
    for hp in found:
        unit_axis(hp)
    return found


def unit_counts(model: nn.Module, forward: Forward, inputs: Any, hooks: str | Sequence[str]) -> dict[str, int]:
    """Number of units (heads or channels) at each unit hook, read from one forward pass on ``inputs``."""
    points = unit_hooks(model, hooks)
    trace = record_parts(model, forward, inputs, [hp.name for hp in points], [None])
    return {hp.name: int(trace[hp.name].shape[unit_axis(hp)]) for hp in points}


def _check_units(model: nn.Module, units: object) -> dict[str, list[int]]:
    """``{hook_name: [index, ...]}`` with every name an exact unit hook of ``model`` and indices ints >= 0."""
    check_type("units", units, Mapping, "a mapping {hook_name: [unit index, ...]}")
    points = hook_points(model)
    checked: dict[str, list[int]] = {}
    for name, indices in units.items():  # type: ignore[union-attr]
        if name not in points:
            raise ValueError(f"units: {name!r} is not a hook point of the model; "
                             f"nearest: {nearest_names(name, points)}")
        unit_axis(points[name])
        if isinstance(indices, int) and not isinstance(indices, bool):
            indices = [indices]
        if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence):
            raise TypeError(f"units[{name!r}] must be a list of unit indices, got {type(indices).__name__}")
        checked[name] = [check_int(f"units[{name!r}] index", i, 0) for i in indices]
    return checked


def _index(hook: HookPoint, x: torch.Tensor, indices: Sequence[int]) -> tuple[int, torch.Tensor]:
    """The unit axis and the indices as a tensor, each checked against the activation's size there."""
    axis = unit_axis(hook)
    size = x.shape[axis]
    bad = [i for i in indices if i >= size]
    if bad:
        raise ValueError(f"units: index {bad} out of range at hook point {hook.name!r}: its "
                         f"{hook.dims[axis]} axis has {size} units (0..{size - 1})")
    return axis, torch.as_tensor(list(indices), dtype=torch.long, device=x.device)


def _replace(hook: HookPoint, x: torch.Tensor, indices: Sequence[int], source: torch.Tensor,
             position: int | None = None) -> torch.Tensor:
    """``x`` with the selected units (at one position along the next axis, if given) taken from ``source``,
    which broadcasts to ``x``."""
    axis, index = _index(hook, x, indices)
    try:
        source = source.to(dtype=x.dtype, device=x.device).expand_as(x)
    except RuntimeError:
        raise ValueError(f"the replacement for hook point {hook.name!r} has shape {tuple(source.shape)}, which does "
                         f"not broadcast to the activation's {tuple(x.shape)} (dims {hook.dims})") from None
    keep = torch.ones(x.shape[axis], dtype=torch.bool, device=x.device)
    keep[index] = False
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    keep = keep.view(shape)
    if position is not None:  # units of one position only: the position axis follows the unit axis
        pos_axis = axis + 1
        if pos_axis >= x.ndim or not 0 <= position < x.shape[pos_axis]:
            raise ValueError(f"position: {position} is out of range at hook point {hook.name!r} "
                             f"(shape {tuple(x.shape)}, dims {hook.dims})")
        at = torch.zeros(x.shape[pos_axis], dtype=torch.bool, device=x.device)
        at[position] = True
        pshape = [1] * x.ndim
        pshape[pos_axis] = x.shape[pos_axis]
        keep = keep | ~at.view(pshape)
    return torch.where(keep, x, source)


# --- edits ------------------------------------------------------------------------------------------------------


def _edits(model: nn.Module, units: object, make: Callable[[str, list[int]], Edit]) -> dict[str, Edit]:
    return {name: make(name, indices) for name, indices in _check_units(model, units).items()}


def zero_ablation(model: nn.Module, units: Units) -> dict[str, Edit]:
    """Edits that set the selected units to zero.

    Args:
        model: the model the units belong to.
        units: ``{hook_name: [unit index, ...]}``, e.g. ``{"blocks.0.attn.hook_z": [3]}``.

    Returns:
        ``{hook_name: fn}`` for :func:`explorer.intervene`.
    """
    return _edits(model, units, lambda name, idx: (lambda x, hook: _replace(hook, x, idx, x.new_zeros(()))))


def scaling(model: nn.Module, factors: Mapping[str, torch.Tensor]) -> dict[str, Edit]:
    """Edits that multiply each unit by a factor: ``{hook_name: tensor [unit] or [batch, unit]}``.

    With factors that require grad this is Michel et al.'s head mask ``xi``; 0 is a zero ablation.
    """
    check_type("factors", factors, Mapping, "a mapping {hook_name: tensor [unit] or [batch, unit]}")
    units = _check_units(model, {name: [] for name in factors})

    def make(factor: torch.Tensor) -> Edit:
        def edit(x: torch.Tensor, hook: HookPoint) -> torch.Tensor:
            axis = unit_axis(hook)
            if factor.shape[-1] != x.shape[axis] or factor.ndim not in (1, 2) or (
                    factor.ndim == 2 and factor.shape[0] != x.shape[0]):
                raise ValueError(f"factors[{hook.name!r}] has shape {tuple(factor.shape)}; the activation "
                                 f"{tuple(x.shape)} (dims {hook.dims}) needs [{x.shape[axis]}] or "
                                 f"[{x.shape[0]}, {x.shape[axis]}]")
            shape = [1] * x.ndim
            shape[axis] = x.shape[axis]
            if factor.ndim == 2:
                shape[0] = x.shape[0]
            return x * factor.to(x.dtype).view(shape)
        return edit

    for name, factor in factors.items():
        check_tensor(f"factors[{name!r}]", factor, "[unit] or [batch, unit]", dtype="float")
    return {name: make(factors[name]) for name in units}


def _check_batch(name: str, inputs: Any) -> None:
    """ValueError if ``inputs`` (a tensor, or a tuple/list/dict of them) is an empty batch."""
    tensors = list(inputs.values()) if isinstance(inputs, Mapping) else inputs
    if any(isinstance(t, torch.Tensor) and t.ndim and t.shape[0] == 0
           for t in (tensors if isinstance(tensors, (tuple, list)) else [tensors])):
        raise ValueError(f"{name} is an empty batch (a tensor of batch size 0): nothing to average or draw from")


def _resample_pick(size: int, batch: int, seed: int) -> torch.Tensor:
    """The reference input of each of ``batch`` inputs: ``[batch]`` draws from ``size``, with replacement."""
    return torch.randint(size, (batch,), generator=torch.Generator().manual_seed(seed))


def unit_means(model: nn.Module, forward: Forward, reference: Any, hooks: str | Sequence[str],
               over: Sequence[str] = ("batch",), *, chunk: int | None = None) -> dict[str, torch.Tensor]:
    """Mean activation of each unit hook over a reference batch.

    Args:
        model: the model.
        forward: ``forward(model, inputs)`` runs the model.
        reference: the reference inputs (a batch of at least one input).
        hooks: unit hooks (name, glob or list).
        over: dims to average over, ``("batch",)`` (per position; the inputs to ablate must then have the
            reference's positions) or e.g. ``("batch", "query")`` (one mean vector per unit, any length).
        chunk: record ``chunk`` inputs at a time (see the module docstring).

    Returns:
        ``{hook_name: mean}`` with the averaged dims kept as size 1.
    """
    points = unit_hooks(model, hooks)
    _check_batch("reference", reference)
    trace = record_parts(model, forward, reference, [hp.name for hp in points], slices(reference, chunk))
    means = {}
    for hp in points:
        x = trace[hp.name]
        if x.shape[0] == 0:
            raise ValueError("reference is an empty batch: the mean of no activations is undefined")
        unknown = [d for d in over if d not in hp.dims]
        if unknown:
            raise ValueError(f"over={tuple(over)}: {unknown} not among the dims {hp.dims} of {hp.name!r}")
        means[hp.name] = x.mean(dim=[hp.dims.index(d) for d in over], keepdim=True)
    return means


def mean_ablation(model: nn.Module, units: Units, means: Mapping[str, torch.Tensor]) -> dict[str, Edit]:
    """Edits that set the selected units to their mean over a reference batch (:func:`unit_means`)."""
    checked = _check_units(model, units)
    missing = [name for name in checked if name not in means]
    if missing:
        raise ValueError(f"means has no entry for {missing}; compute it with unit_means(model, forward, reference, "
                         "hooks) over the same hooks")
    return {name: (lambda m: lambda x, hook: _replace(hook, x, idx, m))(means[name])
            for name, idx in checked.items()}


def resample_ablation(model: nn.Module, units: Units, reference: Trace | Mapping[str, torch.Tensor],
                      seed: int = 0) -> dict[str, Edit]:
    """Edits that set the selected units of input ``i`` to those of a random reference input (drawn with ``seed``,
    with replacement, one draw per input and hook). The reference must have the inputs' positions."""
    checked = _check_units(model, units)
    check_int("seed", seed, 0)

    def make(name: str, idx: list[int]) -> Edit:
        if name not in reference:
            raise ValueError(f"reference has no activation at {name!r}; record it on the reference batch first")
        source = reference[name]
        if source.shape[0] == 0:
            raise ValueError("reference is an empty batch: there is nothing to resample from")

        def edit(x: torch.Tensor, hook: HookPoint) -> torch.Tensor:
            return _replace(hook, x, idx, source[_resample_pick(source.shape[0], x.shape[0], seed)])
        return edit

    return {name: make(name, idx) for name, idx in checked.items()}


def patching(model: nn.Module, units: Units, source: Trace | Mapping[str, torch.Tensor],
             position: int | None = None) -> dict[str, Edit]:
    """Edits that replace the selected units with their activation recorded on other inputs (activation patching).

    Args:
        model: the model.
        units: ``{hook_name: [unit index, ...]}``.
        source: activations recorded on the source inputs (a :class:`~explorer.Trace` or ``{hook_name: tensor}``),
            shaped as the activations they replace.
        position: patch only this position (the axis after the unit axis: the query token for ``hook_z``, the
            height row for a 2-d conv); None patches every position.
    """
    checked = _check_units(model, units)
    for name in checked:
        if name not in source:
            raise ValueError(f"source has no activation at {name!r}; record it on the source inputs first")
    if position is not None:
        check_int("position", position, 0)
    return {name: (lambda s: lambda x, hook: _replace(hook, x, idx, s, position))(source[name])
            for name, idx in checked.items()}


# --- running ----------------------------------------------------------------------------------------------------


def run_with_edits(model: nn.Module, forward: Forward, inputs: Any, edits: Mapping[str, Edit] | None = None, *,
                   chunk: int | None = None) -> Any:
    """``forward(model, inputs)`` with ``edits`` applied, in eval mode without gradients (flags restored).

    Args:
        model: the model.
        forward: ``forward(model, inputs)`` -> output.
        inputs: the batch.
        edits: ``{hook_name: fn}`` (e.g. :func:`zero_ablation`), or None for the unchanged model.
        chunk: run ``chunk`` inputs at a time and join the outputs along dim 0 (see the module docstring); edits
            that hold per-input values (:func:`patching`, ``[batch, unit]`` :func:`scaling` factors) see one chunk
            at a time, so use them without ``chunk``.
    """
    check_callable("forward", forward)
    return run_parts(model, forward, inputs, slices(inputs, chunk), edits)


def _check_metric(value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.ndim > 1:
        raise ValueError(f"metric must return a Tensor [batch] or a scalar, got "
                         f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}")
    return value.detach().double().reshape(-1)


def _measure(model: nn.Module, forward: Forward, inputs: Any, metric: Metric,
             edits: Mapping[str, Edit] | Callable[[Part], Mapping[str, Edit]] | None = None,
             parts: list[Part] | None = None) -> torch.Tensor:
    """Metric per input ``[batch]`` of one (edited) run, without gradients, in eval mode."""
    output = run_parts(model, forward, inputs, parts or [None], edits)
    with evaluating(model), torch.no_grad():
        return _check_metric(metric(output))


# --- sweeps -----------------------------------------------------------------------------------------------------


@dataclass
class Sweep:
    """The result of a sweep: ``per_input`` ``[input, *dims]`` and its mean ``values`` ``[*dims]``.

    ``dims`` names the axes of ``values`` (``("layer", "head")``, ``("layer", "position", "head")``,
    ``("layer", "channel")``); ``layers`` holds the hook names along ``layer`` and ``counts`` their units. Hooks of
    different widths share one unit axis as long as the widest, padded with NaN where a layer has fewer units (and
    the position axis likewise); :func:`flat_units` drops the padding. ``baseline`` is the metric of the unchanged model
    per input and ``reference`` (patching) the metric on the source inputs.
    """

    per_input: torch.Tensor                       # [input, *dims], float64, NaN where a layer has no such unit
    dims: tuple[str, ...]                         # names of values' axes
    layers: list[str]                             # hook name of each index along "layer"
    baseline: torch.Tensor                        # [input], metric of the unchanged model
    reference: torch.Tensor | None = None         # [input], metric on the source inputs (patching)
    meta: dict[str, Any] = field(default_factory=dict)
    counts: list[int] = field(default_factory=list)  # units of each layer (empty: every layer as wide as the axis)

    @property
    def values(self) -> torch.Tensor:
        """Mean over inputs, ``[*dims]``."""
        return self.per_input.mean(0)

    @property
    def effect(self) -> torch.Tensor:
        """Mean change of the metric from the baseline, ``[*dims]`` (ablation: negative = the unit helped)."""
        return (self.per_input - self.baseline.view(-1, *[1] * len(self.dims))).mean(0)

    def normalised(self) -> torch.Tensor:
        """Patching: ``(patched - baseline) / (reference - baseline)``, 0 = nothing restored, 1 = all restored."""
        if self.reference is None:
            raise ValueError("normalised() needs the source inputs' metric; it is set by patching_sweep only")
        gap = (self.reference - self.baseline).mean()
        return self.effect / gap

    def __repr__(self) -> str:
        shape = dict(zip(self.dims, self.values.shape))
        return f"Sweep({shape}, inputs={self.per_input.shape[0]})"


def flat_units(values: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """``[input, layer, ..., unit]`` padded per layer (a :class:`Sweep`'s layout) -> ``[input, ..., sum(counts)]``:
    layer ``l``'s first ``counts[l]`` units, layer after layer."""
    check_tensor("values", values, "[input, layer, ..., unit]", ndim=None)
    if values.ndim < 3 or values.shape[1] != len(counts) or max(counts, default=0) > values.shape[-1]:
        raise ValueError(f"values {tuple(values.shape)} must be [input, layer={len(counts)}, ..., unit >= "
                         f"{max(counts, default=0)}] for counts {list(counts)}")
    return torch.cat([values[:, layer, ..., :count] for layer, count in enumerate(counts)], dim=-1)


def _layout(model: nn.Module, forward: Forward, inputs: Any, hooks: str | Sequence[str],
            parts: list[Part]) -> tuple[list[HookPoint], list[int], str]:
    """The unit hooks, their widths (read from the first part of the inputs) and the unit kind."""
    points = unit_hooks(model, hooks)
    kinds = {hp.name: hp.dims[unit_axis(hp)] for hp in points}
    if len(set(kinds.values())) > 1:
        raise ValueError(f"hooks={hooks!r} mixes unit kinds ({kinds}); sweep heads and channels separately")
    counts = unit_counts(model, forward, take(inputs, parts[0]), list(kinds))
    return points, [counts[hp.name] for hp in points], kinds[points[0].name]


def _padded(batch: int, counts: list[int], *middle: int) -> torch.Tensor:
    """NaN ``[batch, layer, *middle, max(counts)]`` float64, to fill."""
    return torch.full((batch, len(counts), *middle, max(counts)), float("nan"), dtype=torch.float64)


def ablation_sweep(model: nn.Module, forward: Forward, inputs: Any, metric: Metric, hooks: str | Sequence[str],
                   how: str = "zero", reference: Any = None, seed: int = 0, *,
                   means: Mapping[str, torch.Tensor] | None = None, chunk: int | None = None) -> Sweep:
    """Ablate every unit alone and measure the metric: ``[layer, head]`` or ``[layer, channel]``.

    Args:
        model: the model (run in eval mode, without gradients; flags restored).
        forward: ``forward(model, inputs)`` -> output for ``metric``.
        inputs: the batch to measure on.
        metric: ``metric(output)`` -> ``[batch]``.
        hooks: unit hooks, e.g. ``"*.attn.hook_z"`` (one layer each; widths may differ: NaN-padded, see
            :class:`Sweep`).
        how: ``"zero"``, ``"mean"`` (mean over ``reference``'s batch, per position) or ``"resample"`` (a random
            input of ``reference`` per input).
        reference: the reference batch for ``"mean"`` and ``"resample"`` (default ``inputs``).
        seed: the draw of ``"resample"``.
        means: ``"mean"`` only, instead of ``reference``: the value each unit is set to, ``{hook_name: tensor}``
            for every hook of ``hooks``, broadcasting to its activation (e.g. :func:`unit_means` over other dims, or
            a mean over the real tokens only).
        chunk: run ``chunk`` inputs at a time (see the module docstring); the result is that of one batch.
    """
    check_callable("forward", forward)
    check_callable("metric", metric)
    check_choice("how", how, ABLATIONS)
    parts = slices(inputs, chunk)
    points, counts, unit_dim = _layout(model, forward, inputs, hooks, parts)
    names = [hp.name for hp in points]
    if means is not None:
        if how != "mean" or reference is not None:
            raise ValueError(f"means sets the values of how='mean' in place of reference; got how={how!r} and "
                             f"reference {'given' if reference is not None else 'None'}")
        check_type("means", means, Mapping, "a mapping {hook_name: tensor}")
        missing = [name for name in names if name not in means]
        if missing:
            raise ValueError(f"means has no entry for {missing}; it must cover every hook of hooks={hooks!r}")
    baseline = _measure(model, forward, inputs, metric, parts=parts)
    source: Mapping[str, torch.Tensor] = {} if means is None else means
    if reference is not None:
        _check_batch("reference", reference)
    default = reference is None  # the reference is the inputs, run in the same chunks
    if how == "mean" and means is None:
        source = unit_means(model, forward, inputs if default else reference, names, chunk=chunk if default else None)
    elif how == "resample":
        source = record_parts(model, forward, inputs if default else reference, names, parts if default else [None])
        if parts != [None]:  # draw once for the whole batch, as one batch would, and hand each chunk its rows
            pick = {name: _resample_pick(s.shape[0], baseline.shape[0], seed) for name, s in source.items()}
            source = {name: s[pick[name]] for name, s in source.items()}
    out = _padded(baseline.shape[0], counts)
    for layer, name in enumerate(names):
        for unit in range(counts[layer]):
            units = {name: [unit]}
            if how == "zero":
                edits: Any = zero_ablation(model, units)
            elif how == "mean":
                edits = mean_ablation(model, units, source)
            elif parts == [None]:
                edits = resample_ablation(model, units, source, seed)
            else:
                edits = _patch_part(model, units, source, None)
            out[:, layer, unit] = _measure(model, forward, inputs, metric, edits, parts)
    return Sweep(out, ("layer", unit_dim), names, baseline, meta={"how": how}, counts=counts)


def _patch_part(model: nn.Module, units: Units, source: Mapping[str, torch.Tensor], position: int | None
                ) -> Callable[[Part], dict[str, Edit]]:
    """Patching edits per part of the batch: each part takes its rows of ``source``."""
    return lambda part: patching(model, units, {name: take(s, part) for name, s in source.items()}, position)


def patching_sweep(model: nn.Module, forward: Forward, clean: Any, corrupted: Any, metric: Metric,
                   hooks: str | Sequence[str], per_position: bool = False, *, chunk: int | None = None) -> Sweep:
    """Clean -> corrupted activation patching: run ``corrupted`` with one unit's activation taken from ``clean``.

    Returns a :class:`Sweep` ``[layer, head]`` (or ``[layer, position, head]`` with ``per_position``) of the
    metric on the patched runs; ``baseline`` is the corrupted run, ``reference`` the clean run, and
    :meth:`Sweep.normalised` the share of the clean-vs-corrupted gap each patch restores. ``chunk`` runs both
    batches ``chunk`` inputs at a time (see the module docstring).
    """
    check_callable("forward", forward)
    check_callable("metric", metric)
    parts, clean_parts = slices(corrupted, chunk), slices(clean, chunk)
    points, counts, unit_dim = _layout(model, forward, corrupted, hooks, parts)
    names = [hp.name for hp in points]
    cache = record_parts(model, forward, clean, names, clean_parts)
    corrupted_trace = record_parts(model, forward, corrupted, names, parts)
    for name in names:
        if cache[name].shape != corrupted_trace[name].shape:
            raise ValueError(f"clean and corrupted inputs give different shapes at {name!r}: "
                             f"{tuple(cache[name].shape)} vs {tuple(corrupted_trace[name].shape)}; patching needs "
                             "inputs of the same batch size and length")
    baseline = _measure(model, forward, corrupted, metric, parts=parts)
    reference = _measure(model, forward, clean, metric, parts=clean_parts)
    positions = [cache[hp.name].shape[unit_axis(hp) + 1] if per_position else 1 for hp in points]
    out = _padded(baseline.shape[0], counts, max(positions))
    for layer, name in enumerate(names):
        for p in range(positions[layer]):
            for unit in range(counts[layer]):
                edits = _patch_part(model, {name: [unit]}, cache, p if per_position else None)
                out[:, layer, p, unit] = _measure(model, forward, corrupted, metric, edits, parts)
    if per_position:
        return Sweep(out, ("layer", "position", unit_dim), names, baseline, reference, counts=counts)
    return Sweep(out[:, :, 0], ("layer", unit_dim), names, baseline, reference, counts=counts)


def gradient_importance(model: nn.Module, forward: Forward, inputs: Any, metric: Metric,
                        hooks: str | Sequence[str], *, chunk: int | None = None) -> Sweep:
    """Gradient of the metric w.r.t. a multiplicative mask ``xi`` per unit and input, at ``xi = 1``.

    ``per_input[i, layer, unit] = d metric_i / d xi_{i, layer, unit}``; the first-order (Taylor) prediction of
    zero-ablating that unit is ``-per_input``; Michel et al.'s importance is ``per_input.abs().mean(0)``.
    Parameters' ``.grad`` are left untouched (``torch.autograd.grad`` on the masks only). Hooks may differ in width
    (NaN-padded, see :class:`Sweep`). With ``chunk``, one chunk at a time runs with gradients and the metric reads
    the other inputs' outputs from the unchanged run (equal at ``xi = 1``), so the gradient is that of one batch.
    """
    check_callable("forward", forward)
    check_callable("metric", metric)
    parts = slices(inputs, chunk)
    points, counts, unit_dim = _layout(model, forward, inputs, hooks, parts)
    names = [hp.name for hp in points]
    output = run_parts(model, forward, inputs, parts)
    with evaluating(model), torch.no_grad():
        baseline = _check_metric(metric(output))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    per_input = _padded(baseline.shape[0], counts)
    for part in parts:
        rows = slice(None) if part is None else part
        batch = baseline.shape[0] if part is None else part.stop - part.start
        masks = {name: torch.ones(batch, count, dtype=dtype, requires_grad=True) for name, count in zip(names, counts)}
        with evaluating(model), torch.enable_grad(), intervene(model, scaling(model, masks)):
            value = forward(model, take(inputs, part))
            value = metric(value if part is None else splice(output, part, value))
            grads = torch.autograd.grad(value.sum(), [masks[name] for name in names], allow_unused=True)
        for layer, (grad, count) in enumerate(zip(grads, counts)):
            per_input[rows, layer, :count] = 0.0 if grad is None else grad.detach().double()
    return Sweep(per_input, ("layer", unit_dim), names, baseline, meta={"kind": "gradient"}, counts=counts)


# --- pruning ----------------------------------------------------------------------------------------------------


def pruning_order(scores: torch.Tensor, *, descending: bool = False, seed: int | None = None
                  ) -> list[tuple[int, int]]:
    """Units ``(layer, unit)`` in the order to remove them: by ``scores`` ``[layer, unit]`` (ascending = least
    important first, as Michel et al. prune), or a random permutation drawn with ``seed`` (``scores`` then gives only
    the shape). Ties keep the flat order (stable sort).

    NaN marks a unit that does not exist (the padding of a sweep over hooks of different widths) and is left out,
    of a random order too: the permutation is of the other units, in flat order. ValueError if every score is NaN.
    """
    check_tensor("scores", scores, "[layer, unit]", dtype="float")
    if scores.ndim != 2 or scores.numel() == 0:
        raise ValueError(f"scores must be a non-empty [layer, unit] tensor, got shape {tuple(scores.shape)}")
    n_units = scores.shape[1]
    flat_scores = scores.flatten()
    present = torch.nonzero(~torch.isnan(flat_scores)).flatten()  # flat indices of the units that exist
    if seed is not None:
        check_int("seed", seed, 0)
    if present.numel() == 0:
        raise ValueError("scores are all NaN; an order needs comparable numbers (NaN marks a missing unit)")
    if seed is not None:
        flat = present[torch.randperm(present.numel(), generator=torch.Generator().manual_seed(seed))]
    else:
        flat = present[torch.sort(flat_scores[present], descending=descending, stable=True).indices]
    return [(int(i) // n_units, int(i) % n_units) for i in flat]


def pruning_curve(model: nn.Module, forward: Forward, inputs: Any, metric: Metric, hooks: str | Sequence[str],
                  order: Sequence[tuple[int, int]], steps: Sequence[int] | None = None, *,
                  chunk: int | None = None) -> torch.Tensor:
    """Mean metric after zero-ablating the first ``k`` units of ``order``, for each ``k`` in ``steps``.

    Args:
        model, forward, inputs, metric: as in :func:`ablation_sweep`.
        hooks: the unit hooks; ``order``'s layer index counts them in model order (widths may differ).
        order: ``[(layer, unit), ...]`` from :func:`pruning_order`.
        steps: the counts ``k`` to measure (default ``0 .. len(order)``).
        chunk: run ``chunk`` inputs at a time (see the module docstring).

    Returns:
        float64 ``[len(steps)]``.
    """
    parts = slices(inputs, chunk)
    points, counts, _ = _layout(model, forward, inputs, hooks, parts)
    names = [hp.name for hp in points]
    seen = set()
    for layer, unit in order:
        if not (0 <= layer < len(names) and 0 <= unit < counts[layer]) or (layer, unit) in seen:
            raise ValueError(f"order: ({layer}, {unit}) is out of range or repeated; there are {len(names)} "
                             f"layers of {counts} units")
        seen.add((layer, unit))
    steps = list(range(len(order) + 1)) if steps is None else [check_int("steps", k, 0, len(order)) for k in steps]
    out = torch.empty(len(steps), dtype=torch.float64)
    for i, k in enumerate(steps):
        units: dict[str, list[int]] = {}
        for layer, unit in order[:k]:
            units.setdefault(names[layer], []).append(unit)
        edits = zero_ablation(model, units) if units else None
        out[i] = _measure(model, forward, inputs, metric, edits, parts).mean()
    return out
