"""Attention that is a convolution: a multi-head self-attention layer built from a given ``nn.Conv2d``.

Cordonnier, Loukas & Jaggi (ICLR 2020, https://arxiv.org/abs/1911.03584, Theorem 1): multi-head self-attention
with ``K_h * K_w`` heads and a relative positional encoding can express any ``K_h x K_w`` convolution. Head ``h``
gets the offset ``Delta_h`` of one kernel tap and the purely positional score

    ``score_h(q, k) = -sharpness * || (p_k - p_q) - Delta_h ||^2``

(no content term), so as ``sharpness`` grows its softmax puts all its weight on the one key at ``p_q + Delta_h``:
the head *is* a shift. Values are the input tokens themselves (head dimension = ``in_channels``), and the output
projection's block for head ``h`` is the conv's tap ``W[:, :, i_h, j_h]``, so
``sum_h (shift_h x) W_h^T + b`` is the convolution. The leak of a head to its next-nearest key is
``exp(-sharpness * d)`` for a squared distance ``d >= 1`` (``dilation**2`` for a dilated conv): at the default
``sharpness = 100`` that is ``3.7e-44``, below float64 round-off, so the layer equals the conv to round-off.

Borders: the token grid is the input padded exactly as the conv pads it (``F.pad`` with the conv's
``padding_mode``: zeros, reflect, replicate or circular), queries are the unpadded positions and keys every padded
position, so a head pointing past the border reads the same padding value the conv reads.

Covered: stride 1, groups 1, odd kernel sizes with "same" padding (``padding = dilation * (K - 1) / 2`` per dim,
or ``padding="same"``), any dilation, any channels, with or without bias. Anything else is refused by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from explorer._checks import check_choice, check_real, check_tensor, check_type
from explorer.hooks import HookPoint

__all__ = ["ConvAttention", "attention_from_conv", "DEFAULT_SHARPNESS"]

DEFAULT_SHARPNESS = 100.0
_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def _same_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """Per-dim padding of a "same" conv, or ValueError naming the argument the construction does not cover."""
    if tuple(conv.stride) != (1, 1):
        raise ValueError(f"conv.stride must be 1 (a strided conv is not a self-attention layer over the same "
                         f"tokens), got {tuple(conv.stride)}")
    if conv.groups != 1:
        raise ValueError(f"conv.groups must be 1 (grouped convs are not covered), got {conv.groups}")
    kernel, dilation = tuple(conv.kernel_size), tuple(conv.dilation)
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(f"conv.kernel_size must be odd in both dims (a centred kernel has a tap at offset 0), "
                         f"got {kernel}")
    same = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    padding = same if conv.padding == "same" else tuple(conv.padding)
    if padding != same:
        raise ValueError(f"conv.padding must be 'same' = dilation * (kernel_size - 1) / 2 = {same} (the output "
                         f"keeps the input's positions, one per query), got {conv.padding}")
    check_choice("conv.padding_mode", conv.padding_mode, _PAD_MODES)
    return same


class ConvAttention(nn.Module):
    """Multi-head self-attention with quadratic relative positional scores, equal to a given ``nn.Conv2d``.

    Build it with :func:`attention_from_conv`. Attributes: ``offsets`` (``(dy, dx)`` of each head, in pixels),
    ``value_out`` (``[head, out_channels, in_channels]``: head ``h``'s block of the output projection), ``bias``,
    ``sharpness``; hook points ``hook_scores`` and ``hook_pattern`` (``[batch, head, query, key]``, queries the
    ``H * W`` input positions row-major, keys the ``(H + 2 p_h) * (W + 2 p_w)`` padded positions row-major).
    """

    def __init__(self, conv: nn.Conv2d, sharpness: float = DEFAULT_SHARPNESS) -> None:
        super().__init__()
        check_type("conv", conv, nn.Conv2d, "a torch.nn.Conv2d")
        sharpness = check_real("sharpness", sharpness, 0, low_open=True, finite=True)
        self.padding = _same_padding(conv)
        self.padding_mode = conv.padding_mode
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.sharpness = sharpness
        kh, kw = conv.kernel_size
        dh, dw = conv.dilation
        taps = [(i, j) for i in range(kh) for j in range(kw)]
        # tap (i, j) reads input pixel (r + (i - kh // 2) * dh, c + (j - kw // 2) * dw) for output pixel (r, c)
        self.offsets = [((i - kh // 2) * dh, (j - kw // 2) * dw) for i, j in taps]
        weight = conv.weight.detach()  # (out, in, kh, kw)
        self.value_out = nn.Parameter(torch.stack([weight[:, :, i, j] for i, j in taps]).clone())  # (head, out, in)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())  # (out,)
        self.register_buffer("delta", torch.tensor(self.offsets, dtype=weight.dtype), persistent=False)  # (head, 2)
        self.hook_scores = HookPoint(("batch", "head", "query", "key"))
        self.hook_pattern = HookPoint(("batch", "head", "query", "key"))

    @property
    def num_heads(self) -> int:
        """One head per kernel tap: ``K_h * K_w``."""
        return len(self.offsets)

    def scores(self, height: int, width: int) -> torch.Tensor:
        """Positional scores ``[head, query, key]`` for an ``height x width`` input (the same for every image)."""
        ph, pw = self.padding
        dtype, device = self.value_out.dtype, self.value_out.device
        rows, cols = torch.meshgrid(torch.arange(height, dtype=dtype, device=device) + ph,
                                    torch.arange(width, dtype=dtype, device=device) + pw, indexing="ij")
        queries = torch.stack([rows.flatten(), cols.flatten()], dim=-1)  # (query, 2), in padded coordinates
        krows, kcols = torch.meshgrid(torch.arange(height + 2 * ph, dtype=dtype, device=device),
                                      torch.arange(width + 2 * pw, dtype=dtype, device=device), indexing="ij")
        keys = torch.stack([krows.flatten(), kcols.flatten()], dim=-1)  # (key, 2)
        relative = keys[None, :, :] - queries[:, None, :]  # (query, key, 2): p_k - p_q
        gap = relative[None] - self.delta.to(dtype)[:, None, None, :]  # (head, query, key, 2)
        return -self.sharpness * (gap ** 2).sum(-1)  # (head, query, key)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[batch, in_channels, H, W]`` (float) -> ``[batch, out_channels, H, W]``, the conv's output."""
        check_tensor("x", x, f"[batch, {self.in_channels}, height, width]", dtype="float")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be [batch, {self.in_channels}, height, width], got {tuple(x.shape)}")
        batch, _, height, width = x.shape
        ph, pw = self.padding
        padded = F.pad(x, (pw, pw, ph, ph), mode=_PAD_MODES[self.padding_mode])  # as the conv pads
        tokens = padded.flatten(2).transpose(1, 2)  # (batch, key, in): values = the tokens themselves
        scores = self.hook_scores(self.scores(height, width).expand(batch, -1, -1, -1))  # (batch, head, query, key)
        pattern = self.hook_pattern(torch.softmax(scores, dim=-1))  # (batch, head, query, key)
        heads = pattern @ tokens[:, None]  # (batch, head, query, in)
        out = torch.einsum("bhqi,hoi->bqo", heads, self.value_out)  # concat(heads) @ W_out: (batch, query, out)
        if self.bias is not None:
            out = out + self.bias
        return out.transpose(1, 2).reshape(batch, self.out_channels, height, width)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, heads={self.num_heads}, padding={self.padding}, "
                f"padding_mode={self.padding_mode!r}, sharpness={self.sharpness:g}")


def attention_from_conv(conv: nn.Conv2d, sharpness: float = DEFAULT_SHARPNESS) -> ConvAttention:
    """The self-attention layer (``K_h * K_w`` heads, relative positional attention) that reproduces ``conv``.

    Args:
        conv: an ``nn.Conv2d`` (or :class:`explorer.layers.Conv2d`) with stride 1, groups 1, odd kernel sizes and
            "same" padding, any padding mode, dilation, channels and bias. Its weights are copied, in its dtype.
        sharpness: ``alpha`` of the positional score; larger is closer to a hard shift (the leak is
            ``exp(-alpha)``).

    Raises:
        TypeError: ``conv`` is not an ``nn.Conv2d``. ValueError: a stride, groups, kernel size, padding or padding
        mode the construction does not cover, named; ``sharpness`` not positive.
    """
    return ConvAttention(conv, sharpness)
