"""Offline data: photos and handwritten digits shipped by installed packages, generated scenes and sequences."""

from explorer.data.digits import (
    PLACEMENTS, SPLITS, digit_positions, digits_dataset, digits_indices, digits_split, load_digits_arrays,
    place_on_canvas,
)
from explorer.data.images import PHOTOS, load_photo
from explorer.data.sentences import SENTENCES, long_text
from explorer.data.shapes import (
    ANSWERS, COLOURS, QUERY_KINDS, SHAPES, VOCAB, Batch, Scene, SceneObject, generate_scene, make_query, sample_batch,
    tokenize,
)

__all__ = [
    "PHOTOS", "SENTENCES", "load_photo", "long_text",
    "ANSWERS", "COLOURS", "QUERY_KINDS", "SHAPES", "VOCAB", "Batch", "Scene", "SceneObject", "generate_scene",
    "make_query", "sample_batch", "tokenize",
    "PLACEMENTS", "SPLITS", "digit_positions", "digits_dataset", "digits_indices", "digits_split",
    "load_digits_arrays", "place_on_canvas",
]
