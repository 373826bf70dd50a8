"""Attention vs attribution: rank statistics, intervals, maps and the shipped results, against independent references.

Independent references and tolerances:

- ``scipy.stats.spearmanr`` / ``scipy.stats.kendalltau`` (tau-b) on random, tied and mixed data: ``EXACT = 1e-12``
  (both sides are a few hundred float64 operations on ranks);
- ``scipy.stats.t.interval`` (the module's interval takes its quantile from ``scipy.stats.t.ppf``): ``1e-10``;
- top-k overlaps written out by hand, and with ties the average over every tie-breaking order enumerated with
  ``itertools.permutations`` (exact rationals, compared to ``1e-12``); the random rate ``k / n`` by enumerating all
  ``n!`` rankings;
- gradient rollout as a numpy loop of Chefer et al.'s rule; the gradient of the target with respect to the last
  attention pattern by the chain rule through ``z = A V`` (``dA = dz V^T``, from the recorded values ``V`` and the
  gradient at ``z``), float64: ``1e-10``;
- MiniLM's target recomputed with ``BertEncoder.forward`` on token ids (float32: ``1e-5``); IG completeness against
  ``f(x) - f(baseline)`` evaluated directly (``1e-3`` of the gap at 32 points; the delta captum reports equals
  ``sum - gap`` to ``1e-5``);
- the shipped ``assets/agreement/agreement.json``: every mean / std / interval / random rate / ceiling recomputed
  from its stored per-input values with scipy (``1e-9``); three inputs per model recomputed from scratch with the
  same code path (1 thread): per-input measures within ``RECOMPUTE = 1e-6`` (ViT, float64) and ``1e-4`` (MiniLM,
  float32 -- IG sums over 384 dimensions, and a rank can only flip if two tokens' scores lie within rounding), IG
  deltas within ``1e-6``; ``REPORT.md`` equal to the report rendered from the JSON.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from explorer.analysis.agreement import (
    MEASURES, MINILM_K, VIT_K, PairSimilarity, agreement, default_agreement_dir, gradient_rollout,
    gradient_weighted_attention, interval, kendall, load_agreement, minilm_maps, paired_difference, pointing,
    random_top_k, render_report, spearman, top_k_overlap, vit_maps,
)

EXACT = 1e-12
RECOMPUTE = {"vit": 1e-6, "minilm": 1e-4}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/analysis/conftest.py


@pytest.fixture(scope="module")
def shipped():
    return load_agreement()


@pytest.fixture(scope="module")
def pretrained():
    from explorer.models import load_pretrained

    return load_pretrained()


# --- rank statistics --------------------------------------------------------------------------------------------


def _cases():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 17, 36, 100):
        yield rng.normal(size=n), rng.normal(size=n)  # continuous
        yield rng.integers(0, 3, size=n).astype(float), rng.integers(0, 4, size=n).astype(float)  # heavy ties
        yield rng.normal(size=n), np.where(rng.random(n) < 0.8, 0.0, rng.random(n))  # IG-like: most tied at 0


@pytest.mark.parametrize("a, b", list(_cases()))
def test_spearman_and_kendall_match_scipy(a, b):
    ref_rho = stats.spearmanr(a, b).statistic
    ref_tau = stats.kendalltau(a, b).statistic  # tau-b
    if np.isnan(ref_rho):
        assert math.isnan(spearman(a, b)) and math.isnan(kendall(a, b))
    else:
        assert abs(spearman(a, b) - ref_rho) <= EXACT
        assert abs(kendall(a, b) - ref_tau) <= EXACT
        assert abs(spearman(torch.tensor(a), list(b)) - ref_rho) <= EXACT  # tensors and lists too


def test_constant_input_is_undefined_like_scipy():
    with np.errstate(all="ignore"), pytest.warns(stats.ConstantInputWarning):
        assert np.isnan(stats.spearmanr([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).statistic)
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(kendall([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]))
    assert spearman([1, 2, 3], [1, 2, 3]) == 1.0 and kendall([1, 2, 3], [3, 2, 1]) == -1.0


def test_top_k_overlap_by_hand():
    a = [5.0, 4.0, 3.0, 2.0, 1.0]
    b = [1.0, 5.0, 4.0, 2.0, 3.0]
    assert top_k_overlap(a, b, 1) == 0.0  # unit 0 vs unit 1
    assert abs(top_k_overlap(a, b, 2) - 1 / 2) <= EXACT  # {0, 1} & {1, 2} = {1}
    assert abs(top_k_overlap(a, b, 3) - 2 / 3) <= EXACT  # {0, 1, 2} & {1, 2, 4} = {1, 2}
    assert top_k_overlap(a, b, 5) == 1.0


def _orders(values):
    """Every strict ranking (unit indices, best first) consistent with ``values`` (ties in any order)."""
    groups = [[i for i, v in enumerate(values) if v == level] for level in sorted(set(values), reverse=True)]
    for parts in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield [i for part in parts for i in part]


@pytest.mark.parametrize("a, b, k", [
    ([3, 1, 1, 1, 0], [2, 2, 2, 0, 1], 2),
    ([0, 0, 0, 0, 1, 2], [1, 0, 0, 0, 0, 0], 3),
    ([1, 1, 1, 1], [4, 3, 2, 1], 2),
])
def test_top_k_overlap_with_ties_is_the_average_over_tie_breaks(a, b, k):
    overlaps = [len(set(oa[:k]) & set(ob[:k])) / k for oa in _orders(a) for ob in _orders(b)]
    assert abs(top_k_overlap(np.array(a, float), np.array(b, float), k) - np.mean(overlaps)) <= EXACT


def test_random_top_k_by_enumeration():
    a = [5.0, 4.0, 3.0, 2.0, 1.0]
    overlaps = [top_k_overlap(a, list(map(float, p)), 2) for p in itertools.permutations(range(5))]
    assert abs(np.mean(overlaps) - 2 / 5) <= EXACT
    assert abs(random_top_k(5, 2) - 2 / 5) <= EXACT


# --- intervals --------------------------------------------------------------------------------------------------


def test_interval_matches_scipy():
    values = np.random.default_rng(1).normal(0.3, 0.2, size=200)
    got = interval(list(values))
    low, high = stats.t.interval(0.95, 199, loc=values.mean(), scale=stats.sem(values))
    assert got["n"] == 200 and abs(got["mean"] - values.mean()) <= EXACT
    assert abs(got["std"] - values.std(ddof=1)) <= EXACT
    assert abs(got["ci95"][0] - low) <= 1e-10 and abs(got["ci95"][1] - high) <= 1e-10
    few = [0.1, 0.7, 0.4]  # another level and 2 degrees of freedom
    low, high = stats.t.interval(0.8, 2, loc=np.mean(few), scale=stats.sem(few))
    assert np.abs(np.array(interval(few, level=0.8)["ci95"]) - [low, high]).max() <= 1e-10
    assert interval([0.5]) == {"mean": 0.5, "std": 0.0, "ci95": [0.5, 0.5], "n": 1}
    diff = paired_difference([1.0, 2.0, None, 4.0], [0.5, 1.0, 3.0, 1.0])  # the None input is left out
    assert diff["n"] == 3 and abs(diff["mean"] - (0.5 + 1.0 + 3.0) / 3) <= EXACT


# --- agreement over a batch -------------------------------------------------------------------------------------


def test_agreement_batch_equals_per_input_values():
    rng = np.random.default_rng(2)
    maps = [rng.random(7), rng.random(5), rng.random(9)]
    reference = [rng.random(7), np.array([0.0, 0.0, 0.0, 1.0, 2.0]), rng.random(9)]
    keep = [np.ones(7, bool), np.ones(5, bool), np.array([False] + [True] * 7 + [False])]  # [CLS] ... [SEP]
    out = agreement(maps, reference, 2, keep)
    kept = [(m[k], r[k]) for m, r, k in zip(maps, reference, keep)]
    for measure, reference_fn in (("spearman", lambda x, y: stats.spearmanr(x, y).statistic),
                                  ("kendall", lambda x, y: stats.kendalltau(x, y).statistic)):
        values = [reference_fn(x, y) for x, y in kept]
        assert np.allclose(out[measure]["values"], values, rtol=0, atol=1e-9)  # stored to 9 significant digits
        low, high = stats.t.interval(0.95, 2, loc=np.mean(out[measure]["values"]),
                                     scale=stats.sem(out[measure]["values"]))
        assert abs(out[measure]["ci95"][0] - low) <= 1e-10 and abs(out[measure]["ci95"][1] - high) <= 1e-10
    assert out["top_k"]["k"] == 2 and out["n_units"] == [7, 5, 7]
    assert abs(out["top_k"]["random"] - np.mean([2 / 7, 2 / 5, 2 / 7])) <= 1e-9
    # ceiling: only input 1 has ties; its best is the reference itself with ties broken (scipy on explicit ranks)
    best_rho = stats.spearmanr([0, 1, 2, 3, 4], reference[1]).statistic
    assert abs(out["spearman"]["ceiling"] - (1 + best_rho + 1) / 3) <= 1e-9
    assert abs(out["top_k"]["ceiling"] - 1.0) <= 1e-9  # the top 2 of input 1 are not tied
    as_tensor = agreement(torch.tensor(np.stack([maps[0], maps[0]])), np.stack([reference[0]] * 2), 3)
    assert as_tensor["spearman"]["values"] == [out["spearman"]["values"][0]] * 2


def test_pointing_by_hand():
    maps = [np.array([0.1, 0.9, 0.2]), np.array([0.5, 0.5, 0.1, 0.0])]
    targets = [np.array([False, True, False]), np.array([True, False, False, False])]
    out = pointing(maps, targets)
    assert out["values"] == [1.0, 0.5]  # second map: two maximal units, one on target
    assert abs(out["random"] - (1 / 3 + 1 / 4) / 2) <= 1e-9


@pytest.mark.parametrize("call, error, name", [
    (lambda: agreement([], [], 1), ValueError, "maps"),
    (lambda: agreement(np.zeros((0, 4)), np.zeros((0, 4)), 1), ValueError, "maps"),
    (lambda: agreement([np.arange(4.0)], [np.arange(5.0)], 1), ValueError, r"reference\[0\]"),
    (lambda: agreement([np.arange(4.0)], [np.arange(4.0)] * 2, 1), ValueError, "reference"),
    (lambda: agreement([np.arange(4.0)], [np.arange(4.0)], 0), ValueError, "k"),
    (lambda: agreement([np.arange(4.0)], [np.arange(4.0)], 5), ValueError, "k"),
    (lambda: agreement([np.arange(4.0)], [np.arange(4.0)], 1.5), TypeError, "k"),
    (lambda: agreement([np.arange(4.0)], [np.arange(4.0)], 1, [np.array([True, False, False, False])]),
     ValueError, "keep"),
    (lambda: agreement([np.arange(4.0)], [np.arange(4.0)], 1, [np.zeros(4, bool)]), ValueError, "keep"),
    (lambda: agreement([np.arange(4.0)], [np.arange(4.0)], 1, [np.ones(4)]), TypeError, r"keep\[0\]"),
    (lambda: agreement([np.arange(4.0)], [np.arange(4.0)], 1, [np.ones(3, bool)]), ValueError, r"keep\[0\]"),
    (lambda: agreement("abc", [np.arange(4.0)], 1), TypeError, "maps"),
    (lambda: agreement([np.array([1.0, np.nan])], [np.arange(2.0)], 1), ValueError, r"maps\[0\]"),
    (lambda: spearman([1.0, 2.0], [1.0, 2.0, 3.0]), ValueError, "b"),
    (lambda: spearman([1.0], [1.0]), ValueError, "a"),
    (lambda: top_k_overlap([1.0, 2.0], [2.0, 1.0], 3), ValueError, "k"),
    (lambda: interval([]), ValueError, "values"),
    (lambda: interval([1.0, 2.0], level=1.0), ValueError, "level"),
    (lambda: random_top_k(0, 1), ValueError, "n"),
    (lambda: random_top_k(4, 5), ValueError, "k"),
    (lambda: gradient_rollout(torch.ones(2, 3, 4)), ValueError, "weighted"),
    (lambda: gradient_weighted_attention([1.0], torch.ones(2, 3, 3)), TypeError, "patterns"),
    (lambda: gradient_weighted_attention(torch.ones(2, 3, 3), torch.ones(2, 3, 4)), ValueError, "gradients"),
    (lambda: minilm_maps([]), ValueError, "pairs"),
    (lambda: minilm_maps([("a sentence", 3)]), TypeError, r"pairs\[0\]"),
    (lambda: vit_maps(torch.nn.Linear(2, 2), torch.zeros(1, 1, 24, 24)), TypeError, "model"),
])
def test_bad_input_names_the_argument(call, error, name):
    with pytest.raises(error, match=rf"^{name} "):
        call()


# --- gradient-weighted attention ----------------------------------------------------------------------------------


def test_gradient_rollout_matches_numpy_loop():
    rng = np.random.default_rng(3)
    patterns = rng.random((3, 2, 4, 5, 5))  # (layer, batch, head, token, token)
    grads = rng.normal(size=patterns.shape)
    got = gradient_rollout(gradient_weighted_attention(torch.tensor(patterns), torch.tensor(grads))).numpy()
    for b in range(2):
        relevance = np.eye(5)
        for layer in range(3):
            weighted = np.mean([np.maximum(patterns[layer, b, h] * grads[layer, b, h], 0) for h in range(4)], axis=0)
            relevance = relevance + weighted @ relevance
        assert np.abs(got[b] - relevance).max() <= EXACT


def test_vit_attention_gradient_by_chain_rule():
    """``dlogit/dA`` of the last block, as used for ``grad_attention``, equals ``dlogit/dz @ V^T`` (z = A V)."""
    from explorer.data.digits import digits_dataset
    from explorer.hooks import record
    from explorer.models.head_to_head import load_head_to_head

    model = load_head_to_head("vit")[0].double()
    images = digits_dataset("test", canvas=24, n=2)[0].double()
    last = f"blocks.{model.config.depth - 1}.attn"
    with torch.enable_grad(), record(model, [f"{last}.hook_pattern", f"{last}.hook_z", f"{last}.hook_v"],
                                     detach=False) as trace:
        logits = model(images)
        chosen = logits.gather(1, logits.argmax(-1, keepdim=True)).sum()
        d_pattern, d_z = torch.autograd.grad(chosen, [trace[f"{last}.hook_pattern"], trace[f"{last}.hook_z"]])
    by_chain = d_z @ trace[f"{last}.hook_v"].detach().transpose(-2, -1)  # (batch, head, query, key)
    assert (d_pattern - by_chain).abs().max() <= 1e-10
    maps = vit_maps(model, images, steps=8)
    expected = (trace[f"{last}.hook_pattern"].detach() * by_chain).clamp(min=0).mean(dim=1)[:, 0, 1:]
    for row, ref in zip(maps.maps["grad_attention"], expected):
        assert np.abs(row - ref.numpy()).max() <= 1e-10


# --- MiniLM target and IG -------------------------------------------------------------------------------------------


def test_minilm_similarity_matches_the_encoder_and_ig_is_complete(pretrained):
    a, b = "The old fisherman repaired a broken boat near the harbour.", "A boat was in the harbour."
    target = PairSimilarity(pretrained, a, b)
    tok, model = pretrained.tokenizer, pretrained.model
    with torch.no_grad():
        ea, eb = model(tok.encode(a).input_ids).mean_pooled(), model(tok.encode(b).input_ids).mean_pooled()
        reference = torch.nn.functional.cosine_similarity(ea, eb)[0]
        at_x, at_b = target(target.word)[0], target(target.baseline("pad"))[0]
    assert abs(float(at_x) - float(reference)) <= 1e-5
    attributions, delta = target.integrated_gradients("pad", steps=32)
    gap = float(at_x - at_b)
    total = float(attributions.sum())
    assert abs(total - gap) <= 1e-3 * abs(gap)  # completeness
    assert abs(delta - (total - gap)) <= 1e-5  # captum's delta is that miss
    special = torch.tensor(target.encoding.special)
    assert special.sum() == 2 and (attributions[special] == 0).all()  # [CLS] / [SEP] equal their baseline


def test_minilm_maps_run_in_eval_mode_and_restore_the_flags(pretrained):
    pair = ("The old fisherman repaired a broken boat near the harbour.", "A boat was in the harbour.", "boat")
    model = pretrained.model
    flags = [module.training for module in model.modules()]
    want = minilm_maps([pair], pretrained, steps=2)
    seen = []  # the first block's mode at every call (MiniLM has no dropout: the maps alone would not tell)
    hook = model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(module.training))
    model.train()
    try:
        got = minilm_maps([pair], pretrained, steps=2)
        assert all(module.training for module in model.modules())  # train mode is back
    finally:
        hook.remove()
        for module, flag in zip(model.modules(), flags):
            module.training = flag
    assert seen and not any(seen)  # every forward pass ran in eval mode
    for name, rows in want.maps.items():  # the same maps as from a model already in eval mode
        assert np.array_equal(got.maps[name][0], rows[0]), name
    assert got.targets[0].sum() == 1  # "boat" is one token of A


# --- the shipped results --------------------------------------------------------------------------------------------


def _check_summary(summary, values=None):
    """mean / std / t-interval of ``summary`` recomputed from its stored values (or from ``values``) with scipy."""
    stored = summary["values"] if values is None else values
    defined = np.array([v for v in stored if v is not None], dtype=np.float64)
    assert summary["n"] == defined.size
    if values is None:
        assert summary["n_undefined"] == len(stored) - defined.size
    assert abs(summary["mean"] - defined.mean()) <= 1e-9
    assert abs(summary["std"] - defined.std(ddof=1)) <= 1e-9
    half = stats.t.ppf(0.975, defined.size - 1) * stats.sem(defined)  # 0 when every value is equal
    assert abs(summary["ci95"][0] - (defined.mean() - half)) <= 1e-9
    assert abs(summary["ci95"][1] - (defined.mean() + half)) <= 1e-9


def test_shipped_summaries_recomputed_from_per_input_values(shipped):
    assert set(shipped["models"]) == {"vit", "minilm"}
    for name, model in shipped["models"].items():
        assert model["n_inputs"] >= 200 and len(model["inputs"]) == model["n_inputs"]
        assert model["k"] == {"vit": VIT_K, "minilm": MINILM_K}[name]
        units = [item["n_units"] for item in model["inputs"]]
        targets = [item["n_target_units"] for item in model["inputs"]]
        every = [model["agreement"][m][r] for m in model["maps"] for r in model["references"]]
        for cells in every + list(model["calibration"].values()):
            for measure in MEASURES:
                assert len(cells[measure]["values"]) == model["n_inputs"]
                _check_summary(cells[measure])
            assert abs(cells["top_k"]["random"] - np.mean([model["k"] / n for n in units])) <= 1e-9
        for point in model["pointing"].values():
            _check_summary(point)
            assert abs(point["random"] - np.mean([t / n for t, n in zip(targets, units)])) <= 1e-9
        for map_name, diffs in model["comparisons"].items():
            for measure in MEASURES:
                mine = model["agreement"][map_name]["ig"][measure]["values"]
                raw = model["agreement"]["attention"]["ig"][measure]["values"]
                _check_summary(diffs[measure], [x - y for x, y in zip(mine, raw) if x is not None and y is not None])
        for run in model["ig"].values():
            deltas = np.abs(run["delta"])
            assert run["max_abs_delta"] == deltas.max() and abs(run["mean_abs_delta"] - deltas.mean()) <= 1e-12
            assert run["max_rel_delta"] <= 5e-3  # completeness: the quadrature misses f(x) - f(b) by < 0.5 %


def test_shipped_ceiling_of_the_black_baseline(shipped):
    """IG with a black baseline is exactly 0 off the ink: the tied background caps rho, tau and (with fewer than k
    ink patches) the top-k overlap. Ceiling per digit with ``t`` ink patches (distinct IG) and ``36 - t`` zeros: scipy
    on the reference and its order with the zeros' tie broken; top-k by hand."""
    vit = shipped["models"]["vit"]
    k = vit["k"]
    rho, tau, top = [], [], []
    for item in vit["inputs"]:
        t = item["n_target_units"]
        assert 1 <= t <= 4  # a centred 8 x 8 digit lies in 2 x 2 patches
        reference = np.r_[np.arange(1.0, t + 1), np.zeros(36 - t)]
        best = np.r_[np.arange(1.0, t + 1), -np.arange(1.0, 37 - t)]
        rho.append(stats.spearmanr(best, reference).statistic)
        tau.append(stats.kendalltau(best, reference).statistic)
        top.append(1.0 if t >= k else (t + (k - t) * (k - t) / (36 - t)) / k)  # k - t slots among 36 - t zeros
    cells = vit["agreement"]["attention"]["ig"]
    assert abs(cells["spearman"]["ceiling"] - np.mean(rho)) <= 1e-8
    assert abs(cells["kendall"]["ceiling"] - np.mean(tau)) <= 1e-8
    assert abs(cells["top_k"]["ceiling"] - np.mean(top)) <= 1e-8
    assert vit["agreement"]["attention"]["ig_gray"]["spearman"]["ceiling"] == 1.0  # gray: no ties


def test_shipped_report_is_rendered_from_the_json(shipped):
    text = (default_agreement_dir() / "REPORT.md").read_text()
    assert text == render_report(shipped)


def _recomputed(result, k):
    return {(m, r): agreement(result.maps[m], result.references[r], k, result.keep)
            for m in result.maps for r in result.references}


def test_shipped_vit_values_recomputed_on_three_digits(shipped):
    from explorer.data.digits import digits_dataset
    from explorer.models.head_to_head import load_head_to_head

    vit = shipped["models"]["vit"]
    model = load_head_to_head("vit")[0].double()
    images, labels = digits_dataset("test", canvas=24, placement="centre", seed=0, n=3)
    assert [item["label"] for item in vit["inputs"][:3]] == labels.tolist()
    result = vit_maps(model, images.double(), steps=vit["ig"]["ig"]["steps"])
    for (m, r), cells in _recomputed(result, vit["k"]).items():
        for measure in MEASURES:
            stored = vit["agreement"][m][r][measure]["values"][:3]
            assert np.abs(np.array(cells[measure]["values"]) - stored).max() <= RECOMPUTE["vit"], (m, r, measure)
    for ref, run in result.ig.items():
        assert np.abs(np.array(run["delta"]) - vit["ig"][ref]["delta"][:3]).max() <= 1e-6


def test_shipped_minilm_values_recomputed_on_three_pairs(shipped, pretrained):
    from explorer.data.sentence_pairs import sentence_pairs

    minilm = shipped["models"]["minilm"]
    pairs = sentence_pairs(3, seed=0)
    assert [item["a"] for item in minilm["inputs"][:3]] == [p.a for p in pairs]
    result = minilm_maps(pairs, pretrained, steps=minilm["ig"]["ig"]["steps"])
    for (m, r), cells in _recomputed(result, minilm["k"]).items():
        for measure in MEASURES:
            stored = minilm["agreement"][m][r][measure]["values"][:3]
            assert np.abs(np.array(cells[measure]["values"]) - stored).max() <= RECOMPUTE["minilm"], (m, r, measure)
    for ref, run in result.ig.items():
        assert np.abs(np.array(run["delta"]) - minilm["ig"][ref]["delta"][:3]).max() <= 1e-6


def test_load_agreement_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m explorer.analysis.agreement"):
        load_agreement(tmp_path)
    (tmp_path / "agreement.json").write_text('{"format": 0}')
    with pytest.raises(ValueError, match="format"):
        load_agreement(tmp_path)
    with pytest.raises(TypeError, match="^folder "):
        load_agreement(3)
