"""The Intervene app draws the library's numbers. References are computed here another way: each sentence encoded
on its own (no padding, so no attention mask; the helpers of tests/analysis/test_pair_intervention.py, which checks
the library's per-pair numbers), ablations through ``intervene`` with the library's edits or with hand-written ones,
means over tokens by a loop, the query/key view from a per-sentence recording."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explorer import record
from explorer.analysis.intervention import mean_ablation, zero_ablation
from explorer.analysis.pair_intervention import MATCH_SCALE, fixed_batch
from explorer.apps._callbacks import single_thread
from explorer.apps.intervene import DEFAULT_A, DEFAULT_B, InterveneApp
from explorer.models import load_pretrained
from tests.analysis.test_pair_intervention import FLOAT32, embed, similarity, units_of


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


# --- the three numbers per head and patching (computed and checked in tests/analysis/test_pair_intervention.py) -----


def test_the_heads_and_patching_figures_draw_the_experiments_numbers(app):
    e = app.experiment
    np.testing.assert_array_equal(app.heads_figure.figure.data[0].z, e.attention)
    np.testing.assert_array_equal(app.heads_figure.figure.data[1].z, e.importance)
    np.testing.assert_array_equal(app.heads_figure.figure.data[2].z, e.effect)
    np.testing.assert_array_equal(app.patching_figure.figure.data[0].z, e.patching)
    assert e.a == DEFAULT_A and e.b == DEFAULT_B and e.word == "piano"


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


def test_threads_are_restored(app):
    torch.set_num_threads(2)
    try:
        app.cells[(0, 0)].value = True
        app.cells[(0, 0)].value = False
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)  # the module's fixture restores the original count at the end
