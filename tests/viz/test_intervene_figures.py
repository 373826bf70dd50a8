"""Intervention figures draw the arrays they are given, where the app's grid puts them (heads on x, layer 1 on top),
with colour scales centred on 0 for signed numbers; bad arrays are refused naming the argument."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from explorer.viz.intervene import head_numbers_figure, output_change_figure, patching_figure, query_key_figure

RNG = np.random.default_rng(0)
LABELS = ["cake", "bottle", "nurse", "market"]


def grid(layers: int = 6, heads: int = 12) -> np.ndarray:
    return RNG.normal(size=(layers, heads))


def test_head_numbers_draw_the_three_arrays_on_the_grid():
    attention, importance, effect = np.abs(grid()), np.abs(grid()), grid()
    attention[0, 0] = np.nan  # an undefined cell stays blank, not zero
    fig = head_numbers_figure(attention, importance, effect, "piano")
    assert [t.type for t in fig.data] == ["heatmap"] * 3
    for trace, array in zip(fig.data, (attention, importance, effect)):
        np.testing.assert_array_equal(trace.z, array)
        assert list(trace.x) == list(range(1, 13)) and list(trace.y) == list(range(1, 7))
    for suffix in ("", "2", "3"):
        assert fig.layout[f"yaxis{suffix}"].autorange == "reversed"  # layer 1 at the top, as in the grid
    limit = float(np.abs(effect).max())
    assert (fig.data[2].zmin, fig.data[2].zmid, fig.data[2].zmax) == (-limit, 0, limit)
    assert "'piano'" in fig.layout.annotations[0].text
    json.loads(fig.to_json())  # NaN travels as a typed array, the figure stays valid JSON


@pytest.mark.parametrize("bad, name", [(np.zeros((6, 11)), "importance"), (np.zeros(12), "importance")])
def test_head_numbers_refuse_mismatched_arrays(bad, name):
    with pytest.raises(ValueError, match=name):
        head_numbers_figure(np.zeros((6, 12)), bad, np.zeros((6, 12)))


def test_patching_figure_and_its_title():
    restored = grid()
    fig = patching_figure(restored, 0.41, 0.25, "piano")
    np.testing.assert_array_equal(fig.data[0].z, restored)
    assert fig.data[0].zmid == 0 and fig.data[0].zmax == max(1.0, float(np.abs(restored).max()))
    assert "0.410" in fig.layout.title.text and "0.250" in fig.layout.title.text
    empty = patching_figure(np.full((6, 12), np.nan), 0.4, math.nan, None)
    assert "share no word" in empty.layout.title.text and empty.data[0].zmax == 1.0


def test_output_change_figure_draws_clean_and_now():
    clean, now = RNG.uniform(size=4), RNG.uniform(size=4)
    p_clean, p_now = RNG.uniform(size=4), RNG.uniform(size=4)
    fig = output_change_figure((0.5, 0.25), clean, now, p_clean, p_now, LABELS, (0.75, 0.5), ablated=2)
    assert [list(t.y) for t in fig.data[:2]] == [[0.5], [0.25]]
    for trace, array in zip(fig.data[2:], (clean, now, p_clean, p_now)):
        np.testing.assert_array_equal(trace.y, array)
        assert list(trace.x) == LABELS
    assert fig.data[1].name == "2 heads ablated" and fig.layout.barmode == "group"
    texts = [a.text for a in fig.layout.annotations]
    assert texts[0] == "this pair<br>0.500 → 0.250"
    assert f"{clean.mean():.3f} → {now.mean():.3f}" in texts[1] and "75% → 50%" in texts[2]
    assert list(fig.layout.yaxis3.range) == [0, 1.02]


def test_output_change_figure_refuses_wrong_lengths():
    with pytest.raises(ValueError, match="batch_now"):
        output_change_figure((0.5, 0.4), np.zeros(4), np.zeros(3), np.zeros(4), np.zeros(4), LABELS, (1, 1))
    with pytest.raises(ValueError, match="accuracy"):
        output_change_figure((0.5, 0.4), np.zeros(4), np.zeros(4), np.zeros(4), np.zeros(4), LABELS, (1,))


def test_query_key_figure_takes_the_arithmetic_apart():
    keys, dim = 5, 8
    q, k = RNG.normal(size=dim), RNG.normal(size=(keys, dim))
    product = q[None] * k
    dots = product.sum(-1) / math.sqrt(dim)
    softmax = np.exp(dots) / np.exp(dots).sum()
    tokens = ["[CLS]", "the", "<b>", "piano", "[SEP]"]
    fig = query_key_figure(q, k, product, dots, softmax, tokens, 3, "title")
    np.testing.assert_array_equal(fig.data[0].z, q[None])
    np.testing.assert_array_equal(fig.data[1].z, k)
    np.testing.assert_array_equal(fig.data[2].z, product)
    np.testing.assert_array_equal(fig.data[3].x, dots)
    np.testing.assert_array_equal(fig.data[4].x, softmax)
    assert list(fig.data[4].y) == list(range(keys)) and fig.data[4].orientation == "h"
    assert list(fig.layout.yaxis.ticktext) == ["[CLS]", "the", "&lt;b&gt;", "piano", "[SEP]"]  # escaped
    outline = fig.layout.shapes[0]
    assert (outline.y0, outline.y1) == (2.5, 3.5)
    assert fig.data[0].xaxis == fig.data[2].xaxis  # q sits above q*k, dimension for dimension


@pytest.mark.parametrize("change, name", [({"product": np.zeros((5, 7))}, "product"), ({"dots": np.zeros(4)}, "dots"),
                                          ({"tokens": ["a"] * 4}, "tokens"), ({"query": 5}, "query"),
                                          ({"q": np.zeros(7)}, "q must")])
def test_query_key_figure_refuses_inconsistent_parts(change, name):
    parts = {"q": np.zeros(8), "k": np.zeros((5, 8)), "product": np.zeros((5, 8)), "dots": np.zeros(5),
             "softmax": np.full(5, 0.2), "tokens": ["a"] * 5, "query": 0}
    parts.update(change)
    with pytest.raises(ValueError, match=name):
        query_key_figure(**parts)
