"""Attention vs Convolution Explorer: instrumented layers, analyses, figures and widget apps."""

from explorer.hooks import HookPoint, Trace, hook_points, intervene, record

__all__ = ["HookPoint", "Trace", "hook_points", "intervene", "record"]
__version__ = "0.1.0"
