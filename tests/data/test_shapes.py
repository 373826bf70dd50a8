import numpy as np
import pytest
import torch

from explorer.data import shapes
from explorer.data.shapes import (
    ANSWERS, COLOURS, MIN_VISIBLE, NOISE, QUERY_KINDS, SHAPES, VOCAB, generate_scene, make_query, sample_batch,
    tokenize,
)


def test_same_seed_same_scene_and_different_seed_differs():
    a, b, c = generate_scene(7), generate_scene(7), generate_scene(8)
    assert torch.equal(a.image, b.image) and torch.equal(a.masks, b.masks) and a.objects == b.objects
    assert not torch.equal(a.image, c.image)
    batch_a, batch_b = sample_batch(16, seed=3), sample_batch(16, seed=3)
    assert torch.equal(batch_a.images, batch_b.images) and batch_a.texts == batch_b.texts


@pytest.mark.parametrize("size, n_objects", [(32, 1), (48, 2), (48, 3), (96, 3)])
def test_scene_shapes_and_distinct_objects(size, n_objects):
    for seed in range(20):
        scene = generate_scene(seed, size=size, n_objects=n_objects)
        assert scene.image.shape == (3, size, size) and scene.image.dtype == torch.float32
        assert 0.0 <= scene.image.min() and scene.image.max() <= 1.0
        assert scene.masks.shape == (n_objects, size, size) and scene.masks.dtype == torch.bool
        assert len(scene.objects) == n_objects
        assert len({o.shape for o in scene.objects}) == n_objects
        assert len({o.colour for o in scene.objects}) == n_objects
        # visible masks are disjoint (each pixel shows at most one object)
        assert scene.masks.sum(0).max() <= 1


def test_visible_area_is_at_least_min_visible_of_full_area():
    rows, cols = np.arange(48)[:, None], np.arange(48)[None, :]
    for seed in range(50):
        scene = generate_scene(seed, n_objects=3)
        for obj, mask in zip(scene.objects, scene.masks):
            full = shapes._rasterise(obj.shape, obj.centre, obj.size, rows, cols)
            assert mask.numpy().sum() >= MIN_VISIBLE * full.sum() > 0
            assert not (mask.numpy() & ~full).any()  # visible pixels are part of the object


def test_shape_areas_follow_geometry():
    # independent reference: circle pi r^2, square s^2, triangle s^2 / 2; pixel-centre sampling of a 24 px shape
    # misses at most a fraction of the boundary pixels (measured: circle 0.97 %, square and triangle exact): 2 %
    rows, cols = np.arange(96)[:, None], np.arange(96)[None, :]
    s = 24
    expected = {"circle": np.pi * (s / 2) ** 2, "square": s ** 2, "triangle": s ** 2 / 2}
    for shape, area in expected.items():
        got = shapes._rasterise(shape, (48.0, 48.0), s, rows, cols).sum()
        assert abs(got - area) <= 0.02 * area, (shape, got, area)


def test_mask_pixels_have_the_object_colour():
    for seed in range(20):
        scene = generate_scene(seed)
        image = scene.image.permute(1, 2, 0)  # (height, width, 3)
        for obj, mask in zip(scene.objects, scene.masks):
            colour = torch.tensor(COLOURS[obj.colour])
            # uniform noise of amplitude NOISE, then clipping (which only moves values towards the colour)
            assert (image[mask] - colour).abs().max() <= NOISE + 1e-6
        background = image[~scene.masks.any(0)]
        assert (background.max(1).values - background.min(1).values).max() <= 2 * NOISE + 1e-6  # grey


def test_queries_and_answers_are_consistent():
    scene = generate_scene(11, n_objects=3)
    for i, obj in enumerate(scene.objects):
        text, answer = make_query(scene, "shape_of_colour", i)
        assert text == f"what shape is the {obj.colour} object" and ANSWERS[answer] == obj.shape
        text, answer = make_query(scene, "colour_of_shape", i)
        assert text == f"what colour is the {obj.shape}" and ANSWERS[answer] == obj.colour


def test_batch_answers_match_target_mask_colour():
    batch = sample_batch(64, seed=5)
    assert batch.images.shape == (64, 3, 48, 48) and batch.target_masks.shape == (64, 48, 48)
    assert batch.query_ids.dtype == torch.long and batch.answers.dtype == torch.long
    kinds = set()
    for i, text in enumerate(batch.texts):
        ids = tokenize(text)
        assert batch.query_ids[i, : len(ids)].tolist() == ids and (batch.query_ids[i, len(ids):] == 0).all()
        pixels = batch.images[i].permute(1, 2, 0)[batch.target_masks[i]]  # (pixel, 3)
        assert len(pixels) > 0
        mean = pixels.mean(0)
        nearest = min(COLOURS, key=lambda c: float((mean - torch.tensor(COLOURS[c])).abs().sum()))
        answer = ANSWERS[int(batch.answers[i])]
        if text.startswith("what colour"):
            kinds.add("colour_of_shape")
            assert answer == nearest and text.split()[-1] in SHAPES
        else:
            kinds.add("shape_of_colour")
            assert answer in SHAPES and text.split()[-2] == nearest
    assert kinds == set(QUERY_KINDS)


def test_tokenize():
    assert tokenize("What colour is the Triangle?") == [VOCAB.index(w) for w in
                                                        ("what", "colour", "is", "the", "triangle")]
    with pytest.raises(ValueError, match="vocabulary") as info:
        tokenize("what colour is the dog")
    assert "dog" in str(info.value) and "triangle" in str(info.value)
    with pytest.raises(ValueError, match="vocabulary"):
        tokenize("<pad> what")


@pytest.mark.parametrize("call, error, word", [
    (lambda: generate_scene(0, size=31), ValueError, "size"),
    (lambda: generate_scene(0, size=97), ValueError, "size"),
    (lambda: generate_scene(0, size=48.0), TypeError, "size"),
    (lambda: generate_scene(0, n_objects=0), ValueError, "n_objects"),
    (lambda: generate_scene(0, n_objects=4), ValueError, "n_objects"),
    (lambda: generate_scene(-1), ValueError, "seed"),
    (lambda: make_query(generate_scene(0, n_objects=2), "where", 0), ValueError, "kind"),
    (lambda: make_query(generate_scene(0, n_objects=2), "shape_of_colour", 2), ValueError, "target_index"),
    (lambda: sample_batch(0, seed=0), ValueError, "n"),
    (lambda: tokenize(3), TypeError, "text"),
])
def test_bad_arguments(call, error, word):
    with pytest.raises(error, match=word):
        call()
