"""Models built from explorer layers."""

from explorer.models.conv_stack import ConvStackConfig, build_conv_stack

__all__ = ["ConvStackConfig", "build_conv_stack"]
