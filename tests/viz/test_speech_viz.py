"""Speech figures draw the arrays they are given: the spectrogram's heatmap and time axis, every word's true and
predicted span as a named strip and two named lines at the given seconds, the attention map with the DTW path at
``frame * 0.02`` s; bad arrays are refused naming the argument."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explorer.viz.speech import attention_figure, spectrogram_figure, token_label

RNG = np.random.default_rng(0)
WORDS = ["green", "apple", "river"]
TRUE = (np.array([0.013, 0.301, 0.655]), np.array([0.301, 0.655, 1.020]))
PREDICTED = (np.array([0.0, 0.32, 0.6]), np.array([0.32, 0.6, 1.04]))


def shapes_named(fig, prefix: str) -> list:
    return [s for s in fig.layout.shapes if s.name.startswith(prefix)]


def spans(fig, kind: str) -> dict[str, np.ndarray]:
    """x positions of one kind's strips and lines, word by word (read from the shapes by name)."""
    by_name = {s.name: s for s in fig.layout.shapes}
    n = len(shapes_named(fig, f"{kind} ")) // 3
    return {"strip0": np.array([by_name[f"{kind} {i}"].x0 for i in range(n)]),
            "strip1": np.array([by_name[f"{kind} {i}"].x1 for i in range(n)]),
            "start": np.array([by_name[f"{kind} start {i}"].x0 for i in range(n)]),
            "start_x1": np.array([by_name[f"{kind} start {i}"].x1 for i in range(n)]),
            "end": np.array([by_name[f"{kind} end {i}"].x0 for i in range(n)]),
            "labels": [by_name[f"{kind} {i}"].label.text for i in range(n)]}


def test_spectrogram_draws_the_mel_on_a_seconds_axis_with_both_kinds_of_spans():
    mel = RNG.normal(size=(80, 105)).astype(np.float32)
    fig = spectrogram_figure(mel, WORDS, *TRUE, *PREDICTED)
    heatmap = fig.data[0]
    assert heatmap.type == "heatmap" and len(fig.data) == 1
    np.testing.assert_array_equal(heatmap.z, mel)
    np.testing.assert_allclose(heatmap.x, np.arange(105) * 0.01, rtol=0, atol=1e-12)  # frame i at i * 10 ms
    np.testing.assert_array_equal(heatmap.y, np.arange(80))
    assert len(fig.layout.shapes) == 2 * 3 * len(WORDS)  # per kind and word: a strip and two lines
    for kind, (starts, ends) in (("true", TRUE), ("predicted", PREDICTED)):
        drawn = spans(fig, kind)
        np.testing.assert_array_equal(drawn["strip0"], starts)
        np.testing.assert_array_equal(drawn["strip1"], ends)
        np.testing.assert_array_equal(drawn["start"], starts)
        np.testing.assert_array_equal(drawn["start_x1"], starts)  # vertical lines
        np.testing.assert_array_equal(drawn["end"], ends)
        assert drawn["labels"] == WORDS
    strips = shapes_named(fig, "true ")[0], shapes_named(fig, "predicted ")[0]
    assert strips[0].yref == "paper" and strips[0].y0 >= 1 and strips[1].y0 > strips[0].y1  # two rows above the plot
    assert list(fig.layout.xaxis.range) == pytest.approx([-0.005, 1.045])
    json.loads(fig.to_json())


def test_spectrogram_without_predictions_draws_the_true_spans_only():
    fig = spectrogram_figure(np.zeros((80, 50)), WORDS, *TRUE)
    assert shapes_named(fig, "predicted") == [] and len(shapes_named(fig, "true")) == 9
    with pytest.raises(ValueError, match="together"):
        spectrogram_figure(np.zeros((80, 50)), WORDS, *TRUE, PREDICTED[0], None)


def test_word_labels_are_escaped():
    fig = spectrogram_figure(np.zeros((80, 50)), ["<b>x</b>"], [0.0], [0.1])
    assert shapes_named(fig, "true 0")[0].label.text == "&lt;b&gt;x&lt;/b&gt;"


@pytest.mark.parametrize("args, name", [
    ((np.zeros(80), WORDS, *TRUE), "mel"),
    ((np.zeros((80, 50)), WORDS, TRUE[0][:2], TRUE[1]), "true"),
    ((np.zeros((80, 50)), WORDS, *TRUE, PREDICTED[0], PREDICTED[1][:1]), "predicted"),
    ((np.zeros((80, 50)), WORDS, np.array([0, np.nan, 1]), TRUE[1]), "finite"),
], ids=["mel 1-D", "true length", "predicted length", "NaN"])
def test_spectrogram_refuses_bad_arrays(args, name):
    with pytest.raises(ValueError, match=name):
        spectrogram_figure(*args)


def test_attention_draws_the_map_and_the_path_in_seconds():
    tokens = list("ab cd") + ["<eot>"]
    values = RNG.random((6, 40)).astype(np.float32)
    rows = np.array([0, 0, 1, 2, 3, 4, 5, 5])
    cols = np.array([0, 1, 5, 9, 14, 20, 30, 39])
    fig = attention_figure(values, tokens, rows, cols, 0.02, "layer 1, head 2", "attention")
    heatmap, path = fig.data
    np.testing.assert_array_equal(heatmap.z, values)
    np.testing.assert_allclose(heatmap.x, np.arange(40) * 0.02, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(heatmap.y, np.arange(6))
    np.testing.assert_allclose(path.x, cols * 0.02, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(path.y, rows)
    assert list(fig.layout.yaxis.ticktext) == ["a", "b", "␣", "c", "d", "&lt;eot&gt;"]
    assert fig.layout.yaxis.autorange == "reversed"  # token 0 on top, as the text reads
    assert fig.layout.title.text == "layer 1, head 2"
    json.loads(fig.to_json())


def test_token_label():
    assert token_label(" ") == "␣" and token_label("a") == "a" and token_label("<eot>") == "&lt;eot&gt;"


@pytest.mark.parametrize("args, name", [
    ((np.zeros(5), list("abcde"), [0], [0]), "values"),
    ((np.zeros((5, 9)), list("abcd"), [0], [0]), "tokens"),
    ((np.zeros((5, 9)), list("abcde"), [0, 1], [0]), "path_tokens"),
    ((np.zeros((5, 9)), list("abcde"), [0, 5], [0, 1]), "inside"),
    ((np.zeros((5, 9)), list("abcde"), [0, 1], [0, 9]), "inside"),
], ids=["1-D", "labels", "path lengths", "token out", "frame out"])
def test_attention_refuses_bad_arrays(args, name):
    with pytest.raises(ValueError, match=name):
        attention_figure(*args)
