"""A BERT encoder built from explorer layers, so every attention pattern of a pretrained model can be recorded.

The architecture is BERT's (Devlin et al. 2019, https://arxiv.org/abs/1810.04805): token + position + segment
embeddings and a LayerNorm, then ``num_hidden_layers`` post-LN blocks::

    x = attn_norm(x + attn(x))          # self-attention, explorer.layers.MultiheadAttention
    x = ffn_norm(x + ffn(x))            # Linear -> GELU -> Linear

Weights come from a Hugging Face checkpoint through :func:`explorer.models.load_pretrained`; the numbers match
``transformers.BertModel`` to float32 rounding (tests/models/test_bert.py).

The model is for inference and inspection only: it has no dropout (BERT's dropout is off in eval mode anyway), so
``train()`` changes nothing. Padding follows Hugging Face: ``attention_mask`` is 1 for real tokens and 0 for padding;
padded keys get probability 0, padded query rows are computed but meaningless.

Hook points (record with :func:`explorer.record`, e.g. ``record(model, "*.hook_pattern")``):

===================================  ===========================================================
name                                 shape
===================================  ===========================================================
``embeddings.hook_out``              ``[batch, token, embed]`` (after the embedding LayerNorm)
``blocks.{i}.attn.hook_q`` ...       see :class:`explorer.layers.MultiheadAttention`
``blocks.{i}.attn.hook_pattern``     ``[batch, head, query, key]`` attention probabilities
``blocks.{i}.hook_resid_mid``        ``[batch, token, embed]`` (after ``attn_norm``)
``blocks.{i}.hook_resid_out``        ``[batch, token, embed]`` (the block's output)
===================================  ===========================================================
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from explorer._checks import check_choice, check_int, check_real, check_tensor, check_type
from explorer.hooks import HookPoint
from explorer.layers import MultiheadAttention
from explorer.masks import Mask

__all__ = ["BertConfig", "BertEncoder", "BertBlock", "BertEmbeddings", "BertOutput"]

# hidden_act in config.json -> activation module. "gelu" is the exact (erf) GELU; "gelu_new" and
# "gelu_pytorch_tanh" are both the tanh approximation in Hugging Face's activations.py.
_ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": lambda: nn.ReLU(),
}

# Families that share BERT's weight names but not its numbers (RoBERTa offsets position ids by pad_token_id + 1,
# for instance), so a checkpoint of another model_type is refused rather than run wrongly.
_MODEL_TYPES = ("bert",)

_TOKEN_DIMS = ("batch", "token", "embed")


@dataclass(frozen=True)
class BertConfig:
    """The architecture of a BERT checkpoint; field names are those of Hugging Face's ``config.json``."""

    vocab_size: int                    # rows of the word-embedding table (30522 for uncased English BERT)
    hidden_size: int                   # model width ("embed"), divisible by num_attention_heads
    num_hidden_layers: int             # number of encoder blocks
    num_attention_heads: int           # heads per attention layer; head_dim = hidden_size // num_attention_heads
    intermediate_size: int             # width of the feed-forward hidden layer (usually 4 * hidden_size)
    max_position_embeddings: int = 512  # longest input, in tokens including [CLS] and [SEP]
    type_vocab_size: int = 2           # number of segment (token type) ids: sentence A / sentence B
    layer_norm_eps: float = 1e-12      # epsilon of every LayerNorm
    hidden_act: str = "gelu"           # feed-forward activation: "gelu" (erf), "gelu_new" / "gelu_pytorch_tanh", "relu"
    pad_token_id: int = 0              # id of [PAD], used for padding by the tokenizer

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int":
                check_int(f.name, value, 0 if f.name == "pad_token_id" else 1)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                             f"({self.num_attention_heads})")
        check_real("layer_norm_eps", self.layer_norm_eps, 0, low_open=True)
        check_choice("hidden_act", self.hidden_act, sorted(_ACTIVATIONS))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_json(cls, path: str | Path) -> "BertConfig":
        """Read a Hugging Face ``config.json`` (other keys, such as dropout rates, are ignored).

        Args:
            path: the file.

        Returns:
            The config.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a BERT config: a required field is missing, ``model_type`` is not ``"bert"``,
                ``position_embedding_type`` is not ``"absolute"`` or ``hidden_act`` is unknown.
        """
        path = Path(path)
        with path.open(encoding="utf-8") as f:
            raw = json.load(f)
        if not isinstance(raw, dict):
            raise ValueError(f"{path} does not hold a JSON object")
        model_type = raw.get("model_type", "bert")
        if model_type not in _MODEL_TYPES:
            raise ValueError(f"{path}: model_type {model_type!r} is not supported, only {_MODEL_TYPES}")
        position_type = raw.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(f"{path}: position_embedding_type {position_type!r} is not supported, only 'absolute'")
        names = [f.name for f in fields(cls)]
        required = [f.name for f in fields(cls) if f.default is MISSING]
        missing = [name for name in required if name not in raw]
        if missing:
            raise ValueError(f"{path} lacks the BERT config field(s) {missing}")
        try:
            return cls(**{name: raw[name] for name in names if name in raw})
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from None


@dataclass
class BertOutput:
    """What :class:`BertEncoder` returns."""

    last_hidden_state: torch.Tensor          # [batch, token, embed], the last block's output
    hidden_states: tuple[torch.Tensor, ...]  # num_hidden_layers + 1 entries: embeddings, then each block's output

    def mean_pooled(self, attention_mask: torch.Tensor | None = None, *, normalize: bool = False) -> torch.Tensor:
        """Sentence embedding as sentence-transformers computes it: the mean of the real tokens' last hidden states.

        all-MiniLM-L6-v2's sentence-transformers pipeline then L2-normalises (``normalize=True``); cosine
        similarities are the same either way.

        Args:
            attention_mask: ``[batch, token]``, 1 = real token, 0 = padding; None = every token is real.
            normalize: divide each embedding by its L2 norm.

        Returns:
            Tensor ``[batch, embed]``.
        """
        hidden = self.last_hidden_state  # (batch, token, embed)
        if attention_mask is None:
            weights = hidden.new_ones(hidden.shape[:2])
        else:
            _check_attention_mask(attention_mask, tuple(hidden.shape[:2]))
            weights = attention_mask.to(hidden.dtype)  # (batch, token)
        summed = (hidden * weights[..., None]).sum(dim=1)  # (batch, embed)
        pooled = summed / weights.sum(dim=1, keepdim=True).clamp(min=1e-9)  # as sentence-transformers' Pooling
        if normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled


def _check_attention_mask(attention_mask: object, shape: tuple[int, int]) -> torch.Tensor:
    check_tensor("attention_mask", attention_mask, "[batch, token] of 0/1")
    if tuple(attention_mask.shape) != shape:
        raise ValueError(f"attention_mask must have the shape of input_ids {shape}, got {tuple(attention_mask.shape)}")
    if attention_mask.is_complex() or not ((attention_mask == 0) | (attention_mask == 1)).all():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")
    return attention_mask


class BertEmbeddings(nn.Module):
    """Word + absolute position + token type embeddings, then LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.hook_out = HookPoint(_TOKEN_DIMS)  # [batch, token, embed]

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (token,)
        x = (self.word_embeddings(input_ids)  # (batch, token, embed)
             + self.position_embeddings(positions)  # (token, embed), broadcast over batch
             + self.token_type_embeddings(token_type_ids))  # (batch, token, embed)
        return self.hook_out(self.norm(x))  # (batch, token, embed)


class BertBlock(nn.Module):
    """One post-LN encoder block: ``x = attn_norm(x + attn(x)); x = ffn_norm(x + ffn(x))``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.attn = MultiheadAttention(width, config.num_attention_heads)
        self.attn_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.ffn = nn.Sequential(
            nn.Linear(width, config.intermediate_size),
            _ACTIVATIONS[config.hidden_act](),
            nn.Linear(config.intermediate_size, width),
        )
        self.ffn_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.hook_resid_mid = HookPoint(_TOKEN_DIMS)  # [batch, token, embed]
        self.hook_resid_out = HookPoint(_TOKEN_DIMS)  # [batch, token, embed]

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None, mask: Mask | None) -> torch.Tensor:
        x = self.attn_norm(x + self.attn(x, mask=mask, key_padding_mask=key_padding_mask))  # (batch, token, embed)
        x = self.hook_resid_mid(x)
        x = self.ffn_norm(x + self.ffn(x))  # (batch, token, embed)
        return self.hook_resid_out(x)


class BertEncoder(nn.Module):
    """BERT encoder built from explorer layers; ``blocks[i].attn`` is :class:`explorer.layers.MultiheadAttention`.

    Build it empty from a :class:`BertConfig` (random weights) or load a checkpoint with
    :func:`explorer.models.load_pretrained`. It is created in eval mode and has no dropout.

    Args:
        config: the architecture.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        check_type("config", config, BertConfig, "a BertConfig")
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.blocks = nn.ModuleList(BertBlock(config) for _ in range(config.num_hidden_layers))
        self.eval()

    def extra_repr(self) -> str:
        c = self.config
        return (f"layers={c.num_hidden_layers}, hidden={c.hidden_size}, heads={c.num_attention_heads}, "
                f"ffn={c.intermediate_size}, max_tokens={c.max_position_embeddings}")

    def _check_ids(self, name: str, ids: object, limit: int, shape: tuple[int, ...] | None) -> torch.Tensor:
        check_tensor(name, ids, "[batch, token]", dtype="int")
        if shape is None and (ids.ndim != 2 or ids.shape[0] < 1 or ids.shape[1] < 1):
            raise ValueError(f"{name} must have shape [batch, token] with batch, token >= 1, got {tuple(ids.shape)}")
        if shape is not None and tuple(ids.shape) != shape:
            raise ValueError(f"{name} must have the shape of input_ids {shape}, got {tuple(ids.shape)}")
        if ids.min() < 0 or ids.max() >= limit:
            raise ValueError(f"{name} must be in [0, {limit}), got values in [{int(ids.min())}, {int(ids.max())}]")
        return ids.long()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        mask: Mask | None = None,
    ) -> BertOutput:
        """Encode token ids.

        Args:
            input_ids: integer Tensor ``[batch, token]``, at most ``config.max_position_embeddings`` tokens.
            attention_mask: ``[batch, token]``, 1 = real token, 0 = padding (as in Hugging Face); None = no padding.
            token_type_ids: segment ids ``[batch, token]``; None = all 0 (one sentence).
            mask: an extra :class:`~explorer.masks.Mask` applied in every layer on top of the padding, e.g.
                ``sliding_window(8)`` to restrict attention to a local, convolution-like window. The pretrained
                weights were not trained with it, so the outputs change; that is the point of the experiment.

        Returns:
            :class:`BertOutput` with the last hidden state and the output of the embeddings and of every block.
        """
        config = self.config
        input_ids = self._check_ids("input_ids", input_ids, config.vocab_size, None)
        shape = tuple(input_ids.shape)
        if shape[1] > config.max_position_embeddings:
            raise ValueError(f"input_ids has {shape[1]} tokens but the model has {config.max_position_embeddings} "
                             "positions; truncate the text (Tokenizer.encode(text, max_length=...))")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        else:
            token_type_ids = self._check_ids("token_type_ids", token_type_ids, config.type_vocab_size, shape)
        key_padding_mask = None
        if attention_mask is not None:
            attention_mask = _check_attention_mask(attention_mask, shape)
            key_padding_mask = (attention_mask == 0).to(input_ids.device)  # (batch, token), True = padding
            if not key_padding_mask.any():
                key_padding_mask = None  # nothing to hide: let sdpa take its unmasked kernel
        if mask is not None:
            check_type("mask", mask, Mask, "an explorer.masks.Mask or None")

        x = self.embeddings(input_ids, token_type_ids)  # (batch, token, embed)
        hidden_states = [x]
        for block in self.blocks:
            x = block(x, key_padding_mask, mask)  # (batch, token, embed)
            hidden_states.append(x)
        return BertOutput(last_hidden_state=x, hidden_states=tuple(hidden_states))
