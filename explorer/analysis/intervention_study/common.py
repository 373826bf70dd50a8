"""Shared pieces of the intervention study: three numbers per unit, their rank agreement, pruning curves, JSON.

Each model's runner (one module per model family) measures, on a fixed set of inputs:

* ``attention``  ``[input, layer, head]`` -- the attention weight of each head on the token/patch in question;
* ``gradient``   ``[input, layer, unit]`` -- ``d metric / d xi`` of a multiplicative mask at 1
  (:func:`explorer.analysis.intervention.gradient_importance`); Michel et al.'s importance is its absolute value,
  and ``-gradient`` is the first-order prediction of the ablation effect;
* ``effect``     ``[input, layer, unit]`` -- the measured change of the metric when the unit alone is ablated
  (:func:`explorer.analysis.intervention.ablation_sweep`, ``per_input - baseline``);

and :func:`three_numbers` turns them into per-input Spearman correlations over units with 95 % t-intervals over
inputs; :func:`pruning_study` removes units cumulatively in the order of each score and at random.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import explorer
from explorer._checks import check_int, check_tensor
from explorer._provenance import git_commit
from explorer.analysis.agreement import interval, spearman
from explorer.analysis.intervention import Forward, Metric, pruning_curve, pruning_order

__all__ = ["RANDOM_ORDERS", "LEVEL_NOTE", "default_study_dir", "metadata", "rank_agreement", "three_numbers",
           "pruning_study", "rounded", "write_json", "read_json"]

RANDOM_ORDERS = 3  # random pruning orders per model (seeds 0, 1, 2)
LEVEL_NOTE = "mean [95 % Student-t interval over inputs]"


def default_study_dir() -> Path:
    """``assets/intervention`` of the repository."""
    return Path(explorer.__file__).resolve().parents[1] / "assets" / "intervention"


def metadata(command: str) -> dict[str, Any]:
    """Provenance of a result file: command, commit, date, versions, threads."""
    return {"command": command, "git_commit": git_commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch_version": torch.__version__, "numpy_version": np.__version__,
            "python_version": platform.python_version(), "platform": platform.platform(),
            "threads": torch.get_num_threads()}


def rounded(value: Any, digits: int = 9) -> Any:
    """Tensors, arrays and floats as JSON-ready nested lists of floats with ``digits`` significant digits."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    if isinstance(value, np.ndarray):
        return [rounded(v, digits) for v in value] if value.ndim else rounded(float(value), digits)
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.{digits}g}")
    if isinstance(value, Mapping):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def rank_agreement(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    """Spearman's rho between ``a`` and ``b`` over units, per input, summarised over inputs.

    Args:
        a, b: ``[input, *units]`` (the unit dims are flattened).

    Returns:
        ``{"mean", "std", "ci95", "n", "undefined"}``: the t-interval of the per-input rhos (:func:`interval`);
        ``undefined`` counts inputs where either vector is constant (rho undefined; left out), and ``per_input``
        holds every rho (None where undefined).
    """
    check_tensor("a", a, "[input, *units]", dtype="float")
    check_tensor("b", b, "[input, *units]", dtype="float")
    if a.shape != b.shape or a.ndim < 2 or a.shape[0] < 2:
        raise ValueError(f"a and b must have the same shape [input >= 2, *units], got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    x, y = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    rhos = [spearman(x[i].double().numpy(), y[i].double().numpy()) for i in range(x.shape[0])]
    defined = [r for r in rhos if not math.isnan(r)]
    if len(defined) < 2:
        raise ValueError("fewer than two inputs with a defined rank correlation (constant scores)")
    return {**interval(defined), "undefined": len(rhos) - len(defined), "per_input": rounded(rhos, 6)}


def three_numbers(effect: torch.Tensor, gradient: torch.Tensor, attention: torch.Tensor | None) -> dict[str, Any]:
    """Rank agreement of the three numbers per unit (magnitudes) and of the gradient's prediction with the effect.

    Args:
        effect: measured ablation effect ``[input, layer, unit]`` (metric after - before).
        gradient: ``d metric / d xi`` ``[input, layer, unit]``.
        attention: attention weight on the unit in question ``[input, layer, head]``, or None (conv channels).

    Returns:
        ``{"attention~effect", "gradient~effect", "attention~gradient", "prediction~effect"}`` (the first three on
        magnitudes: ``attention`` vs ``|gradient|`` vs ``|effect|``; the last signed: ``-gradient`` vs ``effect``),
        each a :func:`rank_agreement` summary; the attention rows are absent when ``attention`` is None.
    """
    out = {"gradient~effect": rank_agreement(gradient.abs(), effect.abs()),
           "prediction~effect": rank_agreement(-gradient, effect)}
    if attention is not None:
        out["attention~effect"] = rank_agreement(attention, effect.abs())
        out["attention~gradient"] = rank_agreement(attention, gradient.abs())
    return out


def pruning_study(model: nn.Module, forward: Forward, inputs: Any, metric: Metric, hooks: str | Sequence[str],
                  scores: Mapping[str, torch.Tensor], steps: Sequence[int] | None = None,
                  random_orders: int = RANDOM_ORDERS) -> dict[str, Any]:
    """Task metric vs number of units removed, least important first by each score, and in random orders.

    Args:
        model, forward, inputs, metric, hooks: as in :func:`explorer.analysis.intervention.pruning_curve`.
        scores: ``{name: [layer, unit]}``, larger = more important (e.g. mean attention, ``|gradient|`` averaged
            over inputs, ``|effect|`` averaged over inputs).
        steps: unit counts to measure (default every count).
        random_orders: random orders (seeds ``0 .. random_orders - 1``), at least 3 for the report.

    Returns:
        ``{"steps": [...], "curves": {name: [...], "random_<seed>": [...]}, "orders": {name: [[layer, unit]...]}}``.
    """
    check_int("random_orders", random_orders, 0)
    shape = next(iter(scores.values())).shape
    orders = {name: pruning_order(score.double()) for name, score in scores.items()}
    for seed in range(random_orders):
        orders[f"random_{seed}"] = pruning_order(torch.zeros(shape, dtype=torch.float64), seed=seed)
    n = shape[0] * shape[1]
    steps = list(range(n + 1)) if steps is None else list(steps)
    curves = {name: rounded(pruning_curve(model, forward, inputs, metric, hooks, order, steps))
              for name, order in orders.items()}
    return {"steps": steps, "curves": curves, "orders": {k: [list(u) for u in v] for k, v in orders.items()}}


def write_json(result: Mapping[str, Any], path: Path) -> Path:
    """Write ``result`` as indented JSON (keys in insertion order), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    return path


def read_json(path: Path, command: str) -> dict[str, Any]:
    """Read a shipped result, or raise FileNotFoundError/ValueError naming the file and the command that makes it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `{command}`")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} cannot be read ({error}); rerun `{command}`") from error
