"""Head interventions on sentence pairs: MiniLM's heads switched off, and what the pair's cosine similarity does.

Model: a :class:`~explorer.models.BertEncoder` (all-MiniLM-L6-v2 from :func:`explorer.models.load_pretrained`); the
units are its heads at ``blocks.{l}.attn.hook_z`` ``[batch, head, query, head_dim]``, before the output projection,
where heads are separate (:data:`HOOKS`). The Intervene tab (:mod:`explorer.apps.intervene`), lesson 08 and the
intervention study (:mod:`explorer.analysis.intervention_study.minilm`) all run their pairs through this module.

Inputs are :class:`Sentences`: the sides of each pair (A, B[, B']), tokenised as right-padded batches in one of two
layouts --

* **by side** (:func:`encode_sides`): batch ``s`` holds side ``s``, row ``p`` is pair ``p``. A hook point fires once
  per side with the pairs on the same rows, so a per-row edit or mask (``[pair, head]``) acts on every sentence of its
  pair: what :func:`~explorer.analysis.intervention.gradient_importance` needs for a mask shared by a pair;
* **interleaved** (:func:`encode_pairs`): one batch, row ``p * sides + s`` is side ``s`` of pair ``p``. A hook point
  fires once per forward and sees every sentence: what ``record(...)[name]``,
  :func:`~explorer.analysis.intervention.patching_sweep` and :func:`~explorer.analysis.intervention.query_key_view`
  need.

:func:`pair_forward` mean-pools each sentence over its real tokens (sentence-transformers' readout) and returns
``[pair, side, embed]`` in both layouts, the output :func:`~explorer.analysis.intervention.pair_similarity` reads. An
edit of block ``l`` cannot change blocks ``< l``, so it restarts from the intact run's hidden states at the first
block with an active hook point (cached on the :class:`Sentences`); the result equals the full forward.

Per pair (:class:`PairExperiment`): the similarity under ablations, three numbers per head -- the attention on the
word the two sentences share (:func:`shared_word_attention`), the gradient importance of a head mask
(:func:`pair_gradient`; Michel, Levy & Neubig 2019, https://arxiv.org/abs/1905.10650) and the measured effect of
zero-ablating it alone -- clean -> corrupted activation patching and one head's query/key view. For a batch of pairs
(:class:`PairBatch`): each pair's similarity and the pick of each A's partner among the batch's B (:func:`matching`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explorer._checks import check_choice, check_int, check_real, check_type
from explorer._modes import evaluating
from explorer.analysis.agreement import shared_word_tokens
from explorer.analysis.intervention import (QueryKeyView, ablation_sweep, gradient_importance, mean_ablation,
                                            pair_similarity, patching_sweep, query_key_view, run_with_edits,
                                            unit_hooks, zero_ablation)
from explorer.guard import check
from explorer.hooks import Edit, hook_points, record

__all__ = ["Sentences", "encode_sides", "encode_pairs", "pair_forward", "pair_gradient", "head_hook_names",
           "head_means", "shared_word", "shared_word_attention", "head_edits", "matching", "fixed_batch", "mask_id",
           "PairExperiment", "PairBatch", "HOOKS", "MAX_CHARS", "MAX_TOKENS", "BATCH_PAIRS", "BATCH_SEED",
           "MATCH_SCALE", "ABLATIONS", "GAP"]

HOOKS = "blocks.*.attn.hook_z"  # one unit hook per layer, [batch, head, query, head_dim]
MAX_CHARS = 200        # characters per sentence: a sentence, not an article
MAX_TOKENS = 64        # wordpieces per sentence, [CLS] and [SEP] included
BATCH_PAIRS = 8        # pairs of the fixed batch
BATCH_SEED = 0         # explorer.data.sentence_pairs seed of the fixed batch
MATCH_SCALE = 20.0     # cosine -> logit scale of the partner pick (sentence-transformers' ranking-loss default)
ABLATIONS = ("zero", "mean")
GAP = 1e-4             # clean - corrupted similarity below which patching shares are not computed (0 / 0)
# words too common to be "the word the pair shares"
STOPWORDS = frozenset("""a an and are as at be been but by did do does for from had has have he her his i in is it
its my no not of on or our she so that the their them then there they this to too was we were what when where which
who why will with you your""".split())

Pair = tuple[str, str]


# --- inputs -----------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Sentences:
    """Tokenised sentence pairs for :func:`pair_forward`, by side or interleaved (see the module docstring).

    ``ids`` and ``masks`` hold one tensor per batch: per side ``[pair, token]`` by side, one ``[pair * sides, token]``
    interleaved. ``texts`` and ``encodings`` are per side in both layouts.
    """

    texts: tuple[tuple[str, ...], ...]   # per side, one text per pair
    ids: tuple[torch.Tensor, ...]        # per batch [row, token], long
    masks: tuple[torch.Tensor, ...]      # per batch [row, token], 1 = real token
    encodings: tuple[list[Any], ...]     # per side, explorer Encoding per pair (tokens, offsets)
    interleaved: bool = False            # True: one batch, row p * sides + s = side s of pair p
    _cache: tuple[nn.Module, list[tuple[torch.Tensor, ...]]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.texts[0])

    @property
    def rows(self) -> int:
        """Sentences over all batches (``pairs * sides``)."""
        return sum(ids.shape[0] for ids in self.ids)

    @property
    def longest(self) -> int:
        """Tokens of the longest batch (padding included)."""
        return max(ids.shape[1] for ids in self.ids)

    def where(self, side: int) -> tuple[int, slice]:
        """``(batch, rows)``: where side ``side``'s sentences lie, one row per pair in pair order."""
        side = check_int("side", side, 0, len(self.texts) - 1)
        if self.interleaved:
            return 0, slice(side, None, len(self.texts))
        return side, slice(None)

    def by_side(self) -> Sentences:
        """The same sentences by side (``self`` if they are; interleaved ones keep their common padding)."""
        if not self.interleaved:
            return self
        places = [self.where(side) for side in range(len(self.texts))]
        return Sentences(self.texts, tuple(self.ids[b][rows] for b, rows in places),
                         tuple(self.masks[b][rows] for b, rows in places), self.encodings)


def encode_sides(tokenizer: Any, sides: Sequence[Sequence[str]], *, interleaved: bool = False) -> Sentences:
    """Tokenise each side's texts (``Tokenizer.encode_batch``), one padded batch per side or one interleaved batch.

    Args:
        tokenizer: an :class:`explorer.models.checkpoint.Tokenizer`.
        sides: 1-3 lists of texts, one text per pair each (A's, B's, distractors).
        interleaved: one batch with the sides of each pair on consecutive rows (see the module docstring).

    Returns:
        :class:`Sentences`.
    """
    if isinstance(sides, (str, bytes)) or not isinstance(sides, Sequence) or not 1 <= len(sides) <= 3:
        raise TypeError(f"sides must be a list of 1-3 lists of texts (A's, B's, ...), got {sides!r:.80}")
    texts = []
    for s, side in enumerate(sides):
        if isinstance(side, (str, bytes)) or not isinstance(side, Sequence) or not side:
            raise TypeError(f"sides[{s}] must be a non-empty list of str, got {side!r:.80}")
        if not all(isinstance(t, str) for t in side):
            raise TypeError(f"sides[{s}] must hold only str")
        texts.append(tuple(side))
    if len({len(side) for side in texts}) != 1:
        raise ValueError(f"sides must have one text per pair each, got lengths {[len(s) for s in texts]}")
    check_type("interleaved", interleaved, bool, "True or False")
    if interleaved:
        ids, mask = tokenizer.encode_batch([text for pair in zip(*texts) for text in pair])  # (pair * sides, token)
        ids, masks = (ids,), (mask,)
    else:
        ids, masks = zip(*(tokenizer.encode_batch(list(side)) for side in texts))  # per side (pair, token)
    encodings = tuple([tokenizer.encode(text) for text in side] for side in texts)
    return Sentences(tuple(texts), tuple(ids), tuple(masks), encodings, interleaved)


def _check_sentence(name: str, text: object, max_chars: int = MAX_CHARS) -> str:
    check_type(name, text, str, "a str")
    if not text.strip():  # type: ignore[union-attr]
        raise ValueError(f"{name} is empty: type a sentence")
    length = len(text)  # type: ignore[arg-type]
    if length > max_chars:
        raise ValueError(f"{name} has {length:,} characters; at most {max_chars} are accepted here (one sentence)")
    return text  # type: ignore[return-value]


def encode_pairs(tokenizer: Any, pairs: Sequence[Pair], max_tokens: int = MAX_TOKENS) -> Sentences:
    """Check typed sentence pairs and tokenise them as one interleaved batch, A then B of each pair.

    Args:
        tokenizer: an :class:`explorer.models.Tokenizer`.
        pairs: ``[(a, b), ...]``, each sentence at most :data:`MAX_CHARS` characters.
        max_tokens: most wordpieces per sentence (``[CLS]`` and ``[SEP]`` included); a longer one is refused.

    Returns:
        Interleaved :class:`Sentences`: ``ids[0]`` and ``masks[0]`` ``[2 * pairs, token]``, rows ``2p`` and
        ``2p + 1`` are pair ``p``'s A and B.

    Raises:
        TypeError / ValueError: a sentence that is not a str, empty, too long in characters or in tokens.
    """
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or not pairs:
        raise TypeError(f"pairs must be a non-empty list of (a, b) sentence tuples, got {type(pairs).__name__}")
    max_tokens = check_int("max_tokens", max_tokens, 3, 512)
    labels = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"pairs[{i}] must be a tuple (a, b) of two sentences, got {pair!r}")
        for name, text in zip(("sentence A", "sentence B"), pair):
            labels.append(name if len(pairs) == 1 else f"pairs[{i}] {name}")
            _check_sentence(labels[-1], text)  # before tokenising: a visitor's text is short by now
    sentences = encode_sides(tokenizer, [[a for a, _ in pairs], [b for _, b in pairs]], interleaved=True)
    for label, encoding in zip(labels, (e for pair in zip(*sentences.encodings) for e in pair)):
        if len(encoding.tokens) > max_tokens:
            raise ValueError(f"{label} has {len(encoding.tokens)} tokens; at most {max_tokens} are accepted here")
    return sentences


# --- forward ----------------------------------------------------------------------------------------------------


def _first_active_block(model: nn.Module) -> int | None:
    """Index of the first block with a recorded or edited hook point; 0 if one outside the blocks is active; None if
    nothing is active."""
    active = [name for name, hp in hook_points(model).items() if hp.active]
    if not active:
        return None
    parts = [name.split(".") for name in active]
    if any(p[0] != "blocks" for p in parts):
        return 0
    return min(int(p[1]) for p in parts)


def pair_forward(model: nn.Module, sentences: Sentences) -> torch.Tensor:
    """Mean-pooled embeddings of every side of every pair: ``[pair, side, embed]``.

    The first call with no hook point active stores each block's input (``BertOutput.hidden_states``) on
    ``sentences``; later calls restart from the first block with an active hook point, and a call with none active
    and no gradient reads the stored output. Only explorer hook points count as active (a torch hook of your own is
    not seen), and the model's weights must not change while ``sentences`` is in use.

    Args:
        model: a :class:`~explorer.models.BertEncoder` (its ``blocks`` take ``(x, key_padding_mask, mask)``).
        sentences: from :func:`encode_sides` or :func:`encode_pairs`.

    Returns:
        ``[pair, side, embed]`` in the model's dtype.
    """
    check_type("sentences", sentences, Sentences, "Sentences from encode_sides(...) or encode_pairs(...)")
    from explorer.models.bert import BertOutput

    first = _first_active_block(model)
    cache = sentences._cache
    usable = cache is not None and cache[0] is model and cache[1][0][0].dtype == model.embeddings.norm.weight.dtype
    start = first if (first and usable) else 0
    if first is None and usable and not torch.is_grad_enabled():
        start = len(model.blocks)  # nothing edited: the intact output itself
    pooled, states = [], []
    for batch, (ids, mask) in enumerate(zip(sentences.ids, sentences.masks)):
        if start == 0:
            output = model(ids, mask)
            hidden = output.last_hidden_state  # (row, token, embed)
            states.append(tuple(h.detach() for h in output.hidden_states))
        else:
            padding = mask == 0  # (row, token), True = padding, as BertEncoder.forward passes it
            x = cache[1][batch][start]  # (row, token, embed): the intact input of block `start`
            for block in model.blocks[start:]:
                x = block(x, padding if bool(padding.any()) else None, None)
            hidden = x
        pooled.append(BertOutput(hidden, ()).mean_pooled(mask))  # (row, embed)
    if first is None and start == 0:
        sentences._cache = (model, states)
    if sentences.interleaved:
        return pooled[0].view(len(sentences), len(sentences.texts), -1)  # (pair, side, embed)
    return torch.stack(pooled, dim=1)  # (pair, side, embed)


def pair_gradient(model: nn.Module, sentences: Sentences, hooks: str = HOOKS) -> torch.Tensor:
    """``d similarity_p / d xi_{layer, head}`` at ``xi = 1``: the gradient of each pair's similarity with respect to
    a multiplicative mask on each head, one mask shared by the pair's sentences (Michel et al. 2019).

    :func:`~explorer.analysis.intervention.gradient_importance` gives every row of a hook point's batch its own
    mask; run by side, a pair's sentences lie on the same row of their side's batch, so that row's mask is the
    pair's (interleaved sentences are regrouped by side first).

    Args:
        model: the encoder (run in eval mode; parameters' ``.grad`` untouched).
        sentences: A and B of each pair (:func:`encode_pairs` or :func:`encode_sides`).
        hooks: the unit hooks (default every layer's ``hook_z``).

    Returns:
        float64 ``[pairs, layer, head]``; the first-order prediction of zero-ablating a head is ``-gradient``.
    """
    check_type("sentences", sentences, Sentences, "Sentences from encode_pairs(...) or encode_sides(...)")
    return gradient_importance(model, pair_forward, sentences.by_side(), pair_similarity(), hooks).per_input


# --- per-head readings -----------------------------------------------------------------------------------------


def head_hook_names(model: nn.Module, hooks: str = HOOKS) -> list[str]:
    """The names of the unit hooks ``hooks`` matches, in model order (one per layer)."""
    return [hp.name for hp in unit_hooks(model, hooks)]


def head_means(model: nn.Module, sentences: Sentences) -> dict[str, torch.Tensor]:
    """Each head's mean output vector over every real token of every sentence (padding left out), for
    :func:`~explorer.analysis.intervention.mean_ablation` of inputs of any length.

    Returns:
        ``{hook_name: [1, head, 1, head_dim]}``.
    """
    names = head_hook_names(model)
    with evaluating(model), torch.no_grad(), record(model, names) as trace:
        pair_forward(model, sentences)
    means = {}
    for name in names:
        total = count = 0
        for z, mask in zip(trace.history(name), sentences.masks):  # z (row, head, token, head_dim)
            total = total + (z * mask.to(z.dtype)[:, None, :, None]).sum(dim=(0, 2))  # (head, head_dim)
            count = count + int(mask.sum())
        means[name] = (total / count)[None, :, None, :]
    return means


def shared_word(a: str, b: str) -> str | None:
    """The first word of ``a`` (3+ letters, not a stopword) that ``b`` also has as a whole word, lower-cased; None
    if there is none."""
    check_type("a", a, str, "a str")
    check_type("b", b, str, "a str")
    in_b = {w.lower() for w in re.findall(r"[^\W\d_]+", b)}
    for word in re.findall(r"[^\W\d_]+", a):
        w = word.lower()
        if len(w) >= 3 and w not in STOPWORDS and w in in_b:
            return w
    return None


def shared_word_attention(model: nn.Module, sentences: Sentences, words: Sequence[str]) -> torch.Tensor:
    """Attention on the shared word per side, pair, layer and head: ``[side, pair, layer, head]``, float64.

    Per side: ``mean over real queries q of sum over the word's tokens k of pattern[pair, head, q, k]``, the word's
    tokens found by their character offsets (:func:`~explorer.analysis.agreement.shared_word_tokens`).

    Raises:
        ValueError: a word that is not a whole word of each side's text.
    """
    if len(words) != len(sentences):
        raise ValueError(f"words must hold one word per pair ({len(sentences)}), got {len(words)}")
    names = [name.replace("hook_z", "hook_pattern") for name in head_hook_names(model)]
    with evaluating(model), torch.no_grad(), record(model, names) as trace:
        pair_forward(model, sentences)
    out = []
    for side, (encodings, texts) in enumerate(zip(sentences.encodings, sentences.texts)):
        batch, rows = sentences.where(side)
        mask = sentences.masks[batch][rows]  # (pair, token)
        target = torch.zeros(mask.shape, dtype=torch.float64)  # (pair, key)
        for i, (encoding, text, word) in enumerate(zip(encodings, texts, words)):
            hits = torch.from_numpy(shared_word_tokens(encoding, text, word))
            if not hits.any():
                raise ValueError(f"pair {i}: {word!r} is not a whole word of side {side}'s text {text!r}")
            target[i, : hits.numel()] = hits.double()
        real = mask.double()  # (pair, query)
        layers = []
        for name in names:
            pattern = trace.history(name)[batch][rows].double()  # (pair, head, query, key)
            mass = (pattern * target[:, None, None, :]).sum(-1)  # (pair, head, query)
            layers.append((mass * real[:, None, :]).sum(-1) / real.sum(-1, keepdim=True))  # (pair, head)
        out.append(torch.stack(layers, dim=1))  # (pair, layer, head)
    return torch.stack(out)


# --- edits and batch readings -----------------------------------------------------------------------------------


def head_edits(model: nn.Module, ablated: Sequence[tuple[int, int]], how: str = "zero",
               means: dict[str, torch.Tensor] | None = None) -> dict[str, Edit] | None:
    """Edits ablating the heads ``ablated`` (None when it is empty).

    Args:
        model: the encoder.
        ablated: 0-based ``(layer, head)`` pairs.
        how: ``"zero"`` or ``"mean"`` (``means`` from :func:`head_means`).
        means: ``{hook_name: [1, head, 1, head_dim]}``, for ``how="mean"``.

    Returns:
        ``{hook_name: fn}`` for :func:`explorer.intervene`, or None.
    """
    check_choice("how", how, ABLATIONS)
    units: dict[str, list[int]] = {}
    for layer, head in sorted(ablated):
        units.setdefault(f"blocks.{layer}.attn.hook_z", []).append(head)
    if not units:
        return None
    if how == "mean":
        if means is None:
            raise ValueError("how='mean' needs means (head_means of a reference batch)")
        return mean_ablation(model, units, means)
    return zero_ablation(model, units)


def matching(embeddings: torch.Tensor, scale: float = MATCH_SCALE) -> tuple[np.ndarray, np.ndarray, float]:
    """Each A picks a partner among all the pairs' B by cosine similarity.

    Args:
        embeddings: ``[pairs, 2, embed]``.
        scale: logits are ``scale * cos(A_i, B_j)``.

    Returns:
        ``(similarity [pairs], probability [pairs], accuracy)``: ``cos(A_i, B_i)``, the softmax probability of
        ``B_i`` for ``A_i``, and the share of pairs where ``B_i`` has the highest cosine (float64).
    """
    check_real("scale", scale, 0, low_open=True)
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 3 or embeddings.shape[1] != 2:
        raise ValueError("embeddings must be a tensor [pairs, 2, embed]")
    a = F.normalize(embeddings[:, 0].double(), dim=-1)  # (pairs, embed)
    b = F.normalize(embeddings[:, 1].double(), dim=-1)
    cos = a @ b.T  # (pairs, pairs): A_i against every B_j
    rows = torch.arange(cos.shape[0])
    probability = torch.softmax(scale * cos, dim=-1)[rows, rows]
    accuracy = float((cos.argmax(-1) == rows).double().mean())
    return cos[rows, rows].numpy(), probability.numpy(), accuracy


@functools.lru_cache(maxsize=1)
def fixed_batch(n: int = BATCH_PAIRS, seed: int = BATCH_SEED) -> tuple[tuple[str, str, str], ...]:
    """The first ``n`` generated pairs (``explorer.data.sentence_pairs``) whose shared words all differ, so that
    each A has exactly one partner among the batch's B: ``((a, b, shared), ...)``."""
    from explorer.data.sentence_pairs import sentence_pairs

    n = check_int("n", n, 2, 64)
    chosen, seen = [], set()
    for pair in sentence_pairs(16 * n, seed=seed):
        if pair.shared not in seen:
            seen.add(pair.shared)
            chosen.append((pair.a, pair.b, pair.shared))
            if len(chosen) == n:
                return tuple(chosen)
    raise ValueError(f"fewer than {n} pairs with distinct shared words among {16 * n} drawn with seed {seed}")


def mask_id(tokenizer: Any) -> int:
    """The id of ``[MASK]`` (``[UNK]`` for a vocabulary without it), found through the tokenizer itself."""
    for token in ("[MASK]", "[UNK]"):
        encoding = tokenizer.encode(token)
        if encoding.tokens[1:-1] == [token]:
            return int(encoding.input_ids[0, 1])
    raise ValueError("the tokenizer has neither a [MASK] nor an [UNK] token to corrupt the shared word with")


# --- one pair, one batch ----------------------------------------------------------------------------------------


class PairExperiment:
    """The heavy numbers of one sentence pair, computed once: similarity, gradient importance, every head's
    ablation effect, activation patching and the attention on the shared word.

    Args:
        pretrained: a :class:`explorer.models.Pretrained` (its model is not modified).
        a, b: the two sentences (at most :data:`MAX_CHARS` characters and :data:`MAX_TOKENS` tokens each).

    Attributes (``[layer, head]`` arrays are float64 numpy):
        inputs: interleaved :class:`Sentences` (:func:`encode_pairs`), ``[2, token]``.
        tokens: ``(A's tokens, B's tokens)``.
        word: the shared word (:func:`shared_word`) or None; ``word_tokens``: bool per token of A and of B.
        clean_similarity: the cosine similarity of the pair.
        gradient: ``d similarity / d xi`` per head (:func:`pair_gradient`); ``importance = |gradient|``.
        effect: similarity with the head zero-ablated minus ``clean_similarity`` (``ablation_sweep``).
        attention: attention on the shared word (:func:`shared_word_attention`): for each sentence, the mean over
            its queries of the weight summed over the word's tokens, averaged over the two sentences (NaN without a
            shared word).
        patching: share of the similarity drop restored when the head's clean ``hook_z`` is patched into the
            corrupted run (the word's tokens in A replaced by ``[MASK]``; ``patching_sweep(...).normalised()``);
            NaN without a shared word or when masking it moves the similarity by less than :data:`GAP`.
            ``corrupted_inputs`` (texts and encodings are the clean ones), ``corrupted_similarity`` (None without
            a word).
    """

    def __init__(self, pretrained: Any, a: str, b: str) -> None:
        a, b = _check_sentence("sentence A", a), _check_sentence("sentence B", b)
        self.pretrained = pretrained
        model, tokenizer, config = pretrained.model, pretrained.tokenizer, pretrained.config
        self.a, self.b = a, b
        self.inputs = encode_pairs(tokenizer, [(a, b)])
        layers, heads = config.num_hidden_layers, config.num_attention_heads
        self.check_memory()
        encodings = tuple(side[0] for side in self.inputs.encodings)  # A's, B's
        self.tokens = tuple(list(e.tokens) for e in encodings)
        self.word = shared_word(a, b)
        self.word_tokens = tuple(shared_word_tokens(e, text, self.word) for e, text in zip(encodings, (a, b)))
        if self.word is not None and not all(hits.any() for hits in self.word_tokens):
            self.word = None  # a word the tokenizer dropped (only [UNK] pieces, say): nothing to point at

        metric = pair_similarity()
        self.clean_similarity = self.similarity()
        self.gradient = pair_gradient(model, self.inputs)[0].numpy()  # (layer, head)
        self.importance = np.abs(self.gradient)
        self.effect = ablation_sweep(model, pair_forward, self.inputs, metric, HOOKS).effect.numpy()  # (layer, head)

        self.attention = np.full((layers, heads), np.nan)
        self.patching = np.full((layers, heads), np.nan)
        self.corrupted_inputs: Sentences | None = None
        self.corrupted_similarity: float | None = None
        if self.word is not None:
            self.attention = shared_word_attention(model, self.inputs, [self.word]).mean(0)[0].numpy()
            corrupted = self.inputs.ids[0].clone()  # (2, token): row 0 is A
            corrupted[0, :len(self.word_tokens[0])][torch.from_numpy(self.word_tokens[0])] = mask_id(tokenizer)
            self.corrupted_inputs = Sentences(self.inputs.texts, (corrupted,), self.inputs.masks,
                                              self.inputs.encodings, interleaved=True)
            patch = patching_sweep(model, pair_forward, self.inputs, self.corrupted_inputs, metric, HOOKS)
            self.corrupted_similarity = float(patch.baseline.mean())
            if abs(self.clean_similarity - self.corrupted_similarity) > GAP:  # else a share of nothing: NaN
                self.patching = patch.normalised().numpy()

    def check_memory(self) -> None:
        """Ask the memory guard before a forward pass (it raises ``RequestRefused`` with the need and the budget).

        The largest one records every layer's attention pattern for both sentences; the others need less.
        """
        config = self.pretrained.config
        check("attention_math", self.inputs.longest, d=config.hidden_size, heads=config.num_attention_heads,
              batch=2 * config.num_hidden_layers)

    def similarity(self, ablated: Sequence[tuple[int, int]] = (), how: str = "zero",
                   means: dict[str, torch.Tensor] | None = None) -> float:
        """The pair's cosine similarity with the heads ``ablated`` ablated (:func:`head_edits`); the blocks before
        the first ablated layer are not run again (:func:`pair_forward`)."""
        self.check_memory()
        model = self.pretrained.model
        output = run_with_edits(model, pair_forward, self.inputs, head_edits(model, ablated, how, means))
        return float(pair_similarity()(output)[0])

    def query_key(self, layer: int, head: int, sentence: int, query: int) -> QueryKeyView:
        """:func:`~explorer.analysis.intervention.query_key_view` of one head and query in sentence 0 (A) or 1 (B),
        trimmed to that sentence's real tokens (its padding keys carry no weight)."""
        config = self.pretrained.config
        layer = check_int("layer", layer, 0, config.num_hidden_layers - 1)
        sentence = check_int("sentence", sentence, 0, 1, note="0 = A, 1 = B")
        length = len(self.tokens[sentence])
        query = check_int("query", query, 0, length - 1, note="a token position of the sentence")
        self.check_memory()
        view = query_key_view(self.pretrained.model, pair_forward, self.inputs, f"blocks.{layer}.attn", head, query,
                              batch=sentence)  # interleaved: row 0 is A, row 1 is B
        keep = slice(0, length)
        return QueryKeyView(view.layer, view.head, view.query, view.scale, view.q, view.k[keep],
                            view.product[keep], view.dots[keep], view.bias[keep], view.scores[keep],
                            view.softmax[keep])


class PairBatch:
    """A batch of pairs whose A's each pick a partner among the batch's B (:func:`matching`), intact and with heads
    ablated; it also holds the heads' mean activations that mean ablation sets them to.

    Args:
        pretrained: a :class:`explorer.models.Pretrained` (its model is not modified).
        pairs: ``((a, b, shared), ...)``; default :func:`fixed_batch`.

    Attributes:
        pairs: as given.
        inputs: interleaved :class:`Sentences` ``[2 * pairs, token]``.
        means: :func:`head_means` over every real token of the batch, ``{hook_name: [1, head, 1, head_dim]}``.
        clean: :meth:`measure` of the intact model: ``(similarity [pairs], probability [pairs], accuracy)``.
    """

    def __init__(self, pretrained: Any, pairs: Sequence[tuple[str, str, str]] | None = None) -> None:
        self.pretrained = pretrained
        self.pairs = fixed_batch() if pairs is None else tuple(pairs)
        self.inputs = encode_pairs(pretrained.tokenizer, [(p[0], p[1]) for p in self.pairs])
        self.check_memory()
        self.means = head_means(pretrained.model, self.inputs)
        self.clean = self.measure()

    def check_memory(self) -> None:
        """Ask the memory guard before a forward pass of the batch (``RequestRefused`` if it does not fit)."""
        config = self.pretrained.config
        check("attention_math", self.inputs.longest, d=config.hidden_size, heads=config.num_attention_heads,
              batch=self.inputs.rows)

    def measure(self, ablated: Sequence[tuple[int, int]] = (), how: str = "zero"
                ) -> tuple[np.ndarray, np.ndarray, float]:
        """:func:`matching` of the batch with the heads ``ablated`` ablated (``how="mean"``: to :attr:`means`);
        the blocks before the first ablated layer are not run again."""
        self.check_memory()
        model = self.pretrained.model
        return matching(run_with_edits(model, pair_forward, self.inputs, head_edits(model, ablated, how, self.means)))
