"""record() and HookPoint: name selection, module-path names, trace contents, and that nothing stays attached."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as torch_module

from explorer import HookPoint, hook_points, record
from explorer.layers import Conv1d, MaxPool1d, MultiheadAttention

EMBED, HEADS = 8, 2


class Block(nn.Module):
    """Attention then a conv over the sequence, both residual."""

    def __init__(self, backend: str = "math") -> None:
        super().__init__()
        self.attn = MultiheadAttention(EMBED, HEADS, backend=backend)
        self.conv = Conv1d(EMBED, EMBED, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)  # (batch, query, embed)
        return x + self.conv(x.transpose(1, 2)).transpose(1, 2)


class Model(nn.Module):
    def __init__(self, backend: str = "math") -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(backend), Block(backend)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class Raises(nn.Module):
    """Runs a conv (so a hook fires) and then fails."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = Conv1d(2, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.conv(x)
        raise RuntimeError("boom")


def reference_pattern(attn: MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim)) from the layer's weights, [batch, head, query, key]."""
    batch, length, _ = x.shape
    q = F.linear(x, attn.q_proj.weight, attn.q_proj.bias).view(batch, length, HEADS, -1).transpose(1, 2)
    k = F.linear(x, attn.k_proj.weight, attn.k_proj.bias).view(batch, length, HEADS, -1).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(EMBED // HEADS), dim=-1)


def assert_nothing_attached(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, HookPoint):
            assert module._hooks == [], module.name
            assert not module.active
        assert not module._forward_hooks and not module._forward_pre_hooks, type(module).__name__
        assert not module._backward_hooks and not module._backward_pre_hooks, type(module).__name__
    assert not torch_module._global_forward_hooks and not torch_module._global_forward_pre_hooks


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- names ---------------------------------------------------------------------------------------------------

def test_names_are_module_paths():
    sequential = nn.Sequential(Conv1d(2, 4, 3), MaxPool1d(2))
    assert sorted(hook_points(sequential)) == ["0.hook_in", "0.hook_out", "1.hook_in", "1.hook_out"]
    names = hook_points(Model())
    assert "blocks.1.attn.hook_pattern" in names and "blocks.0.conv.hook_out" in names
    assert all(hp.name == path for path, hp in names.items())


def test_names_follow_the_model_being_recorded():
    conv = Conv1d(2, 2, 3)
    nested = nn.ModuleDict({"stem": nn.Sequential(nn.Identity(), conv)})
    with record(nested, "stem.1.hook_out") as trace:
        nested["stem"](torch.randn(1, 2, 6))
    assert trace.keys() == ["stem.1.hook_out"]
    with record(conv, "hook_out") as trace:
        conv(torch.randn(1, 2, 6))
    assert trace.keys() == ["hook_out"]


def test_record_exact_name():
    model = nn.Sequential(Conv1d(2, 4, 3), MaxPool1d(2))
    x = torch.randn(2, 2, 10)
    with record(model, "0.hook_out") as trace:
        model(x)
    assert trace.keys() == ["0.hook_out"]
    expected = F.conv1d(x, model[0].weight, model[0].bias)
    torch.testing.assert_close(trace["0.hook_out"], expected, atol=1e-5, rtol=1e-5)  # fp32


def test_record_glob():
    model = Model()
    x = torch.randn(2, 5, EMBED)
    with record(model, "*.hook_pattern") as trace:
        model(x)
    assert sorted(trace.keys()) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    expected = reference_pattern(model.blocks[0].attn, x)
    torch.testing.assert_close(trace["blocks.0.attn.hook_pattern"], expected, atol=1e-6, rtol=1e-5)  # fp32


def test_record_list_of_names_and_globs():
    model = Model()
    with record(model, ["blocks.0.attn.hook_q", "blocks.1.*.hook_out"]) as trace:
        model(torch.randn(1, 4, EMBED))
    assert sorted(trace.keys()) == ["blocks.0.attn.hook_q", "blocks.1.attn.hook_out", "blocks.1.conv.hook_out"]


def test_record_callable():
    model = Model()
    x = torch.randn(1, 4, EMBED)
    with record(model, lambda name: name.startswith("blocks.1.") and name.endswith("hook_in")) as trace:
        out = model(x)
    assert trace.keys() == ["blocks.1.conv.hook_in"]
    assert trace["blocks.1.conv.hook_in"].shape == (1, EMBED, 4)
    conv = model.blocks[1].conv
    conv_in = trace["blocks.1.conv.hook_in"]
    expected_out = conv_in.transpose(1, 2) + F.conv1d(conv_in, conv.weight, conv.bias, padding=1).transpose(1, 2)
    torch.testing.assert_close(out, expected_out, atol=1e-5, rtol=1e-5)  # fp32


def test_record_all():
    model = Model()
    with record(model) as trace:
        model(torch.randn(1, 4, EMBED))
    assert set(trace.keys()) == set(hook_points(model))


# --- trace contents ------------------------------------------------------------------------------------------

def test_detach_default_and_detach_false():
    conv = Conv1d(2, 2, 3)
    x = torch.randn(1, 2, 6, requires_grad=True)
    with record(conv, "hook_out") as trace:
        conv(x)
    assert not trace["hook_out"].requires_grad and trace["hook_out"].grad_fn is None
    with record(conv, "hook_out", detach=False) as trace:
        conv(x)
    (grad,) = torch.autograd.grad(trace["hook_out"].sum(), x)
    expected = F.conv_transpose1d(torch.ones(1, 2, 4), conv.weight)  # d(sum of conv)/dx
    torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-5)  # fp32


def test_device_moves_recorded_tensors():
    conv = Conv1d(2, 2, 3)
    x = torch.randn(1, 2, 6)
    with record(conv, device="meta") as trace:
        out = conv(x)
    assert trace["hook_out"].device == torch.device("meta")
    assert trace["hook_out"].shape == out.shape
    with record(conv, device=torch.device("cpu")) as trace:
        conv(x)
    torch.testing.assert_close(trace["hook_out"], out, atol=0.0, rtol=0.0)  # same computation


def test_dims_and_describe():
    model = nn.Sequential(Conv1d(2, 4, 3), MultiheadAttention(EMBED, HEADS))
    with record(model, ["0.hook_out", "1.hook_pattern"]) as trace:
        model[0](torch.randn(2, 2, 10))
        model[1](torch.randn(2, 5, EMBED))
    assert trace.dims("0.hook_out") == ("batch", "channel", "length")
    assert trace.dims("1.hook_pattern") == ("batch", "head", "query", "key")
    assert trace.dims("1.hook_q") == ("batch", "head", "query", "head_dim")  # known even though not recorded
    assert trace.describe().splitlines() == [
        "0.hook_out  [batch, channel, length]  (2, 4, 8)",
        "1.hook_pattern  [batch, head, query, key]  (2, 2, 5, 5)",
    ]
    with pytest.raises(KeyError, match="was not recorded"):
        trace["1.hook_q"]
    with pytest.raises(KeyError, match="not a hook point"):
        trace.dims("nope")


def test_history_of_a_module_called_twice():
    conv = Conv1d(3, 3, 3, padding=1)
    model = nn.Sequential(conv, conv)  # one module, one name
    x = torch.randn(1, 3, 7)
    with record(model, "0.hook_out") as trace:
        model(x)
    first = F.conv1d(x, conv.weight, conv.bias, padding=1)
    second = F.conv1d(first, conv.weight, conv.bias, padding=1)
    history = trace.history("0.hook_out")
    assert len(history) == 2
    torch.testing.assert_close(history[0], first, atol=1e-5, rtol=1e-5)  # fp32
    torch.testing.assert_close(history[1], second, atol=1e-5, rtol=1e-5)  # fp32
    torch.testing.assert_close(trace["0.hook_out"], second, atol=0.0, rtol=0.0)  # last call


def test_recording_does_not_change_outputs():
    x = torch.randn(2, 6, EMBED)
    model = Model(backend="math")
    reference = model(x)
    with record(model):
        recorded = model(x)
    torch.testing.assert_close(recorded, reference, atol=0.0, rtol=0.0)  # same path, same numbers

    model_auto = Model(backend="auto")
    model_auto.load_state_dict(model.state_dict())
    with record(model_auto):
        recorded_auto = model_auto(x)  # math path while patterns are recorded
    torch.testing.assert_close(recorded_auto, model_auto(x), atol=1e-5, rtol=1e-5)  # fp32, math vs sdpa


def test_nested_records_both_capture():
    model = nn.Sequential(Conv1d(2, 2, 3))
    x = torch.randn(1, 2, 6)
    with record(model) as outer:
        with record(model, "0.hook_out") as inner:
            model(x)
        assert model[0].hook_out.active  # the outer context still records
        model(x)
    assert len(inner.history("0.hook_out")) == 1
    assert len(outer.history("0.hook_out")) == 2
    torch.testing.assert_close(inner["0.hook_out"], outer["0.hook_out"], atol=0.0, rtol=0.0)  # same input
    assert_nothing_attached(model)


# --- nothing stays attached ----------------------------------------------------------------------------------

def test_nothing_attached_after_success():
    model = Model()
    with record(model) as trace:
        assert all(hp.active for hp in hook_points(model).values())
        model(torch.randn(1, 4, EMBED))
    assert len(trace) == len(hook_points(model))
    assert_nothing_attached(model)


def test_nothing_attached_when_forward_raises():
    model = nn.Sequential(Raises())
    with pytest.raises(RuntimeError, match="boom"):
        with record(model) as trace:
            model(torch.randn(1, 2, 6))
    assert "0.conv.hook_out" in trace  # recorded before the failure
    assert_nothing_attached(model)


def test_nothing_attached_when_a_layer_rejects_its_input():
    model = Model()
    with pytest.raises(ValueError, match="query must have shape"):
        with record(model, "*.hook_pattern"):
            model(torch.randn(1, 4, EMBED + 1))
    assert_nothing_attached(model)


def test_nothing_attached_after_bad_arguments():
    model = Model()
    with pytest.raises(ValueError, match="matches no hook point"):
        with record(model, "blocks.7.*"):
            pass
    with pytest.raises(TypeError, match="names must be"):
        with record(model, 3):
            pass
    with pytest.raises(TypeError, match="every item"):
        with record(model, ["blocks.0.attn.hook_q", 3]):
            pass
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        with record("model"):
            pass
    assert_nothing_attached(model)


def test_hook_point_is_identity_and_checks_dims():
    hp = HookPoint(("batch", "embed"))
    x = torch.randn(2, 3)
    assert hp(x) is x
    assert not hp.active
    with pytest.raises(TypeError, match="dims must be a tuple of str"):
        HookPoint(["batch"])
