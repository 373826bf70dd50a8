"""Real photos that ship inside installed packages (no download): scikit-learn's sample images."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from explorer._checks import check_choice, check_int

__all__ = ["PHOTOS", "load_photo"]

# name -> file name inside sklearn/datasets/images
PHOTOS = {"china": "china.jpg", "flower": "flower.jpg"}


@lru_cache(maxsize=4)
def _raw(name: str) -> np.ndarray:
    """The photo's pixels, decoded with PIL from scikit-learn's package folder -- what ``load_sample_image`` returns,
    without importing scikit-learn (1.2 s and scipy at every dashboard visitor's kernel start)."""
    import importlib.util
    from pathlib import Path

    from PIL import Image

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the photos ship with scikit-learn, which is not installed (see pyproject.toml)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "images" / PHOTOS[name]
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))  # (height, width, 3) uint8


def load_photo(name: str = "china", height: int | None = None) -> torch.Tensor:
    """A bundled photo as a float tensor in [0, 1].

    Args:
        name: one of :data:`PHOTOS` (``"china"``, ``"flower"``; both 427 x 640).
        height: resize (bilinear, antialiased) to this height keeping the aspect ratio; ``None`` keeps 427.

    Returns:
        Tensor[channel=3, height, width], float32.
    """
    check_choice("name", name, sorted(PHOTOS))
    image = torch.from_numpy(_raw(name).copy()).permute(2, 0, 1).float() / 255.0  # (3, 427, 640)
    if height is None:
        return image
    check_int("height", height, 8, 2048)
    width = round(image.shape[2] * height / image.shape[1])
    resized = F.interpolate(image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].clamp(0.0, 1.0)
