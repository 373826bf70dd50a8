"""Fused GPU attention (Triton) with O(n)-memory statistics; see kernels/README.md.

``fused_attention`` runs the Triton kernel on CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``) and the
pure-PyTorch ``attention_reference`` elsewhere; both return ``AttentionResult(out, lse, stats)``.
"""

from .fused import TRITON_HEAD_DIMS, fused_attention, triton_available, triton_suits
from .reference import (
    AttentionResult,
    AttentionStats,
    attention_reference,
    attention_stats_chunked,
    distance_buckets,
)

__all__ = [
    "AttentionResult",
    "AttentionStats",
    "TRITON_HEAD_DIMS",
    "attention_reference",
    "attention_stats_chunked",
    "distance_buckets",
    "fused_attention",
    "triton_available",
    "triton_suits",
]
