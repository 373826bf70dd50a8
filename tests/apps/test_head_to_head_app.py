"""The head-to-head app without a browser: what it draws equals the shipped models, the analysis and the results."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from explorer.analysis.equivariance import shift_images
from explorer.analysis.looks_at import looks_at
from explorer.apps import HeadToHeadApp
from explorer.apps.head_to_head import EFFICIENCY_FILE, IG_STEPS, NAMES
from explorer.data.digits import digits_dataset
from explorer.models.head_to_head import MODELS, default_head_to_head_dir, load_head_to_head
from explorer.viz.cross_modal import normalise

# a small data_efficiency.json in the shape the experiment writes (the shipped one may not exist yet)
EFFICIENCY = {
    "experiment": "data_efficiency", "sizes": [50, 100, 200, 500, 1347], "seeds": [0, 1, 2],
    "models": ["cnn", "vit", "hybrid", "se_cnn"],
    "curves": {model: [{"size": size, "mean": mean, "std": 0.02, "ci95": [mean - 0.05, mean + 0.04],
                        "accuracies": [mean - 0.02, mean, mean + 0.02]}
                       for size, mean in zip([50, 100, 200, 500, 1347], np.linspace(start, 0.95, 5).tolist())]
               for model, start in (("cnn", 0.6), ("vit", 0.3), ("hybrid", 0.5), ("se_cnn", 0.55))},
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The shipped weights and equivariance.json, plus the small data_efficiency.json above."""
    path = tmp_path_factory.mktemp("head_to_head")
    for item in default_head_to_head_dir().iterdir():
        if item.suffix in (".safetensors", ".json") and item.name != EFFICIENCY_FILE:
            shutil.copy(item, path / item.name)
    (path / EFFICIENCY_FILE).write_text(json.dumps(EFFICIENCY))
    return path


@pytest.fixture(scope="module")
def app(folder):
    return HeadToHeadApp(folder=folder)


@pytest.fixture(scope="module")
def test_set():
    return digits_dataset("test", canvas=24, placement="centre")  # [450, 1, 24, 24], [450]


def _update(widget, state: dict) -> None:
    """What ipykernel does with an ``update`` a page sends through the widget's comm."""
    widget.comm.handle_msg({"header": {"msg_type": "comm_msg"}, "buffers": [],
                            "content": {"comm_id": widget.comm.comm_id,
                                        "data": {"method": "update", "state": state, "buffer_paths": []}}})


def _shifted(test_set, index: int, shift: int) -> torch.Tensor:
    return shift_images(test_set[0][index:index + 1], 0, shift, "circular")  # (1, 1, 24, 24)


@pytest.mark.parametrize("name", list(MODELS))
def test_bars_are_the_softmax_of_the_shipped_model(app, test_set, name):
    app.model.value, app.index.value, app.shift.value = name, 17, 2
    model, entry = load_head_to_head(name)
    with torch.no_grad():
        probs = model(_shifted(test_set, 17, 2)).softmax(-1)[0]
    np.testing.assert_allclose(np.asarray(app.probs_figure.figure.data[0].y), probs.numpy(), atol=1e-6)
    assert app.result.predicted == int(probs.argmax()) and app.label == int(test_set[1][17])
    assert f"says <b>{int(probs.argmax())}</b>" in app.status.value and app.message.value == ""
    label = dict((v, k) for k, v in app.model.options)[name]
    assert f"{entry['parameters']:,} parameters" in label and f"{entry['accuracy']['accuracy']:.1%}" in label


def test_overlays_are_the_library_maps(app, test_set):
    app.model.value, app.index.value, app.shift.value = "vit", 5, -1
    expected = looks_at(load_head_to_head("vit")[0], _shifted(test_set, 5, -1)[0], steps=IG_STEPS)

    def drawn():
        return np.asarray(app.figure.figure.data[1].z)

    for overlay, values in (("ig", expected.ig), ("gradient", expected.gradient), ("rollout", expected.rollout)):
        app.overlay.value = overlay
        np.testing.assert_allclose(drawn(), normalise(values.numpy()), atol=1e-5, err_msg=overlay)
    app.overlay.value = "attention"
    app.layer.value, app.head.value = 2, 3
    np.testing.assert_allclose(drawn(), normalise(expected.attention[1, 3].numpy()), atol=1e-5)
    app.head.value = -1
    np.testing.assert_allclose(drawn(), normalise(expected.attention[1].mean(0).numpy()), atol=1e-5)
    assert "layer 2, heads averaged" in app.figure.figure.layout.title.text
    for name, share in expected.on_digit.items():
        if name != "ig":
            assert f"<b>{share:.0%}</b>" in app.shares.value, name


def test_shift_moves_the_drawn_image_exactly_as_shift_images(app, test_set):
    app.model.value, app.index.value = "cnn", 40
    for shift in (-4, -1, 0, 3, 4):
        app.shift.value = shift
        np.testing.assert_array_equal(np.asarray(app.figure.figure.data[0].z, dtype=np.float32),
                                      _shifted(test_set, 40, shift)[0, 0].numpy())
        assert (f"moved {abs(shift)} px" in app.figure.figure.layout.title.text) == (shift != 0)
    # the flips plot marks the shift's size
    assert app.flips_figure.figure.layout.shapes[0].x0 == 4
    app.shift.value = 0
    assert not app.flips_figure.figure.layout.shapes


def test_a_cnn_hides_the_attention_controls_and_says_why(app):
    app.model.value = "hybrid"
    app.overlay.value = "attention"
    assert app._attention_controls.layout.display is None and app.attention_note.value == ""
    assert app.layer.max == 2 and not app.layer.disabled  # the hybrid has two blocks
    for name in ("cnn", "se_cnn"):
        app.model.value = name
        assert app._attention_controls.layout.display == "none"
        assert "no map over the pixels" in app.attention_note.value or "no attention" in app.attention_note.value
        assert [v for _label, v in app.overlay.options] == ["ig", "gradient"]
        assert app.overlay.value == "ig" and app.result.attention is None and app.message.value == ""
    app.model.value = "vit"
    assert app.layer.max == 3 and app._attention_controls.layout.display is None
    assert app.layer.disabled  # the overlay is IG now: layer and head choose nothing


def test_learning_curves_are_the_json_means_with_their_intervals(app):
    app.model.value = "hybrid"
    traces = {t.name: t for t in app.learning_figure.figure.data}
    assert list(traces) == [NAMES[m] for m in EFFICIENCY["curves"]]
    for model, points in EFFICIENCY["curves"].items():
        t = traces[NAMES[model]]
        np.testing.assert_array_equal(t.x, [p["size"] for p in points])
        np.testing.assert_allclose(t.y, [p["mean"] for p in points], rtol=0, atol=0)
        np.testing.assert_allclose(np.asarray(t.y) + t.error_y.array, [p["ci95"][1] for p in points], atol=1e-12)
        np.testing.assert_allclose(np.asarray(t.y) - t.error_y.arrayminus, [p["ci95"][0] for p in points],
                                   atol=1e-12)
        assert t.line.width == (3.5 if model == "hybrid" else 1.5)
    assert app.learning_figure.figure.layout.xaxis.type == "log"


def test_flip_curves_are_the_json_rows(app, folder):
    rows = json.loads((folder / "equivariance.json").read_text())["aggregates"]["equivariance"]
    traces = {t.name: t for t in app.flips_figure.figure.data}
    assert set(traces) == {NAMES[m] for m in MODELS}
    for model in MODELS:
        mine = sorted((r for r in rows if r["model"] == model and r["mode"] == "circular" and r["shift"][0] == 0),
                      key=lambda r: r["shift"][1])
        t = traces[NAMES[model]]
        np.testing.assert_array_equal(t.x, [r["shift"][1] for r in mine])
        np.testing.assert_array_equal(t.y, [r["prediction_flips"]["mean"] for r in mine])
        np.testing.assert_array_equal(t.error_y.array, [r["prediction_flips"]["std"] for r in mine])
        assert list(t.marker.symbol) == ["diamond" if r["aligned"] else "circle" for r in mine]


def test_without_data_efficiency_results_the_curves_say_so(folder, tmp_path):
    for item in folder.iterdir():
        if item.name != EFFICIENCY_FILE:
            shutil.copy(item, tmp_path / item.name)
    app = HeadToHeadApp(model="se_cnn", folder=tmp_path)
    fig = app.learning_figure.figure
    assert not fig.data and EFFICIENCY_FILE in fig.layout.annotations[0].text
    assert app.efficiency is None and app.message.value == ""


@pytest.mark.skipif(not (default_head_to_head_dir() / EFFICIENCY_FILE).is_file(), reason="not shipped yet")
def test_shipped_learning_curves():
    shipped = json.loads((default_head_to_head_dir() / EFFICIENCY_FILE).read_text())
    app = HeadToHeadApp()
    for t in app.learning_figure.figure.data:
        model = next(m for m in shipped["curves"] if NAMES[m] == t.name)
        np.testing.assert_array_equal(t.y, [p["mean"] for p in sorted(shipped["curves"][model],
                                                                      key=lambda p: p["size"])])


def test_random_image_picks_another_image(app):
    seen = [app.index.value]
    for _ in range(5):
        app.random.click()
        assert app.index.value != seen[-1] and 0 <= app.index.value < 450
        seen.append(app.index.value)
    assert app.result is not None and app.message.value == ""


def test_bad_values_are_refused_with_a_message(app, test_set):
    with pytest.raises(ValueError, match=r"index must be an int in 0 \.\. 449, got 450"):
        HeadToHeadApp(index=450)
    with pytest.raises(ValueError, match="shift must be an int in -4 .. 4"):
        HeadToHeadApp(shift=9)
    with pytest.raises(ValueError, match="model must be one of"):
        HeadToHeadApp(model="resnet")
    with pytest.raises(ValueError, match="overlay 'rollout' needs a model with attention"):
        HeadToHeadApp(model="cnn", overlay="rollout")
    # through the comm, as a modified page sends them: never applied out of range, always said
    app.model.value, app.shift.value = "cnn", 0
    _update(app.index, {"value": 999})
    assert app.index.value == 449 and "h2h-error" in app.message.value and "clamped to 449" in app.message.value
    np.testing.assert_array_equal(np.asarray(app.figure.figure.data[0].z, dtype=np.float32),
                                  test_set[0][449, 0].numpy())  # the image drawn is the one the index says
    _update(app.model, {"index": 99})
    assert app.model.value == "cnn" and "refused" in app.message.value
    _update(app.overlay, {"index": 3})  # "attention" is not an option of a CNN: index 3 does not exist
    assert app.overlay.value == "ig" and "refused" in app.message.value
    _update(app.shift, {"value": "left"})
    assert app.shift.value == 0 and "refused" in app.message.value
    _update(app.index, {"value": 3})  # and it still answers
    assert app.index.value == 3 and app.label == int(test_set[1][3])


def test_an_unreadable_data_efficiency_file_leaves_the_rest_working(folder, tmp_path):
    for item in folder.iterdir():
        shutil.copy(item, tmp_path / item.name)
    (tmp_path / EFFICIENCY_FILE).write_text("{not json")
    app = HeadToHeadApp(folder=tmp_path)
    assert "cannot be read" in app.learning_figure.figure.layout.annotations[0].text
    assert str(tmp_path.parent) not in app.learning_figure.figure.layout.annotations[0].text  # no server paths
    assert app.result is not None and len(app.flips_figure.figure.data) == len(MODELS)
