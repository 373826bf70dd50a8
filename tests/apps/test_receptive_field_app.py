"""The receptive-field app without a browser: sliders -> numbers and figure, never raising."""

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from explorer.analysis import receptive_field
from explorer.apps import ReceptiveFieldApp, dashboard
from explorer.models import ConvStackConfig, build_conv_stack


@pytest.fixture(scope="module")
def app():
    return ReceptiveFieldApp(ConvStackConfig(), height=64)  # stride-1 stack: closed forms apply


def test_defaults_follow_the_closed_form(app):
    layers, k = app.layers.value, app.kernel.value
    assert app.rf.output.size == (1 + layers * (k - 1),) * 2  # stride-1 stack: r = 1 + L(k-1)
    assert app.position == (app.output_shape[0] // 2, app.output_shape[1] // 2)
    assert f"data-size='{1 + layers * (k - 1)}'" in app.summary.value


def test_slider_updates_the_same_figure_view(app):
    figure, revision = app.figure, app.figure.revision
    app.layers.value = 6
    assert app.figure is figure and app.figure.revision > revision  # the page's widget stays; its figure changes
    shape = app.figure.figure.layout.shapes[0]
    assert shape.x1 - shape.x0 == 1 + 6 * (app.kernel.value - 1)
    (r0, r1), (c0, c1) = app.rf.output.box(app.position)
    assert (shape.x0, shape.y0) == (c0 - 0.5, r0 - 0.5)


def test_effective_field_lies_inside_theoretical_box(app):
    grad = app.erf.grad
    (r0, r1), (c0, c1) = app.rf.output.box(app.position)
    inside = grad[max(r0, 0):r1 + 1, max(c0, 0):c1 + 1].sum()
    assert float(inside) == pytest.approx(float(grad.sum()), rel=1e-9)  # gradients cannot leave the field
    assert "100%" in app.summary.value


def test_stride_rescales_position_sliders(app):
    app.layers.value, app.stride.value = 2, 2
    assert app.output_shape == (64 // 4, app._input.shape[-1] // 4)
    assert app.row.max == app.output_shape[0] - 1 and 0 <= app.row.value <= app.row.max
    app.stride.value = 1


def test_impossible_request_shows_message_and_recovers(app):
    app.pool.value, app.pool_every.value = "max", 1
    app.layers.value = 12  # twelve 2x2 poolings: 64 px run out after six
    assert "rf-error" in app.message.value and "too small" in app.message.value
    app.pool.value, app.layers.value = "none", 3
    assert app.message.value == ""
    assert app.rf.output.size == (7, 7)


def test_stride_to_one_pixel_is_an_answer_not_an_error(app):
    """Twelve stride-3 convs leave one output pixel whose gradient reaches no input pixel here: the app says so."""
    app.layers.value, app.stride.value = 12, 3
    assert app.output_shape == (1, 1) and app.message.value == ""
    assert app.erf is None and "erf-none" in app.summary.value
    app.layers.value, app.stride.value = 3, 1
    assert app.erf is not None and app.rf.output.size == (7, 7)


def test_noise_input_and_other_photo(app):
    app.erf_input.value = "noise"
    assert app.message.value == ""
    assert torch.isclose(app.erf.grad.sum(), torch.tensor(1.0, dtype=app.erf.grad.dtype))
    app.photo.value = "flower"
    assert app.message.value == "" and app._image.shape[:2] == app.erf.grad.shape
    assert app.figure.figure.data[0].source.startswith("data:image/png")


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="photo"):
        ReceptiveFieldApp(photo="cat")
    with pytest.raises(TypeError, match="config"):
        ReceptiveFieldApp(config={"layers": 2})
    with pytest.raises(ValueError, match="erf_input"):
        ReceptiveFieldApp(erf_input="zeros")


def test_dashboard_has_receptive_field_tab():
    tab = dashboard()
    assert tab.get_title(0) == "Receptive fields"
    assert isinstance(tab.apps[0], ReceptiveFieldApp)
    assert tab.apps[0].config == ReceptiveFieldApp.DEFAULT


def test_default_app_pools_and_zooms_heatmap_on_the_box():
    app = ReceptiveFieldApp(height=64)
    # six 3x3 convs, 2x2 max pool after every second: r = 3,5,6 | 10,14,16 | 24,32,36 (Araujo et al. recursion)
    assert app.rf.output.size == (36, 36) and app.rf.output.stride == (8, 8)
    (r0, r1), (c0, c1) = app.rf.output.box(app.position)
    x_range = list(app.figure.figure.layout.xaxis2.range)
    assert x_range[0] <= c0 - 0.5 and x_range[1] >= min(c1, app._image.shape[1] - 1) + 0.5


def test_position_without_gradient_shows_no_erf_and_nothing_stale():
    """With ReLUs some output positions get no gradient from any input pixel (the library raises ZeroGradient).
    The app shows that answer -- the theoretical box of *that* position, an empty ERF panel, a note -- instead of an
    error beside the previous position's drawing."""
    from explorer.analysis import ZeroGradient, effective_receptive_field
    from explorer.data import load_photo

    config = replace(ReceptiveFieldApp.DEFAULT, layers=9)
    model, photo = build_conv_stack(config), load_photo("china", 128)[None]
    with torch.no_grad():
        rows, cols = model(photo).shape[-2:]
    dead = []
    for position in itertools.product(range(rows), range(cols)):  # the library decides, independently of the app
        try:
            effective_receptive_field(model, photo, position=position)
        except ZeroGradient:
            dead.append(position)
    assert dead, "this seeded stack has positions without gradient (found by the browser's 50-changes test)"
    app = ReceptiveFieldApp(config)
    app.row.value, app.col.value = dead[0]
    assert app.position == dead[0] and app.erf is None and app.message.value == ""
    assert "erf-none" in app.summary.value
    (r0, r1), (c0, c1) = receptive_field(model).output.box(dead[0])
    shape = app.figure.figure.layout.shapes[0]
    assert (shape.x0, shape.x1, shape.y0, shape.y1) == (c0 - 0.5, c1 + 0.5, r0 - 0.5, r1 + 0.5)
    assert not np.asarray(app.figure.figure.data[1].z).any()  # the ERF panel is empty, not last position's


def test_the_fast_figure_is_what_the_validated_builder_makes(app):
    """A slider step patches a spec (no plotly validation); it equals the validated builder's figure."""
    from explorer.viz.receptive_field import receptive_field_figure
    from tests.viz.test_figure_specs import check_spec

    for layers in (4, 5, 4):
        app.layers.value = layers
        rf_box, erf_box, centre = app._boxes()
        check_spec(app.figure._spec, receptive_field_figure(app._image, app.erf.grad.numpy(), rf_box, erf_box, centre))
    app.layers.value = 6
