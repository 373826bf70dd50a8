"""Shared pieces of the intervention study: three numbers per unit, their rank agreement, the single-unit check,
pruning curves, binomial intervals, the report's text and the JSON files.

Each model's runner (one module per model family) measures, on a fixed set of inputs:

* ``attention``  ``[input, layer, head]`` -- the attention weight of each head on the token/patch in question;
* ``gradient``   ``[input, layer, unit]`` -- ``d metric / d xi`` of a multiplicative mask at 1
  (:func:`explorer.analysis.intervention.gradient_importance`); Michel et al.'s importance is its absolute value,
  and ``-gradient`` is the first-order prediction of the ablation effect;
* ``effect``     ``[input, layer, unit]`` -- the measured change of the metric when the unit alone is ablated
  (:func:`explorer.analysis.intervention.ablation_sweep`, ``per_input - baseline``);

rounds them to what the JSON keeps (:func:`stored`) before any summary, so that every summary can be re-derived from
the file; :func:`three_numbers` turns them into per-input Spearman correlations over units with 95 % t-intervals over
inputs; :func:`single_unit_check` ablates one chosen unit per input (Serrano & Smith in kind) and counts decision
flips with Wilson intervals (:func:`wilson`, :func:`proportion`); :func:`pruning_study` removes units cumulatively in
the order of each score and at random (Michel et al. in kind). The report helpers render those summaries and claims.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from torch import nn

import explorer
from explorer._checks import check_int, check_real, check_tensor
from explorer._provenance import git_commit
from explorer.analysis.agreement import interval, paired_difference, spearman
from explorer.analysis.intervention import Forward, pruning_curve, pruning_order, run_with_edits, scaling
from explorer.analysis.intervention_metrics import Metric
from explorer.models.shipped import read_result

__all__ = [
    "LEVEL", "LEVEL_NOTE", "DIGITS", "RANDOM_ORDERS", "RANDOM_DRAWS", "FRACTIONS", "SHOWN", "RARELY", "LITTLE_LOSS",
    "PRUNED", "WEAK_BELOW", "WEAK",
    # files
    "default_study_dir", "metadata", "rounded", "stored", "write_json", "read_json", "Laps",
    # statistics
    "wilson", "proportion", "binomial_summary", "rank_agreement", "three_numbers",
    # pruning and the single-unit check
    "pruning_study", "pruning_intervals", "counts_at", "selections", "one_unit_per_input", "single_unit_check",
    # report text
    "mean_text", "rho_text", "pct", "percent", "curve_at", "random_at", "shown_counts", "pruning_table",
    "agreement_rows", "pruning_claims", "check_claims", "paired_line", "claim_lines", "check_table", "selector_labels",
]

LEVEL = 0.95
LEVEL_NOTE = "mean [95 % Student-t interval over inputs]"
DIGITS = 6                      # significant digits of per-input values in the JSON (summaries use the rounded ones)
RANDOM_ORDERS = 3               # random pruning orders per model (seeds 0, 1, 2)
RANDOM_DRAWS = 3                # random units per input in the single-unit check (seeds 0, 1, 2)
FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 1.0)  # pruning curves: shares of the units removed (CNN, MiniLM)
SHOWN = (0.0, 0.1, 0.2, 0.4, 0.6, 1.0)           # ... shown in the report
RARELY = 0.10                   # "rarely changes the decision": the 95 % interval of the flip rate lies below 10 %
LITTLE_LOSS = 0.05              # "little loss": at most 5 points of the task metric below the intact model
PRUNED = (0.2, 0.4)             # Michel et al.: 20-40 % of the heads pruned
WEAK_BELOW = 0.3                # a rank agreement with |rho| below this is reported as weak
WEAK = " (weak: |rho| < 0.3)"
CHANCE = 0.5                    # binomial_summary's chance_in_ci: the chance level of a two-class decision


# --- files ------------------------------------------------------------------------------------------------------


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
    """Tensors, arrays and floats as JSON-ready nested lists of floats with ``digits`` significant digits (numpy
    scalars too; integers stay integers)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    if isinstance(value, np.ndarray):
        return [rounded(v, digits) for v in value] if value.ndim else rounded(value.item(), digits)
    if isinstance(value, np.generic):
        return rounded(value.item(), digits)
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.{digits}g}")
    if isinstance(value, Mapping):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def stored(values: Any, digits: int = DIGITS) -> torch.Tensor:
    """``values`` rounded to ``digits`` significant digits, as the JSON keeps them: float64 (NaN stays NaN)."""
    return torch.from_numpy(np.array(rounded(values, digits), dtype=np.float64))


def write_json(result: Mapping[str, Any], path: Path) -> Path:
    """Write ``result`` as indented JSON (keys in insertion order), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    return path


class Laps:
    """Seconds per stage of a run: ``laps("load")`` closes the stage that began at the previous call (or when the
    object was made), stores its seconds (2 decimals) in ``laps.seconds`` and, given ``log``, reports it."""

    def __init__(self, log: Callable[[str], None] | None = None, prefix: str = "") -> None:
        self.seconds: dict[str, float] = {}
        self._log, self._prefix = log, prefix
        self._tick = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._tick, 2)
        self._tick = now
        if self._log is not None:
            self._log(f"{self._prefix}: {name} {self.seconds[name]} s")


def read_json(path: Path, command: str) -> dict[str, Any]:
    """Read a shipped result, or raise FileNotFoundError/ValueError naming the file and the command that makes it
    (:func:`explorer.models.shipped.read_result`)."""
    return read_result(path, command)


# --- statistics -------------------------------------------------------------------------------------------------


def wilson(k: int, n: int, level: float = LEVEL) -> list[float]:
    """Wilson score interval of a binomial proportion ``k / n`` (Wilson 1927): the ``p`` with
    ``|k / n - p| <= z sqrt(p (1 - p) / n)``, in Newcombe's (1998) closed form as ``scipy.stats.binomtest(k,
    n).proportion_ci(method="wilson")`` computes it; ``z`` from :class:`statistics.NormalDist`.

    Args:
        k: successes, ``0 <= k <= n``.
        n: trials, ``>= 1``.
        level: coverage in (0, 1).

    Returns:
        ``[low, high]``; ``low`` is 0 at ``k = 0`` and ``high`` 1 at ``k = n``.
    """
    n = check_int("n", n, 1)
    k = check_int("k", k, 0, n)
    level = check_real("level", level, 0, 1, low_open=True, high_open=True)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    denominator = 2 * (n + z * z)
    centre = (2 * n * p + z * z) / denominator
    delta = z / denominator * math.sqrt(4 * n * p * (1 - p) + z * z)
    return [0.0 if k == 0 else centre - delta, 1.0 if k == n else centre + delta]


def proportion(flags: torch.Tensor, level: float = LEVEL) -> dict[str, Any]:
    """Share of True in ``flags`` ``[input]`` (bool) with its :func:`wilson` interval.

    Returns:
        ``{"k", "n", "rate", "ci95"}``.
    """
    check_tensor("flags", flags, "[input] bool", dtype=torch.bool, ndim=1, nonempty=True)
    k, n = int(flags.sum()), int(flags.numel())
    return {"k": k, "n": n, "rate": k / n, "ci95": wilson(k, n, level)}


def binomial_summary(hits: torch.Tensor) -> dict[str, Any]:
    """:func:`proportion` of a 0/1 (or bool) vector ``[input]`` under the names of the long-range and cross-modal
    JSON: ``{"accuracy", "correct", "n", "ci95", "chance_in_ci"}`` (whether 50 % lies in the interval)."""
    check_tensor("hits", hits, "[input] of 0/1")
    if hits.ndim != 1 or hits.numel() == 0:
        raise ValueError(f"hits must be a non-empty [input] vector, got shape {tuple(hits.shape)}")
    share = proportion(hits.bool())
    low, high = share["ci95"]
    return {"accuracy": share["rate"], "correct": share["k"], "n": share["n"], "ci95": share["ci95"],
            "chance_in_ci": bool(low <= CHANCE <= high)}


def rank_agreement(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    """Spearman's rho between ``a`` and ``b`` over units, per input, summarised over inputs.

    Args:
        a, b: ``[input, *units]`` (the unit dims are flattened).

    Returns:
        ``{"mean", "std", "ci95", "n", "undefined", "per_input"}``: ``per_input`` holds every rho rounded to
        :data:`DIGITS` (None where either vector is constant: rho undefined), ``undefined`` counts those, and the
        rest is the t-interval (:func:`~explorer.analysis.agreement.interval`) of the stored, defined rhos.
    """
    check_tensor("a", a, "[input, *units]", dtype="float")
    check_tensor("b", b, "[input, *units]", dtype="float")
    if a.shape != b.shape or a.ndim < 2 or a.shape[0] < 2:
        raise ValueError(f"a and b must have the same shape [input >= 2, *units], got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    x, y = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    rhos = rounded([spearman(x[i].double().numpy(), y[i].double().numpy()) for i in range(x.shape[0])], DIGITS)
    defined = [r for r in rhos if r is not None]
    if len(defined) < 2:
        raise ValueError("fewer than two inputs with a defined rank correlation (constant scores)")
    return {**interval(defined), "undefined": len(rhos) - len(defined), "per_input": rhos}


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


# --- pruning and the single-unit check ----------------------------------------------------------------------------


def pruning_study(model: nn.Module, forward: Forward, inputs: Any, metric: Metric, hooks: str | Sequence[str],
                  scores: Mapping[str, torch.Tensor], steps: Sequence[int] | None = None,
                  random_orders: int = RANDOM_ORDERS, *, chunk: int | None = None) -> dict[str, Any]:
    """Task metric vs number of units removed, least important first by each score, and in random orders.

    Args:
        model, forward, inputs, metric, hooks: as in :func:`explorer.analysis.intervention.pruning_curve`.
        scores: ``{name: [layer, unit]}``, larger = more important (e.g. mean attention, ``|gradient|`` averaged
            over inputs, ``|effect|`` averaged over inputs); NaN marks a unit a narrower layer lacks.
        steps: unit counts to measure (default every count).
        random_orders: random orders (seeds ``0 .. random_orders - 1``) of the units that exist, at least 3 for
            the report.
        chunk: inputs per forward pass (:func:`~explorer.analysis.intervention.pruning_curve`).

    Returns:
        ``{"steps": [...], "curves": {name: [...], "random_<seed>": [...]}, "orders": {name: [[layer, unit]...]}}``.
    """
    check_int("random_orders", random_orders, 0)
    first = next(iter(scores.values())).double()
    orders = {name: pruning_order(score.double()) for name, score in scores.items()}
    blank = torch.zeros_like(first).masked_fill(first.isnan(), math.nan)  # the shape and the missing units
    for seed in range(random_orders):
        orders[f"random_{seed}"] = pruning_order(blank, seed=seed)
    steps = list(range(int((~first.isnan()).sum()) + 1)) if steps is None else list(steps)
    curves = {name: rounded(pruning_curve(model, forward, inputs, metric, hooks, order, steps, chunk=chunk))
              for name, order in orders.items()}
    return {"steps": steps, "curves": curves, "orders": {k: [list(u) for u in v] for k, v in orders.items()}}


def pruning_intervals(pruning: Mapping[str, Any], n: int) -> dict[str, Any]:
    """A :func:`pruning_study` of a 0/1 metric on ``n`` inputs, with ``"inputs": n`` and a :func:`wilson` interval
    per step and order (``"ci95"``)."""
    check_int("n", n, 1)
    return {**pruning, "inputs": n, "ci95": {order: [wilson(round(v * n), n) for v in curve]
                                             for order, curve in pruning["curves"].items()}}


def counts_at(n_units: int, fractions: Sequence[float] = FRACTIONS) -> list[int]:
    """Unit counts ``round(f * n_units)`` for each fraction (deduplicated, in order)."""
    check_int("n_units", n_units, 1)
    counts = [round(f * n_units) for f in fractions]
    return sorted(set(counts))


def selections(scores: Mapping[str, torch.Tensor], n_units: int, n_inputs: int) -> dict[str, torch.Tensor]:
    """Flat unit index per input: argmax of each score ``[input, units...]``, then ``random_<seed>`` draws."""
    chosen = {name: score.reshape(n_inputs, -1).argmax(dim=1) for name, score in scores.items()}
    for seed in range(RANDOM_DRAWS):
        chosen[f"random_{seed}"] = torch.randint(n_units, (n_inputs,), generator=torch.Generator().manual_seed(seed))
    return chosen


def one_unit_per_input(model: nn.Module, forward: Forward, inputs: Any, hooks: Sequence[str],
                       counts: Sequence[int], chosen: torch.Tensor) -> Any:
    """The output with unit ``chosen[i]`` zero-ablated in input ``i`` only (a 0/1 mask ``[input, unit]`` per hook).

    Args:
        model, forward, inputs: as in :func:`~explorer.analysis.intervention.ablation_sweep`.
        hooks: the unit hooks, in the order of the flat unit index.
        counts: units per hook (may differ: conv layers of different widths).
        chosen: ``[input]`` flat unit index (hook ``h``'s units follow those of hooks ``< h``).
    """
    check_tensor("chosen", chosen, "[input] flat unit indices", dtype="int", ndim=1)
    if len(hooks) != len(counts) or not hooks:
        raise ValueError(f"hooks and counts must be non-empty and of one length, got {len(hooks)} and {len(counts)}")
    if chosen.numel() and not 0 <= int(chosen.min()) <= int(chosen.max()) < sum(counts):
        raise ValueError(f"chosen must hold flat unit indices in [0, {sum(counts)}), got "
                         f"[{int(chosen.min())}, {int(chosen.max())}]")
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    factors, offset = {}, 0
    for name, count in zip(hooks, counts):
        mask = torch.ones(chosen.shape[0], count, dtype=dtype)  # (input, unit)
        rows = torch.nonzero((chosen >= offset) & (chosen < offset + count)).flatten()
        mask[rows, chosen[rows] - offset] = 0.0
        if rows.numel():
            factors[name] = mask
        offset += count
    return run_with_edits(model, forward, inputs, scaling(model, factors))


def single_unit_check(change: Mapping[str, torch.Tensor], flipped: Mapping[str, torch.Tensor],
                      chosen: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Summaries of the single-unit check: flip rate, mean ``|change|`` and mean change per selector, and paired
    differences of ``|change|`` (computed from the values as the JSON stores them).

    Args:
        change: ``{selector: [input]}`` metric after - before; selectors ``random_<seed>`` are averaged per input into
            ``random`` for the paired differences.
        flipped: ``{selector: [input] bool}``.
        chosen: ``{selector: [input]}`` flat unit index.
    """
    kept = {name: stored(value) for name, value in change.items()}
    out: dict[str, Any] = {"selectors": {}, "paired": {}}
    for name, value in kept.items():
        out["selectors"][name] = {"chosen": chosen[name].tolist(), "change": value.tolist(),
                                  "flipped": flipped[name].tolist(), "flips": proportion(flipped[name]),
                                  "abs_change": interval(value.abs().tolist()), "mean_change": interval(value.tolist())}
    randoms = [kept[name].abs() for name in kept if name.startswith("random_")]
    if randoms:
        random = torch.stack(randoms).mean(0)  # (input,) mean |change| over the random draws
        out["paired"]["random_mean_abs"] = random.tolist()
    pairs = [("gradient", "attention"), ("attention", "random"), ("gradient", "random"), ("oracle", "gradient")]
    for a, b in pairs:
        if a in kept and (b in kept or (b == "random" and randoms)):
            right = random if b == "random" else kept[b].abs()
            out["paired"][f"{a}-{b}"] = paired_difference(kept[a].abs().tolist(), right.tolist())
    return out


# --- report text ------------------------------------------------------------------------------------------------


def mean_text(summary: Mapping[str, Any], digits: int = 3) -> str:
    """``"0.326 [0.301, 0.352]"``: ``mean [low, high]`` of an interval summary."""
    low, high = summary["ci95"]
    return f"{summary['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def rho_text(stat: Mapping[str, Any]) -> str:
    """``"+0.32 [+0.30, +0.35]"``: a rank-agreement summary (mean and t-interval), signed."""
    return f"{stat['mean']:+.2f} [{stat['ci95'][0]:+.2f}, {stat['ci95'][1]:+.2f}]"


def percent(summary: Mapping[str, Any]) -> str:
    """``"97.3 [94.5, 98.7]"``: a :func:`binomial_summary` (or any ``{accuracy, ci95}``) in %."""
    low, high = summary["ci95"]
    return f"{100 * summary['accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def pct(summary: Mapping[str, Any]) -> str:
    """``k/n = rate % [low, high] %`` of a :func:`proportion`."""
    low, high = summary["ci95"]
    return f"{summary['k']}/{summary['n']} = {100 * summary['rate']:.1f} % [{100 * low:.1f}, {100 * high:.1f}] %"


def curve_at(pruning: Mapping[str, Any], name: str, count: int) -> float:
    """The curve ``name`` at ``count`` units removed."""
    return pruning["curves"][name][pruning["steps"].index(count)]


def random_at(pruning: Mapping[str, Any], count: int) -> list[float]:
    """The random orders' values at ``count`` units removed."""
    return [curve_at(pruning, name, count) for name in pruning["curves"] if name.startswith("random_")]


def shown_counts(pruning: Mapping[str, Any], n_units: int) -> list[int]:
    """The counts of :data:`SHOWN` that the curves hold."""
    return [c for c in counts_at(n_units, SHOWN) if c in pruning["steps"]]


def pruning_table(pruning: Mapping[str, Any], n_units: int, labels: Mapping[str, str], what: str,
                  digits: int = 3) -> list[str]:
    """Markdown table: one row per score order and the random mean ± std (min-max) over the random orders."""
    counts = shown_counts(pruning, n_units)
    lines = [f"| {what} | " + " | ".join(f"{c} ({100 * c / n_units:.0f} %)" for c in counts) + " |",
             "|---|" + "---|" * len(counts)]
    for name, label in labels.items():
        lines.append(f"| {label} | " + " | ".join(f"{curve_at(pruning, name, c):.{digits}f}" for c in counts) + " |")
    cells = []
    for c in counts:
        values = torch.tensor(random_at(pruning, c), dtype=torch.float64)
        std = float(values.std()) if values.numel() > 1 else 0.0
        cells.append(f"{float(values.mean()):.{digits}f} ± {std:.{digits}f} ({float(values.min()):.{digits}f}-"
                     f"{float(values.max()):.{digits}f})")
    lines.append(f"| random, mean ± std (min-max) of {len(random_at(pruning, 0))} | " + " | ".join(cells) + " |")
    return lines


def agreement_rows(agreement: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, key) of the rows of :func:`three_numbers` present in ``agreement``."""
    rows = [("attention ~ \\|effect\\|", "attention~effect"), ("\\|gradient\\| ~ \\|effect\\|", "gradient~effect"),
            ("attention ~ \\|gradient\\|", "attention~gradient"),
            ("-gradient ~ effect (signed: first-order prediction)", "prediction~effect")]
    return [(label, key) for label, key in rows if key in agreement]


def pruning_claims(pruning: Mapping[str, Any], n_units: int, unit: str, task: str) -> list[dict[str, Any]]:
    """Michel et al. in kind: little loss at 20 % and 40 % of the units removed by ``|gradient|``, and the
    ``|gradient|`` order above every random order there."""
    base = curve_at(pruning, "gradient", 0)
    counts = [round(f * n_units) for f in PRUNED]
    kept = {c: curve_at(pruning, "gradient", c) for c in counts}
    small = [c for c in counts if base - kept[c] <= LITTLE_LOSS + 1e-9]  # 1e-9: a drop of exactly 5 points counts
    numbers = "; ".join(f"{c} {unit}s ({100 * c / n_units:.0f} %) removed: {kept[c]:.3f}, drop {base - kept[c]:+.3f}"
                        for c in counts)
    if 0 < len(small) < len(counts):
        numbers += f" (little loss at {', '.join(str(c) for c in small)} {unit}s only)"
    randoms = {c: random_at(pruning, c) for c in counts}
    return [
        {"claim": f"20-40 % of the {unit}s can be removed, least |gradient| first, with little loss of {task} "
                  f"(at most {100 * LITTLE_LOSS:.0f} points below intact; Michel et al. 2019)",
         "held": len(small) == len(counts), "numbers": f"intact {base:.3f}; {numbers}"},
        {"claim": f"removing {unit}s by |gradient| keeps more {task} than every random order, at 20 % and 40 %",
         "held": all(kept[c] > max(randoms[c]) for c in counts),
         "numbers": "; ".join(f"{c} {unit}s: {kept[c]:.3f} vs random {', '.join(f'{v:.3f}' for v in randoms[c])}"
                              for c in counts)},
    ]


def check_claims(check: Mapping[str, Any], unit: str, metric: str) -> list[dict[str, Any]]:
    """Serrano & Smith in kind, from :func:`single_unit_check` output."""
    sel, paired, out = check["selectors"], check["paired"], []
    if "attention" in sel:
        flips = sel["attention"]["flips"]
        out.append({"claim": f"ablating the most-attended {unit} rarely changes the decision (95 % interval of the "
                             f"flip rate below {100 * RARELY:.0f} %; Serrano & Smith 2019)",
                    "held": flips["ci95"][1] < RARELY, "numbers": f"flips {pct(flips)}"})
        d = paired["attention-random"]
        out.append({"claim": f"the most-attended {unit} changes the {metric} more than a random {unit}",
                    "held": d["ci95"][0] > 0, "numbers": f"mean |change| difference {mean_text(d, 4)}"})
        d = paired["gradient-attention"]
        out.append({"claim": f"the largest-|gradient| {unit} changes the {metric} more than the most-attended one "
                             "(gradients find the decisive component better than attention)",
                    "held": d["ci95"][0] > 0, "numbers": f"mean |change| difference {mean_text(d, 4)}"})
    else:
        d = paired["gradient-random"]
        out.append({"claim": f"the largest-|gradient| {unit} changes the {metric} more than a random {unit}",
                    "held": d["ci95"][0] > 0, "numbers": f"mean |change| difference {mean_text(d, 4)}"})
    return out


def paired_line(check: Mapping[str, Any], per: str) -> str:
    """The paired differences of ``|change|`` of a :func:`single_unit_check`, one sentence; ``per``: ``"digit"``."""
    return "Paired differences of \\|change\\|: " + "; ".join(
        f"{name.replace('-', ' - ')} {mean_text(value, 4)}" for name, value in check["paired"].items()
        if name != "random_mean_abs") + f" (random: mean over the draws per {per})."


def claim_lines(items: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown bullets: held / did not hold, the claim, the numbers."""
    return [f"- **{'held' if c['held'] else 'did not hold'}**: {c['claim']}. {c['numbers']}." for c in items]


def check_table(check: Mapping[str, Any], labels: Mapping[str, str], metric: str, digits: int = 4) -> list[str]:
    """Markdown table of the single-unit check."""
    lines = [f"| unit chosen by | decision flips | mean \\|change of {metric}\\| | mean change |", "|---|---|---|---|"]
    for name, label in labels.items():
        s = check["selectors"][name]
        lines.append(f"| {label} | {pct(s['flips'])} | {mean_text(s['abs_change'], digits)} | "
                     f"{mean_text(s['mean_change'], digits)} |")
    return lines


def selector_labels(check: Mapping[str, Any], unit: str) -> dict[str, str]:
    """Row labels of :func:`check_table` for the selectors present (``unit``: where the attention is read)."""
    labels = {"attention": f"most attention ({unit})", "gradient": "largest \\|gradient\\|",
              "oracle": "largest measured \\|effect\\| (oracle)"}
    out = {k: v for k, v in labels.items() if k in check["selectors"]}
    out.update({k: f"random (seed {k.split('_')[1]})" for k in check["selectors"] if k.startswith("random_")})
    return out
