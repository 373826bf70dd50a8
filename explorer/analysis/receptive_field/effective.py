"""The effective receptive field (Luo et al., NeurIPS 2016): :func:`effective_receptive_field`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from explorer._checks import check_tensor, check_type
from explorer.analysis.receptive_field.results import EffectiveRF, ZeroGradient, _int_tuple


# ----------------------------------------------------------------------------------------------------------------
# Effective receptive field
# ----------------------------------------------------------------------------------------------------------------


def _check_position(position: Sequence[int] | None, out_size: tuple[int, ...]) -> tuple[int, ...]:
    if position is None:
        return tuple(s // 2 for s in out_size)
    pos = _int_tuple(position)
    if pos is None or len(pos) != len(out_size) or not all(0 <= p < s for p, s in zip(pos, out_size)):
        raise ValueError(
            f"position must hold one int per spatial dim with 0 <= position[d] < {list(out_size)} "
            f"(the output's spatial size), got {position!r}"
        )
    return pos


def _check_mass(mass: Sequence[float]) -> tuple[float, ...]:
    try:
        masses = tuple(float(q) for q in mass)
    except (TypeError, ValueError):
        raise ValueError(f"mass must be a sequence of floats in (0, 1], got {mass!r}") from None
    if not all(0.0 < q <= 1.0 for q in masses):
        raise ValueError(f"mass must be a sequence of floats in (0, 1], got {mass!r}")
    return masses


def effective_receptive_field(
    model: nn.Module,
    x: torch.Tensor,
    position: Sequence[int] | None = None,
    channel: int | None = None,
    mass: Sequence[float] = (0.5, 0.95),
) -> EffectiveRF:
    """Effective receptive field: the input gradient of one output position (Luo et al., NeurIPS 2016).

    Back-propagates a one-hot gradient at ``y[:, channel, *position]`` (every batch element; all channels summed
    when ``channel`` is None) to a copy of ``x`` with ``torch.autograd.grad``, so no parameter ``.grad`` is
    touched. The model runs in eval mode (dropout off, batch-norm running statistics); the train/eval flag of every
    submodule is restored afterwards. https://arxiv.org/abs/1701.04128

    Args:
        model: maps ``[batch, channel, *spatial]`` to ``[batch, channel', *spatial']``.
        x: input ``[batch, channel, *spatial]`` with 1 to 3 spatial dims, floating point. Luo et al. average over
            random inputs: pass a batch of them.
        position: output index per spatial dim; default: the centre ``size // 2`` of the output.
        channel: output channel to back-propagate; default: all channels summed.
        mass: shares of the gradient mass whose square radius to report, each in (0, 1].

    Returns:
        An :class:`EffectiveRF`: the normalised map ``|dy/dx|`` ``[*spatial]`` (float64, CPU), its centre of mass
        and standard deviation per dim, and ``radius[q]`` for each ``q`` in ``mass``.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module`` or ``x`` not a floating-point tensor.
        ValueError: bad ``x`` shape, ``position``, ``channel`` or ``mass``; the output is not
            ``[batch, channel, *spatial]`` like ``x``; the gradient is zero everywhere (:class:`ZeroGradient`, a
            ValueError).
    """
    check_type("model", model, nn.Module, "an nn.Module")
    check_tensor("x", x, "[batch, channel, *spatial]", dtype="float")
    if not 3 <= x.ndim <= 5:
        raise ValueError(f"x must be [batch, channel, *spatial] with 1 to 3 spatial dims, got shape {tuple(x.shape)}")
    masses = _check_mass(mass)

    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        inp = x.detach().clone().requires_grad_(True)  # [batch, channel, *spatial]
        with torch.enable_grad():
            y = model(inp)  # [batch, channel', *spatial']
            if not isinstance(y, torch.Tensor) or y.ndim != x.ndim:
                shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                raise ValueError(f"model output must be [batch, channel, *spatial] like x ({x.ndim}-D), got {shape}")
            pos = _check_position(position, tuple(y.shape[2:]))
            if channel is not None and (
                isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < y.shape[1]
            ):
                raise ValueError(f"channel must be None or an int in [0, {y.shape[1]}), got {channel!r}")
            picked = y[(slice(None), slice(None) if channel is None else channel, *pos)]  # [batch(, channel')]
            if not picked.requires_grad:
                raise ValueError("effective_receptive_field: the model's output does not depend on x")
            (grad,) = torch.autograd.grad(picked.sum(), inp, allow_unused=True)
    finally:
        for module, flag in flags:
            module.training = flag
    if grad is None:
        raise ValueError("effective_receptive_field: the model's output does not depend on x")

    gmap = grad.detach().abs().sum(dim=(0, 1)).to(device="cpu", dtype=torch.float64)  # [*spatial]
    total = gmap.sum()
    if not total > 0:
        raise ZeroGradient(
            f"effective_receptive_field: the gradient at position {pos} is zero everywhere "
            f"(e.g. dead ReLUs for this input); try another input or position"
        )
    prob = gmap / total  # [*spatial], sums to 1

    centre, std = [], []
    for d, n in enumerate(prob.shape):
        others = tuple(i for i in range(prob.ndim) if i != d)
        marginal = prob.sum(dim=others) if others else prob  # [n]; sum(dim=()) would reduce everything
        coords = torch.arange(n, dtype=torch.float64)
        mean = float((marginal * coords).sum())
        centre.append(mean)
        std.append(math.sqrt(float((marginal * (coords - mean) ** 2).sum())))

    anchor = [min(max(math.floor(c + 0.5), 0), n - 1) for c, n in zip(centre, prob.shape)]
    grids = torch.meshgrid(*(torch.arange(n) for n in prob.shape), indexing="ij")
    chebyshev = torch.stack([(g - a).abs() for g, a in zip(grids, anchor)]).amax(dim=0)  # [*spatial]
    per_ring = torch.bincount(chebyshev.flatten(), weights=prob.flatten())  # mass at each Chebyshev distance
    inside = torch.cumsum(per_ring, dim=0)  # mass inside the square of radius r
    last = len(inside) - 1
    radius = {
        q: float(min(int(torch.searchsorted(inside, torch.tensor(q - 1e-9, dtype=torch.float64))), last))
        for q in masses
    }
    return EffectiveRF(prob, pos, tuple(centre), tuple(std), radius)
