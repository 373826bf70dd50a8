"""MiniLM in the intervention study: attention weight, gradient importance and ablation effect of its 72 heads.

Model: all-MiniLM-L6-v2 (:func:`explorer.models.load_pretrained`, float32), 6 layers x 12 heads; the units are the
heads at ``blocks.{l}.attn.hook_z`` ``[batch, head, query, head_dim]`` (before the output projection).

Inputs: ``sentence_pairs(n, seed=0)`` (:mod:`explorer.data.sentence_pairs`): sentence A and a short sentence B that
share one noun. :func:`pair_forward` encodes the A's and the B's as two padded batches of ``n`` sentences, mean-pools
each over its real tokens (sentence-transformers' readout) and returns ``[pair, side, embed]``; a hook point fires
once per batch, so an edit -- and a per-pair mask ``[pair, head]`` -- acts on both sentences of a pair.

Metric: the cosine similarity of the pair (:func:`~explorer.analysis.intervention.pair_similarity`). Per head and pair:

* **attention** -- the attention mass on the tokens of the shared word (:func:`~explorer.analysis.agreement.
  shared_word_tokens`), averaged over every real query row of the sentence (mean pooling reads every row, as in
  :mod:`explorer.analysis.agreement`), then averaged over A and B (the ablation acts on both);
  ``attention_a`` (A's rows only, agreement.py's readout) is kept as a variant;
* **gradient** -- ``d similarity / d xi`` of a multiplicative mask at 1 (Michel et al. 2019);
* **effect** -- similarity with the head zero-ablated minus without (primary: zero ablation, the mask at 0, which
  ``-gradient`` predicts to first order); ``effect_mean`` replaces the head's output by its mean over every real token
  of the ``2 n`` sentences (a check that zero is not an off-distribution artefact).

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

Speed: an edit of block ``l`` cannot change blocks ``< l``, so :func:`pair_forward` restarts from the intact model's
residual stream at the first block with an active hook point (cached on the batch); the result equals the full
forward (tests compare them). Papers: Serrano & Smith 2019, https://arxiv.org/abs/1906.03731; Michel, Levy & Neubig
2019, https://arxiv.org/abs/1905.10650.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from explorer._checks import check_choice, check_int, check_tensor, check_type
from explorer._modes import evaluating
from explorer.analysis.agreement import paired_difference, shared_word_tokens
from explorer.analysis.intervention import (
    ablation_sweep, gradient_importance, pair_similarity, run_with_edits, unit_hooks, zero_ablation,
)
from explorer.analysis.intervention_metrics import Metric
from explorer.analysis.intervention_study.common import (
    DIGITS, LEVEL_NOTE, LITTLE_LOSS, RANDOM_DRAWS, RANDOM_ORDERS, agreement_rows, check_claims, check_table,
    claim_lines, counts_at, mean_text, metadata, one_unit_per_input, paired_line, pct, proportion, pruning_claims,
    pruning_study, pruning_table, rank_agreement, rounded, selections, selector_labels, single_unit_check, stored,
    three_numbers,
)
from explorer.hooks import hook_points, record

__all__ = ["KEYS", "HOOKS", "SEED", "Sentences", "encode_sides", "pair_forward", "minimal_pairs", "preference",
           "order_kept", "shared_word_attention", "head_means", "run", "claims", "section"]

KEYS = ("minilm",)
HOOKS = "blocks.*.attn.hook_z"  # [batch, head, query, head_dim] per layer
SEED = 0                        # sentence pairs; random heads and orders use seeds 0 .. 2


# --- inputs and forward -----------------------------------------------------------------------------------------


@dataclass(eq=False)
class Sentences:
    """Tokenised sentences for :func:`pair_forward`: one right-padded batch per side (A, B[, distractor])."""

    texts: tuple[tuple[str, ...], ...]   # per side, one text per pair
    ids: tuple[torch.Tensor, ...]        # per side [pair, token], long
    masks: tuple[torch.Tensor, ...]      # per side [pair, token], 1 = real token
    encodings: tuple[list[Any], ...]     # per side, explorer Encoding per pair (tokens, offsets)
    _cache: tuple[nn.Module, list[tuple[torch.Tensor, ...]]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.ids[0].shape[0]


def encode_sides(tokenizer: Any, sides: Sequence[Sequence[str]]) -> Sentences:
    """Tokenise each side's texts as one padded batch (``Tokenizer.encode_batch``).

    Args:
        tokenizer: an :class:`explorer.models.checkpoint.Tokenizer`.
        sides: 1-3 lists of texts, one text per pair each (A's, B's, distractors).

    Returns:
        :class:`Sentences`.
    """
    if isinstance(sides, (str, bytes)) or not isinstance(sides, Sequence) or not 1 <= len(sides) <= 3:
        raise TypeError(f"sides must be a list of 1-3 lists of texts (A's, B's, ...), got {sides!r:.80}")
    texts = []
    for s, side in enumerate(sides):
        if isinstance(side, (str, bytes)) or not isinstance(side, Sequence) or not side:
            raise TypeError(f"sides[{s}] must be a non-empty list of str, got {side!r:.80}")
        if not all(isinstance(t, str) for t in side):
            raise TypeError(f"sides[{s}] must hold only str")
        texts.append(tuple(side))
    if len({len(side) for side in texts}) != 1:
        raise ValueError(f"sides must have one text per pair each, got lengths {[len(s) for s in texts]}")
    ids, masks = zip(*(tokenizer.encode_batch(list(side)) for side in texts))
    encodings = tuple([tokenizer.encode(text) for text in side] for side in texts)
    return Sentences(tuple(texts), tuple(ids), tuple(masks), encodings)


def _first_active_block(model: nn.Module) -> int | None:
    """Index of the first block with a recorded or edited hook point; 0 if one outside the blocks is active; None if
    nothing is active."""
    active = [name for name, hp in hook_points(model).items() if hp.active]
    if not active:
        return None
    parts = [name.split(".") for name in active]
    if any(p[0] != "blocks" for p in parts):
        return 0
    return min(int(p[1]) for p in parts)


def pair_forward(model: nn.Module, sentences: Sentences) -> torch.Tensor:
    """Mean-pooled embeddings of every side of every pair: ``[pair, side, embed]``.

    The first call with no hook point active stores each block's input (``BertOutput.hidden_states``) on
    ``sentences``; later calls restart from the first block with an active hook point. The model's weights must not
    change while ``sentences`` is in use.
    """
    check_type("sentences", sentences, Sentences, "Sentences from encode_sides(...)")
    from explorer.models.bert import BertOutput

    first = _first_active_block(model)
    cache = sentences._cache
    usable = cache is not None and cache[0] is model and cache[1][0][0].dtype == model.embeddings.norm.weight.dtype
    start = first if (first and usable) else 0
    pooled, states = [], []
    for side, (ids, mask) in enumerate(zip(sentences.ids, sentences.masks)):
        if start == 0:
            output = model(ids, mask)
            hidden = output.last_hidden_state  # (pair, token, embed)
            states.append(tuple(h.detach() for h in output.hidden_states))
        else:
            padding = mask == 0  # (pair, token), True = padding, as BertEncoder.forward passes it
            x = cache[1][side][start]  # (pair, token, embed): the intact input of block `start`
            for block in model.blocks[start:]:
                x = block(x, padding if bool(padding.any()) else None, None)
            hidden = x
        pooled.append(BertOutput(hidden, ()).mean_pooled(mask))  # (pair, embed)
    if first is None and start == 0:
        sentences._cache = (model, states)
    return torch.stack(pooled, dim=1)  # (pair, side, embed)


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


# --- the three numbers ------------------------------------------------------------------------------------------


def shared_word_attention(model: nn.Module, sentences: Sentences, words: Sequence[str]) -> torch.Tensor:
    """Attention on the shared word per side, pair, layer and head: ``[side, pair, layer, head]``, float64.

    Per side: ``mean over real queries q of sum over the word's tokens k of pattern[pair, head, q, k]``.
    """
    if len(words) != len(sentences):
        raise ValueError(f"words must hold one word per pair ({len(sentences)}), got {len(words)}")
    names = [name.replace("hook_z", "hook_pattern") for name in _names(model)]
    with evaluating(model), torch.no_grad(), record(model, names) as trace:
        pair_forward(model, sentences)
    out = []
    for side, (mask, encodings, texts) in enumerate(zip(sentences.masks, sentences.encodings, sentences.texts)):
        target = torch.zeros(mask.shape, dtype=torch.float64)  # (pair, key)
        for i, (encoding, text, word) in enumerate(zip(encodings, texts, words)):
            hits = torch.from_numpy(shared_word_tokens(encoding, text, word))
            if not hits.any():
                raise ValueError(f"pair {i}: {word!r} is not a whole word of side {side}'s text {text!r}")
            target[i, : hits.numel()] = hits.double()
        real = mask.double()  # (pair, query)
        layers = []
        for name in names:
            pattern = trace.history(name)[side].double()  # (pair, head, query, key)
            mass = (pattern * target[:, None, None, :]).sum(-1)  # (pair, head, query)
            layers.append((mass * real[:, None, :]).sum(-1) / real.sum(-1, keepdim=True))  # (pair, head)
        out.append(torch.stack(layers, dim=1))  # (pair, layer, head)
    return torch.stack(out)


def head_means(model: nn.Module, sentences: Sentences) -> dict[str, torch.Tensor]:
    """Each head's mean output vector over every real token of every side: ``{hook: [1, head, 1, head_dim]}``."""
    names = _names(model)
    with evaluating(model), torch.no_grad(), record(model, names) as trace:
        pair_forward(model, sentences)
    means = {}
    for name in names:
        total = count = 0
        for z, mask in zip(trace.history(name), sentences.masks):  # z (pair, head, token, head_dim)
            total = total + (z * mask.to(z.dtype)[:, None, :, None]).sum(dim=(0, 2))  # (head, head_dim)
            count = count + int(mask.sum())
        means[name] = (total / count)[None, :, None, :]
    return means


def _names(model: nn.Module) -> list[str]:
    return [hp.name for hp in unit_hooks(model, HOOKS)]


# --- run --------------------------------------------------------------------------------------------------------


def run(key: str, n: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The MiniLM study on ``n`` sentence pairs (see the module docstring); returns the JSON-ready result."""
    from explorer.analysis.intervention_study import COMMAND
    from explorer.data.sentence_pairs import sentence_pairs
    from explorer.models import load_pretrained

    check_choice("key", key, KEYS)
    n = check_int("n", n, 2)
    seconds: dict[str, float] = {}
    tick = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        seconds[name] = round(now - tick, 2)
        tick = now
        log(f"minilm: {name} {seconds[name]} s")

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
    gradient = gradient_importance(model, pair_forward, sentences, similarity, HOOKS).per_input
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
    names = _names(model)
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
        "seconds": seconds, "metadata": metadata(f"{COMMAND} --models {key} --n {n}"),
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
