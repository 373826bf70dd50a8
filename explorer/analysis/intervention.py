"""Interventions: ablate or patch heads and channels and measure what the output does.

Attention maps and gradients are correlational; this module changes one unit (an attention head or a conv channel)
and measures the effect, built on :func:`explorer.intervene` in the TransformerLens manner: a few small edit
builders, one generic sweep, and metrics passed in as functions.

Units. A *unit hook* is a hook point with a ``"head"`` dimension (``*.hook_z`` ``[batch, head, query, head_dim]``,
before the output projection, where heads are separable) or a ``"channel"`` dimension (a conv's ``hook_out``
``[batch, channel, *spatial]``). A selection of units is ``{hook_name: [index, ...]}``; a sweep walks the hooks
matched by a glob in model order (the ``layer`` axis) and every index of each (the ``head`` / ``channel`` axis).

Edits (each returns ``{hook_name: fn}`` for :func:`explorer.intervene`):

* :func:`zero_ablation` -- the units' activations set to 0;
* :func:`mean_ablation` -- set to their mean over a reference batch (:func:`unit_means`);
* :func:`resample_ablation` -- set to the activation of another input of a reference batch;
* :func:`patching` -- set to the activation recorded on another input (clean -> corrupted activation patching),
  optionally at one position only;
* :func:`scaling` -- multiplied by a factor per unit (the multiplicative mask of Michel et al.).

Sweeps (:class:`Sweep`, a tensor with named dims): :func:`ablation_sweep` ``[layer, unit]``,
:func:`patching_sweep` ``[layer, unit]`` or ``[layer, position, unit]``, :func:`gradient_importance` ``[layer,
unit]`` (the gradient of the metric w.r.t. a mask at 1: a first-order predictor of the ablation effect,
``effect_h ~ -grad_h``; Michel, Levy & Neubig 2019, https://arxiv.org/abs/1905.10650).

Metrics take the model's output and return one number per input: :func:`logit_difference`,
:func:`class_probability`, :func:`kl_divergence`, :func:`pair_similarity`, :func:`accuracy`.

Pruning (Michel et al.'s test): :func:`pruning_order` ranks units by a score, :func:`pruning_curve` removes them
cumulatively and measures the metric after each removal.

:func:`query_key_view` is bertviz's "neuron view" on any explorer attention layer: the query and key vectors of
one head and query, their elementwise product, the dot products and the softmax, equal to ``hook_pattern``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from explorer._checks import check_callable, check_choice, check_int, check_tensor, check_type
from explorer._modes import evaluating
from explorer.hooks import Edit, HookPoint, Trace, hook_points, intervene, record

__all__ = [
    "UNIT_DIMS", "Sweep", "QueryKeyView", "unit_hooks", "unit_axis", "unit_counts", "zero_ablation",
    "mean_ablation", "resample_ablation", "patching", "scaling", "unit_means", "ablation_sweep", "patching_sweep",
    "gradient_importance", "logit_difference", "class_probability", "kl_divergence", "pair_similarity",
    "query_key_view", "accuracy", "pruning_order", "pruning_curve",
]

UNIT_DIMS = ("head", "channel")  # the dimension a unit indexes, in the hook point's dims
ABLATIONS = ("zero", "mean", "resample")
Forward = Callable[[nn.Module, Any], Any]  # forward(model, inputs) -> output
Metric = Callable[[Any], torch.Tensor]  # metric(output) -> [batch]
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
        from explorer.hooks import _nearest

        raise ValueError(f"hooks={hooks!r} matches no hook point of the model; nearest: "
                         f"{_nearest(patterns[0], points)}")
    for hp in found:
        unit_axis(hp)
    return found


def unit_counts(model: nn.Module, forward: Forward, inputs: Any, hooks: str | Sequence[str]) -> dict[str, int]:
    """Number of units (heads or channels) at each unit hook, read from one forward pass on ``inputs``."""
    points = unit_hooks(model, hooks)
    trace = _run_recorded(model, forward, inputs, [hp.name for hp in points])
    return {hp.name: int(trace[hp.name].shape[unit_axis(hp)]) for hp in points}


def _check_units(model: nn.Module, units: object) -> dict[str, list[int]]:
    """``{hook_name: [index, ...]}`` with every name an exact unit hook of ``model`` and indices ints >= 0."""
    check_type("units", units, Mapping, "a mapping {hook_name: [unit index, ...]}")
    points = hook_points(model)
    checked: dict[str, list[int]] = {}
    for name, indices in units.items():  # type: ignore[union-attr]
        if name not in points:
            from explorer.hooks import _nearest

            raise ValueError(f"units: {name!r} is not a hook point of the model; nearest: {_nearest(name, points)}")
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
    parts = inputs.values() if isinstance(inputs, Mapping) else inputs if isinstance(inputs, (tuple, list)) else [inputs]
    if any(isinstance(t, torch.Tensor) and t.ndim and t.shape[0] == 0 for t in parts):
        raise ValueError(f"{name} is an empty batch (a tensor of batch size 0): nothing to average or draw from")


def _run_recorded(model: nn.Module, forward: Forward, inputs: Any, names: list[str]) -> Trace:
    with evaluating(model), torch.no_grad(), record(model, names) as trace:
        forward(model, inputs)
    return trace


def unit_means(model: nn.Module, forward: Forward, reference: Any, hooks: str | Sequence[str],
               over: Sequence[str] = ("batch",)) -> dict[str, torch.Tensor]:
    """Mean activation of each unit hook over a reference batch.

    Args:
        model: the model.
        forward: ``forward(model, inputs)`` runs the model.
        reference: the reference inputs (a batch of at least one input).
        hooks: unit hooks (name, glob or list).
        over: dims to average over, ``("batch",)`` (per position; the inputs to ablate must then have the
            reference's positions) or e.g. ``("batch", "query")`` (one mean vector per unit, any length).

    Returns:
        ``{hook_name: mean}`` with the averaged dims kept as size 1.
    """
    points = unit_hooks(model, hooks)
    _check_batch("reference", reference)
    trace = _run_recorded(model, forward, reference, [hp.name for hp in points])
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
            generator = torch.Generator().manual_seed(seed)
            pick = torch.randint(source.shape[0], (x.shape[0],), generator=generator)
            return _replace(hook, x, idx, source[pick])
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


# --- metrics ----------------------------------------------------------------------------------------------------


def _logits(output: object) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"the metric needs logits [batch, classes], got {got}")
    return output


def _per_input(name: str, value: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.shape != (batch,):
            raise ValueError(f"{name} must be an int or a LongTensor [batch={batch}], got shape {tuple(value.shape)}")
        return value.to(device=device, dtype=torch.long)
    return torch.full((batch,), check_int(name, value, 0), dtype=torch.long, device=device)


def logit_difference(correct: int | torch.Tensor, wrong: int | torch.Tensor) -> Metric:
    """Metric: ``logits[correct] - logits[wrong]`` per input (ints, or LongTensors ``[batch]``)."""
    def metric(output: object) -> torch.Tensor:
        logits = _logits(output)
        a = _per_input("correct", correct, logits.shape[0], logits.device)
        b = _per_input("wrong", wrong, logits.shape[0], logits.device)
        rows = torch.arange(logits.shape[0], device=logits.device)
        return logits[rows, a] - logits[rows, b]
    return metric


def class_probability(target: int | torch.Tensor) -> Metric:
    """Metric: the softmax probability of class ``target`` (an int, or a LongTensor ``[batch]``) per input."""
    def metric(output: object) -> torch.Tensor:
        logits = _logits(output)
        t = _per_input("target", target, logits.shape[0], logits.device)
        return logits.softmax(-1)[torch.arange(logits.shape[0], device=logits.device), t]
    return metric


def kl_divergence(reference_logits: torch.Tensor) -> Metric:
    """Metric: ``KL(p_reference || p_output)`` in nats per input (0 for the unchanged model)."""
    check_tensor("reference_logits", reference_logits, "[batch, classes]", dtype="float")
    reference = reference_logits.detach().log_softmax(-1)

    def metric(output: object) -> torch.Tensor:
        logits = _logits(output)
        if logits.shape != reference.shape:
            raise ValueError(f"logits {tuple(logits.shape)} do not match reference_logits {tuple(reference.shape)}")
        return (reference.exp() * (reference - logits.log_softmax(-1))).sum(-1)
    return metric


def pair_similarity() -> Metric:
    """Metric: cosine similarity of the two embeddings of each pair, output ``[batch, 2, embed]``."""
    def metric(output: object) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.ndim != 3 or output.shape[1] != 2:
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(f"pair_similarity needs embeddings [batch, 2, embed], got {got}")
        return F.cosine_similarity(output[:, 0], output[:, 1], dim=-1)
    return metric


def accuracy(labels: torch.Tensor) -> Metric:
    """Metric: 1.0 where ``argmax(logits) == labels`` else 0.0, per input."""
    check_tensor("labels", labels, "[batch] class indices", dtype="int")

    def metric(output: object) -> torch.Tensor:
        logits = _logits(output)
        if labels.shape != (logits.shape[0],):
            raise ValueError(f"labels must be [batch={logits.shape[0]}], got shape {tuple(labels.shape)}")
        return (logits.argmax(-1) == labels.to(logits.device)).to(logits.dtype)
    return metric


def _measure(model: nn.Module, forward: Forward, inputs: Any, metric: Metric,
             edits: Mapping[str, Edit] | None = None) -> torch.Tensor:
    """Metric per input ``[batch]`` of one (edited) forward pass, without gradients, in eval mode."""
    with evaluating(model), torch.no_grad():
        if edits:
            with intervene(model, edits):
                output = forward(model, inputs)
        else:
            output = forward(model, inputs)
        value = metric(output)
    if not isinstance(value, torch.Tensor) or value.ndim > 1:
        raise ValueError(f"metric must return a Tensor [batch] or a scalar, got "
                         f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}")
    return value.detach().double().reshape(-1)


# --- sweeps -----------------------------------------------------------------------------------------------------


@dataclass
class Sweep:
    """The result of a sweep: ``per_input`` ``[input, *dims]`` and its mean ``values`` ``[*dims]``.

    ``dims`` names the axes of ``values`` (``("layer", "head")``, ``("layer", "position", "head")``,
    ``("layer", "channel")``); ``layers`` holds the hook names along ``layer``; ``baseline`` is the metric of the
    unchanged model per input and ``reference`` (patching) the metric on the source inputs.
    """

    per_input: torch.Tensor                       # [input, *dims], float64
    dims: tuple[str, ...]                         # names of values' axes
    layers: list[str]                             # hook name of each index along "layer"
    baseline: torch.Tensor                        # [input], metric of the unchanged model
    reference: torch.Tensor | None = None         # [input], metric on the source inputs (patching)
    meta: dict[str, Any] = field(default_factory=dict)

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


def _layers_and_units(model: nn.Module, forward: Forward, inputs: Any, hooks: str | Sequence[str]
                      ) -> tuple[list[HookPoint], int, str]:
    points = unit_hooks(model, hooks)
    counts = unit_counts(model, forward, inputs, [hp.name for hp in points])
    dims = {hp.dims[unit_axis(hp)] for hp in points}
    sizes = set(counts.values())
    if len(dims) > 1 or len(sizes) > 1:
        raise ValueError(f"hooks={hooks!r} mixes unit kinds or sizes ({counts}); sweep one kind and size at a time")
    return points, sizes.pop(), dims.pop()


def ablation_sweep(model: nn.Module, forward: Forward, inputs: Any, metric: Metric, hooks: str | Sequence[str],
                   how: str = "zero", reference: Any = None, seed: int = 0) -> Sweep:
    """Ablate every unit alone and measure the metric: ``[layer, head]`` or ``[layer, channel]``.

    Args:
        model: the model (run in eval mode, without gradients; flags restored).
        forward: ``forward(model, inputs)`` -> output for ``metric``.
        inputs: the batch to measure on.
        metric: ``metric(output)`` -> ``[batch]``.
        hooks: unit hooks, e.g. ``"*.attn.hook_z"`` (one layer each).
        how: ``"zero"``, ``"mean"`` (mean over ``reference``'s batch, per position) or ``"resample"`` (a random
            input of ``reference`` per input).
        reference: the reference batch for ``"mean"`` and ``"resample"`` (default ``inputs``).
        seed: the draw of ``"resample"``.
    """
    check_callable("forward", forward)
    check_callable("metric", metric)
    check_choice("how", how, ABLATIONS)
    points, n_units, unit_dim = _layers_and_units(model, forward, inputs, hooks)
    names = [hp.name for hp in points]
    baseline = _measure(model, forward, inputs, metric)
    source: Mapping[str, torch.Tensor] = {}
    if reference is not None:
        _check_batch("reference", reference)
    if how == "mean":
        source = unit_means(model, forward, inputs if reference is None else reference, names)
    elif how == "resample":
        source = _run_recorded(model, forward, inputs if reference is None else reference, names)
    out = torch.empty(baseline.shape[0], len(points), n_units, dtype=torch.float64)
    for layer, name in enumerate(names):
        for unit in range(n_units):
            units = {name: [unit]}
            edits = (zero_ablation(model, units) if how == "zero" else mean_ablation(model, units, source)
                     if how == "mean" else resample_ablation(model, units, source, seed))
            out[:, layer, unit] = _measure(model, forward, inputs, metric, edits)
    return Sweep(out, ("layer", unit_dim), names, baseline, meta={"how": how})


def patching_sweep(model: nn.Module, forward: Forward, clean: Any, corrupted: Any, metric: Metric,
                   hooks: str | Sequence[str], per_position: bool = False) -> Sweep:
    """Clean -> corrupted activation patching: run ``corrupted`` with one unit's activation taken from ``clean``.

    Returns a :class:`Sweep` ``[layer, head]`` (or ``[layer, position, head]`` with ``per_position``) of the
    metric on the patched runs; ``baseline`` is the corrupted run, ``reference`` the clean run, and
    :meth:`Sweep.normalised` the share of the clean-vs-corrupted gap each patch restores.
    """
    check_callable("forward", forward)
    check_callable("metric", metric)
    points, n_units, unit_dim = _layers_and_units(model, forward, corrupted, hooks)
    names = [hp.name for hp in points]
    cache = _run_recorded(model, forward, clean, names)
    corrupted_trace = _run_recorded(model, forward, corrupted, names)
    for name in names:
        if cache[name].shape != corrupted_trace[name].shape:
            raise ValueError(f"clean and corrupted inputs give different shapes at {name!r}: "
                             f"{tuple(cache[name].shape)} vs {tuple(corrupted_trace[name].shape)}; patching needs "
                             "inputs of the same batch size and length")
    baseline = _measure(model, forward, corrupted, metric)
    reference = _measure(model, forward, clean, metric)
    axis = unit_axis(points[0])
    positions = [None] if not per_position else list(range(cache[names[0]].shape[axis + 1]))
    out = torch.empty(baseline.shape[0], len(points), len(positions), n_units, dtype=torch.float64)
    for layer, name in enumerate(names):
        for p, position in enumerate(positions):
            for unit in range(n_units):
                edits = patching(model, {name: [unit]}, cache, position)
                out[:, layer, p, unit] = _measure(model, forward, corrupted, metric, edits)
    if per_position:
        return Sweep(out, ("layer", "position", unit_dim), names, baseline, reference)
    return Sweep(out[:, :, 0], ("layer", unit_dim), names, baseline, reference)


def gradient_importance(model: nn.Module, forward: Forward, inputs: Any, metric: Metric,
                        hooks: str | Sequence[str]) -> Sweep:
    """Gradient of the metric w.r.t. a multiplicative mask ``xi`` per unit and input, at ``xi = 1``.

    ``per_input[i, layer, unit] = d metric_i / d xi_{i, layer, unit}``; the first-order (Taylor) prediction of
    zero-ablating that unit is ``-per_input``; Michel et al.'s importance is ``per_input.abs().mean(0)``.
    Parameters' ``.grad`` are left untouched (``torch.autograd.grad`` on the masks only).
    """
    check_callable("forward", forward)
    check_callable("metric", metric)
    points, n_units, unit_dim = _layers_and_units(model, forward, inputs, hooks)
    names = [hp.name for hp in points]
    with evaluating(model), torch.no_grad():
        baseline = metric(forward(model, inputs)).detach().double().reshape(-1)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    masks = {name: torch.ones(baseline.shape[0], n_units, dtype=dtype, requires_grad=True) for name in names}
    with evaluating(model), torch.enable_grad(), intervene(model, scaling(model, masks)):
        value = metric(forward(model, inputs))
        grads = torch.autograd.grad(value.sum(), [masks[name] for name in names], allow_unused=True)
    per_input = torch.stack([torch.zeros(baseline.shape[0], n_units) if g is None else g for g in grads], dim=1)
    return Sweep(per_input.detach().double(), ("layer", unit_dim), names, baseline, meta={"kind": "gradient"})


# --- query/key view ---------------------------------------------------------------------------------------------


@dataclass
class QueryKeyView:
    """One head's attention from one query, taken apart (bertviz's "neuron view").

    ``q`` ``[head_dim]``, ``k`` ``[key, head_dim]``, ``product = q * k`` ``[key, head_dim]``, ``dots`` ``[key]``
    (``product.sum(-1) * scale``), ``bias`` ``[key]`` (what the layer added: score bias, ``-inf`` where masked;
    zeros for plain attention), ``scores = dots + bias`` and ``softmax`` ``[key]`` (equal to ``hook_pattern``).
    """

    layer: str
    head: int
    query: int
    scale: float
    q: torch.Tensor
    k: torch.Tensor
    product: torch.Tensor
    dots: torch.Tensor
    bias: torch.Tensor
    scores: torch.Tensor
    softmax: torch.Tensor


def query_key_view(model: nn.Module, forward: Forward, inputs: Any, layer: str, head: int, query: int,
                   batch: int = 0) -> QueryKeyView:
    """Record ``layer``'s ``hook_q``, ``hook_k`` and ``hook_scores`` and take one head and query apart.

    Args:
        model: the model; ``layer`` is the module path of one of its attention layers (``"blocks.2.attn"``).
        forward: ``forward(model, inputs)`` runs it.
        inputs: the inputs.
        layer, head, query, batch: which layer, head, query position and input.
    """
    check_type("layer", layer, str, "a module path such as 'blocks.0.attn'")
    try:
        attn = model.get_submodule(layer)
    except AttributeError:
        from explorer.hooks import _nearest

        layers = sorted({n.rsplit(".", 1)[0] for n in hook_points(model) if n.endswith(".hook_q")})
        raise ValueError(f"layer {layer!r} is not a module of the model; attention layers: "
                         f"{_nearest(layer, layers) or layers[:6]}") from None
    if not all(hasattr(attn, a) for a in ("hook_q", "hook_k", "hook_scores", "scale")):
        raise ValueError(f"layer {layer!r} is a {type(attn).__name__}, not an attention layer with hook_q, hook_k "
                         "and hook_scores")
    names = [f"{layer}.hook_q", f"{layer}.hook_k", f"{layer}.hook_scores"]
    trace = _run_recorded(model, forward, inputs, names)
    q_all, k_all, scores_all = (trace[n] for n in names)  # (batch, head, query|key, head_dim|key)
    check_int("batch", batch, 0, q_all.shape[0] - 1)
    check_int("head", head, 0, q_all.shape[1] - 1)
    check_int("query", query, 0, q_all.shape[2] - 1)
    q = q_all[batch, head, query]  # (head_dim,)
    k = k_all[batch, head]  # (key, head_dim)
    product = q[None, :] * k  # (key, head_dim)
    dots = product.sum(-1) * attn.scale  # (key,)
    scores = scores_all[batch, head, query]  # (key,)
    bias = torch.where(torch.isinf(scores), scores, scores - dots)  # (key,), -inf where masked
    scores = dots + bias
    finite = ~torch.isinf(scores)
    softmax = torch.zeros_like(scores)
    if finite.any():
        softmax[finite] = torch.softmax(scores[finite], dim=-1)
    return QueryKeyView(layer, head, query, float(attn.scale), q, k, product, dots, bias, scores, softmax)


# --- pruning ----------------------------------------------------------------------------------------------------


def pruning_order(scores: torch.Tensor, *, descending: bool = False, seed: int | None = None
                  ) -> list[tuple[int, int]]:
    """Units ``(layer, unit)`` in the order to remove them: by ``scores`` ``[layer, unit]`` (ascending = least
    important first, as Michel et al. prune), or a random permutation drawn with ``seed`` (``scores`` then gives only
    the shape). Ties keep the flat order (stable sort)."""
    check_tensor("scores", scores, "[layer, unit]", dtype="float")
    if scores.ndim != 2 or scores.numel() == 0:
        raise ValueError(f"scores must be a non-empty [layer, unit] tensor, got shape {tuple(scores.shape)}")
    n_units = scores.shape[1]
    if seed is not None:
        flat = torch.randperm(scores.numel(), generator=torch.Generator().manual_seed(check_int("seed", seed, 0)))
    else:
        if torch.isnan(scores).any():
            raise ValueError("scores contain NaN; an order needs comparable numbers")
        flat = torch.sort(scores.flatten(), descending=descending, stable=True).indices
    return [(int(i) // n_units, int(i) % n_units) for i in flat]


def pruning_curve(model: nn.Module, forward: Forward, inputs: Any, metric: Metric, hooks: str | Sequence[str],
                  order: Sequence[tuple[int, int]], steps: Sequence[int] | None = None) -> torch.Tensor:
    """Mean metric after zero-ablating the first ``k`` units of ``order``, for each ``k`` in ``steps``.

    Args:
        model, forward, inputs, metric: as in :func:`ablation_sweep`.
        hooks: the unit hooks; ``order``'s layer index counts them in model order.
        order: ``[(layer, unit), ...]`` from :func:`pruning_order`.
        steps: the counts ``k`` to measure (default ``0 .. len(order)``).

    Returns:
        float64 ``[len(steps)]``.
    """
    points, n_units, _ = _layers_and_units(model, forward, inputs, hooks)
    names = [hp.name for hp in points]
    seen = set()
    for layer, unit in order:
        if not (0 <= layer < len(names) and 0 <= unit < n_units) or (layer, unit) in seen:
            raise ValueError(f"order: ({layer}, {unit}) is out of range or repeated; there are {len(names)} "
                             f"layers of {n_units} units")
        seen.add((layer, unit))
    steps = list(range(len(order) + 1)) if steps is None else [check_int("steps", k, 0, len(order)) for k in steps]
    out = torch.empty(len(steps), dtype=torch.float64)
    for i, k in enumerate(steps):
        units: dict[str, list[int]] = {}
        for layer, unit in order[:k]:
            units.setdefault(names[layer], []).append(unit)
        out[i] = _measure(model, forward, inputs, metric, zero_ablation(model, units) if units else None).mean()
    return out
