"""Attention vs attribution: how well do attention-based maps rank the inputs like integrated gradients?

"Attention is not explanation" (Jain & Wallace 2019) found that attention weights often rank input tokens
differently from gradient-based importance; "Attention is not not explanation" (Wiegreffe & Pinter 2019) argued
that whether they agree depends on the model and the test. This module measures it, per input, with confidence
intervals, on two models of this project:

* **vit**: the shipped ViT of the image head-to-head (:func:`explorer.train.head_to_head.load_head_to_head`, 24 x 24
  digits, 4 x 4 patches = 36 units, ``[CLS]`` readout), run in float64, on the first ``n`` test digits of the
  class-balanced order (centred, as it was trained); target = the predicted class's logit;
* **minilm**: all-MiniLM-L6-v2 (:func:`explorer.models.load_pretrained`, float32) on generated sentence pairs
  (:func:`explorer.data.sentence_pairs.sentence_pairs`); target = the cosine similarity of the mean-pooled
  embedding of sentence A with that of its partner B (B is encoded once and held fixed), attributed to A's tokens.

**Maps** (one nonnegative score per unit: per patch, or per token of A):

- ``attention``: the last layer's attention at the readout, averaged over heads -- the ViT's ``[CLS]`` row
  (:func:`explorer.analysis.looks_at.cls_attention`); for MiniLM, whose readout is the mean of all tokens, the mean
  of all query rows. ``attention_cls`` (MiniLM): the last layer's ``[CLS]`` row, the usual choice in papers.
  ``attention_L{l}``: the same readout as ``attention`` at earlier layers ``l``.
- ``rollout``: attention rollout (Abnar & Zuidema 2020, ``0.5 A + 0.5 I``, heads averaged) read at the readout
  (:func:`explorer.analysis.looks_at.rollout_map` for the ViT).
- ``grad_attention``: the last layer's ``mean_h (A_h * dA_h)^+``: attention times the gradient of the target with
  respect to it, negative products clamped to 0, averaged over heads (:func:`gradient_weighted_attention`), read
  at the readout.
- ``grad_rollout``: the same product in every layer, rolled out by Chefer et al.'s rule ``R <- R + A_bar R`` from
  ``R = I`` (:func:`gradient_rollout`; Chefer, Gur & Wolf, ICCV 2021), read at the readout.
- ``gradient`` (not attention; a reference): ``|d target / d input|`` summed over the unit (pixels of a patch,
  dimensions of a token's word embedding).

**Integrated gradients** (captum ``IntegratedGradients``, Gauss-Legendre, :data:`IG_STEPS` points per model;
references):

- ``ig`` (primary): the sum of ``|IG|`` over the unit's features. ViT: pixels of the patch, black baseline (0), by
  :func:`explorer.analysis.looks_at.integrated_gradients_map`. MiniLM: IG on the word embeddings of A's tokens
  (position and segment embeddings are not attributed and stay as they are); the baseline replaces the word
  embedding of every non-special token by that of ``[PAD]`` and keeps ``[CLS]`` / ``[SEP]`` (so their attribution
  is exactly 0); the attention mask stays all ones on the baseline path.
- a second baseline, to see how much the reference itself moves: ``ig_gray`` (ViT: uniform 0.5; with the black
  baseline IG is exactly 0 on the 32 background patches, which then tie) and ``ig_zero`` (MiniLM: zero word
  embeddings for the non-special tokens).
- ``ig_net`` (MiniLM): ``|sum of IG over the token's dimensions|``, the token's net contribution.
- Completeness: the signed attributions of an input sum to ``f(x) - f(baseline)``; ``delta`` is how far the
  quadrature misses that, stored per input with its maximum.

**Measures** (per input over the ranked units; :func:`agreement`): Spearman's rho (:func:`spearman`, average
ranks for ties), Kendall's tau-b (:func:`kendall`) and the top-``k`` overlap ``|top_k(map) & top_k(IG)| / k``
(:func:`top_k_overlap`; ties at the ``k``-th place are shared out, which gives the expected overlap under random
tie-breaking; a random ranking overlaps ``k / n`` on average -- the reference line). ``k`` = :data:`VIT_K` patches
(the 2 x 2 patches a centred digit covers) and :data:`MINILM_K` tokens. ``[CLS]`` / ``[SEP]`` are not ranked
(``keep``); the ViT maps hold only patches (no ``[CLS]``). :func:`pointing` scores whether a map's top unit lies on
the object (ViT: a patch with ink; MiniLM: a token of the word A shares with B), against its random rate.
Each measure is averaged over inputs with a two-sided 95 % Student-t interval over inputs (:func:`interval`).

``python -m explorer.analysis.agreement [--out DIR] [--n N]`` writes ``agreement.json`` (every per-input value,
summaries, IG deltas, timings, metadata) and ``REPORT.md`` (rendered from the JSON by :func:`render_report`) to
``assets/agreement`` (about 8 minutes on one shared core; ``--report-only`` re-renders the report);
:func:`load_agreement` reads them back.

Papers:

- Jain & Wallace 2019, "Attention is not Explanation", https://arxiv.org/abs/1902.10186.
- Wiegreffe & Pinter 2019, "Attention is not not Explanation", https://arxiv.org/abs/1908.04626.
- Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", https://arxiv.org/abs/2005.00928.
- Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
  Transformers", https://arxiv.org/abs/2103.15679.
- Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks", https://arxiv.org/abs/1703.01365.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import explorer
from explorer._checks import check_choice, check_int, check_real, check_tensor, check_type
from explorer._modes import evaluating
from explorer._provenance import git_commit

__all__ = [
    "MEASURES", "IG_STEPS", "DEFAULT_N", "VIT_K", "MINILM_K", "VIT_GRAY", "MODELS", "ModelMaps",
    "spearman", "kendall", "top_k_overlap", "random_top_k", "interval", "paired_difference", "agreement", "pointing",
    "patch_sums", "shared_word_tokens",
    "gradient_weighted_attention", "gradient_rollout", "vit_maps", "PairSimilarity", "minilm_maps", "analyse",
    "run", "render_report", "default_agreement_dir", "load_agreement", "main",
]

MEASURES = ("spearman", "kendall", "top_k")
# Gauss-Legendre points per model, chosen by the completeness delta on the 200 shipped inputs: the ViT (float64)
# needs 128 -- max |delta| over the digits at 32 / 64 / 128 points: gray baseline 1.6 / 0.054 / 4.9e-4 logits of a
# ~6.5 gap, black baseline 0.027 / 4.7e-4 / 7e-8; MiniLM's similarity (float32) at 32 points: max |delta| 1.8e-4
# ([PAD] baseline) and 9.3e-4 (zero baseline) of a ~0.35 gap, at most 0.32 % of an input's own gap.
IG_STEPS = {"vit": 128, "minilm": 32}
IG_METHOD = "gausslegendre"
DEFAULT_N = 200      # inputs per model
VIT_K = 4            # a centred 8 x 8 digit covers exactly 2 x 2 of the 4 x 4 patches
MINILM_K = 3         # sentences A have 10-15 tokens besides [CLS] / [SEP]
VIT_GRAY = 0.5       # second ViT baseline: uniform gray
SEED = 0             # sentence pairs and the digits' class-balanced order
THREADS = 1          # the machines' 2 cores are shared: one thread
LEVEL = 0.95
MODELS = ("vit", "minilm")
PRIMARY = "ig"
FORMAT = 1
JSON_FILE = "agreement.json"
REPORT_FILE = "REPORT.md"
COMMAND = "python -m explorer.analysis.agreement"
STRENGTH = ((0.6, "strong"), (0.3, "moderate"), (0.0, "weak"))  # mean rho at least -> word


# --- rank statistics ----------------------------------------------------------------------------------------------


def _vector(name: str, values: object) -> np.ndarray:
    """``values`` as a finite float64 vector; TypeError / ValueError naming ``name``."""
    if isinstance(values, torch.Tensor):
        if values.is_complex() or values.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
        array = values.detach().cpu().to(torch.float64).numpy()
    elif isinstance(values, np.ndarray):
        if values.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
        array = values.astype(np.float64)
    elif isinstance(values, (list, tuple)):
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            raise TypeError(f"{name} must hold real numbers")
        array = np.asarray(values, dtype=np.float64)
    else:
        raise TypeError(f"{name} must be a 1-D tensor, array or sequence of numbers, got {type(values).__name__}")
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per unit), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty (no unit to rank)")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return array


def _pair(a: object, b: object, minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x, y = _vector("a", a), _vector("b", b)
    if x.shape != y.shape:
        raise ValueError(f"b must have the length of a ({x.size}), got {y.size}")
    if x.size < minimum:
        raise ValueError(f"a must have at least {minimum} units to rank, got {x.size}")
    return x, y


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # rank of the last member of each group of equal values
    return (last - (counts - 1) / 2.0)[inverse]


def spearman(a: object, b: object) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks (ties share their mean rank).

    Args:
        a, b: 1-D tensors, arrays or sequences of the same length (>= 2), finite.

    Returns:
        rho in ``[-1, 1]``; NaN when either input is constant (no ranking), as ``scipy.stats.spearmanr``.
    """
    x, y = _pair(a, b)
    rx, ry = _average_ranks(x), _average_ranks(y)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denominator == 0.0:
        return math.nan
    return float(np.clip(float(dx @ dy) / denominator, -1.0, 1.0))


def kendall(a: object, b: object) -> float:
    """Kendall's tau-b: ``(concordant - discordant) / sqrt((n0 - ties_a) (n0 - ties_b))`` over all pairs.

    ``n0 = n (n - 1) / 2``; ``ties_a`` counts the pairs tied in ``a`` (likewise ``b``). Without ties it is
    Kendall's tau-a. O(n^2) time and memory (fine for the tens of units of a map).

    Args:
        a, b: 1-D tensors, arrays or sequences of the same length (>= 2), finite.

    Returns:
        tau-b in ``[-1, 1]``; NaN when either input is constant, as ``scipy.stats.kendalltau``.
    """
    x, y = _pair(a, b)
    upper = np.triu_indices(x.size, k=1)
    sx = np.sign(x[:, None] - x[None, :])[upper]  # (pairs,)
    sy = np.sign(y[:, None] - y[None, :])[upper]
    untied_x, untied_y = float(np.count_nonzero(sx)), float(np.count_nonzero(sy))
    if untied_x == 0.0 or untied_y == 0.0:
        return math.nan
    return float(np.clip(float(sx @ sy) / math.sqrt(untied_x * untied_y), -1.0, 1.0))


def _top_k_weights(x: np.ndarray, k: int) -> np.ndarray:
    """Probability of each unit to be in the top ``k`` when ties at the ``k``-th place are broken at random."""
    kth = np.sort(x)[::-1][k - 1]
    above = x > kth
    tied = x == kth
    weights = above.astype(np.float64)
    weights[tied] = (k - int(above.sum())) / int(tied.sum())
    return weights


def top_k_overlap(a: object, b: object, k: int) -> float:
    """``|top_k(a) & top_k(b)| / k``: the share of ``a``'s ``k`` highest units that are among ``b``'s.

    Ties at the ``k``-th value: every tied unit counts with the probability that a random tie-break puts it in
    the top ``k``, so the result is the expected overlap under independent random tie-breaking (without ties,
    the plain overlap). Two random rankings of ``n`` units overlap ``k / n`` on average (:func:`random_top_k`).

    Args:
        a, b: 1-D tensors, arrays or sequences of the same length, finite.
        k: int in ``[1, len(a)]``.

    Returns:
        A float in ``[0, 1]``.
    """
    x, y = _pair(a, b, minimum=1)
    k = check_int("k", k, 1, x.size, integral=True, note="the number of ranked units")
    return float(_top_k_weights(x, k) @ _top_k_weights(y, k)) / k


def random_top_k(n: int, k: int) -> float:
    """Expected top-``k`` overlap of two independent uniformly random rankings of ``n`` units: ``k / n``."""
    n = check_int("n", n, 1, integral=True, note="the number of ranked units")
    return check_int("k", k, 1, n, integral=True, note="at most the number of ranked units") / n


# --- intervals ----------------------------------------------------------------------------------------------------


def interval(values: Sequence[float], level: float = LEVEL) -> dict[str, Any]:
    """Mean, sample std (n - 1) and the two-sided Student-t interval of the mean.

    Args:
        values: one number per input (non-empty, finite).
        level: coverage in (0, 1); the quantile is ``scipy.stats.t.ppf``.

    Returns:
        ``{"mean", "std", "ci95": [low, high], "n"}`` (``ci95`` holds the ``level`` interval; ``[mean, mean]`` and
        std 0 for a single value).
    """
    from scipy import stats  # scikit-learn's dependency; imported here, as interval is the only user

    level = check_real("level", level, 0, 1, low_open=True, high_open=True, note="the coverage")
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(f"values must be a sequence of numbers, got {type(values).__name__}")
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("values must be finite")
    n = int(x.size)
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n) if n > 1 else 0.0
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": n}


def _round(value: float) -> float:
    """9 significant digits: what the JSON stores (summaries are computed from the rounded values)."""
    return float(f"{value:.9g}")


def _summary(values: list[float]) -> dict[str, Any]:
    """Interval over the defined (finite) values, rounded by :func:`_round`; undefined ones stored as None, counted."""
    stored = [_round(v) if v is not None and math.isfinite(v) else None for v in values]
    defined = [v for v in stored if v is not None]
    if not defined:
        return {"mean": None, "std": None, "ci95": None, "n": 0, "n_undefined": len(values), "values": stored}
    return {**interval(defined), "n_undefined": len(values) - len(defined), "values": stored}


def paired_difference(a: Sequence[float | None], b: Sequence[float | None]) -> dict[str, Any]:
    """Interval of the per-input differences ``a_i - b_i`` over the inputs where both are defined (not None/NaN)."""
    if len(a) != len(b):
        raise ValueError(f"b must have one value per input of a ({len(a)}), got {len(b)}")
    diffs = [x - y for x, y in zip(a, b)
             if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    if not diffs:
        raise ValueError("a and b have no input where both are defined")
    return interval(diffs)


# --- agreement over a batch ---------------------------------------------------------------------------------------


def _rows(name: str, maps: object, boolean: bool = False) -> list[np.ndarray]:
    """A batch of per-input vectors: a 2-D tensor/array ``[input, unit]`` or a sequence of 1-D ones."""
    if isinstance(maps, (torch.Tensor, np.ndarray)):
        if maps.ndim != 2:
            raise ValueError(f"{name} must be [input, unit] (2-D) or a list of 1-D maps, got shape "
                             f"{tuple(maps.shape)}")
        rows = list(maps)
    elif isinstance(maps, (list, tuple)):
        rows = list(maps)
    else:
        raise TypeError(f"{name} must be a 2-D tensor/array [input, unit] or a list of 1-D maps, got "
                        f"{type(maps).__name__}")
    if not rows:
        raise ValueError(f"{name} must hold at least one input (empty batch)")
    if not boolean:
        return [_vector(f"{name}[{i}]", row) for i, row in enumerate(rows)]
    out = []
    for i, row in enumerate(rows):
        array = row.detach().cpu().numpy() if isinstance(row, torch.Tensor) else np.asarray(row)
        if array.dtype != np.bool_:
            raise TypeError(f"{name}[{i}] must be boolean (True = rank this unit), got dtype {array.dtype}")
        if array.ndim != 1:
            raise ValueError(f"{name}[{i}] must be 1-D, got shape {array.shape}")
        out.append(array)
    return out


def _batch(maps: object, reference: object, keep: object, other: str = "reference",
           minimum: int = 2, boolean: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Rows of ``maps`` and ``reference`` (same shapes; ``reference`` boolean when ``boolean``), restricted to
    ``keep``; ValueError on an empty input."""
    a = _rows("maps", maps)
    b = _rows(other, reference, boolean=boolean)
    if len(b) != len(a):
        raise ValueError(f"{other} must have one row per input of maps ({len(a)}), got {len(b)}")
    for i, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape:
            raise ValueError(f"{other}[{i}] must have the shape of maps[{i}] {x.shape}, got {y.shape}")
    if keep is None:
        kept = [np.ones(x.shape, dtype=bool) for x in a]
    else:
        kept = _rows("keep", keep, boolean=True)
        if len(kept) != len(a):
            raise ValueError(f"keep must have one row per input of maps ({len(a)}), got {len(kept)}")
    for i, (x, mask) in enumerate(zip(a, kept)):
        if mask.shape != x.shape:
            raise ValueError(f"keep[{i}] must have the shape of maps[{i}] {x.shape}, got {mask.shape}")
        if int(mask.sum()) < minimum:
            raise ValueError(f"keep leaves input {i} with {int(mask.sum())} unit(s) (empty input after removing "
                             f"special tokens); at least {minimum} are needed to rank")
    return [x[m] for x, m in zip(a, kept)], [y[m] for y, m in zip(b, kept)]


def agreement(maps: object, reference: object, k: int, keep: object = None) -> dict[str, Any]:
    """Rank agreement of a batch of maps with a reference map (e.g. IG), per input and averaged with intervals.

    Args:
        maps: one score per unit per input: a 2-D tensor/array ``[input, unit]`` or a list of 1-D maps (inputs
            may differ in length, as sentences do).
        reference: the same shapes as ``maps``.
        k: top-``k`` size, ``1 <= k <=`` every input's number of ranked units.
        keep: optional boolean rows of the same shapes: False drops a unit (``[CLS]``, ``[SEP]``) before ranking.

    Returns:
        ``{"spearman": S, "kendall": S, "top_k": {**S, "k", "random"}, "n_units": [...]}`` where ``S`` is
        ``{"mean", "std", "ci95", "n", "n_undefined", "values", "ceiling"}``: ``values`` per input, rounded to 9
        significant digits (None where a map is constant and the correlation undefined), the rest over the
        defined values (:func:`interval`); ``ceiling`` is the mean over inputs of the best value any map can reach
        when the reference has ties: the measure of the reference's own order with its ties broken (the same
        whichever way they are broken; 1 without ties). ``random`` is the mean over inputs of ``k / n_units``
        (two random rankings' expected overlap).

    Raises:
        ValueError: empty batch, shapes that differ, an input with fewer than 2 kept units, ``k`` out of range.
        TypeError: not tensors/arrays/sequences of numbers, ``keep`` not boolean, ``k`` not an int.
    """
    a, b = _batch(maps, reference, keep)
    sizes = [int(x.size) for x in a]
    smallest = min(sizes)
    k = check_int("k", k, 1, smallest, integral=True,
                  note=f"the number of ranked units of the smallest input, {sizes.index(smallest)}")
    rho = [spearman(x, y) for x, y in zip(a, b)]
    tau = [kendall(x, y) for x, y in zip(a, b)]
    top = [top_k_overlap(x, y, k) for x, y in zip(a, b)]
    best = [np.argsort(np.argsort(y, kind="stable"), kind="stable").astype(np.float64) for y in b]  # ties broken
    ceilings = {"spearman": [spearman(s, y) for s, y in zip(best, b)],
                "kendall": [kendall(s, y) for s, y in zip(best, b)],
                "top_k": [top_k_overlap(s, y, k) for s, y in zip(best, b)]}
    ceiling = {name: _round(float(np.nanmean(values))) if not np.isnan(values).all() else None
               for name, values in ceilings.items()}
    return {
        "spearman": {**_summary(rho), "ceiling": ceiling["spearman"]},
        "kendall": {**_summary(tau), "ceiling": ceiling["kendall"]},
        "top_k": {**_summary(top), "ceiling": ceiling["top_k"], "k": k,
                  "random": _round(float(np.mean([random_top_k(n, k) for n in sizes])))},
        "n_units": sizes,
    }


def pointing(maps: object, targets: object, keep: object = None) -> dict[str, Any]:
    """Pointing game: is a map's highest unit on the target (ink patches, the shared word's tokens)?

    Per input the score is the share of the map's maximal units (ties shared out) that are targets, i.e. the hit
    probability under random tie-breaking; ``random`` is the mean over inputs of ``targets / units`` (the hit rate
    of a random unit), both over the kept units.

    Returns:
        ``{"mean", "std", "ci95", "n", "n_undefined", "values", "random"}``.
    """
    a, hits = _batch(maps, targets, keep, other="targets", minimum=1, boolean=True)
    values = []
    for x, target in zip(a, hits):
        top = x == x.max()
        values.append(float((top & target).sum()) / float(top.sum()))
    return {**_summary(values), "random": _round(float(np.mean([t.mean() for t in hits])))}


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


# --- the study ----------------------------------------------------------------------------------------------------


def analyse(result: ModelMaps, k: int) -> dict[str, Any]:
    """Agreement of every map with every IG reference, IG references with the primary, pointing, comparisons."""
    out: dict[str, Any] = {"agreement": {}, "calibration": {}, "pointing": {}, "comparisons": {}}
    for name, rows in result.maps.items():
        out["agreement"][name] = {ref: _strip_units(agreement(rows, ref_rows, k, result.keep))
                                  for ref, ref_rows in result.references.items()}
    for ref, ref_rows in result.references.items():
        if ref != PRIMARY:
            out["calibration"][ref] = _strip_units(agreement(ref_rows, result.references[PRIMARY], k, result.keep))
    for name, rows in {**result.maps, **result.references}.items():
        out["pointing"][name] = pointing(rows, result.targets, result.keep)
    raw = out["agreement"]["attention"][PRIMARY]
    for name in result.maps:
        if name != "attention":
            out["comparisons"][name] = {
                measure: paired_difference(out["agreement"][name][PRIMARY][measure]["values"], raw[measure]["values"])
                for measure in MEASURES}
    return out


def _strip_units(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in summary.items() if key != "n_units"}


def _ig_summary(run: dict[str, Any]) -> dict[str, Any]:
    """Per-input delta / gap / f(x) rounded as the maps' values, and the completeness summary computed from them."""
    run = {key: [_round(v) for v in value] if key in ("delta", "gap", "f_x") else value for key, value in run.items()}
    deltas = np.abs(np.asarray(run["delta"], dtype=np.float64))
    gaps = np.abs(np.asarray(run["gap"], dtype=np.float64))
    return {**run, "max_abs_delta": float(deltas.max()), "mean_abs_delta": float(deltas.mean()),
            "max_rel_delta": float((deltas / np.maximum(gaps, 1e-12)).max()),
            "mean_abs_gap": float(gaps.mean())}


def _metadata(command: str) -> dict[str, Any]:
    import captum

    return {"command": command, "git_commit": git_commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch_version": torch.__version__, "captum_version": captum.__version__,
            "numpy_version": np.__version__, "python_version": platform.python_version(),
            "platform": platform.platform(), "threads": torch.get_num_threads()}


def _model_entry(name: str, result: ModelMaps, k: int, description: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    analysed = analyse(result, k)
    seconds = {**{key: round(value, 2) for key, value in result.seconds.items()},
               "agreement": round(time.perf_counter() - start, 2)}
    return {**description, "n_inputs": len(result.inputs), "k": k, "primary_reference": PRIMARY,
            "maps": list(result.maps), "references": list(result.references),
            "ig": {ref: _ig_summary(run) for ref, run in result.ig.items()},
            **analysed, "inputs": result.inputs, "seconds": seconds}


def _run_vit(n: int, steps: int, log: Callable[[str], None]) -> dict[str, Any]:
    from explorer.data.digits import digits_dataset, digits_indices
    from explorer.train.head_to_head import CANVAS, PLACEMENT, load_head_to_head

    start = time.perf_counter()
    model, entry = load_head_to_head("vit")
    model = model.double()
    images, labels = digits_dataset("test", canvas=CANVAS, placement=PLACEMENT, seed=SEED, n=n)
    indices = digits_indices("test", seed=SEED, n=n)
    loaded = time.perf_counter() - start
    result = vit_maps(model, images.double(), steps)
    for item, index, label in zip(result.inputs, indices, labels):
        item.update({"digit_index": int(index), "label": int(label)})
    result.seconds["load"] = loaded
    log(f"vit: maps of {n} digits in {sum(result.seconds.values()):.1f} s")
    correct = sum(item["predicted"] == item["label"] for item in result.inputs)
    return _model_entry("vit", result, VIT_K, {
        "model": "SmallViT of the image head-to-head, seed-0 weights (load_head_to_head('vit')), float64",
        "data": f"first {n} test digits of the class-balanced order (seed {SEED}), centred on a {CANVAS} x "
                f"{CANVAS} canvas", "accuracy_on_inputs": correct / n,
        "test_accuracy_of_weights": entry["accuracy"]["accuracy"],
        "units": "patches (4 x 4 pixels, 36), [CLS] excluded", "target": "logit of the predicted class",
        "readout": "[CLS] row", "pointing_target": "patches with ink (any nonzero pixel)",
    })


def _run_minilm(n: int, steps: int, log: Callable[[str], None]) -> dict[str, Any]:
    from explorer.data.sentence_pairs import sentence_pairs
    from explorer.models import load_pretrained

    start = time.perf_counter()
    pretrained = load_pretrained()
    pairs = sentence_pairs(n, seed=SEED)
    loaded = time.perf_counter() - start
    result = minilm_maps(pairs, pretrained, steps, progress=log)
    for index, item in enumerate(result.inputs):
        item["pair_index"] = index
    result.seconds["load"] = loaded
    log(f"minilm: maps of {n} pairs in {sum(result.seconds.values()):.1f} s")
    return _model_entry("minilm", result, MINILM_K, {
        "model": f"{pretrained.name} (explorer.models.load_pretrained, float32)",
        "data": f"sentence_pairs({n}, seed={SEED}) (explorer.data.sentence_pairs)",
        "units": "tokens of sentence A, [CLS] and [SEP] excluded",
        "target": "cosine of the mean-pooled embeddings of A and of a fixed sentence B",
        "readout": "mean of all query rows (mean pooling); attention_cls: the [CLS] row",
        "pointing_target": "tokens of the word A shares with B",
    })


def run(out: str | Path | None = None, n: int = DEFAULT_N, steps: int | None = None,
        models: Sequence[str] = MODELS, progress: bool = True) -> dict[str, Any]:
    """The study: maps and agreement for each model; writes ``agreement.json`` and ``REPORT.md`` to ``out``.

    Sets ``torch.set_num_threads(THREADS)`` (1) for the run and restores it afterwards.

    Args:
        out: folder (default :func:`default_agreement_dir`).
        n: inputs per model (2 .. 450: the ViT uses the 450 test digits at most).
        steps: IG integration points for every model; None: :data:`IG_STEPS` (per model).
        models: a subset of :data:`MODELS`.
        progress: print progress lines.

    Returns:
        The result dict written to ``agreement.json``.
    """
    check_int("n", n, 2, 450, note="inputs per model")
    if steps is None:
        per_model = dict(IG_STEPS)
    else:
        steps = check_int("steps", steps, 1, integral=True, note="integration points")
        per_model = {name: steps for name in MODELS}
    if isinstance(models, str) or not models or any(m not in MODELS for m in models):
        raise ValueError(f"models must be a non-empty list from {MODELS}, got {models!r}")
    folder = default_agreement_dir() if out is None else Path(out)
    log = (lambda line: print(line, flush=True)) if progress else (lambda line: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        start = time.perf_counter()
        command = " ".join([COMMAND, *sys.argv[1:]]) if progress else None
        result: dict[str, Any] = {"format": FORMAT, "metadata": _metadata(command), "settings": {
            "n": n, "ig_steps": {name: per_model[name] for name in models}, "ig_method": IG_METHOD, "seed": SEED,
            "interval": "two-sided 95 % Student-t interval of the mean over inputs (n - 1 degrees of freedom); "
                        "undefined per-input values (a constant map) are left out and counted in n_undefined",
            "top_k": "|top_k(map) & top_k(reference)| / k, ties at the k-th place shared out (expected overlap "
                     "under random tie-breaking); random = mean over inputs of k / units",
            "ceiling": "the best value any map can reach against a reference with tied units: the measure of the "
                       "reference's own order with its ties broken (1 without ties)",
            "rounding": "per-input values are rounded to 9 significant digits before they are summarised",
            "spearman": "Pearson correlation of average ranks", "kendall": "tau-b",
            "pointing": "share of the map's maximal units on the target; random = mean share of target units",
            "gradient_weighted_attention": "mean over heads of (A * dtarget/dA) clamped at 0; grad_attention: "
                                           "last layer; grad_rollout: R = I, R <- R + A_bar R over the layers "
                                           "(Chefer et al. 2021)",
            "rollout": "Abnar & Zuidema 2020: 0.5 A + 0.5 I, heads averaged, rows renormalised, product"},
            "models": {}}
        for name in models:
            result["models"][name] = (_run_vit if name == "vit" else _run_minilm)(n, per_model[name], log)
        result["total_seconds"] = round(time.perf_counter() - start, 1)
    finally:
        torch.set_num_threads(threads)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / JSON_FILE).write_text(_dumps(result))
    stored = json.loads((folder / JSON_FILE).read_text())  # the report is rendered from what was written
    (folder / REPORT_FILE).write_text(render_report(stored))
    log(f"done in {result['total_seconds']:.0f} s: {folder / JSON_FILE}, {folder / REPORT_FILE}")
    return stored


def _dumps(result: dict[str, Any]) -> str:
    """JSON with one line per list of numbers (per-input values) and indentation elsewhere."""
    text = json.dumps(result, indent=1, allow_nan=False)
    scalar = r"(?:-?\d[\d.eE+-]*|null|true|false)"
    return re.sub(rf"\[\n\s*({scalar}(?:,\n\s*{scalar})*)\n\s*\]",
                  lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", text) + "\n"


# --- report -------------------------------------------------------------------------------------------------------


def _fmt(summary: dict[str, Any], digits: int = 2) -> str:
    if summary["mean"] is None:
        return "undefined"
    low, high = summary["ci95"]
    return f"{summary['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _side(summary: dict[str, Any], line: float) -> str:
    """Where the interval lies relative to ``line``: "above", "below" or "includes"."""
    low, high = summary["ci95"]
    return "above" if low > line else ("below" if high < line else "includes")


def _strength(rho: float) -> str:
    for bound, word in STRENGTH:
        if abs(rho) >= bound:
            return word
    return "weak"


def _verdict(cells: dict[str, Any]) -> tuple[str, str]:
    """(short verdict, evidence) of one map against one reference."""
    rho, tau, top = cells["spearman"], cells["kendall"], cells["top_k"]
    if rho["mean"] is None:
        return "undefined", "every input's correlation is undefined"
    sides = (_side(rho, 0.0), _side(tau, 0.0), _side(top, top["random"]))
    evidence = (f"rho {rho['mean']:.2f}, interval {'includes 0' if sides[0] == 'includes' else sides[0] + ' 0'}; "
                f"top-{top['k']} overlap {top['mean']:.2f} vs random {top['random']:.2f}, "
                f"{'interval includes random' if sides[2] == 'includes' else sides[2] + ' random'}")
    if sides == ("above", "above", "above"):
        word = _strength(rho["mean"])
        if rho["ceiling"] is not None and rho["ceiling"] < 0.999:
            word += f" for a ceiling of {rho['ceiling']:.2f}"
        return f"agrees above chance, {word}", evidence
    if "below" in sides:
        return "disagrees, ranks against IG", evidence
    if sides[:2] == ("includes", "includes") and sides[2] != "above":
        return "no measurable agreement", evidence
    return "mixed", evidence


def _calibration_note(cells: dict[str, Any], calibration: tuple[str, dict[str, Any]] | None) -> str:
    if calibration is None:
        return ""
    name, calib = calibration
    rho, other = cells["spearman"], calib["spearman"]
    if rho["mean"] is None or other["mean"] is None:
        return ""
    relation = "below" if rho["ci95"][1] < other["ci95"][0] else (
        "above" if rho["ci95"][0] > other["ci95"][1] else "level with (intervals overlap)")
    return f"; {relation} IG's agreement with `{name}` (rho {other['mean']:.2f})"


def render_report(result: dict[str, Any]) -> str:
    """``REPORT.md`` from an ``agreement.json`` dict: tables per model and plain statements of (dis)agreement."""
    meta, settings = result["metadata"], result["settings"]
    steps = ", ".join(f"{name} {value}" for name, value in settings["ig_steps"].items())
    lines = [
        "# Attention vs attribution: rank agreement with integrated gradients",
        "",
        f"Generated by `{COMMAND}` (module `explorer.analysis.agreement`) from `{JSON_FILE}`, which holds every "
        "per-input value; `load_agreement()` reads it. Question (Jain & Wallace 2019, \"Attention is not "
        "Explanation\"; Wiegreffe & Pinter 2019, \"Attention is not not Explanation\"): do attention-based maps "
        "rank the input units the way integrated gradients (IG) does?",
        "",
        "## Findings",
        "",
    ]
    for name, model in result["models"].items():
        primary = model["primary_reference"]
        agree = model["agreement"]
        raw, _ = _verdict(agree["attention"][primary])
        best = max(model["maps"], key=lambda m: agree[m][primary]["spearman"]["mean"] or -2.0)
        best_attention = max((m for m in model["maps"] if m != "gradient"),
                             key=lambda m: agree[m][primary]["spearman"]["mean"] or -2.0)
        calib = ", ".join(f"`{ref}` rho {cells['spearman']['mean']:.2f}" for ref, cells in model["calibration"].items())
        top = agree[best][primary]["spearman"]["mean"]
        level = [m for m in model["maps"] if top - (agree[m][primary]["spearman"]["mean"] or -2.0) < 0.01]
        ceiling = agree["attention"][primary]["spearman"]["ceiling"]
        lines.append(
            f"- **{name}**: raw last-layer attention (`attention`) against `{primary}`: {raw} "
            f"(rho {_fmt(agree['attention'][primary]['spearman'])}). Closest attention-based map: `{best_attention}` "
            f"(rho {_fmt(agree[best_attention][primary]['spearman'])}); closest of all maps (within 0.01 of the best "
            f"mean rho): {', '.join(f'`{m}`' for m in level)}"
            + (f", at the ceiling of {ceiling:.2f} that `{primary}`'s ties allow" if top >= ceiling - 0.01
               and ceiling < 0.999 else "")
            + f". IG against its own variants: {calib}.")
        for ref in model["references"]:
            if ref == primary:
                continue
            cells = {m: agree[m][ref]["spearman"] for m in model["maps"]}
            best_ref = max(cells, key=lambda m: cells[m]["mean"] or -2.0)
            lines.append(f"  Against `{ref}` (ceiling {cells['attention']['ceiling']:.2f}): `attention` rho "
                         f"{_fmt(cells['attention'])}, best `{best_ref}` rho {_fmt(cells[best_ref])}.")
    lines += [
        "",
        "## Method",
        "",
        f"- {settings['n']} inputs per model; per input, every map gives one score per unit and is compared with "
        f"IG over the same units. Interval: {settings['interval']}. (For shares near 0 or 1 the t-interval can "
        "reach past [0, 1]; it is shown as computed.)",
        f"- Spearman: {settings['spearman']}; Kendall: {settings['kendall']}; top-k: {settings['top_k']}. "
        f"Ceiling: {settings['ceiling']}. Pointing: {settings['pointing']}.",
        f"- Rollout: {settings['rollout']}. Gradient-weighted attention: {settings['gradient_weighted_attention']}.",
        f"- IG: captum IntegratedGradients, {settings['ig_method']} quadrature, points per model: {steps}; "
        "completeness delta = sum of signed attributions - (f(x) - f(baseline)).",
        "- Verdicts: a map \"agrees above chance\" when the intervals of rho and tau lie above 0 and that of the "
        "top-k overlap above the random rate; \"disagrees\" when one lies below; \"no measurable agreement\" when "
        "both correlation intervals include 0 and the top-k overlap is not above random; else \"mixed\". Strength "
        "by mean rho: >= 0.6 strong, >= 0.3 moderate, else weak. Calibration lines compare IG with IG under another "
        "baseline or aggregation: how far two reasonable attributions agree with each other.",
        f"- {settings['rounding']}.",
        "",
    ]
    for name, model in result["models"].items():
        k = model["k"]
        primary = model["primary_reference"]
        calib = model["calibration"]
        lines += [f"## {name}", "",
                  f"- Model: {model['model']}. Inputs: {model['data']}. Units: {model['units']}.",
                  f"- Target: {model['target']}. Attention readout: {model['readout']}. "
                  f"Pointing target: {model['pointing_target']}."]
        if "accuracy_on_inputs" in model:
            lines.append(f"- Accuracy on these inputs: {100 * model['accuracy_on_inputs']:.1f} % (the maps explain "
                         "the predicted class).")
        lines += ["", "IG runs (completeness):", "",
                  "| reference | baseline | aggregation | steps | max abs delta | mean abs delta | max delta / gap |"
                  " mean abs gap f(x) - f(b) |", "|---|---|---|---|---|---|---|---|"]
        for ref, run in model["ig"].items():
            lines.append(f"| `{ref}` | {run['baseline']} | {run['aggregation'].replace('|', '&#124;')} | "
                         f"{run['steps']} | {run['max_abs_delta']:.2e} | {run['mean_abs_delta']:.2e} | "
                         f"{run['max_rel_delta']:.2e} | {run['mean_abs_gap']:.3f} |")
        if "ig_net" in model["references"]:
            lines += ["", "`ig_net` is `abs(sum of IG over the token's dimensions)` from the `ig` run."]
        first = model["agreement"]["attention"][primary]
        lines += ["", f"Agreement with `{primary}` (mean [95 % interval] over inputs). Random ranking: rho = tau = 0, "
                  f"top-{k} overlap {first['top_k']['random']:.3f}. Ceiling given `{primary}`'s ties: rho "
                  f"{first['spearman']['ceiling']:.3f}, tau {first['kendall']['ceiling']:.3f}, top-{k} "
                  f"{first['top_k']['ceiling']:.3f}.", "",
                  f"| map | Spearman rho | Kendall tau-b | top-{k} overlap | pointing (random) |",
                  "|---|---|---|---|---|"]
        rows = {**{m: model["agreement"][m][primary] for m in model["maps"]}, **calib}
        for map_name, cells in rows.items():
            label = f"`{map_name}`" if map_name in model["maps"] else f"`{map_name}` (calibration)"
            point = model["pointing"][map_name]
            lines.append(f"| {label} | {_fmt(cells['spearman'])} | {_fmt(cells['kendall'])} | "
                         f"{_fmt(cells['top_k'])} | {_fmt(point)} ({point['random']:.2f}) |")
        point = model["pointing"][primary]
        lines.append(f"| `{primary}` itself | - | - | - | {_fmt(point)} ({point['random']:.2f}) |")
        others = [r for r in model["references"] if r != primary]
        ceilings = "; ".join(f"`{r}`: rho {model['agreement']['attention'][r]['spearman']['ceiling']:.3f}"
                             for r in others)
        lines += ["", f"Against the other IG references (Spearman rho; top-{k} overlap). Ceilings: {ceilings}.", "",
                  "| map | " + " | ".join(f"`{r}` rho | `{r}` top-{k}" for r in others) + " |",
                  "|---|" + "---|---|" * len(others)]
        for map_name in model["maps"]:
            cells = model["agreement"][map_name]
            lines.append(f"| `{map_name}` | " + " | ".join(
                f"{_fmt(cells[r]['spearman'])} | {_fmt(cells[r]['top_k'])}" for r in others) + " |")
        lines += ["", f"Paired differences from raw `attention` (per input, against `{primary}`; an interval above 0 "
                  "means the map agrees better than raw attention):", "",
                  "| map | Spearman difference | Kendall difference | top-k difference |", "|---|---|---|---|"]
        for map_name, diffs in model["comparisons"].items():
            lines.append(f"| `{map_name}` | " + " | ".join(_fmt(diffs[m], 3) for m in MEASURES) + " |")
        first_calib = next(iter(calib.items()), None)
        lines += ["", f"Where the maps agree with `{primary}` and where not:", ""]
        for map_name in model["maps"]:
            verdict, evidence = _verdict(model["agreement"][map_name][primary])
            note = _calibration_note(model["agreement"][map_name][primary], first_calib)
            lines.append(f"- `{map_name}`: {verdict} ({evidence}){note}.")
        for ref, cells in calib.items():
            verdict, evidence = _verdict(cells)
            lines.append(f"- calibration `{ref}` vs `{primary}`: {verdict} ({evidence}).")
        for ref in others:
            verdicts = {m: _verdict(model["agreement"][m][ref])[0] for m in model["maps"]}
            against = [m for m, v in verdicts.items() if v.startswith("agrees")]
            lines.append(f"- Against `{ref}` instead, {len(against)} of {len(model['maps'])} maps agree above chance: "
                         + (", ".join(f"`{m}` ({verdicts[m].split(', ', 1)[1]})" for m in against) or "none")
                         + "; the others: " + (", ".join(f"`{m}` ({v})" for m, v in verdicts.items()
                                                         if m not in against) or "none") + ".")
        secs = model["seconds"]
        lines += ["", "Timings (s, 1 thread): " + ", ".join(f"{key} {value}" for key, value in secs.items()) + ".",
                  ""]
    lines += ["## Run", "",
              f"{result['total_seconds']} s in total; torch {meta['torch_version']}, captum {meta['captum_version']}, "
              f"{meta['threads']} thread(s), {meta['platform']}, {meta['date']}, commit {meta['git_commit']}.", ""]
    return "\n".join(lines)


# --- files --------------------------------------------------------------------------------------------------------


def default_agreement_dir() -> Path:
    """``assets/agreement`` of the repository (next to the ``explorer`` package)."""
    return Path(explorer.__file__).resolve().parents[1] / "assets" / "agreement"


def load_agreement(folder: str | Path | None = None) -> dict[str, Any]:
    """The shipped (or a given folder's) ``agreement.json``.

    Raises:
        FileNotFoundError: no file (the message names the command that writes it).
        ValueError: not a result of this module (format or keys).
    """
    if folder is not None:
        check_type("folder", folder, (str, Path), "a str, a Path or None")
    path = (default_agreement_dir() if folder is None else Path(folder)) / JSON_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; write it with `{COMMAND} --out {path.parent}`")
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(result, dict) or result.get("format") != FORMAT or not isinstance(result.get("models"), dict):
        raise ValueError(f"{path} is not an agreement result of format {FORMAT}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder (default: assets/agreement)")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help=f"inputs per model (default {DEFAULT_N})")
    parser.add_argument("--steps", type=int, default=None, help=f"IG points for every model (default {IG_STEPS})")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--report-only", action="store_true",
                        help=f"only rewrite {REPORT_FILE} from the {JSON_FILE} already in --out")
    args = parser.parse_args(argv)
    if args.report_only:
        folder = default_agreement_dir() if args.out is None else args.out
        (folder / REPORT_FILE).write_text(render_report(load_agreement(folder)))
        return 0
    run(args.out, n=args.n, steps=args.steps, models=args.models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
