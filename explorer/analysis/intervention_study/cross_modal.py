"""Interventions on the cross-modal shapes model: do the heads that look at the queried object carry the answer?

The model (:func:`explorer.models.load_cross_modal`) answers "what colour is the triangle" or "what shape is the red
object" about a generated scene; the image reaches the answer only through cross-attention from the text tokens to
12 x 12 image patches, and the answer is read from text token 0 (:data:`~explorer.models.cross_modal.ANSWER_TOKEN`).
On the model card's held-out scenes (``sample_batch(1000, seed=1012345)``; at least ``n``), per cross-attention head
``blocks.*.cross_attn.hook_z`` (2 layers x 4 heads):

* **localisation** (the head's attention): the share of the answer token's cross-attention on the queried object,
  ``sum_p a_p * share_p`` with ``share_p`` the fraction of patch ``p``'s pixels on the object
  (:func:`explorer.analysis.localisation.patch_object_share`, the mass score of :func:`attention_localisation` for
  one head), and the pointing game (argmax patch more than half on the object);
* **gradient importance**: ``d p(correct answer) / d xi`` of a multiplicative head mask at 1;
* **ablation effect**: the change of ``p(correct answer)`` when the head alone is zero-ablated, and the accuracy
  with the head zero- or mean-ablated; with the layer-mean localisation of both layers after the ablation (a head of
  layer 1 can move where layer 2 looks).

Then the per-input rank agreement of the three numbers, pruning curves (accuracy vs cross-attention heads removed, by
each score and 3 random orders) and the claim that ablating the heads that localise best hurts accuracy most
(Spearman over heads with a bootstrap interval over scenes). The self-attention heads' ablation accuracies are a
contrast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from explorer._checks import check_int, check_tensor
from explorer.analysis.agreement import interval, spearman
from explorer.analysis.intervention import (
    ablation_sweep, accuracy, class_probability, gradient_importance, run_with_edits, unit_hooks, unit_means,
    zero_ablation,
)
from explorer.analysis.intervention_study.common import (
    Laps, DIGITS, LEVEL, LEVEL_NOTE, RANDOM_ORDERS, WEAK, WEAK_BELOW, binomial_summary, mean_text, metadata, percent,
    pruning_intervals, pruning_study, rho_text, rounded, stored, three_numbers,
)
from explorer.analysis.localisation import POINTING_SHARE, patch_object_share
from explorer.data.shapes import COLOURS, SHAPES, Batch, sample_batch
from explorer.hooks import record
from explorer.models.cross_modal import ANSWER_TOKEN

__all__ = ["KEYS", "CROSS", "SELF", "run", "section", "head_localisation", "bootstrap_rho", "chance_accuracy",
           "claims", "head_label"]

KEYS = ("cross_modal",)
CROSS = "blocks.*.cross_attn.hook_z"  # [batch, head, token, head_dim] per layer
SELF = "blocks.*.self_attn.hook_z"
BOOTSTRAP = 1000  # resamples of the scenes for the interval of the across-head rank correlation
BOOTSTRAP_SEED = 0
CHUNK = 100  # scenes per forward pass: about twice as fast as 1000 at once on one thread
REFERENCE_SCENES = 200  # mean ablation: mean over the first 200 scenes, per token position
OPPOSITE = " (interval below 0: the better a head localises, the less its ablation hurts)"


def _forward(model: nn.Module, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return model(*inputs)  # (batch, answers) logits


def head_label(layer: int, head: int) -> str:
    """``"L1H2"``: layers and heads counted from 1."""
    return f"L{layer + 1}H{head + 1}"


def head_localisation(pattern: torch.Tensor, target_masks: torch.Tensor, grid: tuple[int, int]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mass and pointing hit of each head's answer-token attention on the queried object.

    Args:
        pattern: ``[batch, layer, head, patch]`` cross-attention of the answer token (rows sum to 1).
        target_masks: ``[batch, height, width]`` bool, the queried object.
        grid: ``(rows, cols)`` of the patches.

    Returns:
        ``(mass, hit)``, each float64 ``[batch, layer, head]``: ``sum_p a_p * share_p``, and 1.0 where the argmax
        patch (first on ties) has more than :data:`POINTING_SHARE` of its pixels on the object.
    """
    check_tensor("pattern", pattern, "[batch, layer, head, patch]", dtype="float", ndim=4)
    share = patch_object_share(target_masks, grid)  # (batch, patch)
    if share.shape != (pattern.shape[0], pattern.shape[-1]):
        raise ValueError(f"pattern {tuple(pattern.shape)} does not fit target_masks and grid {grid} "
                         f"(batch, patch) = {tuple(share.shape)}")
    share = share[:, None, None, :]  # (batch, 1, 1, patch)
    mass = (pattern.double() * share).sum(-1)  # (batch, layer, head)
    hit = (share > POINTING_SHARE).expand_as(pattern).gather(-1, pattern.argmax(-1, keepdim=True))[..., 0]
    return mass, hit.double()


def _patterns(model: nn.Module, scenes: Batch, edits: dict[str, Any] | None = None) -> torch.Tensor:
    """The answer token's cross-attention ``[batch, layer, head, patch]``, with ``edits`` applied if given."""
    names = [hp.name.replace("hook_z", "hook_pattern") for hp in unit_hooks(model, CROSS)]
    with record(model, names) as trace:  # one firing per layer and chunk
        run_with_edits(model, _forward, (scenes.images, scenes.query_ids), edits, chunk=CHUNK)
    return torch.stack([torch.cat(trace.history(name))[:, :, ANSWER_TOKEN] for name in names], dim=1)


def chance_accuracy(answers: torch.Tensor) -> float:
    """Accuracy of a guesser that knows the question kind: 1/3 for a shape answer, 1/4 for a colour, averaged."""
    check_tensor("answers", answers, "[batch] answer indices", dtype="int", ndim=1)
    is_shape = answers < len(SHAPES)
    return float(torch.where(is_shape, 1 / len(SHAPES), 1 / len(COLOURS)).double().mean())


def bootstrap_rho(localisation: torch.Tensor, drop: torch.Tensor, resamples: int = BOOTSTRAP,
                  seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Spearman's rho over heads between mean localisation and mean drop, with a bootstrap interval over scenes.

    Args:
        localisation: ``[scene, unit]`` per-scene localisation of each head.
        drop: ``[scene, unit]`` per-scene harm of ablating each head (e.g. correct before - correct after).
        resamples: bootstrap resamples (scenes drawn with replacement, ``numpy.random.default_rng(seed)``).
        seed: the resampling seed.

    Returns:
        ``{"rho", "ci95" (percentile interval), "resamples", "undefined" (resamples with a constant vector)}``.
    """
    check_tensor("localisation", localisation, "[scene, unit]", dtype="float", ndim=2)
    check_tensor("drop", drop, "[scene, unit]", dtype="float", ndim=2)
    if localisation.shape != drop.shape:
        raise ValueError(f"localisation and drop must have one shape, got {tuple(localisation.shape)} and "
                         f"{tuple(drop.shape)}")
    check_int("resamples", resamples, 1)
    x, y = localisation.double().numpy(), drop.double().numpy()
    rng = np.random.default_rng(check_int("seed", seed, 0))
    rhos = []
    for _ in range(resamples):
        pick = rng.integers(0, x.shape[0], x.shape[0])
        rhos.append(spearman(x[pick].mean(0), y[pick].mean(0)))
    defined = np.asarray([r for r in rhos if not np.isnan(r)])
    low, high = (np.quantile(defined, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]).tolist() if defined.size
                 else [float("nan")] * 2)
    return {"rho": spearman(x.mean(0), y.mean(0)), "ci95": [low, high], "resamples": resamples,
            "undefined": resamples - int(defined.size)}


def run(key: str, n: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the study on the shipped cross-modal model; returns the JSON (see the module docstring).

    Args:
        key: ``"cross_modal"``.
        n: the least number of scenes (the model card's 1000 held-out scenes are used when ``n`` is smaller).
        log: progress messages.

    Returns:
        A JSON-ready dict.
    """
    from explorer.models import load_cross_modal

    if key not in KEYS:
        raise ValueError(f"key must be one of {KEYS}, got {key!r}")
    check_int("n", n, 2)
    lap = Laps()
    model, card = load_cross_modal()
    size = max(n, card["heldout_scenes"])
    scenes = sample_batch(size, seed=card["heldout_seed"], size=model.config.image_size)
    answers = scenes.answers
    names = [hp.name for hp in unit_hooks(model, CROSS)]
    n_heads = model.config.heads
    labels = [head_label(layer, head) for layer in range(len(names)) for head in range(n_heads)]
    lap("load")

    log(f"cross_modal: attention, gradients and ablations on {size} scenes")
    mass, hit = head_localisation(_patterns(model, scenes), scenes.target_masks, model.grid)  # (scene, layer, head)
    mass = stored(mass)  # rounded as the JSON keeps it, before any summary
    lap("attention")
    inputs = (scenes.images, scenes.query_ids)
    probability, correct = class_probability(answers), accuracy(answers)
    gradient = stored(gradient_importance(model, _forward, inputs, probability, CROSS, chunk=CHUNK).per_input)
    lap("gradient")
    means = unit_means(model, _forward, (scenes.images[:REFERENCE_SCENES], scenes.query_ids[:REFERENCE_SCENES]), CROSS)
    prob = ablation_sweep(model, _forward, inputs, probability, CROSS, "zero", chunk=CHUNK)
    hits = {"zero": ablation_sweep(model, _forward, inputs, correct, CROSS, "zero", chunk=CHUNK),
            "mean": ablation_sweep(model, _forward, inputs, correct, CROSS, "mean", means=means, chunk=CHUNK)}
    self_hits = ablation_sweep(model, _forward, inputs, correct, SELF, "zero", chunk=CHUNK).per_input
    effect = stored(prob.per_input - prob.baseline[:, None, None])  # (scene, layer, head)
    # where the last layer looks once a head is ablated (a head cannot change its own or an earlier layer's pattern)
    after = []
    for layer in range(len(names)):
        for head in range(n_heads):
            patterns = _patterns(model, scenes, zero_ablation(model, {names[layer]: [head]}))
            after.append(head_localisation(patterns, scenes.target_masks, model.grid)[0][:, -1].mean(-1))
    after = stored(torch.stack(after, dim=1))  # (scene, unit)
    lap("ablation")

    scores = {"attention": mass.mean(0), "gradient": gradient.abs().mean(0), "effect": effect.abs().mean(0)}
    pruning = pruning_intervals(pruning_study(model, _forward, inputs, correct, CROSS, scores, chunk=CHUNK), size)
    lap("pruning")

    base = hits["zero"].baseline  # (scene,) 0/1
    flat = {"mass": mass.flatten(1), "hit": hit.flatten(1), "effect": effect.flatten(1),
            **{how: sweep.per_input.flatten(1) for how, sweep in hits.items()}}  # (scene, unit) each
    drops = {how: base[:, None] - flat[how] for how in hits}  # (scene, unit)
    heads = {}
    for u, label in enumerate(labels):
        heads[label] = {
            "localisation": interval(flat["mass"][:, u].tolist()),
            "pointing": binomial_summary(flat["hit"][:, u]),
            "gradient": interval(gradient.flatten(1)[:, u].tolist()),
            "effect": interval(flat["effect"][:, u].tolist()),
            "accuracy_zero": binomial_summary(flat["zero"][:, u]),
            "accuracy_mean": binomial_summary(flat["mean"][:, u]),
            "last_layer_localisation_after": interval(after[:, u].tolist()),
        }
    self_heads = {head_label(layer, head): binomial_summary(self_hits[:, layer, head])
                  for layer in range(self_hits.shape[1]) for head in range(n_heads)}
    result = {
        "model": "cross_modal",
        "setup": {
            "model": "explorer.models.load_cross_modal()", "seed": card["seed"],
            "scenes": size, "scene_seed": card["heldout_seed"],
            "data": f"explorer.data.shapes.sample_batch({size}, seed={card['heldout_seed']}) (the model card's "
                    "held-out scenes)",
            "heads": labels, "hooks": names, "self_hooks": [hp.name for hp in unit_hooks(model, SELF)],
            "metric": "softmax probability of the correct answer",
            "localisation": "answer token's cross-attention share on the queried object (mass) and pointing game",
            "mean_reference": f"the first {REFERENCE_SCENES} of the scenes, mean per token position "
                              "(explorer.analysis.intervention.unit_means)",
            "accuracy_interval": "95 % Wilson interval over scenes (one model)",
            "agreement_interval": LEVEL_NOTE, "random_orders": RANDOM_ORDERS,
            "bootstrap": f"{BOOTSTRAP} resamples of the scenes, numpy default_rng({BOOTSTRAP_SEED}), percentile",
            "card_localisation_by_layer": {k: v["mass"] for k, v in card["localisation_by_layer"].items()},
        },
        "data": {"answers": answers.tolist(), "texts": scenes.texts},
        "accuracy": {"unablated": binomial_summary(base), "chance": chance_accuracy(answers)},
        "localisation": [interval(mass[:, layer].mean(-1).tolist()) for layer in range(len(names))],
        "heads": heads,
        "self_heads": self_heads,
        "per_input": {
            "probability": rounded(prob.baseline, DIGITS), "correct": base.long().tolist(),
            "attention": mass.tolist(), "pointing": hit.long().tolist(), "gradient": gradient.tolist(),
            "effect": effect.tolist(),
            "correct_zero": hits["zero"].per_input.long().tolist(),
            "correct_mean": hits["mean"].per_input.long().tolist(),
            "self_correct_zero": self_hits.long().tolist(),
            "last_layer_localisation_after": after.tolist(),
        },
        "agreement": three_numbers(effect, gradient, mass),
        "localise_vs_harm": {"accuracy": bootstrap_rho(flat["mass"], drops["zero"]),
                             "probability": bootstrap_rho(flat["mass"], -flat["effect"]),
                             "accuracy_mean_ablation": bootstrap_rho(flat["mass"], drops["mean"])},
        "pruning": pruning,
        "seconds": {k: round(v, 1) for k, v in lap.seconds.items()},
        "metadata": metadata("python -m explorer.analysis.intervention_study --models cross_modal"),
    }
    result["localise_vs_harm"] = rounded(result["localise_vs_harm"])
    result["claims"] = claims(result)
    return result


# --- claims and report -------------------------------------------------------------------------------------------


def claims(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The claims tested, each ``{"claim", "held", "evidence"}``, from the summaries in ``result``."""
    heads, base = result["heads"], result["accuracy"]["unablated"]
    best = max(heads, key=lambda h: heads[h]["localisation"]["mean"])
    worst = min(heads, key=lambda h: heads[h]["accuracy_zero"]["accuracy"])
    out = []
    for kind, what in (("accuracy", "accuracy"), ("probability", "the probability of the correct answer")):
        stat = result["localise_vs_harm"][kind]
        out.append({
            "claim": f"ablating the heads that localise best hurts {what} most (Spearman's rho over the "
                     f"{len(heads)} cross-attention heads between localisation and the zero-ablation drop, 95 % "
                     "bootstrap interval above 0)",
            "held": stat["ci95"][0] is not None and stat["ci95"][0] > 0,
            "evidence": f"rho {stat['rho']:+.2f} [{stat['ci95'][0]:+.2f}, {stat['ci95'][1]:+.2f}]"
                        f"{OPPOSITE if stat['ci95'][1] is not None and stat['ci95'][1] < 0 else ''}; best-localising "
                        f"head {best} (mass {mean_text(heads[best]['localisation'])}) ablated: accuracy "
                        f"{percent(heads[best]['accuracy_zero'])} %; most harmful {worst} (mass "
                        f"{mean_text(heads[worst]['localisation'])}): {percent(heads[worst]['accuracy_zero'])} %; "
                        f"unablated {percent(base)} %"})
    out.append({"claim": "the best-localising head is the one whose ablation hurts accuracy most",
                "held": best == worst, "evidence": f"best-localising {best}, most harmful {worst}"})
    for name in ("attention~effect", "gradient~effect"):
        stat = result["agreement"][name]
        first = "attention on the object" if name.startswith("attention") else "|gradient|"
        out.append({"claim": f"per input, the heads rank alike by {first} and by |ablation effect| (Spearman's "
                             "rho, 95 % interval above 0)", "held": stat["ci95"][0] > 0,
                    "evidence": f"rho {rho_text(stat)} over {stat['n']} scenes ({stat['undefined']} undefined)"
                                f"{WEAK if abs(stat['mean']) < WEAK_BELOW else ''}"})
    pruning = result["pruning"]
    n = result["setup"]["scenes"]
    everything = pruning["curves"]["attention"][-1]
    low, high = pruning["ci95"]["attention"][-1]
    chance = result["accuracy"]["chance"]
    out.append({"claim": "the image reaches the answer only through cross-attention: with every cross-attention "
                         "head zero-ablated accuracy falls to chance (knowing the question kind; 95 % interval "
                         "includes it)", "held": low <= chance <= high,
                "evidence": f"{100 * everything:.1f} [{100 * low:.1f}, {100 * high:.1f}] % over {n} scenes; chance "
                            f"{100 * chance:.1f} %"})
    area = {k: float(np.mean(v)) for k, v in pruning["curves"].items()}
    randoms = [k for k in area if k.startswith("random_")]
    out.append({"claim": "pruning the least-localising heads first keeps accuracy higher than pruning at random "
                         "(mean accuracy over the curve above every random order's)",
                "held": area["attention"] > max(area[k] for k in randoms),
                "evidence": "mean accuracy over 0..8 heads removed: " + ", ".join(
                    f"{k} {100 * v:.1f} %" for k, v in area.items())})
    return out


def section(key: str, result: dict[str, Any]) -> list[str]:
    """The model's part of REPORT.md: setup, per-head table, agreement, pruning, claims."""
    if key not in KEYS:
        raise ValueError(f"key must be one of {KEYS}, got {key!r}")
    setup, heads = result["setup"], result["heads"]
    card = ", ".join(f"layer {i + 1} {v:.3f}" for i, v in enumerate(setup["card_localisation_by_layer"].values()))
    lines = [f"## {key}: cross-modal shapes model", "",
             f"Shipped model (seed {setup['seed']}, the only one trained), {setup['data']}; every number is one "
             f"trained model, intervals over scenes. Cross-attention heads `{CROSS}` (layers, heads counted from 1). "
             f"Localisation: {setup['localisation']} (model card, mean over heads: {card}). Gradient and effect: "
             f"{setup['metric']}. Mean ablation: {setup['mean_reference']}. Accuracy: {setup['accuracy_interval']}; "
             f"other numbers: {LEVEL_NOTE}.", "",
             f"Unablated accuracy {percent(result['accuracy']['unablated'])} %; chance (knowing the question kind) "
             f"{100 * result['accuracy']['chance']:.1f} %. Localisation of the unablated model (mean over heads): "
             + ", ".join(f"layer {i + 1} {mean_text(stat)}" for i, stat in enumerate(result["localisation"])) + ".", "",
             "**Per cross-attention head**: localisation, gradient, ablation effect, and accuracy and the last "
             "layer's localisation (mean over heads) with the head zero-ablated", "",
             "| head | localisation (mass) | pointing % | d p / d xi | effect on p(correct) | accuracy, zero-ablated % "
             "| accuracy, mean-ablated % | last-layer localisation after |",
             "|---|---|---|---|---|---|---|---|"]
    for h, s in heads.items():
        cells = [mean_text(s["localisation"]), percent(s["pointing"]), mean_text(s["gradient"], 4),
                 mean_text(s["effect"], 4), percent(s["accuracy_zero"]), percent(s["accuracy_mean"]),
                 mean_text(s["last_layer_localisation_after"])]
        lines.append(f"| {h} | " + " | ".join(cells) + " |")
    lines += ["", "Contrast, self-attention heads zero-ablated (accuracy %): " + ", ".join(
        f"{h} {percent(s)}" for h, s in result["self_heads"].items()) + ".", "",
        f"**Rank agreement over the {len(heads)} heads**, per scene, {LEVEL_NOTE}", "",
        "| pair | Spearman rho | scenes | undefined (constant) |", "|---|---|---|---|"]
    for name, stat in result["agreement"].items():
        lines.append(f"| {name} | {rho_text(stat)} | {stat['n']} | {stat['undefined']} |")
    lines += ["", f"**Localisation vs harm across heads** (Spearman over the {len(heads)} heads of the mean "
              f"localisation and the mean drop; {setup['bootstrap']} interval)", "",
              "| drop | rho | 95 % interval |", "|---|---|---|"]
    for name, stat in result["localise_vs_harm"].items():
        lines.append(f"| {name.replace('_', ' ')} | {stat['rho']:+.2f} | [{stat['ci95'][0]:+.2f}, "
                     f"{stat['ci95'][1]:+.2f}] |")
    pruning = result["pruning"]
    lines += ["", f"**Pruning**: accuracy (%) vs cross-attention heads zero-ablated, least important first by each "
              f"score, and {setup['random_orders']} random orders (95 % Wilson intervals in the JSON)", "",
              "| order | " + " | ".join(str(k) for k in pruning["steps"]) + " |",
              "|---|" + "---|" * len(pruning["steps"])]
    for order, curve in pruning["curves"].items():
        lines.append(f"| {order} | " + " | ".join(f"{100 * v:.1f}" for v in curve) + " |")
    lines += ["", "Removal orders: " + "; ".join(
        f"{order}: {', '.join(head_label(*u) for u in units)}" for order, units in pruning["orders"].items()) + ".",
        "", "**Claims**", ""]
    for c in result["claims"]:
        lines.append(f"- {'**held**' if c['held'] else '**did not hold**'}: {c['claim']}. {c['evidence']}.")
    lines += ["", f"Time: {result.get('seconds_total', sum(result['seconds'].values()))} s on "
              f"{result['metadata']['threads']} thread(s) "
              f"({', '.join(f'{k} {v} s' for k, v in result['seconds'].items())})."]
    return lines
