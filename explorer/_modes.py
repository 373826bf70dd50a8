"""Train/eval mode helpers shared by the analyses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["evaluating"]


@contextmanager
def evaluating(model: object) -> Iterator[None]:
    """Run ``model`` in eval mode, restoring every submodule's train/eval flag afterwards (also on error); anything
    that is not an ``nn.Module`` (a plain function) is left alone."""
    if not isinstance(model, nn.Module):
        yield
        return
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag
