"""Receptive field of stacked attention layers: measured from the mask's graph, predicted from its geometry.

References: a breadth-first search over the mask in plain Python, and explorer's theoretical receptive field of
the equivalent stack of stride-1 convolutions (Araujo et al. 2019), which a sliding window of w keys must match.
Exact (integer) comparisons.
"""

import pytest
import torch
from torch import nn

from explorer import masks
from explorer.analysis import attention_receptive_field, receptive_field

MASKS = [None, masks.full(), masks.causal(), masks.sliding_window(3), masks.sliding_window(4),
         masks.sliding_window(5, causal=True), masks.dilated_window(3, 2), masks.dilated_window(4, 3, causal=True),
         masks.block_sparse(4), masks.block_sparse(5, ()), masks.block_sparse(4, (2, 9))]


def _bfs(mask, n, layers):
    allowed = (torch.ones(n, n, dtype=torch.bool) if mask is None else mask.dense(n, n)).tolist()
    out = []
    for q in range(n):
        seen = {q}
        for _ in range(layers):
            seen = seen | {k for s in seen for k in range(n) if allowed[s][k]}
        out.append(seen)
    return out


@pytest.mark.parametrize("mask", MASKS, ids=repr)
@pytest.mark.parametrize("n, layers", [(1, 1), (7, 1), (16, 2), (33, 3), (40, 6)])
def test_measured_field_is_the_graph_reach_and_the_geometry_predicts_its_largest(mask, n, layers):
    rf = attention_receptive_field(mask, n, layers)
    for q, seen in enumerate(_bfs(mask, n, layers)):
        assert set(torch.nonzero(rf.reach[q]).flatten().tolist()) == seen
        assert (int(rf.size[q]), int(rf.start[q]), int(rf.end[q])) == (len(seen), min(seen), max(seen))
    assert rf.predicted == int(rf.size.max()), rf.formula
    assert rf.predicted_span == int((rf.end - rf.start + 1).max()), rf.formula


@pytest.mark.parametrize("window, layers", [(3, 1), (3, 4), (5, 2), (7, 3)])
def test_a_sliding_window_stack_has_the_field_of_the_same_conv_stack(window, layers):
    convs = nn.Sequential(*[nn.Conv1d(1, 1, window, padding=window // 2) for _ in range(layers)])
    conv_field = receptive_field(convs, spatial_dims=1).output.size[0]
    rf = attention_receptive_field(masks.sliding_window(window), 200, layers)
    assert conv_field == rf.predicted == int(rf.size.max()) == 1 + layers * (window - 1)
    # an interior query sees exactly the conv's box
    q = 100
    assert (int(rf.start[q]), int(rf.end[q])) == (q - layers * ((window - 1) // 2), q + layers * (window // 2))


def test_content_dependent_and_bad_arguments_are_refused_by_name():
    x = torch.randn(8, 4)
    with pytest.raises(ValueError, match="lsh.*content-dependent"):
        attention_receptive_field(masks.lsh(x, x, 4), 8)
    with pytest.raises(TypeError, match="mask"):
        attention_receptive_field("window", 8)
    with pytest.raises(ValueError, match="n must"):
        attention_receptive_field(None, 0)
    with pytest.raises(ValueError, match="layers must"):
        attention_receptive_field(None, 8, layers=0)
    measured = attention_receptive_field(masks.from_callable(lambda q, k: (k - q) % 3 == 0), 9, 1)
    assert measured.predicted is None and int(measured.size.max()) == 3 and "measured only" in measured.formula
