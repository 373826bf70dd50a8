"""Theoretical receptive field through attention layers: CNNs, attention stacks and hybrids with one call.

Independent references used here:

- closed forms: ``1 + sum (k - 1)`` for stride-1 convs, ``w - 1`` more per sliding-window layer (as the same conv),
  the Araujo et al. recursion by hand for the ViTs' stems and patch embeddings;
- :func:`attention_receptive_field`, which measures what each query reaches in the mask's graph (boolean matrix
  powers of ``mask.dense(n, n)``) and predicts the largest field from the geometry;
- brute force: the input positions with a non-zero gradient for one output of a random-weight network (float64),
  which must lie inside the theoretical box clipped to the input, and fill it (its bounding box is the box).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from explorer import masks
from explorer.analysis import RFLayer, attention_receptive_field, receptive_field
from explorer.layers import LinearAttention, MultiheadAttention
from explorer.models.vision import HybridViT, SmallViT

# ------------------------------------------------------------------------------------------------------------------
# models and helpers
# ------------------------------------------------------------------------------------------------------------------


def _attention(mask, embed: int = 8):
    if mask == "linear-causal":
        return LinearAttention(embed, 2, causal=True)
    return MultiheadAttention(embed, 2, mask=mask, backend="math")


class ConvAttentionConv(nn.Module):
    """[batch, channel, length] -> Conv1d(k1) -> tokens -> ``layers`` attention layers -> Conv1d(k2)."""

    def __init__(self, mask, layers: int = 2, k1: int = 3, k2: int = 3, residual: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 8, k1, padding=k1 // 2)
        self.attn = nn.ModuleList(_attention(mask) for _ in range(layers))
        self.conv2 = nn.Conv1d(8, 3, k2, padding=k2 // 2)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv1(x).transpose(1, 2)  # (batch, length, embed)
        for layer in self.attn:
            tokens = tokens + layer(tokens) if self.residual else layer(tokens)
        return self.conv2(tokens.transpose(1, 2))  # (batch, channel, length)


class AttentionStack(nn.Module):
    """Attention only, on tokens [batch, seq, embed] (the input layout is detected from the first layer)."""

    def __init__(self, masks_per_layer, residual: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_attention(m) for m in masks_per_layer)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x) if self.residual else layer(x)
        return x


class WithCLS(nn.Module):
    """1-D: conv, a [CLS] token in front, one attention layer, [CLS] sliced off, back to [batch, channel, length]."""

    def __init__(self, mask) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 8, 3, padding=1)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.attn = _attention(mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv(x).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)  # (batch, 1 + length, e)
        return self.attn(tokens)[:, 1:].transpose(1, 2)


class Hybrid2d(nn.Module):
    """2-D: conv, patch tokens (flatten + transpose), attention, back to the grid (transpose + reshape), conv."""

    def __init__(self, mask) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.attn = _attention(mask)
        self.conv2 = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        tokens = self.conv1(x).flatten(2).transpose(1, 2)  # (batch, height * width, embed)
        tokens = self.attn(tokens)
        return self.conv2(tokens.transpose(1, 2).reshape(batch, 8, height, width))


def _clip(box: tuple, n: int) -> tuple[int, int]:
    start, end = box
    return max(start, 0), min(end, n - 1)


def _seeded(factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return factory().double().eval()


def _support(model: nn.Module, x: torch.Tensor, position: int, tokens: bool) -> torch.Tensor:
    """BoolTensor [length]: input positions with a non-zero gradient of output ``position`` (random cotangent)."""
    x = x.detach().clone().requires_grad_(True)
    y = model(x)
    picked = y[0, position] if tokens else y[0, :, position]
    cotangent = torch.randn(picked.shape, dtype=picked.dtype, generator=torch.Generator().manual_seed(position))
    (grad,) = torch.autograd.grad((picked * cotangent).sum(), x)
    return (grad[0] != 0).any(dim=-1 if tokens else 0)


def _span(support: torch.Tensor) -> tuple[int, int]:
    idx = support.nonzero().flatten()
    return int(idx.min()), int(idx.max())


# ------------------------------------------------------------------------------------------------------------------
# 1-D: closed forms
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("window", "layers", "causal"), [(5, 2, False), (3, 1, False), (4, 3, False), (5, 2, True),
                                                          (2, 4, True), (7, 1, False)])
def test_conv_sliding_window_conv_closed_form(window: int, layers: int, causal: bool) -> None:
    rf = receptive_field(ConvAttentionConv(masks.sliding_window(window, causal), layers), spatial_dims=1)
    # 1 + (k1 - 1) + layers (w - 1) + (k2 - 1); e.g. w = 5, 2 layers: 1 + 2 + 2 * 4 + 2 = 13
    assert rf.output.size == (1 + 2 + layers * (window - 1) + 2,)
    assert [lay.op for lay in rf.layers] == ["input", "conv", "layout", *["attention"] * layers, "layout", "conv"]
    assert rf["attn.0"].size == (3 + window - 1,)
    # box: the convs read t - 1 .. t + 1; a window reads t - (w-1)//2 .. t + w//2 (causal: t - (w-1) .. t)
    before, after = (window - 1, 0) if causal else ((window - 1) // 2, window // 2)
    assert rf.output.box((20,)) == ((20 - 2 - layers * before, 20 + 2 + layers * after),)
    assert rf.output.stride == (1,) and rf.output.period == (1,)


def test_dilated_window_is_a_dilated_conv() -> None:
    rf = receptive_field(ConvAttentionConv(masks.dilated_window(3, 4), layers=2), spatial_dims=1)
    assert rf["attn.1"].size == (3 + 2 * 4 * (3 - 1),)  # + d (w - 1) per layer, like Conv1d(3, dilation=4)
    conv_twin = receptive_field(nn.Sequential(
        nn.Conv1d(1, 1, 3, padding=1), nn.Conv1d(1, 1, 3, dilation=4, padding=4),
        nn.Conv1d(1, 1, 3, dilation=4, padding=4), nn.Conv1d(1, 1, 3, padding=1),
    ), spatial_dims=1)
    assert (rf.output.size, rf.output.padding) == (conv_twin.output.size, conv_twin.output.padding) == ((21,), (10,))


def test_a_full_attention_layer_makes_the_whole_input() -> None:
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 8, 5, stride=2, padding=2)
            self.local = _attention(masks.sliding_window(3))
            self.full = _attention(None)
            self.after = _attention(masks.sliding_window(5))
            self.head = nn.Conv1d(8, 1, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.conv(x).transpose(1, 2)
            return self.head(self.after(self.full(self.local(tokens))).transpose(1, 2))

    rf = receptive_field(Mixed(), spatial_dims=1)
    assert (rf["local"].size, rf["local"].stride, rf["local"].padding) == ((5 + 2 * 2,), (2,), (2 + 2,))
    assert not rf["local"].whole_input
    for name in ("full", "after", "transpose_1", "head"):
        assert rf[name].whole_input and rf[name].size == (math.inf,) and rf[name].padding == (math.inf,)
    assert rf.output.box((7,)) == ((-math.inf, math.inf),)
    assert rf.output.stride == (2,)  # the jump is kept; every position sees everything


# ------------------------------------------------------------------------------------------------------------------
# attention only: against attention_receptive_field
# ------------------------------------------------------------------------------------------------------------------

N = 40


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("window", [1, 2, 3, 4, 5, 7])
def test_sliding_window_stack_matches_attention_receptive_field(window: int, residual: bool) -> None:
    for causal in (False, True):
        mask = masks.sliding_window(window, causal)
        for layers in range(1, 5):
            rf = receptive_field(AttentionStack([mask] * layers, residual), spatial_dims=1)
            assert rf.layers[0].name == "x" and rf.output.op in ("attention", "merge")
            measured = attention_receptive_field(mask, N, layers)
            assert rf.output.size == (1 + layers * (window - 1),)  # the closed form, unclipped
            assert min(rf.output.size[0], N) == measured.predicted == int(measured.size.max())
            for q in range(N):  # every query's box, clipped to the sequence, is its measured reach
                assert _clip(rf.output.box((q,))[0], N) == (int(measured.start[q]), int(measured.end[q]))


@pytest.mark.parametrize(("mask", "layers"), [
    (masks.causal(), 1), (masks.causal(), 3), (None, 2), (masks.full(), 1),
    (masks.block_sparse(4, ()), 1), (masks.block_sparse(5, ()), 3), (masks.block_sparse(4, (0,)), 2),
    (masks.block_sparse(4, (2, 9)), 2),
], ids=repr)
def test_causal_full_and_block_sparse_match_measured_reach(mask, layers: int) -> None:
    rf = receptive_field(AttentionStack([mask] * layers, residual=True), spatial_dims=1)
    measured = attention_receptive_field(mask, N, layers)
    assert min(rf.output.size[0], N) == measured.predicted == int(measured.size.max())
    for q in range(N):
        assert _clip(rf.output.box((q,))[0], N) == (int(measured.start[q]), int(measured.end[q])), q
    if type(mask) is masks.BlockSparse and not mask.global_tokens:  # one block, however deep: exact, periodic
        assert rf.output.period == (mask.block_size,) and rf.output.size == (mask.block_size,)
    else:
        assert rf.output.size == (math.inf,)


def test_block_sparse_with_global_token_after_one_layer_is_the_global_querys_field() -> None:
    mask = masks.block_sparse(4, (0,))
    rf = receptive_field(AttentionStack([mask], residual=False), spatial_dims=1)
    measured = attention_receptive_field(mask, N, 1)
    assert rf.output.whole_input and measured.predicted == N == int(measured.size[0])  # the global query
    for q in range(N):  # a superset for the others: their block plus the global token
        start, end = _clip(rf.output.box((q,))[0], N)
        assert start <= int(measured.start[q]) and int(measured.end[q]) <= end


@pytest.mark.parametrize(("window", "dilation", "causal"), [(3, 2, False), (4, 3, True), (2, 5, False)])
def test_dilated_stack_span_matches_attention_receptive_field(window: int, dilation: int, causal: bool) -> None:
    mask = masks.dilated_window(window, dilation, causal)
    for layers in (1, 2, 3):
        rf = receptive_field(AttentionStack([mask] * layers, residual=False), spatial_dims=1)
        measured = attention_receptive_field(mask, 64, layers)
        assert rf.output.size == (1 + layers * dilation * (window - 1),) == (measured.predicted_span,)
        q = 32  # interior: the bounding box of the reached positions (those congruent to q mod d)
        assert rf.output.box((q,)) == ((int(measured.start[q]), int(measured.end[q])),)


# ------------------------------------------------------------------------------------------------------------------
# brute force: gradient support of a random-weight network
# ------------------------------------------------------------------------------------------------------------------

LENGTH = 32


@pytest.mark.parametrize("mask", [
    masks.sliding_window(5), masks.sliding_window(4, causal=True), masks.dilated_window(3, 2),
    masks.block_sparse(4, ()), masks.causal(), None, "linear-causal",
], ids=repr)
def test_gradient_support_fills_the_box_conv_attention_stack(mask) -> None:
    model = _seeded(lambda: ConvAttentionConv(mask, layers=2, residual=True))
    rf = receptive_field(model, spatial_dims=1)
    x = torch.randn(1, 2, LENGTH, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    inside = 0
    for position in range(LENGTH):
        support = _support(model, x, position, tokens=False)
        start, end = _clip(rf.output.box((position,))[0], LENGTH)
        box = torch.zeros(LENGTH, dtype=torch.bool)
        box[start:end + 1] = True
        assert not (support & ~box).any(), f"position {position}: gradient outside {(start, end)}"
        assert _span(support) == (start, end), f"position {position}"  # the first and last pixels are reached
        if type(mask) is not masks.DilatedWindow:  # no holes: the support is the whole box
            assert torch.equal(support, box), f"position {position}"
        inside += rf.output.box((position,))[0] == (start, end)  # the box lies inside the input
    if math.isfinite(rf.output.size[0]):
        assert inside >= 1  # equal, unclipped, at an interior position
    if mask == masks.sliding_window(5):
        assert rf.output.size == (1 + 2 + 2 * 4 + 2,) and inside == LENGTH - 12  # interior positions: exact box


@pytest.mark.parametrize("mask", [masks.sliding_window(3), masks.block_sparse(4, ())], ids=repr)
def test_gradient_support_with_a_cls_token(mask) -> None:
    model = _seeded(lambda: WithCLS(mask))
    rf = receptive_field(model, spatial_dims=1)
    assert [lay.op for lay in rf.layers] == ["input", "conv", "layout", "layout", "attention", "layout", "layout"]
    x = torch.randn(1, 2, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for position in range(17):
        support = _support(model, x, position, tokens=False)
        assert _span(support) == _clip(rf.output.box((position,))[0], 17), position
        assert int(support.sum()) == _span(support)[1] - _span(support)[0] + 1
    if type(mask) is masks.BlockSparse:  # token i = position + 1 ([CLS] is token 0): blocks shifted by one
        assert rf.output.box((3,)) == ((3 - 1, 6 + 1),)  # tokens 4..7 = positions 3..6, plus the conv's 1 each side


# ------------------------------------------------------------------------------------------------------------------
# 2-D and the vision models
# ------------------------------------------------------------------------------------------------------------------


def test_hybrid_vit_conv_stem_then_whole_image() -> None:
    rf = receptive_field(HybridViT())
    rows = {lay.name: (lay.size, lay.stride, lay.padding) for lay in rf.layers}
    # stem: two 3x3 p1 convs (3, 1, 1), (5, 1, 2); patch embedding 4x4/4: (5 + 3, 4, 2)
    assert rows["stem.conv1"] == ((3, 3), (1, 1), (1, 1))
    assert rows["stem.conv2"] == ((5, 5), (1, 1), (2, 2))
    assert rows["patch_embed"] == ((8, 8), (4, 4), (2, 2))
    names = [lay.name for lay in rf.layers]
    first = names.index("blocks.0.attn")
    assert all(not lay.whole_input and math.isfinite(lay.size[0]) for lay in rf.layers[:first])
    assert all(lay.whole_input for lay in rf.layers[first:])
    assert [rf[name].op for name in ("flatten", "transpose", "cat", "blocks.0.attn", "head")] == [
        "layout", "layout", "layout", "attention", "elementwise"]
    assert rf.output.name == "head" and rf.output.box((0, 0)) == ((-math.inf, math.inf),) * 2


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_small_vit_patch_then_whole_image_and_gradient_reaches_every_pixel(pooling: str) -> None:
    model = SmallViT(pooling=pooling)
    rf = receptive_field(model)
    assert (rf["patch_embed"].size, rf["patch_embed"].stride, rf["patch_embed"].padding) == ((4, 4), (4, 4), (0, 0))
    assert rf["blocks.0.attn"].whole_input and rf.output.whole_input
    assert ("reduce" in [lay.op for lay in rf.layers]) == (pooling == "mean")
    # brute force: one logit depends on every pixel
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(3), requires_grad=True)
    (grad,) = torch.autograd.grad(model(x)[0, 0], x)
    assert bool((grad != 0).all())


def test_2d_full_attention_over_patch_tokens_reaches_the_whole_image() -> None:
    for mask in (None, masks.full(), masks.block_sparse(4, (0,))):
        rf = receptive_field(Hybrid2d(mask))
        assert rf["conv1"].size == (3, 3) and rf["attn"].whole_input and rf.output.whole_input
        assert [rf[n].op for n in ("flatten", "transpose", "transpose_1", "reshape")] == ["layout"] * 4
    model = _seeded(lambda: Hybrid2d(None))
    x = torch.randn(1, 1, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(4), requires_grad=True)
    (grad,) = torch.autograd.grad(model(x)[0, 0, 2, 3], x)
    assert bool((grad != 0).all())  # one output pixel depends on the whole image


@pytest.mark.parametrize("mask", [masks.sliding_window(3), masks.causal(), masks.dilated_window(3, 2),
                                  masks.block_sparse(4, ())], ids=repr)
def test_2d_windowed_masks_are_refused_by_name(mask) -> None:
    with pytest.raises(ValueError, match=rf"node 'attn'.*mask {re.escape(repr(mask))}.*no 2-D box"):
        receptive_field(Hybrid2d(mask))


# ------------------------------------------------------------------------------------------------------------------
# other attention layers, refusals, the result type
# ------------------------------------------------------------------------------------------------------------------


def test_torch_multihead_attention_and_linear_attention() -> None:
    class TorchMHA(nn.Module):
        def __init__(self, batch_first: bool) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 8, 3, padding=1)
            self.mha = nn.MultiheadAttention(8, 2, batch_first=batch_first)
            self.batch_first = batch_first

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.conv(x).transpose(1, 2) if self.batch_first else self.conv(x).permute(2, 0, 1)
            out = self.mha(tokens, tokens, tokens)[0]
            return out.transpose(1, 2) if self.batch_first else out.permute(1, 2, 0)

    for batch_first in (True, False):
        rf = receptive_field(TorchMHA(batch_first), spatial_dims=1)
        assert rf["conv"].size == (3,) and rf["mha"].whole_input and rf.output.whole_input
    causal = receptive_field(nn.Sequential(LinearAttention(8, 2, causal=True)), spatial_dims=1).output
    assert causal.box((5,)) == ((-math.inf, 5),) and causal.padding == (math.inf,)  # the prefix 0 .. 5
    assert receptive_field(LinearAttention(8, 2), spatial_dims=1).output.whole_input  # a lone layer

    class Weights(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mha(x, x, x)[1]

    with pytest.raises(ValueError, match=r"node 'getitem'.*item 1"):
        receptive_field(Weights(), spatial_dims=1)


LSH = masks.lsh(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)),
                torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), 2)


@pytest.mark.parametrize(("mask", "why"), [
    (masks.from_callable(lambda q, k: (k - q) % 3 == 0), "no geometry"),
    (masks.causal() & masks.sliding_window(3, causal=True), "no geometry"),
    (masks.sliding_window(3) | masks.block_sparse(4), "no geometry"),
    (LSH, "content-dependent"),
], ids=["from_callable", "and", "or", "lsh"])
def test_masks_without_geometry_are_refused_by_name(mask, why: str) -> None:
    for spatial_dims in (1, 2):
        model = ConvAttentionConv(mask) if spatial_dims == 1 else Hybrid2d(mask)
        node = "attn.0" if spatial_dims == 1 else "attn"
        with pytest.raises(ValueError, match=rf"node '{node}' \(module MultiheadAttention\): mask "
                                             rf"{re.escape(repr(mask))} .*{why}"):
            receptive_field(model, spatial_dims=spatial_dims)


def test_unsupported_attention_uses_and_layouts_are_named() -> None:
    class TensorMask(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = _attention(None)
            self.register_buffer("allowed", torch.ones(4, 4, dtype=torch.bool))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x, mask=self.allowed)

    class Cross(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = _attention(None)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x, x * 2.0)

    class NoTranspose(nn.Module):  # attention on [batch, channel, length]
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 8, 3)
            self.attn = _attention(masks.sliding_window(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(self.conv(x))

    class PickTooEarly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = _attention(masks.sliding_window(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x)[:, 0]

    cases = [
        (TensorMask(), r"node 'attn'.*tensor mask has no geometry"),
        (Cross(), r"node 'attn'.*cross-attention: its key"),
        (NoTranspose(), r"node 'attn'.*reads tokens \[batch, s0, channel\].*laid out as \[batch, channel, s0\]"),
        (PickTooEarly(), r"node 'getitem'.*one token picked once it sees the whole input"),
    ]
    for model, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            receptive_field(model, spatial_dims=1)
    with pytest.raises(ValueError, match="input_layout"):
        receptive_field(ConvAttentionConv(None), spatial_dims=1, input_layout="nlc")
    # forcing the wrong layout names the first layer that disagrees
    with pytest.raises(ValueError, match=r"node 'conv1'.*reads a feature map"):
        receptive_field(ConvAttentionConv(None), spatial_dims=1, input_layout="tokens")
    forced = receptive_field(AttentionStack([masks.sliding_window(3)], False), spatial_dims=1, input_layout="tokens")
    assert forced.output.size == (3,)


def test_rflayer_unbounded_and_periodic_fields() -> None:
    plain = RFLayer("conv", "conv", (5,), (2,), (1,))  # the old five-field constructor still works
    assert plain.boxes == (((-1, 3),),) and plain.period == (1,) and not plain.whole_input
    assert plain.box((3,)) == ((5, 9),)
    whole = RFLayer("attn", "attention", (math.inf, math.inf), (1, 1), (math.inf, math.inf))
    assert whole.whole_input and whole.box((2, 5)) == ((-math.inf, math.inf),) * 2
    # block-sparse: period b, output m b + q sees boxes[q] shifted by m b j; size is the largest box
    rf = receptive_field(AttentionStack([masks.block_sparse(3, ())], residual=False), spatial_dims=1)
    assert rf.output.boxes == (((0, 2), (0, 2), (0, 2)),) and rf.output.size == (3,)  # outputs 0, 1, 2: block 0
    assert [rf.output.box((t,)) for t in (0, 2, 3, 7)] == [((0, 2),), ((0, 2),), ((3, 5),), ((6, 8),)]
    assert rf.table()[-1] == {"name": "layers.0", "op": "attention", "size": (3,), "stride": (1,), "padding": (0,)}
    for bad in ((1, 2), (1.5,)):
        with pytest.raises(ValueError, match="position"):
            rf.output.box(bad)

