"""A small vision-language model whose answer can only come from where its text tokens look in the image.

Questions about the shapes world (:mod:`explorer.data.shapes`), e.g. ``"what colour is the triangle"``, are answered
by a model in which the image reaches the answer *only* through cross-attention from text tokens to image patches:
there is no pooled image feature. Nothing supervises the attention, so whether the answering token looks at the
queried object is a finding, not a design choice (``explorer.analysis.localisation`` measures it).

Architecture::

    image [batch, 3, 48, 48]
      -> conv stem (explorer Conv2d: k4 s2, k4 s2, k1, k1; ReLU)          [batch, embed, 12, 12]
      -> + learned 2-D position embedding, flatten                        patches [batch, patch=144, embed]
    query ids [batch, token]
      -> token + position embedding                                       text [batch, token, embed]
    for each block i:
      text = self_norm(text + self_attn(text))            # among text tokens, padding masked
      text = cross_norm(text + cross_attn(text, patches)) # queries = text, keys/values = patches
      text = mlp_norm(text + mlp(text))
    logits = head(text[:, 0])                             # the first token ("what") reads out the answer

The strided convolutions use kernel 4, stride 2, padding 1, so output position ``i`` is centred on input pixels
``2i, 2i + 1``: patch ``(r, c)`` of the grid is centred on the pixel block
``rows [r * patch_size, (r + 1) * patch_size) x cols [c * patch_size, (c + 1) * patch_size)``, a regular partition
of the image. The receptive field of a patch is only 10 px (its 4 px block and 3 px around it), smaller than an
object (10-14 px): no patch sees a whole object, so the answering token has to gather evidence from the object's own
patches (``tests/models/test_cross_modal.py`` computes the 10 px with :func:`explorer.analysis.receptive_field`).

Hook points (``record(model, "*.hook_pattern")``):

=====================================  ===============================================================
name                                   shape
=====================================  ===============================================================
``stem.conv{j}.hook_in/out``           ``[batch, channel, height, width]`` (explorer Conv2d)
``hook_patches``                       ``[batch, patch, embed]`` (stem output + position embedding)
``blocks.{i}.self_attn.hook_pattern``  ``[batch, head, token, token]``
``blocks.{i}.cross_attn.hook_pattern`` ``[batch, head, token, patch]``, patch index ``r * cols + c``
``blocks.{i}.hook_resid_out``          ``[batch, token, embed]``
=====================================  ===============================================================

The answer is read from token 0 (``ANSWER_TOKEN``), so the localisation lesson uses
``blocks.{i}.cross_attn.hook_pattern[:, :, ANSWER_TOKEN]`` averaged over heads. In the shipped model the first
cross-attention layer (``blocks.0``) localises the queried object best; ``model_card.json`` gives the scores of
every layer (``localisation_by_layer``) and of the last one (``localisation``).

Weights: ``assets/cross_modal/`` (trained by ``python -m explorer.train.cross_modal``; see its MODEL_CARD.md).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

import explorer
from explorer._checks import check_int, check_tensor, check_type
from explorer.data.shapes import ANSWERS, VOCAB
from explorer.hooks import HookPoint
from explorer.models.shipped import CARD_FILE, WEIGHTS_FILE, load_shipped
from explorer.layers import Conv2d, MultiheadAttention

__all__ = ["CrossModalConfig", "CrossModalModel", "load_cross_modal", "default_cross_modal_dir", "ANSWER_TOKEN",
           "WEIGHTS_FILE", "CARD_FILE", "RETRAIN_COMMAND"]

ANSWER_TOKEN = 0  # index of the text token whose final state is read by the answer head
RETRAIN_COMMAND = "python -m explorer.train.cross_modal"
_STRIDE = 4  # total stride of the conv stem = patch_size


@dataclass(frozen=True)
class CrossModalConfig:
    """Sizes of the model. The defaults are those of the shipped weights."""

    image_size: int = 48            # image side in pixels, a multiple of 4 in [32, 96]
    embed: int = 64                 # width of patches and text tokens, divisible by `heads`
    heads: int = 4                  # attention heads in every attention layer
    layers: int = 2                 # number of blocks (self-attention, cross-attention, MLP), 1..8
    vocab: int = len(VOCAB)         # token vocabulary size (explorer.data.shapes.VOCAB)
    answers: int = len(ANSWERS)     # number of answer classes (explorer.data.shapes.ANSWERS)
    max_query: int = 8              # longest question in tokens (position embeddings)

    def __post_init__(self) -> None:
        for name, low, high in (("image_size", 32, 96), ("embed", 4, 1024), ("heads", 1, 64), ("layers", 1, 8),
                                ("vocab", 2, 100_000), ("answers", 2, 100_000), ("max_query", 1, 512)):
            check_int(name, getattr(self, name), low, high)
        if self.image_size % _STRIDE:
            raise ValueError(f"image_size must be a multiple of {_STRIDE}, got {self.image_size}")
        if self.embed % self.heads:
            raise ValueError(f"embed ({self.embed}) must be divisible by heads ({self.heads})")


class CrossModalBlock(nn.Module):
    """Post-LN block: text self-attention, text-to-patch cross-attention, MLP."""

    def __init__(self, embed: int, heads: int) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(embed, heads)
        self.self_norm = nn.LayerNorm(embed)
        self.cross_attn = MultiheadAttention(embed, heads)
        self.cross_norm = nn.LayerNorm(embed)
        self.mlp = nn.Sequential(nn.Linear(embed, 2 * embed), nn.GELU(), nn.Linear(2 * embed, embed))
        self.mlp_norm = nn.LayerNorm(embed)
        self.hook_resid_out = HookPoint(("batch", "query", "embed"))

    def forward(self, text: torch.Tensor, patches: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """text ``[batch, token, embed]``, patches ``[batch, patch, embed]``, padding ``[batch, token]`` bool."""
        text = self.self_norm(text + self.self_attn(text, key_padding_mask=padding))  # (batch, token, embed)
        text = self.cross_norm(text + self.cross_attn(text, patches))  # (batch, token, embed)
        text = self.mlp_norm(text + self.mlp(text))  # (batch, token, embed)
        return self.hook_resid_out(text)


class CrossModalModel(nn.Module):
    """Answers a question about an image; the image reaches the answer only through cross-attention.

    Args:
        config: a :class:`CrossModalConfig` (default: the shipped model's sizes).
    """

    def __init__(self, config: CrossModalConfig | None = None) -> None:
        super().__init__()
        config = CrossModalConfig() if config is None else config
        check_type("config", config, CrossModalConfig, "a CrossModalConfig")
        self.config = config
        e = config.embed
        self.stem = nn.Sequential(OrderedDict([
            ("conv1", Conv2d(3, 32, 4, stride=2, padding=1)), ("act1", nn.ReLU()),   # (batch, 32, H/2, W/2)
            ("conv2", Conv2d(32, e, 4, stride=2, padding=1)), ("act2", nn.ReLU()),   # (batch, e, H/4, W/4)
            ("conv3", Conv2d(e, e, 1)), ("act3", nn.ReLU()),                        # (batch, e, H/4, W/4)
            ("conv4", Conv2d(e, e, 1)),                                             # (batch, e, H/4, W/4)
        ]))
        rows, cols = self.grid
        self.patch_pos = nn.Parameter(torch.randn(1, e, rows, cols) * 0.1)  # (1, embed, rows, cols)
        self.patch_norm = nn.LayerNorm(e)
        self.hook_patches = HookPoint(("batch", "key", "embed"))
        self.token_embed = nn.Embedding(config.vocab, e)
        self.token_pos = nn.Parameter(torch.randn(1, config.max_query, e) * 0.1)  # (1, max_query, embed)
        self.text_norm = nn.LayerNorm(e)
        self.blocks = nn.ModuleList(CrossModalBlock(e, config.heads) for _ in range(config.layers))
        self.head = nn.Linear(e, config.answers)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch grid; patch index ``r * cols + c`` in the cross-attention patterns."""
        side = self.config.image_size // _STRIDE
        return side, side

    @property
    def patch_size(self) -> int:
        """Side in pixels of the image block each patch is centred on (the grid partitions the image)."""
        return _STRIDE

    def forward(self, images: torch.Tensor, query_ids: torch.Tensor) -> torch.Tensor:
        """Answer logits.

        Args:
            images: ``[batch, 3, image_size, image_size]`` float, values in [0, 1].
            query_ids: ``[batch, token]`` int64 token ids (:func:`explorer.data.shapes.tokenize`), padded with 0
                after the question; ``token <= max_query`` and token 0 must not be padding.

        Returns:
            ``[batch, answers]`` logits over :data:`explorer.data.shapes.ANSWERS`.
        """
        size = self.config.image_size
        check_tensor("images", images, f"(batch, 3, {size}, {size})", dtype="float")
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"images must have shape (batch, 3, {size}, {size}), got {tuple(images.shape)}")
        check_tensor("query_ids", query_ids, "(batch, token)", dtype=torch.long)
        if query_ids.ndim != 2 or query_ids.shape[0] != images.shape[0]:
            raise ValueError(f"query_ids must have shape (batch={images.shape[0]}, token), "
                             f"got {tuple(query_ids.shape)}")
        n_token = query_ids.shape[1]
        if not 1 <= n_token <= self.config.max_query:
            raise ValueError(f"query_ids must have 1..{self.config.max_query} tokens, got {n_token}")
        if query_ids.numel() and (query_ids.min() < 0 or query_ids.max() >= self.config.vocab):
            raise ValueError(f"query_ids must be in [0, {self.config.vocab}), "
                             f"got values in [{int(query_ids.min())}, {int(query_ids.max())}]")
        padding = query_ids == 0  # (batch, token), True = pad
        if padding[:, ANSWER_TOKEN].any():
            raise ValueError("query_ids: every question must start with a real token (0 = <pad> at position 0)")

        features = self.stem(images.to(self.patch_pos.dtype)) + self.patch_pos  # (batch, embed, rows, cols)
        patches = self.patch_norm(features.flatten(2).transpose(1, 2))  # (batch, patch, embed)
        patches = self.hook_patches(patches)
        text = self.text_norm(self.token_embed(query_ids) + self.token_pos[:, :n_token])  # (batch, token, embed)
        for block in self.blocks:
            text = block(text, patches, padding)  # (batch, token, embed)
        return self.head(text[:, ANSWER_TOKEN])  # (batch, answers)


def default_cross_modal_dir() -> Path:
    """``assets/cross_modal`` of the repository (next to the ``explorer`` package)."""
    return Path(explorer.__file__).resolve().parents[1] / "assets" / "cross_modal"


def load_cross_modal(path: str | Path | None = None) -> tuple[CrossModalModel, dict]:
    """The trained model (in eval mode) and its model card.

    Args:
        path: folder holding ``weights.safetensors`` and ``model_card.json``; default
            :func:`default_cross_modal_dir`.

    Returns:
        ``(model, card)``; ``card`` is the parsed ``model_card.json`` (accuracy, localisation, seeds, config).

    Raises:
        FileNotFoundError: a file is missing. ValueError: a file cannot be read or does not fit the config.
        Both name the file and the command that retrains it.
    """
    folder = default_cross_modal_dir() if path is None else Path(path)
    return load_shipped(folder, CrossModalConfig, CrossModalModel, RETRAIN_COMMAND)


def config_dict(config: CrossModalConfig) -> dict:
    """The config as a plain dict (for the model card)."""
    return asdict(config)
