"""A tiny synthetic "shapes world": coloured circles, squares and triangles with questions about them.

Each scene is a grey, mildly noisy image with 1 to 3 objects; in a scene every object has a distinct colour and a
distinct shape, so both kinds of question have exactly one answer::

    "what shape is the red object"  -> "triangle"     (kind "shape_of_colour")
    "what colour is the triangle"   -> "red"          (kind "colour_of_shape")

Everything is a deterministic function of an integer seed (numpy's ``default_rng``) and rasterised with numpy on
pixel centres, so a batch of 64 scenes takes a few milliseconds. The masks give, for each object, the pixels where
it is visible (later objects are drawn on top of earlier ones); they are the ground truth the localisation lesson
compares attention maps with. Bump :data:`GENERATOR_VERSION` whenever a change alters the pixels of a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer._checks import check_choice, check_int, check_type

__all__ = [
    "GENERATOR_VERSION", "COLOURS", "SHAPES", "VOCAB", "ANSWERS", "QUERY_KINDS", "NOISE", "MIN_VISIBLE",
    "SceneObject", "Scene", "Batch", "generate_scene", "tokenize", "question", "make_query", "sample_batch",
]

GENERATOR_VERSION = "1"

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.75, 0.2),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.95, 0.85, 0.1),
}
SHAPES = ("circle", "square", "triangle")

VOCAB = ("<pad>", "what", "shape", "colour", "is", "the", "object", *COLOURS, *SHAPES)
ANSWERS = (*SHAPES, *COLOURS)
QUERY_KINDS = ("shape_of_colour", "colour_of_shape")

NOISE = 0.04          # every pixel gets uniform noise in [-NOISE, NOISE] (then clipped to [0, 1])
MIN_VISIBLE = 0.8     # each object keeps at least this fraction of its full area visible (rejection sampling)
_BACKGROUND = (0.35, 0.6)    # grey level of the background, drawn per scene
_OBJECT_SIZE = (0.2, 0.3)    # object side / diameter as a fraction of the image side
_MAX_TRIES = 1000

_TOKEN_ID = {word: i for i, word in enumerate(VOCAB)}


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene."""

    shape: str                      # one of SHAPES
    colour: str                     # one of COLOURS
    centre: tuple[float, float]     # (row, col) in pixels, centre of the bounding box
    size: int                       # side / diameter of the bounding box in pixels


@dataclass(frozen=True)
class Scene:
    """An image, the visible mask of each object and the objects themselves (in drawing order)."""

    image: torch.Tensor             # [3, height, width] float32 in [0, 1]
    masks: torch.Tensor             # [object, height, width] bool, visible pixels of each object
    objects: tuple[SceneObject, ...]


@dataclass
class Batch:
    """A batch of questions about freshly generated scenes."""

    images: torch.Tensor            # [batch, 3, height, width] float32
    query_ids: torch.Tensor         # [batch, token] int64, padded with 0 (= "<pad>") to the longest query
    answers: torch.Tensor           # [batch] int64, index into ANSWERS
    target_masks: torch.Tensor      # [batch, height, width] bool, visible pixels of the queried object
    texts: list[str]                # the questions as text


def _rasterise(shape: str, centre: tuple[float, float], size: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Full (unoccluded) mask of one object, sampled at pixel centres. ``rows``/``cols``: (height, 1) / (1, width)."""
    dr = rows + 0.5 - centre[0]  # (height, 1)
    dc = cols + 0.5 - centre[1]  # (1, width)
    half = size / 2
    if shape == "circle":
        return dr ** 2 + dc ** 2 <= half ** 2
    if shape == "square":
        return (np.abs(dr) <= half) & (np.abs(dc) <= half)
    # upright isosceles triangle: apex at the top of the box, base along its bottom
    depth = dr + half  # 0 at the apex, size at the base
    return (depth >= 0) & (depth <= size) & (np.abs(dc) <= depth / 2)


def generate_scene(seed: int, size: int = 48, n_objects: int = 3) -> Scene:
    """Draw one scene.

    Args:
        seed: any int >= 0; the scene is a deterministic function of ``(seed, size, n_objects)``.
        size: image side in pixels, in [32, 96].
        n_objects: number of objects, in [1, 3]; they get distinct shapes and distinct colours.

    Returns:
        A :class:`Scene`; each object keeps at least :data:`MIN_VISIBLE` of its area visible.
    """
    check_int("seed", seed, 0, 2 ** 63 - 1, integral=True)
    size = check_int("size", size, 32, 96, integral=True)
    n_objects = check_int("n_objects", n_objects, 1, len(SHAPES), integral=True)
    rng = np.random.default_rng(int(seed))
    rows = np.arange(size)[:, None]
    cols = np.arange(size)[None, :]
    colour_names = list(COLOURS)
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:n_objects]]
    colours = [colour_names[i] for i in rng.permutation(len(colour_names))[:n_objects]]
    low, high = round(_OBJECT_SIZE[0] * size), round(_OBJECT_SIZE[1] * size)
    for _ in range(_MAX_TRIES):
        sizes = rng.integers(low, high + 1, n_objects)
        centres = [tuple(rng.uniform(s / 2, size - s / 2, 2)) for s in sizes]
        full = np.stack([_rasterise(sh, c, int(s), rows, cols) for sh, c, s in zip(shapes, centres, sizes)])
        covered_later = np.zeros((size, size), dtype=bool)
        visible = np.zeros_like(full)
        for i in range(n_objects - 1, -1, -1):  # later objects occlude earlier ones
            visible[i] = full[i] & ~covered_later
            covered_later |= full[i]
        if np.all(visible.sum((1, 2)) >= MIN_VISIBLE * full.sum((1, 2))):
            break
    else:  # pragma: no cover - with sizes <= 0.3 * size three objects always fit
        raise RuntimeError(f"could not place {n_objects} objects in {_MAX_TRIES} tries (seed {seed})")

    grey = rng.uniform(*_BACKGROUND)
    image = np.full((size, size, 3), grey)
    for i in range(n_objects):
        image[visible[i]] = COLOURS[colours[i]]
    image += rng.uniform(-NOISE, NOISE, image.shape)
    image = np.clip(image, 0.0, 1.0)
    objects = tuple(
        SceneObject(shape=shapes[i], colour=colours[i], centre=(float(centres[i][0]), float(centres[i][1])),
                    size=int(sizes[i]))
        for i in range(n_objects)
    )
    return Scene(
        image=torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32)),  # (3, height, width)
        masks=torch.from_numpy(visible),  # (object, height, width)
        objects=objects,
    )


def tokenize(text: str) -> list[int]:
    """Token ids of a question: lower-cased, ``?`` removed, split on whitespace.

    Raises:
        ValueError: a word outside :data:`VOCAB` (the message lists the vocabulary).
    """
    check_type("text", text, str, "a str")
    words = text.lower().replace("?", " ").split()
    unknown = [w for w in words if w not in _TOKEN_ID or w == "<pad>"]
    if unknown:
        raise ValueError(f"unknown words {unknown} in text {text!r}; the vocabulary is {list(VOCAB[1:])}")
    if not words:
        raise ValueError("text has no words")
    return [_TOKEN_ID[w] for w in words]


def question(kind: str, word: str) -> str:
    """The question of ``kind`` about the object whose colour (``"shape_of_colour"``) or shape
    (``"colour_of_shape"``) is ``word``: "what shape is the red object", "what colour is the circle"."""
    if kind == "shape_of_colour":
        return f"what shape is the {word} object"
    if kind == "colour_of_shape":
        return f"what colour is the {word}"
    raise ValueError(f"kind must be one of {QUERY_KINDS}, got {kind!r}")


def make_query(scene: Scene, kind: str, target_index: int) -> tuple[str, int]:
    """The question about object ``target_index`` of ``scene`` and its answer.

    Args:
        scene: a :class:`Scene`.
        kind: ``"shape_of_colour"`` (ask for the shape, name the colour) or ``"colour_of_shape"``.
        target_index: index into ``scene.objects``.

    Returns:
        ``(text, answer)`` with ``answer`` an index into :data:`ANSWERS`.
    """
    check_choice("kind", kind, QUERY_KINDS)
    target_index = check_int("target_index", target_index, 0, len(scene.objects) - 1, integral=True)
    target = scene.objects[target_index]
    if kind == "shape_of_colour":
        return question(kind, target.colour), ANSWERS.index(target.shape)
    return question(kind, target.shape), ANSWERS.index(target.colour)


def sample_batch(n: int, seed: int, size: int = 48) -> Batch:
    """``n`` random questions about ``n`` random scenes (1-3 objects, random kind and target).

    Args:
        n: batch size, >= 1.
        seed: int >= 0; the batch is a deterministic function of ``(n, seed, size)``.
        size: image side in pixels, in [32, 96].

    Returns:
        A :class:`Batch`.
    """
    n = check_int("n", n, 1, 10 ** 6, integral=True)
    check_int("seed", seed, 0, 2 ** 63 - 1, integral=True)
    size = check_int("size", size, 32, 96, integral=True)
    rng = np.random.default_rng(int(seed))
    images, masks, answers, texts, ids = [], [], [], [], []
    for _ in range(n):
        scene = generate_scene(int(rng.integers(0, 2 ** 62)), size, int(rng.integers(1, len(SHAPES) + 1)))
        kind = QUERY_KINDS[int(rng.integers(len(QUERY_KINDS)))]
        target = int(rng.integers(len(scene.objects)))
        text, answer = make_query(scene, kind, target)
        images.append(scene.image)
        masks.append(scene.masks[target])
        answers.append(answer)
        texts.append(text)
        ids.append(tokenize(text))
    query_ids = torch.zeros(n, max(len(t) for t in ids), dtype=torch.long)  # 0 = "<pad>"
    for i, t in enumerate(ids):
        query_ids[i, : len(t)] = torch.tensor(t)
    return Batch(images=torch.stack(images), query_ids=query_ids, answers=torch.tensor(answers),
                 target_masks=torch.stack(masks), texts=texts)
