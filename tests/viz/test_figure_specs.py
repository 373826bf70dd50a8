"""The fast (spec) path of every figure a control updates equals the validated builder, number for number.

Each ``*_spec`` function builds its skeleton with the validated ``go.Figure`` builder on first use and afterwards
only patches values into a plain dict, with no plotly validation. Here every spec path is checked twice: plotly
validates ``go.Figure(spec)`` (a wrong property name or value raises), and what the page would receive from the spec
equals what it receives from the validated builder given the same arguments (arrays decoded and compared exactly).
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict

import numpy as np
import plotly.graph_objects as go
import pytest

from explorer.apps._plot import PlotView
from explorer.viz import _spec
from explorer.viz._spec import SkeletonCache
from explorer.viz.attention import (attention_heatmap, attention_heatmap_spec, head_stats_figure, head_stats_spec,
                                    model_view_figure, model_view_select, model_view_spec, streamed_stats_figure,
                                    streamed_stats_spec)
from explorer.viz.cross_modal import cross_modal_figure, cross_modal_spec
from explorer.viz.receptive_field import receptive_field_figure, receptive_field_spec

DTYPES = {"f8": np.float64, "f4": np.float32, "u1": np.uint8, "i1": np.int8, "i2": np.int16, "u2": np.uint16,
          "i4": np.int32, "u4": np.uint32}


def plain(value):
    """The page's JSON with typed arrays decoded to numpy (written independently of the code under test)."""
    if isinstance(value, dict):
        if "bdata" in value and "dtype" in value:
            flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=DTYPES[value["dtype"]])
            shape = value.get("shape")
            return flat.reshape([int(s) for s in str(shape).split(",")]) if shape is not None else flat
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def assert_same(a, b, path="figure"):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, path
        np.testing.assert_array_equal(a, b, err_msg=path)
        assert a.dtype == b.dtype, f"{path}: {a.dtype} != {b.dtype}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(set(a) ^ set(b))}"
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def check_spec(spec: dict, reference: go.Figure) -> None:
    """``spec`` validates as a go.Figure and the page receives from it exactly what ``reference`` sends."""
    validated = go.Figure(spec)  # plotly's validation of every property of the fast path's output
    fast, slow, again = PlotView(spec), PlotView(reference), PlotView(validated)
    for key in ("traces", "frame"):
        assert_same(plain(json.loads(getattr(fast, key))), plain(json.loads(getattr(slow, key))), key)
        assert_same(plain(json.loads(getattr(again, key))), plain(json.loads(getattr(slow, key))), key)


@pytest.fixture(autouse=True)
def fresh_skeletons(monkeypatch):
    """Each test starts without skeletons, so the first call builds one and later calls take the patch path."""
    import explorer.viz.attention as attention
    import explorer.viz.cross_modal as cross_modal
    import explorer.viz.receptive_field as receptive_field

    monkeypatch.setattr(receptive_field, "_SKELETONS", SkeletonCache())
    monkeypatch.setattr(cross_modal, "_SKELETONS", SkeletonCache())
    monkeypatch.setattr(attention, "_SKELETONS", defaultdict(SkeletonCache))


def rf_args(rng, shape=(20, 30), box=((3, 9), (4, 12)), erf_box=((5, 7.5), (6.25, 9)), centre=(6, 8.0)):
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    erf = rng.random(shape).astype(np.float32)
    return image, erf, box, erf_box, centre


def test_receptive_field_spec_equals_the_validated_builder():
    rng = np.random.default_rng(0)
    first = rf_args(rng)
    check_spec(receptive_field_spec(*first), receptive_field_figure(*first))  # the skeleton itself
    for args in (rf_args(rng, box=((-4, 30), (0, 2)), erf_box=((1, 1), (2, 2)), centre=(np.int64(3), np.float64(1))),
                 rf_args(rng, box=((np.int64(0), np.int64(19)), (5, 5))), first):
        check_spec(receptive_field_spec(*args), receptive_field_figure(*args))
    other = rf_args(rng, shape=(12, 9), box=((0, 3), (1, 4)))  # another size: its own skeleton
    check_spec(receptive_field_spec(*other), receptive_field_figure(*other))


def test_patches_share_what_did_not_change():
    rng = np.random.default_rng(1)
    a = receptive_field_spec(*rf_args(rng))
    b = receptive_field_spec(*rf_args(rng))
    assert b["layout"]["template"] is a["layout"]["template"] and b["layout"]["xaxis"] is a["layout"]["xaxis"]
    assert b["data"][1]["hovertemplate"] == a["data"][1]["hovertemplate"] and b["data"][1] is not a["data"][1]
    spec = {"data": [{"type": "bar", "y": [1]}], "layout": {"shapes": [{"x0": 1}, {"x0": 2}], "height": 300}}
    moved = _spec.patch(spec, layout={"shapes": {1: {"x0": 5}}})
    assert moved["layout"]["shapes"] == [{"x0": 1}, {"x0": 5}] and spec["layout"]["shapes"][1] == {"x0": 2}
    assert moved["data"] is spec["data"] and moved["layout"]["shapes"][0] is spec["layout"]["shapes"][0]


def test_cross_modal_spec_equals_the_validated_builder():
    rng = np.random.default_rng(2)

    def args(box):
        image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        maps = rng.random((6, 16, 16)).astype(np.float32)
        return image, maps[0], maps[1] * 3, maps[2:], box

    for box in (((2, 5), (3, 9)), None, ((0, 15), (np.int64(4), np.int64(4)))):
        a = args(box)
        check_spec(cross_modal_spec(*a), cross_modal_figure(*a))
    zeros = (np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16)), np.zeros((16, 16)), np.zeros((4, 16, 16)), None)
    check_spec(cross_modal_spec(*zeros), cross_modal_figure(*zeros))


def test_attention_specs_equal_the_validated_builders():
    rng = np.random.default_rng(3)
    tokens = ["[CLS]", "the", "<b>cat</b>", "sat", "[SEP]"]
    for blocked, title in ((None, "layer 1, mean of all heads"), (np.tril(np.ones((5, 5), bool)) == 0, ""),
                           (None, "layer 6, head 12")):
        a = (rng.random((5, 5)).astype(np.float32), tokens, blocked, title)
        check_spec(attention_heatmap_spec(*a), attention_heatmap(*a))
    long = (rng.random((70, 70)), [f"t{i}" for i in range(140)], None, "aggregated", 2)
    check_spec(attention_heatmap_spec(*long), attention_heatmap(*long))

    thumbs = rng.random((3, 4, 5, 5)).astype(np.float32)
    check_spec(model_view_spec(thumbs, (0, 0)), model_view_figure(thumbs, (0, 0)))
    other = rng.random((3, 4, 5, 5)).astype(np.float32)
    spec = model_view_spec(other, (2, 1))
    check_spec(spec, model_view_figure(other, (2, 1)))
    check_spec(model_view_select(spec, (1, 3), 4), model_view_figure(other, (1, 3)))

    for selected in (0, 5, 11):
        bars = (rng.random(12), rng.random(12) * 9, rng.random(12).astype(np.float32))
        check_spec(head_stats_spec(*bars, selected=selected), head_stats_figure(*bars, selected=selected))

    buckets = [(0, 1), (1, 2), (2, 4), (4, None)]
    for selected, title in ((-1, "layer 1"), (3, "layer 2: streamed"), (0, "")):
        s = (rng.random(6), rng.random(6) * 4, rng.random((6, 4)), buckets, title, selected)
        check_spec(streamed_stats_spec(*s), streamed_stats_figure(*s))


def test_png_is_encoded_once_per_image():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    uri = _spec.cached_png_uri(image)
    assert _spec.cached_png_uri(image.copy()) is uri  # same pixels: the same string, not encoded again
    changed = image.copy()
    changed[0, 0, 0] ^= 1
    assert _spec.cached_png_uri(changed) != uri


def test_intervene_output_spec_equals_the_validated_builder(monkeypatch):
    import explorer.viz.intervene as intervene

    monkeypatch.setattr(intervene, "_SKELETONS", SkeletonCache())
    rng = np.random.default_rng(5)
    labels = ["bank", "<i>bat</i>", "cell"]
    for ablated in (0, 1, 3, 0):
        a = ((0.9, rng.random()), rng.random(3), rng.random(3) - 0.5, rng.random(3), rng.random(3), labels,
             (1.0, rng.random()), ablated)
        check_spec(intervene.output_change_spec(*a), intervene.output_change_figure(*a))


def test_long_range_curves_move_only_the_distance_line():
    from explorer.viz.long_range import accuracy_distance_figure, curves_at_distance

    ds = [1, 2, 4, 8, 16]
    curve = {str(d): {"mean": 1 - d / 40, "ci95": [1 - d / 30, 1 - d / 50]} for d in ds}
    attention = {str(d): {"later_token": [{"mean": d * 0.8, "ci95": [0, 1]}, {"mean": d * 1.1, "ci95": [0, 1]}]}
                 for d in ds}
    args = ({"cnn": curve, "attention": curve}, {"cnn": 5, "attention": None}, {"cnn": "CNN", "attention": "attn"},
            attention)
    spec = _spec.figure_spec(accuracy_distance_figure(*args, 4))
    for distance in (16, 1, 4):
        check_spec(curves_at_distance(spec, distance), accuracy_distance_figure(*args, distance))


def test_head_to_head_specs_equal_the_validated_builders(monkeypatch):
    import explorer.viz.head_to_head as h2h

    monkeypatch.setattr(h2h, "_SKELETONS", defaultdict(SkeletonCache))
    rng = np.random.default_rng(6)
    for title in ("test image 3: IG", "", "moved <b>2</b> px"):
        a = (rng.random((12, 12)), rng.random((12, 12)) - 0.5, title)
        check_spec(h2h.digit_spec(*a), h2h.digit_figure(*a))
    for predicted, target in ((3, 3), (0, 9), (5, None)):
        p = (rng.dirichlet(np.ones(10)), predicted, target)
        check_spec(h2h.probability_spec(*p), h2h.probability_figure(*p))


def test_long_range_sequence_spec_equals_the_validated_builder(monkeypatch):
    import explorer.viz.long_range as long_range

    monkeypatch.setattr(long_range, "_SKELETONS", SkeletonCache())
    rng = np.random.default_rng(7)
    fields = {"cnn": 9, "dilated_cnn": 31}
    labels = {"cnn": "CNN", "dilated_cnn": "dilated", "attention": "attention"}
    for first, second, names in ((3, 11, ("A", "B")), (0, 63, ("B", "A")), (30, 31, ("A", "B"))):
        a = (rng.integers(0, 9, 64), first, second, names, fields, labels, rng.random(64) / 4, f"seed {first}")
        check_spec(long_range.sequence_spec(*a), long_range.sequence_figure(*a))


def test_speech_specs_equal_the_validated_figures():
    from explorer.viz import speech

    rng = np.random.default_rng(8)
    mel = rng.random((80, 120)).astype(np.float32)
    words = ["the", "<cat>", "sat"]
    starts, ends = np.array([0.05, 0.4, 0.8]), np.array([0.35, 0.7, 1.1])
    for predicted, title in ((None, ""), ((starts + 0.01, ends - 0.02), "spoken")):
        a = (mel, words, starts, ends, *(predicted or (None, None)), 0.01, title)
        check_spec(speech.spectrogram_spec(*a), speech.spectrogram_figure(*a))
    values = rng.random((6, 40))
    path = (np.array([0, 1, 2, 3, 4, 5]), np.array([0, 5, 9, 20, 30, 39]))
    a = (values, list("ab c") + ["x", "<eot>"], *path, 0.02, "alignment & path", "standardised")
    check_spec(speech.attention_spec(*a), speech.attention_figure(*a))


def test_cost_scaling_spec_equals_the_validated_builder(monkeypatch):
    import explorer.viz.cost as cost
    from explorer.viz.cost import CostSeries, cost_scaling_figure, cost_scaling_spec

    monkeypatch.setattr(cost, "_SKELETONS", SkeletonCache())
    rng = np.random.default_rng(7)

    def series(n_points, analytic):
        ns = 2 ** np.arange(6, 6 + n_points)
        out = []
        for i, op in enumerate(("attention", "conv1d")):
            for suffix, symbol in (("", "circle"), (" (shipped)", "circle-open")):
                curve = rng.random(n_points) if analytic and suffix == "" else None
                out.append(CostSeries(op, suffix, ns, rng.random(n_points), rng.integers(1, 10**9, n_points),
                                      f"#00000{i}", symbol, flops=curve, memory=curve))
        return out

    gpu = [{"n": 1024, "median_s": 0.001, "label": "fused", "device_name": "H100"}]
    first = series(5, True)
    check_spec(cost_scaling_spec(first, gpu, "t"), cost_scaling_figure(first, gpu, "t"))  # the skeleton
    for args in (series(5, True), series(3, True)):  # new numbers, fewer sizes: patched
        spec = cost_scaling_spec(args, gpu, "t")
        assert len(cost._SKELETONS._items) == 1
        check_spec(spec, cost_scaling_figure(args, gpu, "t"))
    other = series(4, False)  # no analytic curves: another structure, its own skeleton
    check_spec(cost_scaling_spec(other, (), None), cost_scaling_figure(other, (), None))
    assert len(cost._SKELETONS._items) == 2
