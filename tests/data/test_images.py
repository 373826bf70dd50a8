import numpy as np
import pytest
import torch

from explorer.data import PHOTOS, load_photo


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_full_size_photo_matches_sklearn(name):
    from sklearn.datasets import load_sample_image

    raw = load_sample_image(PHOTOS[name])  # independent reference: (427, 640, 3) uint8
    photo = load_photo(name)
    assert photo.shape == (3, 427, 640) and photo.dtype == torch.float32
    np.testing.assert_allclose(photo.permute(1, 2, 0).numpy() * 255, raw, atol=1e-4)  # exact up to fp32 rounding


def test_resize_keeps_aspect_and_range():
    photo = load_photo("flower", height=120)
    assert photo.shape == (3, 120, round(640 * 120 / 427))
    assert 0.0 <= photo.min() and photo.max() <= 1.0
    # antialiased downscale keeps the mean colour within 1 %
    torch.testing.assert_close(photo.mean((1, 2)), load_photo("flower").mean((1, 2)), atol=0.01, rtol=0)


@pytest.mark.parametrize("kwargs, error, word", [
    ({"name": "cat"}, ValueError, "name"),
    ({"name": "china", "height": 4}, ValueError, "height"),
    ({"name": "china", "height": 12.5}, TypeError, "height"),
])
def test_bad_arguments(kwargs, error, word):
    with pytest.raises(error, match=word):
        load_photo(**kwargs)
