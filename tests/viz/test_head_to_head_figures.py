"""``looks_at_grid``: every panel of lesson 05's grid draws exactly the map ``looks_at`` computed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.analysis import looks_at
from explorer.data.digits import digits_dataset
from explorer.models.vision import build_vision_model
from explorer.viz.head_to_head import looks_at_grid


@pytest.fixture(scope="module")
def maps():
    torch.manual_seed(0)
    images, _ = digits_dataset("test", canvas=24)
    image = images[5]
    vit, cnn = build_vision_model("vit", seed=0, image_size=24), build_vision_model("cnn", seed=0, image_size=24)
    return looks_at(vit, image, steps=4), looks_at(cnn, image, steps=4), image


def test_grid_panels_are_the_maps(maps):
    vit, cnn, image = maps
    fig = looks_at_grid(vit, cnn, image)
    want = [vit.attention[0, h] for h in range(4)] + [vit.rollout] + [vit.attention[-1, h] for h in range(4)]
    want += [image[0], vit.gradient, vit.ig, cnn.gradient, cnn.ig]
    assert len(fig.data) == len(want) == 14
    titles = [a.text for a in fig.layout.annotations]
    assert titles[4] == "ViT rollout" and titles[5] == f"ViT layer {vit.attention.shape[0]}, head 1" and titles[9] == "the digit"
    for trace, z in zip(fig.data, want):
        # float32 on both sides: the figure holds the map itself, not a rescaled copy
        np.testing.assert_array_equal(np.asarray(trace.z, dtype=np.float32), z.numpy().astype(np.float32))
    assert fig.data[9].colorscale != fig.data[10].colorscale  # the digit in grey, the maps in red


def test_grid_refuses_swapped_models(maps):
    vit, cnn, image = maps
    with pytest.raises(ValueError, match="vit"):
        looks_at_grid(cnn, vit, image)
    with pytest.raises(ValueError, match="image"):
        looks_at_grid(vit, cnn, image[..., :8])
