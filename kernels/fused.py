"""Public entry point: fused attention with O(n)-memory statistics, choosing the Triton kernel or the reference.

The Triton kernels live in :mod:`explorer.kernels.attention_triton`, imported lazily on the first call that uses
them: ``triton.jit`` decides at decoration time whether to compile for a GPU or to run in the interpreter
(``TRITON_INTERPRET=1``), so importing :mod:`explorer.kernels` never fixes that choice.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch
from torch import Tensor

from explorer._checks import check_bool, check_choice

from .reference import AttentionResult, attention_reference, check_inputs

__all__ = ["fused_attention", "triton_available", "TRITON_HEAD_DIMS"]

TRITON_HEAD_DIMS = (16, 32, 64, 128)
"""Channel sizes the Triton kernel is compiled for."""

_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_BACKENDS = ("auto", "triton", "reference")


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def _triton_mode_mismatch() -> bool:
    """True when triton is already imported in the other mode than ``TRITON_INTERPRET`` asks for now.

    ``triton.language`` builds its own helpers (``tl.zeros``, ``tl.sum``...) with ``triton.jit`` at import, so
    setting ``TRITON_INTERPRET=1`` after something imported triton (``torch.utils.flop_counter`` does) leaves
    them compiled-mode and the interpreter cannot call them.
    """
    language = sys.modules.get("triton.language")
    if language is None:
        return False
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover - other triton layouts
        return False
    return isinstance(getattr(language, "zeros", None), InterpretedFunction) != _interpreting()


def triton_available() -> bool:
    """True when the Triton kernel can run here: triton importable and a CUDA device or ``TRITON_INTERPRET=1``
    (set before triton was first imported)."""
    return _triton_importable() and (torch.cuda.is_available() or _interpreting()) and not _triton_mode_mismatch()


def _triton_unusable_reason(q: Tensor) -> str | None:
    """Why the Triton kernel cannot run on these inputs (None when it can)."""
    if not _triton_importable():
        return "triton is not installed (pip install 'attention-conv-explorer[kernels]')"
    if q.is_cuda:
        if _interpreting():
            return "TRITON_INTERPRET=1 runs kernels on CPU tensors only; unset it for CUDA tensors"
        return None
    if q.device.type == "cpu" and _interpreting():
        if _triton_mode_mismatch():
            return ("TRITON_INTERPRET=1 was set after triton had been imported in compiled mode; set it before "
                    "the first import of triton (or of torch.utils.flop_counter, which imports it)")
        return None
    return f"tensors on {q.device} need a CUDA device, or CPU tensors with TRITON_INTERPRET=1 (the interpreter)"


def triton_suits(q: Tensor) -> bool:
    """True when ``fused_attention(..., backend="auto")`` runs the Triton kernel for queries like ``q``: Triton can
    run on ``q``'s device here, and its dtype and head size are ones the kernel is compiled for. The one test every
    caller that chooses a path (the attention layer, ``streamed_statistics``) uses."""
    return _triton_unusable_reason(q) is None and q.dtype in _TRITON_DTYPES and q.shape[-1] in TRITON_HEAD_DIMS


def _check_triton_inputs(q: Tensor) -> None:
    if q.dtype not in _TRITON_DTYPES:
        raise TypeError(f"backend='triton' needs q, k, v in float16, bfloat16 or float32, got {q.dtype}")
    if q.shape[-1] not in TRITON_HEAD_DIMS:
        raise ValueError(f"backend='triton' needs channel size D in {TRITON_HEAD_DIMS}, got D={q.shape[-1]}")


def fused_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    window: int | None = None,
    key_padding_mask: Tensor | None = None,
    scale: float | None = None,
    return_stats: bool = False,
    n_buckets: int = 16,
    backend: str = "auto",
) -> AttentionResult:
    """Attention output, log-sum-exp and (optionally) statistics without storing the ``n×n`` map.

    FlashAttention-2 (Dao 2023, https://arxiv.org/abs/2307.08691) with the online-softmax rescaling extended to
    the statistics; see ``kernels/README.md``.

    Args:
        q: queries ``[batch, head, query, channel]``; float16/bfloat16/float32 (float64: reference only).
        k: keys ``[batch, head, key, channel]``, q's dtype.
        v: values ``[batch, head, key, channel]``, q's dtype.
        causal: key ``j`` allowed for query ``i`` iff ``j <= i`` (needs ``Nq == Nk``).
        window: sliding window width (>= 1), :func:`explorer.masks.sliding_window` convention (needs ``Nq == Nk``).
        key_padding_mask: BoolTensor ``[batch, key]``, True = padding (ignored).
        scale: score scale, default ``1/sqrt(channel)``.
        return_stats: also return entropy, mean distance and distance histogram (forward only, no gradient).
        n_buckets: number of distance buckets, in ``[2, 32]``.
        backend: ``"auto"`` (the Triton kernel when it can run -- CUDA tensors, or CPU tensors under
            ``TRITON_INTERPRET=1`` -- and the inputs suit it, else the reference), ``"triton"`` or ``"reference"``.

    Returns:
        :class:`AttentionResult` ``(out, lse, stats)``; gradients flow to ``q, k, v`` through ``out``.

    Raises:
        ValueError / TypeError: bad arguments, naming the argument; RuntimeError: ``backend="triton"`` where the
        kernel cannot run.
    """
    check_choice("backend", backend, _BACKENDS)
    scale = check_inputs(q, k, v, causal, window, key_padding_mask, scale, n_buckets)
    check_bool("return_stats", return_stats)
    kwargs = dict(causal=causal, window=window, key_padding_mask=key_padding_mask, scale=scale, n_buckets=n_buckets)
    if backend == "reference":
        return attention_reference(q, k, v, return_stats=return_stats, **kwargs)
    reason = _triton_unusable_reason(q)
    if backend == "auto":
        if not triton_suits(q):
            return attention_reference(q, k, v, return_stats=return_stats, **kwargs)
    elif reason is not None:
        raise RuntimeError(f"backend='triton' cannot run: {reason}")
    _check_triton_inputs(q)
    from . import attention_triton  # lazy: see the module docstring

    return attention_triton.triton_attention(q, k, v, return_stats=return_stats, **kwargs)
