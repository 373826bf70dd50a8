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
