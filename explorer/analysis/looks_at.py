"""What each model looks at, on the same image: attention, attention rollout, the logit's input gradient and IG.

Four maps over one image, for the head-to-head classifiers of :mod:`explorer.models.vision` (CNNs and ViTs side
by side on the same digit):

- **attention** (ViTs only, :func:`cls_attention`): per layer and head, how much the token that the head reads
  out attends to each patch. With ``pooling="cls"`` it is the ``[CLS]`` query's row of the pattern over the patch
  keys; the ``[CLS] -> [CLS]`` entry is dropped and the rest is **not** renormalised, so a map sums to the share of
  that head's attention that goes to patches at all (``1 - a_[CLS],[CLS]``). With ``pooling="mean"`` (no
  ``[CLS]``) the readout averages the patch tokens, so the map is the mean over patch queries of their rows, which
  sums to 1.
- **rollout** (ViTs only, :func:`rollout_map`): attention rollout (Abnar & Zuidema 2020) through every layer,
  computed by :func:`explorer.analysis.attention.attention_rollout` (``A_hat = r I + (1 - r) A`` per layer, rows
  renormalised, multiplied over layers), read at the readout: the ``[CLS]`` row (``pooling="cls"``) or the mean of
  the patch rows (``pooling="mean"``), restricted to the patch keys and renormalised to sum to 1 over the patches.
  The ``[CLS] -> [CLS]`` entry is dropped because the ``[CLS]`` input is a learned constant, the same for every
  image: what is left is where the image information at the readout comes from.
- **gradient** (every model, :func:`logit_gradient`): ``|d logit_target / d image|`` summed over channels and
  normalised to sum to 1 -- the effective receptive field of the class logit for this one image (Luo et al. 2016,
  computed as :func:`explorer.analysis.receptive_field.effective_receptive_field` does for a feature map).
- **integrated gradients** (every model, :func:`integrated_gradients_map`): ``|IG|`` summed over channels
  (Sundararajan et al. 2017), by captum's ``IntegratedGradients`` with Gauss-Legendre quadrature. IG of pixel ``i``
  is ``(x_i - b_i)`` times the average gradient along the straight path from the baseline ``b``, so with the black
  baseline (``0``, the default) IG is exactly zero on every black pixel: it can only point at the digit's ink.

:func:`looks_at` computes all of them for one image and scores each by the share of its mass on the digit's pixels
(``on_digit``), a number the lesson can print next to the maps.

Conventions shared by all functions:

- ``images``: float ``[batch, channel, height, width]`` as the model takes it (checked against
  ``model.config.in_channels`` / ``image_size`` when the model has them), converted to the model's dtype and
  device, so a float64 model computes in float64.
- ``target``: ``None`` (the predicted class, ``argmax`` of the logits, per image), an int for every image, or an
  integer tensor ``[batch]``; a class index in ``[0, classes)``.
- Patch ``(r, c)`` of a ViT covers pixels ``[r p, (r + 1) p) x [c p, (c + 1) p)`` and is token ``1 + r cols + c``
  with ``[CLS]`` (token 0), ``r cols + c`` without.
- The model runs in eval mode; the train/eval flag of every submodule is restored afterwards. Gradients are taken
  with ``torch.autograd.grad`` on a copy of the input, so no parameter's ``.grad`` is touched. Results are detached.

Papers:

- Attention rollout: Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers",
  https://arxiv.org/abs/2005.00928.
- Effective receptive field: Luo, Li, Urtasun & Zemel 2016, https://arxiv.org/abs/1701.04128.
- Integrated gradients: Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks",
  https://arxiv.org/abs/1703.01365.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import nn

from explorer._checks import check_choice, check_int, check_real, check_tensor, check_type
from explorer._modes import evaluating
from explorer.analysis.attention import HEAD_FUSIONS, attention_rollout, stack_patterns
from explorer.analysis.localisation import upsample_patches
from explorer.analysis.receptive_field import ZeroGradient
from explorer.hooks import record
from explorer.models.vision import SmallCNN, SmallViT

__all__ = [
    "MAP_NAMES",
    "LooksAt",
    "vit_attention",
    "cls_attention",
    "rollout_map",
    "logit_gradient",
    "integrated_gradients_map",
    "looks_at",
    "on_digit_share",
]

# The maps :func:`looks_at` scores in ``on_digit``, in this order; CNNs have only the first two.
MAP_NAMES = ("gradient", "ig", "attention", "rollout")
PATTERN_HOOKS = "blocks.*.attn.hook_pattern"  # the attention pattern of every ViT block
IG_INTERNAL_BATCH = 256  # images per forward pass inside captum (at least one per image of the batch)


@dataclass(frozen=True, eq=False)
class LooksAt:
    """What one model looks at on one image (:func:`looks_at`). Tensors are detached, in the model's dtype.

    ``gradient``, ``ig`` and ``rollout`` are nonnegative ``[height, width]`` maps that sum to 1. ``attention`` is
    :func:`cls_attention` spread evenly over each patch's pixels: map ``[l, h]`` sums to the share of head ``h``'s
    readout attention that goes to patches (below 1 with ``[CLS]``, not renormalised).
    """

    kind: str  # "attention" (SmallViT, HybridViT) or "convolution" (SmallCNN, SECNN)
    probs: torch.Tensor  # [classes], softmax of the logits
    predicted: int  # argmax of the logits
    target: int  # the class the maps explain (the predicted one unless another was asked)
    gradient: torch.Tensor  # [height, width], |d logit_target / d image| summed over channels, sums to 1
    ig: torch.Tensor  # [height, width], |IG| summed over channels, normalised to sum to 1
    ig_delta: float  # IG convergence delta: sum(signed IG) - (f(image) - f(baseline)), before normalising
    attention: torch.Tensor | None  # [layer, head, height, width] readout attention per pixel; None for CNNs
    rollout: torch.Tensor | None  # [height, width] rollout at the readout per pixel, sums to 1; None for CNNs
    on_digit: dict[str, float]  # map name (MAP_NAMES order) -> share of its mass on the digit's nonzero pixels


# --- validation ---------------------------------------------------------------------------------------------------


def _check_model(model: object) -> nn.Module:
    return check_type("model", model, nn.Module, "an nn.Module (a classifier images -> logits)")


def _check_vit(model: object) -> SmallViT:
    _check_model(model)
    return check_type("model", model, SmallViT,
                      "a SmallViT or HybridViT (explorer.models.vision) to have attention maps")


def _dtype_device(model: nn.Module) -> tuple[torch.dtype | None, torch.device | None]:
    """dtype and device of the model's first floating parameter (or buffer); ``(None, None)`` if it has none."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return None, None


def _check_images(model: nn.Module, images: object, name: str = "images") -> torch.Tensor:
    """``images`` ``[batch, channel, height, width]``, checked and moved to the model's dtype and device."""
    check_tensor(name, images, "[batch, channel, height, width]", dtype="float", ndim=4, nonempty=True)
    config = getattr(model, "config", None)
    channels, size = getattr(config, "in_channels", None), getattr(config, "image_size", None)
    if channels is not None and images.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channel(s) for this {type(model).__name__}, "
                         f"got shape {tuple(images.shape)}")
    if size is not None and tuple(images.shape[2:]) != (size, size):
        raise ValueError(f"{name} must be {size} x {size} for this {type(model).__name__}, "
                         f"got shape {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    dtype, device = _dtype_device(model)
    return images.detach().to(dtype=dtype or images.dtype, device=device or images.device)


def _check_target(target: object, logits: torch.Tensor) -> torch.Tensor:
    """``target`` as a LongTensor ``[batch]`` of class indices (None: the argmax of ``logits`` [batch, classes])."""
    batch, classes = logits.shape
    if target is None:
        return logits.detach().argmax(dim=-1)  # (batch,)
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target must be None, an int or an integer tensor [batch], got dtype {target.dtype}")
        if target.ndim != 1 or target.shape[0] != batch:
            raise ValueError(f"target must be an integer tensor [batch] = [{batch}], got shape {tuple(target.shape)}")
        picked = target.to(device=logits.device, dtype=torch.long)
    elif isinstance(target, numbers.Integral) and not isinstance(target, bool):
        picked = torch.full((batch,), int(target), dtype=torch.long, device=logits.device)
    else:
        raise TypeError(f"target must be None, an int or an integer tensor [batch], got {type(target).__name__} "
                        f"{target!r}")
    if not bool(((picked >= 0) & (picked < classes)).all()):
        raise ValueError(f"target must be a class index in [0, {classes}), got {target!r}")
    return picked


def _check_baseline(baseline: object, images: torch.Tensor) -> torch.Tensor:
    """``baseline`` (a number or a tensor broadcasting to ``images``) as a tensor like ``images``."""
    if isinstance(baseline, torch.Tensor):
        if not baseline.is_floating_point():
            raise TypeError(f"baseline must be a number or a floating-point tensor, got dtype {baseline.dtype}")
        try:
            return baseline.detach().to(images).expand_as(images).contiguous()  # (batch, channel, H, W)
        except RuntimeError as error:
            raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to images "
                             f"{tuple(images.shape)}") from error
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        return torch.full_like(images, float(baseline))  # (batch, channel, H, W)
    raise TypeError(f"baseline must be a number or a tensor, got {type(baseline).__name__}")


def _check_logits(logits: object, batch: int) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model must return logits [batch, classes] with batch {batch}, got {got}")
    return logits


# --- attention ----------------------------------------------------------------------------------------------------


def vit_attention(model: SmallViT, images: torch.Tensor) -> torch.Tensor:
    """Attention patterns of every block of a ViT, recorded at ``blocks.{i}.attn.hook_pattern``.

    Args:
        model: a :class:`~explorer.models.vision.SmallViT` or :class:`~explorer.models.vision.HybridViT`.
        images: float ``[batch, channel, height, width]``.

    Returns:
        Tensor ``[layer, batch, head, token, token]`` (query, key; rows sum to 1), detached, in the model's dtype.
        With ``[CLS]`` token 0 is ``[CLS]`` and patch ``(r, c)`` is token ``1 + r cols + c``.
    """
    vit = _check_vit(model)
    x = _check_images(vit, images)  # (batch, channel, H, W)
    with evaluating(vit), torch.no_grad(), record(vit, PATTERN_HOOKS) as trace:
        vit(x)
    return stack_patterns(trace, PATTERN_HOOKS)  # (layer, batch, head, token, token)


def _readout_attention(model: SmallViT, patterns: torch.Tensor) -> torch.Tensor:
    """[layer, batch, head, token, token] -> the readout's attention to each patch [layer, batch, head, rows, cols]."""
    rows, cols = model.grid
    if model.config.pooling == "cls":
        to_patches = patterns[..., 0, 1:]  # (layer, batch, head, patch): [CLS] query, patch keys, not renormalised
    else:
        to_patches = patterns.mean(dim=-2)  # (layer, batch, head, patch): mean over the patch queries
    return to_patches.reshape(*to_patches.shape[:-1], rows, cols)


def cls_attention(model: SmallViT, images: torch.Tensor) -> torch.Tensor:
    """Per layer and head, the attention of the token the classifier reads out, over the patches.

    ``pooling="cls"``: the ``[CLS]`` query's row over the patch keys; the ``[CLS] -> [CLS]`` weight is dropped and
    the rest is **not** renormalised, so a map sums to ``1 - a_[CLS],[CLS]``, the share that reaches the patches.
    ``pooling="mean"`` (no ``[CLS]``): the mean over the patch queries of their rows (the readout averages the
    patch tokens); it sums to 1.

    Args:
        model: a :class:`~explorer.models.vision.SmallViT` or :class:`~explorer.models.vision.HybridViT`.
        images: float ``[batch, channel, height, width]``.

    Returns:
        Tensor ``[layer, batch, head, rows, cols]`` on the patch grid (``model.grid``), detached.
    """
    patterns = vit_attention(model, images)  # (layer, batch, head, token, token)
    return _readout_attention(model, patterns)


def _readout_rollout(model: SmallViT, patterns: torch.Tensor, residual: float, head_fusion: str) -> torch.Tensor:
    """[layer, batch, head, token, token] -> rollout at the readout over the patches [batch, rows, cols], sums 1."""
    rows, cols = model.grid
    rollout = attention_rollout(patterns, head_fusion=head_fusion, residual=residual)[-1]  # (batch, token, token)
    if model.config.pooling == "cls":
        flow = rollout[:, 0, 1:]  # (batch, patch): the [CLS] row, its [CLS] -> [CLS] entry dropped
    else:
        flow = rollout.mean(dim=1)  # (batch, patch): the mean of the patch rows, what mean pooling reads
    mass = flow.sum(dim=-1, keepdim=True)  # (batch, 1)
    if not bool((mass > 0).all()):
        raise ValueError(
            f"residual={residual} leaves the [CLS] row of the rollout with no mass on the patches (residual=1 makes "
            f"every layer the identity: nothing flows from the patches to [CLS]); use residual < 1"
        )
    return (flow / mass).reshape(-1, rows, cols)  # (batch, rows, cols), sums to 1


def rollout_map(model: SmallViT, images: torch.Tensor, residual: float = 0.5,
                head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout through every block, read at the classifier's readout, over the patches.

    Two steps after :func:`explorer.analysis.attention.attention_rollout` over all layers (rows of each
    ``A_hat = residual I + (1 - residual) A`` renormalised, multiplied over layers):

    1. take the readout's row: the ``[CLS]`` row (``pooling="cls"``) or the mean of the patch rows
       (``pooling="mean"``), and keep only the patch keys (drop ``[CLS] -> [CLS]``: the ``[CLS]`` input is a
       learned constant, the same for every image);
    2. renormalise it to sum to 1 over the patches: the share of the image information at the readout that comes
       from each patch.

    ``residual=1`` makes every layer the identity, so the ``[CLS]`` row has no patch mass: a ValueError (there is
    no distribution to show). With mean pooling it gives the uniform map ``1 / patches`` (each patch token then
    holds only its own patch).

    Args:
        model: a :class:`~explorer.models.vision.SmallViT` or :class:`~explorer.models.vision.HybridViT`.
        images: float ``[batch, channel, height, width]``.
        residual: identity weight in ``[0, 1]`` (0.5, the paper's choice).
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.

    Returns:
        Tensor ``[batch, rows, cols]``, nonnegative, each map summing to 1, detached.
    """
    vit = _check_vit(model)
    residual = check_real("residual", residual, 0, 1)
    check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    patterns = vit_attention(vit, images)  # (layer, batch, head, token, token)
    return _readout_rollout(vit, patterns, residual, head_fusion)


# --- gradients ----------------------------------------------------------------------------------------------------


def logit_gradient(model: nn.Module, images: torch.Tensor, target: object = None) -> torch.Tensor:
    """``|d logit_target / d image|`` summed over channels, normalised to sum to 1 per image.

    The effective receptive field of the class logit on this image (Luo et al. 2016, as
    :func:`explorer.analysis.receptive_field.effective_receptive_field` for a feature map, but per image and for
    the logit). One backward pass for the whole batch: ``sum_i logit_i[target_i]``, whose gradient with respect to
    image ``i`` is that of its own logit because the models process images independently (in eval mode).

    Args:
        model: any classifier ``images [batch, channel, H, W] -> logits [batch, classes]``.
        images: float ``[batch, channel, height, width]``.
        target: None (predicted class), an int, or an integer tensor ``[batch]``.

    Returns:
        Tensor ``[batch, height, width]``, nonnegative, each map summing to 1, detached, in the model's dtype.

    Raises:
        ZeroGradient: (a ValueError) if an image's gradient is zero everywhere (e.g. dead ReLUs).
    """
    model = _check_model(model)
    x = _check_images(model, images)  # (batch, channel, H, W)
    with evaluating(model):
        inp = x.clone().requires_grad_(True)  # a copy: the caller's tensor gets no graph
        with torch.enable_grad():
            logits = _check_logits(model(inp), x.shape[0])  # (batch, classes)
            picked = _check_target(target, logits)  # (batch,)
            chosen = logits.gather(1, picked[:, None]).sum()  # sum over the batch of each image's target logit
            if not chosen.requires_grad:
                raise ValueError("model's logits do not depend on the images")
            (grad,) = torch.autograd.grad(chosen, inp, allow_unused=True)
    if grad is None:
        raise ValueError("model's logits do not depend on the images")
    gmap = grad.detach().abs().sum(dim=1)  # (batch, H, W)
    total = gmap.sum(dim=(1, 2), keepdim=True)  # (batch, 1, 1)
    if not bool((total > 0).all()):
        zero = (total[:, 0, 0] <= 0).nonzero()[:, 0].tolist()
        raise ZeroGradient(f"logit_gradient: the gradient of the target logit is zero everywhere for images {zero} "
                           f"(e.g. dead ReLUs for this input)")
    return gmap / total


def integrated_gradients_map(
    model: nn.Module,
    images: torch.Tensor,
    target: object = None,
    steps: int = 32,
    baseline: float | torch.Tensor = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated gradients of the target logit, ``|IG|`` summed over channels, and the convergence delta.

    ``IG_i = (x_i - b_i) * integral_0^1 d logit / d x_i (b + a (x - b)) da`` by captum's ``IntegratedGradients``
    (Gauss-Legendre quadrature with ``steps`` points). Completeness: the signed attributions of an image sum to
    ``f(x) - f(b)``; ``delta`` is how far the quadrature misses that (a check on ``steps``). IG is zero wherever
    the image equals the baseline (every black pixel for the default black baseline).

    How fast ``delta`` shrinks depends on the model: the ViTs are smooth along the path (GELU, softmax, LayerNorm),
    so Gauss-Legendre converges fast (the shipped ViT in float64: ``|delta|`` about 6e-5 at 32 steps, 1e-8 at 64);
    a ReLU network's path gradient jumps at every ReLU kink, and the shipped CNN still misses by about 0.05 of a
    logit at 64 steps. captum (0.9) rounds the quadrature weights to float32 (``torch.tensor(step_sizes).float()``),
    so even in float64 the attributions carry a relative error of about 3e-8.

    Args:
        model: any classifier ``images [batch, channel, H, W] -> logits [batch, classes]``.
        images: float ``[batch, channel, height, width]``.
        target: None (predicted class), an int, or an integer tensor ``[batch]``.
        steps: integration points (>= 1).
        baseline: a number, or a tensor broadcasting to ``images``.

    Returns:
        ``(saliency [batch, height, width], delta [batch])``, detached, in the model's dtype; saliency is not
        normalised, ``delta = sum(signed attributions) - (f(image) - f(baseline))`` per image.
    """
    from captum.attr import IntegratedGradients  # imported here: captum is slow to import

    model = _check_model(model)
    x = _check_images(model, images)  # (batch, channel, H, W)
    steps = check_int("steps", steps, 1, integral=True, note="integration points")
    baselines = _check_baseline(baseline, x)  # (batch, channel, H, W)
    batch = x.shape[0]
    with evaluating(model):
        with torch.no_grad():
            logits = _check_logits(model(x), batch)  # (batch, classes)
        picked = _check_target(target, logits)  # (batch,)
        attributions, delta = IntegratedGradients(model).attribute(
            x,
            baselines=baselines,
            target=picked,
            n_steps=steps,
            method="gausslegendre",
            internal_batch_size=max(batch, min(steps * batch, IG_INTERNAL_BATCH)),  # captum: >= one row per image
            return_convergence_delta=True,
        )  # (batch, channel, H, W), (batch,)
    saliency = attributions.detach().abs().sum(dim=1)  # (batch, H, W)
    return saliency, delta.detach().to(saliency.dtype)


# --- one image, every map -----------------------------------------------------------------------------------------


def _check_image(model: nn.Module, image: object) -> torch.Tensor:
    """One image ``[channel, H, W]`` or ``[1, channel, H, W]`` -> ``[1, channel, H, W]`` in the model's dtype."""
    if isinstance(image, torch.Tensor) and image.ndim == 3:
        image = image[None]  # (1, channel, H, W)
    elif isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[0] != 1:
        raise ValueError(f"image must be one image [channel, height, width] or [1, channel, height, width], "
                         f"got a batch of shape {tuple(image.shape)}")
    elif isinstance(image, torch.Tensor) and image.ndim != 4:
        raise ValueError(f"image must have shape [channel, height, width] or [1, channel, height, width], "
                         f"got shape {tuple(image.shape)}")
    return _check_images(model, image, name="image")


def on_digit_share(maps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Share of each nonnegative map's mass on the image's nonzero pixels (any channel).

    Args:
        maps: nonnegative float ``[..., height, width]`` (one map, or e.g. ``LooksAt.attention``
            ``[layer, head, height, width]``); each map is normalised to sum to 1 first.
        image: ``[channel, height, width]`` or ``[height, width]``, the image the maps are about.

    Returns:
        float64 tensor of shape ``maps.shape[:-2]`` (a 0-d tensor for one map). A uniform map scores the digit's
        share of the image area.

    Raises:
        TypeError: a non-tensor argument. ValueError: mismatched sizes, a map with negative entries or zero mass,
        an image with no nonzero pixel.
    """
    check_tensor("maps", maps, "[..., height, width]")
    check_tensor("image", image, "[channel, height, width] or [height, width]")
    if image.ndim not in (2, 3):
        raise ValueError(f"image must have shape [channel, height, width] or [height, width], "
                         f"got shape {tuple(image.shape)}")
    ink = image.ne(0) if image.ndim == 2 else image.ne(0).any(dim=0)  # (H, W)
    if maps.ndim < 2 or tuple(maps.shape[-2:]) != tuple(ink.shape):
        raise ValueError(f"maps must end in the image's (height, width) {tuple(ink.shape)}, got {tuple(maps.shape)}")
    if not bool(ink.any()):
        raise ValueError("image has no nonzero pixel: there is no digit to score")
    weights = maps.detach().to(torch.float64)
    if bool((weights < 0).any()):
        raise ValueError("maps must be nonnegative")
    total = weights.sum(dim=(-2, -1))
    if bool((total <= 0).any()):
        raise ValueError("every map must have positive mass")
    return (weights * ink).sum(dim=(-2, -1)) / total


def looks_at(model: nn.Module, image: torch.Tensor, target: int | None = None, steps: int = 32, *,
             baseline: float | torch.Tensor = 0.0) -> LooksAt:
    """Every map of this module for one model on one image, and the share of each on the digit.

    ``on_digit[name]`` is the share of a map's mass on the image's nonzero pixels (any channel): for
    ``"gradient"`` / ``"ig"`` the pixel maps; for ``"attention"`` the last block's readout attention
    (:func:`cls_attention`, heads averaged) and for ``"rollout"`` :func:`rollout_map` (``residual=0.5``, heads
    averaged), each spread evenly over its patch's pixels and normalised to sum to 1. A uniform map scores the
    digit's share of the image area. With the black baseline, IG is zero off the ink, so ``on_digit["ig"]`` is 1
    by construction.

    Args:
        model: a :class:`~explorer.models.vision.SmallCNN` / :class:`~explorer.models.vision.SECNN` (kind
            ``"convolution"``) or :class:`~explorer.models.vision.SmallViT` / :class:`~explorer.models.vision.HybridViT`
            (kind ``"attention"``).
        image: float ``[channel, height, width]`` (one image of a dataset, ``images[i]``); a batch of one
            ``[1, channel, height, width]`` is accepted too.
        target: class to explain; None = the predicted class.
        steps: integration points of IG (>= 1).
        baseline: IG baseline (a number, or a tensor broadcasting to the image).

    Returns:
        A :class:`LooksAt`.

    Raises:
        ValueError: the image has no nonzero pixel (no digit to score), or equals the baseline (IG is zero).
    """
    _check_model(model)
    check_type("model", model, (SmallCNN, SmallViT),
               "a SmallCNN, SECNN, SmallViT or HybridViT (explorer.models.vision)")
    x = _check_image(model, image)  # (1, channel, H, W)
    check_int("target", target, integral=True, optional=True, note="a class index")
    steps = check_int("steps", steps, 1, integral=True, note="integration points")
    mask = x[0].ne(0).any(dim=0)  # (H, W): the digit's pixels
    if not bool(mask.any()):
        raise ValueError("image has no nonzero pixel: there is no digit to look at")
    height, width = x.shape[2:]

    with evaluating(model), torch.no_grad():
        logits = _check_logits(model(x), 1)  # (1, classes)
    picked = int(_check_target(target, logits)[0])
    gradient = logit_gradient(model, x, picked)[0]  # (H, W), sums to 1
    saliency, delta = integrated_gradients_map(model, x, picked, steps, baseline)  # (1, H, W), (1,)
    ig_total = saliency[0].sum()
    if not ig_total > 0:
        what = "the baseline tensor" if isinstance(baseline, torch.Tensor) else f"baseline={baseline!r}"
        raise ValueError(f"image gets zero integrated gradients everywhere (it equals {what}, or the gradient "
                         f"vanishes along the path)")
    ig = saliency[0] / ig_total  # (H, W), sums to 1
    maps = {"gradient": gradient, "ig": ig}

    attention = rollout = None
    if isinstance(model, SmallViT):
        rows, cols = model.grid
        patterns = vit_attention(model, x)  # (layer, 1, head, token, token)
        readout = _readout_attention(model, patterns)[:, 0]  # (layer, head, rows, cols)
        n_layer, n_head = readout.shape[:2]
        attention = upsample_patches(readout.reshape(n_layer * n_head, rows * cols), (rows, cols),
                                     (height, width)).reshape(n_layer, n_head, height, width)
        flow = _readout_rollout(model, patterns, 0.5, "mean")  # (1, rows, cols)
        rollout = upsample_patches(flow.reshape(1, rows * cols), (rows, cols), (height, width))[0]  # (H, W)
        last = attention[-1].mean(dim=0)  # (H, W): last block, heads averaged
        maps["attention"] = last / last.sum()
        maps["rollout"] = rollout
    on_digit = {name: float(on_digit_share(maps[name], x[0])) for name in MAP_NAMES if name in maps}
    return LooksAt(
        kind="attention" if isinstance(model, SmallViT) else "convolution",
        probs=torch.softmax(logits[0], dim=-1).detach(),
        predicted=int(logits[0].argmax()),
        target=picked,
        gradient=gradient,
        ig=ig,
        ig_delta=float(delta[0]),
        attention=attention,
        rollout=rollout,
        on_digit=on_digit,
    )
