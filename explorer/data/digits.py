"""Handwritten digits (scikit-learn's bundled 8 x 8 set) placed on a larger canvas, with a fixed split.

The lesson "head to head on images" trains a CNN, a ViT, a hybrid and an SE-CNN on the same small images and asks
where they differ: data efficiency (:func:`digits_dataset` with growing ``n``), and positions never seen in
training (``placement="left"`` for training, ``"right"`` for testing). The digits are the 1797 images of
``sklearn.datasets.load_digits`` (values 0-16, ten classes, about 180 per class), read straight from the data file
inside the installed scikit-learn package: no download, and no ``import sklearn`` (1.2 s and 70 MB in every
dashboard kernel).

Everything is a deterministic function of the arguments:

* :func:`digits_split` (``seed=0``, ``test_fraction=0.25``): **1347 train / 450 test** images, stratified per class
  (each class's test count is the floor or the ceiling of ``test_fraction`` times its size; the total test size is
  ``ceil(test_fraction * 1797)``, as in ``sklearn.model_selection.train_test_split``). :func:`digits_dataset` always
  uses this default split, so the test set is the same in every experiment.
* :func:`digits_indices`: the split's images in a seeded *class-balanced* order (round ``r`` holds the ``r``-th
  image of every class, the classes in a shuffled order), so the first ``n`` have ``n / 10`` images per class
  (within 1) and a smaller training set is always a subset of a larger one with the same seed.
* placements: the canvas position of every image is drawn once per ``(seed, placement)`` for all 1797 images and
  looked up by image index, so an image keeps its position whatever ``n`` is.
"""

from __future__ import annotations

import gzip
import math
from functools import lru_cache

import numpy as np
import torch

from explorer._checks import check_choice, check_int, check_real

__all__ = [
    "N_DIGITS", "DIGIT_SIZE", "DIGIT_MAX", "NUM_CLASSES", "SPLITS", "PLACEMENTS", "load_digits_arrays",
    "digits_split", "digits_indices", "digit_positions", "place_on_canvas", "digits_dataset",
]

N_DIGITS = 1797        # images in the file
DIGIT_SIZE = 8         # side of a digit in pixels
DIGIT_MAX = 16         # pixel values are integers 0..16 (ink counts in 4 x 4 blocks of the original 32 x 32 bitmaps)
NUM_CLASSES = 10
SPLITS = ("train", "test")
PLACEMENTS = ("centre", "left", "right", "random")
_DATA_FILE = ("datasets", "data", "digits.csv.gz")  # inside the sklearn package folder
_PLACEMENT_STREAM = {name: i for i, name in enumerate(PLACEMENTS)}  # one random stream per placement
_ORDER_STREAM = len(PLACEMENTS)  # the class-balanced order gets its own stream


@lru_cache(maxsize=1)
def _read() -> tuple[np.ndarray, np.ndarray]:
    """Pixels and labels from scikit-learn's ``digits.csv.gz`` (65 columns: 64 pixels row-major, then the label).

    The arrays are made read-only because they are shared by every caller of the cache.
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the digits ship with scikit-learn, which is not installed (see pyproject.toml)")
    path = Path(spec.submodule_search_locations[0]).joinpath(*_DATA_FILE)
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: this scikit-learn install does not ship the digits data file")
    with gzip.open(path, "rt") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.int64)  # (1797, 65)
    if table.shape != (N_DIGITS, DIGIT_SIZE * DIGIT_SIZE + 1):
        raise RuntimeError(f"{path} has shape {table.shape}, expected ({N_DIGITS}, {DIGIT_SIZE ** 2 + 1})")
    images = table[:, :-1].reshape(N_DIGITS, DIGIT_SIZE, DIGIT_SIZE).astype(np.uint8)  # values 0..16
    labels = table[:, -1].astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits, as ``sklearn.datasets.load_digits()`` returns them (file order).

    Returns:
        ``(images, labels)``: ``images`` uint8 ``[1797, 8, 8]`` with values 0..16, ``labels`` int64 ``[1797]``
        in 0..9. Fresh copies of a cached read (the file is parsed once per process, about 10 ms).
    """
    images, labels = _read()
    return images.copy(), labels.copy()


@lru_cache(maxsize=16)
def _split(seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    _, labels = _read()
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == c) for c in range(NUM_CLASSES)]  # (class) -> sorted image indices
    exact = np.array([test_fraction * len(m) for m in members])  # test images each class should get
    counts = np.floor(exact).astype(np.int64)
    # largest remainders get the missing images (ties: lower class first), so that the total is
    # ceil(test_fraction * N) and every class is within one image of its exact share
    missing = math.ceil(test_fraction * N_DIGITS - 1e-9) - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:missing]] += 1
    train, test = [], []
    for m, k in zip(members, counts):
        shuffled = rng.permutation(m)
        test.append(shuffled[:k])
        train.append(shuffled[k:])
    train_idx, test_idx = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    if not len(train_idx) or not len(test_idx):
        raise ValueError(f"test_fraction={test_fraction} leaves an empty split")
    train_idx.flags.writeable = False
    test_idx.flags.writeable = False
    return train_idx, test_idx


def digits_split(seed: int = 0, test_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """A stratified train/test split of the 1797 digits.

    Args:
        seed: int >= 0 for numpy's ``default_rng``; the split is a deterministic function of it.
        test_fraction: share of each class put in the test set, in (0, 1). The defaults give 1347 train and 450
            test images.

    Returns:
        ``(train, test)``: sorted int64 arrays of image indices (into :func:`load_digits_arrays`), disjoint and
        together covering all 1797 images.
    """
    seed = check_int("seed", seed, 0, integral=True)
    test_fraction = check_real("test_fraction", test_fraction, 0, 1, low_open=True, high_open=True)
    train, test = _split(seed, test_fraction)
    return train.copy(), test.copy()


def digits_indices(split: str = "train", seed: int = 0, n: int | None = None) -> np.ndarray:
    """Image indices of the fixed split (:func:`digits_split` defaults) in a seeded class-balanced order.

    Round ``r`` of the order holds the ``r``-th image (in a seeded shuffle) of every class that still has one, the
    classes in a seeded shuffled order; so any prefix has every class within one image of the others (until the
    smallest class runs out, at 131 train / 43 test images per class), and ``digits_indices(split, seed, n)`` is a
    prefix of ``digits_indices(split, seed, m)`` for ``n < m``.

    Args:
        split: ``"train"`` (1347 images) or ``"test"`` (450).
        seed: int >= 0; the order is a deterministic function of ``(split, seed)``.
        n: keep the first ``n`` (1 .. split size); None keeps all.

    Returns:
        int64 array ``[n]`` of indices into :func:`load_digits_arrays`.
    """
    split = check_choice("split", split, SPLITS)
    seed = check_int("seed", seed, 0, integral=True)
    order = _balanced_order(split, seed)
    if n is not None:
        n = check_int("n", n, 1, len(order), integral=True)
    return order[:n].copy()


@lru_cache(maxsize=32)
def _balanced_order(split: str, seed: int) -> np.ndarray:
    _, labels = _read()
    indices = digits_split()[SPLITS.index(split)]
    rng = np.random.default_rng([seed, _ORDER_STREAM, SPLITS.index(split)])
    ranks = np.empty(len(indices), dtype=np.int64)  # rank of each image within its class (after a shuffle)
    split_labels = labels[indices]
    for c in range(NUM_CLASSES):
        where = np.flatnonzero(split_labels == c)
        ranks[where[rng.permutation(len(where))]] = np.arange(len(where))
    class_keys = rng.random((int(ranks.max()) + 1, NUM_CLASSES))  # shuffled class order within each round
    order = np.lexsort((class_keys[ranks, split_labels], ranks))  # by round, then by the round's class order
    result = indices[order]
    result.flags.writeable = False
    return result


def digit_positions(placement: str, canvas: int = 16, seed: int = 0) -> np.ndarray:
    """Top-left ``(row, col)`` on the canvas of every one of the 1797 digits, for one placement.

    * ``"centre"``: ``((canvas - 8) // 2, (canvas - 8) // 2)`` for every image;
    * ``"left"``: columns entirely in the left half (col in ``[0, canvas // 2 - 8]``), any row;
    * ``"right"``: columns entirely in the right half (col in ``[ceil(canvas / 2), canvas - 8]``), any row;
    * ``"random"``: anywhere (row and col in ``[0, canvas - 8]``).

    Rows and columns are uniform integers, drawn per ``(seed, placement)`` for all images at once and indexed by
    image, so a subset of the images keeps its positions. ``"left"`` and ``"right"`` need ``canvas >= 16``; at 16
    there is a single column per half (0 and 8) and only the row varies.

    Returns:
        int64 array ``[1797, 2]`` of ``(row, col)``.
    """
    placement = check_choice("placement", placement, PLACEMENTS)
    canvas = check_int("canvas", canvas, DIGIT_SIZE, integral=True)
    seed = check_int("seed", seed, 0, integral=True)
    if placement in ("left", "right") and canvas < 2 * DIGIT_SIZE:
        raise ValueError(f"canvas must be >= {2 * DIGIT_SIZE} for placement={placement!r} (a digit must fit in "
                         f"half of the canvas), got {canvas}")
    last = canvas - DIGIT_SIZE  # largest top-left coordinate that keeps the digit on the canvas
    if placement == "centre":
        return np.full((N_DIGITS, 2), last // 2, dtype=np.int64)
    rng = np.random.default_rng([seed, _PLACEMENT_STREAM[placement]])
    low, high = {"left": (0, canvas // 2 - DIGIT_SIZE), "right": ((canvas + 1) // 2, last),
                 "random": (0, last)}[placement]
    rows = rng.integers(0, last + 1, N_DIGITS)
    cols = rng.integers(low, high + 1, N_DIGITS)
    return np.stack([rows, cols], axis=1).astype(np.int64)


def place_on_canvas(
    images: np.ndarray | torch.Tensor, canvas: int = 16, positions: np.ndarray | torch.Tensor | None = None
) -> torch.Tensor:
    """Put each 8 x 8 digit, scaled to [0, 1], on a zero ``canvas x canvas`` background.

    Args:
        images: ``[N, 8, 8]`` raw digit values in 0..16 (any numeric dtype), as :func:`load_digits_arrays` gives
            them; divided by 16.
        canvas: side of the output (>= 8).
        positions: ``[N, 2]`` integer top-left ``(row, col)`` of each digit, each in ``[0, canvas - 8]``; None
            centres every digit at ``(canvas - 8) // 2``.

    Returns:
        float32 tensor ``[N, 1, canvas, canvas]``: ``out[i, 0, r + a, c + b] = images[i, a, b] / 16`` for
        ``(r, c) = positions[i]``, zero elsewhere.
    """
    canvas = check_int("canvas", canvas, DIGIT_SIZE, integral=True)
    pixels = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))  # a copy: no alias
    if pixels.ndim != 3 or tuple(pixels.shape[1:]) != (DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(f"images must have shape (N, {DIGIT_SIZE}, {DIGIT_SIZE}), got {tuple(pixels.shape)}")
    if pixels.dtype == torch.bool or pixels.is_complex():
        raise TypeError(f"images must be real numbers in [0, {DIGIT_MAX}], got dtype {pixels.dtype}")
    pixels = pixels.to(torch.float32)
    if pixels.numel() and (pixels.min() < 0 or pixels.max() > DIGIT_MAX):
        raise ValueError(f"images must hold raw digit values in [0, {DIGIT_MAX}], "
                         f"got values in [{float(pixels.min())}, {float(pixels.max())}]")
    n = pixels.shape[0]
    last = canvas - DIGIT_SIZE
    if positions is None:
        where = torch.full((n, 2), last // 2, dtype=torch.int64)
    else:
        where = positions if isinstance(positions, torch.Tensor) else torch.from_numpy(np.array(positions))
        if where.dtype.is_floating_point or where.dtype == torch.bool or where.is_complex():
            raise TypeError(f"positions must be integers, got dtype {where.dtype}")
        if tuple(where.shape) != (n, 2):
            raise ValueError(f"positions must have shape (N={n}, 2) = (row, col) per image, got {tuple(where.shape)}")
        where = where.to(torch.int64)
        if where.numel() and (where.min() < 0 or where.max() > last):
            raise ValueError(f"positions must be in [0, canvas - {DIGIT_SIZE}] = [0, {last}] so the digit fits, "
                             f"got values in [{int(where.min())}, {int(where.max())}]")
    out = torch.zeros(n, canvas, canvas, dtype=torch.float32)
    offsets = torch.arange(DIGIT_SIZE)
    rows = (where[:, 0, None] + offsets)[:, :, None]  # (N, 8, 1)
    cols = (where[:, 1, None] + offsets)[:, None, :]  # (N, 1, 8)
    out[torch.arange(n)[:, None, None], rows, cols] = pixels / DIGIT_MAX
    return out[:, None]  # (N, 1, canvas, canvas)


def digits_dataset(
    split: str = "train", canvas: int = 16, placement: str = "centre", seed: int = 0, n: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits of the fixed split on a canvas, ready for :mod:`explorer.models.vision`.

    Args:
        split: ``"train"`` (1347 images) or ``"test"`` (450) of :func:`digits_split` with its defaults (fixed: the
            test set is the same whatever ``seed`` is).
        canvas: side of the square canvas, >= 8 (>= 16 for ``"left"`` / ``"right"``).
        placement: ``"centre"``, ``"left"``, ``"right"`` or ``"random"`` (see :func:`digit_positions`).
        seed: int >= 0, seeds the class-balanced order (:func:`digits_indices`) and the positions.
        n: the first ``n`` images of the class-balanced order (1 .. split size), so smaller sets are subsets of
            larger ones; None keeps the whole split (in the same order).

    Returns:
        ``(images, labels)``: float32 ``[N, 1, canvas, canvas]`` in [0, 1] and int64 ``[N]``.
    """
    split = check_choice("split", split, SPLITS)
    placement = check_choice("placement", placement, PLACEMENTS)
    canvas = check_int("canvas", canvas, DIGIT_SIZE, integral=True)
    seed = check_int("seed", seed, 0, integral=True)
    positions = digit_positions(placement, canvas, seed)  # checks canvas against the placement
    index = digits_indices(split, seed, n)
    pixels, labels = _read()
    images = place_on_canvas(pixels[index], canvas, positions[index])
    return images, torch.from_numpy(labels[index].copy())
