"""Fixtures shared by the layer tests."""

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same random state, so failures reproduce."""
    torch.manual_seed(0)


def spy_on(monkeypatch, owner, name: str) -> list[dict]:
    """Replace ``owner.name`` by a wrapper that records each call's keyword arguments, then calls the original."""
    calls: list[dict] = []
    real = getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Records the keyword arguments of every F.scaled_dot_product_attention call."""
    return spy_on(monkeypatch, F, "scaled_dot_product_attention")
