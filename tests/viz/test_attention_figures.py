"""Figure builders of the attention views: data in, the same data out in the right traces."""

import numpy as np

from explorer.kernels import distance_buckets
from explorer.viz.attention import bucket_labels, streamed_stats_figure


def test_bucket_labels_follow_the_kernel_buckets():
    assert distance_buckets(5) == [(0, 1), (1, 2), (2, 4), (4, 8), (8, None)]
    assert bucket_labels(distance_buckets(5)) == ["0", "1", "2–3", "4–7", "≥ 8"]


def test_streamed_stats_figure_carries_the_values():
    rng = np.random.default_rng(0)
    share = rng.dirichlet(np.ones(6), size=4)  # (head, bucket)
    entropy, distance = rng.random(4), 10 * rng.random(4)
    fig = streamed_stats_figure(entropy, distance, share, distance_buckets(6), "t", selected=2)
    assert [t.type for t in fig.data] == ["bar", "bar", "heatmap"]
    np.testing.assert_array_equal(fig.data[0].x, entropy)
    np.testing.assert_array_equal(fig.data[1].x, distance)
    np.testing.assert_array_equal(fig.data[2].z, share)
    assert list(fig.data[2].x) == bucket_labels(distance_buckets(6))
    assert fig.data[0].marker.color[2] != fig.data[0].marker.color[0]  # the selected head stands out


def test_head_view_lines_are_each_heads_weights_above_the_threshold():
    """Written against a plain loop over (head, query, key): the vectorised columns hold the same lines, in the same
    order, with the geometry the figure draws (query on the left at y = -q, key on the right at y = -k)."""
    from explorer.viz.attention import HEAD_COLOURS, MAX_HEADS, head_view_data, head_view_figure

    rng = np.random.default_rng(4)
    logits = rng.normal(size=(4, 11, 11)) * 2
    pattern = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    tokens = [f"t{i}" for i in range(11)]
    token_cols, lines = head_view_data(tokens, pattern, heads=[3, 1], start=2, size=6, threshold=0.05)
    expected = [(h, q, k, float(pattern[h, q, k])) for h in (3, 1) for q in range(2, 8) for k in range(2, 8)
                if pattern[h, q, k] >= 0.05]
    got = list(zip(lines["head"].tolist(), lines["query"].tolist(), lines["key"].tolist(), lines["w"].tolist()))
    assert got == expected and len(got) > 10
    np.testing.assert_array_equal(lines["alpha"], lines["w"])
    np.testing.assert_array_equal(lines["y0"], -lines["query"].astype(float))
    np.testing.assert_array_equal(lines["y1"], -lines["key"].astype(float))
    assert set(lines["x0"].tolist()) == {0.06} and set(lines["x1"].tolist()) == {0.94}
    assert token_cols["text"] == [f"t{i}" for i in range(2, 8)] * 2
    assert token_cols["y"].tolist() == [-float(i) for i in range(2, 8)] * 2
    assert token_cols["side"] == ["query"] * 6 + ["key"] * 6 and token_cols["index"].tolist() == list(range(2, 8)) * 2
    # colour of head h: BokehJS's LinearColorMapper puts v in bin floor((v - low) / (high - low) * N) of its palette
    fig, _, _ = head_view_figure(token_cols, lines)
    mapper = next(r.glyph.line_color.transform for r in fig.renderers if hasattr(r.glyph, "x0"))
    n = len(mapper.palette)
    for h in range(MAX_HEADS):
        index = int(np.floor((h - mapper.low) / (mapper.high - mapper.low) * n))
        assert mapper.palette[min(index, n - 1)] == HEAD_COLOURS[h % len(HEAD_COLOURS)]
    empty = head_view_data(tokens, pattern, heads=[], start=0)[1]
    assert all(len(column) == 0 for column in empty.values())
