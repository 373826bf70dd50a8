"""Intervene: switch MiniLM's attention heads off one by one and watch a sentence pair's similarity change.

Attention maps say where a head looks; they do not say whether the output needs it. This tab asks the model: a
layer x head grid of toggles zero- (or mean-) ablates heads at ``hook_z`` (before the output projection, where
heads are separate; :func:`explorer.intervene`), and the output is recomputed at once -- the pair's cosine
similarity, and for a fixed batch of generated pairs each pair's similarity, the probability that sentence A picks
its own partner among the batch's sentences B, and the accuracy of that pick. Beside it, three numbers per head,
computed once per pair: the attention the pair puts on the word the two sentences share, the gradient importance
``|d similarity / d xi|`` of a multiplicative head mask (Michel, Levy & Neubig 2019,
https://arxiv.org/abs/1905.10650), and the measured effect of zero-ablating the head alone; then clean -> corrupted
activation patching (the shared word masked in A), and one head's query/key arithmetic.

The model side is :class:`PairExperiment` (no widgets; the lesson uses it too); :class:`InterveneApp` owns the
widgets. A pair is encoded as one padded batch of its two sentences (``[2 * pairs, token]`` with an attention mask),
and :func:`pair_forward` returns the mean-pooled embeddings ``[pairs, 2, embed]`` that
:func:`explorer.analysis.intervention.pair_similarity` reads.
"""

from __future__ import annotations

import contextlib
import functools
import html
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ipywidgets as W
import numpy as np
import torch
import torch.nn.functional as F
from ipywidgets.widgets.widget_bool import ToggleButtonStyle  # not exported at ipywidgets' top level
from torch import nn

from explorer._checks import check_choice, check_int, check_real, check_type
from explorer.analysis.agreement import _shared_word_tokens
from explorer.analysis.intervention import (QueryKeyView, ablation_sweep, gradient_importance, mean_ablation,
                                            pair_similarity, patching_sweep, query_key_view, zero_ablation)
from explorer.apps._callbacks import callback, quietly
from explorer.apps._comm_guard import harden
from explorer.apps._layout import WidthWatcher, figure_box, row
from explorer.apps._plot import PlotView
from explorer.guard import check
from explorer.hooks import Edit, intervene, record
from explorer.models import load_pretrained
from explorer.models.bert import BertOutput
from explorer.viz.intervene import head_numbers_figure, output_change_figure, patching_figure, query_key_figure

__all__ = ["InterveneApp", "PairExperiment", "CleanRun", "encode_pairs", "pair_forward", "pair_gradient",
           "shared_word", "matching", "token_means", "fixed_batch", "single_thread", "HOOKS", "MAX_CHARS",
           "MAX_TOKENS", "BATCH_PAIRS", "MATCH_SCALE", "ABLATIONS", "DEFAULT_A", "DEFAULT_B"]

HOOKS = "blocks.*.attn.hook_z"  # one unit hook per layer, [batch, head, query, head_dim]
MAX_CHARS = 200        # characters per sentence: a sentence, not an article
MAX_TOKENS = 64        # wordpieces per sentence, [CLS] and [SEP] included
BATCH_PAIRS = 8        # pairs of the fixed batch
BATCH_SEED = 0         # explorer.data.sentence_pairs seed of the fixed batch
MATCH_SCALE = 20.0     # cosine -> logit scale of the partner pick (sentence-transformers' ranking-loss default)
ABLATIONS = ("zero", "mean")
GAP = 1e-4             # clean - corrupted similarity below which patching shares are not computed (0 / 0)
DEFAULT_A = "The old teacher carefully repaired the broken piano in the kitchen."
DEFAULT_B = "Everyone wanted to hear the piano again."
# words too common to be "the word the pair shares"
STOPWORDS = frozenset("""a an and are as at be been but by did do does for from had has have he her his i in is it
its my no not of on or our she so that the their them then there they this to too was we were what when where which
who why will with you your""".split())

Pair = tuple[str, str]


# --- encoding and forward ---------------------------------------------------------------------------------------


def _check_sentence(name: str, text: object, max_chars: int = MAX_CHARS) -> str:
    check_type(name, text, str, "a str")
    if not text.strip():  # type: ignore[union-attr]
        raise ValueError(f"{name} is empty: type a sentence")
    length = len(text)  # type: ignore[arg-type]
    if length > max_chars:
        raise ValueError(f"{name} has {length:,} characters; at most {max_chars} are accepted here (one sentence)")
    return text  # type: ignore[return-value]


def encode_pairs(tokenizer: Any, pairs: Sequence[Pair], max_tokens: int = MAX_TOKENS) -> tuple[torch.Tensor,
                                                                                                torch.Tensor]:
    """Tokenize sentence pairs as one right-padded batch, A then B of each pair.

    Args:
        tokenizer: an :class:`explorer.models.Tokenizer`.
        pairs: ``[(a, b), ...]``, each sentence at most :data:`MAX_CHARS` characters.
        max_tokens: most wordpieces per sentence (``[CLS]`` and ``[SEP]`` included); a longer one is refused.

    Returns:
        ``(input_ids, attention_mask)``, LongTensors ``[2 * pairs, token]``; rows ``2p`` and ``2p + 1`` are pair
        ``p``'s A and B.

    Raises:
        TypeError / ValueError: a sentence that is not a str, empty, too long in characters or in tokens.
    """
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or not pairs:
        raise TypeError(f"pairs must be a non-empty list of (a, b) sentence tuples, got {type(pairs).__name__}")
    max_tokens = check_int("max_tokens", max_tokens, 3, 512)
    texts = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"pairs[{i}] must be a tuple (a, b) of two sentences, got {pair!r}")
        for name, text in zip(("sentence A", "sentence B"), pair):
            label = name if len(pairs) == 1 else f"pairs[{i}] {name}"
            _check_sentence(label, text)
            n = len(tokenizer.encode(text).tokens)
            if n > max_tokens:
                raise ValueError(f"{label} has {n} tokens; at most {max_tokens} are accepted here")
        texts += list(pair)
    return tokenizer.encode_batch(texts)


def pair_forward(model: nn.Module, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``(input_ids, attention_mask)`` ``[2 * pairs, token]`` -> mean-pooled embeddings ``[pairs, 2, embed]``
    (sentence-transformers' pooling over the real tokens), the output :func:`pair_similarity` reads."""
    ids, mask = inputs
    pooled = model(ids, mask).mean_pooled(mask)  # (2 * pairs, embed)
    return pooled.view(-1, 2, pooled.shape[-1])


def _sentence_forward(model: nn.Module, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    ids, mask = inputs
    return model(ids, mask).mean_pooled(mask)  # (2 * pairs, embed)


def _half_similarity(output: torch.Tensor) -> torch.Tensor:
    """``[2 * pairs, embed]`` -> ``[2 * pairs]``: half of each pair's cosine on both of its rows (they sum to it)."""
    similarity = F.cosine_similarity(output[0::2], output[1::2], dim=-1)  # (pairs,)
    return similarity.repeat_interleave(2) / 2


def pair_gradient(model: nn.Module, inputs: tuple[torch.Tensor, torch.Tensor], hooks: str = HOOKS) -> torch.Tensor:
    """``d similarity_p / d xi_{layer, head}`` at ``xi = 1``: the gradient of each pair's similarity with respect to
    a multiplicative mask on each head, one mask shared by the pair's two sentences (Michel et al. 2019).

    :func:`~explorer.analysis.intervention.gradient_importance` gives every row of the activation batch its own
    mask and differentiates the metric of that row; a pair is two rows. So the metric here puts half of the pair's
    similarity on each of its rows: the rows' gradients are then ``d sim_p / d xi_row`` (the sum over rows is
    ``sum_p sim_p``), and the shared mask's gradient is their sum (chain rule).

    Args:
        model: the encoder (eval mode; parameters' ``.grad`` untouched).
        inputs: ``(input_ids, attention_mask)`` from :func:`encode_pairs`.
        hooks: the unit hooks (default every layer's ``hook_z``).

    Returns:
        float64 ``[pairs, layer, head]``; the first-order prediction of zero-ablating a head is ``-gradient``.
    """
    rows = gradient_importance(model, _sentence_forward, inputs, _half_similarity, hooks).per_input  # (2P, L, H)
    return rows.view(-1, 2, *rows.shape[1:]).sum(1)


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


def token_means(model: nn.Module, inputs: tuple[torch.Tensor, torch.Tensor], hooks: str = HOOKS
                ) -> dict[str, torch.Tensor]:
    """Each head's mean ``hook_z`` vector over the real tokens of a reference batch (padding left out), for
    :func:`~explorer.analysis.intervention.mean_ablation` of inputs of any length.

    Returns:
        ``{hook_name: [1, head, 1, head_dim]}``.
    """
    ids, mask = inputs
    with torch.no_grad(), record(model, hooks) as trace:
        model(ids, mask)
    weights = mask.to(torch.float32)[:, None, :, None]  # (batch, 1, token, 1)
    return {name: ((z * weights).sum((0, 2)) / weights.sum()).view(1, z.shape[1], 1, z.shape[3])
            for name, z in trace.items()}  # z: (batch, head, token, head_dim)


class CleanRun:
    """A clean forward pass of ``inputs`` kept layer by layer, so that a run whose edits all act at layer ``l`` or
    later starts from the clean hidden state entering block ``l`` instead of the embeddings: blocks before the first
    edited one compute exactly what they computed clean. (A toggle of a head in layer 3 of 6 then runs 4 blocks.)

    Args:
        model: a :class:`~explorer.models.BertEncoder` (its ``blocks`` take ``(x, key_padding_mask, mask)``, as in
            its ``forward``).
        inputs: ``(input_ids, attention_mask)`` ``[2 * pairs, token]``.
    """

    def __init__(self, model: nn.Module, inputs: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.model, self.inputs = model, inputs
        ids, mask = inputs
        with torch.no_grad():
            output = model(ids, mask)
        self.hidden = output.hidden_states  # layers + 1 x (batch, token, embed): [l] enters block l
        padding = mask == 0  # (batch, token), True = padding, as BertEncoder.forward builds it
        self.key_padding_mask = padding if padding.any() else None

    def embeddings(self, edits: dict[str, Edit] | None = None, start: int = 0) -> torch.Tensor:
        """Mean-pooled embeddings ``[pairs, 2, embed]`` with ``edits`` applied, running blocks ``start`` onwards
        (every edit must act at block ``start`` or later; ``start = layers`` reads the clean output)."""
        layers = len(self.model.blocks)
        start = check_int("start", start, 0, layers)
        x = self.hidden[start]  # (batch, token, embed)
        with torch.no_grad(), (intervene(self.model, edits) if edits else contextlib.nullcontext()):
            for block in self.model.blocks[start:]:
                x = block(x, self.key_padding_mask, None)  # (batch, token, embed)
        pooled = BertOutput(last_hidden_state=x, hidden_states=()).mean_pooled(self.inputs[1])  # (2 * pairs, embed)
        return pooled.view(-1, 2, pooled.shape[-1])


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


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block, restoring the thread count afterwards.

    A visitor's kernel shares the server's cores with the other kernels and the web server; torch's OpenMP threads
    spin-wait for each other, so on 2 busy cores two threads are far slower than one (measured here, another
    process busy: a toggle took 1.65 s with 2 threads, 0.125 s with 1).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _single_threaded(action: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        with single_thread():
            action()
    return run


def _first_layer(ablated: Sequence[tuple[int, int]], run: CleanRun) -> int:
    """The first layer an ablation touches (the number of layers when there is none)."""
    return min((layer for layer, _ in ablated), default=len(run.model.blocks))


def _units(ablated: Sequence[tuple[int, int]]) -> dict[str, list[int]]:
    units: dict[str, list[int]] = {}
    for layer, head in sorted(ablated):
        units.setdefault(f"blocks.{layer}.attn.hook_z", []).append(head)
    return units


# --- one pair ---------------------------------------------------------------------------------------------------


class PairExperiment:
    """The heavy numbers of one sentence pair, computed once: similarity, gradient importance, every head's
    ablation effect, activation patching and the attention on the shared word.

    Args:
        pretrained: a :class:`explorer.models.Pretrained` (its model is not modified).
        a, b: the two sentences (at most :data:`MAX_CHARS` characters and :data:`MAX_TOKENS` tokens each).

    Attributes (``[layer, head]`` arrays are float64 numpy):
        inputs: ``(input_ids, attention_mask)`` ``[2, token]``.
        tokens: ``(A's tokens, B's tokens)``.
        word: the shared word (:func:`shared_word`) or None; ``word_tokens``: bool per token of A and of B.
        clean_similarity: the cosine similarity of the pair.
        gradient: ``d similarity / d xi`` per head (:func:`pair_gradient`); ``importance = |gradient|``.
        effect: similarity with the head zero-ablated minus ``clean_similarity`` (``ablation_sweep``).
        attention: attention on the shared word: for each sentence, the mean over its queries of the weight summed
            over the word's tokens, averaged over the two sentences (NaN without a shared word).
        patching: share of the similarity drop restored when the head's clean ``hook_z`` is patched into the
            corrupted run (the word's tokens in A replaced by ``[MASK]``; ``patching_sweep(...).normalised()``);
            NaN without a shared word or when masking it moves the similarity by less than :data:`GAP`.
            ``corrupted_inputs``, ``corrupted_similarity`` (None without a word).
    """

    def __init__(self, pretrained: Any, a: str, b: str) -> None:
        a, b = _check_sentence("sentence A", a), _check_sentence("sentence B", b)
        self.pretrained = pretrained
        model, tokenizer, config = pretrained.model, pretrained.tokenizer, pretrained.config
        self.a, self.b = a, b
        self.inputs = encode_pairs(tokenizer, [(a, b)])
        ids, mask = self.inputs
        layers, heads = config.num_hidden_layers, config.num_attention_heads
        self.check_memory()
        encodings = (tokenizer.encode(a), tokenizer.encode(b))
        self.tokens = tuple(list(e.tokens) for e in encodings)
        self.word = shared_word(a, b)
        self.word_tokens = tuple(_shared_word_tokens(e, text, self.word) for e, text in zip(encodings, (a, b)))
        if self.word is not None and not all(hits.any() for hits in self.word_tokens):
            self.word = None  # a word the tokenizer dropped (only [UNK] pieces, say): nothing to point at

        metric = pair_similarity()
        self.clean = CleanRun(model, self.inputs)
        self.clean_similarity = self.similarity()
        self.gradient = pair_gradient(model, self.inputs)[0].numpy()  # (layer, head)
        self.importance = np.abs(self.gradient)
        sweep = ablation_sweep(model, pair_forward, self.inputs, metric, HOOKS)
        self.effect = sweep.effect.numpy()  # (layer, head)

        with torch.no_grad(), record(model, "blocks.*.attn.hook_pattern") as trace:
            pair_forward(model, self.inputs)
        patterns = torch.stack([trace[f"blocks.{l}.attn.hook_pattern"] for l in range(layers)])  # (L, 2, H, q, k)
        self.attention = np.full((layers, heads), np.nan)
        self.patching = np.full((layers, heads), np.nan)
        self.corrupted_inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.corrupted_similarity: float | None = None
        if self.word is not None:
            per_sentence = []
            for s, hits in enumerate(self.word_tokens):
                length = len(hits)
                rows = patterns[:, s, :, :length, :length][..., torch.from_numpy(hits)].sum(-1)  # (L, H, query)
                per_sentence.append(rows.double().mean(-1))
            self.attention = torch.stack(per_sentence).mean(0).numpy()
            corrupted = ids.clone()
            corrupted[0, :len(self.word_tokens[0])][torch.from_numpy(self.word_tokens[0])] = _mask_id(tokenizer)
            self.corrupted_inputs = (corrupted, mask)
            patch = patching_sweep(model, pair_forward, self.inputs, self.corrupted_inputs, metric, HOOKS)
            self.corrupted_similarity = float(patch.baseline.mean())
            if abs(self.clean_similarity - self.corrupted_similarity) > GAP:  # else a share of nothing: NaN
                self.patching = patch.normalised().numpy()

    def check_memory(self) -> None:
        """Ask the memory guard before a forward pass (it raises ``RequestRefused`` with the need and the budget).

        The largest one records every layer's attention pattern for both sentences; the others need less.
        """
        config = self.pretrained.config
        check("attention_math", self.inputs[0].shape[1], d=config.hidden_size, heads=config.num_attention_heads,
              batch=2 * config.num_hidden_layers)

    def edits(self, ablated: Sequence[tuple[int, int]], how: str = "zero",
              means: dict[str, torch.Tensor] | None = None) -> dict[str, Edit] | None:
        """Edits ablating the ``(layer, head)`` pairs in ``ablated`` (None when it is empty).

        Args:
            ablated: 0-based ``(layer, head)`` pairs.
            how: ``"zero"`` or ``"mean"`` (``means`` from :func:`token_means`).
        """
        check_choice("how", how, ABLATIONS)
        units = _units(ablated)
        if not units:
            return None
        if how == "mean":
            if means is None:
                raise ValueError("how='mean' needs means (token_means of a reference batch)")
            return mean_ablation(self.pretrained.model, units, means)
        return zero_ablation(self.pretrained.model, units)

    def similarity(self, ablated: Sequence[tuple[int, int]] = (), how: str = "zero",
                   means: dict[str, torch.Tensor] | None = None) -> float:
        """The pair's cosine similarity with the ``(layer, head)`` pairs in ``ablated`` ablated (see :meth:`edits`);
        the blocks before the first ablated layer are not run again (:class:`CleanRun`)."""
        self.check_memory()
        output = self.clean.embeddings(self.edits(ablated, how, means), _first_layer(ablated, self.clean))
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
                              batch=sentence)
        keep = slice(0, length)
        return QueryKeyView(view.layer, view.head, view.query, view.scale, view.q, view.k[keep],
                            view.product[keep], view.dots[keep], view.bias[keep], view.scores[keep],
                            view.softmax[keep])


def _mask_id(tokenizer: Any) -> int:
    """The id of ``[MASK]`` (``[UNK]`` for a vocabulary without it), found through the tokenizer itself."""
    for token in ("[MASK]", "[UNK]"):
        encoding = tokenizer.encode(token)
        if encoding.tokens[1:-1] == [token]:
            return int(encoding.input_ids[0, 1])
    raise ValueError("the tokenizer has neither a [MASK] nor an [UNK] token to corrupt the shared word with")


# --- the app ----------------------------------------------------------------------------------------------------


class InterveneApp:
    """Widget app: ablate MiniLM's heads from a layer x head grid and see the output change.

    Args:
        a, b: the starting pair (default: two sentences sharing "piano").
        how: ``"zero"`` or ``"mean"`` ablation (mean: each head's mean ``hook_z`` over the fixed batch's tokens).
        checkpoint: a local Hugging Face-format folder; None = all-MiniLM-L6-v2 from its package.

    State tests read: ``ablated`` (set of 0-based ``(layer, head)``), ``how``, ``experiment``
    (:class:`PairExperiment`: ``clean_similarity``, ``attention``, ``importance``, ``gradient``, ``effect``,
    ``patching``), ``similarity`` (the pair now), ``batch_similarity`` / ``clean_batch_similarity``,
    ``batch_probability`` / ``clean_batch_probability`` (``[pairs]``), ``accuracy`` / ``clean_accuracy``, ``qk``
    (the :class:`~explorer.analysis.intervention.QueryKeyView` drawn). Widgets: ``sentence_a``, ``sentence_b``,
    ``analyse``, ``cells[(layer, head)]`` (toggles), ``ablation``, ``reset``, ``qk_layer``, ``qk_head``,
    ``qk_sentence``, ``qk_query``; ``status`` (``data-*`` attributes say what is drawn), ``message`` (errors).
    """

    def __init__(self, a: str = DEFAULT_A, b: str = DEFAULT_B, how: str = "zero", checkpoint=None) -> None:
        check_choice("how", how, ABLATIONS)
        with single_thread():
            self._build(a, b, how, checkpoint)

    def _build(self, a: str, b: str, how: str, checkpoint) -> None:
        self.pretrained = load_pretrained(checkpoint)
        model, tokenizer, config = self.pretrained.model, self.pretrained.tokenizer, self.pretrained.config
        self.layers, self.heads = config.num_hidden_layers, config.num_attention_heads

        # the fixed batch: its clean numbers and the heads' mean activations, once
        self.batch_pairs = fixed_batch()
        self.batch_inputs = encode_pairs(tokenizer, [(p[0], p[1]) for p in self.batch_pairs])
        self._check_batch()
        self.means = token_means(model, self.batch_inputs)
        self.batch_clean = CleanRun(model, self.batch_inputs)
        clean = self.batch_clean.embeddings(start=self.layers)
        self.clean_batch_similarity, self.clean_batch_probability, self.clean_accuracy = matching(clean)
        self.experiment = PairExperiment(self.pretrained, a, b)
        self.ablated: set[tuple[int, int]] = set()
        self.how = how
        self._busy = False
        self.similarity, self.batch_similarity, self.batch_probability, self.accuracy = self._compute_output(
            self.experiment, self.ablated, how)

        style = {"description_width": "80px"}
        text = {"layout": W.Layout(flex="1 1 420px", min_width="240px", max_width="640px"), "style": style}
        self.sentence_a = W.Text(value=a, description="sentence A", placeholder="a sentence", **text)
        self.sentence_b = W.Text(value=b, description="sentence B", placeholder="a sentence sharing a word", **text)
        self.analyse = W.Button(description="Analyse pair", button_style="primary", icon="play",
                                layout=W.Layout(width="140px"))
        self.ablation = W.ToggleButtons(options=[("zero", "zero"), ("mean", "mean")], value=how,
                                        description="ablation", style={"button_width": "60px",
                                                                       "description_width": "60px"},
                                        tooltips=["set the head's output to 0",
                                                  "set it to its mean over the batch's tokens"])
        self.reset = W.Button(description="Reset", icon="undo", layout=W.Layout(width="100px"))
        # 72 toggles share one layout and one style: three comm models instead of 216
        cell_layout = W.Layout(width="34px", height="28px", padding="0", margin="0")
        cell_style = ToggleButtonStyle()
        self.cells: dict[tuple[int, int], W.ToggleButton] = {}
        grid: list[W.Widget] = [W.HTML("")] + [W.HTML(f"<div style='text-align:center'>{h + 1}</div>")
                                               for h in range(self.heads)]
        for layer in range(self.layers):
            grid.append(W.HTML(f"<b>L{layer + 1}</b>"))
            for head in range(self.heads):
                cell = W.ToggleButton(value=False, description=str(head + 1), layout=cell_layout, style=cell_style,
                                      tooltip=f"ablate layer {layer + 1}, head {head + 1}")
                cell.add_class("iv-cell")
                cell.add_class(f"iv-cell-{layer}-{head}")
                self.cells[layer, head] = cell
                grid.append(cell)
        self.grid = W.GridBox(grid, layout=W.Layout(grid_template_columns=f"28px repeat({self.heads}, 34px)",
                                                    grid_gap="2px", width="fit-content"))
        self.qk_layer = W.Dropdown(options=[(str(l + 1), l) for l in range(self.layers)], description="layer",
                                   style={"description_width": "40px"}, layout=W.Layout(width="110px"))
        self.qk_head = W.Dropdown(options=[(str(h + 1), h) for h in range(self.heads)], description="head",
                                  style={"description_width": "40px"}, layout=W.Layout(width="110px"))
        self.qk_sentence = W.ToggleButtons(options=[("A", 0), ("B", 1)], value=0, description="sentence",
                                           style={"button_width": "40px", "description_width": "60px"})
        self.qk_query = W.Dropdown(options=[("0", 0)], description="query", style={"description_width": "45px"},
                                   layout=W.Layout(width="240px"))
        self.status = W.HTML()
        self.message = W.HTML()
        for widget, name in ((self.sentence_a, "iv-a"), (self.sentence_b, "iv-b"), (self.analyse, "iv-analyse"),
                             (self.ablation, "iv-ablation"), (self.reset, "iv-reset"), (self.grid, "iv-grid"),
                             (self.qk_layer, "iv-qk-layer"), (self.qk_head, "iv-qk-head"),
                             (self.qk_sentence, "iv-qk-sentence"), (self.qk_query, "iv-qk-query"),
                             (self.status, "iv-status"), (self.message, "iv-message")):
            widget.add_class(name)

        # the query/key view starts on the head whose ablation moves the similarity most
        layer, head = np.unravel_index(int(np.nanargmax(np.abs(self.experiment.effect))), self.experiment.effect.shape)
        self.qk_layer.value, self.qk_head.value = int(layer), int(head)
        self._set_query_options()
        self.qk = self._compute_qk()
        self.output_figure = PlotView(self._output_figure(), "iv-output")
        self.heads_figure = PlotView(self._heads_figure(), "iv-heads")
        self.patching_figure = PlotView(self._patching_figure(), "iv-patching")
        self.qk_figure = PlotView(self._qk_figure(), "iv-qk")
        self._update_status()

        def on(action):
            return callback(_single_threaded(action), self.message, "iv-error")

        for cell in self.cells.values():
            cell.observe(on(self._on_toggle), names="value")
        self.ablation.observe(on(self._on_ablation), names="value")
        self.reset.on_click(on(self._on_reset))
        self.analyse.on_click(on(self._on_analyse))
        for control in (self.qk_layer, self.qk_head, self.qk_query):
            control.observe(on(self._on_qk), names="value")
        self.qk_sentence.observe(on(self._on_qk_sentence), names="value")

        self.widget = W.VBox([
            W.HTML("<b>Which heads does the output need?</b> <small>Attention maps show where a head looks, not "
                   "whether the model uses it. Click a head in the grid to switch it off (ablate it) and watch the "
                   "similarity of the two sentences, and of a fixed batch of pairs, change. Below: three numbers per "
                   "head for this pair, computed once per pair.</small>"),
            row([self.sentence_a]),
            row([self.sentence_b, self.analyse], align="center"),
            self.message,
            self.status,
            row([W.VBox([row([self.ablation, self.reset], align="center"), self.grid]),
                 figure_box(self.output_figure, 620, min_width=320)]),
            W.HTML("<b>Three numbers per head</b> <small>(this pair): the attention it puts on the shared word, the "
                   "gradient importance of a head mask ξ (Michel et al. 2019), and the measured effect of "
                   "zero-ablating it alone. Do they agree?</small>"),
            row([figure_box(self.heads_figure, 980, min_width=320)]),
            row([figure_box(self.patching_figure, 620, min_width=320)]),
            W.HTML("<b>Query and key</b> <small>How one head's attention from one token is made: the query times "
                   "each key, summed (the dot product), scaled, softmaxed.</small>"),
            row([self.qk_layer, self.qk_head, self.qk_sentence, self.qk_query], align="center"),
            row([figure_box(self.qk_figure, 980, min_width=320)]),
            WidthWatcher(),
        ])
        self.widget.add_class("iv-app")
        harden(self.widget, self.message, "iv-error")

    # --- computation ----------------------------------------------------------------------------------
    def _check_batch(self) -> None:
        config = self.pretrained.config
        check("attention_math", self.batch_inputs[0].shape[1], d=config.hidden_size,
              heads=config.num_attention_heads, batch=self.batch_inputs[0].shape[0])

    def _compute_output(self, experiment: PairExperiment, ablated: set[tuple[int, int]], how: str
                        ) -> tuple[float, np.ndarray, np.ndarray, float]:
        """``(similarity, batch similarity, batch partner probability, accuracy)`` with ``ablated`` ablated: two
        forward passes from the first ablated layer. Changes no state (a refusal leaves the app as it was)."""
        self._check_batch()
        ordered = sorted(ablated)
        similarity = experiment.similarity(ordered, how, self.means)
        edits = experiment.edits(ordered, how, self.means)
        output = self.batch_clean.embeddings(edits, _first_layer(ordered, self.batch_clean))
        return (similarity, *matching(output))

    def _apply(self, experiment: PairExperiment, ablated: set[tuple[int, int]], how: str) -> None:
        """Compute the output for this state and, only if that worked, make it the app's state."""
        numbers = self._compute_output(experiment, ablated, how)
        self.experiment, self.ablated, self.how = experiment, set(ablated), how
        self.similarity, self.batch_similarity, self.batch_probability, self.accuracy = numbers

    def _sync_controls(self) -> None:
        """The grid and the ablation choice show the app's state (after a refusal: what it was before)."""
        with quietly(self):
            for key, cell in self.cells.items():
                cell.value = key in self.ablated
                cell.button_style = "danger" if cell.value else ""
            self.ablation.value = self.how

    def _redraw_output(self) -> None:
        self.output_figure.update(self._output_figure())
        self._update_status()

    def _compute_qk(self) -> QueryKeyView:
        return self.experiment.query_key(self.qk_layer.value, self.qk_head.value, self.qk_sentence.value,
                                         self.qk_query.value)

    def _set_query_options(self) -> None:
        """Query choices of the chosen sentence; the shared word's first token selected (else [CLS])."""
        sentence = self.qk_sentence.value
        tokens = self.experiment.tokens[sentence]
        hits = np.flatnonzero(self.experiment.word_tokens[sentence])
        with quietly(self):
            self.qk_query.options = [(f"{i}: {t}", i) for i, t in enumerate(tokens)]
            self.qk_query.value = int(hits[0]) if hits.size else 0

    # --- figures and text -----------------------------------------------------------------------------
    def _output_figure(self):
        return output_change_figure((self.experiment.clean_similarity, self.similarity), self.clean_batch_similarity,
                                    self.batch_similarity, self.clean_batch_probability, self.batch_probability,
                                    [p[2] for p in self.batch_pairs], (self.clean_accuracy, self.accuracy),
                                    len(self.ablated))

    def _heads_figure(self):
        e = self.experiment
        return head_numbers_figure(e.attention, e.importance, e.effect, e.word)

    def _patching_figure(self):
        e = self.experiment
        return patching_figure(e.patching, e.clean_similarity,
                               np.nan if e.corrupted_similarity is None else e.corrupted_similarity, e.word)

    def _qk_figure(self):
        v = self.qk
        tokens = self.experiment.tokens[self.qk_sentence.value]
        title = (f"layer {self.qk_layer.value + 1}, head {v.head + 1}: query '{html.escape(tokens[v.query])}' "
                 f"(position {v.query}) in sentence {'AB'[self.qk_sentence.value]}")
        return query_key_figure(v.q.numpy(), v.k.numpy(), v.product.numpy(), v.dots.numpy(), v.softmax.numpy(),
                                tokens, v.query, title)

    def _update_status(self) -> None:
        e = self.experiment
        heads = ", ".join(f"L{l + 1}H{h + 1}" for l, h in sorted(self.ablated)) or "none"
        word = "no shared word" if e.word is None else f"shared word <b>{html.escape(e.word)}</b>"
        attributes = {
            "similarity": repr(self.similarity), "clean-similarity": repr(e.clean_similarity),
            "ablated": ",".join(f"{l}.{h}" for l, h in sorted(self.ablated)), "how": self.how,
            "batch-similarity": repr(float(np.mean(self.batch_similarity))), "accuracy": repr(self.accuracy),
            "shared": e.word or "", "a": e.a, "b": e.b,
        }
        data = " ".join(f"data-{key}=\"{html.escape(value, quote=True)}\"" for key, value in attributes.items())
        # data-*: what was computed and drawn, for tests and page scripts (the page's controls may be ahead)
        self.status.value = (f"<div class='iv-reading' style='font-size:14px' {data}>Similarity "
                             f"<b>{e.clean_similarity:.4f}</b> → <b>{self.similarity:.4f}</b> "
                             f"({self.how}-ablated: {heads}); {word}. Batch of {len(self.batch_pairs)} pairs: mean "
                             f"similarity {np.mean(self.clean_batch_similarity):.3f} → "
                             f"{np.mean(self.batch_similarity):.3f}, partner picked right "
                             f"{self.clean_accuracy:.0%} → {self.accuracy:.0%}.</div>")

    # --- callbacks: public endpoints, run through ``callback`` (they never raise into the kernel) ----------
    def _on_toggle(self) -> None:
        if self._busy:
            return
        try:
            self._apply(self.experiment, {key for key, cell in self.cells.items() if cell.value}, self.how)
        finally:
            self._sync_controls()
        self._redraw_output()

    def _on_ablation(self) -> None:
        if self._busy:
            return
        try:
            self._apply(self.experiment, self.ablated, self.ablation.value)
        finally:
            self._sync_controls()
        self._redraw_output()

    def _on_reset(self) -> None:
        try:
            self._apply(self.experiment, set(), self.how)
        finally:
            self._sync_controls()
        self._redraw_output()

    def _on_analyse(self) -> None:
        experiment = PairExperiment(self.pretrained, self.sentence_a.value, self.sentence_b.value)  # may refuse
        self._apply(experiment, self.ablated, self.how)
        self._set_query_options()
        self.qk = self._compute_qk()
        self.output_figure.update(self._output_figure())
        self.heads_figure.update(self._heads_figure())
        self.patching_figure.update(self._patching_figure())
        self.qk_figure.update(self._qk_figure())
        self._update_status()

    def _on_qk_sentence(self) -> None:
        if self._busy:
            return
        self._set_query_options()
        self._on_qk()

    def _on_qk(self) -> None:
        if self._busy:
            return
        self.qk = self._compute_qk()
        self.qk_figure.update(self._qk_figure())

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
