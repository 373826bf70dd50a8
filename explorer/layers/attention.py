"""Instrumented multi-head attention (self and cross), with masks, padding, additive score biases and three backends.

One layer, three ways to compute the same thing:

* ``"math"`` materialises the ``[batch, head, query, key]`` scores and pattern and passes them through
  ``hook_scores`` / ``hook_pattern`` -- memory ``O(batch * head * query * key)``;
* ``"sdpa"`` calls ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels where torch has them),
  which never exposes the pattern;
* ``"triton"`` calls :func:`explorer.kernels.fused_attention`, the project's fused Triton kernel: memory
  ``O(batch * head * query * head_dim)``, and the mask is read from the mask's fields (``causal``, ``window``)
  instead of a dense ``[query, key]`` matrix. It supports no mask, :class:`~explorer.masks.Full`,
  :class:`~explorer.masks.Causal` and :class:`~explorer.masks.SlidingWindow` (causal or centred), plus
  ``key_padding_mask``; any other mask, a dense BoolTensor mask or a ``score_bias`` raises a ValueError (use
  ``"math"`` or ``"sdpa"`` for those). On CUDA tensors it runs the kernel (``head_dim`` in
  ``explorer.kernels.TRITON_HEAD_DIMS``, float16/bfloat16/float32) or raises -- never a silent ``O(n^2)`` fallback.
  On CPU tensors ``fused_attention`` runs the Triton kernel only under the interpreter (``TRITON_INTERPRET=1``);
  otherwise it falls back to its pure-PyTorch reference, which gives the same numbers, slowly -- handy for tests,
  not for speed;
* ``"auto"`` (default) uses ``"sdpa"`` unless ``hook_scores`` or ``hook_pattern`` is being recorded or edited
  (:func:`explorer.intervene`), then
  ``"math"`` for that call; on CUDA tensors, when Triton is available
  (:func:`explorer.kernels.triton_available`) and the call is one the fused kernel supports (masks above, no
  ``score_bias``), it uses ``"triton"`` instead of ``"sdpa"``. This is decided per call (one list truth test per
  hook point, and ``query.is_cuda`` before anything else, so a CPU call never imports Triton) because recording
  is switched on and off from outside, by :func:`explorer.record`.

Asking ``backend="sdpa"`` or ``backend="triton"`` for scores or patterns raises a RuntimeError: a trace is never
silently empty. (The fused kernel can return O(n)-memory attention *statistics* instead of patterns; call
:func:`explorer.kernels.fused_attention` with ``return_stats=True`` for those.)

Fully masked query rows (every key removed by the mask, the padding or a ``-inf`` bias) have one policy in every
backend: their pattern row is all zeros and their per-head output ``z`` is zero (so the layer output there is
``out_proj.bias``); no NaN. ``hook_scores`` shows ``-inf`` at every masked position.

Paper: Vaswani et al. 2017, https://arxiv.org/abs/1706.03762.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from explorer._checks import check_bool, check_choice, check_floating, check_int, check_shape, check_tensor, check_type
from explorer.hooks import HookPoint
from explorer.masks import Causal, Mask, band_of

__all__ = ["MultiheadAttention", "alibi_bias", "alibi_slopes"]

BACKENDS = ("auto", "math", "sdpa", "triton")


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi head slopes (Press et al. 2022, https://arxiv.org/abs/2108.12409).

    For ``n`` a power of two the slopes are the geometric sequence ``2^(-8/n), 2^(-16/n), ..., 2^(-8)``; otherwise
    the ``p = 2^floor(log2 n)`` slopes for ``p`` heads followed by every other slope for ``2p`` heads, as in the
    paper's reference code.

    Args:
        num_heads: number of heads (>= 1).

    Returns:
        Tensor ``[head]`` (float64, exact).
    """
    check_int("num_heads", num_heads, 1)

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = power_of_two(closest)
    if closest != num_heads:
        slopes += power_of_two(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float64)


def alibi_bias(
    num_heads: int,
    n_query: int,
    n_key: int,
    *,
    causal: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """ALiBi additive score bias: a linear penalty on the query-key distance, one slope per head.

    Positions are aligned top-left (query ``i`` and key ``i`` are the same position), as in :mod:`explorer.masks`.

    Args:
        num_heads: number of heads (>= 1); head ``h`` gets slope ``alibi_slopes(num_heads)[h]``.
        n_query: number of query positions (>= 1).
        n_key: number of key positions (>= 1).
        causal: False: ``-slope * |i - j|`` (symmetric, for encoders). True: the paper's decoder form
            ``-slope * (i - j)`` for keys ``j <= i`` and ``0`` for ``j > i``; the bias does not mask, so pair it
            with ``mask=causal()``.
        device: device of the result.
        dtype: floating dtype of the result.

    Returns:
        Tensor ``[head, query, key]``, to pass as ``score_bias``.
    """
    check_int("n_query", n_query, 1)
    check_int("n_key", n_key, 1)
    check_bool("causal", causal)
    slopes = alibi_slopes(num_heads).to(device=device, dtype=dtype)  # (head,)
    query = torch.arange(n_query, device=device)[:, None]  # (query, 1)
    key = torch.arange(n_key, device=device)[None, :]  # (1, key)
    offset = (key - query).to(dtype)  # (query, key)
    distance = offset.clamp(max=0) if causal else -offset.abs()  # (query, key), <= 0
    return slopes[:, None, None] * distance  # (head, query, key)


def _check_broadcastable(name: str, tensor: torch.Tensor, target: tuple[int, ...]) -> None:
    """ValueError unless ``tensor`` broadcasts to ``target`` = (batch, head, query, key) without growing it."""
    shape = tuple(tensor.shape)
    aligned = target[len(target) - len(shape):] if len(shape) <= len(target) else None
    if aligned is None or any(s not in (1, t) for s, t in zip(shape, aligned)):
        raise ValueError(
            f"{name} must broadcast to (batch, head, query, key) = {target}, got shape {shape}"
        )


def _softmax_rows(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over keys, with all-zero rows where every score is ``-inf`` (instead of NaN)."""
    has_key = (scores != float("-inf")).any(dim=-1, keepdim=True)  # (batch, head, query, 1)
    pattern = torch.softmax(scores.masked_fill(~has_key, 0.0), dim=-1)  # (batch, head, query, key)
    return pattern.masked_fill(~has_key, 0.0)


class MultiheadAttention(nn.Module):
    """Batch-first multi-head attention with named hook points.

    ``forward(query)`` is self-attention; ``forward(query, key)`` is cross-attention (value defaults to key).

    Args:
        embed_dim: model width (>= 1), divisible by ``num_heads``.
        num_heads: number of heads (>= 1); ``head_dim = embed_dim // num_heads``.
        kdim: width of the key input (default ``embed_dim``).
        vdim: width of the value input (default ``embed_dim``).
        bias: add biases to the four projections.
        mask: default :class:`~explorer.masks.Mask` of the layer (None = no mask); a ``mask`` passed to forward
            replaces it for that call.
        backend: ``"auto"``, ``"math"``, ``"sdpa"`` or ``"triton"`` (see the module docstring).
        device, dtype: of the parameters.

    Hook points (shapes): ``hook_q`` ``[batch, head, query, head_dim]``, ``hook_k`` / ``hook_v``
    ``[batch, head, key, head_dim]``, ``hook_scores`` ``[batch, head, query, key]`` (scaled, biased, masked
    logits; ``-inf`` where masked), ``hook_pattern`` ``[batch, head, query, key]``, ``hook_z``
    ``[batch, head, query, head_dim]``, ``hook_out`` ``[batch, query, embed]``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        mask: Mask | None = None,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_int("embed_dim", embed_dim, 1)
        check_int("num_heads", num_heads, 1)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        kdim = embed_dim if kdim is None else check_int("kdim", kdim, 1)
        vdim = embed_dim if vdim is None else check_int("vdim", vdim, 1)
        check_bool("bias", bias)
        if mask is not None:
            check_type("mask", mask, Mask, "an explorer.masks.Mask or None")

        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = kdim
        self.vdim = vdim
        self.mask = mask
        self.backend = backend
        self.scale = 1.0 / math.sqrt(self.head_dim)

        factory = {"device": device, "dtype": dtype}
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(kdim, embed_dim, bias=bias, **factory)
        self.v_proj = nn.Linear(vdim, embed_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)

        self.hook_q = HookPoint(("batch", "head", "query", "head_dim"))
        self.hook_k = HookPoint(("batch", "head", "key", "head_dim"))
        self.hook_v = HookPoint(("batch", "head", "key", "head_dim"))
        self.hook_scores = HookPoint(("batch", "head", "query", "key"))
        self.hook_pattern = HookPoint(("batch", "head", "query", "key"))
        self.hook_z = HookPoint(("batch", "head", "query", "head_dim"))
        self.hook_out = HookPoint(("batch", "query", "embed"))

    @property
    def backend(self) -> str:
        """``"auto"``, ``"math"``, ``"sdpa"`` or ``"triton"``; may be reassigned (checked again).

        ``"auto"`` is resolved per call: ``"math"`` while scores or patterns are recorded, else ``"triton"`` for
        supported calls on CUDA tensors when Triton is available, else ``"sdpa"``. ``"triton"`` on CPU without
        ``TRITON_INTERPRET=1`` runs the kernel's pure-PyTorch reference (same result, no speed-up).
        """
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        check_choice("backend", value, BACKENDS)
        self._backend = value

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, kdim={self.kdim}, vdim={self.vdim}, "
                f"mask={self.mask!r}, backend={self.backend!r}")

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention, **kwargs: object) -> "MultiheadAttention":
        """A copy of ``torch.nn.MultiheadAttention``'s weights in this layer.

        Our layer is batch-first whatever ``mha.batch_first`` says, and has no dropout (compare in eval mode).

        Args:
            mha: the torch layer; ``add_bias_kv`` and ``add_zero_attn`` are not supported (ValueError).
            **kwargs: ``mask`` and ``backend`` for the new layer.

        Returns:
            A new :class:`MultiheadAttention` on ``mha``'s device and dtype.
        """
        check_type("mha", mha, nn.MultiheadAttention, "a torch.nn.MultiheadAttention")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("mha uses add_bias_kv or add_zero_attn, which this layer does not have")
        weight = mha.out_proj.weight
        has_bias = mha.in_proj_bias is not None
        layer = cls(mha.embed_dim, mha.num_heads, kdim=mha.kdim, vdim=mha.vdim, bias=has_bias,
                    device=weight.device, dtype=weight.dtype, **kwargs)  # type: ignore[arg-type]
        if mha._qkv_same_embed_dim:
            q_weight, k_weight, v_weight = mha.in_proj_weight.chunk(3, dim=0)
        else:
            q_weight, k_weight, v_weight = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        with torch.no_grad():
            layer.q_proj.weight.copy_(q_weight)
            layer.k_proj.weight.copy_(k_weight)
            layer.v_proj.weight.copy_(v_weight)
            layer.out_proj.weight.copy_(mha.out_proj.weight)
            if has_bias:
                q_bias, k_bias, v_bias = mha.in_proj_bias.chunk(3, dim=0)
                layer.q_proj.bias.copy_(q_bias)
                layer.k_proj.bias.copy_(k_bias)
                layer.v_proj.bias.copy_(v_bias)
                layer.out_proj.bias.copy_(mha.out_proj.bias)
        return layer

    # --- forward ------------------------------------------------------------------------------------------------

    def _backend_for_call(
        self,
        query: torch.Tensor,
        n_key: int,
        mask: Mask | torch.Tensor | None,
        score_bias: torch.Tensor | None,
    ) -> str:
        """The backend this call runs on: ``"math"``, ``"sdpa"`` or ``"triton"`` (see the module docstring)."""
        n_query = query.shape[1]
        wants_pattern = self.hook_scores.active or self.hook_pattern.active
        if self.backend in ("sdpa", "triton") and wants_pattern:
            raise RuntimeError(
                f"backend={self.backend!r} never materialises attention scores or patterns, but hook_scores or "
                f"hook_pattern of this layer ({self.hook_pattern.name or 'unnamed'}) is being recorded or edited. Use "
                "backend='auto' (such calls go to the math path) or backend='math'."
            )
        if self.backend == "math" or wants_pattern:
            return "math"
        if self.backend == "triton":
            if score_bias is not None:
                raise ValueError("score_bias is not supported by backend='triton' (the fused kernel adds no bias); "
                                 "use backend='math' or backend='sdpa'")
            fused = band_of(mask)
            if fused is None:
                what = "a dense BoolTensor" if isinstance(mask, torch.Tensor) else repr(mask)
                raise ValueError(
                    f"mask={what} is not supported by backend='triton', which takes None, full(), causal() or "
                    "sliding_window(window, causal=...) (plus key_padding_mask); use backend='math' or "
                    "backend='sdpa'"
                )
            if fused != (False, None) and n_query != n_key:
                raise ValueError(f"mask={mask!r} with backend='triton' needs as many queries as keys, got "
                                 f"{n_query} queries and {n_key} keys; use backend='math' or backend='sdpa'")
            return "triton"
        if self.backend == "auto" and query.is_cuda and score_bias is None:  # CPU calls stop at is_cuda
            fused = band_of(mask)
            if fused is not None and (fused == (False, None) or n_query == n_key):
                from explorer.kernels import triton_suits

                if triton_suits(query.new_empty(1, 1, 1, self.head_dim)):  # dtype, device, head size of q
                    return "triton"
        return "sdpa"

    def _check_inputs(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
    ) -> None:
        dtype = self.q_proj.weight.dtype
        check_floating("query", query, dtype)
        check_floating("key", key, dtype)
        check_floating("value", value, dtype)
        check_shape("query", query, (None, None, self.embed_dim), "(batch, query, embed)")
        batch = query.shape[0]
        check_shape("key", key, (batch, None, self.kdim), "(batch, key, kdim)")
        n_key = key.shape[1]
        check_shape("value", value, (batch, n_key, self.vdim), "(batch, key, vdim)")
        if key_padding_mask is not None:
            check_tensor("key_padding_mask", key_padding_mask, "[batch, key] (True = padding)", dtype=torch.bool)
            check_shape("key_padding_mask", key_padding_mask, (batch, n_key), "(batch, key)")

    def _allowed(
        self,
        mask: Mask | torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
        target: tuple[int, int, int, int],
        device: torch.device,
    ) -> torch.Tensor | None:
        """BoolTensor broadcasting to ``target`` = (batch, head, query, key), True = may attend; None = all."""
        _, _, n_query, n_key = target
        allowed = None
        if isinstance(mask, Mask):
            allowed = mask.dense(n_query, n_key, device=device)  # (query, key)
        elif isinstance(mask, torch.Tensor):
            if mask.dtype != torch.bool:
                raise TypeError(f"mask must be a Mask or a BoolTensor (True = may attend), got dtype {mask.dtype}")
            _check_broadcastable("mask", mask, target)
            allowed = mask  # broadcasts to (batch, head, query, key)
        elif mask is not None:
            raise TypeError(f"mask must be an explorer.masks.Mask, a BoolTensor or None, got {type(mask).__name__}")
        if key_padding_mask is not None:
            keep = ~key_padding_mask[:, None, None, :]  # (batch, 1, 1, key)
            allowed = keep if allowed is None else allowed & keep
        return allowed

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        *,
        mask: Mask | torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        score_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from ``query`` to ``key`` / ``value``.

        Args:
            query: ``[batch, query, embed]``.
            key: ``[batch, key, kdim]``; default ``query`` (self-attention).
            value: ``[batch, key, vdim]``; default ``key``.
            mask: a :class:`~explorer.masks.Mask` or a BoolTensor broadcasting to ``[batch, head, query, key]``
                (True = may attend, the opposite of ``nn.MultiheadAttention``'s bool ``attn_mask``); replaces the
                layer's default mask for this call (pass ``explorer.masks.full()`` to switch it off).
            key_padding_mask: BoolTensor ``[batch, key]``, True = padding (key ignored), as in torch.
            score_bias: float tensor added to the scaled scores, broadcasting to ``[batch, head, query, key]``
                (relative positions, :func:`alibi_bias`).

        Returns:
            Tensor ``[batch, query, embed]``.
        """
        key = query if key is None else key
        value = key if value is None else value
        self._check_inputs(query, key, value, key_padding_mask)
        batch, n_query, _ = query.shape
        n_key = key.shape[1]
        target = (batch, self.num_heads, n_query, n_key)
        if score_bias is not None:
            check_floating("score_bias", score_bias)
            _check_broadcastable("score_bias", score_bias, target)
            score_bias = score_bias.to(query.dtype)
        mask = self.mask if mask is None else mask
        backend = self._backend_for_call(query, n_key, mask, score_bias)
        # the fused kernel reads the mask's fields; only the other backends need the dense rendering
        allowed = None if backend == "triton" else self._allowed(mask, key_padding_mask, target, query.device)

        q = self.q_proj(query).view(batch, n_query, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).view(batch, n_key, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).view(batch, n_key, self.num_heads, self.head_dim).transpose(1, 2)
        q = self.hook_q(q)  # (batch, head, query, head_dim)
        k = self.hook_k(k)  # (batch, head, key, head_dim)
        v = self.hook_v(v)  # (batch, head, key, head_dim)

        if backend == "math":
            z = self._math(q, k, v, allowed, score_bias)
        elif backend == "triton":
            z = self._triton(q, k, v, mask, key_padding_mask)
        else:
            only_causal = type(mask) is Causal and key_padding_mask is None and score_bias is None
            z = self._sdpa(q, k, v, allowed, score_bias, is_causal=only_causal)
        z = self.hook_z(z)  # (batch, head, query, head_dim)

        out = z.transpose(1, 2).reshape(batch, n_query, self.embed_dim)  # (batch, query, embed)
        return self.hook_out(self.out_proj(out))  # (batch, query, embed)

    def _math(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        allowed: torch.Tensor | None,
        score_bias: torch.Tensor | None,
    ) -> torch.Tensor:
        """Materialised attention; memory O(batch * head * query * key) for scores and pattern."""
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (batch, head, query, key)
        if score_bias is not None:
            scores = scores + score_bias
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        scores = self.hook_scores(scores)
        if allowed is None and score_bias is None:
            pattern = torch.softmax(scores, dim=-1)  # no -inf possible: no fully masked rows
        else:
            pattern = _softmax_rows(scores)
        pattern = self.hook_pattern(pattern)  # (batch, head, query, key)
        return pattern @ v  # (batch, head, query, head_dim)

    def _sdpa(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        allowed: torch.Tensor | None,
        score_bias: torch.Tensor | None,
        is_causal: bool,
    ) -> torch.Tensor:
        """``F.scaled_dot_product_attention`` with one ``attn_mask`` built from mask, padding and bias."""
        if is_causal:  # lets torch pick a fused causal kernel; no row can be fully masked
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        if allowed is None and score_bias is None:
            return F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        if score_bias is None:
            attn_mask = allowed  # bool, True = take part
            has_key = allowed.any(dim=-1, keepdim=True)  # (.., query, 1)
            attn_mask = attn_mask | ~has_key  # unmask empty rows for the kernel; zeroed below
        else:
            attn_mask = score_bias if allowed is None else torch.where(allowed, score_bias, float("-inf"))
            has_key = (attn_mask != float("-inf")).any(dim=-1, keepdim=True)  # (.., query, 1)
            attn_mask = attn_mask.masked_fill(~has_key, 0.0)
        z = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        return z.masked_fill(~has_key, 0.0)  # (batch, head, query, head_dim)

    def _triton(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: Mask | None,
        key_padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """:func:`explorer.kernels.fused_attention`; memory O(batch * head * query * head_dim), no pattern."""
        from explorer.kernels import fused_attention  # lazy: Triton is an optional dependency

        causal, window = band_of(mask)  # checked supported by _backend_for_call
        # CUDA: the kernel or a clear error (never a silent O(n^2) fallback); CPU: the interpreter under
        # TRITON_INTERPRET=1, else the pure-PyTorch reference
        kernel_backend = "triton" if q.is_cuda else "auto"
        result = fused_attention(q, k, v, causal=causal, window=window, key_padding_mask=key_padding_mask,
                                 scale=self.scale, backend=kernel_backend)
        return result.out  # (batch, head, query, head_dim); zero rows where every key is masked
