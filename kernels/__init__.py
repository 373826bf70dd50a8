"""Fused GPU attention (Triton) with O(n)-memory statistics; see kernels/README.md."""
