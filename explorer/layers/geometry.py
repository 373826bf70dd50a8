"""Sliding-window geometry of conv and pooling layers, the input of receptive-field analysis."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["Geometry"]

_WINDOWED = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
)


def _tuple(value: int | tuple[int, ...], ndim: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * ndim
    return tuple(int(v) for v in value)


@dataclass(frozen=True)
class Geometry:
    """Kernel, stride, padding and dilation of one windowed layer, one entry per spatial dimension.

    ``padding`` is the number of positions added *before* the input along each dimension (what shifts the
    receptive-field box); for ``padding="same"`` that is ``total // 2`` as torch pads (extra one at the end).
    """

    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.kernel_size)

    @property
    def effective_kernel(self) -> tuple[int, ...]:
        """Span of one window: ``dilation * (kernel_size - 1) + 1``."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))

    @classmethod
    def from_module(cls, module: nn.Module) -> "Geometry":
        """Geometry of a torch (or explorer) ``Conv{1,2,3}d``, ``MaxPool{1,2,3}d`` or ``AvgPool{1,2,3}d``."""
        if not isinstance(module, _WINDOWED):
            raise TypeError(f"module must be a conv or pooling layer, got {type(module).__name__}")
        ndim = int(type(module).__name__[-2])
        kernel = _tuple(module.kernel_size, ndim)
        stride = _tuple(module.stride if module.stride is not None else module.kernel_size, ndim)
        dilation = _tuple(getattr(module, "dilation", 1), ndim)
        padding = module.padding
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0,) * ndim
            else:  # "same": torch pads total = d*(k-1), left = total // 2
                padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        return cls(kernel, stride, _tuple(padding, ndim), dilation)
