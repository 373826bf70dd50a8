"""Interventions on lesson 06's attention model: is its "pair head" what lets it reach beyond a CNN's field?

The model (:func:`explorer.models.long_range.load_long_range_model`, the shipped seed) tells which of two marked
tokens ``d`` positions apart comes first. ``long_range.json`` names, per training seed, the *pair head*: the head in
which the later marked token puts the most attention on its partner. The CNN of the lesson has a receptive field of
11 positions and is at chance from ``d = 11`` on; here we ask whether removing the pair head alone sends the
attention model to chance there too.

Measured on the fixed test set (:func:`explorer.models.long_range.evaluation_set`, 256 sequences at each of 20
distances from 1 to 256), heads at ``blocks.*.attn.hook_z`` (2 layers x 2 heads), a few hundred inputs per forward
pass (the library's ``chunk``):

* accuracy per distance with the pair head, and every other head, zero- and mean-ablated alone, and with every head
  *but* the pair head ablated; 95 % Wilson intervals over the test inputs
  (:func:`~explorer.analysis.intervention_study.common.binomial_summary`);
* three numbers per head on the first ``max(64, n / 20)`` inputs of each distance: the attention of the later marked
  token on its partner (``hook_pattern[second, first]``), the gradient of the logit difference (true - other label)
  w.r.t. a multiplicative head mask at 1, and the measured change of the logit difference when the head is
  zero-ablated; their per-input rank agreement (:func:`~explorer.analysis.intervention_study.common.three_numbers`);
* pruning curves (accuracy vs heads removed) on the same inputs, by each score and in 3 random orders.

Accuracy is read from the logit difference: an input is correct when it is positive (for two classes that is the
argmax; an exact tie, which does not occur here, would count as wrong).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from explorer._checks import check_int
from explorer._modes import evaluating
from explorer.analysis.intervention import (
    ablation_sweep, accuracy, gradient_importance, logit_difference, mean_ablation, run_with_edits, unit_hooks,
    unit_means, zero_ablation,
)
from explorer.analysis.intervention_study.common import (
    Laps, DIGITS, LEVEL_NOTE, RANDOM_ORDERS, WEAK, WEAK_BELOW, binomial_summary, metadata, percent, pruning_intervals,
    pruning_study, rho_text, rounded, stored, three_numbers,
)
from explorer.data.sequences import SequenceBatch, log_uniform_distances, long_range_batch
from explorer.hooks import record

__all__ = ["KEYS", "HOOKS", "CNN_FIELD", "run", "section", "claims", "head_label", "partner_attention",
           "accuracy_table", "subset_indices", "reference_batch"]

KEYS = ("long_range",)
HOOKS = "blocks.*.attn.hook_z"  # [batch, head, query, head_dim] per layer
CNN_FIELD = 11  # receptive field of the lesson's CNN: d >= 11 is beyond it
FAILED_BELOW = 0.6  # the model card's thresholds: a mean accuracy under 60 % counts as failed ...
SOLVED_FROM = 0.9  # ... and 90 % or more as solved
LOOKS_AT = 0.25  # a head "looks at the partner" when the later token's mean weight on it is at least this
MIN_PER_DISTANCE = 64  # the model card's attention statistics use the first 64 test inputs of each distance
REFERENCE_SIZE = 512  # mean ablation: mean over a batch of the training distribution ...
REFERENCE_SEED = 4242  # ... drawn with this seed (the test set uses 1000 + i, training the run's seed)
CHUNK = 512  # inputs per forward pass of the ablations (sdpa path)
PRUNING_CHUNK = 128
GRADIENT_CHUNK = 256
PATTERN_CHUNK = 32  # recording hook_pattern materialises [chunk, head, 320, 320] per layer


# --- statistics -------------------------------------------------------------------------------------------------


def accuracy_table(correct: torch.Tensor, distance: torch.Tensor, predicted: torch.Tensor) -> dict[str, Any]:
    """Accuracy per distance, within the CNN's field (``d < 11``) and beyond it.

    Args:
        correct: ``[input]`` 0/1 (or bool), 1 where the model is right.
        distance: ``[input]`` distance of each input's pair.
        predicted: ``[input]`` the predicted label (0/1): its mean shows a model that answers one class for all.

    Returns:
        ``{"by_distance": {str(d): summary}, "within_field": summary, "beyond_field": summary}``, each a
        :func:`binomial_summary`; the last two also hold ``"predicts_one"``, the share of inputs predicted 1.
    """
    if not correct.shape == distance.shape == predicted.shape or correct.ndim != 1:
        raise ValueError(f"correct, distance and predicted must be [input] of one length, got "
                         f"{tuple(correct.shape)}, {tuple(distance.shape)} and {tuple(predicted.shape)}")
    hits = correct.bool()
    out: dict[str, Any] = {"by_distance": {str(d): binomial_summary(hits[distance == d])
                                           for d in distance.unique().tolist()}}
    for part, sel in (("within_field", distance < CNN_FIELD), ("beyond_field", distance >= CNN_FIELD)):
        out[part] = {**binomial_summary(hits[sel]), "predicts_one": float(predicted[sel].double().mean())}
    return out


# --- measurements ------------------------------------------------------------------------------------------------


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)  # (batch, 2) logits


def _margin(labels: torch.Tensor) -> Callable[[Any], torch.Tensor]:
    """Metric: logit of the true label minus the other's, per input."""
    return logit_difference(labels, 1 - labels)


def head_label(layer: int, head: int) -> str:
    """``"L1H2"``: layers and heads counted from 1, as in the model card."""
    return f"L{layer + 1}H{head + 1}"


def subset_indices(distance: torch.Tensor, per_distance: int) -> torch.Tensor:
    """Indices of the first ``per_distance`` inputs of each distance (sorted), int64 ``[k]``."""
    check_int("per_distance", per_distance, 1)
    keep = [torch.nonzero(distance == d).flatten()[:per_distance] for d in distance.unique()]
    return torch.cat(keep).sort().values


def partner_attention(model: nn.Module, data: SequenceBatch, chunk: int = PATTERN_CHUNK) -> torch.Tensor:
    """Attention of the later marked token on the earlier one, per layer and head: ``[input, layer, head]``.

    Read from ``blocks.{i}.attn.hook_pattern[input, head, second, first]`` (recording routes the layers to the
    materialising path, so ``chunk`` inputs at a time).
    """
    check_int("chunk", chunk, 1)
    names = [name.replace("hook_z", "hook_pattern") for name in _hook_names(model)]
    rows, out = torch.arange(len(data)), []
    with evaluating(model), torch.no_grad():
        for start in range(0, len(data), chunk):
            part = slice(start, start + chunk)
            with record(model, names) as trace:
                model(data.inputs[part])
            r, first, second = rows[part] - start, data.first[part], data.second[part]
            layers = [trace[name][r, :, second, first] for name in names]  # (chunk, head) each
            out.append(torch.stack(layers, dim=1))  # (chunk, layer, head)
    return torch.cat(out).double()


def _hook_names(model: nn.Module) -> list[str]:
    """The unit hooks ``blocks.{i}.attn.hook_z`` in model order (the ``layer`` axis of every sweep)."""
    return [hp.name for hp in unit_hooks(model, HOOKS)]


def _select(data: SequenceBatch, index: torch.Tensor) -> SequenceBatch:
    return SequenceBatch(data.inputs[index], data.tokens[index], data.labels[index], data.first[index],
                         data.distance[index], data.vocab)


def reference_batch() -> SequenceBatch:
    """The mean-ablation reference: :data:`REFERENCE_SIZE` sequences of the training distribution (log-uniform
    distances on 1..256), seed :data:`REFERENCE_SEED`."""
    generator = torch.Generator().manual_seed(REFERENCE_SEED)
    return long_range_batch(log_uniform_distances(REFERENCE_SIZE, generator=generator), generator=generator)


# --- the study ---------------------------------------------------------------------------------------------------


def run(key: str, n: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the study on the shipped attention model; returns the JSON (see the module docstring).

    Args:
        key: ``"long_range"``.
        n: the least number of inputs for the three numbers and the pruning curves (at least 64 per distance are
            used; the ablation accuracies use the whole test set).
        log: progress messages.

    Returns:
        A JSON-ready dict.
    """
    from explorer.models.long_range import evaluation_set, load_long_range, load_long_range_model

    if key not in KEYS:
        raise ValueError(f"key must be one of {KEYS}, got {key!r}")
    check_int("n", n, 2)
    lap = Laps()
    model, entry = load_long_range_model("attention")
    results = load_long_range()
    seed = entry["weights_seed"]
    pair = tuple(results["summary"]["attention"]["pair_head"]["heads"][str(seed)])  # (layer, head), from 0
    data = evaluation_set()
    reference = reference_batch().inputs
    names = _hook_names(model)
    n_heads = model.config.heads
    labels = [head_label(layer, head) for layer in range(len(names)) for head in range(n_heads)]
    lap("load")

    log(f"long_range: ablating each head of {len(data)} test inputs (zero, mean)")
    margin = _margin(data.labels)
    sweep = ablation_sweep(model, _forward, data.inputs, margin, HOOKS, "zero", chunk=CHUNK)
    zero, unablated = sweep.per_input, sweep.baseline
    means = unit_means(model, _forward, reference, HOOKS)
    mean = ablation_sweep(model, _forward, data.inputs, margin, HOOKS, "mean", means=means, chunk=CHUNK).per_input
    others = {names[layer]: [h for h in range(n_heads) if (layer, h) != pair] for layer in range(len(names))}
    others = {name: heads for name, heads in others.items() if heads}
    all_but_pair = {how: margin(run_with_edits(model, _forward, data.inputs, edits, chunk=CHUNK)).double()
                    for how, edits in (("zero", zero_ablation(model, others)),
                                       ("mean", mean_ablation(model, others, means)))}
    lap("ablation")

    per_distance = min(256, max(MIN_PER_DISTANCE, math.ceil(n / len(data.distance.unique()))))
    index = subset_indices(data.distance, per_distance)
    subset = _select(data, index)
    log(f"long_range: attention, gradients and pruning on {len(index)} inputs ({per_distance} per distance)")
    # per-input values are rounded to what the JSON stores before anything is summarised, so that every summary is
    # reproducible from the file
    attention = stored(partner_attention(model, subset))  # (input, layer, head)
    lap("attention")
    gradient = stored(gradient_importance(model, _forward, subset.inputs, _margin(subset.labels), HOOKS,
                                          chunk=GRADIENT_CHUNK).per_input)
    lap("gradient")
    effect = stored(zero[index] - unablated[index, None, None])  # (input, layer, head)
    agreement = three_numbers(effect, gradient, attention)

    scores = {"attention": attention.mean(0), "gradient": gradient.abs().mean(0), "effect": effect.abs().mean(0)}
    pruning = pruning_intervals(pruning_study(model, _forward, subset.inputs, accuracy(subset.labels), HOOKS, scores,
                                              chunk=PRUNING_CHUNK), len(subset))
    lap("pruning")

    distance, truth = data.distance, data.labels
    correct = {"unablated": unablated > 0, "zero": zero > 0, "mean": mean > 0,
               "all_but_pair": {how: margin > 0 for how, margin in all_but_pair.items()}}

    def table(hits: torch.Tensor) -> dict[str, Any]:
        return accuracy_table(hits, distance, torch.where(hits, truth, 1 - truth))

    accuracy_tables = {
        "unablated": table(correct["unablated"]),
        **{f"{how} {labels[layer * n_heads + head]}": table(correct[how][:, layer, head])
           for how in ("zero", "mean") for layer in range(len(names)) for head in range(n_heads)},
        **{f"{how} all but pair": table(hits) for how, hits in correct["all_but_pair"].items()},
    }
    measured_pair = np.unravel_index(int(attention.mean(0).argmax()), attention.shape[1:])
    result = {
        "model": "long_range",
        "setup": {
            "model": "explorer.train.long_range.load_long_range_model('attention')",
            "weights_seed": seed, "trained_seeds": results["seeds"],
            "shipped_weights": sorted(p.name for p in Path(_assets()).glob("attention*.safetensors")),
            "pair_head": list(pair), "pair_head_label": head_label(*pair),
            "pair_head_source": "long_range.json summary.attention.pair_head.heads (mean partner weight)",
            "measured_pair_head": [int(measured_pair[0]), int(measured_pair[1])],
            "heads": labels, "hooks": names, "cnn_field": CNN_FIELD,
            "test_set": "explorer.train.long_range.evaluation_set(): 256 inputs at each distance, seed 1000 + i",
            "inputs": len(data), "distances": sorted(distance.unique().tolist()),
            "metric": "logit difference, true label minus the other (accuracy: > 0)",
            "mean_reference": f"{REFERENCE_SIZE} sequences of the training distribution, seed {REFERENCE_SEED}, "
                              "mean per position (explorer.analysis.intervention.unit_means)",
            "accuracy_interval": "95 % Wilson interval over the test inputs (one model: inputs are the only "
                                 "sample)",
            "subset_per_distance": per_distance, "subset_inputs": len(index),
            "agreement_interval": LEVEL_NOTE, "random_orders": RANDOM_ORDERS,
        },
        "data": {"distance": distance.tolist(), "label": data.labels.tolist(), "first": data.first.tolist()},
        "ablation": {
            "correct": {k: _ints(v) for k, v in correct.items()},
            "accuracy": accuracy_tables,
        },
        "three_numbers": {"index": index.tolist(), "margin": rounded(unablated[index], DIGITS),
                          "attention": attention.tolist(), "gradient": gradient.tolist(), "effect": effect.tolist(),
                          "means": {"attention": rounded(attention.mean(0)), "gradient": rounded(gradient.mean(0)),
                                    "abs_gradient": rounded(scores["gradient"]), "effect": rounded(effect.mean(0)),
                                    "abs_effect": rounded(scores["effect"])}},
        "agreement": agreement,
        "pruning": pruning,
        "seconds": {k: round(v, 1) for k, v in lap.seconds.items()},
        "metadata": metadata("python -m explorer.analysis.intervention_study --models long_range"),
    }
    result["claims"] = claims(result)
    return result


def _ints(value: torch.Tensor | dict[str, torch.Tensor]) -> Any:
    """Bool tensors (or a dict of them) as nested lists of 0/1 (short in the JSON)."""
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    return value.long().tolist()


def _assets() -> Path:
    from explorer.models.long_range import default_long_range_dir

    return default_long_range_dir()


# --- claims and report -------------------------------------------------------------------------------------------


def _at_chance(table: dict[str, Any]) -> tuple[bool, str]:
    """Beyond the field at chance: the pooled interval (d >= 11) includes 50 % and no distance reaches
    :data:`FAILED_BELOW` (the model card's failure threshold); with the evidence."""
    beyond = {d: s for d, s in table["by_distance"].items() if int(d) >= CNN_FIELD}
    inside = [d for d, s in beyond.items() if s["chance_in_ci"]]
    best = max(beyond, key=lambda d: beyond[d]["accuracy"])
    pooled = table["beyond_field"]
    held = pooled["chance_in_ci"] and beyond[best]["accuracy"] < FAILED_BELOW
    return held, (f"d >= {CNN_FIELD} pooled {percent(pooled)} % (predicts label 1 for "
                  f"{100 * pooled['predicts_one']:.0f} % of inputs); 50 % inside the interval at {len(inside)} of "
                  f"{len(beyond)} distances (a guesser: about 95 %); best distance d = {best}: "
                  f"{percent(beyond[best])} %")


def claims(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The claims tested, each ``{"claim", "held", "evidence"}``, from the summaries in ``result``.

    Thresholds are the model card's: below 60 % counts as failed, at least 90 % as solved.
    """
    setup, tables = result["setup"], result["ablation"]["accuracy"]
    pair, heads = setup["pair_head_label"], setup["heads"]
    beyond = {name: t["beyond_field"] for name, t in tables.items()}
    out = []
    for how in ("zero", "mean"):
        held, evidence = _at_chance(tables[f"{how} {pair}"])
        out.append({"claim": f"{how}-ablating the pair head {pair} alone sends accuracy beyond the CNN's field "
                             f"(d >= {CNN_FIELD}) to chance (pooled 95 % interval includes 50 %, no distance at "
                             f"{100 * FAILED_BELOW:.0f} % or more)", "held": held, "evidence": evidence})
    for how in ("zero", "mean"):
        within = tables[f"{how} {pair}"]["within_field"]
        out.append({"claim": f"with the pair head {how}-ablated, distances inside the CNN's field (d < {CNN_FIELD}) "
                             f"stay solved (>= {100 * SOLVED_FROM:.0f} %), as they are for the CNN",
                    "held": within["accuracy"] >= SOLVED_FROM,
                    "evidence": f"d < {CNN_FIELD}: {percent(within)} % (predicts label 1 for "
                                f"{100 * within['predicts_one']:.0f} % of inputs; unablated "
                                f"{percent(tables['unablated']['within_field'])} %)"})
    others = [h for h in heads if h != pair]
    parts, held = [], True
    for how in ("zero", "mean"):
        worst = min(others, key=lambda h: beyond[f"{how} {h}"]["accuracy"])
        held &= beyond[f"{how} {pair}"]["ci95"][1] < beyond[f"{how} {worst}"]["ci95"][0]
        parts.append(f"{how}: {pair} ablated {percent(beyond[f'{how} {pair}'])} %, the most harmful other head "
                     f"{worst} {percent(beyond[f'{how} {worst}'])} %")
    out.append({"claim": "the pair head matters more than any other single head: ablating it alone lowers accuracy "
                         f"beyond the field (d >= {CNN_FIELD}) more than ablating any other head, zero and mean "
                         "(intervals apart)", "held": held, "evidence": f"d >= {CNN_FIELD}: " + "; ".join(parts)})
    for how in ("zero", "mean"):
        kept = beyond[f"{how} all but pair"]
        out.append({"claim": f"the pair head alone suffices: with every other head {how}-ablated, accuracy beyond "
                             f"the field stays solved (>= {100 * SOLVED_FROM:.0f} %)",
                    "held": kept["accuracy"] >= SOLVED_FROM,
                    "evidence": f"d >= {CNN_FIELD}: {percent(kept)} % (unablated {percent(beyond['unablated'])} %)"})
    attention = [v for row in result["three_numbers"]["means"]["attention"] for v in row]
    looking = [h for h, a in zip(heads, attention) if a >= LOOKS_AT]
    needed = {h: beyond[f"zero {h}"] for h in looking}
    out.append({"claim": f"attention marks the heads the model needs: every head whose later marked token puts a "
                         f"mean weight >= {LOOKS_AT} on its partner is needed (zero-ablating it alone drops accuracy "
                         f"beyond the field below {100 * SOLVED_FROM:.0f} %)",
                "held": all(s["accuracy"] < SOLVED_FROM for s in needed.values()),
                "evidence": "; ".join(f"{h}: attention on partner {attention[heads.index(h)]:.3f}, ablated "
                                      f"{percent(s)} %" for h, s in needed.items())})
    agree = result["agreement"]
    for name in ("attention~effect", "gradient~effect"):
        stat = agree[name]
        first = "attention" if name.startswith("attention") else "|gradient|"
        out.append({"claim": f"per input, the heads rank alike by {first} and by |ablation effect| (Spearman's rho, "
                             "95 % interval above 0)", "held": stat["ci95"][0] > 0,
                    "evidence": f"rho {rho_text(stat)} over {stat['n']} inputs ({stat['undefined']} undefined)"
                                f"{WEAK if abs(stat['mean']) < WEAK_BELOW else ''}"})
    curves = result["pruning"]["curves"]
    area = {k: float(np.mean(v)) for k, v in curves.items()}
    randoms = [k for k in curves if k.startswith("random_")]
    out.append({"claim": "pruning least-attended heads first keeps accuracy higher than pruning at random (mean "
                         "accuracy over the curve above every random order's)",
                "held": area["attention"] > max(area[k] for k in randoms),
                "evidence": "mean accuracy over 0..4 heads removed: " + ", ".join(
                    f"{k} {100 * area[k]:.1f} %" for k in curves)})
    return out


def section(key: str, result: dict[str, Any]) -> list[str]:
    """The model's part of REPORT.md: setup, ablation tables, three numbers, agreement, pruning, claims."""
    if key not in KEYS:
        raise ValueError(f"key must be one of {KEYS}, got {key!r}")
    setup, tables = result["setup"], result["ablation"]["accuracy"]
    pair, heads = setup["pair_head_label"], setup["heads"]
    measured = head_label(*setup["measured_pair_head"])
    lines = [f"## {key}: lesson 06 attention model", "",
             f"Shipped seed {setup['weights_seed']} only (training seeds {setup['trained_seeds']}; "
             f"`assets/long_range/` ships {', '.join(setup['shipped_weights'])}): every number below is one "
             "trained model, and the intervals are over test inputs, not over training runs. "
             f"Test set: {setup['inputs']} inputs, 256 at each of {len(setup['distances'])} distances 1..256. "
             f"Heads `{HOOKS}` (layers, heads counted from 1). Pair head {pair} (from `long_range.json`; the largest "
             f"mean attention on the partner here: {measured}). Mean ablation: {setup['mean_reference']}. "
             f"Accuracy: {setup['accuracy_interval']}, in %.", ""]
    for how in ("zero", "mean"):
        cols = [f"{how} {h}" for h in heads] + [f"{how} all but pair"]
        lines += [f"**Accuracy per distance, {how} ablation** (95 % Wilson interval; CNN field {CNN_FIELD})", "",
                  "| d | unablated | " + " | ".join(c.replace(pair, pair + " (pair)") for c in cols) + " |",
                  "|---|" + "---|" * (len(cols) + 1)]
        for d in tables["unablated"]["by_distance"]:
            lines.append(f"| {d} | " + " | ".join(percent(tables[c]["by_distance"][d]) for c in ["unablated"] + cols)
                         + " |")
        for part, name in (("within_field", f"d < {CNN_FIELD}"), ("beyond_field", f"d ≥ {CNN_FIELD}")):
            lines.append(f"| **{name}** | " + " | ".join(percent(tables[c][part]) for c in ["unablated"] + cols) + " |")
            lines.append(f"| {name}: predicts label 1 | " + " | ".join(
                f"{100 * tables[c][part]['predicts_one']:.1f}" for c in ["unablated"] + cols) + " |")
        lines.append("")
    means = result["three_numbers"]["means"]
    flat = {k: [v for row in means[k] for v in row] for k in means}
    lines += [f"**Three numbers per head** (mean over {setup['subset_inputs']} inputs, "
              f"{setup['subset_per_distance']} per distance; margin = logit difference)", "",
              "| head | attention on partner | d margin / d xi | mean abs gradient | zero-ablation effect on margin "
              "| mean abs effect |", "|---|---|---|---|---|---|"]
    for i, h in enumerate(heads):
        lines.append(f"| {h} | {flat['attention'][i]:.3f} | {flat['gradient'][i]:+.3f} | "
                     f"{flat['abs_gradient'][i]:.3f} | {flat['effect'][i]:+.3f} | {flat['abs_effect'][i]:.3f} |")
    lines += ["", f"**Rank agreement over the {len(heads)} heads**, per input, {LEVEL_NOTE}", "",
              "| pair | Spearman rho | inputs | undefined (constant) |", "|---|---|---|---|"]
    for name, stat in result["agreement"].items():
        lines.append(f"| {name} | {rho_text(stat)} | {stat['n']} | {stat['undefined']} |")
    pruning = result["pruning"]
    lines += ["", f"**Pruning**: accuracy (%) on the {setup['subset_inputs']} inputs vs heads zero-ablated, least "
              f"important first by each score, and {setup['random_orders']} random orders (95 % Wilson intervals "
              "in the JSON)", "",
              "| order | " + " | ".join(str(k) for k in pruning["steps"]) + " | removal order |",
              "|---|" + "---|" * (len(pruning["steps"]) + 1)]
    for order, curve in pruning["curves"].items():
        removal = ", ".join(head_label(*u) for u in pruning["orders"][order])
        lines.append(f"| {order} | " + " | ".join(f"{100 * v:.1f}" for v in curve) + f" | {removal} |")
    lines += ["", "**Claims**", ""]
    for c in result["claims"]:
        lines.append(f"- {'**held**' if c['held'] else '**did not hold**'}: {c['claim']}. {c['evidence']}.")
    stages = ", ".join(f"{k} {v} s" for k, v in result["seconds"].items())
    lines += ["", f"Time: {result.get('seconds_total', sum(result['seconds'].values()))} s on "
              f"{result['metadata']['threads']} thread(s) ({stages})."]
    return lines
