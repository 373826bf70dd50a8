"""Does a map land on the queried object? Localisation scores for patch attention and pixel saliency.

A *map* is a nonnegative score over an image: the attention of one query token over image patches
(``[batch, patch]``, heads averaged) or a pixel saliency such as ``|IG|`` summed over channels
(``[batch, height, width]``). Each scene comes with a ``target_masks`` BoolTensor ``[batch, height, width]`` that is
True on the queried object. Two scores, each next to the score a map with no information would get:

- **mass**: the share of the map's total mass that falls on the object. A uniform map puts on the object exactly
  the object's share of the image area, which is ``chance_mass``.
- **pointing** (the pointing game): the share of scenes whose maximum falls on the object. A pointer drawn
  uniformly at random hits it with probability ``chance_pointing``.

Patches are the regular partition of ``height x width`` into ``grid = (rows, cols)`` equal blocks, numbered in
row-major order (patch ``p`` is at row ``p // cols``, column ``p % cols``), as a ViT's patch embedding numbers them.

Papers:

- Pointing game: Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop",
  https://arxiv.org/abs/1608.00507.
- Integrated gradients: Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks",
  https://arxiv.org/abs/1703.01365.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch

from explorer._checks import check_callable, check_int, check_tensor

__all__ = [
    "LocalisationScore",
    "patch_object_share",
    "attention_localisation",
    "pixel_localisation",
    "upsample_patches",
    "integrated_gradients",
]

POINTING_SHARE = 0.5  # a patch is "on the object" for the pointing game when more than half its pixels are


@dataclass(frozen=True)
class LocalisationScore:
    """How well maps over ``n`` scenes land on the queried objects, next to chance baselines."""

    mass: float  # mean over scenes of the share of the map's mass on the queried object
    pointing: float  # pointing-game accuracy: share of scenes whose argmax falls on the object
    chance_mass: float  # mean share of the object's area: the mass of a uniform map
    chance_pointing: float  # hit rate of a uniformly random pointer (a random patch / pixel)
    n: int  # scenes


# --- validation ---------------------------------------------------------------------------------------------------


def _check_float(name: str, tensor: object, ndim: int, dims: str, nonnegative: bool = True) -> torch.Tensor:
    tensor = check_tensor(name, tensor, dims, dtype="float", ndim=ndim, nonempty=True)
    if nonnegative:
        smallest = tensor.detach().min()
        if not smallest >= 0:  # also catches NaN
            raise ValueError(f"{name} must be nonnegative, got a minimum of {smallest.item():.3g}")
    return tensor


def _check_masks(target_masks: object) -> torch.Tensor:
    return check_tensor("target_masks", target_masks, "[batch, height, width]", dtype=torch.bool, ndim=3,
                        nonempty=True)


def _check_pair(name: str, value: object, labels: str) -> tuple[int, int]:
    """``value`` as a pair of positive ints, or a TypeError naming ``name`` and what the pair means."""
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in value)
    )
    if not ok:
        raise TypeError(f"{name} must be a pair of positive ints ({labels}), got {value!r}")
    return int(value[0]), int(value[1])


def _check_grid(grid: object, height: int, width: int) -> tuple[int, int]:
    rows, cols = _check_pair("grid", grid, "rows, cols")
    if height % rows or width % cols:
        raise ValueError(
            f"grid {(rows, cols)} must divide the image size (height, width) = {(height, width)} evenly"
        )
    return rows, cols


def _check_batch(name: str, tensor: torch.Tensor, batch: int, other: str) -> None:
    if tensor.shape[0] != batch:
        raise ValueError(f"{name} has batch {tensor.shape[0]} but {other} has batch {batch}")


def _normalise_rows(name: str, values: torch.Tensor) -> torch.Tensor:
    """``values`` [batch, n] divided by its row sums, in float64; a row with no mass has no distribution."""
    values = values.detach().to(torch.float64)
    totals = values.sum(dim=-1, keepdim=True)  # (batch, 1)
    if not bool((totals > 0).all()):
        empty = (totals[:, 0] <= 0).nonzero()[:, 0].tolist()
        raise ValueError(f"{name} must have positive total mass in every scene; scenes {empty} sum to 0")
    return values / totals


# --- scores -------------------------------------------------------------------------------------------------------


def patch_object_share(target_masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Fraction of each patch's pixels that lie on the object.

    Args:
        target_masks: BoolTensor ``[batch, height, width]``, True on the object.
        grid: ``(rows, cols)``; must divide ``(height, width)`` evenly.

    Returns:
        Float64 tensor ``[batch, rows * cols]`` in ``[0, 1]``, patches in row-major order.
    """
    target_masks = _check_masks(target_masks)
    batch, height, width = target_masks.shape
    rows, cols = _check_grid(grid, height, width)
    blocks = target_masks.reshape(batch, rows, height // rows, cols, width // cols)  # (B, rows, ph, cols, pw)
    share = blocks.to(torch.float64).mean(dim=(2, 4))  # (B, rows, cols)
    return share.reshape(batch, rows * cols)  # (B, P)


def attention_localisation(
    attn: torch.Tensor, target_masks: torch.Tensor, grid: tuple[int, int]
) -> LocalisationScore:
    """Mass and pointing-game scores of patch attention against object masks.

    Per scene, with ``a`` the attention renormalised to sum to 1 and ``share`` from :func:`patch_object_share`:
    ``mass = sum_p a_p * share_p`` (each patch counts with the fraction of its pixels on the object), and the
    pointer hits when the argmax patch has ``share > POINTING_SHARE`` (0.5: more than half its pixels on the
    object); ties go to the first patch in row-major order. Baselines: ``chance_mass`` is the object's share of
    the image area (equal patches make ``sum_p share_p / P`` exactly that), ``chance_pointing`` the share of
    patches with ``share > 0.5``.

    Args:
        attn: Nonnegative attention ``[batch, patch]`` of one query token over the ``rows * cols`` patches, heads
            averaged; rows need not sum to 1 (e.g. after dropping ``[CLS]``) but must have positive mass.
        target_masks: BoolTensor ``[batch, height, width]``, True on the queried object.
        grid: ``(rows, cols)`` of the patch grid.

    Returns:
        A :class:`LocalisationScore` averaged over the batch.
    """
    attn = _check_float("attn", attn, 2, "[batch, patch]")
    share = patch_object_share(target_masks, grid)  # (B, P)
    _check_batch("attn", attn, share.shape[0], "target_masks")
    if attn.shape[1] != share.shape[1]:
        raise ValueError(f"attn has {attn.shape[1]} patches but grid {tuple(grid)} has {share.shape[1]}")
    weights = _normalise_rows("attn", attn).to(share.device)  # (B, P), rows sum to 1
    mass = (weights * share).sum(dim=-1)  # (B,)
    on_object = share > POINTING_SHARE  # (B, P)
    hits = on_object.gather(1, weights.argmax(dim=-1, keepdim=True))[:, 0]  # (B,)
    area = target_masks.to(torch.float64).mean(dim=(1, 2))  # (B,)
    return LocalisationScore(
        mass=mass.mean().item(),
        pointing=hits.to(torch.float64).mean().item(),
        chance_mass=area.mean().item(),
        chance_pointing=on_object.to(torch.float64).mean(dim=-1).mean().item(),
        n=share.shape[0],
    )


def pixel_localisation(saliency: torch.Tensor, target_masks: torch.Tensor) -> LocalisationScore:
    """Mass and pointing-game scores of a pixel saliency map against object masks.

    Per scene: ``mass = sum(s * mask) / sum(s)``; the pointer hits when the argmax pixel (first in row-major
    order on ties) is on the object. Both baselines are the object's share of the image area: the mass of a
    uniform map and the hit rate of a uniformly random pixel.

    Args:
        saliency: Nonnegative map ``[batch, height, width]``, e.g. from :func:`integrated_gradients`.
        target_masks: BoolTensor ``[batch, height, width]``, True on the queried object.

    Returns:
        A :class:`LocalisationScore` averaged over the batch.
    """
    saliency = _check_float("saliency", saliency, 3, "[batch, height, width]")
    target_masks = _check_masks(target_masks)
    if saliency.shape != target_masks.shape:
        raise ValueError(
            f"saliency has shape {tuple(saliency.shape)} but target_masks has shape {tuple(target_masks.shape)}"
        )
    batch = saliency.shape[0]
    weights = _normalise_rows("saliency", saliency.reshape(batch, -1))  # (B, H*W), rows sum to 1
    on_object = target_masks.reshape(batch, -1).to(weights.device)  # (B, H*W)
    mass = (weights * on_object).sum(dim=-1)  # (B,)
    hits = on_object.gather(1, weights.argmax(dim=-1, keepdim=True))[:, 0]  # (B,)
    area = on_object.to(torch.float64).mean().item()  # equal-sized images: mean of per-scene shares
    return LocalisationScore(
        mass=mass.mean().item(),
        pointing=hits.to(torch.float64).mean().item(),
        chance_mass=area,
        chance_pointing=area,
        n=batch,
    )


def upsample_patches(attn: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Spread each patch's value evenly over its pixels (nearest-neighbour, for overlays).

    Each pixel gets ``attn_p / (pixels per patch)``, so the map is constant on each patch block and every block
    sums to its patch's value: totals are preserved, and :func:`pixel_localisation` of the result has the same
    ``mass`` as :func:`attention_localisation` of ``attn``.

    Args:
        attn: Tensor ``[batch, patch]`` with ``patch == rows * cols`` (row-major).
        grid: ``(rows, cols)``; must divide ``size`` evenly.
        size: ``(height, width)`` of the image.

    Returns:
        Tensor ``[batch, height, width]`` of ``attn``'s dtype.
    """
    attn = _check_float("attn", attn, 2, "[batch, patch]", nonnegative=False)
    height, width = _check_pair("size", size, "height, width")
    rows, cols = _check_grid(grid, height, width)
    if attn.shape[1] != rows * cols:
        raise ValueError(f"attn has {attn.shape[1]} patches but grid {(rows, cols)} has {rows * cols}")
    patch_h, patch_w = height // rows, width // cols
    blocks = attn.reshape(-1, rows, cols) / (patch_h * patch_w)  # (B, rows, cols)
    return blocks.repeat_interleave(patch_h, dim=1).repeat_interleave(patch_w, dim=2)  # (B, H, W)


# --- integrated gradients -----------------------------------------------------------------------------------------


def integrated_gradients(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    query_ids: torch.Tensor,
    target: torch.Tensor,
    steps: int = 32,
    baseline: float | torch.Tensor = 0.0,
    return_delta: bool = False,
    *,
    internal_batch_size: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Pixel saliency ``|IG|`` summed over channels, by captum's ``IntegratedGradients``.

    IG integrates the gradient of ``model(images, query_ids)[:, target]`` along the straight path from
    ``baseline`` to ``images`` (Gauss-Legendre, ``steps`` points); only the image is attributed, the query is held
    fixed. Completeness: the signed attributions of a scene sum to ``f(image) - f(baseline)``; the convergence
    delta is the difference, a check on ``steps``. Put the model in ``eval()`` mode first (dropout changes ``f``).

    Args:
        model: ``model(images [B, 3, H, W], query_ids [B, T]) -> logits [B, classes]``.
        images: Float tensor ``[batch, 3, height, width]``.
        query_ids: Integer tensor ``[batch, token]``, passed unchanged to ``model``.
        target: Integer tensor ``[batch]``: the output index attributed for each scene.
        steps: Number of integration points.
        baseline: A number, or a tensor broadcastable to ``images`` (e.g. a per-channel mean ``[3, 1, 1]``).
        return_delta: Also return the convergence delta ``[batch]``.
        internal_batch_size: Images per forward pass inside captum; default ``max(steps, batch)`` (captum needs
            one row per scene; about one scene's path at a time otherwise, bounded memory on CPU).

    Returns:
        Saliency ``[batch, height, width]`` (nonnegative, detached), or ``(saliency, delta)`` with
        ``delta = sum(signed attributions) - (f(image) - f(baseline))`` per scene.
    """
    from captum.attr import IntegratedGradients  # imported here: captum is slow to import

    check_callable("model", model, "callable as model(images, query_ids)")
    images = _check_float("images", images, 4, "[batch, 3, height, width]", nonnegative=False)
    if images.shape[1] != 3:
        raise ValueError(f"images must have 3 channels [batch, 3, height, width], got shape {tuple(images.shape)}")
    batch = images.shape[0]
    for name, tensor, ndim, dims in (("query_ids", query_ids, 2, "[batch, token]"), ("target", target, 1, "[batch]")):
        check_tensor(name, tensor, dims, dtype="int", ndim=ndim)
        _check_batch(name, tensor, batch, "images")
    steps = check_int("steps", steps, 1, integral=True, note="integration points")
    if isinstance(baseline, torch.Tensor):
        try:
            baselines = baseline.to(images).expand_as(images)  # (B, 3, H, W)
        except RuntimeError as error:
            raise ValueError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast to images {tuple(images.shape)}"
            ) from error
    elif isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        baselines = torch.full_like(images, float(baseline))  # (B, 3, H, W)
    else:
        raise TypeError(f"baseline must be a number or a tensor, got {type(baseline).__name__}")
    if internal_batch_size is None:  # captum needs at least one row per scene in each internal batch
        internal_batch_size = max(int(steps), images.shape[0])

    ig = IntegratedGradients(lambda img, q: model(img, q))
    result = ig.attribute(
        images.detach(),
        baselines=baselines.detach(),
        target=target,
        additional_forward_args=(query_ids,),
        n_steps=int(steps),
        internal_batch_size=internal_batch_size,
        return_convergence_delta=return_delta,
    )
    attributions, delta = result if return_delta else (result, None)
    saliency = attributions.detach().abs().sum(dim=1)  # (B, H, W)
    return (saliency, delta.detach()) if return_delta else saliency
