"""Memory guard: refusals name the need and the budget, never allocate, and the budget is configurable."""

from __future__ import annotations

import pytest
import torch

from explorer.analysis import cost
from explorer.guard import ENV_BUDGET, RequestRefused, check, human_bytes, memory_budget

GiB = 1024**3


def forbid_allocation(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the guard must not allocate tensors")

    for name in ("empty", "zeros", "ones", "randn", "rand", "full", "tensor", "arange"):
        monkeypatch.setattr(torch, name, refuse)


def test_attention_math_refused_without_allocating(monkeypatch):
    forbid_allocation(monkeypatch)
    budget = 11_500_000_000
    with pytest.raises(RequestRefused) as err:
        check("attention_math", 65536, budget=budget)
    message = str(err.value)
    # q, k, v, out 4 * 65536 * 64 + S, P 2 * 65536^2 floats = 8,623,489,024 * 4 bytes = 34.4 GB
    assert "34.4 GB" in message and "budget 11.5 GB" in message
    assert "attention_fused" in message and "n=65536" in message
    assert isinstance(err.value, ValueError)


def test_attention_fused_accepted(monkeypatch):
    forbid_allocation(monkeypatch)
    c = check("attention_fused", 65536, budget=16 * GiB)
    assert c == cost("attention_fused", 65536)
    assert c.peak_memory < 16 * GiB


def test_kwargs_are_passed_to_cost():
    c = check("attention_math", 64, budget=10**9, heads=2, batch=3, dtype=torch.float16)
    assert c == cost("attention_math", 64, heads=2, batch=3, dtype=torch.float16)
    with pytest.raises(RequestRefused, match="smaller n or batch"):
        check("conv2d", 1024, budget=10**6, d=64)


def test_exactly_at_budget_is_accepted():
    need = int(cost("attention_math", 128).peak_memory)
    check("attention_math", 128, budget=need)
    with pytest.raises(RequestRefused):
        check("attention_math", 128, budget=need - 1)


def test_env_override(monkeypatch):
    monkeypatch.setenv(ENV_BUDGET, "12345")
    assert memory_budget() == 12345
    assert memory_budget(0.1) == 12345  # the override replaces the RAM-based budget
    with pytest.raises(RequestRefused, match="budget 12.3 kB"):
        check("attention_math", 64)
    monkeypatch.setenv(ENV_BUDGET, "lots")
    with pytest.raises(ValueError, match=ENV_BUDGET):
        memory_budget()
    monkeypatch.setenv(ENV_BUDGET, "0")
    with pytest.raises(ValueError, match=ENV_BUDGET):
        memory_budget()


def test_budget_is_a_fraction_of_available_ram(monkeypatch):
    monkeypatch.delenv(ENV_BUDGET, raising=False)
    full, half = memory_budget(1.0), memory_budget(0.5)
    assert full > 0 and isinstance(half, int)
    assert half == pytest.approx(full / 2, rel=0.1)  # tolerance: available RAM moves between the two reads


@pytest.mark.parametrize("fraction,error", [(0, ValueError), (-0.5, ValueError), (1.5, ValueError),
                                            ("half", TypeError), (True, TypeError)])
def test_budget_fraction_validation(monkeypatch, fraction, error):
    monkeypatch.delenv(ENV_BUDGET, raising=False)
    with pytest.raises(error, match="fraction"):
        memory_budget(fraction)


def test_check_budget_validation():
    with pytest.raises(ValueError, match="budget"):
        check("conv1d", 16, budget=0)
    with pytest.raises(TypeError, match="budget"):
        check("conv1d", 16, budget=1.5e9)


@pytest.mark.parametrize(
    "x,text",
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (1536, "1.5 kB"),
        (2.5e6, "2.5 MB"),
        (17_179_869_184, "17.2 GB"),  # one float32 65536 x 65536 matrix
        (999_960, "1.0 MB"),  # rounds up into the next unit rather than printing "1000.0 kB"
        (3e15, "3.0 PB"),
    ],
)
def test_human_bytes(x, text):
    assert human_bytes(x) == text


def test_human_bytes_rejects_negative():
    with pytest.raises(ValueError):
        human_bytes(-1)
