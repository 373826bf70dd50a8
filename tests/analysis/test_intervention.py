"""Interventions: ablations and patching against hand-written references, gradient importance against finite
differences, the query/key view against hook_pattern, sweeps' named dims, chunked runs against one batch, hooks of
different widths against one sweep per hook, precomputed means, and bad input refused with the model unchanged."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer import intervene, record
from explorer.analysis.intervention import (
    ablation_sweep, accuracy, class_probability, flat_units, gradient_importance, kl_divergence, logit_difference,
    mean_ablation, pair_similarity, patching, patching_sweep, pruning_curve, pruning_order, query_key_view,
    resample_ablation, run_with_edits, scaling, unit_means, zero_ablation,
)
from explorer.layers import Conv1d, MultiheadAttention
from tests.test_hooks import assert_nothing_attached

EMBED, HEADS, CLASSES = 8, 2, 3


class Tiny(nn.Module):
    """Conv stem (channels), two attention layers (heads), a max-pooled classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = Conv1d(4, EMBED, 3, padding=1)
        self.attn = nn.ModuleList([MultiheadAttention(EMBED, HEADS) for _ in range(2)])
        self.head = nn.Linear(EMBED, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x)).transpose(1, 2)  # (batch, length, embed)
        for attn in self.attn:
            h = h + attn(h)
        return self.head(h.mean(1))  # (batch, classes)


class Widths(nn.Module):
    """Two convs of different widths (6 and 4 channels), as the lesson-05 CNN's 32, 40, 40."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = Conv1d(4, 6, 3, padding=1)
        self.conv2 = Conv1d(6, 4, 3, padding=1)
        self.head = nn.Linear(4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv2(torch.tanh(self.conv1(x)))).mean(-1))  # (batch, classes)


def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


@pytest.fixture()
def model() -> Tiny:
    torch.manual_seed(0)
    return Tiny().double()


@pytest.fixture()
def x() -> torch.Tensor:
    return torch.randn(5, 4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def head_out(attn: MultiheadAttention, h: torch.Tensor, edit) -> torch.Tensor:
    """The layer written out with torch ops, ``edit(z)`` applied to the per-head output (the reference)."""
    b, n, _ = h.shape
    split = lambda t: t.view(b, n, HEADS, -1).transpose(1, 2)
    q, k, v = (split(F.linear(h, p.weight, p.bias)) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    z = edit(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(EMBED // HEADS), -1) @ v)
    return attn.out_proj(z.transpose(1, 2).reshape(b, n, EMBED))


def reference_forward(model: Tiny, x: torch.Tensor, edit_layer: int, edit) -> torch.Tensor:
    h = torch.tanh(model.conv(x)).transpose(1, 2)
    for i, attn in enumerate(model.attn):
        h = h + (head_out(attn, h, edit) if i == edit_layer else attn(h))
    return model.head(h.mean(1))


# --- edits ----------------------------------------------------------------------------------------------------------


def test_zero_ablation_of_one_head_matches_the_written_out_layer(model, x):
    def zero1(z):
        z = z.clone()
        z[:, 1] = 0
        return z

    with intervene(model, zero_ablation(model, {"attn.1.hook_z": [1]})):
        out = model(x)
    torch.testing.assert_close(out, reference_forward(model, x, 1, zero1), atol=1e-12, rtol=1e-12)  # fp64


def test_zero_ablation_of_conv_channels(model, x):
    with intervene(model, zero_ablation(model, {"conv.hook_out": [0, 5]})):
        out = model(x)
    y = F.conv1d(x, model.conv.weight, model.conv.bias, padding=1)
    y[:, [0, 5]] = 0
    h = torch.tanh(y).transpose(1, 2)
    for attn in model.attn:
        h = h + attn(h)
    torch.testing.assert_close(out, model.head(h.mean(1)), atol=1e-12, rtol=1e-12)  # fp64


def test_mean_ablation_uses_the_reference_batch_mean(model, x):
    means = unit_means(model, run, x, "attn.0.hook_z")
    with record(model, "attn.0.hook_z") as trace:
        model(x)
    z = trace["attn.0.hook_z"]
    torch.testing.assert_close(means["attn.0.hook_z"], z.mean(0, keepdim=True), atol=0, rtol=0)
    with intervene(model, mean_ablation(model, {"attn.0.hook_z": [0]}, means)):
        out = model(x)

    def to_mean(zz):
        zz = zz.clone()
        zz[:, 0] = z[:, 0].mean(0)
        return zz

    torch.testing.assert_close(out, reference_forward(model, x, 0, to_mean), atol=1e-12, rtol=1e-12)  # fp64
    flat = unit_means(model, run, x, "attn.0.hook_z", over=("batch", "query"))
    assert flat["attn.0.hook_z"].shape == (1, HEADS, 1, EMBED // HEADS)


def test_resample_ablation_takes_a_seeded_reference_input(model, x):
    with record(model, "attn.0.hook_z") as ref:
        model(x.flip(0))
    pick = torch.randint(5, (5,), generator=torch.Generator().manual_seed(3))
    with intervene(model, resample_ablation(model, {"attn.0.hook_z": [1]}, ref, seed=3)):
        out = model(x)

    def resampled(z):
        z = z.clone()
        z[:, 1] = ref["attn.0.hook_z"][pick, 1]
        return z

    torch.testing.assert_close(out, reference_forward(model, x, 0, resampled), atol=1e-12, rtol=1e-12)  # fp64


def test_patching_every_unit_everywhere_restores_the_clean_run(model, x):
    corrupted = x + torch.randn_like(x)
    with record(model, "conv.hook_out") as clean:
        clean_out = model(x)
    with intervene(model, patching(model, {"conv.hook_out": list(range(EMBED))}, clean)):
        patched = model(corrupted)
    torch.testing.assert_close(patched, clean_out, atol=0, rtol=0)  # the conv is the only path from the input


def test_patching_one_position_changes_only_that_query(model, x):
    corrupted = x + torch.randn_like(x)
    with record(model, "attn.1.hook_z") as clean:
        model(x)
    with record(model, ["attn.1.hook_z", "attn.1.hook_out"]) as base:
        model(corrupted)
    with intervene(model, patching(model, {"attn.1.hook_z": [0]}, clean, position=2)), \
            record(model, ["attn.1.hook_z", "attn.1.hook_out"]) as patched:
        model(corrupted)
    z, z0 = patched["attn.1.hook_z"], base["attn.1.hook_z"]
    torch.testing.assert_close(z[:, 0, 2], clean["attn.1.hook_z"][:, 0, 2], atol=0, rtol=0)
    changed = (z != z0).any(-1)  # (batch, head, query)
    assert changed[:, 0, 2].all() and changed.sum() == changed[:, 0, 2].sum()
    moved = (patched["attn.1.hook_out"] != base["attn.1.hook_out"]).any(-1)  # (batch, query)
    assert moved[:, 2].all() and moved.sum() == 5  # the output projection mixes heads, not positions


# --- metrics ---------------------------------------------------------------------------------------------------


def test_metrics_against_closed_forms():
    logits = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(logit_difference(1, 0)(logits), torch.tensor([2.0, -2.0], dtype=torch.float64))
    torch.testing.assert_close(logit_difference(torch.tensor([1, 0]), 2)(logits),
                               torch.tensor([3.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(class_probability(0)(logits), logits.softmax(-1)[:, 0], atol=0, rtol=0)
    ref = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    expected = F.kl_div(logits.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(kl_divergence(ref)(logits), expected, atol=1e-12, rtol=1e-12)  # torch's KL, fp64
    torch.testing.assert_close(kl_divergence(ref)(ref), torch.zeros(2, dtype=torch.float64), atol=1e-15, rtol=0)
    pairs = torch.randn(4, 2, 5, dtype=torch.float64)
    torch.testing.assert_close(pair_similarity()(pairs), F.cosine_similarity(pairs[:, 0], pairs[:, 1], dim=-1))
    with pytest.raises(ValueError, match=r"logits \[batch, classes\]"):
        class_probability(0)(torch.zeros(3))
    with pytest.raises(ValueError, match=r"embeddings \[batch, 2, embed\]"):
        pair_similarity()(torch.zeros(3, 3, 2))


# --- sweeps ----------------------------------------------------------------------------------------------------


def test_ablation_sweep_is_one_ablation_per_cell(model, x):
    metric = class_probability(2)
    sweep = ablation_sweep(model, run, x, metric, "attn.*.hook_z")
    assert sweep.dims == ("layer", "head") and sweep.layers == ["attn.0.hook_z", "attn.1.hook_z"]
    assert sweep.per_input.shape == (5, 2, HEADS) and sweep.values.shape == (2, HEADS)
    torch.testing.assert_close(sweep.baseline, metric(model(x)).detach(), atol=0, rtol=0)
    for layer in range(2):
        for head in range(HEADS):
            def zero(z, h=head):
                z = z.clone()
                z[:, h] = 0
                return z
            expected = metric(reference_forward(model, x, layer, zero)).detach()
            torch.testing.assert_close(sweep.per_input[:, layer, head], expected, atol=1e-12, rtol=1e-12)  # fp64
    torch.testing.assert_close(sweep.effect, (sweep.per_input - sweep.baseline[:, None, None]).mean(0))
    channels = ablation_sweep(model, run, x, metric, "conv.hook_out", how="mean")
    assert channels.dims == ("layer", "channel") and channels.values.shape == (1, EMBED)


def test_patching_sweep_per_position_and_normalised(model, x):
    corrupted = x.flip(-1)
    metric = logit_difference(0, 1)
    sweep = patching_sweep(model, run, x, corrupted, metric, "attn.*.hook_z", per_position=True)
    assert sweep.dims == ("layer", "position", "head") and sweep.values.shape == (2, 6, HEADS)
    torch.testing.assert_close(sweep.baseline, metric(model(corrupted)).detach(), atol=0, rtol=0)
    torch.testing.assert_close(sweep.reference, metric(model(x)).detach(), atol=0, rtol=0)
    with record(model, "attn.0.hook_z") as clean:
        model(x)
    with intervene(model, patching(model, {"attn.0.hook_z": [1]}, clean, position=4)):
        expected = metric(model(corrupted)).detach()
    torch.testing.assert_close(sweep.per_input[:, 0, 4, 1], expected, atol=0, rtol=0)
    gap = (sweep.reference - sweep.baseline).mean()
    torch.testing.assert_close(sweep.normalised(), (sweep.per_input.mean(0) - sweep.baseline.mean()) / gap)
    whole = patching_sweep(model, run, x, corrupted, metric, "attn.*.hook_z")
    assert whole.dims == ("layer", "head")


def test_gradient_importance_matches_finite_differences(model, x):
    metric = logit_difference(0, 2)
    grad = gradient_importance(model, run, x, metric, ["conv.hook_out"])
    heads = gradient_importance(model, run, x, metric, "attn.*.hook_z")
    assert heads.dims == ("layer", "head") and grad.dims == ("layer", "channel")
    eps = 1e-6
    for sweep, name, n in ((heads, "attn.1.hook_z", HEADS), (heads, "attn.0.hook_z", HEADS),
                           (grad, "conv.hook_out", EMBED)):
        layer = sweep.layers.index(name)
        for unit in range(n):
            values = []
            for sign in (1, -1):
                factor = torch.ones(n, dtype=torch.float64)
                factor[unit] += sign * eps
                with intervene(model, scaling(model, {name: factor})), torch.no_grad():
                    values.append(metric(model(x)))
            finite = (values[0] - values[1]) / (2 * eps)  # central difference, error O(eps^2)
            torch.testing.assert_close(sweep.per_input[:, layer, unit], finite, atol=1e-7, rtol=1e-6)  # fp64
    assert all(p.grad is None for p in model.parameters())  # parameters' gradients untouched


def test_gradient_predicts_the_ablation_effect_to_first_order(model, x):
    """Scaling a unit by (1 - t) changes the metric by -t * grad + O(t^2): the Taylor predictor of ablation."""
    metric = class_probability(1)
    grad = gradient_importance(model, run, x, metric, "attn.*.hook_z")
    for t in (1e-2, 1e-3):
        factor = torch.ones(HEADS, dtype=torch.float64)
        factor[0] = 1 - t
        with intervene(model, scaling(model, {"attn.1.hook_z": factor})), torch.no_grad():
            change = (metric(model(x)) - grad.baseline).mean()
        predicted = -t * grad.per_input[:, 1, 0].mean()
        assert abs(change - predicted) < 50 * t * t  # second-order remainder, constant bounded for this model


# --- query/key view -------------------------------------------------------------------------------------------


def test_query_key_view_equals_hook_pattern(model, x):
    view = query_key_view(model, run, x, "attn.1", head=1, query=3, batch=2)
    with record(model, ["attn.1.hook_pattern", "attn.1.hook_q", "attn.1.hook_k"]) as trace:
        model(x)
    torch.testing.assert_close(view.softmax, trace["attn.1.hook_pattern"][2, 1, 3], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(view.q, trace["attn.1.hook_q"][2, 1, 3], atol=0, rtol=0)
    torch.testing.assert_close(view.product.sum(-1) / math.sqrt(EMBED // HEADS), view.dots, atol=1e-12, rtol=0)
    torch.testing.assert_close(view.bias, torch.zeros_like(view.bias), atol=0, rtol=0)  # no mask, no bias


def test_query_key_view_with_a_mask_and_a_bias():
    torch.manual_seed(0)
    attn = MultiheadAttention(EMBED, HEADS).double()
    h = torch.randn(1, 5, EMBED, dtype=torch.float64)
    bias = torch.randn(HEADS, 5, 5, dtype=torch.float64)
    padding = torch.tensor([[False, False, False, True, False]])
    fwd = lambda m, inp: m(inp, key_padding_mask=padding, score_bias=bias)
    wrapper = nn.ModuleDict({"attn": attn})
    view = query_key_view(wrapper, lambda m, inp: m["attn"](inp, key_padding_mask=padding, score_bias=bias),
                          h, "attn", head=0, query=1)
    with record(attn, "hook_pattern") as trace:
        fwd(attn, h)
    torch.testing.assert_close(view.softmax, trace["hook_pattern"][0, 0, 1], atol=1e-12, rtol=1e-12)  # fp64
    assert math.isinf(view.bias[3]) and view.softmax[3] == 0
    torch.testing.assert_close(view.bias[[0, 1, 2, 4]], bias[0, 1, [0, 1, 2, 4]], atol=1e-12, rtol=1e-12)


# --- bad input -------------------------------------------------------------------------------------------------


def test_bad_input_is_refused_and_the_model_is_unchanged(model, x):
    before = state(model)
    out = model(x)
    metric = class_probability(0)
    cases = [
        (lambda: zero_ablation(model, {"attn.0.hook_zz": [0]}), ValueError, r"nearest: \['attn.0.hook_z"),
        (lambda: zero_ablation(model, {"attn.0.hook_q": [0]}), None, None),  # hook_q has a head axis: fine
        (lambda: zero_ablation(model, {"attn.0.hook_out": [0]}), ValueError, "no 'head' or 'channel' axis"),
        (lambda: zero_ablation(model, {"attn.0.hook_z": [-1]}), ValueError, "index"),
        (lambda: zero_ablation(model, ["attn.0.hook_z"]), TypeError, "units must be a mapping"),
        (lambda: unit_means(model, run, x[:0], "attn.0.hook_z"), ValueError, "empty batch"),
        (lambda: ablation_sweep(model, run, x, metric, "attn.*.hook_z", how="mean", reference=x[:0]),
         ValueError, "empty batch"),
        (lambda: ablation_sweep(model, run, x, metric, "attn.*.hook_z", how="half"), ValueError, "how"),
        (lambda: ablation_sweep(model, run, x, metric, ["attn.0.hook_z", "conv.hook_out"]), ValueError,
         "mixes unit kinds"),
        (lambda: patching_sweep(model, run, x, x[:2], metric, "attn.*.hook_z"), ValueError, "different shapes"),
        (lambda: query_key_view(model, run, x, "attn.7", 0, 0), ValueError, r"attention layers: \['attn"),
        (lambda: query_key_view(model, run, x, "attn.0", HEADS, 0), ValueError, "head"),
        (lambda: query_key_view(model, run, x, "conv", 0, 0), ValueError, "not an attention layer"),
    ]
    for call, error, message in cases:
        if error is None:
            call()
            continue
        with pytest.raises(error, match=message):
            call()
    with pytest.raises(ValueError, match=r"units: index \[2\] out of range at hook point 'attn.0.hook_z'.*2 units"):
        with intervene(model, zero_ablation(model, {"attn.0.hook_z": [HEADS]})):
            model(x)
    with record(model, "attn.0.hook_z") as clean:
        model(x)
    with pytest.raises(ValueError, match=r"position: 6 is out of range at hook point 'attn.0.hook_z'"):
        with intervene(model, patching(model, {"attn.0.hook_z": [0]}, clean, position=6)):
            model(x)
    with pytest.raises(ValueError, match=r"does not broadcast"):
        with intervene(model, mean_ablation(model, {"attn.0.hook_z": [0]},
                                            unit_means(model, run, x[:, :, :4], "attn.0.hook_z"))):
            model(x)
    with pytest.raises(ZeroDivisionError):
        ablation_sweep(model, lambda m, inp: 1 / 0, x, metric, "attn.*.hook_z")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], atol=0, rtol=0)
    torch.testing.assert_close(model(x), out, atol=0, rtol=0)
    assert model.training  # the sweeps' eval switch restored the flags
    assert_nothing_attached(model)


# --- pruning ---------------------------------------------------------------------------------------------------


def test_pruning_order_and_curve(model, x):
    scores = torch.tensor([[0.3, -1.0], [0.2, 5.0]], dtype=torch.float64)
    assert pruning_order(scores) == [(0, 1), (1, 0), (0, 0), (1, 1)]
    assert pruning_order(scores, descending=True) == [(1, 1), (0, 0), (1, 0), (0, 1)]
    random = pruning_order(scores, seed=4)
    assert sorted(random) == sorted(pruning_order(scores)) and random == pruning_order(scores, seed=4)
    labels = model(x).argmax(-1)
    metric = accuracy(labels)
    torch.testing.assert_close(metric(model(x)), torch.ones(5, dtype=torch.float64))
    order = [(1, 0), (0, 1), (0, 0), (1, 1)]
    curve = pruning_curve(model, run, x, metric, "attn.*.hook_z", order)
    assert curve.shape == (5,) and curve[0] == 1.0
    with intervene(model, zero_ablation(model, {"attn.1.hook_z": [0], "attn.0.hook_z": [1]})), torch.no_grad():
        two = (model(x).argmax(-1) == labels).double().mean()
    assert curve[2] == two  # the first two units of the order removed together
    h = torch.tanh(model.conv(x)).transpose(1, 2)  # every head removed: the attention layers add only out_proj.bias
    h = h + model.attn[0].out_proj.bias
    h = h + model.attn[1].out_proj.bias
    assert curve[4] == (model.head(h.mean(1)).argmax(-1) == labels).double().mean()
    torch.testing.assert_close(pruning_curve(model, run, x, metric, "attn.*.hook_z", order, steps=[0, 4]),
                               curve[[0, 4]], atol=0, rtol=0)
    with pytest.raises(ValueError, match="out of range or repeated"):
        pruning_curve(model, run, x, metric, "attn.*.hook_z", [(0, 0), (0, 0)])
    with pytest.raises(ValueError, match="NaN"):
        pruning_order(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="NaN"):
        pruning_order(torch.tensor([[float("nan"), float("nan")]]), seed=1)


# --- hooks of different widths -------------------------------------------------------------------------------------


@pytest.fixture()
def widths() -> Widths:
    torch.manual_seed(0)
    return Widths().double()


def test_sweeps_over_hooks_of_different_widths_pad_with_nan(widths, x):
    """One sweep over convs of 6 and 4 channels equals one sweep per conv, NaN where conv2 has no channel."""
    metric = class_probability(1)
    for sweep_of in (lambda h: ablation_sweep(widths, run, x, metric, h), lambda h: ablation_sweep(
            widths, run, x, metric, h, how="mean"), lambda h: gradient_importance(widths, run, x, metric, h)):
        both = sweep_of("conv*.hook_out")
        assert both.dims == ("layer", "channel") and both.counts == [6, 4]
        assert both.per_input.shape == (5, 2, 6) and both.per_input[:, 1, 4:].isnan().all()
        assert not both.per_input[:, 0].isnan().any() and not both.per_input[:, 1, :4].isnan().any()
        for layer, name in enumerate(["conv1.hook_out", "conv2.hook_out"]):
            alone = sweep_of(name)
            width = alone.counts[0]
            torch.testing.assert_close(both.per_input[:, layer, :width], alone.per_input[:, 0], atol=1e-12,
                                       rtol=0)  # fp64: the same ablations (the gradient with more masks at 1)
        torch.testing.assert_close(flat_units(both.per_input, both.counts),
                                   torch.cat([both.per_input[:, 0], both.per_input[:, 1, :4]], dim=1), atol=0, rtol=0)
    sweep = ablation_sweep(widths, run, x, metric, "conv*.hook_out")
    h = torch.tanh(widths.conv1(x))  # hand-written: conv2's channel 3 zeroed before its tanh
    y = F.conv1d(h, widths.conv2.weight, widths.conv2.bias, padding=1)
    y[:, 3] = 0
    expected = metric(widths.head(torch.tanh(y).mean(-1))).detach()
    torch.testing.assert_close(sweep.per_input[:, 1, 3], expected, atol=1e-12, rtol=1e-12)  # fp64


def test_pruning_over_hooks_of_different_widths(widths, x):
    metric = class_probability(0)
    scores = ablation_sweep(widths, run, x, metric, "conv*.hook_out").effect.abs()  # (layer, 6), NaN at [1, 4:]
    order = pruning_order(scores)
    assert len(order) == 10 and (1, 4) not in order and (1, 5) not in order
    flat = torch.cat([scores[0], scores[1, :4]])
    assert [layer * 6 + unit for layer, unit in order] == torch.sort(flat, stable=True).indices.tolist()
    random = pruning_order(scores, seed=2)  # a permutation of the 10 channels that exist, in flat order
    present = torch.tensor(list(range(10)))
    expected = present[torch.randperm(10, generator=torch.Generator().manual_seed(2))].tolist()
    assert [layer * 6 + unit if layer == 0 else 6 + unit for layer, unit in random] == expected
    curve = pruning_curve(widths, run, x, metric, "conv*.hook_out", order, steps=[0, 3, 10])
    units: dict[str, list[int]] = {}
    for layer, unit in order[:3]:
        units.setdefault(f"conv{layer + 1}.hook_out", []).append(unit)
    with intervene(widths, zero_ablation(widths, units)), torch.no_grad():
        three = metric(widths(x)).mean()
    torch.testing.assert_close(curve[1], three, atol=1e-12, rtol=0)  # fp64
    with pytest.raises(ValueError, match=r"out of range or repeated.*\[6, 4\] units"):
        pruning_curve(widths, run, x, metric, "conv*.hook_out", [(1, 4)])


def test_pruning_order_skips_nan_and_keeps_the_random_order_without_nan():
    nan = float("nan")
    scores = torch.tensor([[0.3, nan], [0.1, 0.2]], dtype=torch.float64)
    assert pruning_order(scores) == [(1, 0), (1, 1), (0, 0)]
    assert pruning_order(scores, descending=True) == [(0, 0), (1, 1), (1, 0)]
    full = torch.zeros(3, 4, dtype=torch.float64)  # no NaN: the permutation of every flat index, as before
    expected = torch.randperm(12, generator=torch.Generator().manual_seed(5)).tolist()
    assert [layer * 4 + unit for layer, unit in pruning_order(full, seed=5)] == expected


# --- chunks --------------------------------------------------------------------------------------------------------


FP64_CHUNK = 1e-12  # fp64: a batch of 2 and of 5 may round matmuls differently, by a few ulp


def test_chunked_sweeps_equal_one_batch(model, x):
    labels = torch.tensor([0, 2, 1, 1, 0])
    metric = logit_difference(labels, (labels + 1) % CLASSES)  # built for the whole batch of 5
    for how, reference in (("zero", None), ("mean", None), ("mean", x.flip(0)), ("resample", None),
                           ("resample", x.flip(0)[:3])):
        whole = ablation_sweep(model, run, x, metric, "attn.*.hook_z", how, reference, seed=4)
        chunked = ablation_sweep(model, run, x, metric, "attn.*.hook_z", how, reference, seed=4, chunk=2)
        torch.testing.assert_close(chunked.per_input, whole.per_input, atol=FP64_CHUNK, rtol=0)
        torch.testing.assert_close(chunked.baseline, whole.baseline, atol=FP64_CHUNK, rtol=0)
    corrupted = x.flip(-1)
    whole = patching_sweep(model, run, x, corrupted, metric, "attn.*.hook_z", per_position=True)
    chunked = patching_sweep(model, run, x, corrupted, metric, "attn.*.hook_z", per_position=True, chunk=3)
    torch.testing.assert_close(chunked.per_input, whole.per_input, atol=FP64_CHUNK, rtol=0)
    torch.testing.assert_close(chunked.reference, whole.reference, atol=FP64_CHUNK, rtol=0)
    order = pruning_order(whole.values.mean(1))
    torch.testing.assert_close(pruning_curve(model, run, x, accuracy(labels), "attn.*.hook_z", order, chunk=2),
                               pruning_curve(model, run, x, accuracy(labels), "attn.*.hook_z", order), atol=0, rtol=0)
    same = ablation_sweep(model, run, x, metric, "attn.*.hook_z", chunk=5)  # one chunk holds all: one batch
    torch.testing.assert_close(same.per_input, ablation_sweep(model, run, x, metric, "attn.*.hook_z").per_input,
                               atol=0, rtol=0)


def test_chunked_gradient_equals_one_batch_also_for_a_metric_across_inputs(model, x):
    across = lambda out: out[:, 0] - out[:, 1].mean()  # noqa: E731 -- each input's metric reads every input
    for metric in (class_probability(torch.tensor([0, 1, 2, 0, 1])), across):
        whole = gradient_importance(model, run, x, metric, ["attn.*.hook_z"])
        chunked = gradient_importance(model, run, x, metric, ["attn.*.hook_z"], chunk=2)
        torch.testing.assert_close(chunked.per_input, whole.per_input, atol=FP64_CHUNK, rtol=0)
        torch.testing.assert_close(chunked.baseline, whole.baseline, atol=FP64_CHUNK, rtol=0)
    assert all(p.grad is None for p in model.parameters())


def test_chunks_of_tuples_and_refused_inputs(model, x):
    scale = torch.linspace(0.5, 1.5, 5, dtype=torch.float64)

    def scaled(m, inputs):  # tuple inputs, tuple output
        logits = m(inputs[0] * inputs[1][:, None, None])
        return logits, logits.softmax(-1)

    edits = zero_ablation(model, {"attn.1.hook_z": [0]})
    whole = run_with_edits(model, scaled, (x, scale), edits)
    chunked = run_with_edits(model, scaled, (x, scale), edits, chunk=2)
    assert isinstance(chunked, tuple) and len(chunked) == 2
    for a, b in zip(chunked, whole):
        torch.testing.assert_close(a, b, atol=FP64_CHUNK, rtol=0)
    metric = lambda out: out[1][:, 0]  # noqa: E731
    torch.testing.assert_close(ablation_sweep(model, scaled, [x, scale], metric, "conv.hook_out", chunk=3).per_input,
                               ablation_sweep(model, scaled, [x, scale], metric, "conv.hook_out").per_input,
                               atol=FP64_CHUNK, rtol=0)
    metric = class_probability(0)
    with pytest.raises(TypeError, match=r"chunk=2 slices the inputs along dim 0.*got dict"):
        ablation_sweep(model, lambda m, inp: m(inp["x"]), {"x": x}, metric, "attn.*.hook_z", chunk=2)
    with pytest.raises(TypeError, match=r"chunk=2.*one batch size"):
        gradient_importance(model, scaled, (x, scale[:3]), metric, "attn.*.hook_z", chunk=2)
    with pytest.raises(TypeError, match=r"chunk: forward must return a tensor or a tuple/list of tensors"):
        pruning_curve(model, lambda m, inp: {"logits": m(inp)}, x, lambda out: out["logits"][:, 0], "conv.hook_out",
                      [(0, 1)], chunk=2)
    with pytest.raises(ValueError, match="chunk"):
        ablation_sweep(model, run, x, metric, "attn.*.hook_z", chunk=0)
    assert_nothing_attached(model)


# --- precomputed means -----------------------------------------------------------------------------------------------


def test_ablation_sweep_with_precomputed_means(model, x):
    metric = class_probability(2)
    reference = x.flip(0)[:3]
    given = ablation_sweep(model, run, x, metric, "attn.*.hook_z", how="mean",
                           means=unit_means(model, run, reference, "attn.*.hook_z"))
    torch.testing.assert_close(given.per_input, ablation_sweep(model, run, x, metric, "attn.*.hook_z", how="mean",
                                                               reference=reference).per_input, atol=0, rtol=0)
    flat = unit_means(model, run, x, "attn.*.hook_z", over=("batch", "query"))  # one vector per head
    sweep = ablation_sweep(model, run, x, metric, "attn.*.hook_z", how="mean", means=flat)
    with intervene(model, mean_ablation(model, {"attn.1.hook_z": [0]}, flat)), torch.no_grad():
        expected = metric(model(x))
    torch.testing.assert_close(sweep.per_input[:, 1, 0], expected, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"means has no entry for \['attn.1.hook_z'\]"):
        ablation_sweep(model, run, x, metric, "attn.*.hook_z", how="mean",
                       means={"attn.0.hook_z": flat["attn.0.hook_z"]})
    with pytest.raises(ValueError, match="means sets the values of how='mean'"):
        ablation_sweep(model, run, x, metric, "attn.*.hook_z", how="zero", means=flat)
    with pytest.raises(ValueError, match="in place of reference"):
        ablation_sweep(model, run, x, metric, "attn.*.hook_z", how="mean", reference=x, means=flat)
    with pytest.raises(TypeError, match="means must be a mapping"):
        ablation_sweep(model, run, x, metric, "attn.*.hook_z", how="mean", means=[flat])
