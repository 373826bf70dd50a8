"""intervene(): hook points that write -- replacement, composition with record() and itself, routing to the math
path, clear errors, nothing attached afterwards and the model unchanged after every failed call."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer import HookPoint, hook_points, intervene, record
from explorer.layers import Conv1d, LinearAttention, MultiheadAttention
from tests.test_hooks import EMBED, HEADS, Model, assert_nothing_attached


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor], x: torch.Tensor, out: torch.Tensor) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(after[key], before[key], atol=0.0, rtol=0.0)  # parameters bit-identical
    torch.testing.assert_close(model(x), out, atol=0.0, rtol=0.0)  # outputs bit-identical
    assert_nothing_attached(model)


def manual_head_ablation(attn: MultiheadAttention, x: torch.Tensor, head: int) -> torch.Tensor:
    """The attention layer's output with one head's z zeroed, written out with torch ops (the reference)."""
    batch, length, _ = x.shape
    split = lambda t: t.view(batch, length, HEADS, -1).transpose(1, 2)  # (batch, head, query, head_dim)
    q, k, v = (split(F.linear(x, p.weight, p.bias)) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    z = F.scaled_dot_product_attention(q, k, v)  # (batch, head, query, head_dim)
    z[:, head] = 0
    return attn.out_proj(z.transpose(1, 2).reshape(batch, length, EMBED))


def test_zeroing_a_head_on_hook_z_matches_a_hand_written_ablation():
    attn = MultiheadAttention(EMBED, HEADS)
    x = torch.randn(2, 5, EMBED)

    def zero_head_1(z, hook):
        z = z.clone()
        z[:, 1] = 0
        return z

    with intervene(attn, {"hook_z": zero_head_1}):
        edited = attn(x)
    torch.testing.assert_close(edited, manual_head_ablation(attn, x, 1), atol=1e-6, rtol=1e-5)  # fp32
    assert not torch.allclose(edited, attn(x))  # the edit changed something; and it is gone afterwards
    assert_nothing_attached(attn)


def test_none_leaves_the_activation_and_fn_sees_the_hook():
    model = Model()
    x = torch.randn(1, 4, EMBED)
    seen = []
    with intervene(model, {"*.hook_z": lambda z, hook: seen.append((hook.name, hook.dims)) or None}):
        out = model(x)
    torch.testing.assert_close(out, model(x), atol=0.0, rtol=0.0)
    assert seen == [("blocks.0.attn.hook_z", ("batch", "head", "query", "head_dim")),
                    ("blocks.1.attn.hook_z", ("batch", "head", "query", "head_dim"))]


def test_conv_channels_are_the_channel_axis():
    conv = Conv1d(2, 3, 3)
    x = torch.randn(2, 2, 7)
    with intervene(conv, {"hook_out": lambda y, hook: y * torch.tensor([1.0, 0.0, 2.0]).view(1, 3, 1)}):
        edited = conv(x)
    reference = F.conv1d(x, conv.weight, conv.bias) * torch.tensor([1.0, 0.0, 2.0]).view(1, 3, 1)
    torch.testing.assert_close(edited, reference, atol=1e-6, rtol=1e-5)  # fp32
    assert conv.hook_out.dims.index("channel") == 1


def test_record_sees_the_edited_tensor_whatever_the_nesting():
    model = Model()
    x = torch.randn(1, 4, EMBED)
    double = lambda z, hook: 2 * z
    with record(model, "blocks.0.attn.hook_z") as outer:
        with intervene(model, {"blocks.0.attn.hook_z": double}):
            with record(model, "blocks.0.attn.hook_z") as inner:
                model(x)
    with record(model, "blocks.0.attn.hook_z") as clean:
        model(x)
    torch.testing.assert_close(outer["blocks.0.attn.hook_z"], 2 * clean["blocks.0.attn.hook_z"], atol=0, rtol=0)
    torch.testing.assert_close(inner["blocks.0.attn.hook_z"], 2 * clean["blocks.0.attn.hook_z"], atol=0, rtol=0)
    assert_nothing_attached(model)


def test_nested_interventions_compose_in_order():
    attn = MultiheadAttention(EMBED, HEADS)
    x = torch.randn(1, 3, EMBED)
    with record(attn, "hook_z") as clean:
        attn(x)
    with intervene(attn, {"hook_z": lambda z, h: z + 1}):
        with intervene(attn, [("hook_z", lambda z, h: 3 * z)]):
            with record(attn, "hook_z") as both:
                attn(x)
        with record(attn, "hook_z") as outer_only:
            attn(x)
    z = clean["hook_z"]
    torch.testing.assert_close(both["hook_z"], 3 * (z + 1), atol=1e-6, rtol=1e-6)  # outer edit first
    torch.testing.assert_close(outer_only["hook_z"], z + 1, atol=0, rtol=0)
    assert_nothing_attached(attn)


def test_pattern_edits_route_auto_to_the_math_path_and_sdpa_refuses():
    auto = MultiheadAttention(EMBED, HEADS, backend="auto")
    x = torch.randn(1, 4, EMBED)
    uniform = lambda p, h: torch.full_like(p, 1.0 / p.shape[-1])
    with intervene(auto, {"hook_pattern": uniform}):
        edited = auto(x)
    v = F.linear(x, auto.v_proj.weight, auto.v_proj.bias)  # uniform attention = mean of the values
    expected = auto.out_proj(v.mean(dim=1, keepdim=True).expand_as(v))
    torch.testing.assert_close(edited, expected, atol=1e-6, rtol=1e-5)  # fp32
    sdpa = MultiheadAttention(EMBED, HEADS, backend="sdpa")
    with pytest.raises(RuntimeError, match="recorded or edited"):
        with intervene(sdpa, {"hook_pattern": uniform}):
            sdpa(x)
    assert_nothing_attached(sdpa)


def test_linear_attention_refuses_an_edit_it_would_ignore():
    layer = LinearAttention(EMBED, HEADS)
    with pytest.raises(RuntimeError, match="never multiplies by its pattern"):
        with intervene(layer, {"hook_pattern": lambda p, h: p * 0}):
            layer(torch.randn(1, 4, EMBED))
    assert_nothing_attached(layer)


# --- bad input: clear errors, nothing attached, the model unchanged ----------------------------------------------


def test_unknown_name_lists_the_nearest():
    model = Model()
    before, x = state(model), torch.randn(1, 4, EMBED)
    out = model(x)
    with pytest.raises(ValueError, match=r"'blocks.0.attn.hook_zz' matches no hook point.*blocks.0.attn.hook_z"):
        with intervene(model, {"blocks.0.attn.hook_zz": lambda z, h: z}):
            pass
    with pytest.raises(ValueError, match="matches no hook point"):
        with intervene(model, {"blocks.0.attn.hook_z": lambda z, h: z, "nothing.*": lambda z, h: z}):
            pass  # the first name matched, and is not left attached either
    assert_unchanged(model, before, x, out)


@pytest.mark.parametrize("replacement, message", [
    (lambda z: z[:, :1], r"returned shape \(1, 1, 4, 4\).*activation there is shape \(1, 2, 4, 4\)"),
    (lambda z: z.double(), r"torch.float64.*torch.float32"),
    (lambda z: z.to("meta"), r"on meta.*on cpu"),
    (lambda z: z.tolist(), r"must return a Tensor or None, got list"),
])
def test_wrong_replacement_names_hook_and_shapes(replacement, message):
    model = Model()
    before, x = state(model), torch.randn(1, 4, EMBED)
    out = model(x)
    with pytest.raises((ValueError, TypeError), match=message) as info:
        with intervene(model, {"blocks.1.attn.hook_z": lambda z, h: replacement(z)}):
            model(x)
    assert "blocks.1.attn.hook_z" in str(info.value)
    assert_unchanged(model, before, x, out)


def test_an_edit_that_raises_is_reraised_with_the_hook_name():
    model = Model()
    before, x = state(model), torch.randn(1, 4, EMBED)
    out = model(x)

    def broken(z, hook):
        raise KeyError("no such head")

    with pytest.raises(KeyError, match="no such head") as info:
        with intervene(model, {"blocks.0.attn.hook_z": lambda z, h: 2 * z, "blocks.1.attn.hook_z": broken}):
            model(x)
    assert any("blocks.1.attn.hook_z" in note for note in info.value.__notes__)
    assert_unchanged(model, before, x, out)


def test_bad_edits_argument():
    model = Model()
    with pytest.raises(ValueError, match="edits is empty"):
        with intervene(model, {}):
            pass
    with pytest.raises(TypeError, match="edits must be a mapping"):
        with intervene(model, 3):
            pass
    with pytest.raises(TypeError, match=r"every entry must be \(name_or_glob: str, fn: callable\)"):
        with intervene(model, {"blocks.0.attn.hook_z": "zero"}):
            pass
    assert_nothing_attached(model)


def test_an_idle_hook_point_stays_one_truth_test():
    hp = HookPoint(("batch",))
    x = torch.zeros(1)
    assert hp(x) is x and hp._hooks == [] and not hp.active and not hp.edited
    model = copy.deepcopy(Model())
    with intervene(model, {"*.hook_z": lambda z, h: None}):
        assert all(p.edited for n, p in hook_points(model).items() if n.endswith("hook_z"))
    assert not any(p.active for p in hook_points(model).values())
