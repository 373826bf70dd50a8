"""The Intervene app draws the library's numbers. References are computed here another way: each sentence encoded
on its own (no padding, so no attention mask), ablations through ``intervene`` with the library's edits or with
hand-written ones, means over tokens by a loop, gradients by central differences in float64, attention and
patching from per-sentence recordings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explorer import intervene, record
from explorer.analysis.intervention import mean_ablation, scaling, zero_ablation
from explorer.apps.intervene import (DEFAULT_A, DEFAULT_B, MATCH_SCALE, MAX_CHARS, MAX_TOKENS, InterveneApp,
                                     PairExperiment, encode_pairs, fixed_batch, matching, pair_gradient, shared_word,
                                     single_thread)
from explorer.models import load_pretrained

FLOAT32 = 1e-5  # cosines of float32 embeddings computed along two paths (padded batch vs one sentence)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The references run on one thread too, as the app does (two spin-waiting threads on 2 shared cores are slow)."""
    with single_thread():
        yield


@pytest.fixture(scope="module")
def pretrained():
    return load_pretrained()


@pytest.fixture(scope="module")
def app():
    return InterveneApp()


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


def reset(app) -> None:
    app.reset.click()
    app.ablation.value = "zero"
    assert app.ablated == set()


# --- the output the toggles change -------------------------------------------------------------------------------


def test_clean_numbers_are_the_models_cosines(app, pretrained):
    assert abs(app.experiment.clean_similarity - similarity(pretrained, DEFAULT_A, DEFAULT_B)) < FLOAT32
    want = [similarity(pretrained, a, b) for a, b, _ in fixed_batch()]
    np.testing.assert_allclose(app.clean_batch_similarity, want, atol=FLOAT32, rtol=0)
    assert app.similarity == app.experiment.clean_similarity  # nothing ablated: the clean run itself


@pytest.mark.parametrize("ablated", [[(0, 0)], [(2, 6)], [(5, 11)], [(1, 3), (4, 9)]], ids=str)
def test_toggling_heads_gives_a_fresh_intervene_run(app, pretrained, ablated):
    reset(app)
    for cell in ablated:
        app.cells[cell].value = True
    assert app.ablated == set(ablated)
    edits = zero_ablation(pretrained.model, units_of(ablated))
    assert abs(app.similarity - similarity(pretrained, DEFAULT_A, DEFAULT_B, edits)) < FLOAT32
    want = [similarity(pretrained, a, b, edits) for a, b, _ in fixed_batch()]
    np.testing.assert_allclose(app.batch_similarity, want, atol=FLOAT32, rtol=0)
    # what is drawn is what was computed
    reading = app.status.value
    assert f'data-ablated="{",".join(f"{l}.{h}" for l, h in sorted(ablated))}"' in reading
    assert f'data-similarity="{app.similarity!r}"' in reading
    figure = app.output_figure.figure
    assert list(figure.data[1].y) == [app.similarity] and list(figure.data[0].y) == [app.experiment.clean_similarity]
    np.testing.assert_array_equal(figure.data[3].y, app.batch_similarity)
    np.testing.assert_array_equal(figure.data[5].y, app.batch_probability)
    assert all(app.cells[c].button_style == "danger" for c in ablated)
    for cell in ablated:
        app.cells[cell].value = False
    assert app.similarity == app.experiment.clean_similarity and app.ablated == set()
    assert all(cell.button_style == "" for cell in app.cells.values())


def test_mean_ablation_uses_each_heads_mean_over_the_batch_tokens(app, pretrained):
    reset(app)
    ablated = [(1, 3), (3, 0)]
    for cell in ablated:
        app.cells[cell].value = True
    app.ablation.value = "mean"
    model = pretrained.model
    names = [f"blocks.{l}.attn.hook_z" for l in range(6)]
    sums, count = {}, 0  # the mean of every real token of every batch sentence, one sentence at a time
    for a, b, _ in fixed_batch():
        for text in (a, b):
            with torch.no_grad(), record(model, names) as trace:
                model(pretrained.tokenizer.encode(text).input_ids)
            for name in names:  # (1, head, token, head_dim)
                sums[name] = sums.get(name, 0) + trace[name][0].sum(1)
            count += trace[names[0]].shape[2]
    means = {name: (total / count)[None, :, None, :] for name, total in sums.items()}
    edits = mean_ablation(model, units_of(ablated), means)
    assert abs(app.similarity - similarity(pretrained, DEFAULT_A, DEFAULT_B, edits)) < FLOAT32
    want = [similarity(pretrained, a, b, edits) for a, b, _ in fixed_batch()]
    np.testing.assert_allclose(app.batch_similarity, want, atol=FLOAT32, rtol=0)
    assert 'data-how="mean"' in app.status.value
    reset(app)


def test_partner_probability_and_accuracy_by_hand(app, pretrained):
    reset(app)
    app.cells[(5, 11)].value = True
    edits = zero_ablation(pretrained.model, units_of([(5, 11)]))
    a = [embed(pretrained, p[0], edits) for p in fixed_batch()]
    b = [embed(pretrained, p[1], edits) for p in fixed_batch()]
    cos = np.array([[float(F.cosine_similarity(x, y, dim=0)) for y in b] for x in a])  # (A_i, B_j)
    for i in range(len(a)):
        logits = MATCH_SCALE * cos[i]
        p = math.exp(logits[i]) / sum(math.exp(v) for v in logits)
        assert abs(app.batch_probability[i] - p) < MATCH_SCALE * FLOAT32  # d p / d cos <= scale / 4
    assert app.accuracy == np.mean([int(np.argmax(row) == i) for i, row in enumerate(cos)])
    assert f'data-accuracy="{app.accuracy!r}"' in app.status.value
    reset(app)


def test_reset_clears_every_head(app):
    for cell in [(0, 1), (3, 3), (5, 5)]:
        app.cells[cell].value = True
    app.reset.click()
    assert app.ablated == set() and not any(cell.value for cell in app.cells.values())
    assert app.similarity == app.experiment.clean_similarity and 'data-ablated=""' in app.status.value


# --- the three numbers per head and patching ---------------------------------------------------------------------


@pytest.mark.parametrize("cell", [(0, 5), (3, 11), (5, 11)])
def test_ablation_effect_is_the_measured_change(app, pretrained, cell):
    clean = similarity(pretrained, DEFAULT_A, DEFAULT_B)
    ablated = similarity(pretrained, DEFAULT_A, DEFAULT_B, zero_ablation(pretrained.model, units_of([cell])))
    assert abs(app.experiment.effect[cell] - (ablated - clean)) < 2 * FLOAT32
    np.testing.assert_array_equal(app.heads_figure.figure.data[2].z, app.experiment.effect)


def test_attention_on_the_shared_word(app, pretrained):
    e = app.experiment
    assert e.word == "piano"
    per_sentence = []
    for text in (DEFAULT_A, DEFAULT_B):
        encoding = pretrained.tokenizer.encode(text)
        word = [i for i, t in enumerate(encoding.tokens) if t == "piano"]
        assert len(word) == 1
        with torch.no_grad(), record(pretrained.model, "*.hook_pattern") as trace:
            pretrained.model(encoding.input_ids)
        per_sentence.append(np.array([[float(trace[f"blocks.{l}.attn.hook_pattern"][0, h, :, word].sum(-1).mean())
                                       for h in range(12)] for l in range(6)]))
    np.testing.assert_allclose(e.attention, (per_sentence[0] + per_sentence[1]) / 2, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(app.heads_figure.figure.data[0].z, e.attention)


def test_gradient_importance_is_the_derivative_of_a_shared_head_mask(pretrained):
    """Central differences in float64 on a private copy: ``sim(xi_h = 1 + eps) - sim(1 - eps)`` over ``2 eps``,
    with one mask per head shared by both sentences (``scaling`` with a ``[head]`` factor)."""
    model = load_pretrained(cache=False).model.double()
    inputs = encode_pairs(pretrained.tokenizer, [(DEFAULT_A, DEFAULT_B)])
    gradient = pair_gradient(model, inputs)[0]  # (layer, head)
    eps = 1e-4

    def sim(layer: int, head: int, xi: float) -> float:
        factor = torch.ones(12, dtype=torch.float64)
        factor[head] = xi
        ids, mask = inputs
        with torch.no_grad(), intervene(model, scaling(model, {f"blocks.{layer}.attn.hook_z": factor})):
            pooled = model(ids, mask).mean_pooled(mask)
        return float(F.cosine_similarity(pooled[0], pooled[1], dim=0))

    for layer, head in [(0, 3), (3, 11), (5, 2), (5, 11)]:
        numeric = (sim(layer, head, 1 + eps) - sim(layer, head, 1 - eps)) / (2 * eps)
        assert abs(float(gradient[layer, head]) - numeric) < 1e-6, (layer, head)  # O(eps^2) and float64 noise


def test_app_importance_is_the_absolute_gradient(app, pretrained):
    gradient = pair_gradient(pretrained.model, app.experiment.inputs)[0].numpy()
    np.testing.assert_allclose(app.experiment.importance, np.abs(gradient), atol=1e-7, rtol=0)
    np.testing.assert_array_equal(app.heads_figure.figure.data[1].z, app.experiment.importance)
    # the first-order prediction of zero-ablating a head, -gradient, tracks the measured effect on this pair
    assert np.corrcoef(-gradient.ravel(), app.experiment.effect.ravel())[0, 1] > 0.8


@pytest.mark.parametrize("cell", [(5, 5), (5, 0), (2, 2)])
def test_patching_restores_the_share_a_hand_written_patch_restores(app, pretrained, cell):
    """Sentence A with the shared word's token replaced by [MASK]; one head's hook_z in A replaced by the clean
    one; B is the same in both runs, so patching it changes nothing."""
    model, tokenizer = pretrained.model, pretrained.tokenizer
    layer, head = cell
    clean_ids = tokenizer.encode(DEFAULT_A).input_ids
    corrupted_ids = clean_ids.clone()
    corrupted_ids[0, tokenizer.encode(DEFAULT_A).tokens.index("piano")] = tokenizer.encode("[MASK]").input_ids[0, 1]
    name = f"blocks.{layer}.attn.hook_z"
    with torch.no_grad(), record(model, name) as trace:
        model(clean_ids)
    source = trace[name]  # (1, head, token, head_dim)

    def patch(z, hook):
        z = z.clone()
        z[:, head] = source[:, head]
        return z

    b = embed(pretrained, DEFAULT_B)
    with torch.no_grad():
        corrupted = float(F.cosine_similarity(model(corrupted_ids).last_hidden_state[0].mean(0), b, dim=0))
        with intervene(model, {name: patch}):
            patched = float(F.cosine_similarity(model(corrupted_ids).last_hidden_state[0].mean(0), b, dim=0))
    clean = app.experiment.clean_similarity
    assert abs(app.experiment.corrupted_similarity - corrupted) < FLOAT32
    want = (patched - corrupted) / (clean - corrupted)
    assert abs(app.experiment.patching[cell] - want) < FLOAT32 / (clean - corrupted) * 4  # a ratio of differences
    np.testing.assert_array_equal(app.patching_figure.figure.data[0].z, app.experiment.patching)


# --- query / key view --------------------------------------------------------------------------------------------


def test_query_key_view_is_the_recorded_pattern_row(app, pretrained):
    app.qk_layer.value, app.qk_head.value = 2, 4
    app.qk_sentence.value = 1  # sentence B: the query starts on its shared word
    tokens = pretrained.tokenizer.encode(DEFAULT_B).tokens
    assert [label for label, _ in app.qk_query.options] == [f"{i}: {t}" for i, t in enumerate(tokens)]
    assert app.qk_query.value == tokens.index("piano")
    app.qk_query.value = 2
    with torch.no_grad(), record(pretrained.model, ["blocks.2.attn.hook_pattern", "blocks.2.attn.hook_q",
                                                    "blocks.2.attn.hook_k"]) as trace:
        pretrained.model(pretrained.tokenizer.encode(DEFAULT_B).input_ids)
    want = trace["blocks.2.attn.hook_pattern"][0, 4, 2]  # (key,) over B's own tokens
    torch.testing.assert_close(app.qk.softmax, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(app.qk.q, trace["blocks.2.attn.hook_q"][0, 4, 2], atol=1e-5, rtol=0)
    torch.testing.assert_close(app.qk.k, trace["blocks.2.attn.hook_k"][0, 4], atol=1e-5, rtol=0)
    scores = app.qk.k @ app.qk.q / math.sqrt(app.qk.q.shape[0])  # the dot products, from q and k by hand
    torch.testing.assert_close(app.qk.dots, scores, atol=1e-5, rtol=0)
    drawn = app.qk_figure.figure
    np.testing.assert_array_equal(drawn.data[4].x, app.qk.softmax.numpy())
    np.testing.assert_array_equal(drawn.data[2].z, app.qk.product.numpy())
    assert "sentence B" in drawn.layout.title.text and f"'{tokens[2]}'" in drawn.layout.title.text
    app.qk_sentence.value = 0


# --- input checks and refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("a, error, words", [
    (5, TypeError, "sentence A must be a str"), ("   ", ValueError, "sentence A is empty"),
    ("x" * (MAX_CHARS + 1), ValueError, f"at most {MAX_CHARS}"),
    ("a " * 99, ValueError, f"at most {MAX_TOKENS} are accepted")])
def test_bad_sentences_are_refused_by_name(pretrained, a, error, words):
    with pytest.raises(error, match=words):
        PairExperiment(pretrained, a, DEFAULT_B)


def test_bad_how_is_refused_by_name():
    with pytest.raises(ValueError, match="how must be one of"):
        InterveneApp(how="half")


def test_a_refused_pair_leaves_the_app_as_it_was(app):
    before = (app.experiment, app.similarity, app.status.value)
    app.sentence_a.value = "y" * 300
    app.analyse.click()
    assert "iv-error" in app.message.value and "sentence A has 300 characters" in app.message.value
    assert (app.experiment, app.similarity, app.status.value) == before
    app.sentence_a.value = DEFAULT_A


def test_the_memory_guard_refuses_a_toggle_and_the_grid_shows_the_state_kept(app, monkeypatch):
    reset(app)
    before = (app.similarity, app.status.value)
    monkeypatch.setenv("EXPLORER_MEMORY_BUDGET", "1000")  # bytes: nothing fits
    app.cells[(2, 2)].value = True
    assert "iv-error" in app.message.value and "would need" in app.message.value
    assert app.ablated == set() and app.cells[(2, 2)].value is False  # the page's toggle is put back
    assert (app.similarity, app.status.value) == before
    app.ablation.value = "mean"
    assert app.how == "zero" and app.ablation.value == "zero"
    monkeypatch.delenv("EXPLORER_MEMORY_BUDGET")
    app.cells[(2, 2)].value = True
    assert app.ablated == {(2, 2)} and app.message.value == ""
    reset(app)


def test_a_pair_without_a_shared_word_has_no_word_numbers(pretrained):
    e = PairExperiment(pretrained, "The dog slept all afternoon.", "Markets opened higher today.")
    assert e.word is None and e.corrupted_similarity is None
    assert np.isnan(e.attention).all() and np.isnan(e.patching).all()
    assert np.isfinite(e.effect).all() and np.isfinite(e.gradient).all()
    assert abs(e.clean_similarity - similarity(pretrained, e.a, e.b)) < FLOAT32


def test_helpers():
    assert shared_word("The old Piano, again.", "I like the piano") == "piano"
    assert shared_word("It is in the box", "It is in the house") is None  # stopwords are not shared words
    with pytest.raises(TypeError, match="b must be a str"):
        shared_word("a", None)
    with pytest.raises(ValueError, match="embeddings"):
        matching(torch.zeros(3, 3, 4))
    with pytest.raises(ValueError, match="scale"):
        matching(torch.zeros(3, 2, 4), scale=0)
    assert len(fixed_batch()) == 8 and len({p[2] for p in fixed_batch()}) == 8


def test_threads_are_restored(app):
    torch.set_num_threads(2)
    try:
        app.cells[(0, 0)].value = True
        app.cells[(0, 0)].value = False
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)  # the module's fixture restores the original count at the end
