"""The attention-maps app without a browser: what it shows equals what an independent recording of the model gives."""

import base64
import re

import numpy as np
import pytest
import torch

from explorer import record
from explorer.analysis import attention_rollout, stack_patterns
from explorer.apps import AttentionMapsApp
from explorer.apps.attention_maps import HEAD_VIEW_WINDOW, HEATMAP_MAX, MASKS
from explorer.data import SENTENCES, long_text
from explorer.models import load_pretrained


def reference_patterns(text: str, mask=None, max_length: int = 512) -> torch.Tensor:
    """(layer, head, query, key) recorded directly from the model, outside the app."""
    pretrained = load_pretrained()
    encoding = pretrained.tokenizer.encode(text, max_length=max_length)
    with torch.no_grad(), record(pretrained.model, "*.hook_pattern") as trace:
        pretrained.model(encoding.input_ids, mask=mask)
    return stack_patterns(trace)[:, 0]


@pytest.fixture(scope="module")
def app():
    return AttentionMapsApp()


@pytest.fixture(scope="module")
def reference():
    return reference_patterns(SENTENCES["coreference"])


def test_default_shows_layer_one_head_mean(app, reference):
    assert app.patterns.shape == (6, 12, 16, 16) and app.encoding.tokens[0] == "[CLS]"
    z = np.asarray(app.heatmap.figure.data[0].z)
    np.testing.assert_allclose(z, reference[0].mean(0).numpy(), atol=1e-6)  # fp32, same model
    assert "data-n-tokens='16'" in app.status.value


def test_layer_and_head_update_the_same_views(app, reference):
    heatmap, revision = app.heatmap, app.heatmap.revision
    app.layer.value, app.head.value = 4, 7
    assert app.heatmap is heatmap and app.heatmap.revision > revision  # the page's widget stays; its figure changes
    np.testing.assert_allclose(np.asarray(app.heatmap.figure.data[0].z), reference[3, 7].numpy(), atol=1e-6)
    assert app.heatmap.figure.layout.title.text == "layer 4, head 8"
    # the statistics bars show layer 4 and highlight head 8
    np.testing.assert_allclose(np.asarray(app.stats.figure.data[0].y), app.entropy[3].numpy(), atol=1e-9)
    assert app.stats.figure.data[0].marker.color[7] != app.stats.figure.data[0].marker.color[0]


def test_head_view_lines_are_the_weights_above_threshold(app, reference):
    app.layer.value, app.head.value = 2, 3
    lines = app._head_lines.data
    expected = int((reference[1, 3] >= 0.02).sum())  # independent count of visible pairs
    assert len(lines["w"]) == expected
    k = int(np.argmax(lines["w"]))
    assert lines["w"][k] == pytest.approx(float(reference[1, 3, lines["query"][k], lines["key"][k]]), abs=1e-6)
    # the page's copy is updated in place with the same columns (the widget sends them, BokehJS draws them)
    sent = app.head_view.sources
    assert sent["head-lines"]["w"] == list(lines["w"]) and sent["head-tokens"]["text"] == list(app._head_tokens.data["text"])
    start, end = app.head_view.ranges["head-y-range"]
    assert end - start == len(app._head_tokens.data["y"]) // 2  # one row per token in the window


def test_rollout_view(app, reference):
    app.view.value, app.layer.value, app.fusion.value = "rollout", 6, "max"
    expected = attention_rollout(reference, head_fusion="max")[5]
    np.testing.assert_allclose(np.asarray(app.heatmap.figure.data[0].z), expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(app.heatmap.figure.data[0].z).sum(1), 1.0, atol=1e-5)  # rows stay distributions
    app.view.value, app.fusion.value = "raw", "mean"


def test_mask_veil_and_zero_weights_outside_window(app):
    app.mask.value = "sliding window 3 (conv-like)"
    app.layer.value, app.head.value = 1, 0
    n = len(app.encoding.tokens)
    veil = np.asarray(app.heatmap.figure.data[1].z, dtype=float)
    allowed = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) <= 1  # window 3 = |i - j| <= 1
    assert np.array_equal(veil == 0, allowed) and np.array_equal(veil == 1, ~allowed)  # 1 = grey, 0 = clear
    z = np.asarray(app.heatmap.figure.data[0].z)
    assert np.all(z[~allowed] == 0)
    np.testing.assert_allclose(z, reference_patterns(SENTENCES["coreference"], MASKS[app.mask.value])[0, 0].numpy(),
                               atol=1e-6)
    app.mask.value = "full (as trained)"
    assert np.all(np.asarray(app.heatmap.figure.data[1].z, dtype=float) == 0)  # nothing masked, no NaN (not JSON)


def test_long_input_truncated_aggregated_and_windowed(app):
    app.text.value = long_text(600)
    app.run_button.click()
    assert len(app.encoding.tokens) == 512 and app.encoding.tokens[-1] == "[SEP]"
    assert "attn-truncated" in app.notice.value and "512" in app.notice.value
    z = np.asarray(app.heatmap.figure.data[0].z)
    assert z.shape == (HEATMAP_MAX, HEATMAP_MAX) and "2×2 token blocks" in app.heatmap.figure.layout.title.text
    np.testing.assert_allclose(z.sum(1), 1.0, atol=1e-5)  # queries averaged, keys summed
    assert app.window.max == 512 - HEAD_VIEW_WINDOW
    assert max(app._head_lines.data["query"]) < HEAD_VIEW_WINDOW
    app.window.value = 400
    assert min(app._head_lines.data["query"]) >= 400


def test_bad_text_keeps_previous_state(app):
    before = app.patterns
    app.text.value = "   "
    app.run_button.click()
    assert "text is empty" in app.message.value and app.patterns is before
    app.text.value = SENTENCES["non-ASCII"]
    app.run_button.click()
    assert app.message.value == "" and "[UNK]" in app.encoding.tokens


def test_thumbnail_click_opens_that_head(app):
    app._on_thumbnail(3 * 12 + 5)
    assert (app.layer.value, app.head.value, app.view.value) == (4, 5, "raw")
    frame = app.model_view.figure.layout.shapes[0]
    assert frame.xref == f"x{3 * 12 + 5 + 1} domain"


@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG"), ("svg", b"<svg")])
def test_export_gives_a_download_link(app, fmt, magic):
    app.export_format.value = fmt
    app.export_button.click()
    match = re.search(r"base64,([A-Za-z0-9+/=]+)'", app.export_output.value)
    assert match, app.message.value
    assert base64.b64decode(match.group(1)).startswith(magic)
    assert app._head_plot.output_backend == ("svg" if fmt == "svg" else "canvas")
    # the page's head view is re-embedded with that backend (its toolbar's save button exports in it)
    plot = next(r for r in app.head_view.spec["doc"]["roots"] if r["id"] == app._head_plot.id)
    assert plot["attributes"].get("output_backend", "canvas") == app._head_plot.output_backend


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_tokens"):
        AttentionMapsApp(max_tokens=1000)
    with pytest.raises(FileNotFoundError, match="config.json"):
        AttentionMapsApp(checkpoint="/nonexistent-folder")


def test_memory_guard_refusal_switches_to_streamed_statistics(monkeypatch):
    """Maps over budget: a visible refusal, the maps hidden, and the statistics streamed without any n x n tensor --
    equal to distance_histogram / mean_attention_distance / row_entropy of patterns recorded outside the app (fp32:
    1e-5 for shares and entropies, 1e-4 for distances of up to ~250 tokens); a later input that fits brings the
    maps back."""
    from explorer.analysis import distance_histogram, mean_attention_distance, row_entropy
    from explorer.apps.attention_maps import N_BUCKETS
    from explorer.guard import ENV_BUDGET

    app = AttentionMapsApp()
    monkeypatch.setenv(ENV_BUDGET, str(10_000_000))  # 10 MB: 6 layers x 12 heads x 512^2 patterns do not fit
    app.text.value = long_text(600)
    app.layer.value = 2
    app.run_button.click()
    assert app.message.value == "" and app.stats_only and app.patterns is None
    assert "attn-stats-only" in app.notice.value and "would need" in app.notice.value and "truncated" in app.notice.value
    assert app._maps.layout.display == "none" and "data-stats-only='true'" in app.status.value
    reference = reference_patterns(long_text(600))  # (layer, head, 512, 512), recorded without a budget
    edges = [0, 1] + [2 ** b for b in range(1, N_BUCKETS - 1)] + [1e9]
    shares, _ = distance_histogram(reference[1], edges=edges)  # (head, bucket)
    np.testing.assert_allclose(np.asarray(app.histogram.figure.data[2].z), shares.numpy(), atol=1e-5)
    np.testing.assert_allclose(app.histogram.figure.data[1].x, mean_attention_distance(reference[1]).numpy(), atol=1e-4)
    np.testing.assert_allclose(app.histogram.figure.data[0].x, row_entropy(reference[1]).mean(-1).numpy(), atol=1e-5)
    assert "512 tokens" in app.histogram.figure.layout.title.text
    app.export_what.value = "heatmap"
    app.export_button.click()
    assert "statistics-only" in app.message.value  # nothing to export but the streamed panel
    app.text.value = SENTENCES["coreference"]
    app.run_button.click()
    assert not app.stats_only and app._maps.layout.display is None and app.notice.value == ""


@pytest.mark.parametrize("mask_name", list(MASKS))
def test_streamed_histogram_equals_the_materialised_one(mask_name):
    """The panel computed from q, k, v alone (explorer.kernels, no n x n) against distance_histogram of the
    independently recorded patterns, bucket edges 0, 1, 2, 4, ..., 512, open end. fp32 softmax of the same logits
    computed in two orders: 1e-5."""
    from explorer.analysis import distance_histogram, mean_attention_distance, row_entropy
    from explorer.apps.attention_maps import N_BUCKETS

    app = AttentionMapsApp(SENTENCES["coreference"])
    app.mask.value = mask_name
    app.layer.value = 4
    reference = reference_patterns(SENTENCES["coreference"], MASKS[mask_name])  # (layer, head, query, key)
    edges = [0, 1] + [2 ** b for b in range(1, N_BUCKETS - 1)] + [1e9]
    shares, _ = distance_histogram(reference, edges=edges)  # (layer, head, bucket)
    np.testing.assert_allclose(np.asarray(app.histogram.figure.data[2].z), shares[3].numpy(), atol=1e-5)
    assert app.histogram.figure.layout.title.text.startswith("layer 4")
    np.testing.assert_allclose(app.streamed.mean_distance.mean(-1), mean_attention_distance(reference), atol=1e-5)
    np.testing.assert_allclose(app.streamed.entropy, row_entropy(reference), atol=1e-5)


def test_in_a_kernel_the_head_view_comes_first_and_the_rest_follows():
    """Inside an event loop (a kernel), the constructor returns with the head view drawn and the other figures as
    placeholders; the loop then computes them, and they equal what the synchronous build (no loop) shows."""
    import asyncio
    import json

    async def build():
        early = AttentionMapsApp()
        state = (early._pending, json.loads(early.heatmap.traces), early.head_view.spec != {},
                 dict(early._head_lines.data))
        for _ in range(2000):
            if not early._pending:
                break
            await asyncio.sleep(0.01)
        return early, state

    late, (pending, traces, drawn, lines) = asyncio.run(build())
    assert pending and traces == [] and drawn  # first drawing: the head view only
    sync = AttentionMapsApp()  # no loop here: everything at once
    assert not sync._pending and np.array_equal(lines["w"], sync._head_lines.data["w"])
    untimed = lambda text: re.sub(r"ran in \d+ ms", "ran in … ms", text)  # noqa: E731
    assert not late._pending and untimed(late.status.value) == untimed(sync.status.value)
    for name in ("heatmap", "model_view", "stats", "histogram"):
        assert getattr(late, name).traces == getattr(sync, name).traces, name
        assert getattr(late, name).frame == getattr(sync, name).frame, name


def test_a_control_moved_before_the_rest_is_computed_computes_it():
    import asyncio

    async def build():
        early = AttentionMapsApp()
        early.layer.value = 3  # before the scheduled work ran
        return early, early._pending

    early, pending = asyncio.run(build())
    assert not pending and early.heatmap.figure.layout.title.text.startswith("layer 3")


def test_the_fast_figures_are_what_the_validated_builders_make(app):
    from explorer.viz.attention import (attention_heatmap, head_stats_figure, model_view_figure,
                                        streamed_stats_figure)
    from tests.viz.test_figure_specs import check_spec

    for layer, head in ((2, 3), (5, -1)):
        app.layer.value, app.head.value = layer, head
        check_spec(app.heatmap._spec, attention_heatmap(*app._matrix()))
        check_spec(app.stats._spec, head_stats_figure(*app._layer_stats(), selected=max(head, 0)))
        check_spec(app.histogram._spec, streamed_stats_figure(*app._streamed_panel()))
        check_spec(app.model_view._spec, model_view_figure(app._thumbs.numpy(), app._selected()))
