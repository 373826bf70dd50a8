import pytest
import torch

from explorer import record
from explorer.models.vision import (
    VISION_MODELS, HybridViT, SECNN, SmallCNN, SmallViT, build_vision_model, parameter_table, weight_sharing_table,
)


def _images(batch: int = 3, channels: int = 1, size: int = 16, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, size, size, generator=generator, dtype=dtype)


# --- closed-form parameter counts (independent of the code under test) ------------------------------------------


def conv(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + c_out


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def se(c: int, reduction: int = 4) -> int:
    return linear(c, c // reduction) + linear(c // reduction, c)


def vit_blocks(d: int, depth: int, mlp: int = 2) -> int:
    # per block: two LayerNorms (2d each), four d x d projections with bias, MLP d -> mlp*d -> d
    return depth * (2 * 2 * d + 4 * linear(d, d) + linear(d, mlp * d) + linear(mlp * d, d))


CLOSED_FORM = {
    "cnn": conv(3, 1, 32) + conv(3, 32, 40) + conv(3, 40, 40) + linear(40, 10),
    "se_cnn": conv(3, 1, 32) + conv(3, 32, 40) + conv(3, 40, 40) + linear(40, 10) + se(32) + se(40) + se(40),
    # patchify conv, 16 learned positions + [CLS], blocks, final LayerNorm, head
    "vit": conv(4, 1, 32) + 16 * 32 + 32 + vit_blocks(32, 3) + 2 * 32 + linear(32, 10),
    "hybrid": conv(3, 1, 16) + conv(3, 16, 16) + conv(4, 16, 32) + 16 * 32 + 32 + vit_blocks(32, 2) + 2 * 32
    + linear(32, 10),
}


def test_parameter_counts_match_closed_form_and_are_within_20_percent():
    table = {row["model"]: row for row in parameter_table()}
    assert tuple(table) == VISION_MODELS
    for name, row in table.items():
        model = build_vision_model(name)
        assert row["parameters"] == sum(p.numel() for p in model.parameters()) == CLOSED_FORM[name], name
        kinds = [k for k in row if k not in ("model", "class", "parameters")]
        assert sum(row[k] for k in kinds) == row["parameters"]  # every parameter in exactly one layer type
    counts = [CLOSED_FORM[name] for name in VISION_MODELS]
    assert max(counts) <= 1.2 * min(counts)
    assert table["cnn"]["Conv2d"] == conv(3, 1, 32) + conv(3, 32, 40) + conv(3, 40, 40)
    assert table["se_cnn"]["SqueezeExcite"] == se(32) + se(40) + se(40)
    assert table["vit"]["MultiheadAttention"] == 3 * 4 * linear(32, 32)


@pytest.mark.parametrize("name, channels, stride, grid", [
    ("cnn", 40, 2, 8), ("se_cnn", 40, 2, 8), ("vit", 32, 4, 4), ("hybrid", 32, 4, 4),
])
def test_shapes_and_feature_stride(name, channels, stride, grid):
    model = build_vision_model(name, seed=0)
    x = _images()
    logits = model(x)
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    assert model.features(x).shape == (3, channels, grid, grid)
    assert model.feature_stride == stride and grid * stride == 16
    # other sizes: 3 channels, 24 px, 5 classes
    other = build_vision_model(name, in_channels=3, image_size=24, num_classes=5)
    x = _images(2, 3, 24)
    assert other(x).shape == (2, 5)
    assert other.features(x).shape == (2, channels, 24 // stride, 24 // stride)


def test_cnn_without_pool_and_mean_pooling():
    model = SmallCNN(pool=False)
    assert model.feature_stride == 1 and model.features(_images()).shape == (3, 40, 16, 16)
    vit = SmallViT(pooling="mean", positions="none", patch=2)
    assert vit.feature_stride == 2 and vit.features(_images()).shape == (3, 32, 8, 8) and vit.num_tokens == 64


def _permute_patches(images: torch.Tensor, patch: int, order: torch.Tensor) -> torch.Tensor:
    """Rearrange the patch x patch blocks of the images: block k of the result is block order[k] of the input."""
    b, c, h, w = images.shape
    rows, cols = h // patch, w // patch
    blocks = images.reshape(b, c, rows, patch, cols, patch).permute(0, 1, 2, 4, 3, 5).reshape(b, c, rows * cols,
                                                                                             patch, patch)
    blocks = blocks[:, :, order]
    return blocks.reshape(b, c, rows, cols, patch, patch).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


def test_vit_without_positions_is_permutation_invariant():
    torch.manual_seed(1)
    x = _images(4, dtype=torch.float64)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(2))
    permuted = _permute_patches(x, 4, order)
    # closed form: without position information every block is permutation equivariant over tokens, so the
    # patch tokens are permuted with the patches and the mean over them (or a [CLS] read-out) is invariant
    model = SmallViT(positions="none", pooling="mean").double()
    torch.testing.assert_close(model(permuted), model(x), atol=1e-10, rtol=0)
    features = model.features(x).flatten(2)  # (batch, embed, patch)
    torch.testing.assert_close(model.features(permuted).flatten(2), features[:, :, order], atol=1e-10, rtol=0)
    cls_model = SmallViT(positions="none", pooling="cls").double()
    torch.testing.assert_close(cls_model(permuted), cls_model(x), atol=1e-10, rtol=0)
    # with learned positions the logits change
    with_positions = SmallViT(positions="learned", pooling="mean").double()
    assert (with_positions(permuted) - with_positions(x)).abs().max() > 1e-6
    # the hybrid's conv stem sees across patch borders: not invariant even without positions
    hybrid = HybridViT(positions="none", pooling="mean").double()
    assert (hybrid(permuted) - hybrid(x)).abs().max() > 1e-6


@pytest.mark.parametrize("cls", [SmallCNN, SECNN])
def test_circular_cnn_is_shift_equivariant(cls):
    torch.manual_seed(3)
    x = _images(2, dtype=torch.float64)
    model = cls(padding_mode="circular", pool=False).double()
    logits, features = model(x), model.features(x)
    for shift in [(1, 0), (0, 5), (3, 7), (-6, 2)]:
        shifted = torch.roll(x, shift, dims=(2, 3))
        torch.testing.assert_close(model(shifted), logits, atol=1e-10, rtol=0)  # invariant
        torch.testing.assert_close(model.features(shifted), torch.roll(features, shift, dims=(2, 3)), atol=1e-10,
                                   rtol=0)  # equivariant
    pooled = cls(padding_mode="circular", pool=True).double()  # stride 2: equivariant to even shifts
    shifted = torch.roll(x, (2, -4), dims=(2, 3))
    torch.testing.assert_close(pooled.features(shifted), torch.roll(pooled.features(x), (1, -2), dims=(2, 3)),
                               atol=1e-10, rtol=0)
    # zero padding breaks the exact invariance (the borders differ)
    zeros = cls(padding_mode="zeros", pool=False).double()
    assert (zeros(torch.roll(x, (3, 7), dims=(2, 3))) - zeros(x)).abs().max() > 1e-6


def test_weight_sharing_table():
    x = _images(2)
    vit = build_vision_model("vit", seed=0)
    rows = weight_sharing_table(vit, x)
    modules = dict(vit.named_modules())
    params = dict(vit.named_parameters())
    for row in rows:
        target = modules.get(row["layer"])
        expected = sum(p.numel() for p in target.parameters()) if target is not None else params[row["layer"]].numel()
        assert row["learned"] == expected, row
    assert sum(r["learned"] for r in rows) == sum(p.numel() for p in vit.parameters())
    attention = [r for r in rows if r["type"] == "MultiheadAttention"]
    n = 17  # 16 patches + [CLS]
    assert [r["computed_per_input"] for r in attention] == [4 * n * n] * 3  # heads x queries x keys per block
    assert sum(r["computed_per_input"] for r in rows) == 4 * n * n * 3
    assert all(r["learned"] == 4 * linear(32, 32) for r in attention)  # the shared projections
    mean_vit = build_vision_model("vit", pooling="mean")
    assert sum(r["computed_per_input"] for r in weight_sharing_table(mean_vit, x)) == 4 * 16 * 16 * 3

    cnn = build_vision_model("cnn")
    cnn_rows = weight_sharing_table(cnn, x)
    assert all(r["computed_per_input"] == 0 for r in cnn_rows)
    assert [r["layer"] for r in cnn_rows] == ["body.conv1", "body.conv2", "body.conv3", "head"]
    assert [r["learned"] for r in cnn_rows] == [conv(3, 1, 32), conv(3, 32, 40), conv(3, 40, 40), linear(40, 10)]
    se_rows = weight_sharing_table(build_vision_model("se_cnn"), x)
    assert sum(r["computed_per_input"] for r in se_rows) == 32 + 40 + 40  # one gate per channel


def test_hook_points():
    model = build_vision_model("hybrid", seed=0)
    with record(model, ["*.hook_pattern", "stem.conv2.hook_out", "hook_tokens"]) as trace:
        model(_images(2))
    assert trace["blocks.1.attn.hook_pattern"].shape == (2, 4, 17, 17)
    torch.testing.assert_close(trace["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(2, 4, 17), atol=1e-5, rtol=0)
    assert trace["stem.conv2.hook_out"].shape == (2, 16, 16, 16) and trace["hook_tokens"].shape == (2, 17, 32)
    se_model = build_vision_model("se_cnn")
    with record(se_model, "*.hook_gates") as trace:
        se_model(_images(2))
    gates = trace["body.se3.hook_gates"]
    assert gates.shape == (2, 40) and ((gates > 0) & (gates < 1)).all()


def test_seed_is_reproducible_and_leaves_global_rng():
    state = torch.random.get_rng_state()
    a, b = build_vision_model("vit", seed=7), build_vision_model("vit", seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("name", VISION_MODELS)
def test_bad_images(name):
    model = build_vision_model(name)
    with pytest.raises(ValueError, match=r"images must have shape \(batch, 1, 16, 16\)"):
        model(torch.rand(2, 1, 15, 16))
    with pytest.raises(ValueError, match="images"):
        model.features(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="images"):
        model(torch.rand(1, 16, 16))
    with pytest.raises(TypeError, match="images.*floating"):
        model(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))
    with pytest.raises(TypeError, match="images"):
        model([[0.0]])
    with pytest.raises(ValueError, match="images"):
        weight_sharing_table(model, torch.rand(2, 1, 8, 8))


def test_bad_names_and_options():
    with pytest.raises(ValueError, match=r"name must be one of \('cnn', 'vit', 'hybrid', 'se_cnn'\)"):
        build_vision_model("resnet")
    with pytest.raises(TypeError, match="unknown option"):
        build_vision_model("cnn", positions="none")
    with pytest.raises(ValueError, match="positions"):
        SmallViT(positions="sincos")
    with pytest.raises(ValueError, match="pooling"):
        SmallViT(pooling="max")
    with pytest.raises(ValueError, match="padding_mode"):
        SmallCNN(padding_mode="reflect")
    with pytest.raises(ValueError, match="image_size"):
        SmallViT(image_size=18)
    with pytest.raises(ValueError, match="channels"):
        SmallCNN(channels=(32, 0))
