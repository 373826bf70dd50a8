"""The lesson-05 ViT and CNN in the intervention study: heads and channels, measured on test digits.

Models: :func:`explorer.models.head_to_head.load_head_to_head` -- ``"vit"`` (SmallViT, 3 blocks x 4 heads, ``[CLS]``
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
  has no attention, so only gradient vs effect is reported. The layers have different widths (32, 40, 40): the
  sweeps return ``[layer, channel]`` padded with NaN, and the 112 channels form one flat unit axis (conv1's, then
  conv2's, then conv3's; :func:`~explorer.analysis.intervention.flat_units`) for agreement and selection;
* **gradient** ``d p_true / d xi`` of a multiplicative mask at 1, and the measured **effect** of zero ablation
  (primary) and of mean ablation (the unit's mean activation per position over the ``n`` digits).

The single-unit check (Serrano & Smith in kind) ablates, per digit, the unit with the most attention (ViT), the
largest ``|gradient|``, the largest measured ``|effect|`` (oracle) and random units (3 seeds), and counts how often
the predicted class changes. Pruning follows Michel et al.: units removed cumulatively, least important first by
mean attention (ViT), mean ``|gradient|`` and mean ``|effect|``, and in 3 random orders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from explorer._checks import check_choice, check_int, check_tensor
from explorer._modes import evaluating
from explorer.analysis.agreement import paired_difference, patch_sums
from explorer.analysis.intervention import (
    ablation_sweep, accuracy, class_probability, flat_units, gradient_importance, unit_hooks,
)
from explorer.analysis.intervention_study.common import (
    Laps,
    DIGITS, LEVEL_NOTE, RANDOM_DRAWS, RANDOM_ORDERS, agreement_rows, check_claims, check_table, claim_lines, counts_at,
    mean_text, metadata, one_unit_per_input, paired_line, pct, proportion, pruning_claims, pruning_study, pruning_table,
    rank_agreement, rounded, selections, selector_labels, single_unit_check, stored, three_numbers,
)

__all__ = ["KEYS", "HOOKS", "SEED", "forward", "ink_attention", "run", "section", "claims"]

KEYS = ("vit", "cnn")
HOOKS = {"vit": "blocks.*.attn.hook_z", "cnn": "body.conv*.hook_out"}  # [batch, head|channel, ...]
DTYPES = {"vit": torch.float64, "cnn": torch.float32}
SEED = 0  # the digits' class-balanced order (as agreement.py); random units and orders use seeds 0 .. 2
UNIT = {"vit": "head", "cnn": "channel"}


def forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class logits ``[batch, classes]``."""
    return model(images)


def ink_attention(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The ``[CLS]`` row's attention mass on the patches with ink: ``[batch, layer, head]``, float64.

    Args:
        model: a SmallViT with ``[CLS]`` pooling.
        images: ``[batch, 1, height, width]`` in the model's dtype.
    """
    from explorer.analysis.looks_at import cls_attention

    check_tensor("images", images, "[batch, channel, height, width]", dtype="float", ndim=4)
    cls = cls_attention(model, images).flatten(3).double()  # (layer, batch, head, patch)
    ink = patch_sums(images.ne(0).any(dim=1).double(), model.config.patch) > 0  # (batch, patch)
    return (cls * ink[None, :, None, :]).sum(-1).permute(1, 0, 2)  # (batch, layer, head)


# --- vision run --------------------------------------------------------------------------------------------------


def run(key: str, n: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The study of ``key`` (``"vit"`` or ``"cnn"``) on the first ``n`` test digits; returns the JSON-ready result."""
    from explorer.analysis.intervention_study import COMMAND
    from explorer.data.digits import digits_dataset, digits_indices
    from explorer.models.head_to_head import CANVAS, PLACEMENT, load_head_to_head

    check_choice("key", key, KEYS)
    n = check_int("n", n, 2)
    lap = Laps(log, key)

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
    gradient = gradient_importance(model, forward, x, probability, HOOKS[key])
    counts = gradient.counts  # 4, 4, 4 heads or 32, 40, 40 channels
    lap("gradient")
    zero = ablation_sweep(model, forward, x, probability, HOOKS[key], how="zero")
    baseline = zero.baseline
    lap("zero_ablation")
    mean = ablation_sweep(model, forward, x, probability, HOOKS[key], how="mean")
    lap("mean_ablation")

    # the JSON's values, [digit, layer, unit] (NaN where a conv layer is narrower); every summary below is computed
    # from them, over the flat unit axis [digit, unit]
    values = {"gradient": stored(gradient.per_input), "effect": stored(zero.per_input - baseline.view(-1, 1, 1)),
            "effect_mean": stored(mean.per_input - baseline.view(-1, 1, 1))}
    if attention is not None:
        values["attention"] = stored(attention)
    flat = {name: flat_units(value, counts) for name, value in values.items()}
    att = flat.get("attention")
    agreement = {"zero": three_numbers(flat["effect"], flat["gradient"], att),
                 "mean": three_numbers(flat["effect_mean"], flat["gradient"], att),
                 "effect~effect_mean": rank_agreement(flat["effect"].abs(), flat["effect_mean"].abs())}
    comparison = None
    if att is not None:
        comparison = paired_difference(agreement["zero"]["gradient~effect"]["per_input"],
                                       agreement["zero"]["attention~effect"]["per_input"])

    scores_per_input = {"gradient": flat["gradient"].abs(), "oracle": flat["effect"].abs()}
    if att is not None:
        scores_per_input = {"attention": att, **scores_per_input}
    chosen = selections(scores_per_input, sum(counts), n)
    change, flipped = {}, {}
    for name, units in chosen.items():
        output = one_unit_per_input(model, forward, x, hooks, counts, units)
        change[name] = probability(output).double() - baseline
        flipped[name] = output.argmax(-1) != predicted
    check = {"decision": "predicted class", **single_unit_check(change, flipped, chosen)}
    lap("single_unit_check")

    mean_scores = {name: values[name].abs().mean(0) for name in ("gradient", "effect")}  # (layer, unit), NaN-padded
    if att is not None:
        mean_scores = {"attention": values["attention"].mean(0), **mean_scores}
    steps = list(range(sum(counts) + 1)) if key == "vit" else counts_at(sum(counts))
    pruning = {name: pruning_study(model, forward, x, metric, HOOKS[key], mean_scores, steps)
               for name, metric in {"accuracy": correct, "probability": probability}.items()}
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
                      f"channels at {', '.join(hooks)} (one flat axis of {sum(counts)})"),
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
        "per_input": {name: rounded(value if key == "vit" else flat[name]) for name, value in values.items()},
        "agreement": agreement, "gradient_minus_attention": comparison, "check": check, "pruning": pruning,
        "seconds": lap.seconds, "metadata": metadata(f"{COMMAND} --models {key} --n {n}"),
    }


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
                    "numbers": f"{mean_text(zero['gradient~effect'])} vs {mean_text(zero['attention~effect'])}; "
                               f"difference {mean_text(d)}"})
    else:
        s = zero["gradient~effect"]
        out.append({"claim": f"|gradient| ranks the {unit}s like their measured effect (rho's interval above 0)",
                    "held": s["ci95"][0] > 0, "numbers": f"rho {mean_text(s)}"})
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
        lines.append(f"| {label} | {mean_text(zero[name])} | {mean_text(mean[name])} |")
    both = mean_text(result["agreement"]["effect~effect_mean"])
    lines.append(f"| \\|zero effect\\| ~ \\|mean effect\\| | {both} | |")
    if result["gradient_minus_attention"] is not None:
        lines += ["", "Paired difference of the per-digit rhos, (\\|gradient\\| ~ \\|effect\\|) - (attention ~ "
                      f"\\|effect\\|): {mean_text(result['gradient_minus_attention'])}."]
    lines += ["", f"One {unit} zero-ablated per digit (Serrano & Smith in kind); the decision is the predicted "
                  f"class; {LEVEL_NOTE}, flip rates with Wilson intervals:", ""]
    lines += check_table(result["check"], selector_labels(result["check"], "on the ink"), "p_true")
    lines += ["", paired_line(result["check"], "digit"), ""]
    labels = {"attention": "by attention", "gradient": "by \\|gradient\\|", "effect": "by \\|effect\\|"}
    labels = {k: v for k, v in labels.items() if k in result["pruning"]["accuracy"]["curves"]}
    lines += [f"Pruning ({unit}s zero-ablated cumulatively, least important first); accuracy:", ""]
    lines += pruning_table(result["pruning"]["accuracy"], n_units, labels, f"{unit}s removed")
    lines += ["", "Mean true-class probability:", ""]
    lines += pruning_table(result["pruning"]["probability"], n_units, labels, f"{unit}s removed")
    lines += ["", "Claims:", ""] + claim_lines(claims(result))
    return lines
