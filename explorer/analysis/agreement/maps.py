"""The maps the agreement study compares: gradient-weighted attention and its rollout (Chefer et al.), and
every map of the ViT (:func:`vit_maps`) and of MiniLM (:func:`minilm_maps`) for a batch of inputs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from explorer._checks import check_choice, check_int, check_real, check_tensor, check_type
from explorer._modes import evaluating
from explorer.analysis.agreement.settings import IG_METHOD, IG_STEPS, PRIMARY, VIT_GRAY


# --- gradient-weighted attention ----------------------------------------------------------------------------------


def gradient_weighted_attention(patterns: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """``mean_h (A_h * dA_h)^+``: attention times its gradient, negative products clamped to 0, mean over heads.

    Args:
        patterns: ``[..., head, query, key]`` attention probabilities.
        gradients: the gradient of the target with respect to ``patterns``, same shape.

    Returns:
        ``[..., query, key]``.
    """
    check_tensor("patterns", patterns, "[..., head, query, key]", min_ndim=3)
    check_tensor("gradients", gradients, "[..., head, query, key]")
    if gradients.shape != patterns.shape:
        raise ValueError(f"gradients must have the shape of patterns {tuple(patterns.shape)}, got "
                         f"{tuple(gradients.shape)}")
    return (patterns * gradients).clamp(min=0).mean(dim=-3)


def gradient_rollout(weighted: torch.Tensor) -> torch.Tensor:
    """Chefer et al.'s (ICCV 2021) relevance rule for self-attention: ``R = I``, then ``R <- R + A_bar_l R`` per layer.

    Args:
        weighted: ``[layer, ..., token, token]``, each layer's :func:`gradient_weighted_attention`.

    Returns:
        ``[..., token, token]``: row ``i`` is the relevance of every input token for the output at ``i``.
    """
    check_tensor("weighted", weighted, "[layer, ..., token, token]", min_ndim=3)
    if weighted.shape[-1] != weighted.shape[-2]:
        raise ValueError(f"weighted must be square in its last two dims [token, token], got {tuple(weighted.shape)}")
    n = weighted.shape[-1]
    relevance = torch.eye(n, dtype=weighted.dtype, device=weighted.device).expand(weighted.shape[1:]).clone()
    for layer in weighted:
        relevance = relevance + layer @ relevance
    return relevance


# --- per-model maps -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ModelMaps:
    """The maps of one model on a batch of inputs (:func:`vit_maps`, :func:`minilm_maps`); float64 numpy rows."""

    maps: dict[str, list[np.ndarray]]        # map name -> one score per unit, per input
    references: dict[str, list[np.ndarray]]  # IG variants (PRIMARY first), same shapes
    keep: list[np.ndarray]                   # per input, bool per unit: ranked (False: [CLS] / [SEP])
    targets: list[np.ndarray]                # per input, bool per unit: the pointing target
    ig: dict[str, dict[str, Any]]            # per IG run: baseline, steps, per-input delta / gap / f(x)
    inputs: list[dict[str, Any]]             # per input: what it is
    seconds: dict[str, float] = field(default_factory=dict)


def _rows_of(tensor: torch.Tensor) -> list[np.ndarray]:
    return [row for row in tensor.detach().cpu().to(torch.float64).numpy()]


def patch_sums(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """``[batch, height, width]`` -> ``[batch, patch]`` (row-major patch order), summed over each ``patch x patch``
    block of pixels (height and width multiples of ``patch``)."""
    batch, height, width = pixels.shape
    grid = pixels.reshape(batch, height // patch, patch, width // patch, patch).sum(dim=(2, 4))
    return grid.reshape(batch, -1)


def vit_maps(model: torch.nn.Module, images: torch.Tensor, steps: int = IG_STEPS["vit"],
             gray: float = VIT_GRAY) -> ModelMaps:
    """Every map of this module for a ViT on a batch of images, one score per patch (``[CLS]`` is not a unit).

    Attention, rollout, the logit gradient and IG come from :mod:`explorer.analysis.looks_at`; the gradient-weighted
    maps from the patterns recorded with their graph (``record(..., detach=False)``). Target: the predicted class.

    Args:
        model: a :class:`~explorer.models.vision.SmallViT` with ``[CLS]`` pooling (e.g. ``load_head_to_head("vit")``).
        images: float ``[batch, channel, height, width]``.
        steps: IG integration points.
        gray: the second IG baseline's uniform value.

    Returns:
        :class:`ModelMaps`; maps ``attention`` (last layer), ``attention_L{l}``, ``rollout``, ``grad_attention``,
        ``grad_rollout``, ``gradient``; references ``ig`` (black baseline) and ``ig_gray``; targets: patches with
        any nonzero pixel.
    """
    from explorer.analysis.looks_at import (
        PATTERN_HOOKS, _check_images, cls_attention, integrated_gradients_map, logit_gradient,
        rollout_map,
    )
    from explorer.hooks import record
    from explorer.models.vision import SmallViT

    check_type("model", model, SmallViT, "a SmallViT (explorer.models.vision)")
    if model.config.pooling != "cls":
        raise ValueError("model must read out a [CLS] token (pooling='cls'): the maps are read at its row")
    steps = check_int("steps", steps, 1, integral=True, note="integration points")
    check_real("gray", gray, note="the second baseline's pixel value")
    x = _check_images(model, images)  # (batch, channel, H, W) in the model's dtype
    patch, depth = model.config.patch, model.config.depth
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    with evaluating(model), torch.enable_grad(), record(model, PATTERN_HOOKS, detach=False) as trace:
        logits = model(x)  # (batch, classes)
        target = logits.detach().argmax(dim=-1)  # (batch,)
        names = [f"blocks.{i}.attn.hook_pattern" for i in range(depth)]
        patterns = [trace[name] for name in names]  # each (batch, head, token, token), with their graph
        chosen = logits.gather(1, target[:, None]).sum()
        grads = torch.autograd.grad(chosen, patterns)
    stacked = torch.stack([p.detach() for p in patterns])  # (layer, batch, head, token, token)
    weighted = gradient_weighted_attention(stacked, torch.stack(grads))  # (layer, batch, token, token)
    readout = cls_attention(model, x).mean(dim=2).flatten(2)  # (layer, batch, patches): [CLS] row, heads averaged
    maps = {"attention": _rows_of(readout[-1])}
    for layer in range(depth - 1):
        maps[f"attention_L{layer}"] = _rows_of(readout[layer])
    maps["rollout"] = _rows_of(rollout_map(model, x).flatten(1))
    maps["grad_attention"] = _rows_of(weighted[-1][:, 0, 1:])
    maps["grad_rollout"] = _rows_of(gradient_rollout(weighted)[:, 0, 1:])
    seconds["attention_maps"] = time.perf_counter() - start

    start = time.perf_counter()
    maps["gradient"] = _rows_of(patch_sums(logit_gradient(model, x, target), patch))
    seconds["gradient"] = time.perf_counter() - start

    references: dict[str, list[np.ndarray]] = {}
    ig: dict[str, dict[str, Any]] = {}
    for name, value in ((PRIMARY, 0.0), ("ig_gray", float(gray))):
        start = time.perf_counter()
        saliency, delta = integrated_gradients_map(model, x, target, steps, value)  # (batch, H, W), (batch,)
        references[name] = _rows_of(patch_sums(saliency, patch))
        with evaluating(model), torch.no_grad():
            at_x = model(x).gather(1, target[:, None])[:, 0]
            at_b = model(torch.full_like(x, value)).gather(1, target[:, None])[:, 0]
        ig[name] = {"baseline": f"uniform {value:g}", "steps": steps, "method": IG_METHOD,
                    "aggregation": "sum of |IG| over the patch's pixels",
                    "delta": delta.tolist(), "gap": (at_x - at_b).tolist(), "f_x": at_x.tolist()}
        seconds[name] = time.perf_counter() - start

    ink = patch_sums(x.ne(0).any(dim=1).to(torch.float64), patch) > 0  # (batch, patches)
    keep = [np.ones(ink.shape[1], dtype=bool) for _ in range(len(x))]
    inputs = [{"predicted": int(t), "target": int(t), "n_units": int(ink.shape[1]), "n_target_units": int(h.sum())}
              for t, h in zip(target, ink)]
    return ModelMaps(maps=maps, references=references, keep=keep, targets=[row.numpy() for row in ink],
                     ig=ig, inputs=inputs, seconds=seconds)


class PairSimilarity:
    """The MiniLM target for one pair as a function of sentence A's word embeddings.

    ``f(word) = cos(mean_tokens(encoder(LayerNorm(word + position + segment))), e_B)``: the same computation as
    ``BertEncoder.forward`` from the embedding sum on (one sentence, no padding), mean-pooled over all of A's
    tokens (``[CLS]`` and ``[SEP]`` included, as sentence-transformers pools), cosine with the fixed mean-pooled
    embedding ``e_B`` of B.

    Args:
        pretrained: a :class:`~explorer.models.Pretrained` (its model is not modified).
        a: sentence A (attributed).
        b: sentence B (held fixed).
    """

    def __init__(self, pretrained: Any, a: str, b: str) -> None:
        self.model = pretrained.model
        self.tokenizer = pretrained.tokenizer
        self.encoding = self.tokenizer.encode(a)
        ids = self.encoding.input_ids  # (1, token)
        with torch.no_grad():
            self.target_embedding = self.model(self.tokenizer.encode(b).input_ids).mean_pooled()[0]  # (embed,)
            self.word = self.model.embeddings.word_embeddings(ids).detach()  # (1, token, embed)
        self.special = torch.tensor(self.encoding.special)  # (token,)

    def __call__(self, word: torch.Tensor) -> torch.Tensor:
        """``[batch, token, embed]`` word embeddings -> similarity ``[batch]``."""
        emb = self.model.embeddings
        n = word.shape[1]
        positions = torch.arange(n, device=word.device)
        segments = torch.zeros(n, dtype=torch.long, device=word.device)
        x = emb.hook_out(emb.norm(word + emb.position_embeddings(positions) + emb.token_type_embeddings(segments)))
        for block in self.model.blocks:
            x = block(x, None, None)  # (batch, token, embed)
        pooled = x.mean(dim=1)  # (batch, embed): every token is real
        return torch.nn.functional.cosine_similarity(pooled, self.target_embedding[None], dim=-1)

    def baseline(self, kind: str) -> torch.Tensor:
        """``"pad"``: non-special tokens' word embeddings replaced by ``[PAD]``'s; ``"zero"``: by zeros."""
        check_choice("kind", kind, ("pad", "zero"))
        base = self.word.clone()
        if kind == "pad":
            base[0, ~self.special] = self.model.embeddings.word_embeddings.weight[self.tokenizer.pad_id].detach()
        else:  # "zero"
            base[0, ~self.special] = 0.0
        return base

    def integrated_gradients(self, kind: str, steps: int = IG_STEPS["minilm"]) -> tuple[torch.Tensor, float]:
        """captum IG of the similarity w.r.t. the word embeddings: ``(attributions [token, embed], delta)``."""
        from captum.attr import IntegratedGradients

        steps = check_int("steps", steps, 1, integral=True, note="integration points")
        attributions, delta = IntegratedGradients(self).attribute(
            self.word, baselines=self.baseline(kind), n_steps=steps, method=IG_METHOD,
            internal_batch_size=steps, return_convergence_delta=True)
        return attributions.detach()[0], float(delta[0])


def shared_word_tokens(encoding: Any, text: str, word: str | None) -> np.ndarray:
    """Which tokens lie inside a whole-word occurrence of ``word`` in ``text`` (case-insensitive), by the tokens'
    character offsets.

    Args:
        encoding: the tokenizer's encoding of ``text`` (``tokens``, ``offsets``, ``special``).
        text: the encoded text.
        word: the word, or None (no token).

    Returns:
        bool ``[token]``; special tokens are never inside.
    """
    hits = np.zeros(len(encoding.tokens), dtype=bool)
    if word is None:
        return hits
    for match in re.finditer(rf"\b{re.escape(word)}\b", text, flags=re.IGNORECASE):
        for i, (start, end) in enumerate(encoding.offsets):
            if not encoding.special[i] and start >= match.start() and end <= match.end() and end > start:
                hits[i] = True
    return hits


def _check_pairs(pairs: object) -> list[tuple[str, str, str | None]]:
    from explorer.data.sentence_pairs import SentencePair

    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise TypeError(f"pairs must be a list of SentencePair or (a, b) tuples, got {type(pairs).__name__}")
    if not pairs:
        raise ValueError("pairs must hold at least one pair (empty batch)")
    out = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, SentencePair):
            out.append((pair.a, pair.b, pair.shared))
        elif isinstance(pair, tuple) and len(pair) in (2, 3) and all(isinstance(t, str) for t in pair):
            out.append((pair[0], pair[1], pair[2] if len(pair) == 3 else None))
        else:
            raise TypeError(f"pairs[{i}] must be a SentencePair or a tuple (a, b[, shared]) of str, got {pair!r}")
    return out


def minilm_maps(pairs: Sequence[Any], pretrained: Any = None, steps: int = IG_STEPS["minilm"],
                progress: Callable[[str], None] | None = None) -> ModelMaps:
    """Every map of this module for MiniLM on sentence pairs, one score per token of A (specials in ``keep=False``).

    One pair at a time (batch 1, no padding): a forward pass with the attention patterns recorded with their graph
    gives the attention maps and, after one backward pass, the gradient-weighted maps and the input gradient; then
    IG with the ``[PAD]`` and the zero baseline (:class:`PairSimilarity`).

    Args:
        pairs: :class:`~explorer.data.sentence_pairs.SentencePair` or ``(a, b[, shared])`` tuples.
        pretrained: a :class:`~explorer.models.Pretrained`; None loads all-MiniLM-L6-v2 from its package.
        steps: IG integration points.
        progress: called with a line of text every 20 pairs.

    Returns:
        :class:`ModelMaps`: maps ``attention`` (mean of the last layer's rows), ``attention_cls``,
        ``attention_L{l}``, ``rollout``, ``grad_attention``, ``grad_rollout``, ``gradient``; references ``ig``,
        ``ig_zero``, ``ig_net``; targets: the shared word's tokens.
    """
    from explorer.analysis.attention import attention_rollout
    from explorer.hooks import record
    from explorer.models import load_pretrained

    checked = _check_pairs(pairs)
    steps = check_int("steps", steps, 1, integral=True, note="integration points")
    if pretrained is None:
        pretrained = load_pretrained()
    depth = pretrained.config.num_hidden_layers
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(depth)]
    maps: dict[str, list[np.ndarray]] = {"attention": [], "attention_cls": [],
                                         **{f"attention_L{i}": [] for i in range(depth - 1)},
                                         "rollout": [], "grad_attention": [], "grad_rollout": [], "gradient": []}
    references: dict[str, list[np.ndarray]] = {PRIMARY: [], "ig_zero": [], "ig_net": []}
    ig = {PRIMARY: {"baseline": "[PAD] word embedding on non-special tokens ([CLS], [SEP] kept)",
                    "aggregation": "sum of |IG| over the token's word-embedding dimensions"},
          "ig_zero": {"baseline": "zero word embedding on non-special tokens ([CLS], [SEP] kept)",
                      "aggregation": "sum of |IG| over the token's word-embedding dimensions"}}
    for run in ig.values():
        run.update({"steps": steps, "method": IG_METHOD, "delta": [], "gap": [], "f_x": []})
    keep, targets, inputs = [], [], []
    seconds = {"attention_maps": 0.0, PRIMARY: 0.0, "ig_zero": 0.0}
    model = pretrained.model
    with evaluating(model):  # eval mode, every submodule's flag restored afterwards
        for index, (a, b, shared) in enumerate(checked):
            start = time.perf_counter()
            target = PairSimilarity(pretrained, a, b)
            word = target.word.clone().requires_grad_(True)
            with torch.enable_grad(), record(model, names, detach=False) as trace:
                similarity = target(word)  # (1,)
                patterns = [trace[name] for name in names]  # each (1, head, token, token)
                grads = torch.autograd.grad(similarity.sum(), [word, *patterns])
            stacked = torch.stack([p.detach() for p in patterns])[:, 0]  # (layer, head, token, token)
            weighted = gradient_weighted_attention(stacked, torch.stack(grads[1:])[:, 0])  # (layer, token, token)
            heads = stacked.mean(dim=1)  # (layer, token, token)
            maps["attention"].append(heads[-1].mean(dim=0))  # mean of the rows: what mean pooling reads
            maps["attention_cls"].append(heads[-1][0])
            for layer in range(depth - 1):
                maps[f"attention_L{layer}"].append(heads[layer].mean(dim=0))
            maps["rollout"].append(attention_rollout(stacked[:, None])[-1, 0].mean(dim=0))
            maps["grad_attention"].append(weighted[-1].mean(dim=0))
            maps["grad_rollout"].append(gradient_rollout(weighted).mean(dim=0))
            maps["gradient"].append(grads[0][0].abs().sum(dim=-1))
            seconds["attention_maps"] += time.perf_counter() - start

            for name, kind in ((PRIMARY, "pad"), ("ig_zero", "zero")):
                start = time.perf_counter()
                attributions, delta = target.integrated_gradients(kind, steps)  # (token, embed)
                references[name].append(attributions.abs().sum(dim=-1))
                if name == PRIMARY:
                    references["ig_net"].append(attributions.sum(dim=-1).abs())
                with torch.no_grad():
                    at_x, at_b = float(target(target.word)[0]), float(target(target.baseline(kind))[0])
                ig[name]["delta"].append(delta)
                ig[name]["gap"].append(at_x - at_b)
                ig[name]["f_x"].append(at_x)
                seconds[name] += time.perf_counter() - start
            keep.append(~target.special.numpy())
            hits = shared_word_tokens(target.encoding, a, shared)
            targets.append(hits)
            inputs.append({"a": a, "b": b, "shared": shared, "tokens": list(target.encoding.tokens),
                           "n_units": int((~target.special).sum()), "n_target_units": int(hits.sum()),
                           "similarity": float(similarity.detach()[0])})
            if progress is not None and (index + 1) % 20 == 0:
                progress(f"minilm: {index + 1}/{len(checked)} pairs")
    as_rows = {name: [row.detach().to(torch.float64).numpy() for row in rows] for name, rows in maps.items()}
    refs = {name: [row.to(torch.float64).numpy() for row in rows] for name, rows in references.items()}
    return ModelMaps(maps=as_rows, references=refs, keep=keep, targets=targets, ig=ig, inputs=inputs,
                     seconds=seconds)
