"""Head interventions on sentence pairs (explorer.analysis.pair_intervention). References are computed here another
way: each sentence encoded on its own (no padding, so no attention mask), ablations through ``intervene`` with the
library's edits or with hand-written ones, gradients by central differences in float64, attention and patching from
per-sentence recordings. The Intervene app's tests (tests/apps/test_intervene_app.py) reuse the references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explorer import intervene, record
from explorer.analysis.intervention import scaling, zero_ablation
from explorer.analysis.pair_intervention import (MAX_CHARS, MAX_TOKENS, PairBatch, PairExperiment, encode_pairs,
                                                 encode_sides, fixed_batch, head_edits, matching, pair_forward,
                                                 pair_gradient, shared_word)
from explorer.models import load_pretrained

FLOAT32 = 1e-5  # cosines of float32 embeddings computed along two paths (padded batch vs one sentence)
A = "The old teacher carefully repaired the broken piano in the kitchen."  # the Intervene tab's default pair
B = "Everyone wanted to hear the piano again."


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/analysis/conftest.py


@pytest.fixture(scope="module")
def pretrained():
    return load_pretrained()


@pytest.fixture(scope="module")
def experiment(pretrained):
    return PairExperiment(pretrained, A, B)


def units_of(ablated) -> dict[str, list[int]]:
    units: dict[str, list[int]] = {}
    for layer, head in ablated:
        units.setdefault(f"blocks.{layer}.attn.hook_z", []).append(head)
    return units


def embed(pretrained, text: str, edits=None) -> torch.Tensor:
    """One sentence alone: mean of its last hidden states, ``(embed,)``."""
    model, tokenizer = pretrained.model, pretrained.tokenizer
    with torch.no_grad(), (intervene(model, edits) if edits else torch.no_grad()):
        return model(tokenizer.encode(text).input_ids).last_hidden_state[0].mean(0)


def similarity(pretrained, a: str, b: str, edits=None) -> float:
    return float(F.cosine_similarity(embed(pretrained, a, edits), embed(pretrained, b, edits), dim=0))


# --- inputs and forward ------------------------------------------------------------------------------------------


def test_both_layouts_give_each_sentences_own_embedding(pretrained):
    """Interleaved (one batch) and by side (one batch per side): the same ``[pair, side, embed]`` as each sentence
    alone; a second unedited call without gradients reads the stored output, bit for bit."""
    pairs = fixed_batch()[:3]
    interleaved = encode_pairs(pretrained.tokenizer, [(a, b) for a, b, _ in pairs])
    by_side = encode_sides(pretrained.tokenizer, [[p[0] for p in pairs], [p[1] for p in pairs]])
    assert interleaved.ids[0].shape[0] == 6 and len(interleaved) == 3 and len(by_side.ids) == 2
    want = torch.stack([torch.stack([embed(pretrained, a), embed(pretrained, b)]) for a, b, _ in pairs])
    with torch.no_grad():
        first = pair_forward(pretrained.model, interleaved)
        again = pair_forward(pretrained.model, interleaved)
        sides = pair_forward(pretrained.model, by_side)
        regrouped = pair_forward(pretrained.model, interleaved.by_side())
    for output in (first, sides, regrouped):
        torch.testing.assert_close(output, want, atol=FLOAT32, rtol=0)
    assert torch.equal(again, first)
    edits = zero_ablation(pretrained.model, units_of([(3, 2)]))
    with torch.no_grad(), intervene(pretrained.model, edits):  # restarts at block 3 from the stored states
        ablated = pair_forward(pretrained.model, interleaved)
    want = torch.stack([torch.stack([embed(pretrained, a, edits), embed(pretrained, b, edits)]) for a, b, _ in pairs])
    torch.testing.assert_close(ablated, want, atol=FLOAT32, rtol=0)


def test_the_batch_measures_each_pair_against_the_sentences_alone(pretrained):
    batch = PairBatch(pretrained, fixed_batch()[:4])
    edits = zero_ablation(pretrained.model, units_of([(5, 11)]))
    for ablated, which in (((), None), ([(5, 11)], edits)):
        similarities, probability, accuracy = batch.measure(ablated)
        want = [similarity(pretrained, a, b, which) for a, b, _ in batch.pairs]
        np.testing.assert_allclose(similarities, want, atol=FLOAT32, rtol=0)
        assert probability.shape == (4,) and 0 <= accuracy <= 1
    np.testing.assert_array_equal(batch.measure()[0], batch.clean[0])  # the intact run, read again


# --- the three numbers per head and patching ---------------------------------------------------------------------


@pytest.mark.parametrize("cell", [(0, 5), (3, 11), (5, 11)])
def test_ablation_effect_is_the_measured_change(experiment, pretrained, cell):
    clean = similarity(pretrained, A, B)
    ablated = similarity(pretrained, A, B, zero_ablation(pretrained.model, units_of([cell])))
    assert abs(experiment.effect[cell] - (ablated - clean)) < 2 * FLOAT32


def test_attention_on_the_shared_word(experiment, pretrained):
    e = experiment
    assert e.word == "piano"
    per_sentence = []
    for text in (A, B):
        encoding = pretrained.tokenizer.encode(text)
        word = [i for i, t in enumerate(encoding.tokens) if t == "piano"]
        assert len(word) == 1
        with torch.no_grad(), record(pretrained.model, "*.hook_pattern") as trace:
            pretrained.model(encoding.input_ids)
        per_sentence.append(np.array([[float(trace[f"blocks.{l}.attn.hook_pattern"][0, h, :, word].sum(-1).mean())
                                       for h in range(12)] for l in range(6)]))
    np.testing.assert_allclose(e.attention, (per_sentence[0] + per_sentence[1]) / 2, atol=1e-6, rtol=0)


def test_gradient_importance_is_the_derivative_of_a_shared_head_mask(pretrained):
    """Central differences in float64 on a private copy: ``sim(xi_h = 1 + eps) - sim(1 - eps)`` over ``2 eps``,
    with one mask per head shared by both sentences (``scaling`` with a ``[head]`` factor)."""
    model = load_pretrained(cache=False).model.double()
    inputs = encode_pairs(pretrained.tokenizer, [(A, B)])
    gradient = pair_gradient(model, inputs)[0]  # (layer, head)
    eps = 1e-4

    def sim(layer: int, head: int, xi: float) -> float:
        factor = torch.ones(12, dtype=torch.float64)
        factor[head] = xi
        ids, mask = inputs.ids[0], inputs.masks[0]  # (2, token): A and B
        with torch.no_grad(), intervene(model, scaling(model, {f"blocks.{layer}.attn.hook_z": factor})):
            pooled = model(ids, mask).mean_pooled(mask)
        return float(F.cosine_similarity(pooled[0], pooled[1], dim=0))

    for layer, head in [(0, 3), (3, 11), (5, 2), (5, 11)]:
        numeric = (sim(layer, head, 1 + eps) - sim(layer, head, 1 - eps)) / (2 * eps)
        assert abs(float(gradient[layer, head]) - numeric) < 1e-6, (layer, head)  # O(eps^2) and float64 noise


def test_importance_is_the_absolute_gradient(experiment, pretrained):
    gradient = pair_gradient(pretrained.model, experiment.inputs)[0].numpy()
    np.testing.assert_allclose(experiment.importance, np.abs(gradient), atol=1e-7, rtol=0)
    # the first-order prediction of zero-ablating a head, -gradient, tracks the measured effect on this pair
    assert np.corrcoef(-gradient.ravel(), experiment.effect.ravel())[0, 1] > 0.8


@pytest.mark.parametrize("cell", [(5, 5), (5, 0), (2, 2)])
def test_patching_restores_the_share_a_hand_written_patch_restores(experiment, pretrained, cell):
    """Sentence A with the shared word's token replaced by [MASK]; one head's hook_z in A replaced by the clean
    one; B is the same in both runs, so patching it changes nothing."""
    model, tokenizer = pretrained.model, pretrained.tokenizer
    layer, head = cell
    clean_ids = tokenizer.encode(A).input_ids
    corrupted_ids = clean_ids.clone()
    corrupted_ids[0, tokenizer.encode(A).tokens.index("piano")] = tokenizer.encode("[MASK]").input_ids[0, 1]
    name = f"blocks.{layer}.attn.hook_z"
    with torch.no_grad(), record(model, name) as trace:
        model(clean_ids)
    source = trace[name]  # (1, head, token, head_dim)

    def patch(z, hook):
        z = z.clone()
        z[:, head] = source[:, head]
        return z

    b = embed(pretrained, B)
    with torch.no_grad():
        corrupted = float(F.cosine_similarity(model(corrupted_ids).last_hidden_state[0].mean(0), b, dim=0))
        with intervene(model, {name: patch}):
            patched = float(F.cosine_similarity(model(corrupted_ids).last_hidden_state[0].mean(0), b, dim=0))
    clean = experiment.clean_similarity
    assert abs(experiment.corrupted_similarity - corrupted) < FLOAT32
    want = (patched - corrupted) / (clean - corrupted)
    assert abs(experiment.patching[cell] - want) < FLOAT32 / (clean - corrupted) * 4  # a ratio of differences


def test_similarity_under_ablation_is_a_fresh_intervene_run(experiment, pretrained):
    ablated = [(1, 3), (4, 9)]
    edits = zero_ablation(pretrained.model, units_of(ablated))
    assert abs(experiment.similarity(ablated) - similarity(pretrained, A, B, edits)) < FLOAT32
    assert experiment.similarity() == experiment.clean_similarity


# --- input checks and refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("a, error, words", [
    (5, TypeError, "sentence A must be a str"), ("   ", ValueError, "sentence A is empty"),
    ("x" * (MAX_CHARS + 1), ValueError, f"at most {MAX_CHARS}"),
    ("a " * 99, ValueError, f"at most {MAX_TOKENS} are accepted")])
def test_bad_sentences_are_refused_by_name(pretrained, a, error, words):
    with pytest.raises(error, match=words):
        PairExperiment(pretrained, a, B)


def test_a_pair_without_a_shared_word_has_no_word_numbers(pretrained):
    e = PairExperiment(pretrained, "The dog slept all afternoon.", "Markets opened higher today.")
    assert e.word is None and e.corrupted_similarity is None
    assert np.isnan(e.attention).all() and np.isnan(e.patching).all()
    assert np.isfinite(e.effect).all() and np.isfinite(e.gradient).all()
    assert abs(e.clean_similarity - similarity(pretrained, e.a, e.b)) < FLOAT32


def test_helpers(pretrained):
    assert shared_word("The old Piano, again.", "I like the piano") == "piano"
    assert shared_word("It is in the box", "It is in the house") is None  # stopwords are not shared words
    with pytest.raises(TypeError, match="b must be a str"):
        shared_word("a", None)
    with pytest.raises(ValueError, match="embeddings"):
        matching(torch.zeros(3, 3, 4))
    with pytest.raises(ValueError, match="scale"):
        matching(torch.zeros(3, 2, 4), scale=0)
    assert len(fixed_batch()) == 8 and len({p[2] for p in fixed_batch()}) == 8
    assert head_edits(pretrained.model, []) is None
    with pytest.raises(ValueError, match="how='mean' needs means"):
        head_edits(pretrained.model, [(0, 0)], "mean")
    with pytest.raises(TypeError, match=r"pairs\[0\] must be a tuple"):
        encode_pairs(pretrained.tokenizer, [["a", "b"]])
    with pytest.raises(TypeError, match="sentences"):
        pair_gradient(pretrained.model, torch.zeros(2, 3, dtype=torch.long))
