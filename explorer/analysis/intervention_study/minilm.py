"""MiniLM in the intervention study: attention weight, gradient importance and ablation effect of its 72 heads.

Model: all-MiniLM-L6-v2 (:func:`explorer.models.load_pretrained`, float32), 6 layers x 12 heads; the units are the
heads at ``blocks.{l}.attn.hook_z`` ``[batch, head, query, head_dim]`` (before the output projection).

Inputs: ``sentence_pairs(n, seed=0)`` (:mod:`explorer.data.sentence_pairs`): sentence A and a short sentence B that
share one noun. The pairs run through :mod:`explorer.analysis.pair_intervention`, by side:
:func:`~explorer.analysis.pair_intervention.encode_sides` encodes the A's and the B's as two padded batches of ``n``
sentences, and :func:`~explorer.analysis.pair_intervention.pair_forward` mean-pools each over its real tokens
(sentence-transformers' readout) and returns ``[pair, side, embed]``; a hook point fires once per batch, so an edit --
and a per-pair mask ``[pair, head]`` -- acts on both sentences of a pair.

Metric: the cosine similarity of the pair (:func:`~explorer.analysis.intervention.pair_similarity`). Per head and pair:

* **attention** -- the attention mass on the tokens of the shared word (:func:`~explorer.analysis.pair_intervention.
  shared_word_attention`), averaged over every real query row of the sentence (mean pooling reads every row, as in
  :mod:`explorer.analysis.agreement`), then averaged over A and B (the ablation acts on both);
  ``attention_a`` (A's rows only, agreement.py's readout) is kept as a variant;
* **gradient** -- ``d similarity / d xi`` of a multiplicative mask at 1, one mask per pair (Michel et al. 2019;
  :func:`~explorer.analysis.pair_intervention.pair_gradient`);
* **effect** -- similarity with the head zero-ablated minus without (primary: zero ablation, the mask at 0, which
  ``-gradient`` predicts to first order); ``effect_mean`` replaces the head's output by its mean over every real token
  of the ``2 n`` sentences (:func:`~explorer.analysis.pair_intervention.head_means`; a check that zero is not an
  off-distribution artefact).

Decision of one pair (Serrano & Smith's test in kind): a **minimal pair** -- B' is B with the shared word replaced by
another word of its slot that A does not contain (:func:`minimal_pairs`: "I need a book." -> "I need a lamp."), and
the model decides right when ``cos(A, B) > cos(A, B')`` (:func:`preference`). Per pair, the head with the most
attention on the shared word, the head with the largest ``|gradient|``, the head with the largest measured
``|effect|`` (an oracle) and random heads (3 seeds) are ablated in turn (:func:`~.common.one_unit_per_input`), A, B
and B' all encoded under the ablation; a flip is a change of the decision. Retrieval among all 200 B's was tried
first and rejected as the decision: in a first run the intact model found its B for only 48 of the 200 pairs, because
other B's name another noun of A or a near-synonym ("piano" for "guitar"); the minimal pair isolates the shared word.

Pruning (Michel et al. in kind): heads removed cumulatively, least important first by mean attention, mean
``|gradient|`` and mean ``|effect|``, and in 3 random orders; curves of the mean similarity and of the **order kept**
(:func:`order_kept`): per pair, the share of the other pairs whose similarity stays on the same side of it as under
the intact model (1 intact, about 0.5 for similarities unrelated to the intact ones) -- the ranking that a
sentence-similarity benchmark scores. The minimal-pair decision is not used for pruning: it depends little on the
heads (mean pooling keeps the shared word's own embedding), as its accuracy with every head removed shows
(``all_heads_removed`` in the JSON).

Speed: an edit of block ``l`` cannot change blocks ``< l``, so ``pair_forward`` restarts from the intact model's
residual stream at the first block with an active hook point (cached on the batch); the result equals the full
forward (tests compare them). Papers: Serrano & Smith 2019, https://arxiv.org/abs/1906.03731; Michel, Levy & Neubig
2019, https://arxiv.org/abs/1905.10650.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from explorer._checks import check_choice, check_int, check_tensor
from explorer.analysis.agreement import paired_difference
from explorer.analysis.intervention import ablation_sweep, pair_similarity, run_with_edits, zero_ablation
from explorer.analysis.intervention_metrics import Metric
from explorer.analysis.intervention_study.common import (
    Laps, DIGITS, LEVEL_NOTE, LITTLE_LOSS, RANDOM_DRAWS, RANDOM_ORDERS, agreement_rows, check_claims, check_table,
    claim_lines, counts_at, mean_text, metadata, one_unit_per_input, paired_line, pct, proportion, pruning_claims,
    pruning_study, pruning_table, rank_agreement, rounded, selections, selector_labels, single_unit_check, stored,
    three_numbers,
)
from explorer.analysis.pair_intervention import (
    HOOKS, encode_sides, head_hook_names, head_means, pair_forward, pair_gradient, shared_word_attention,
)

__all__ = ["KEYS", "HOOKS", "SEED", "minimal_pairs", "preference", "order_kept", "run", "claims", "section"]

KEYS = ("minilm",)
SEED = 0                        # sentence pairs; random heads and orders use seeds 0 .. 2


# --- inputs and decisions --------------------------------------------------------------------------------------


def minimal_pairs(pairs: Sequence[Any], seed: int = SEED) -> list[str]:
    """B' for each pair: B with the shared word replaced by another word of the same slot that A does not contain.

    The substitute is drawn with ``random.Random(seed)`` (``int(random() * len(options))``, as
    :mod:`explorer.data.sentence_pairs` draws), pair after pair; an indefinite article before the word is made to agree.

    Args:
        pairs: :class:`~explorer.data.sentence_pairs.SentencePair` objects.
        seed: int >= 0.

    Returns:
        One B' per pair.
    """
    import random
    import re

    from explorer.data.sentence_pairs import AGENTS, OBJECTS, PLACES, SentencePair

    check_int("seed", seed, 0)
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or not pairs:
        raise TypeError(f"pairs must be a non-empty list of SentencePair, got {pairs!r:.80}")
    vocabulary = {"agent": AGENTS, "object": OBJECTS, "place": PLACES}
    rng, out = random.Random(seed), []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, SentencePair):
            raise TypeError(f"pairs[{i}] must be a SentencePair, got {type(pair).__name__}")
        options = [w for w in vocabulary[pair.slot] if not re.search(rf"\b{w}\b", pair.a, flags=re.IGNORECASE)]
        new = options[int(rng.random() * len(options))]
        article = "an" if new[0] in "aeiou" else "a"

        def agree(match: re.Match, article: str = article, new: str = new) -> str:
            return f"{article.capitalize() if match.group(1)[0].isupper() else article} {new}"

        b = re.sub(rf"\b([Aa]n?) {pair.shared}\b", agree, pair.b)
        out.append(re.sub(rf"\b{pair.shared}\b", new, b))
    return out


def order_kept(reference: torch.Tensor) -> Metric:
    """Metric: per pair, the share of the other pairs whose similarity lies on the same side of it as in ``reference``.

    Args:
        reference: the intact model's similarity per pair ``[pair]`` (ties count as a side of their own).

    Returns:
        ``metric(output [pair, 2, embed]) -> [pair]`` in [0, 1]; 1 for every pair when the similarities are those of
        ``reference``.
    """
    check_tensor("reference", reference, "[pair] similarities", dtype="float", ndim=1)
    if reference.numel() < 2:
        raise ValueError(f"reference must hold at least 2 pairs to order, got {reference.numel()}")
    sides = torch.sign(reference[:, None] - reference[None, :])  # (pair, pair)

    def metric(output: object) -> torch.Tensor:
        similarity = pair_similarity()(output).to(sides.dtype)  # (pair,)
        if similarity.shape != reference.shape:
            raise ValueError(f"output has {similarity.numel()} pairs, reference {reference.numel()}")
        same = torch.sign(similarity[:, None] - similarity[None, :]) == sides  # (pair, pair); the diagonal is True
        return (same.sum(1) - 1).to(similarity.dtype) / (reference.numel() - 1)
    return metric


def preference(output: object) -> torch.Tensor:
    """Metric: 1.0 where ``cos(A, B) > cos(A, B')``, else 0.0, from a three-sided output ``[pair, 3, embed]``."""
    check_tensor("output", output, "[pair, side=3 (A, B, B'), embed]", ndim=3)
    if output.shape[1] != 3:
        raise ValueError(f"output must have 3 sides (A, B, B'), got shape {tuple(output.shape)}")
    return (_margin(output) > 0).to(output.dtype)


def _margin(output: torch.Tensor) -> torch.Tensor:
    """``cos(A, B) - cos(A, distractor)`` per pair from a three-sided output ``[pair, 3, embed]``."""
    return (F.cosine_similarity(output[:, 0], output[:, 1], dim=-1)
            - F.cosine_similarity(output[:, 0], output[:, 2], dim=-1))


# --- run --------------------------------------------------------------------------------------------------------


def run(key: str, n: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The MiniLM study on ``n`` sentence pairs (see the module docstring); returns the JSON-ready result."""
    from explorer.analysis.intervention_study import COMMAND
    from explorer.data.sentence_pairs import sentence_pairs
    from explorer.models import load_pretrained

    check_choice("key", key, KEYS)
    n = check_int("n", n, 2)
    lap = Laps(log, "minilm")

    pretrained = load_pretrained()
    model = pretrained.model
    pairs = sentence_pairs(n, seed=SEED)
    words = [p.shared for p in pairs]
    sentences = encode_sides(pretrained.tokenizer, [[p.a for p in pairs], [p.b for p in pairs]])
    similarity = pair_similarity()
    lap("load")

    per_side = shared_word_attention(model, sentences, words)  # (side, pair, layer, head)
    attention = per_side.mean(0)
    lap("attention")
    gradient = pair_gradient(model, sentences)  # (pair, layer, head)
    lap("gradient")
    sweep = ablation_sweep(model, pair_forward, sentences, similarity, HOOKS, how="zero")
    baseline = sweep.baseline
    effect = sweep.per_input - baseline[:, None, None]
    lap("zero_ablation")
    n_layers, n_heads = effect.shape[1:]
    # each head set to its mean over every real token of the 2 n sentences (head_means), not per position: the A and
    # B batches differ in length
    means = head_means(model, sentences)
    effect_mean = ablation_sweep(model, pair_forward, sentences, similarity, HOOKS, how="mean", means=means).per_input
    effect_mean = effect_mean - baseline[:, None, None]
    lap("mean_ablation")

    # the JSON's values; every summary below is computed from them
    values = {name: stored(value) for name, value in {
        "attention": attention, "attention_a": per_side[0], "gradient": gradient, "effect": effect,
        "effect_mean": effect_mean}.items()}
    agreement = {"zero": three_numbers(values["effect"], values["gradient"], values["attention"]),
                 "mean": three_numbers(values["effect_mean"], values["gradient"], values["attention"]),
                 "attention_a~effect": rank_agreement(values["attention_a"], values["effect"].abs()),
                 "effect~effect_mean": rank_agreement(values["effect"].abs(), values["effect_mean"].abs())}
    comparison = paired_difference(agreement["zero"]["gradient~effect"]["per_input"],
                                   agreement["zero"]["attention~effect"]["per_input"])

    others = minimal_pairs(pairs)
    triples = encode_sides(pretrained.tokenizer, [[p.a for p in pairs], [p.b for p in pairs], others])
    margin = _margin(run_with_edits(model, pair_forward, triples, None))  # (pair,) cos(A, B) - cos(A, B')
    chosen = selections({"attention": values["attention"], "gradient": values["gradient"].abs(),
                          "oracle": values["effect"].abs()}, n_layers * n_heads, n)
    names = head_hook_names(model)
    change, flipped = {}, {}
    for name, units in chosen.items():
        output = one_unit_per_input(model, pair_forward, triples, names, [n_heads] * n_layers, units)
        change[name] = similarity(output[:, :2]).double() - baseline
        flipped[name] = (_margin(output) > 0) != (margin > 0)
    every = zero_ablation(model, {name: list(range(n_heads)) for name in names})
    without_heads = preference(run_with_edits(model, pair_forward, triples, every)).bool()  # (pair,)
    check = {"decision": "cos(A, B) > cos(A, B'), all three encoded under the ablation",
             "margin": rounded(margin, DIGITS), "all_heads_removed": proportion(without_heads),
             **single_unit_check(change, flipped, chosen)}
    lap("single_head_check")

    steps = counts_at(n_layers * n_heads)
    scores = {"attention": values["attention"].mean(0), "gradient": values["gradient"].abs().mean(0),
              "effect": values["effect"].abs().mean(0)}
    pruning = {"order_kept": pruning_study(model, pair_forward, sentences, order_kept(baseline), HOOKS, scores, steps),
               "similarity": pruning_study(model, pair_forward, sentences, similarity, HOOKS, scores, steps)}
    lap("pruning")

    correct = margin > 0
    return {
        "model": key, "n_inputs": n, "seeds": {"pairs": SEED, "random_heads": list(range(RANDOM_DRAWS)),
                                               "random_orders": list(range(RANDOM_ORDERS))},
        "setup": {
            "model": f"{pretrained.name} (explorer.models.load_pretrained, float32), {n_layers} x {n_heads} heads",
            "data": f"sentence_pairs({n}, seed={SEED}); A and B share one noun",
            "units": f"heads at {HOOKS} (before the output projection)",
            "metric": "cosine of the mean-pooled embeddings of A and B (every edit acts on both sentences)",
            "attention": "attention on the shared word's tokens, mean over the sentence's real query rows, mean of A "
                         "and B (attention_a: A only)",
            "gradient": "d similarity / d xi, multiplicative head mask at 1",
            "effect": "zero ablation (primary); effect_mean: the head's mean output over all real tokens",
            "decision": "minimal pair: cos(A, B) > cos(A, B'), B' = B with the shared word replaced by another "
                        "word of its slot that A does not contain",
            "pruning": "order kept: per pair, the share of the other pairs on the same side of it as under the intact "
                       "model; and mean similarity",
        },
        "units": {"hooks": names, "counts": [n_heads] * n_layers},
        "inputs": [{"a": p.a, "b": p.b, "shared": p.shared, "b_other": o} for p, o in zip(pairs, others)],
        "baseline": rounded(baseline, DIGITS), "preference_correct": correct.tolist(),
        "preference_accuracy": proportion(correct),
        "per_input": {name: rounded(value) for name, value in values.items()},
        "agreement": agreement, "gradient_minus_attention": comparison, "check": check, "pruning": pruning,
        "seconds": lap.seconds, "metadata": metadata(f"{COMMAND} --models {key} --n {n}"),
    }


# --- report -----------------------------------------------------------------------------------------------------


def claims(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every claim with ``held`` and the numbers behind it, from the JSON of :func:`run`."""
    zero = result["agreement"]["zero"]
    d = result["gradient_minus_attention"]
    n_units = sum(result["units"]["counts"])
    single = check_claims(result["check"], "head", "similarity")
    # a decision that survives the removal of every head is weak evidence: say so beside the flip rate
    every, intact = result["check"]["all_heads_removed"], result["preference_accuracy"]
    single[0]["numbers"] += f"; with all {n_units} heads removed the decision is right for {pct(every)}"
    if every["rate"] >= intact["rate"] - LITTLE_LOSS:
        single[0]["numbers"] += f" (intact {pct(intact)}), so this decision hardly needs the heads: a weak test here"
    return [*single,
            {"claim": "|gradient| ranks the heads by measured effect better than attention does (per pair, rho)",
             "held": d["ci95"][0] > 0,
             "numbers": f"{mean_text(zero['gradient~effect'])} vs {mean_text(zero['attention~effect'])}; "
                        f"difference {mean_text(d)}"},
            *pruning_claims(result["pruning"]["order_kept"], n_units, "head", "similarity order (order kept)")]


def section(key: str, result: Mapping[str, Any]) -> list[str]:
    """The MiniLM part of REPORT.md, rendered from the JSON of :func:`run`."""
    check_choice("key", key, KEYS)
    setup, n = result["setup"], result["n_inputs"]
    n_units = sum(result["units"]["counts"])
    zero, mean = result["agreement"]["zero"], result["agreement"]["mean"]
    lines = [f"## {key}: {setup['model']}", "",
             f"- Data: {setup['data']}; {n} pairs. Units: {setup['units']}.",
             f"- Metric: {setup['metric']}. Intact minimal-pair accuracy: {pct(result['preference_accuracy'])}; with "
             f"all {n_units} heads zero-ablated: {pct(result['check']['all_heads_removed'])}.",
             f"- Attention: {setup['attention']}. Gradient: {setup['gradient']}. Effect: {setup['effect']}.",
             f"- Decision of a pair: {setup['decision']}. Pruning: {setup['pruning']}.",
             f"- Seeds: pairs {result['seeds']['pairs']}, random heads "
             f"{result['seeds']['random_heads']}, random orders {result['seeds']['random_orders']}.",
             f"- Time (one thread): {sum(result['seconds'].values()):.0f} s "
             f"({', '.join(f'{k} {v:.0f} s' for k, v in result['seconds'].items())}).", "",
             f"Rank agreement over the {n_units} heads, Spearman's rho per pair, {LEVEL_NOTE}:", "",
             "| numbers | zero ablation (primary) | mean ablation |", "|---|---|---|"]
    for label, name in agreement_rows(zero):
        lines.append(f"| {label} | {mean_text(zero[name])} | {mean_text(mean[name])} |")
    agreement = result["agreement"]
    lines += [f"| attention (A's rows only) ~ \\|effect\\| | {mean_text(agreement['attention_a~effect'])} | |",
              f"| \\|zero effect\\| ~ \\|mean effect\\| | {mean_text(agreement['effect~effect_mean'])} | |", "",
              f"Paired difference of the per-pair rhos, (\\|gradient\\| ~ \\|effect\\|) - (attention ~ \\|effect\\|): "
              f"{mean_text(result['gradient_minus_attention'])}.", "",
              "One head zero-ablated per pair (Serrano & Smith in kind); the decision flips when the sign of "
              f"cos(A, B) - cos(A, B') changes (A, B, B' all encoded under the ablation); {LEVEL_NOTE}, flip rates "
              "with Wilson intervals:", ""]
    lines += check_table(result["check"], selector_labels(result["check"], "on the shared word"), "similarity")
    lines += ["", paired_line(result["check"], "pair"), ""]
    labels = {"attention": "by attention", "gradient": "by \\|gradient\\|", "effect": "by \\|effect\\|"}
    lines += ["Pruning (heads zero-ablated cumulatively, least important first); order kept (per pair, the share of "
              "the other pairs on the same side of it as under the intact model):", ""]
    lines += pruning_table(result["pruning"]["order_kept"], n_units, labels, "heads removed")
    lines += ["", "Mean similarity:", ""]
    lines += pruning_table(result["pruning"]["similarity"], n_units, labels, "heads removed")
    lines += ["", "Claims:", ""] + claim_lines(claims(result))
    return lines
