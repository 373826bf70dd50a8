"""Attention vs attribution: how well do attention-based maps rank the inputs like integrated gradients?

"Attention is not explanation" (Jain & Wallace 2019) found that attention weights often rank input tokens
differently from gradient-based importance; "Attention is not not explanation" (Wiegreffe & Pinter 2019) argued
that whether they agree depends on the model and the test. This module measures it, per input, with confidence
intervals, on two models of this project:

* **vit**: the shipped ViT of the image head-to-head (:func:`explorer.models.head_to_head.load_head_to_head`, 24 x 24
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

The package, one module per responsibility (every name below is importable from the package itself):
:mod:`~explorer.analysis.agreement.settings` (the study's settings), :mod:`~explorer.analysis.agreement.stats` (rank
statistics, intervals, the measures over a batch), :mod:`~explorer.analysis.agreement.maps` (gradient-weighted
attention and the maps of each model), :mod:`~explorer.analysis.agreement.report` (``REPORT.md``) and
:mod:`~explorer.analysis.agreement.study` (the run, the files, the command).
"""

from explorer.analysis.agreement.settings import DEFAULT_N, IG_STEPS, MEASURES, MINILM_K, MODELS, VIT_GRAY, VIT_K
# the study's other settings, importable from the package as before the split
from explorer.analysis.agreement.settings import COMMAND as COMMAND, FORMAT as FORMAT, IG_METHOD as IG_METHOD
from explorer.analysis.agreement.settings import JSON_FILE as JSON_FILE, LEVEL as LEVEL, PRIMARY as PRIMARY
from explorer.analysis.agreement.settings import REPORT_FILE as REPORT_FILE, SEED as SEED, STRENGTH as STRENGTH
from explorer.analysis.agreement.settings import THREADS as THREADS
from explorer.analysis.agreement.stats import (
    agreement, interval, kendall, paired_difference, pointing, random_top_k, spearman, top_k_overlap,
)
from explorer.analysis.agreement.maps import (
    ModelMaps, PairSimilarity, gradient_rollout, gradient_weighted_attention, minilm_maps, patch_sums,
    shared_word_tokens, vit_maps,
)
from explorer.analysis.agreement.report import render_report
from explorer.analysis.agreement.study import analyse, default_agreement_dir, load_agreement, main, run

__all__ = [
    "MEASURES", "IG_STEPS", "DEFAULT_N", "VIT_K", "MINILM_K", "VIT_GRAY", "MODELS", "ModelMaps",
    "spearman", "kendall", "top_k_overlap", "random_top_k", "interval", "paired_difference", "agreement", "pointing",
    "patch_sums", "shared_word_tokens",
    "gradient_weighted_attention", "gradient_rollout", "vit_maps", "PairSimilarity", "minilm_maps", "analyse",
    "run", "render_report", "default_agreement_dir", "load_agreement", "main",
]
