"""The long-range lesson's sequence models: receptive fields, parameter counts, circular invariance, causality.

Tolerances: receptive fields and parameter counts exact (closed forms); float32 forward passes compared within
1e-5 (shifted inputs reorder the same sums); sinusoidal positions within 1e-6 of math.sin / math.cos.
"""

import math

import pytest
import torch

from explorer.analysis import receptive_field
from explorer.data.sequences import LENGTH, channels, long_range_batch
from explorer.hooks import record
from explorer import masks
from explorer.layers import MultiheadAttention
from explorer.models.sequence import (
    SEQUENCE_MODELS, LayerStack, SequenceAttention, SequenceCNN, build_sequence_model, parameter_counts,
    sinusoidal_positions,
)


def _closed_form_field(kernel: int, dilations: tuple[int, ...]) -> int:
    """1 + sum over the convs of dilation * (kernel - 1): stride-1 stacks (the 1x1 stem adds nothing)."""
    return 1 + sum(d * (kernel - 1) for d in dilations)


@pytest.mark.parametrize("name,options", [
    ("cnn", {}), ("dilated_cnn", {}), ("cnn", {"kernel_size": 5, "dilations": (1, 3, 2)}),
    ("dilated_cnn", {"kernel_size": 7, "padding_mode": "zeros"}),
])
def test_receptive_field_of_features_is_the_closed_form(name, options):
    model = build_sequence_model(name, seed=0, **options)
    cfg = model.config
    rf = receptive_field(model.features, spatial_dims=1)
    assert rf.output.size == (_closed_form_field(cfg.kernel_size, cfg.dilations),)
    assert rf.output.stride == (1,)


def test_default_fields_are_the_lessons_11_and_63():
    assert receptive_field(build_sequence_model("cnn").features, spatial_dims=1).output.size == (1 + 5 * 2,)
    assert receptive_field(build_sequence_model("dilated_cnn").features, spatial_dims=1).output.size == (
        1 + 2 * (1 + 2 + 4 + 8 + 16),)


def test_a_feature_depends_exactly_on_its_receptive_field():
    # independent of the graph analysis: the gradient of one feature position reaches the inputs within +-(r-1)/2
    for name in ("cnn", "dilated_cnn"):
        model = build_sequence_model(name, seed=1, padding_mode="zeros").double()
        r = _closed_form_field(model.config.kernel_size, model.config.dilations)
        x = torch.rand(1, channels(), 160, dtype=torch.float64, requires_grad=True)
        centre = 80
        model.features(x)[0, :, centre].sum().backward()
        touched = torch.nonzero(x.grad.abs().sum(dim=1)[0] > 0).flatten().tolist()
        assert touched[0] == centre - (r - 1) // 2 and touched[-1] == centre + (r - 1) // 2, name
        if name == "cnn":  # dense: every position in between
            assert touched == list(range(centre - 5, centre + 6))


def test_parameter_counts_follow_the_layer_formulas():
    c_in, c, h = channels(), 32, 32
    head = c * h + h + h * 2 + 2
    cnn = (c_in * c + c) + 5 * (c * c * 3 + c) + head
    e, mlp = 32, 48
    block = 2 * (2 * e) + 4 * (e * e + e) + (e * mlp + mlp) + (mlp * e + e)  # two LayerNorms, q/k/v/out, MLP
    attention = (c_in * e + e) + 2 * block + 2 * e + head
    assert parameter_counts() == {"cnn": cnn, "dilated_cnn": cnn, "attention": attention}
    assert abs(attention - cnn) / cnn < 0.05  # comparable sizes


def test_layer_stack_transposes_around_attention_and_its_fields_add_up():
    torch.manual_seed(0)
    conv, attn = torch.nn.Conv1d(8, 8, 3, padding=1), MultiheadAttention(8, 2, mask=masks.sliding_window(5))
    x = torch.randn(2, 8, 30)  # (batch, channel, length)
    stack = LayerStack([conv, attn])
    assert torch.equal(stack(x), attn(conv(x).transpose(1, 2)).transpose(1, 2))
    # a conv of kernel 3 then a window of 5 keys: 1 + 2 + 4 positions, as two convs of kernels 3 and 5
    assert receptive_field(stack, spatial_dims=1).output.size == (7,)
    full = LayerStack([conv, MultiheadAttention(8, 2)])
    assert receptive_field(full, spatial_dims=1).output.size == (float("inf"),)


def test_cnn_is_invariant_to_circular_shifts():
    # circular padding + global max pool: where a window sits in the sequence is invisible to the CNNs
    x = long_range_batch([3, 40, 200, 256], seed=0).inputs
    for name in ("cnn", "dilated_cnn"):
        model = build_sequence_model(name, seed=2).eval()
        with torch.no_grad():
            ref = model(x)
            for shift in (1, 17, 160):
                assert torch.allclose(model(x.roll(shift, dims=-1)), ref, atol=1e-5), (name, shift)


def test_attention_is_causal_and_its_patterns_are_rows_of_probabilities():
    model = build_sequence_model("attention", seed=0).eval()
    x = long_range_batch([5, 100], seed=1).inputs[:, :, :64]
    with record(model, ["blocks.*.attn.hook_pattern", "blocks.0.hook_resid_out"]) as trace:
        with torch.no_grad():
            model(x)
    for layer in range(model.config.depth):
        p = trace[f"blocks.{layer}.attn.hook_pattern"]  # (batch, head, query, key)
        assert p.shape == (2, 2, 64, 64)
        assert torch.allclose(p.sum(-1), torch.ones(2, 2, 64), atol=1e-5)
        assert float(p.triu(diagonal=1).abs().max()) == 0.0  # no query sees a later key
    before = trace["blocks.0.hook_resid_out"]
    changed = x.clone()
    changed[:, :, 40:] = torch.roll(changed[:, :, 40:], 1, dims=1)  # change the tokens from position 40 on
    with record(model, "blocks.0.hook_resid_out") as trace2:
        with torch.no_grad():
            model(changed)
    after = trace2["blocks.0.hook_resid_out"]
    assert torch.allclose(after[:, :40], before[:, :40], atol=1e-6)  # earlier outputs do not see the change
    assert not torch.allclose(after[:, 40:], before[:, 40:], atol=1e-3)


def test_sinusoidal_positions_match_the_formula():
    pe = sinusoidal_positions(50, 8)
    for p in (0, 1, 7, 49):
        for i in range(4):
            w = 10000 ** (-2 * i / 8)
            assert float(pe[p, 2 * i]) == pytest.approx(math.sin(p * w), abs=1e-6)
            assert float(pe[p, 2 * i + 1]) == pytest.approx(math.cos(p * w), abs=1e-6)
    model = SequenceAttention()
    assert torch.equal(model.positions, sinusoidal_positions(LENGTH, 32))
    assert "positions" not in model.state_dict()  # rebuilt, not saved


def test_seeded_builds_and_output_shapes():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    for name in SEQUENCE_MODELS:
        a, b = build_sequence_model(name, seed=4), build_sequence_model(name, seed=4)
        for (k, u), (_, v) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(u, v), (name, k)
        c = build_sequence_model(name, seed=5)
        assert not all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), c.state_dict().values()))
        assert a(torch.zeros(3, channels(), 100)).shape == (3, 2)
    assert torch.equal(state, torch.get_rng_state())
    assert isinstance(build_sequence_model("cnn"), SequenceCNN)


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="name"):
        build_sequence_model("rnn")
    with pytest.raises(TypeError, match="seed"):
        build_sequence_model("cnn", seed=1.5)
    with pytest.raises(TypeError, match="unknown option"):
        build_sequence_model("cnn", depth=3)
    with pytest.raises(ValueError, match="kernel_size"):
        build_sequence_model("cnn", kernel_size=4)
    with pytest.raises(ValueError, match="dilations"):
        build_sequence_model("cnn", dilations=(1, 0))
    with pytest.raises(ValueError, match="padding_mode"):
        build_sequence_model("cnn", padding_mode="reflect")
    with pytest.raises(ValueError, match="heads"):
        build_sequence_model("attention", heads=3)
    with pytest.raises(ValueError, match="positions"):
        build_sequence_model("attention", positions="learned")
    model = build_sequence_model("attention")
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.zeros(2, channels() + 1, 10))
    with pytest.raises(ValueError, match="max_length"):
        model(torch.zeros(1, channels(), LENGTH + 1))
    with pytest.raises(TypeError, match="x must be"):
        build_sequence_model("cnn")(torch.zeros(1, channels(), 10, dtype=torch.int64))
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_positions(10, 3)
