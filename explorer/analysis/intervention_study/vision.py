"""The lesson-05 ViT and CNN in the intervention study: heads and channels, measured on test digits.

Models: :func:`explorer.train.head_to_head.load_head_to_head` -- ``"vit"`` (SmallViT, 3 blocks x 4 heads, ``[CLS]``
readout; run in float64 as :mod:`explorer.analysis.agreement` runs it) and ``"cnn"`` (SmallCNN, convs of 32, 40 and
40 channels; float32, which is about 4x faster on CPU than float64 for the convs and within 4e-6 of it in the
logits). Inputs: the first ``n`` test digits of the class-balanced order (seed 0), centred on the 24 x 24 canvas the
models were trained on (as agreement.py builds them). Metric: the softmax probability of the true class
(:func:`~explorer.analysis.intervention.class_probability`); the pruning curves also read accuracy.

Units and three numbers per unit and digit:

* ViT: heads at ``blocks.{l}.attn.hook_z``; **attention** = the ``[CLS]`` row's attention mass on the patches with
  ink (any nonzero pixel; :func:`~explorer.analysis.looks_at.cls_attention`, not renormalised after dropping
  ``[CLS] -> [CLS]``), summed over those patches;
* CNN: channels at ``body.conv{1,2,3}.hook_out`` (before the ReLU; zeroing there equals zeroing after it). The CNN
  has no attention, so only gradient vs effect is reported. The layers have different widths (32, 40, 40) and the
  library's sweeps take one width at a time, so each conv layer is swept as its own group and the 112 channels are
  joined into one flat unit axis (conv1's, then conv2's, then conv3's) for agreement, selection and pruning
  (:func:`prune_flat` removes channels across layers, least important first);
* **gradient** ``d p_true / d xi`` of a multiplicative mask at 1, and the measured **effect** of zero ablation
  (primary) and of mean ablation (the unit's mean activation per position over the ``n`` digits).

This module also holds what :mod:`.minilm` shares with it: :func:`one_unit_per_input` and
:func:`single_unit_check` (the single-unit check), :func:`counts_at` and the report pieces (tables and claims).

The single-unit check (Serrano & Smith in kind) ablates, per digit, the unit with the most attention (ViT), the
largest ``|gradient|``, the largest measured ``|effect|`` (oracle) and random units (3 seeds), and counts how often
the predicted class changes. Pruning follows Michel et al.: units removed cumulatively, least important first by
mean attention (ViT), mean ``|gradient|`` and mean ``|effect|``, and in 3 random orders.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from explorer._checks import check_choice, check_int, check_tensor
from explorer.analysis.agreement import interval, paired_difference
from explorer.analysis.intervention import (
    Forward, Metric, ablation_sweep, accuracy, class_probability, evaluating, gradient_importance, pruning_order,
    scaling, unit_hooks, zero_ablation,
)
from explorer.analysis.intervention_study.common import (
    LEVEL_NOTE, RANDOM_ORDERS, metadata, pruning_study, rank_agreement, rounded, three_numbers,
)
from explorer.hooks import intervene

__all__ = ["KEYS", "HOOKS", "SEED", "forward", "ink_attention", "prune_flat", "run", "section", "claims",
           # the single-unit check, pruning counts and report pieces, shared with minilm.py
           "output_under", "one_unit_per_input", "selections", "single_unit_check", "proportion", "counts_at", "fmt",
           "pct", "curve_at", "random_at", "pruning_table", "agreement_rows", "pruning_claims", "check_claims",
           "claim_lines", "check_table", "selector_labels"]

KEYS = ("vit", "cnn")
HOOKS = {"vit": "blocks.*.attn.hook_z", "cnn": "body.conv*.hook_out"}  # [batch, head|channel, ...]
DTYPES = {"vit": torch.float64, "cnn": torch.float32}
SEED = 0  # the digits' class-balanced order (as agreement.py); random units and orders use seeds 0 .. 2
UNIT = {"vit": "head", "cnn": "channel"}
RANDOM_DRAWS = 3                # random units per input in the single-unit check (seeds 0, 1, 2)
FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 1.0)  # pruning curves: shares of the units removed (CNN, MiniLM)
SHOWN = (0.0, 0.1, 0.2, 0.4, 0.6, 1.0)           # ... shown in the report
DIGITS = 6                      # significant digits of per-input values in the JSON (summaries use the rounded ones)
RARELY = 0.10                   # "rarely changes the decision": the 95 % interval of the flip rate lies below 10 %
LITTLE_LOSS = 0.05              # "little loss": at most 5 points of the task metric below the intact model
PRUNED = (0.2, 0.4)             # Michel et al.: 20-40 % of the heads pruned
LEVEL = 0.95


def forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class logits ``[batch, classes]``."""
    return model(images)


def ink_attention(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The ``[CLS]`` row's attention mass on the patches with ink: ``[batch, layer, head]``, float64.

    Args:
        model: a SmallViT with ``[CLS]`` pooling.
        images: ``[batch, 1, height, width]`` in the model's dtype.
    """
    from explorer.analysis.agreement import _patch_sums
    from explorer.analysis.looks_at import cls_attention

    check_tensor("images", images, "[batch, channel, height, width]", dtype="float", ndim=4)
    cls = cls_attention(model, images).flatten(3).double()  # (layer, batch, head, patch)
    ink = _patch_sums(images.ne(0).any(dim=1).double(), model.config.patch) > 0  # (batch, patch)
    return (cls * ink[None, :, None, :]).sum(-1).permute(1, 0, 2)  # (batch, layer, head)


def _flat(per_hook: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[input, 1, units]`` sweeps of one hook each -> ``[input, all units]``."""
    return torch.cat([t[:, 0] for t in per_hook], dim=1)


def prune_flat(model: nn.Module, images: torch.Tensor, metrics: Mapping[str, Metric], hooks: Sequence[str],
               counts: Sequence[int], scores: Mapping[str, torch.Tensor], steps: Sequence[int],
               random_orders: int = RANDOM_ORDERS) -> dict[str, Any]:
    """Pruning curves over units of hooks of different widths (``common.pruning_study`` takes one width).

    Orders come from :func:`~explorer.analysis.intervention.pruning_order` on the flat scores (least important first)
    and from seeds ``0 .. random_orders - 1``; the first ``k`` units are zero-ablated together.

    Args:
        model, images: the model and its inputs.
        metrics: ``{name: metric}``, each read from the same forward pass.
        hooks, counts: the unit hooks and their widths; the flat unit index runs through them in order.
        scores: ``{name: [units]}``, larger = more important.
        steps: counts ``k`` to measure.

    Returns:
        ``{metric: {"steps", "curves": {order: [...]}, "orders": {order: [flat index, ...]}}}``, as
        ``common.pruning_study`` per metric.
    """
    total = sum(counts)
    for name, score in scores.items():
        check_tensor(f"scores[{name!r}]", score, "[units]", dtype="float", ndim=1)
        if score.numel() != total:
            raise ValueError(f"scores[{name!r}] has {score.numel()} units, the hooks have {total}")
    orders = {name: [u for _, u in pruning_order(score.double()[None])] for name, score in scores.items()}
    for seed in range(random_orders):
        orders[f"random_{seed}"] = [u for _, u in pruning_order(torch.zeros(1, total, dtype=torch.float64),
                                                                seed=seed)]
    starts = [sum(counts[:i]) for i in range(len(counts))]
    curves: dict[str, dict[str, list[float]]] = {name: {} for name in metrics}
    for order_name, order in orders.items():
        values: dict[str, list[float]] = {name: [] for name in metrics}
        for k in steps:
            units: dict[str, list[int]] = {}
            for u in order[:k]:
                layer = max(i for i, s in enumerate(starts) if s <= u)
                units.setdefault(hooks[layer], []).append(u - starts[layer])
            output = output_under(model, forward, images, zero_ablation(model, units) if units else None)
            for name, metric in metrics.items():
                values[name].append(float(metric(output).double().mean()))
        for name in metrics:
            curves[name][order_name] = rounded(values[name])
    return {name: {"steps": list(steps), "curves": curves[name], "orders": orders} for name in metrics}


# --- shared with minilm.py: the single-unit check (Serrano & Smith in kind), pruning counts ------------------


def output_under(model: nn.Module, forward: Forward, inputs: Any, edits: Mapping[str, Any] | None) -> torch.Tensor:
    """The model's output on ``inputs`` with ``edits`` applied (eval mode, no gradients)."""
    with evaluating(model), torch.no_grad():
        if not edits:
            return forward(model, inputs)
        with intervene(model, edits):
            return forward(model, inputs)


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
    return output_under(model, forward, inputs, scaling(model, factors))


def proportion(flags: torch.Tensor, level: float = LEVEL) -> dict[str, Any]:
    """Share of True in ``flags`` ``[input]`` with its Wilson score interval (``scipy.stats.binomtest``).

    Returns:
        ``{"k", "n", "rate", "ci95"}``.
    """
    from scipy import stats

    check_tensor("flags", flags, "[input] bool", dtype=torch.bool, ndim=1, nonempty=True)
    k, n = int(flags.sum()), int(flags.numel())
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return {"k": k, "n": n, "rate": k / n, "ci95": [float(ci.low), float(ci.high)]}


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
    stored = {name: torch.tensor(rounded(value, DIGITS), dtype=torch.float64) for name, value in change.items()}
    out: dict[str, Any] = {"selectors": {}, "paired": {}}
    for name, value in stored.items():
        out["selectors"][name] = {"chosen": chosen[name].tolist(), "change": value.tolist(),
                                  "flipped": flipped[name].tolist(), "flips": proportion(flipped[name]),
                                  "abs_change": interval(value.abs().tolist()), "mean_change": interval(value.tolist())}
    randoms = [stored[name].abs() for name in stored if name.startswith("random_")]
    if randoms:
        random = torch.stack(randoms).mean(0)  # (input,) mean |change| over the random draws
        out["paired"]["random_mean_abs"] = random.tolist()
    pairs = [("gradient", "attention"), ("attention", "random"), ("gradient", "random"), ("oracle", "gradient")]
    for a, b in pairs:
        if a in stored and (b in stored or (b == "random" and randoms)):
            right = random if b == "random" else stored[b].abs()
            out["paired"][f"{a}-{b}"] = paired_difference(stored[a].abs().tolist(), right.tolist())
    return out


def selections(scores: Mapping[str, torch.Tensor], n_units: int, n_inputs: int) -> dict[str, torch.Tensor]:
    """Flat unit index per input: argmax of each score ``[input, units...]``, then ``random_<seed>`` draws."""
    chosen = {name: score.reshape(n_inputs, -1).argmax(dim=1) for name, score in scores.items()}
    for seed in range(RANDOM_DRAWS):
        chosen[f"random_{seed}"] = torch.randint(n_units, (n_inputs,), generator=torch.Generator().manual_seed(seed))
    return chosen


def counts_at(n_units: int, fractions: Sequence[float] = FRACTIONS) -> list[int]:
    """Unit counts ``round(f * n_units)`` for each fraction (deduplicated, in order)."""
    check_int("n_units", n_units, 1)
    counts = [round(f * n_units) for f in fractions]
    return sorted(set(counts))


# --- vision run --------------------------------------------------------------------------------------------------


def run(key: str, n: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The study of ``key`` (``"vit"`` or ``"cnn"``) on the first ``n`` test digits; returns the JSON-ready result."""
    from explorer.analysis.intervention_study import COMMAND
    from explorer.data.digits import digits_dataset, digits_indices
    from explorer.train.head_to_head import CANVAS, PLACEMENT, load_head_to_head

    check_choice("key", key, KEYS)
    n = check_int("n", n, 2)
    seconds: dict[str, float] = {}
    tick = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        seconds[name] = round(now - tick, 2)
        tick = now
        log(f"{key}: {name} {seconds[name]} s")

    model, entry = load_head_to_head(key)
    model = model.to(DTYPES[key])
    images, labels = digits_dataset("test", canvas=CANVAS, placement=PLACEMENT, seed=SEED, n=n)
    indices = digits_indices("test", seed=SEED, n=n)
    x = images.to(DTYPES[key])
    probability, correct = class_probability(labels), accuracy(labels)
    hooks = [hp.name for hp in unit_hooks(model, HOOKS[key])]
    with evaluating(model), torch.no_grad():
        logits = forward(model, x)
    predicted = logits.argmax(-1)
    lap("load")

    attention = None
    if key == "vit":
        attention = ink_attention(model, x)  # (digit, layer, head)
        lap("attention")
        groups = [HOOKS[key]]  # one group: every layer has 4 heads
    else:
        groups = hooks  # one group per conv layer: widths 32, 40, 40
    gradient = [gradient_importance(model, forward, x, probability, g).per_input for g in groups]
    lap("gradient")
    sweeps = [ablation_sweep(model, forward, x, probability, g, how="zero") for g in groups]
    baseline = sweeps[0].baseline
    effect = [s.per_input - baseline.view(-1, 1, 1) for s in sweeps]
    lap("zero_ablation")
    effect_mean = [ablation_sweep(model, forward, x, probability, g, how="mean").per_input - baseline.view(-1, 1, 1)
                   for g in groups]
    lap("mean_ablation")
    if key == "vit":
        counts = [gradient[0].shape[2]] * gradient[0].shape[1]
        numbers = {"gradient": gradient[0], "effect": effect[0], "effect_mean": effect_mean[0]}
        numbers["attention"] = attention
    else:
        counts = [g.shape[2] for g in gradient]
        numbers = {"gradient": _flat(gradient), "effect": _flat(effect), "effect_mean": _flat(effect_mean)}

    # the JSON's values; every summary below is computed from them
    stored = {name: torch.tensor(rounded(value, DIGITS), dtype=torch.float64) for name, value in numbers.items()}
    as_units = {name: value if value.ndim == 3 else value[:, None, :] for name, value in stored.items()}
    att = as_units.get("attention")
    agreement = {"zero": three_numbers(as_units["effect"], as_units["gradient"], att),
                 "mean": three_numbers(as_units["effect_mean"], as_units["gradient"], att),
                 "effect~effect_mean": rank_agreement(as_units["effect"].abs(), as_units["effect_mean"].abs())}
    comparison = None
    if att is not None:
        comparison = paired_difference(agreement["zero"]["gradient~effect"]["per_input"],
                                       agreement["zero"]["attention~effect"]["per_input"])

    scores_per_input = {"gradient": stored["gradient"].abs(), "oracle": stored["effect"].abs()}
    if att is not None:
        scores_per_input = {"attention": stored["attention"], **scores_per_input}
    chosen = selections(scores_per_input, sum(counts), n)
    change, flipped = {}, {}
    for name, units in chosen.items():
        output = one_unit_per_input(model, forward, x, hooks, counts, units)
        change[name] = probability(output).double() - baseline
        flipped[name] = output.argmax(-1) != predicted
    check = {"decision": "predicted class", **single_unit_check(change, flipped, chosen)}
    lap("single_unit_check")

    mean_scores = {name: as_units[name].abs().mean(0) for name in ("gradient", "effect")}
    if att is not None:
        mean_scores = {"attention": as_units["attention"].mean(0), **mean_scores}
    metrics = {"accuracy": correct, "probability": probability}
    if key == "vit":
        steps = list(range(sum(counts) + 1))
        pruning = {name: pruning_study(model, forward, x, metric, HOOKS[key], mean_scores, steps)
                   for name, metric in metrics.items()}
    else:
        flat_scores = {name: score[0] for name, score in mean_scores.items()}
        pruning = prune_flat(model, x, metrics, hooks, counts, flat_scores, counts_at(sum(counts)))
    lap("pruning")

    hits = predicted == labels
    model_name = ("SmallViT, 3 blocks x 4 heads, [CLS] readout, float64" if key == "vit"
                  else "SmallCNN, convs of 32, 40, 40 channels, float32")
    return {
        "model": key, "n_inputs": n,
        "seeds": {"digits_order": SEED, "random_units": list(range(RANDOM_DRAWS)),
                  "random_orders": list(range(RANDOM_ORDERS)), "weights": entry.get("weights_seed", 0)},
        "setup": {
            "model": f"lesson-05 {model_name} (load_head_to_head({key!r}), seed-0 weights)",
            "data": f"first {n} test digits of the class-balanced order (seed {SEED}), centred on {CANVAS} x {CANVAS}",
            "units": (f"heads at {HOOKS[key]}" if key == "vit" else
                      f"channels at {', '.join(hooks)} (swept per layer; one flat axis of {sum(counts)})"),
            "metric": "softmax probability of the true class; pruning also reads accuracy",
            "attention": ("[CLS] attention mass on the patches with ink, summed over them" if key == "vit" else
                          "none: the CNN has no attention, so only gradient vs effect is reported"),
            "gradient": "d p_true / d xi, multiplicative mask at 1",
            "effect": "zero ablation (primary); effect_mean: the unit's mean per position over the digits",
            "decision": "predicted class",
        },
        "units": {"hooks": hooks, "counts": counts},
        "inputs": [{"digit_index": int(i), "label": int(t), "predicted": int(p)}
                   for i, t, p in zip(indices, labels, predicted)],
        "test_accuracy_of_weights": entry["accuracy"]["accuracy"],
        "accuracy_on_inputs": proportion(hits),
        "baseline": rounded(baseline, DIGITS),
        "per_input": {name: rounded(value) for name, value in stored.items()},
        "agreement": agreement, "gradient_minus_attention": comparison, "check": check, "pruning": pruning,
        "seconds": seconds, "metadata": metadata(f"{COMMAND} --models {key} --n {n}"),
    }


# --- report pieces, shared with minilm.py -------------------------------------------------------------------------


def fmt(summary: Mapping[str, Any], digits: int = 3) -> str:
    """``mean [low, high]`` of an interval summary."""
    low, high = summary["ci95"]
    return f"{summary['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


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
                    "held": d["ci95"][0] > 0, "numbers": f"mean |change| difference {fmt(d, 4)}"})
        d = paired["gradient-attention"]
        out.append({"claim": f"the largest-|gradient| {unit} changes the {metric} more than the most-attended one "
                             "(gradients find the decisive component better than attention)",
                    "held": d["ci95"][0] > 0, "numbers": f"mean |change| difference {fmt(d, 4)}"})
    else:
        d = paired["gradient-random"]
        out.append({"claim": f"the largest-|gradient| {unit} changes the {metric} more than a random {unit}",
                    "held": d["ci95"][0] > 0, "numbers": f"mean |change| difference {fmt(d, 4)}"})
    return out


def claim_lines(items: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown bullets: held / did not hold, the claim, the numbers."""
    return [f"- **{'held' if c['held'] else 'did not hold'}**: {c['claim']}. {c['numbers']}." for c in items]


def check_table(check: Mapping[str, Any], labels: Mapping[str, str], metric: str, digits: int = 4) -> list[str]:
    """Markdown table of the single-unit check."""
    lines = [f"| unit chosen by | decision flips | mean \\|change of {metric}\\| | mean change |", "|---|---|---|---|"]
    for name, label in labels.items():
        s = check["selectors"][name]
        lines.append(f"| {label} | {pct(s['flips'])} | {fmt(s['abs_change'], digits)} | "
                     f"{fmt(s['mean_change'], digits)} |")
    return lines


def selector_labels(check: Mapping[str, Any], unit: str) -> dict[str, str]:
    labels = {"attention": f"most attention ({unit})", "gradient": "largest \\|gradient\\|",
              "oracle": "largest measured \\|effect\\| (oracle)"}
    out = {k: v for k, v in labels.items() if k in check["selectors"]}
    out.update({k: f"random (seed {k.split('_')[1]})" for k in check["selectors"] if k.startswith("random_")})
    return out


# --- vision report -----------------------------------------------------------------------------------------------


def claims(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every claim with ``held`` and the numbers behind it, from the JSON of :func:`run`."""
    unit = UNIT[result["model"]]
    zero = result["agreement"]["zero"]
    n_units = sum(result["units"]["counts"])
    out = check_claims(result["check"], unit, "true-class probability")
    d = result["gradient_minus_attention"]
    if d is not None:
        out.append({"claim": f"|gradient| ranks the {unit}s by measured effect better than attention does "
                             "(per digit, rho)", "held": d["ci95"][0] > 0,
                    "numbers": f"{fmt(zero['gradient~effect'])} vs {fmt(zero['attention~effect'])}; "
                               f"difference {fmt(d)}"})
    else:
        s = zero["gradient~effect"]
        out.append({"claim": f"|gradient| ranks the {unit}s like their measured effect (rho's interval above 0)",
                    "held": s["ci95"][0] > 0, "numbers": f"rho {fmt(s)}"})
    return out + pruning_claims(result["pruning"]["accuracy"], n_units, unit, "accuracy")


def section(key: str, result: Mapping[str, Any]) -> list[str]:
    """The ``key`` part of REPORT.md, rendered from the JSON of :func:`run`."""
    check_choice("key", key, KEYS)
    setup, unit = result["setup"], UNIT[key]
    n_units = sum(result["units"]["counts"])
    zero, mean = result["agreement"]["zero"], result["agreement"]["mean"]
    lines = [f"## {key}: {setup['model']}", "",
             f"- Data: {setup['data']}; accuracy on them {pct(result['accuracy_on_inputs'])} (the weights' test "
             f"accuracy: {100 * result['test_accuracy_of_weights']:.1f} %). Units: {setup['units']}.",
             f"- Metric: {setup['metric']}. Attention: {setup['attention']}.",
             f"- Gradient: {setup['gradient']}. Effect: {setup['effect']}.",
             f"- Seeds: digits order {result['seeds']['digits_order']}, random {unit}s "
             f"{result['seeds']['random_units']}, random orders {result['seeds']['random_orders']}.",
             f"- Time (one thread): {sum(result['seconds'].values()):.0f} s "
             f"({', '.join(f'{k} {v:.0f} s' for k, v in result['seconds'].items())}).", "",
             f"Rank agreement over the {n_units} {unit}s, Spearman's rho per digit, {LEVEL_NOTE}:", "",
             "| numbers | zero ablation (primary) | mean ablation |", "|---|---|---|"]
    for label, name in agreement_rows(zero):
        lines.append(f"| {label} | {fmt(zero[name])} | {fmt(mean[name])} |")
    lines.append(f"| \\|zero effect\\| ~ \\|mean effect\\| | {fmt(result['agreement']['effect~effect_mean'])} | |")
    if result["gradient_minus_attention"] is not None:
        lines += ["", "Paired difference of the per-digit rhos, (\\|gradient\\| ~ \\|effect\\|) - (attention ~ "
                      f"\\|effect\\|): {fmt(result['gradient_minus_attention'])}."]
    lines += ["", f"One {unit} zero-ablated per digit (Serrano & Smith in kind); the decision is the predicted "
                  f"class; {LEVEL_NOTE}, flip rates with Wilson intervals:", ""]
    lines += check_table(result["check"], selector_labels(result["check"], "on the ink"), "p_true")
    paired = result["check"]["paired"]
    lines += ["", "Paired differences of \\|change\\|: " + "; ".join(
        f"{name.replace('-', ' - ')} {fmt(value, 4)}" for name, value in paired.items() if name != "random_mean_abs")
        + " (random: mean over the draws per digit).", ""]
    labels = {"attention": "by attention", "gradient": "by \\|gradient\\|", "effect": "by \\|effect\\|"}
    labels = {k: v for k, v in labels.items() if k in result["pruning"]["accuracy"]["curves"]}
    lines += [f"Pruning ({unit}s zero-ablated cumulatively, least important first); accuracy:", ""]
    lines += pruning_table(result["pruning"]["accuracy"], n_units, labels, f"{unit}s removed")
    lines += ["", "Mean true-class probability:", ""]
    lines += pruning_table(result["pruning"]["probability"], n_units, labels, f"{unit}s removed")
    lines += ["", "Claims:", ""] + claim_lines(claims(result))
    return lines
