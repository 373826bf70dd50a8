"""Instrumented convolution and pooling layers.

Each class subclasses its torch counterpart (same constructor arguments, same parameters, same numerics, so a
``state_dict`` moves between them) and adds:

* ``hook_in`` / ``hook_out``: :class:`~explorer.hooks.HookPoint` s on the input and output,
  ``[batch, channel, length]`` (1d) or ``[batch, channel, height, width]`` (2d);
* ``geometry``: the layer's :class:`~explorer.layers.geometry.Geometry` (kernel, stride, padding, dilation), the
  input of the receptive-field analysis;
* argument checks in ``__init__`` and ``forward`` that name the argument and the accepted range.

Inputs must be batched (torch also accepts an unbatched ``[channel, *spatial]`` tensor; we do not, so that the
hook points' dimension names always hold).
"""

from __future__ import annotations

import torch
from torch import nn

from explorer._checks import check_bool, check_choice, check_floating, check_int, check_int_tuple
from explorer.hooks import HookPoint
from explorer.layers.geometry import Geometry

__all__ = ["Conv1d", "Conv2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d"]

_SPATIAL = {1: ("length",), 2: ("height", "width")}
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


# --- shared behaviour -------------------------------------------------------------------------------------------


class _Instrumented:
    """Mixin placed before the torch class: hook points, geometry and checked forward."""

    _ndim: int  # number of spatial dimensions

    def _add_hook_points(self) -> None:
        dims = ("batch", "channel", *_SPATIAL[self._ndim])
        self.hook_in = HookPoint(dims)  # (batch, channel, *spatial)
        self.hook_out = HookPoint(dims)  # (batch, channel, *spatial_out)

    @property
    def geometry(self) -> Geometry:
        """Kernel, stride, padding and dilation of this layer (read from the current attributes)."""
        return Geometry.from_module(self)  # type: ignore[arg-type]

    def _expected_shape(self) -> str:
        return "(" + ", ".join(("batch", "channel", *_SPATIAL[self._ndim])) + ")"

    def _check_input(self, input: object) -> torch.Tensor:
        if isinstance(input, torch.fx.Proxy):  # symbolic tracing (receptive-field analysis): no values to check
            return input  # type: ignore[return-value]
        weight = getattr(self, "weight", None)
        input = check_floating("input", input, weight.dtype if weight is not None else None)
        if input.ndim != self._ndim + 2:
            raise ValueError(
                f"input must have shape {self._expected_shape()} ({self._ndim + 2} dims), "
                f"got {input.ndim} dims: {tuple(input.shape)}"
            )
        in_channels = getattr(self, "in_channels", None)
        if in_channels is not None and input.shape[1] != in_channels:
            raise ValueError(
                f"input must have shape {self._expected_shape()} with channel={in_channels}, "
                f"got {tuple(input.shape)}"
            )
        return input

    def _check_input_size(self, input: torch.Tensor) -> None:
        """ValueError if one window does not fit in the padded input (run only after torch refused it)."""
        if getattr(self, "padding", None) == "same":  # the output keeps the input size; any size >= 1 works
            return
        geometry = self.geometry
        for size, pad, span in zip(input.shape[2:], geometry.padding, geometry.effective_kernel):
            if size + 2 * pad < span:
                raise ValueError(
                    f"input is too small: spatial size {tuple(input.shape[2:])} plus padding {geometry.padding} "
                    f"on each side is shorter than the window span {geometry.effective_kernel}"
                )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Torch's forward between ``hook_in`` and ``hook_out``.

        Args:
            input: ``[batch, channel, length]`` (1d) or ``[batch, channel, height, width]`` (2d).

        Returns:
            The torch layer's output (for ``MaxPool(return_indices=True)``: ``(output, indices)``, with only the
            output passing through ``hook_out``).
        """
        x = self.hook_in(self._check_input(input))  # (batch, channel, *spatial)
        try:
            y = super().forward(x)  # type: ignore[misc]
        except RuntimeError:
            self._check_input_size(x)  # a clearer error than torch's when the window does not fit
            raise
        if isinstance(y, tuple):  # MaxPool with return_indices=True
            return self.hook_out(y[0]), y[1]
        return self.hook_out(y)  # (batch, channel, *spatial_out)


def _check_conv_args(
    ndim: int,
    in_channels: object,
    out_channels: object,
    kernel_size: object,
    stride: object,
    padding: object,
    dilation: object,
    groups: object,
    bias: object,
    padding_mode: object,
) -> None:
    check_int("in_channels", in_channels, 1)
    check_int("out_channels", out_channels, 1)
    check_int_tuple("kernel_size", kernel_size, ndim, 1)
    strides = check_int_tuple("stride", stride, ndim, 1)
    check_int_tuple("dilation", dilation, ndim, 1)
    check_int("groups", groups, 1)
    if in_channels % groups:  # type: ignore[operator]
        raise ValueError(f"in_channels ({in_channels}) must be divisible by groups ({groups})")
    if out_channels % groups:  # type: ignore[operator]
        raise ValueError(f"out_channels ({out_channels}) must be divisible by groups ({groups})")
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same', 'valid', an int >= 0 or a tuple of {ndim} such ints, "
                             f"got {padding!r}")
        if padding == "same" and any(s != 1 for s in strides):
            raise ValueError(f"padding='same' needs stride=1 (the output could not keep the input size), "
                             f"got stride={stride!r}")
    else:
        check_int_tuple("padding", padding, ndim, 0)
    check_bool("bias", bias)
    check_choice("padding_mode", padding_mode, _PADDING_MODES)


def _check_pool_args(
    ndim: int, kernel_size: object, stride: object, padding: object, dilation: object, max_pool: bool
) -> None:
    kernel = check_int_tuple("kernel_size", kernel_size, ndim, 1)
    if stride is not None:
        check_int_tuple("stride", stride, ndim, 1)
    pads = check_int_tuple("padding", padding, ndim, 0)
    dilations = check_int_tuple("dilation", dilation, ndim, 1)
    # torch pools pad with -inf (max) or zeros (avg); a window made only of padding is refused, at forward time.
    for pad, k, d in zip(pads, kernel, dilations):
        span = d * (k - 1) + 1 if max_pool else k
        if 2 * pad > span:
            what = "the effective kernel size dilation * (kernel_size - 1) + 1" if max_pool else "kernel_size"
            raise ValueError(f"padding must be at most half of {what}, got padding={padding!r}, "
                             f"kernel_size={kernel_size!r}" + (f", dilation={dilation!r}" if max_pool else ""))


# --- convolutions -----------------------------------------------------------------------------------------------


class Conv1d(_Instrumented, nn.Conv1d):
    """``torch.nn.Conv1d`` with ``hook_in`` / ``hook_out`` ``[batch, channel, length]`` and ``geometry``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device,
        dtype: as ``torch.nn.Conv1d``; checked here (ValueError / TypeError naming the argument).
    """

    _ndim = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] = 1,
        padding: str | int | tuple[int] = 0,
        dilation: int | tuple[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        _check_conv_args(1, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)
        self._add_hook_points()


class Conv2d(_Instrumented, nn.Conv2d):
    """``torch.nn.Conv2d`` with ``hook_in`` / ``hook_out`` ``[batch, channel, height, width]`` and ``geometry``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device,
        dtype: as ``torch.nn.Conv2d``; checked here (ValueError / TypeError naming the argument).
    """

    _ndim = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        _check_conv_args(2, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)
        self._add_hook_points()


# --- pooling ----------------------------------------------------------------------------------------------------


class MaxPool1d(_Instrumented, nn.MaxPool1d):
    """``torch.nn.MaxPool1d`` with ``hook_in`` / ``hook_out`` ``[batch, channel, length]`` and ``geometry``.

    Args:
        kernel_size, stride, padding, dilation, return_indices, ceil_mode: as ``torch.nn.MaxPool1d``
            (``stride=None`` means ``kernel_size``).
    """

    _ndim = 1

    def __init__(
        self,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] | None = None,
        padding: int | tuple[int] = 0,
        dilation: int | tuple[int] = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        _check_pool_args(1, kernel_size, stride, padding, dilation, max_pool=True)
        check_bool("return_indices", return_indices)
        check_bool("ceil_mode", ceil_mode)
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        self._add_hook_points()


class MaxPool2d(_Instrumented, nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` with ``hook_in`` / ``hook_out`` ``[batch, channel, height, width]`` and ``geometry``.

    Args:
        kernel_size, stride, padding, dilation, return_indices, ceil_mode: as ``torch.nn.MaxPool2d``
            (``stride=None`` means ``kernel_size``).
    """

    _ndim = 2

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        _check_pool_args(2, kernel_size, stride, padding, dilation, max_pool=True)
        check_bool("return_indices", return_indices)
        check_bool("ceil_mode", ceil_mode)
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        self._add_hook_points()


class AvgPool1d(_Instrumented, nn.AvgPool1d):
    """``torch.nn.AvgPool1d`` with ``hook_in`` / ``hook_out`` ``[batch, channel, length]`` and ``geometry``.

    Args:
        kernel_size, stride, padding, ceil_mode, count_include_pad: as ``torch.nn.AvgPool1d``
            (``stride=None`` means ``kernel_size``).
    """

    _ndim = 1

    def __init__(
        self,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] | None = None,
        padding: int | tuple[int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        _check_pool_args(1, kernel_size, stride, padding, 1, max_pool=False)
        check_bool("ceil_mode", ceil_mode)
        check_bool("count_include_pad", count_include_pad)
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)
        self._add_hook_points()


class AvgPool2d(_Instrumented, nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` with ``hook_in`` / ``hook_out`` ``[batch, channel, height, width]`` and ``geometry``.

    Args:
        kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override: as ``torch.nn.AvgPool2d``
            (``stride=None`` means ``kernel_size``).
    """

    _ndim = 2

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        _check_pool_args(2, kernel_size, stride, padding, 1, max_pool=False)
        check_bool("ceil_mode", ceil_mode)
        check_bool("count_include_pad", count_include_pad)
        if divisor_override is not None:
            check_int("divisor_override", divisor_override, 1)
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        self._add_hook_points()
