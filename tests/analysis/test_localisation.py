"""Localisation scores and integrated gradients: hand-computed examples and closed forms.

Independent references used here:

- a plain numpy loop over patch blocks for :func:`patch_object_share`;
- the identity ``sum_p share_p / P = area share`` for equal patches (uniform maps score exactly chance);
- IG's closed forms: ``(x - b) * w`` for ``f = sum(w * x)`` and ``w * (x^2 - b^2)`` for ``f = sum(w * x^2)``
  (the integrand is linear in the path parameter, so Gauss-Legendre quadrature is exact for any ``steps >= 1``);
- completeness: signed attributions sum to ``f(x) - f(b)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.analysis import (
    LocalisationScore,
    attention_localisation,
    integrated_gradients,
    patch_object_share,
    pixel_localisation,
    upsample_patches,
)

# Two 4x4 scenes on a 2x2 grid (each patch is 2x2 = 4 pixels; patches 0 1 / 2 3 in row-major order).
MASKS = torch.tensor(
    [
        [
            [1, 1, 0, 0],  # patch 0 = rows 0-1, cols 0-1: 3 of 4 pixels on -> 0.75
            [1, 0, 0, 0],  # patch 1 = rows 0-1, cols 2-3: 0 of 4 -> 0
            [0, 0, 1, 1],  # patch 2 = rows 2-3, cols 0-1: 0 of 4 -> 0
            [0, 0, 1, 1],  # patch 3 = rows 2-3, cols 2-3: 4 of 4 -> 1
        ],  # area 7 / 16
        [
            [0, 0, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 0, 0],
            [1, 0, 0, 0],  # one pixel in patch 2 -> shares [0, 0, 0.25, 0]; area 1 / 16
        ],
    ],
    dtype=torch.bool,
)
SHARES = torch.tensor([[0.75, 0.0, 0.0, 1.0], [0.0, 0.0, 0.25, 0.0]], dtype=torch.float64)
GRID = (2, 2)


def _one_hot(*patches: int, n: int = 4) -> torch.Tensor:
    attn = torch.zeros(len(patches), n)
    attn[torch.arange(len(patches)), torch.tensor(patches)] = 1.0
    return attn


def _random_masks(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand(batch, height, width, generator=generator) < 0.3
    masks[:, 0, 0] = True  # every scene has an object
    return masks


# ------------------------------------------------------------------------------------------------------------------
# patch_object_share
# ------------------------------------------------------------------------------------------------------------------


def test_patch_object_share_hand_example():
    share = patch_object_share(MASKS, GRID)
    assert share.shape == (2, 4)
    torch.testing.assert_close(share, SHARES, rtol=0, atol=0)  # multiples of 1/4: exact


@pytest.mark.parametrize("grid", [(1, 1), (2, 3), (4, 1), (6, 6)])
def test_patch_object_share_matches_numpy_loop(grid):
    masks = _random_masks(3, 12, 6 * 3, seed=1)
    rows, cols = grid
    ph, pw = 12 // rows, 18 // cols
    array = masks.numpy()
    reference = np.array(
        [
            [array[b, r * ph:(r + 1) * ph, c * pw:(c + 1) * pw].mean() for r in range(rows) for c in range(cols)]
            for b in range(3)
        ]
    )
    np.testing.assert_allclose(patch_object_share(masks, grid).numpy(), reference, rtol=0, atol=1e-12)  # float64


# ------------------------------------------------------------------------------------------------------------------
# attention_localisation
# ------------------------------------------------------------------------------------------------------------------


def test_attention_uniform_scores_chance_mass_exactly():
    # With P equal patches of A pixels each (P * A = H * W):
    #   sum_p (1/P) share_p = sum_p (1/P) (object pixels in p) / A = (object pixels) / (P * A) = area share.
    # Scene 0: (0.75 + 0 + 0 + 1) / 4 = 0.4375 = 7/16; scene 1: 0.25 / 4 = 1/16; mean (7/16 + 1/16) / 2 = 0.25.
    score = attention_localisation(torch.full((2, 4), 0.25), MASKS, GRID)
    assert score.mass == pytest.approx(0.25, abs=1e-12)  # float64 sums of dyadic numbers
    assert score.mass == pytest.approx(score.chance_mass, abs=1e-12)
    assert score.chance_mass == pytest.approx(0.25, abs=1e-12)
    # chance_pointing: scene 0 has 2 of 4 patches with share > 0.5 (patches 0, 3), scene 1 none: (0.5 + 0) / 2.
    assert score.chance_pointing == pytest.approx(0.25, abs=1e-12)
    assert score.n == 2
    assert isinstance(score, LocalisationScore)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("grid", [(2, 3), (4, 6), (1, 6)])
def test_attention_uniform_equals_chance_random_masks(seed, grid):
    masks = _random_masks(5, 8, 12, seed=seed)
    rows, cols = grid
    score = attention_localisation(torch.ones(5, rows * cols), masks, grid)  # unnormalised: renormalised inside
    assert score.mass == pytest.approx(score.chance_mass, abs=1e-12)  # float64, exact up to rounding


def test_attention_one_hot_on_object_patch():
    # Scene 0 attends only to patch 0 (share 0.75): mass 0.75, argmax patch 0 has share 0.75 > 0.5 -> hit.
    score = attention_localisation(_one_hot(0), MASKS[:1], GRID)
    assert score.mass == pytest.approx(0.75, abs=1e-12)
    assert score.pointing == 1.0
    # Patch 3 is fully on the object: mass 1, hit.
    score = attention_localisation(_one_hot(3), MASKS[:1], GRID)
    assert (score.mass, score.pointing) == (1.0, 1.0)


def test_attention_one_hot_on_background_patch():
    score = attention_localisation(_one_hot(1), MASKS[:1], GRID)  # patch 1 has share 0
    assert (score.mass, score.pointing) == (0.0, 0.0)


def test_attention_pointing_threshold_is_more_than_half():
    # Scene 1's object covers 1/4 of patch 2: mass 0.25, but 0.25 is not > 0.5, so the pointer misses.
    score = attention_localisation(_one_hot(2), MASKS[1:], GRID)
    assert score.mass == pytest.approx(0.25, abs=1e-12)
    assert score.pointing == 0.0
    # A patch exactly half on the object is not a hit either (share 0.5 is not > 0.5).
    half = torch.zeros(1, 4, 4, dtype=torch.bool)
    half[0, 0, :2] = True  # top row of patch 0: 2 of 4 pixels
    assert attention_localisation(_one_hot(0), half, GRID).pointing == 0.0


def test_attention_batch_mean_and_renormalisation():
    # Scene 0: [2, 0, 0, 2] -> [0.5, 0, 0, 0.5]: mass 0.5 * 0.75 + 0.5 * 1 = 0.875; argmax ties -> first (patch 0),
    #          share 0.75 -> hit.
    # Scene 1: one-hot on patch 2: mass 0.25, miss.
    # Means: mass (0.875 + 0.25) / 2 = 0.5625; pointing (1 + 0) / 2 = 0.5.
    attn = torch.tensor([[2.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 0.0]])
    score = attention_localisation(attn, MASKS, GRID)
    assert score.mass == pytest.approx(0.5625, abs=1e-12)
    assert score.pointing == 0.5
    assert score.chance_mass == pytest.approx(0.25, abs=1e-12)  # (7/16 + 1/16) / 2


# ------------------------------------------------------------------------------------------------------------------
# pixel_localisation
# ------------------------------------------------------------------------------------------------------------------


def test_pixel_localisation_hand_example():
    mask = torch.tensor([[[True, False], [False, False]]] * 2)  # object = top-left pixel, area 1/4
    saliency = torch.tensor(
        [
            [[3.0, 1.0], [0.0, 4.0]],  # mass 3 / 8 = 0.375; argmax (1, 1) is background -> miss
            [[5.0, 1.0], [0.0, 4.0]],  # mass 5 / 10 = 0.5; argmax (0, 0) on the object -> hit
        ]
    )
    score = pixel_localisation(saliency, mask)
    assert score.mass == pytest.approx((0.375 + 0.5) / 2, abs=1e-12)  # 0.4375
    assert score.pointing == 0.5
    assert score.chance_mass == score.chance_pointing == 0.25
    assert score.n == 2


def test_pixel_uniform_saliency_scores_chance_mass():
    # sum(c * mask) / sum(c) = c * (object pixels) / (c * H * W) = area share.
    score = pixel_localisation(torch.full((2, 4, 4), 0.3), MASKS)
    assert score.mass == pytest.approx(score.chance_mass, abs=1e-12)
    assert score.chance_mass == pytest.approx((7 / 16 + 1 / 16) / 2, abs=1e-12)


# ------------------------------------------------------------------------------------------------------------------
# upsample_patches
# ------------------------------------------------------------------------------------------------------------------


def test_upsample_patches_blocks_and_totals():
    attn = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    up = upsample_patches(attn, (2, 2), (4, 6))  # patches are 2 x 3 = 6 pixels
    assert up.shape == (1, 4, 6)
    expected = torch.tensor(
        [
            [0.1, 0.1, 0.1, 0.2, 0.2, 0.2],
            [0.1, 0.1, 0.1, 0.2, 0.2, 0.2],
            [0.3, 0.3, 0.3, 0.4, 0.4, 0.4],
            [0.3, 0.3, 0.3, 0.4, 0.4, 0.4],
        ],
        dtype=torch.float64,
    ) / 6
    torch.testing.assert_close(up[0], expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(up.sum(), attn.sum(), rtol=0, atol=1e-12)  # total preserved: 1.0
    block_sums = up.reshape(1, 2, 2, 2, 3).sum(dim=(2, 4)).reshape(1, 4)  # (B, rows, ph, cols, pw) -> (B, P)
    torch.testing.assert_close(block_sums, attn, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_upsampled_attention_has_the_same_mass(seed):
    # Pixel mass of the upsampled map: sum_p (a_p / A) * (object pixels in p) = sum_p a_p share_p = patch mass.
    masks = _random_masks(4, 8, 12, seed=seed)
    attn = torch.softmax(torch.randn(4, 6, generator=torch.Generator().manual_seed(seed)), dim=-1)
    patch_score = attention_localisation(attn, masks, (2, 3))
    pixel_score = pixel_localisation(upsample_patches(attn, (2, 3), (8, 12)), masks)
    assert pixel_score.mass == pytest.approx(patch_score.mass, abs=1e-6)  # float32 attention


# ------------------------------------------------------------------------------------------------------------------
# integrated_gradients
# ------------------------------------------------------------------------------------------------------------------

B, H, W, T = 2, 5, 4, 3


class _Linear:
    """Logits ``[f, -f + 1]`` with ``f = sum(w * img) + 0.5 * sum(q)``; the query term is constant in ``img``."""

    def __init__(self, power: int = 1):
        self.w = torch.randn(3, H, W, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        self.power = power
        self.queries: list[torch.Tensor] = []

    def __call__(self, img: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        assert q.shape[0] == img.shape[0] and q.shape[1] == T  # the query travels with every chunk of the path
        self.queries.append(q)
        f = (self.w * img**self.power).sum(dim=(1, 2, 3)) + 0.5 * q.sum(dim=1).to(img.dtype)  # (batch,)
        return torch.stack([f, -f + 1.0], dim=1)  # (batch, 2)


def _inputs():
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(B, 3, H, W, generator=generator, dtype=torch.float64)
    query_ids = torch.randint(0, 10, (B, T), generator=generator)
    return images, query_ids


@pytest.mark.parametrize("baseline", [0.0, 0.5, torch.tensor([0.1, -0.2, 0.3]).reshape(3, 1, 1)])
def test_ig_linear_closed_form_and_completeness(baseline):
    model = _Linear()
    images, query_ids = _inputs()
    target = torch.tensor([0, 1])  # scene 1 attributes -f: same |attribution|
    saliency, delta = integrated_gradients(model, images, query_ids, target, steps=8, baseline=baseline,
                                           return_delta=True)
    b = baseline if isinstance(baseline, float) else baseline.to(torch.float64)
    signed = (images - b) * model.w  # closed form for f = sum(w * x): (x - b) * w
    assert saliency.shape == (B, H, W)
    # the path integral of a linear model is exact for any quadrature: only fp32 rounding remains (measured 8e-8)
    torch.testing.assert_close(saliency, signed.abs().sum(dim=1), rtol=0, atol=1e-6)
    assert delta.shape == (B,)
    assert delta.abs().max().item() < 1e-4  # completeness: sum(attr) = f(x) - f(b)
    # captum repeats each scene's query along its path; the rows the model saw are exactly the scenes' queries.
    seen = torch.cat(model.queries)  # (steps * B + 2 * B, T): the path, then f(x) and f(b) for the delta
    assert seen.shape == ((8 + 2) * B, T)
    assert torch.equal(torch.unique(seen, dim=0), torch.unique(query_ids, dim=0))


def test_ig_quadratic_closed_form():
    # f = sum(w * x^2): IG_i = (x_i - b_i) * int_0^1 2 w_i (b_i + a (x_i - b_i)) da = w_i (x_i^2 - b_i^2).
    model = _Linear(power=2)
    images, query_ids = _inputs()
    saliency, delta = integrated_gradients(model, images, query_ids, torch.tensor([0, 0]), steps=4, baseline=0.3,
                                           return_delta=True, internal_batch_size=3)
    expected = (model.w * (images**2 - 0.3**2)).abs().sum(dim=1)
    # Gauss-Legendre with 4 nodes integrates the linear integrand exactly: float64 rounding only (measured 2e-15)
    torch.testing.assert_close(saliency, expected, rtol=0, atol=1e-10)
    assert delta.abs().max().item() < 1e-4
    # The map scores with pixel_localisation (nonnegative by construction).
    assert pixel_localisation(saliency, torch.ones(B, H, W, dtype=torch.bool)).mass == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------------------------------------------------------
# invalid inputs
# ------------------------------------------------------------------------------------------------------------------

UNIFORM = torch.full((2, 4), 0.25)


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: patch_object_share(MASKS.float(), GRID), TypeError, "target_masks"),
        (lambda: patch_object_share(MASKS[0], GRID), ValueError, "target_masks"),
        (lambda: patch_object_share(MASKS, (3, 2)), ValueError, "grid"),
        (lambda: patch_object_share(MASKS, (2, 0)), TypeError, "grid"),
        (lambda: patch_object_share(MASKS, 2), TypeError, "grid"),
        (lambda: attention_localisation(UNIFORM[0], MASKS, GRID), ValueError, "attn"),
        (lambda: attention_localisation(UNIFORM[:1], MASKS, GRID), ValueError, "attn"),
        (lambda: attention_localisation(torch.full((2, 9), 1 / 9), MASKS, GRID), ValueError, "attn"),
        (lambda: attention_localisation(UNIFORM - 0.3, MASKS, GRID), ValueError, "attn"),
        (lambda: attention_localisation(torch.zeros(2, 4), MASKS, GRID), ValueError, "attn"),
        (lambda: attention_localisation(UNIFORM.long(), MASKS, GRID), TypeError, "attn"),
        (lambda: attention_localisation(UNIFORM, MASKS, (4, 3)), ValueError, "grid"),
        (lambda: pixel_localisation(-torch.ones(2, 4, 4), MASKS), ValueError, "saliency"),
        (lambda: pixel_localisation(torch.ones(2, 4, 3), MASKS), ValueError, "saliency"),
        (lambda: pixel_localisation(torch.ones(4, 4), MASKS), ValueError, "saliency"),
        (lambda: pixel_localisation(torch.ones(2, 4, 4), MASKS.long()), TypeError, "target_masks"),
        (lambda: upsample_patches(UNIFORM, GRID, (5, 4)), ValueError, "grid"),
        (lambda: upsample_patches(UNIFORM, (3, 3), (6, 6)), ValueError, "attn"),
        (lambda: upsample_patches(UNIFORM, GRID, 4), TypeError, "size"),
    ],
)
def test_invalid_maps_raise_naming_the_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"model": None}, TypeError, "model"),
        ({"images": torch.zeros(B, 1, H, W)}, ValueError, "images"),
        ({"images": torch.zeros(B, 3, H)}, ValueError, "images"),
        ({"images": torch.zeros(B, 3, H, W, dtype=torch.long)}, TypeError, "images"),
        ({"query_ids": torch.zeros(B, T)}, TypeError, "query_ids"),
        ({"query_ids": torch.zeros(B + 1, T, dtype=torch.long)}, ValueError, "query_ids"),
        ({"target": torch.tensor([0])}, ValueError, "target"),
        ({"target": torch.tensor([[0], [0]])}, ValueError, "target"),
        ({"steps": 0}, ValueError, "steps"),
        ({"baseline": torch.zeros(2, 1, 1)}, ValueError, "baseline"),
        ({"baseline": "zero"}, TypeError, "baseline"),
    ],
)
def test_ig_invalid_inputs_raise_naming_the_argument(kwargs, error, name):
    images, query_ids = _inputs()
    arguments = {"model": _Linear(), "images": images, "query_ids": query_ids, "target": torch.tensor([0, 1])}
    arguments.update(kwargs)
    with pytest.raises(error, match=name):
        integrated_gradients(**arguments)
