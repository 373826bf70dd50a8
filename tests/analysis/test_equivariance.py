"""Translation equivariance: shifting images, and the errors of feature maps and logits, against closed forms.

Independent references used here:

- ``torch.roll`` for circular shifts, and ``torch.nn.functional.pad`` followed by a slice for zero-filled shifts;
- exact equivariance in exact arithmetic, measured in float64 with tolerance ``EXACT = 1e-12`` (rounding in a few
  dozen float64 multiply-adds is ~1e-16 relative; the measured errors are 2e-17 ... 2e-16):

  * a stride-1 circular convolution (and a stack of them with ReLU) commutes with circular shifts;
  * a zero-padded 3x3 convolution commutes with zero-filled shifts away from a border of the shift size;
  * a stride-2 circular convolution commutes with even shifts (by half as many feature cells);
  * self-attention over pixel tokens without position embedding is permutation equivariant;
  * global average pooling after a circular convolution is shift invariant;

- broken equivariance, asserted as ``> BROKEN = 1e-3`` (measured values are 0.1 ... 1.4, see the tests);
- the closed form of a position-dependent gain ``f(x) = x * w``: ``f(S x) - S f(x) = S x * (w - S w)``
  (a zero-filled shift of a product is the product of the shifts), computed here with ``roll`` / ``pad``;
- logits ``g(x) = x[:, 0, 0, :]`` (the top row as class scores): ``g(S x)`` is read off the shifted tensor by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from explorer.analysis import (
    SHIFT_MODES,
    EquivarianceRow,
    FeatureShiftError,
    LogitShiftError,
    equivariance_error,
    equivariance_report,
    invariance_error,
    report_shifts,
    shift_images,
)
from explorer.layers import Conv2d, MultiheadAttention

EXACT = 1e-12  # exact in exact arithmetic, measured in float64
BROKEN = 1e-3  # equivariance broken by design (padding borders, stride, position embedding)
D = torch.float64
K = 4  # largest shift measured in each axis


def _images(batch: int = 2, channels: int = 3, height: int = 10, width: int = 10, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, height, width, generator=generator, dtype=D)


def _all_shifts(k: int = K) -> list[tuple[int, int]]:
    """1 ... k in each axis, both signs, and a few diagonals."""
    axis = [(0, s) for s in range(1, k + 1)] + [(s, 0) for s in range(1, k + 1)]
    negative = [(-dy, -dx) for dy, dx in axis]
    return axis + negative + [(1, 1), (2, -3), (-k, k)]


def _zero_shift_reference(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Pad with zeros on the side the content moves towards ... away from, then slice the original size back."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))  # (left, right, top, bottom)
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top: top + height, left: left + width]


def _circular_conv(c_in: int, c_out: int, stride: int = 1) -> Conv2d:
    return Conv2d(c_in, c_out, 3, stride=stride, padding=1, padding_mode="circular", dtype=D)


# --- shift_images -------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(dy=st.integers(-5, 5), dx=st.integers(-6, 6), seed=st.integers(0, 2**16))
def test_circular_shift_is_roll(dy: int, dx: int, seed: int) -> None:
    x = _images(height=6, width=7, seed=seed)
    assert torch.equal(shift_images(x, dy, dx, "circular"), torch.roll(x, shifts=(dy, dx), dims=(2, 3)))


@settings(max_examples=60, deadline=None)
@given(dy=st.integers(-5, 5), dx=st.integers(-6, 6), seed=st.integers(0, 2**16))
def test_zeros_shift_is_padded_slice(dy: int, dx: int, seed: int) -> None:
    x = _images(height=6, width=7, seed=seed)
    assert torch.equal(shift_images(x, dy, dx, "zeros"), _zero_shift_reference(x, dy, dx))


def test_zeros_shift_by_hand() -> None:
    x = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # 1 2 3 / 4 5 6 / 7 8 9
    down_right = torch.tensor([[0.0, 0, 0], [0, 1, 2], [0, 4, 5]])
    up_left = torch.tensor([[5.0, 6, 0], [8, 9, 0], [0, 0, 0]])
    assert torch.equal(shift_images(x, 1, 1, mode="zeros")[0, 0], down_right)
    assert torch.equal(shift_images(x, -1, -1, mode="zeros")[0, 0], up_left)
    assert torch.equal(shift_images(x, 1, 1)[0, 0], torch.tensor([[9.0, 7, 8], [3, 1, 2], [6, 4, 5]]))


@pytest.mark.parametrize("dy, dx", [(1, 0), (0, 3), (-2, 5), (4, -4), (0, 0)])
def test_circular_shift_round_trip_is_identity(dy: int, dx: int) -> None:
    x = _images()
    assert torch.equal(shift_images(shift_images(x, dy, dx), -dy, -dx), x)


def test_zeros_shift_round_trip_loses_the_border() -> None:
    x = _images()
    back = shift_images(shift_images(x, 2, -3, mode="zeros"), -2, 3, mode="zeros")
    kept = torch.zeros_like(x)
    kept[..., :-2, 3:] = 1.0  # the content that left the frame (last 2 rows, first 3 columns) is gone
    assert torch.equal(back, x * kept)


def test_shift_keeps_dtype_and_does_not_alias() -> None:
    x = _images().float()
    for mode in SHIFT_MODES:
        y = shift_images(x, 0, 0, mode)
        assert y.dtype == torch.float32 and torch.equal(y, x)
        y.add_(1.0)
        assert not torch.equal(y, x)


@pytest.mark.parametrize("dy, dx, name", [(10, 0, "dy"), (-10, 0, "dy"), (0, 10, "dx"), (3, -12, "dx")])
def test_shift_larger_than_the_image_is_refused(dy: int, dx: int, name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name}=-?\d+ is a shift larger than the image.*10"):
        shift_images(_images(height=10, width=10), dy, dx)


@pytest.mark.parametrize("dy, dx, name", [(1.5, 0, "dy"), (0, 2.0, "dx"), (True, 0, "dy"), ("1", 0, "dy")])
def test_non_integer_shift_is_refused(dy: object, dx: object, name: str) -> None:
    with pytest.raises(TypeError, match=rf"{name} must be an int"):
        shift_images(_images(), dy, dx)  # type: ignore[arg-type]


def test_bad_images_and_mode_are_refused() -> None:
    with pytest.raises(ValueError, match="images must have shape .*4 dims"):
        shift_images(_images()[0], 1, 0)
    with pytest.raises(TypeError, match="images must be a floating-point"):
        shift_images(torch.zeros(1, 1, 4, 4, dtype=torch.int64), 1, 0)
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        shift_images([[1.0]], 1, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be one of"):
        shift_images(_images(), 1, 0, mode="reflect")


# --- the sanity checks: exact equivariance ------------------------------------------------------------------------


def test_circular_conv_is_exactly_equivariant() -> None:
    torch.manual_seed(0)
    conv = _circular_conv(3, 4)
    results = equivariance_error(conv, _images(), _all_shifts())
    assert [r.shift for r in results] == _all_shifts()
    for r in results:
        assert r.aligned and r.feature_shift == r.shift and r.crop == (0, 0)
        assert r.error <= EXACT and r.error_cropped == r.error


def test_circular_conv_stack_with_relu_is_exactly_equivariant() -> None:
    torch.manual_seed(1)
    stack = nn.Sequential(_circular_conv(3, 6), nn.ReLU(), _circular_conv(6, 6), nn.ReLU(), _circular_conv(6, 5))
    for r in equivariance_error(stack, _images(), _all_shifts()):
        assert r.error <= EXACT


def test_zero_padded_conv_is_equivariant_away_from_the_border() -> None:
    torch.manual_seed(2)
    conv = Conv2d(3, 4, 3, padding=1, dtype=D)  # padding_mode="zeros", with a bias
    results = equivariance_error(conv, _images(), _all_shifts(), mode="zeros")
    for r in results:
        dy, dx = r.shift
        assert r.crop == (abs(dy), abs(dx))
        assert r.error_cropped <= EXACT  # the region both maps see validly
        assert r.error > BROKEN  # the whole map: the vacated band (bias only) and the lost border (measured 0.3-0.4)


def test_zero_padded_conv_stack_needs_a_margin() -> None:
    """Two 3x3 layers reach 2 cells: the cropped error is exact for margin=1 but not for margin=0 and a shift of 1."""
    torch.manual_seed(3)
    stack = nn.Sequential(Conv2d(3, 4, 3, padding=1, dtype=D), nn.ReLU(), Conv2d(4, 4, 3, padding=1, dtype=D))
    x, shifts = _images(height=12, width=12), [(1, 0), (0, -1), (2, 2)]
    assert equivariance_error(stack, x, shifts[:1], mode="zeros")[0].error_cropped > BROKEN
    for r in equivariance_error(stack, x, shifts, mode="zeros", margin=1):
        assert r.crop == (abs(r.shift[0]) + 1 if r.shift[0] else 0, abs(r.shift[1]) + 1 if r.shift[1] else 0)
        assert r.error_cropped <= EXACT


def test_stride_two_conv_is_equivariant_to_even_shifts_only() -> None:
    """Stride 2 keeps every other output: even shifts move them by whole cells, odd ones alias (Zhang 2019)."""
    torch.manual_seed(4)
    conv = _circular_conv(3, 4, stride=2)  # 10x10 -> 5x5
    shifts = [(0, s) for s in range(1, 2 * K + 1)] + [(s, 0) for s in range(1, 2 * K + 1)] + [(-2, 4), (1, 2)]
    for r in equivariance_error(conv, _images(), shifts, stride=2):
        dy, dx = r.shift
        if dy % 2 == 0 and dx % 2 == 0:
            assert r.aligned and r.feature_shift == (dy // 2, dx // 2)
            assert r.error <= EXACT
        else:
            assert not r.aligned
            assert r.feature_shift[0] in (math.floor(dy / 2), math.ceil(dy / 2))
            assert r.feature_shift[1] in (math.floor(dx / 2), math.ceil(dx / 2))
            assert r.error > BROKEN  # measured ~1.4: an odd shift picks the other phase of the dense output


class PixelAttention(nn.Module):
    """Self-attention over the H*W pixel tokens (channels = embedding), optionally with a learned absolute
    position embedding: the ViT's token mixer in miniature."""

    def __init__(self, channels: int, height: int, width: int, position: bool) -> None:
        super().__init__()
        self.attention = MultiheadAttention(channels, 2, backend="math", dtype=D)
        self.position = nn.Parameter(torch.randn(height * width, channels, dtype=D)) if position else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = images.shape
        tokens = images.flatten(2).transpose(1, 2)  # (batch, height * width, channel)
        if self.position is not None:
            tokens = tokens + self.position
        out = self.attention(tokens)  # (batch, height * width, channel)
        return out.transpose(1, 2).reshape(batch, channels, height, width)


def test_attention_without_positions_is_equivariant_and_position_embedding_breaks_it() -> None:
    torch.manual_seed(5)
    x = _images(channels=4, height=6, width=6)
    shifts = _all_shifts(3)
    plain = equivariance_error(PixelAttention(4, 6, 6, position=False), x, shifts)
    for r in plain:
        assert r.error <= EXACT  # a circular shift permutes the tokens; attention commutes with permutations
    torch.manual_seed(5)
    positioned = equivariance_error(PixelAttention(4, 6, 6, position=True), x, shifts)
    for r in positioned:
        assert r.error > BROKEN  # P X + E != P (X + E): the embedding pins content to absolute positions


def test_global_average_pooled_circular_conv_is_invariant() -> None:
    torch.manual_seed(6)
    model = nn.Sequential(_circular_conv(3, 5), nn.ReLU(), _circular_conv(5, 5, stride=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3, dtype=D))
    for r in invariance_error(model, _images(batch=8), _all_shifts()):
        assert r.error <= EXACT
        assert r.flips == 0.0


# --- closed forms of the errors -----------------------------------------------------------------------------------


def test_position_dependent_gain_matches_its_closed_form() -> None:
    """``f(x) = x * w``: ``f(S x) - S f(x) = S x * (w - S w)`` in both modes; the crop is cut by hand."""
    x = _images(height=9, width=8)
    w = _images(batch=1, channels=1, height=9, width=8, seed=7)
    gain = lambda images: images * w  # noqa: E731

    shifts = [(0, 1), (2, 0), (-1, 3), (3, -2)]
    for r, (dy, dx) in zip(equivariance_error(gain, x, shifts), shifts):
        sx, sw = torch.roll(x, (dy, dx), (2, 3)), torch.roll(w, (dy, dx), (2, 3))
        expected = (sx * (w - sw)).norm() / (x * w).norm()
        assert r.error == pytest.approx(expected.item(), rel=1e-12)
        assert r.error_cropped == r.error

    for r, (dy, dx) in zip(equivariance_error(gain, x, shifts, mode="zeros"), shifts):
        sx, sw = _zero_shift_reference(x, dy, dx), _zero_shift_reference(w, dy, dx)
        diff, reference = sx * (w - sw), _zero_shift_reference(x * w, dy, dx)
        assert r.error == pytest.approx((diff.norm() / (x * w).norm()).item(), rel=1e-12)
        rows, cols = slice(abs(dy), 9 - abs(dy)), slice(abs(dx), 8 - abs(dx))
        expected = diff[..., rows, cols].norm() / reference[..., rows, cols].norm()
        assert r.error_cropped == pytest.approx(expected.item(), rel=1e-12)
        assert r.crop == (abs(dy), abs(dx))


def test_stride_is_per_axis_and_pooling_matches_by_hand() -> None:
    """2x2 average pooling (stride 2): a shift of (2, 0) is one cell down, exact on a circular image."""
    x = _images(height=8, width=8)
    pool = nn.AvgPool2d(2)
    (r,) = equivariance_error(pool, x, [(2, 0)], stride=2)
    assert r.feature_shift == (1, 0) and r.aligned and r.error <= EXACT
    (r,) = equivariance_error(pool, x, [(2, 1)], stride=(2, 1))  # claims one pixel per column cell: wrong
    assert r.feature_shift == (1, 1) and r.aligned and r.error > BROKEN


def test_degenerate_norms() -> None:
    """0 / 0 is agreement (0.0); a crop that leaves nothing gives NaN."""
    x = _images(height=6, width=6)
    zero = lambda images: torch.zeros_like(images)  # noqa: E731
    (r,) = equivariance_error(zero, x, [(1, 2)], mode="zeros")
    assert r.error == 0.0 and r.error_cropped == 0.0
    (r,) = equivariance_error(lambda images: images, x, [(3, 0)], mode="zeros")  # crop 3 of 6 rows on each side
    assert r.error == 0.0 and math.isnan(r.error_cropped)


def test_invariance_of_top_row_logits_by_hand() -> None:
    """``g(x) = x[:, 0, 0, :]``: the error and the flips follow from the shifted top row."""
    x = _images(batch=6)
    top_row = lambda images: images[:, 0, 0, :]  # noqa: E731
    shifts = [(0, 1), (0, -3), (1, 0), (2, 5), (0, 0)]
    for mode in SHIFT_MODES:
        results = invariance_error(top_row, x, shifts, mode=mode)
        assert all(isinstance(r, LogitShiftError) for r in results)
        for r, (dy, dx) in zip(results, shifts):
            if mode == "circular":
                moved = torch.roll(x, (dy, dx), (2, 3))[:, 0, 0, :]
            else:
                moved = _zero_shift_reference(x, dy, dx)[:, 0, 0, :]
            base = x[:, 0, 0, :]
            assert r.error == pytest.approx(((moved - base).norm() / base.norm()).item(), rel=1e-12)
            flips = sum(int(moved[i].argmax() != base[i].argmax()) for i in range(6)) / 6
            assert r.flips == flips
        assert results[-1].error == 0.0 and results[-1].flips == 0.0
    circular = invariance_error(top_row, x, [(0, 1)])[0]
    assert circular.flips == 1.0  # distinct values: the argmax column moves with the row


# --- bad input ----------------------------------------------------------------------------------------------------


def test_bad_arguments_are_refused_naming_them() -> None:
    conv = _circular_conv(3, 4)
    x = _images()
    with pytest.raises(TypeError, match=r"shifts\[1\]: dx must be an int"):
        equivariance_error(conv, x, [(1, 0), (0, 0.5)])
    with pytest.raises(ValueError, match=r"shifts\[0\]: dy=10 is a shift larger than the image"):
        invariance_error(lambda i: i.mean((2, 3)), x, [(10, 0)])
    with pytest.raises(TypeError, match="shifts must be a sequence of"):
        equivariance_error(conv, x, (1, 0))  # type: ignore[arg-type]  # one pair, not a list of pairs
    with pytest.raises(ValueError, match="shifts must be .* empty"):
        equivariance_error(conv, x, [])
    with pytest.raises(ValueError, match="mode must be one of"):
        equivariance_error(conv, x, [(1, 0)], mode="wrap")
    with pytest.raises(ValueError, match="images must have shape"):
        equivariance_error(conv, x[:, :, :, 0], [(1, 0)])
    with pytest.raises(ValueError, match="stride must be"):
        equivariance_error(conv, x, [(1, 0)], stride=0)
    with pytest.raises(TypeError, match="stride must be"):
        equivariance_error(conv, x, [(1, 0)], stride=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="margin must be"):
        equivariance_error(conv, x, [(1, 0)], margin=-1)
    with pytest.raises(ValueError, match=r"features_fn must return a tensor \[batch, channel, height, width\]"):
        equivariance_error(lambda i: i.mean((2, 3)), x, [(1, 0)])
    with pytest.raises(ValueError, match=r"logits_fn must return a tensor \[batch, classes\]"):
        invariance_error(conv, x, [(1, 0)])
    with pytest.raises(ValueError, match="max_shift must be"):
        report_shifts(0)


# --- the report ---------------------------------------------------------------------------------------------------


class TinyNet(nn.Module):
    """The vision models' interface: ``features`` (a stride-2 circular conv map), ``feature_stride``, logits."""

    feature_stride = 2

    def __init__(self) -> None:
        super().__init__()
        self.conv = _circular_conv(3, 6, stride=2)
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(6, 4, dtype=D)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images).mean((2, 3))))


def test_report_rows_match_the_direct_measurements() -> None:
    torch.manual_seed(8)
    model = TinyNet().train()
    x = _images(batch=4).float()  # converted to the model's float64
    rows = equivariance_report(model, x, max_shift=3)
    assert model.training and model.dropout.training  # flags restored
    assert all(isinstance(row, EquivarianceRow) for row in rows)
    assert [(row.mode, row.shift) for row in rows] == [(m, s) for m in SHIFT_MODES for s in report_shifts(3)]
    assert report_shifts(3) == [(0, 1), (0, 2), (0, 3), (1, 0), (2, 0), (3, 0)]
    assert {row.model for row in rows} == {"TinyNet"}
    assert {row.feature_stride for row in rows} == {(2, 2)}  # TinyNet.feature_stride

    model.eval()
    for mode in SHIFT_MODES:
        features = equivariance_error(model.features, x.double(), report_shifts(3), mode=mode, stride=2)
        logits = invariance_error(model, x.double(), report_shifts(3), mode=mode)
        mine = [row for row in rows if row.mode == mode]
        for row, f, g in zip(mine, features, logits):
            assert isinstance(f, FeatureShiftError)
            assert (row.feature_shift, row.aligned) == (f.feature_shift, f.aligned)
            assert (row.feature_error, row.feature_error_cropped) == (f.error, f.error_cropped)
            assert (row.logit_error, row.prediction_flips) == (g.error, g.flips)
            if mode == "circular" and row.aligned:  # float64 despite float32 images, dropout off
                assert row.feature_error <= EXACT and row.logit_error <= EXACT
    model.train()
    assert equivariance_report(model, x, max_shift=3) == rows  # deterministic


def test_report_on_plain_callables() -> None:
    torch.manual_seed(9)
    conv = _circular_conv(3, 4)
    x = _images()

    def feature_map(images: torch.Tensor) -> torch.Tensor:
        return conv(images)

    rows = equivariance_report(feature_map, x, max_shift=2, modes=("circular",))
    assert len(rows) == 4 and {row.model for row in rows} == {"feature_map"}
    assert all(row.logit_error is None and row.prediction_flips is None for row in rows)
    assert all(row.feature_error <= EXACT for row in rows)

    pooled = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    rows = equivariance_report(pooled, x, shifts=[(1, 1)], modes=("zeros",), name="pooled")
    assert [(row.model, row.mode, row.shift) for row in rows] == [("pooled", "zeros", (1, 1))]
    assert rows[0].feature_error is None and rows[0].logit_error > 0.0

    strided = _circular_conv(3, 4, stride=2)  # no feature_stride: inferred as 10 / 5 = 2 per axis
    rows = equivariance_report(strided, x, shifts=[(2, 0), (0, 4), (1, 0)], modes=("circular",))
    assert [(row.feature_stride, row.feature_shift, row.aligned) for row in rows] == [
        ((2, 2), (1, 0), True), ((2, 2), (0, 2), True), ((2, 2), (0, 0), False)]
    assert rows[0].feature_error <= EXACT and rows[1].feature_error <= EXACT and rows[2].feature_error > BROKEN
    (row,) = equivariance_report(strided, x, shifts=[(1, 0)], modes=("circular",), stride=(1, 2))  # override
    assert row.feature_stride == (1, 2) and row.feature_shift == (1, 0) and row.aligned

    with pytest.raises(ValueError, match="model has no features method"):
        equivariance_report(lambda images: images[:, 0], x)
    with pytest.raises(ValueError, match="mode must be one of"):
        equivariance_report(conv, x, modes=("circular", "mirror"))
    with pytest.raises(ValueError, match=r"shifts\[9\]: dx=10 is a shift larger than the image"):
        equivariance_report(conv, x, max_shift=10)
