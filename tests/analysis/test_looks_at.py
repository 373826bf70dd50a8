"""What each model looks at: attention maps, rollout, logit gradients and IG, against independent references.

Independent references used here:

- attention recomputed from the weights by ``torch.nn.MultiheadAttention`` (``need_weights=True``,
  ``average_attn_weights=False``), fed with each block's normalised tokens (captured at ``norm1`` by a forward
  hook), in float64: agreement within ``EXACT = 1e-12`` (rounding in a few hundred float64 operations is ~1e-16);
- attention rollout written out as a numpy loop of the Abnar & Zuidema formula (``r I + (1 - r) A`` with the heads
  fused, rows renormalised, multiplied over layers), read at ``[CLS]`` over the patches and renormalised;
- closed forms: ``residual = 1`` makes the rollout the identity (no mass from the patches to ``[CLS]``; uniform
  ``1 / patches`` under mean pooling); the logit gradient of ``f = W x`` is ``|W[t]|``; IG of
  ``f = w x + q x^2`` is ``w (x - b) + q (x^2 - b^2)`` (the integrand is linear in the path parameter, so
  Gauss-Legendre quadrature is exact for any ``steps >= 1``); IG is zero wherever the image equals the baseline;
- central finite differences of the logit (float64, step ``1e-6``: truncation ~1e-12, rounding ~1e-10 relative);
- IG written out by hand: Gauss-Legendre nodes from ``numpy.polynomial.legendre.leggauss`` mapped to ``[0, 1]``,
  one ``torch.autograd.grad`` per node;
- on-digit shares recomputed in numpy from the digit's nonzero pixels and, for attention, from the reference
  patterns upsampled with ``numpy.repeat``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explorer.analysis import (
    MAP_NAMES,
    LooksAt,
    ZeroGradient,
    cls_attention,
    integrated_gradients_map,
    logit_gradient,
    looks_at,
    on_digit_share,
    rollout_map,
    vit_attention,
)
from explorer.data.digits import digits_dataset
from explorer.models.vision import build_vision_model
from explorer.models.head_to_head import load_head_to_head

EXACT = 1e-12  # float64 agreement of two computations of the same quantity (rounding only, ~1e-16 measured)
FLOAT32 = 1e-5  # float32 agreement (the shipped models), single-precision rounding ~1e-7 per operation


def _randomise(model: nn.Module, seed: int, scale: float = 0.7) -> nn.Module:
    """Every parameter redrawn N(0, scale^2) in float64, so that attention patterns are far from uniform."""
    generator = torch.Generator().manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float64) * scale)
    return model.eval()


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    """Random float64 ViT with [CLS]: 12 x 12 images, 3 x 3 patches of 4, 2 blocks of 4 heads (10 tokens)."""
    return _randomise(build_vision_model("vit", seed=0, image_size=12, depth=2), seed=1)


@pytest.fixture(scope="module")
def hybrid_mean() -> nn.Module:
    """Random float64 HybridViT with mean pooling (no [CLS]): 12 x 12 images, 9 tokens, 2 blocks."""
    return _randomise(build_vision_model("hybrid", seed=0, image_size=12, pooling="mean"), seed=2)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Two random float32 12 x 12 single-channel images (exactly representable in float64)."""
    return torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return digits_dataset("test", canvas=24, placement="centre", n=4)


@pytest.fixture(scope="module")
def shipped() -> dict[str, nn.Module]:
    return {name: load_head_to_head(name)[0] for name in ("cnn", "vit")}


def _reference_patterns(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """[layer, batch, head, token, token] recomputed by torch.nn.MultiheadAttention from each block's input."""
    normalised: list[torch.Tensor] = []
    handles = [block.norm1.register_forward_hook(lambda _m, _a, out: normalised.append(out.detach()))
               for block in model.blocks]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    patterns = []
    for block, tokens in zip(model.blocks, normalised):
        ours = block.attn
        dtype = tokens.dtype
        mha = nn.MultiheadAttention(ours.embed_dim, ours.num_heads, batch_first=True, dtype=dtype)
        with torch.no_grad():
            mha.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
            mha.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
            _, weights = mha(tokens, tokens, tokens, need_weights=True, average_attn_weights=False)
        patterns.append(weights)  # (batch, head, query, key)
    return torch.stack(patterns)  # (layer, batch, head, query, key)


def _rollout_reference(patterns: torch.Tensor, residual: float, fusion: str, cls: bool) -> np.ndarray:
    """[batch, patch] by a plain loop of Abnar & Zuidema's rollout, read at [CLS] (or the mean of the rows)."""
    pattern = patterns.numpy()  # (layer, batch, head, token, token)
    n_layer, batch, _, n, _ = pattern.shape
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[fusion]
    maps = []
    for b in range(batch):
        rollout = np.eye(n)
        for layer in range(n_layer):
            mixed = residual * np.eye(n) + (1 - residual) * fuse(pattern[layer, b], axis=0)
            mixed = mixed / mixed.sum(axis=1, keepdims=True)
            rollout = mixed @ rollout
        row = rollout[0, 1:] if cls else rollout.mean(axis=0)
        maps.append(row / row.sum())
    return np.stack(maps)


# --- attention ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vit", "hybrid_mean"])
def test_vit_attention_matches_torch_multihead_attention(name, images, request):
    model = request.getfixturevalue(name)
    got = vit_attention(model, images)  # float32 images, converted to the float64 model
    want = _reference_patterns(model, images.double())
    n_token = 10 if name == "vit" else 9
    assert got.dtype == torch.float64 and not got.requires_grad
    assert got.shape == (2, 2, 4, n_token, n_token)
    torch.testing.assert_close(got, want, atol=EXACT, rtol=0)
    torch.testing.assert_close(got.sum(-1), torch.ones(2, 2, 4, n_token, dtype=torch.float64), atol=EXACT, rtol=0)
    assert float(got.amax(-1).mean()) > 0.3  # peaked rows (measured 0.67), not near-uniform ones (1 / 10)


def test_cls_attention_is_the_cls_row_not_renormalised(vit, images):
    got = cls_attention(vit, images)  # (layer, batch, head, rows, cols)
    ref = _reference_patterns(vit, images.double())  # (layer, batch, head, token, token)
    assert got.shape == (2, 2, 4, 3, 3)
    for r in range(3):
        for c in range(3):
            torch.testing.assert_close(got[..., r, c], ref[..., 0, 1 + r * 3 + c], atol=EXACT, rtol=0)
    # what reaches the patches is what [CLS] does not keep for itself
    torch.testing.assert_close(got.sum(dim=(-2, -1)), 1 - ref[..., 0, 0], atol=EXACT, rtol=0)


def test_cls_attention_mean_pooling_averages_the_patch_rows(hybrid_mean, images):
    got = cls_attention(hybrid_mean, images)
    ref = _reference_patterns(hybrid_mean, images.double())  # (layer, batch, head, 9, 9), no [CLS]
    torch.testing.assert_close(got, ref.mean(dim=-2).reshape(2, 2, 4, 3, 3), atol=EXACT, rtol=0)
    torch.testing.assert_close(got.sum(dim=(-2, -1)), torch.ones(2, 2, 4, dtype=torch.float64), atol=EXACT, rtol=0)


@pytest.mark.parametrize("residual, fusion", [(0.5, "mean"), (0.0, "mean"), (0.3, "max")])
def test_rollout_map_matches_a_hand_loop(vit, images, residual, fusion):
    got = rollout_map(vit, images, residual=residual, head_fusion=fusion)
    want = _rollout_reference(_reference_patterns(vit, images.double()), residual, fusion, cls=True)
    assert got.shape == (2, 3, 3)
    np.testing.assert_allclose(got.reshape(2, 9).numpy(), want, atol=EXACT, rtol=0)


def test_rollout_map_mean_pooling_matches_a_hand_loop(hybrid_mean, images):
    got = rollout_map(hybrid_mean, images)
    want = _rollout_reference(_reference_patterns(hybrid_mean, images.double()), 0.5, "mean", cls=False)
    np.testing.assert_allclose(got.reshape(2, 9).numpy(), want, atol=EXACT, rtol=0)


def test_rollout_map_residual_one_is_the_identity(vit, hybrid_mean, images):
    # identity rollout: [CLS] receives nothing from the patches, there is no map to show
    with pytest.raises(ValueError, match="residual"):
        rollout_map(vit, images, residual=1.0)
    # mean pooling: each patch token holds only its own patch -> uniform 1 / 9, exactly
    uniform = rollout_map(hybrid_mean, images, residual=1.0)
    torch.testing.assert_close(uniform, torch.full((2, 3, 3), 1 / 9, dtype=torch.float64), atol=1e-15, rtol=0)


# --- gradients ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, target", [("vit", 3), ("vit", None), ("se_cnn", 7)])
def test_logit_gradient_matches_finite_differences(name, target):
    model = _randomise(build_vision_model(name, seed=0, image_size=8, in_channels=2), seed=4)
    x = torch.rand(1, 2, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    got = logit_gradient(model, x, target)
    with torch.no_grad():
        logits = model(x)
        t = int(logits.argmax()) if target is None else target
        eps = 1e-6
        bumps = torch.eye(2 * 8 * 8, dtype=torch.float64).reshape(-1, 2, 8, 8) * eps  # one per (channel, pixel)
        diff = (model(x + bumps)[:, t] - model(x - bumps)[:, t]) / (2 * eps)  # (channel * H * W,)
    want = diff.abs().reshape(2, 8, 8).sum(dim=0)  # |grad| summed over the channels
    want = want / want.sum()
    assert got.shape == (1, 8, 8) and got.dtype == torch.float64
    # central differences: truncation ~1e-12 and rounding ~1e-10 relative on the raw gradient
    torch.testing.assert_close(got[0], want, atol=1e-8, rtol=0)


def test_logit_gradient_of_a_linear_model_is_its_weight_row():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 6, 4)).double()  # no config: any image size
    x = torch.randn(3, 2, 5, 6, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    target = torch.tensor([0, 3, 1])
    got = logit_gradient(model, x, target)
    weight = model[1].weight.detach().abs().reshape(4, 2, 5, 6).sum(dim=1)  # (class, H, W)
    want = weight[target] / weight[target].sum(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(got, want, atol=1e-15, rtol=0)
    with pytest.raises(ZeroGradient, match="zero everywhere"):  # a class whose weights are all zero
        with torch.no_grad():
            model[1].weight[2] = 0.0
        logit_gradient(model, x, 2)


def test_gradients_restore_flags_and_leave_parameter_grads(images):
    model = build_vision_model("vit", seed=0, image_size=12, depth=1).train()
    model.blocks[0].eval()  # a mixed state must come back as it was
    logit_gradient(model, images)
    integrated_gradients_map(model, images, steps=2)
    rollout_map(model, images)
    assert model.training and model.patch_embed.training and not model.blocks[0].training
    assert not model.blocks[0].attn.training
    assert all(p.grad is None for p in model.parameters())


class _Quadratic(nn.Module):
    """logits = flat(x) @ w.T + flat(x)^2 @ q.T."""

    def __init__(self, w: torch.Tensor, q: torch.Tensor) -> None:
        super().__init__()
        self.w, self.q = nn.Parameter(w), nn.Parameter(q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return flat @ self.w.T + flat.square() @ self.q.T


def test_integrated_gradients_closed_form():
    gen = torch.Generator().manual_seed(7)
    w, q = (torch.randn(4, 2 * 3 * 5, generator=gen, dtype=torch.float64) for _ in range(2))
    model = _Quadratic(w, q)
    x = torch.randn(3, 2, 3, 5, generator=gen, dtype=torch.float64)
    baseline = torch.tensor([0.5, -1.0], dtype=torch.float64)[:, None, None]  # per channel
    target = torch.tensor([2, 0, 3])
    saliency, delta = integrated_gradients_map(model, x, target, steps=3, baseline=baseline)
    b = baseline.expand_as(x[0])
    attributions = (w[target].reshape(3, 2, 3, 5) * (x - b) + q[target].reshape(3, 2, 3, 5) * (x**2 - b**2))
    # captum rounds the quadrature weights to float32: relative error up to ~6e-8 (float32 epsilon / 2)
    torch.testing.assert_close(saliency, attributions.abs().sum(dim=1), atol=EXACT, rtol=1e-7)
    scale = attributions.abs().sum(dim=(1, 2, 3))  # (batch,)
    assert bool((delta.abs() <= 1e-7 * scale).all())  # completeness up to the same rounding of the weights


def test_integrated_gradients_matches_a_hand_written_quadrature(vit, images):
    steps = 5
    x = images.double()
    baseline = 0.25
    target = torch.tensor([4, 9])
    saliency, delta = integrated_gradients_map(vit, images, target, steps=steps, baseline=baseline)
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    path_grad = torch.zeros_like(x)
    weights = (weights / 2).astype(np.float32).astype(np.float64)  # captum 0.9 rounds the weights to float32
    for node, weight in zip(nodes, weights):  # Gauss-Legendre on [0, 1]: a = (node + 1) / 2, weight / 2
        point = (baseline + (node + 1) / 2 * (x - baseline)).requires_grad_(True)
        (grad,) = torch.autograd.grad(vit(point).gather(1, target[:, None]).sum(), point)
        path_grad += weight * grad
    attributions = (x - baseline) * path_grad  # (batch, channel, H, W), signed
    with torch.no_grad():
        change = (vit(x) - vit(torch.full_like(x, baseline))).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(saliency, attributions.abs().sum(dim=1), atol=EXACT, rtol=0)
    torch.testing.assert_close(delta, attributions.sum(dim=(1, 2, 3)) - change, atol=EXACT, rtol=0)


def test_integrated_gradients_completeness_on_the_shipped_vit(digits):
    model = load_head_to_head("vit")[0].double()  # a copy in float64: the fixture's model stays float32
    saliency, delta = integrated_gradients_map(model, digits[0][:1], steps=32)
    # the ViT is smooth (GELU, softmax, LayerNorm), so Gauss-Legendre converges fast: measured |delta| 6.1e-9
    # (the float32 rounding of captum's weights alone is ~1e-8 relative); the shipped CNN misses by ~0.1 here
    assert abs(float(delta[0])) < 1e-6
    assert saliency.shape == (1, 24, 24) and saliency.dtype == torch.float64


# --- one image ----------------------------------------------------------------------------------------------------


def _share(pixel_map: np.ndarray, mask: np.ndarray) -> float:
    return float((pixel_map * mask).sum() / pixel_map.sum())


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_looks_at_shipped_models(name, shipped, digits):
    model = shipped[name]
    image = digits[0][1]  # [1, 24, 24]
    result = looks_at(model, image, steps=16)
    assert isinstance(result, LooksAt)
    with torch.no_grad():
        logits = model(image[None])[0]
    assert result.kind == ("attention" if name == "vit" else "convolution")
    assert result.predicted == int(logits.argmax()) == result.target
    torch.testing.assert_close(result.probs, torch.softmax(logits, dim=-1), atol=FLOAT32, rtol=0)
    for pixel_map in (result.gradient, result.ig):
        assert pixel_map.shape == (24, 24) and float(pixel_map.min()) >= 0
        assert abs(float(pixel_map.sum()) - 1) < FLOAT32
    torch.testing.assert_close(result.gradient, logit_gradient(model, image[None])[0], atol=0, rtol=0)

    mask = image[0].numpy() != 0  # the digit's ink
    assert not result.ig.numpy()[~mask].any()  # IG from the black baseline is exactly zero off the ink
    want = {"gradient": _share(result.gradient.numpy(), mask), "ig": 1.0}
    if name == "vit":
        ref = _reference_patterns(model, image[None])[:, 0]  # (layer, head, token, token)
        cls_row = ref[:, :, 0, 1:].reshape(3, 4, 6, 6).numpy()  # (layer, head, rows, cols)
        per_pixel = np.repeat(np.repeat(cls_row, 4, axis=-2), 4, axis=-1) / 16  # each patch spread over 16 pixels
        assert result.attention.shape == (3, 4, 24, 24) and result.rollout.shape == (24, 24)
        np.testing.assert_allclose(result.attention.numpy(), per_pixel, atol=FLOAT32, rtol=0)
        assert abs(float(result.rollout.sum()) - 1) < FLOAT32
        want["attention"] = _share(per_pixel[-1].mean(axis=0), mask)
        want["rollout"] = _share(result.rollout.numpy(), mask)
    else:
        assert result.attention is None and result.rollout is None
    assert tuple(result.on_digit) == tuple(n for n in MAP_NAMES if n in want)
    for key, share in result.on_digit.items():
        assert 0 <= share <= 1
        assert abs(share - want[key]) < FLOAT32, key

    other = (result.predicted + 1) % 10
    batch_of_one = looks_at(model, image[None], target=other, steps=2)  # [1, 1, H, W] is accepted too
    assert batch_of_one.target == other and batch_of_one.predicted == result.predicted
    torch.testing.assert_close(batch_of_one.gradient, logit_gradient(model, image[None], other)[0], atol=0, rtol=0)


def test_on_digit_share_per_head_matches_a_numpy_loop():
    gen = torch.Generator().manual_seed(3)
    image = torch.zeros(2, 6, 5, dtype=torch.float64)
    image[0, 1:3, 2] = 0.5
    image[1, 4, 0] = 1.0  # ink in either channel counts
    ink = image.numpy().any(axis=0)
    maps = torch.rand(3, 4, 6, 5, generator=gen, dtype=torch.float64)
    shares = on_digit_share(maps, image)
    assert shares.shape == (3, 4) and shares.dtype == torch.float64
    for layer in range(3):
        for head in range(4):
            want = _share(maps[layer, head].numpy(), ink)
            assert abs(float(shares[layer, head]) - want) < 1e-15  # float64 sums of 30 terms
    uniform = on_digit_share(torch.ones(6, 5), image[0] + image[1])  # a uniform map scores the ink's area share
    assert shares.ndim == 2 and abs(float(uniform) - ink.sum() / ink.size) < 1e-15


@pytest.mark.parametrize("maps, image, error, name", [
    ("map", torch.ones(4, 4), TypeError, "maps"),
    (torch.ones(4, 4), None, TypeError, "image"),
    (torch.ones(4, 5), torch.ones(4, 4), ValueError, "maps"),
    (torch.ones(4, 4), torch.ones(1, 1, 4, 4), ValueError, "image"),
    (torch.ones(4, 4), torch.zeros(4, 4), ValueError, "no nonzero pixel"),
    (-torch.ones(4, 4), torch.ones(4, 4), ValueError, "nonnegative"),
    (torch.zeros(2, 4, 4), torch.ones(4, 4), ValueError, "positive mass"),
])
def test_on_digit_share_refuses_bad_input(maps, image, error, name):
    with pytest.raises(error, match=name):
        on_digit_share(maps, image)


# --- errors -------------------------------------------------------------------------------------------------------

_BAD = {
    "images not a tensor": (TypeError, "images", lambda v, c, x: vit_attention(v, x.numpy())),
    "images integer": (TypeError, "images", lambda v, c, x: logit_gradient(c, x.long())),
    "images bool": (TypeError, "images", lambda v, c, x: cls_attention(v, x > 0.5)),
    "images 3-D": (ValueError, "images", lambda v, c, x: rollout_map(v, x[0])),
    "images channels": (ValueError, "images", lambda v, c, x: logit_gradient(c, x.repeat(1, 2, 1, 1))),
    "images size": (ValueError, "images", lambda v, c, x: vit_attention(v, x[..., :8, :8])),
    "images empty": (ValueError, "images", lambda v, c, x: logit_gradient(c, x[:0])),
    "images NaN": (ValueError, "images", lambda v, c, x: integrated_gradients_map(c, x * float("nan"))),
    "model not a module": (TypeError, "model", lambda v, c, x: logit_gradient("cnn", x)),
    "model not a ViT": (TypeError, "model", lambda v, c, x: cls_attention(c, x)),
    "model not a ViT (rollout)": (TypeError, "model", lambda v, c, x: rollout_map(nn.Linear(2, 2), x)),
    "model not a vision model": (TypeError, "model", lambda v, c, x: looks_at(nn.Sequential(), x[0])),
    "target too large": (ValueError, "target", lambda v, c, x: logit_gradient(c, x, 10)),
    "target negative": (ValueError, "target", lambda v, c, x: integrated_gradients_map(c, x, -1, steps=1)),
    "target float": (TypeError, "target", lambda v, c, x: logit_gradient(c, x, 1.0)),
    "target bool": (TypeError, "target", lambda v, c, x: logit_gradient(c, x, True)),
    "target float tensor": (TypeError, "target", lambda v, c, x: logit_gradient(c, x, torch.tensor([1.0, 2.0]))),
    "target wrong batch": (ValueError, "target", lambda v, c, x: logit_gradient(c, x, torch.tensor([1]))),
    "target in looks_at": (ValueError, "target", lambda v, c, x: looks_at(c, x[0], target=12)),
    "target tensor in looks_at": (TypeError, "target", lambda v, c, x: looks_at(c, x[0], target=torch.tensor(1))),
    "steps zero": (ValueError, "steps", lambda v, c, x: integrated_gradients_map(c, x, steps=0)),
    "steps float": (TypeError, "steps", lambda v, c, x: looks_at(c, x[0], steps=2.5)),
    "residual above 1": (ValueError, "residual", lambda v, c, x: rollout_map(v, x, residual=1.5)),
    "residual below 0": (ValueError, "residual", lambda v, c, x: rollout_map(v, x, residual=-0.1)),
    "residual str": (TypeError, "residual", lambda v, c, x: rollout_map(v, x, residual="half")),
    "head_fusion": (ValueError, "head_fusion", lambda v, c, x: rollout_map(v, x, head_fusion="sum")),
    "baseline str": (TypeError, "baseline", lambda v, c, x: integrated_gradients_map(c, x, baseline="black")),
    "baseline shape": (ValueError, "baseline", lambda v, c, x: integrated_gradients_map(c, x, baseline=torch.zeros(3))),
    "image batch": (ValueError, "image", lambda v, c, x: looks_at(c, x)),
    "image 2-D": (ValueError, "image", lambda v, c, x: looks_at(c, x[0, 0])),
    "image integer": (TypeError, "image", lambda v, c, x: looks_at(v, x[0].long())),
    "image blank": (ValueError, "image", lambda v, c, x: looks_at(c, torch.zeros(1, 12, 12))),
}


@pytest.mark.parametrize("case", sorted(_BAD))
def test_bad_inputs_name_the_argument(case, vit, images):
    error, name, call = _BAD[case]
    cnn = build_vision_model("cnn", seed=0, image_size=12, channels=(4,))
    with pytest.raises(error, match=name):
        call(vit, cnn, images)
