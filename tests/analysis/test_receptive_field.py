"""Receptive fields: theoretical (published table, closed forms, brute-force gradient support) and effective.

Independent references used here:

- the google-research ``receptive_field`` table of TF-Slim models (numbers copied below, with the link);
- closed forms: ``r = 1 + sum d_l (k_l - 1)`` for stride-1 stacks; the L-fold self-convolution of a box
  (``numpy.convolve``) and the variance ``L (k^2 - 1) / 12`` of a sum of L discrete uniforms;
- brute force: the set of input pixels with a non-zero gradient for one output of an all-positive network,
  found with autograd, which must be exactly the theoretical box clipped to the image.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from explorer.analysis import EffectiveRF, ReceptiveField, RFLayer, effective_receptive_field, receptive_field
from explorer.layers import AvgPool1d, Conv1d, Conv2d, MaxPool2d

# ------------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------------


def _all_ones(model: nn.Module) -> nn.Module:
    """Every weight 1, every bias 0: each input-output path contributes positively to the gradient."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(0.0 if name.endswith("bias") else 1.0)
    return model


def _gradient_supports(model: nn.Module, in_size: tuple[int, ...]) -> torch.Tensor:
    """Boolean ``[*out_size, *in_size]``: for each output position (all channels), the input pixels whose gradient
    is non-zero. One batched backward pass (``is_grads_batched``), one one-hot cotangent per output position."""
    x = torch.ones(1, 1, *in_size, dtype=torch.float64, requires_grad=True)  # [batch, channel, *spatial]
    y = model(x)  # [batch, channel, *out_size]
    out_size = tuple(y.shape[2:])
    count = math.prod(out_size)
    onehot = torch.eye(count, dtype=y.dtype).reshape(count, 1, 1, *out_size).expand(count, *y.shape)
    (grad,) = torch.autograd.grad(y, x, grad_outputs=onehot, is_grads_batched=True)  # [count, 1, 1, *in_size]
    return (grad[:, 0, 0] != 0).reshape(*out_size, *in_size)


def _box_mask(box: tuple[tuple[int, int], ...], in_size: tuple[int, ...]) -> torch.Tensor:
    """Boolean ``[*in_size]``: the inclusive box clipped to the image."""
    mask = torch.zeros(in_size, dtype=torch.bool)
    mask[tuple(slice(max(lo, 0), min(hi, n - 1) + 1) for (lo, hi), n in zip(box, in_size))] = True
    return mask


def _bounding_box(mask: torch.Tensor) -> tuple[tuple[int, int], ...] | None:
    """Inclusive (first, last) index per dim of the True entries; None when there are none."""
    idx = mask.nonzero()  # [count, ndim]
    if len(idx) == 0:
        return None
    return tuple((int(idx[:, d].min()), int(idx[:, d].max())) for d in range(mask.ndim))


def _assert_boxes_match_gradients(model: nn.Module, layer: RFLayer, in_size: tuple[int, ...]) -> int:
    """Brute-force check of :meth:`RFLayer.box` for every output position of ``model``.

    Every input pixel with a non-zero gradient lies inside the box; when the box lies inside the image, its first
    and last pixels per dim are reached, so the bounding box of the gradient support *is* the box. (Inside, the
    support may have holes -- dilation, or a stride longer than the next field -- and a clipped box may end in
    such a hole, which is why the receptive field is defined as the bounding box.) All weights are 1, so no
    paths cancel.

    Returns:
        How many output positions had their box inside the image (checked exactly).
    """
    supports = _gradient_supports(_all_ones(model).double(), in_size)  # [*out_size, *in_size]
    inside = 0
    for position in np.ndindex(*supports.shape[: len(in_size)]):
        position = tuple(int(p) for p in position)
        box = layer.box(position)
        support = supports[position]
        assert not (support & ~_box_mask(box, in_size)).any(), f"position {position}: gradient outside {box}"
        if all(lo >= 0 and hi < n for (lo, hi), n in zip(box, in_size)):
            assert _bounding_box(support) == box, f"position {position}"
            inside += 1
    return inside


# ------------------------------------------------------------------------------------------------------------------
# published table: google-research/receptive_field, RECEPTIVE_FIELD_TABLE.md (TF-Slim models, 'SAME' 3x3 convs,
# 'VALID' 2x2/2 max pools), https://github.com/google-research/receptive_field/blob/master/receptive_field/
# RECEPTIVE_FIELD_TABLE.md -- columns: RF, effective stride, effective padding (resolution 224 and None agree).
# ------------------------------------------------------------------------------------------------------------------

# (size, effective stride, effective padding). Rows marked "table" are copied from the published table; the table
# lists only those end points of VGG-16. The rows marked "recursion" (conv1_2, conv2_2, conv3_3, conv4_3,
# conv5_3) are not in it; they are the Araujo et al. recursion between two published rows and are pinned too,
# since the next published row follows from them.
VGG16_ROWS = {
    "conv1_1": (3, 1, 1),  # table
    "conv1_2": (5, 1, 2),  # recursion
    "pool1": (6, 2, 2),  # table
    "conv2_1": (10, 2, 4),  # table
    "conv2_2": (14, 2, 6),  # recursion
    "pool2": (16, 4, 6),  # table
    "conv3_1": (24, 4, 10),  # table
    "conv3_2": (32, 4, 14),  # table
    "conv3_3": (40, 4, 18),  # recursion
    "pool3": (44, 8, 18),  # table
    "conv4_1": (60, 8, 26),  # table
    "conv4_2": (76, 8, 34),  # table
    "conv4_3": (92, 8, 42),  # recursion
    "pool4": (100, 16, 42),  # table
    "conv5_1": (132, 16, 58),  # table
    "conv5_2": (164, 16, 74),  # table
    "conv5_3": (196, 16, 90),  # recursion
    "pool5": (212, 32, 90),  # table
}
VGG16_CONFIG = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]

# vgg_a (VGG-11), same table, every published row.
VGG_A_ROWS = {
    "conv1_1": (3, 1, 1), "pool1": (4, 2, 1), "conv2_1": (8, 2, 3), "pool2": (10, 4, 3),
    "conv3_1": (18, 4, 7), "conv3_2": (26, 4, 11), "pool3": (30, 8, 11), "conv4_1": (46, 8, 19),
    "conv4_2": (62, 8, 27), "pool4": (70, 16, 27), "conv5_1": (102, 16, 43), "conv5_2": (134, 16, 59),
    "pool5": (150, 32, 59),
}
VGG_A_CONFIG = [[64], [128], [256, 256], [512, 512], [512, 512]]

# alexnet_v2, same table: conv1 11x11/4 'VALID', pools 3x3/2 'VALID', conv2 5x5 'SAME', conv3-5 3x3 'SAME'.
ALEXNET_V2_ROWS = {
    "conv1": (11, 4, 0), "pool1": (19, 8, 0), "conv2": (51, 8, 16), "conv3": (99, 16, 32),
    "conv4": (131, 16, 48), "conv5": (163, 16, 64), "pool5": (195, 32, 64),
}


def _vgg(config: list[list[int]], conv=nn.Conv2d, pool=nn.MaxPool2d) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels = 3
    for block, widths in enumerate(config, start=1):
        for i, width in enumerate(widths, start=1):
            layers[f"conv{block}_{i}"] = conv(channels, width, 3, padding=1)
            layers[f"relu{block}_{i}"] = nn.ReLU(inplace=True)
            channels = width
        layers[f"pool{block}"] = pool(2, 2)
    return nn.Sequential(layers)


def _alexnet_v2() -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 64, 11, stride=4)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(3, 2)),
        ("conv2", nn.Conv2d(64, 192, 5, padding=2)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(3, 2)),
        ("conv3", nn.Conv2d(192, 384, 3, padding=1)), ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(384, 384, 3, padding=1)), ("relu4", nn.ReLU()),
        ("conv5", nn.Conv2d(384, 256, 3, padding=1)), ("relu5", nn.ReLU()), ("pool5", nn.MaxPool2d(3, 2)),
    ]))


def _assert_rows(rf: ReceptiveField, rows: dict[str, tuple[int, int, int]]) -> None:
    got = {name: (rf[name].size, rf[name].stride, rf[name].padding) for name in rows}
    expected = {name: ((r, r), (s, s), (p, p)) for name, (r, s, p) in rows.items()}
    assert got == expected  # exact integers


@pytest.mark.parametrize("layers", ["torch", "explorer"])
def test_vgg16_matches_published_table(layers: str) -> None:
    conv, pool = (nn.Conv2d, nn.MaxPool2d) if layers == "torch" else (Conv2d, MaxPool2d)
    model = _vgg(VGG16_CONFIG, conv, pool)
    rf = receptive_field(model)
    _assert_rows(rf, VGG16_ROWS)
    assert rf.output == rf["pool5"]
    assert rf.layers[0] == RFLayer("input", "input", (1, 1), (1, 1), (0, 0))
    ops = {row["name"]: row["op"] for row in rf.table()}
    assert (ops["conv1_1"], ops["relu1_1"], ops["pool1"]) == ("conv", "elementwise", "max_pool")
    # explorer layers are leaves: their hook points leave no node, so both builds give the same table
    assert rf.table() == receptive_field(_vgg(VGG16_CONFIG)).table()


def test_vgg_a_and_alexnet_v2_match_published_table() -> None:
    _assert_rows(receptive_field(_vgg(VGG_A_CONFIG)), VGG_A_ROWS)
    _assert_rows(receptive_field(_alexnet_v2()), ALEXNET_V2_ROWS)


def test_vgg16_output_box() -> None:
    out = receptive_field(_vgg(VGG16_CONFIG)).output
    assert out.box((0, 0)) == ((-90, 121), (-90, 121))  # start = -P, end = start + 212 - 1
    assert out.box((6, 3)) == ((6 * 32 - 90, 6 * 32 - 90 + 211), (3 * 32 - 90, 3 * 32 - 90 + 211))


# ------------------------------------------------------------------------------------------------------------------
# closed forms and brute force
# ------------------------------------------------------------------------------------------------------------------


def test_one_dimensional_chain() -> None:
    model = nn.Sequential(
        nn.Conv1d(1, 1, 5, stride=2, padding=2), nn.ReLU(),
        nn.MaxPool1d(3, stride=2, padding=1), nn.Conv1d(1, 1, 3, padding=1),
    )
    rf = receptive_field(model, spatial_dims=1)
    # hand-computed: (5, 2, 2) -> (5 + 2*2, 4, 2 + 1*2) -> (9 + 2*4, 4, 4 + 1*4)
    assert [(lay.size, lay.stride, lay.padding) for lay in rf.layers if lay.op != "elementwise"] == [
        ((1,), (1,), (0,)), ((5,), (2,), (2,)), ((9,), (4,), (4,)), ((17,), (4,), (8,)),
    ]
    assert [lay.op for lay in rf.layers] == ["input", "conv", "elementwise", "max_pool", "conv"]
    assert rf.output.name == "3"


@pytest.mark.parametrize("dilations", [(1, 2, 4, 8), (3, 1, 2)])
def test_dilated_stack_closed_form(dilations: tuple[int, ...]) -> None:
    kernels = (3, 5, 2, 3)[: len(dilations)]
    model = nn.Sequential(*[
        nn.Conv1d(1, 1, k, dilation=d, padding="same" if k % 2 else 0) for k, d in zip(kernels, dilations)
    ])
    out = receptive_field(model, spatial_dims=1).output
    assert out.size == (1 + sum(d * (k - 1) for k, d in zip(kernels, dilations)),)  # r = 1 + sum d (k - 1)
    assert out.stride == (1,)
    # 'same' pads d (k - 1) // 2 before; the even kernel is unpadded
    assert out.padding == (sum(d * (k - 1) // 2 for k, d in zip(kernels, dilations) if k % 2),)


def test_box_equals_gradient_support_2d() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, (3, 5), stride=(2, 1), padding=(1, 2)), nn.ReLU(),
        nn.AvgPool2d(2, stride=2, padding=1),
        nn.Conv2d(2, 1, 3, dilation=2, padding=1),
    )
    rf = receptive_field(model)
    # hand-computed, (height, width): conv (3, 5)/(2, 1) p(1, 2) -> (3, 2, 1), (5, 1, 2); pool 2/2 p1 -> (5, 4, 3),
    # (6, 2, 3); conv k_eff 5 p1 -> (5 + 4*4, 4, 3 + 1*4), (6 + 4*2, 2, 3 + 1*2)
    assert (rf.output.size, rf.output.stride, rf.output.padding) == ((21, 14), (4, 2), (7, 5))
    assert _assert_boxes_match_gradients(model, rf.output, (29, 20)) >= 6  # 2 x 3 boxes fit inside


def test_explorer_layers_are_single_nodes() -> None:
    model = nn.Sequential(Conv1d(1, 1, 3, stride=2, padding=1), AvgPool1d(3, stride=1, padding=1))
    rf = receptive_field(model, spatial_dims=1)
    assert [(lay.name, lay.op) for lay in rf.layers] == [("input", "input"), ("0", "conv"), ("1", "avg_pool")]
    assert (rf.output.size, rf.output.stride, rf.output.padding) == ((7,), (2,), (3,))
    assert _assert_boxes_match_gradients(model, rf.output, (12,)) >= 3
    # a lone layer is traced as a leaf too (its forward checks its input, which a symbolic trace cannot pass)
    lone = receptive_field(Conv2d(1, 1, 3, stride=2, padding=1))
    assert [(lay.name, lay.size) for lay in lone.layers] == [("input", (1, 1)), ("conv2d", (3, 3))]


_LAYER = st.one_of(
    st.tuples(st.just("conv"), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.integers(1, 3)),
    st.tuples(st.just("avg"), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.just(1)),
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(specs=st.lists(_LAYER, min_size=1, max_size=4), extra=st.integers(0, 4))
def test_box_equals_gradient_support_random_chains(specs: list[tuple], extra: int) -> None:
    layers = []
    for kind, k, s, p, d in specs:
        if kind == "conv":
            layers.append(nn.Conv1d(1, 1, k, stride=s, padding=p, dilation=d, bias=False))
        else:
            layers.append(nn.AvgPool1d(k, stride=s, padding=min(p, k // 2)))  # torch: padding <= kernel / 2
    model = nn.Sequential(*layers)
    # smallest input length giving 2 outputs: n_in = (n_out - 1) s + k_eff - 2 p, walked backwards
    length = 2
    for layer in reversed(layers):
        k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
        d = layer.dilation[0] if isinstance(layer, nn.Conv1d) else 1
        length = max((length - 1) * s + d * (k - 1) + 1 - 2 * p, 1)
    out = receptive_field(model, spatial_dims=1).output
    # r + j more pixels guarantee an output whose box lies inside the image (position ceil(P / j))
    assert _assert_boxes_match_gradients(model, out, (length + out.size[0] + out.stride[0] + extra,)) >= 1


# ------------------------------------------------------------------------------------------------------------------
# merges
# ------------------------------------------------------------------------------------------------------------------


class _BasicBlock(nn.Module):
    """ResNet basic block with a strided 1x1 projection shortcut, after a 3x3 stem."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.conv1 = nn.Conv2d(2, 2, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(2)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.shortcut = nn.Conv2d(2, 2, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        out = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        return (out + self.shortcut(x)).relu()


def test_residual_block_worst_case_over_paths() -> None:
    model = _BasicBlock()
    rf = receptive_field(model)
    # hand-computed, one dim:   stem (3, 1, 1)
    #   branch:   conv1 3x3/2 p1 -> (3 + 2*1, 2, 1 + 1*1) = (5, 2, 2); conv2 3x3 p1 -> (5 + 2*2, 2, 2 + 1*2) = (9, 2, 4)
    #   shortcut: 1x1/2 p0       -> (3, 2, 1)
    #   union: start = min(2i - 4, 2i - 1) = 2i - 4, end = max(2i - 4 + 8, 2i - 1 + 2) = 2i + 4 -> (9, 2, 4)
    assert (rf["shortcut"].size, rf["shortcut"].stride, rf["shortcut"].padding) == ((3, 3), (2, 2), (1, 1))
    assert (rf["conv2"].size, rf["conv2"].padding) == ((9, 9), (4, 4))
    assert rf["add"].op == "merge"
    assert (rf.output.size, rf.output.stride, rf.output.padding) == ((9, 9), (2, 2), (4, 4))
    assert [lay.op for lay in rf.layers][-2:] == ["merge", "elementwise"]
    model.eval()  # batch norm with its running statistics; all-ones weights make it a positive affine map
    assert _assert_boxes_match_gradients(model, rf.output, (12, 12)) >= 4


class _ShiftedMerge(nn.Module):
    """Two paths whose boxes overlap without nesting: a 3-wide conv [i, i + 2] and a shift [i + 3, i + 3]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = F.pad(x, (-3, 1))  # crop 3 at the start, pad 1 at the end: out[i] = x[i + 3]
        return torch.cat([self.conv(x), shifted * 2.0], dim=1)


def test_merge_box_is_union_of_paths() -> None:
    model = _ShiftedMerge()
    rf = receptive_field(model, spatial_dims=1)
    assert (rf["pad"].op, rf["pad"].size, rf["pad"].padding) == ("pad", (1,), (-3,))
    assert rf["cat"].op == "merge"
    assert (rf.output.size, rf.output.stride, rf.output.padding) == ((4,), (1,), (0,))  # [i, i + 3]
    assert rf.output.box((5,)) == ((5, 8),)
    assert _assert_boxes_match_gradients(model, rf.output, (9,)) == 6  # [i, i + 3] inside for i < 6


def test_merge_with_different_strides_raises() -> None:
    class Mismatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fine = nn.Conv2d(1, 1, 5)
            self.coarse = nn.Conv2d(1, 1, 2, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fine(x) * self.coarse(x)

    with pytest.raises(ValueError, match=r"merge node 'mul'.*different effective strides"):
        receptive_field(Mismatch())


# ------------------------------------------------------------------------------------------------------------------
# functional graphs, naming
# ------------------------------------------------------------------------------------------------------------------


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.ones(4, 1, 3, 3))
        self.w2 = nn.Parameter(torch.ones(4, 4, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(F.conv2d(x, self.w1, None, 2, 1))
        y = F.max_pool2d(y, 3, stride=2, padding=1)
        y = F.avg_pool2d(y, kernel_size=2)
        y = F.conv2d(y, self.w2.flip(-1), dilation=2, padding="same")  # weight computed from a parameter
        return F.relu(y) + 1.0


class _Modules(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.GELU(), nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2),
            nn.Conv2d(4, 4, 3, dilation=2, padding=2), nn.ReLU(),
        )


def test_functional_graph_matches_modules() -> None:
    functional = receptive_field(_Functional())
    modules = receptive_field(_Modules())
    assert [lay.op for lay in functional.layers] == [
        "input", "conv", "elementwise", "max_pool", "avg_pool", "conv", "elementwise", "elementwise",
    ]
    assert [lay.name for lay in functional.layers][:3] == ["x", "conv2d", "gelu"]
    assert (functional.output.size, functional.output.stride, functional.output.padding) == (
        (modules.output.size, modules.output.stride, modules.output.padding)
    )
    # hand-computed: (3,2,1) -> pool 3/2 p1 (7,4,3) -> pool 2/2 (11,8,3) -> conv k_eff 5 p2 (43,8,19)
    assert (modules.output.size, modules.output.stride, modules.output.padding) == ((43, 43), (8, 8), (19, 19))


def test_shared_module_gets_one_row_per_call_and_dead_code_is_dropped() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 1, 3, padding=1)
            self.head = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            unused = self.head(x.flatten(1))  # noqa: F841 - not on the path to the output
            return self.conv(self.conv(x))

    rf = receptive_field(Twice(), spatial_dims=1)
    assert [(lay.name, lay.size) for lay in rf.layers] == [("x", (1,)), ("conv", (3,)), ("conv@1", (5,))]
    assert rf["conv@1"] is rf.output
    assert len(rf) == 3


def test_result_types() -> None:
    rf = receptive_field(nn.Sequential(nn.Conv2d(1, 1, 3, stride=2)))
    assert rf.table()[1] == {"name": "0", "op": "conv", "size": (3, 3), "stride": (2, 2), "padding": (0, 0)}
    with pytest.raises(KeyError, match="nodes"):
        rf["nope"]
    assert rf.output.box(np.array([1, 2])) == ((2, 4), (4, 6))  # numpy integers are accepted
    for bad in ((1,), (1, True), (1.0, 2), 3):
        with pytest.raises(ValueError, match="position"):
            rf.output.box(bad)


# ------------------------------------------------------------------------------------------------------------------
# refused ops and bad arguments
# ------------------------------------------------------------------------------------------------------------------


class _View(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), -1)


class _Untraceable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x


class _SpatialCat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x], dim=2)


@pytest.mark.parametrize(
    ("model", "pattern"),
    [
        (nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(1)), r"node '1' \(module AdaptiveAvgPool2d\).*global"),
        (nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten(), nn.Linear(4, 2)), r"node '1' \(module Flatten\)"),
        (_View(), r"node 'view' \(method \.view\(\)\)"),
        (_SpatialCat(), r"node 'cat'.*dim 2"),
        (nn.Sequential(nn.Upsample(scale_factor=2)), r"node '0' \(module Upsample\)"),
    ],
)
def test_unsupported_ops_are_named(model: nn.Module, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        receptive_field(model)


def test_bad_arguments() -> None:
    conv = nn.Sequential(nn.Conv2d(1, 1, 3))
    for bad in (0, 4, True, "2"):
        with pytest.raises(ValueError, match="spatial_dims"):
            receptive_field(conv, spatial_dims=bad)
    with pytest.raises(TypeError, match="model"):
        receptive_field(lambda x: x)
    with pytest.raises(ValueError, match="fx-traceable"):
        receptive_field(_Untraceable())
    with pytest.raises(ValueError, match=r"node '0' is a 2-D window but spatial_dims=1"):
        receptive_field(conv, spatial_dims=1)


# ------------------------------------------------------------------------------------------------------------------
# effective receptive field
# ------------------------------------------------------------------------------------------------------------------


def _box_stack(depth: int, k: int, ndim: int, channels: int = 2) -> nn.Sequential:
    """``depth`` linear stride-1 'same' convs with all-ones k-wide kernels: y = box^{*depth} * x per channel."""
    conv = {1: nn.Conv1d, 2: nn.Conv2d}[ndim]
    return _all_ones(nn.Sequential(*[
        conv(1 if i == 0 else channels, channels, k, padding=k // 2, bias=False) for i in range(depth)
    ]))


def _box_profile(depth: int, k: int, size: int, centre: int) -> np.ndarray:
    """The depth-fold self-convolution of a length-k box, placed around ``centre`` in a length ``size`` array."""
    kernel = np.ones(k)
    for _ in range(depth - 1):
        kernel = np.convolve(kernel, np.ones(k))
    half = depth * (k - 1) // 2
    profile = np.zeros(size)
    profile[centre - half: centre + half + 1] = kernel
    return profile / profile.sum()


@pytest.mark.parametrize(("depth", "k", "ndim"), [(1, 3, 2), (3, 3, 2), (4, 5, 2), (5, 3, 1)])
def test_erf_of_box_stack_closed_form(depth: int, k: int, ndim: int) -> None:
    size = depth * (k - 1) + 1 + 6  # the field (plus a margin of 3) fits inside the image
    x = torch.randn(3, 1, *(size,) * ndim, generator=torch.Generator().manual_seed(0))
    erf = effective_receptive_field(_box_stack(depth, k, ndim), x, mass=(0.5, 0.9, 0.95, 1.0))
    centre = size // 2
    assert erf.position == (centre,) * ndim  # default: the output's centre ('same' convs keep the size)

    profile = _box_profile(depth, k, size, centre)
    expected = profile if ndim == 1 else np.outer(profile, profile)  # separable kernel -> outer product
    np.testing.assert_allclose(erf.grad.numpy(), expected, rtol=0, atol=1e-12)  # float64 of exact integer counts
    assert erf.grad.shape == (size,) * ndim and erf.grad.dtype == torch.float64

    # variance of a sum of `depth` independent uniforms on k values: depth (k^2 - 1) / 12
    assert erf.std == pytest.approx((math.sqrt(depth * (k * k - 1) / 12),) * ndim, abs=1e-9)
    assert erf.centre == pytest.approx((centre,) * ndim, abs=1e-9)

    # square radius: mass of the (2r+1)^ndim square = (1-D mass within r)^ndim for a separable map
    for q, r in erf.radius.items():
        inside = [profile[centre - s: centre + s + 1].sum() ** ndim for s in range(centre + 1)]
        assert r == next(s for s, m in enumerate(inside) if m >= q - 1e-9)
    assert erf.radius[1.0] == depth * (k - 1) // 2  # all the mass: the theoretical half-width


def test_erf_grows_like_sqrt_depth_while_theory_grows_linearly() -> None:
    depths, k = (1, 2, 4, 8), 3
    size = max(depths) * (k - 1) + 1
    x = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(1))
    std = [effective_receptive_field(_box_stack(d, k, 2), x).std[0] for d in depths]
    theory = [receptive_field(_box_stack(d, k, 2)).output.size[0] for d in depths]
    assert theory == [1 + d * (k - 1) for d in depths]  # linear in depth
    assert [s / std[0] for s in std] == pytest.approx([math.sqrt(d) for d in depths], rel=1e-9)  # sqrt(depth)
    # so the effective share of the theoretical field shrinks like 1 / sqrt(depth)
    ratio = [s / (t - 1) for s, t in zip(std, theory)]
    assert ratio == pytest.approx([ratio[0] / math.sqrt(d) for d in depths], rel=1e-9)


def test_erf_lies_inside_theoretical_box() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(4, 3, 3, padding=1),
    )
    x = torch.randn(4, 2, 20, 20)
    erf = effective_receptive_field(model, x, position=(2, 3))
    box = receptive_field(model).output.box((2, 3))
    support = erf.grad > 0
    assert support.any()
    assert not (support & ~_box_mask(box, (20, 20))).any()  # nothing outside the theoretical field
    assert erf.grad.sum().item() == pytest.approx(1.0, abs=1e-12)  # normalised


def test_erf_channel_selection() -> None:
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0  # channel 0 sees one pixel
        conv.weight[1, 0] = 1.0  # channel 1 sees the 3x3 square
    x = torch.randn(1, 1, 7, 7)
    one = effective_receptive_field(conv, x, position=(3, 3), channel=0)
    three = effective_receptive_field(conv, x, position=(3, 3), channel=1)
    both = effective_receptive_field(conv, x, position=(3, 3))
    assert int((one.grad > 0).sum()) == 1 and one.radius == {0.5: 0.0, 0.95: 0.0}
    assert int((three.grad > 0).sum()) == 9 and three.radius == {0.5: 1.0, 0.95: 1.0}
    assert both.grad[3, 3].item() == pytest.approx(2 / 10, abs=1e-12)  # weights 1 + 1 at the centre, total 10


def test_erf_restores_modes_and_leaves_no_grads() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Dropout(0.5), nn.BatchNorm2d(2))
    model.train()
    model[2].eval()  # a mixed state must come back as it was
    x = torch.randn(2, 1, 9, 9)
    before = x.clone()
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(m.training))
    erf = effective_receptive_field(model, x)
    assert seen == [False]  # ran in eval mode
    assert [m.training for m in model] == [True, True, False]
    assert all(p.grad is None for p in model.parameters())
    assert x.grad is None and not x.requires_grad and torch.equal(x, before)
    assert isinstance(erf, EffectiveRF) and erf.position == (4, 4)


def test_erf_bad_arguments() -> None:
    model = nn.Conv2d(1, 2, 3)  # output 5x5 for a 7x7 input
    x = torch.randn(1, 1, 7, 7)
    for bad in ((5, 0), (0,), (-1, 0), (1.0, 2), "ab"):
        with pytest.raises(ValueError, match="position"):
            effective_receptive_field(model, x, position=bad)
    for bad in (2, -1, True):
        with pytest.raises(ValueError, match="channel"):
            effective_receptive_field(model, x, channel=bad)
    for bad in ((0.0,), (1.5,), ("a",)):
        with pytest.raises(ValueError, match="mass"):
            effective_receptive_field(model, x, mass=bad)
    with pytest.raises(ValueError, match=r"\[batch, channel, \*spatial\]"):
        effective_receptive_field(model, torch.randn(7, 7))
    with pytest.raises(TypeError, match="x"):
        effective_receptive_field(model, torch.ones(1, 1, 7, 7, dtype=torch.long))
    with pytest.raises(TypeError, match="model"):
        effective_receptive_field(lambda t: t, x)
    with pytest.raises(ValueError, match="output must be"):
        effective_receptive_field(nn.Sequential(model, nn.Flatten()), x)
    with pytest.raises(ValueError, match="zero everywhere"):
        effective_receptive_field(nn.Sequential(model, nn.ReLU(), nn.Threshold(1e9, 0.0)), x)
