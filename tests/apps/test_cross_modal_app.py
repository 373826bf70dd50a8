"""The cross-modal app without a browser: what it shows equals the model and the analysis run directly."""

import numpy as np
import pytest
import torch

from explorer import record
from explorer.analysis import attention_localisation, stack_patterns, upsample_patches
from explorer.apps import CrossModalApp
from explorer.data.shapes import ANSWERS, generate_scene, question, tokenize
from explorer.viz.cross_modal import normalise


@pytest.fixture(scope="module")
def app():
    return CrossModalApp(seed=3)


def _direct(app, text):
    scene = generate_scene(app.seed.value, size=app.model.config.image_size, n_objects=app.n_objects.value)
    with torch.no_grad(), record(app.model, "*.cross_attn.hook_pattern") as trace:
        logits = app.model(scene.image[None], torch.tensor([tokenize(text)]))
    return scene, logits[0], stack_patterns(trace, "*.cross_attn.hook_pattern")[:, 0]


def test_answer_and_overlay_match_direct_run(app):
    scene, logits, patterns = _direct(app, app.query.value)
    assert ANSWERS[int(logits.argmax())] in app.answer.value
    # layer 1, the answer token (0), heads averaged
    expected = upsample_patches(patterns[0][:, 0], app.model.grid, tuple(scene.image.shape[-2:])).mean(0)
    np.testing.assert_allclose(np.asarray(app.figure.figure.data[1].z), normalise(expected.numpy()), atol=1e-5)


def test_score_is_the_analysis_of_the_shown_map(app):
    scene, _logits, patterns = _direct(app, app.query.value)
    mask = scene.masks[app._target][None]
    expected = attention_localisation(patterns[0][:, 0].mean(0)[None], mask, app.model.grid)
    assert app.attention_score.mass == pytest.approx(expected.mass, abs=1e-9)
    assert f"{expected.mass:.0%}" in app.scores.value


def test_new_scene_question_layer_and_token(app):
    image_before = app.figure.figure.data[0].source
    app.new_scene.click()
    assert app.seed.value == 4 and app.figure.figure.data[0].source != image_before
    app.kind.value = "colour_of_shape"
    assert app.query.value == question("colour_of_shape", app.target.value)
    assert app.query.value.startswith("what colour is the")
    overlay = np.asarray(app.figure.figure.data[1].z).copy()
    app.layer.value = 2
    assert not np.allclose(np.asarray(app.figure.figure.data[1].z), overlay)
    app.token.value = -1
    assert app.message.value == ""


def test_unknown_word_lists_the_vocabulary(app):
    before = app.text
    app.query.value = "what colour is the dragon"
    assert "xm-error" in app.message.value and "triangle" in app.message.value
    assert app.text == before  # the last good question stays shown


def test_question_about_absent_object_has_no_score():
    app = CrossModalApp(seed=5, n_objects=1)
    missing = next(c for c in ("red", "green", "blue", "yellow") if c != app.scene.objects[0].colour)
    app.query.value = f"what shape is the {missing} object"
    assert app.attention_score is None and "no object" in app.scores.value


def test_bad_constructor_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="explorer.train.cross_modal"):
        CrossModalApp(weights=tmp_path)


def test_verdict_judges_the_answer_against_what_the_question_asks():
    """A colour given to a shape question is wrong, even though it names the object's colour (it used to pass as
    correct because the truth was picked by the answer's type)."""
    app = CrossModalApp(seed=3, n_objects=1)
    obj = app.scene.objects[0]
    app.query.value = question("shape_of_colour", obj.colour)
    probs = torch.zeros(len(ANSWERS))
    probs[ANSWERS.index(obj.colour)] = 1.0  # the model "answers" the object's colour
    app.probs = probs
    app._update_text()
    assert f"wrong ✗ (it is {obj.shape})" in app.answer.value
    probs[:] = 0.0
    probs[ANSWERS.index(obj.shape)] = 1.0
    app._update_text()
    assert "correct ✓" in app.answer.value


def test_the_fast_figure_is_what_the_validated_builder_makes(app):
    from explorer.viz.cross_modal import cross_modal_figure
    from tests.viz.test_figure_specs import check_spec

    for layer in (2, 1):
        app.layer.value = layer
        check_spec(app.figure._spec, cross_modal_figure(*app._figure_arrays()))
    app.new_scene.click()
    check_spec(app.figure._spec, cross_modal_figure(*app._figure_arrays()))
