import subprocess
import sys

import numpy as np
import pytest
import torch

from explorer.data.digits import (
    DIGIT_MAX, N_DIGITS, digit_positions, digits_dataset, digits_indices, digits_split, load_digits_arrays,
    place_on_canvas,
)


@pytest.fixture(scope="module")
def sklearn_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()  # independent reference: scikit-learn's own loader of the same file
    return bunch.images, bunch.target


def test_arrays_equal_sklearn(sklearn_digits):
    ref_images, ref_labels = sklearn_digits
    images, labels = load_digits_arrays()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (1797,) and labels.dtype == np.int64
    np.testing.assert_array_equal(images.astype(np.float64), ref_images)  # exact: integers 0..16
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.bincount(ref_labels, minlength=10))
    images[0, 0, 0] = 99  # a copy: the cache is not changed
    assert load_digits_arrays()[0][0, 0, 0] == ref_images[0, 0, 0]


def test_loading_does_not_import_sklearn():
    code = ("import sys; from explorer.data.digits import load_digits_arrays; load_digits_arrays(); "
            "print('sklearn' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_split_disjoint_complete_stratified_deterministic():
    _, labels = load_digits_arrays()
    train, test = digits_split()
    assert (len(train), len(test)) == (1347, 450)  # the sizes the docstring promises
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(N_DIGITS))
    per_class = np.bincount(labels, minlength=10)
    test_per_class = np.bincount(labels[test], minlength=10)
    assert np.all(np.abs(test_per_class - 0.25 * per_class) < 1)  # within one image of the exact share
    again_train, again_test = digits_split()
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(test, again_test)
    other_train, _ = digits_split(seed=1)
    assert not np.array_equal(train, other_train)
    half_train, half_test = digits_split(seed=3, test_fraction=0.5)
    assert len(half_test) == 899 and np.all(np.abs(np.bincount(labels[half_test], minlength=10) - 0.5 * per_class) < 1)


def test_balanced_order_is_nested_and_balanced():
    _, labels = load_digits_arrays()
    train, _ = digits_split()
    order = digits_indices("train", seed=2)
    np.testing.assert_array_equal(np.sort(order), train)  # a permutation of the split
    for n in (1, 10, 37, 250, 1299):
        prefix = digits_indices("train", seed=2, n=n)
        np.testing.assert_array_equal(prefix, order[:n])
        counts = np.bincount(labels[prefix], minlength=10)
        assert counts.max() - counts.min() <= 1, (n, counts)
    assert not np.array_equal(digits_indices("train", seed=3, n=50), order[:50])


def test_nested_datasets():
    small_x, small_y = digits_dataset("train", placement="random", seed=4, n=40)
    big_x, big_y = digits_dataset("train", placement="random", seed=4, n=300)
    torch.testing.assert_close(big_x[:40], small_x, atol=0, rtol=0)  # same images at the same positions
    torch.testing.assert_close(big_y[:40], small_y, atol=0, rtol=0)
    full_x, full_y = digits_dataset("test")
    assert full_x.shape == (450, 1, 16, 16) and full_x.dtype == torch.float32 and full_y.dtype == torch.int64


def _reference_canvas(raw: np.ndarray, canvas: int, positions: np.ndarray) -> np.ndarray:
    out = np.zeros((len(raw), 1, canvas, canvas), dtype=np.float32)
    for i, (r, c) in enumerate(positions):
        out[i, 0, r:r + 8, c:c + 8] = raw[i] / 16.0
    return out


def test_place_on_canvas_exact():
    images, _ = load_digits_arrays()
    rng = np.random.default_rng(0)
    positions = rng.integers(0, 13, (20, 2))
    placed = place_on_canvas(images[:20], canvas=20, positions=positions)
    assert placed.shape == (20, 1, 20, 20) and placed.dtype == torch.float32
    np.testing.assert_array_equal(placed.numpy(), _reference_canvas(images[:20], 20, positions))  # exact: k/16
    centred = place_on_canvas(torch.from_numpy(images[:3]), canvas=16)
    np.testing.assert_array_equal(centred.numpy(), _reference_canvas(images[:3], 16, np.full((3, 2), 4)))


@pytest.mark.parametrize("canvas", [16, 24])
def test_placements_stay_in_their_half(canvas):
    raw, labels = load_digits_arrays()
    half = canvas // 2
    for placement in ("left", "right", "random", "centre"):
        images, y = digits_dataset("train", canvas=canvas, placement=placement, seed=5)
        index = digits_indices("train", seed=5)
        positions = digit_positions(placement, canvas, seed=5)[index]
        np.testing.assert_array_equal(images.numpy(), _reference_canvas(raw[index], canvas, positions))
        np.testing.assert_array_equal(y.numpy(), labels[index])
        if placement == "left":
            assert not images[..., half:].any() and images[..., :half].any()
        if placement == "right":
            assert not images[..., :half].any() and images[..., half:].any()
        if placement == "centre":
            assert (positions == (canvas - 8) // 2).all()
        if placement == "random" and canvas == 24:
            assert positions.min() == 0 and positions.max() == 16  # the whole range is used (1347 draws)
    assert images.max() == 1.0 and images.min() == 0.0  # scaled from 0..16


@pytest.mark.parametrize("kwargs, error, word", [
    ({"split": "valid"}, ValueError, "split"),
    ({"placement": "top"}, ValueError, "placement"),
    ({"canvas": 7}, ValueError, "canvas"),
    ({"canvas": 12, "placement": "left"}, ValueError, "canvas"),
    ({"canvas": 16.0}, TypeError, "canvas"),
    ({"n": 0}, ValueError, "n must"),
    ({"n": 1348}, ValueError, "n must"),
    ({"split": "test", "n": 451}, ValueError, "n must"),
    ({"seed": -1}, ValueError, "seed"),
])
def test_dataset_bad_arguments(kwargs, error, word):
    with pytest.raises(error, match=word):
        digits_dataset(**kwargs)


def test_other_bad_arguments():
    images, _ = load_digits_arrays()
    with pytest.raises(ValueError, match="positions"):
        place_on_canvas(images[:2], canvas=16, positions=[[0, 0], [0, 9]])
    with pytest.raises(ValueError, match="positions"):
        place_on_canvas(images[:2], canvas=16, positions=[[0, 0]])
    with pytest.raises(TypeError, match="positions"):
        place_on_canvas(images[:2], canvas=16, positions=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="images"):
        place_on_canvas(images[:2, :7], canvas=16)
    with pytest.raises(ValueError, match="images"):
        place_on_canvas(images[:2] * 2, canvas=16)  # not raw 0..16 values
    with pytest.raises(ValueError, match="test_fraction"):
        digits_split(test_fraction=1.0)
    assert DIGIT_MAX == 16
