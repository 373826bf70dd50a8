"""The shipped intervention studies of the long-range and cross-modal models, re-checked.

A few inputs of each JSON are recomputed twice: with the library (``explorer.intervene`` edits, ``record``) and with
hand-written references that never touch explorer's hook points -- torch ``forward_pre_hook``s on each attention
layer's output projection (whose input holds the heads side by side, ``[batch, query, head * head_dim]``) for
ablations and masks, and attention rows written out from the layers' weights. Every summary is recomputed from the
per-input values with scipy.stats, and the report sections are checked to print the JSON's numbers.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from explorer import intervene, record
from explorer.analysis.intervention import class_probability, logit_difference, mean_ablation, unit_means, zero_ablation
from explorer.analysis.intervention_study import load_study, render_report
from explorer.analysis.intervention_study import cross_modal as cm
from explorer.analysis.intervention_study import long_range as lr
from explorer.analysis.intervention_study.common import (
    binomial_summary, mean_text, percent, rho_text, wilson, write_json,
)
from explorer.analysis.localisation import attention_localisation
from explorer.data.sequences import SequenceBatch
from explorer.data.shapes import sample_batch
from explorer.models import load_cross_modal
from explorer.models.long_range import evaluation_set, load_long_range_model

TOL = {"rel": 1e-4, "abs": 1e-5}  # stored values have 6 significant digits; float32 batches of another size
GRAD_TOL = {"rel": 2e-3, "abs": 2e-5}  # float32 gradients, different batch composition


# --- shared references --------------------------------------------------------------------------------------------


@contextmanager
def head_edit(attn: nn.Module, edit: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Apply ``edit`` to the input of ``attn.out_proj`` -- the heads' outputs side by side -- with a plain torch
    pre-hook (no explorer hook point involved)."""
    handle = attn.out_proj.register_forward_pre_hook(lambda module, args: (edit(args[0]),))
    try:
        yield
    finally:
        handle.remove()


def head_columns(attn: nn.Module, head: int) -> slice:
    return slice(head * attn.head_dim, (head + 1) * attn.head_dim)


def zero_head(attn: nn.Module, head: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def edit(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[..., head_columns(attn, head)] = 0
        return x
    return edit


def scale_heads(attn: nn.Module, xi: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Multiply head ``h`` of input ``b`` by ``xi[b, h]``."""
    def edit(x: torch.Tensor) -> torch.Tensor:
        factor = xi.repeat_interleave(attn.head_dim, dim=1)[:, None, :]  # (batch, 1, head * head_dim)
        return x * factor
    return edit


def reference_gradient(model: nn.Module, run: Callable[[], torch.Tensor], layers: list[nn.Module], batch: int
                       ) -> torch.Tensor:
    """``d metric_b / d xi[b, layer, head]`` at 1 through pre-hooks, ``[batch, layer, head]``."""
    masks = [torch.ones(batch, attn.num_heads, requires_grad=True) for attn in layers]
    with torch.enable_grad():
        handles = [attn.out_proj.register_forward_pre_hook(
            (lambda e: lambda module, args: (e(args[0]),))(scale_heads(attn, mask)))
            for attn, mask in zip(layers, masks)]
        try:
            value = run()
        finally:
            for handle in handles:
                handle.remove()
        grads = torch.autograd.grad(value.sum(), masks)
    return torch.stack(grads, dim=1).double()


def t_interval(values: np.ndarray) -> list[float]:
    """scipy's 95 % Student-t interval of the mean."""
    return list(stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values)))


def wilson_scipy(correct: int, n: int) -> list[float]:
    ci = stats.binomtest(correct, n).proportion_ci(0.95, method="wilson")
    return [ci.low, ci.high]


def check_agreement(agreement: dict, effect: np.ndarray, gradient: np.ndarray, attention: np.ndarray) -> None:
    """Per-input Spearman (scipy) and its t-interval, for the four pairs of :func:`three_numbers`."""
    pairs = {"attention~effect": (attention, np.abs(effect)), "gradient~effect": (np.abs(gradient), np.abs(effect)),
             "attention~gradient": (attention, np.abs(gradient)), "prediction~effect": (-gradient, effect)}
    for name, (a, b) in pairs.items():
        a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        rhos = np.array([stats.spearmanr(a[i], b[i]).statistic for i in range(len(a))])
        stored = np.array([np.nan if r is None else r for r in agreement[name]["per_input"]], dtype=float)
        np.testing.assert_allclose(stored, rhos, atol=2e-6)  # 6 digits stored; ties in rounded inputs agree
        defined = stored[~np.isnan(stored)]
        assert agreement[name]["n"] == len(defined) == int((~np.isnan(rhos)).sum())
        # the summary is that of the stored rhos, so it is re-derived from the file to float precision
        assert agreement[name]["mean"] == pytest.approx(defined.mean(), abs=1e-12)
        assert agreement[name]["ci95"] == pytest.approx(t_interval(defined), abs=1e-12)


# --- long range ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_range() -> dict:
    return load_study("long_range")


@pytest.fixture(scope="module")
def lr_model() -> nn.Module:
    torch.set_num_threads(1)
    return load_long_range_model("attention")[0]


@pytest.fixture(scope="module")
def lr_data():
    return evaluation_set()


def later_token_attention(model: nn.Module, x: torch.Tensor, first: torch.Tensor, second: torch.Tensor
                          ) -> torch.Tensor:
    """``[input, layer, head]``: softmax of the later token's query against the keys up to it, written out from
    the weights (pre-norm blocks, causal attention, scale 1 / sqrt(head_dim))."""
    out = []
    with torch.no_grad():
        h = model.embed(x.transpose(1, 2)) + model.positions[: x.shape[2]]  # (batch, length, embed)
        for block in model.blocks:
            attn = block.attn
            a = block.norm1(h)
            q = attn.q_proj(a).unflatten(-1, (attn.num_heads, attn.head_dim))  # (batch, length, head, head_dim)
            k = attn.k_proj(a).unflatten(-1, (attn.num_heads, attn.head_dim))
            rows = []
            for b in range(x.shape[0]):
                s = int(second[b])
                scores = torch.einsum("hd,khd->hk", q[b, s], k[b, : s + 1]) / math.sqrt(attn.head_dim)
                rows.append(scores.softmax(-1)[:, int(first[b])])  # (head,)
            out.append(torch.stack(rows))
            h = block(h)
    return torch.stack(out, dim=1).double()


def test_long_range_sample_recomputed_by_library_and_by_hand(long_range, lr_model, lr_data):
    tn = long_range["three_numbers"]
    index = np.asarray(tn["index"])
    distance = lr_data.distance[index]
    picks = [int(np.flatnonzero(distance.numpy() == d)[0]) for d in (1, 11, 64, 256)]  # rows of the subset
    rows = torch.as_tensor(index[picks])  # rows of the test set
    x, y = lr_data.inputs[rows], lr_data.labels[rows]
    first, second = lr_data.first[rows], lr_data.second[rows]
    assert long_range["data"]["label"][int(rows[0])] == int(y[0])
    layers = [block.attn for block in lr_model.blocks]
    margin = logit_difference(y, 1 - y)

    # attention on the partner: library path, hand-written rows, stored
    stored = torch.tensor([tn["attention"][p] for p in picks], dtype=torch.float64)
    hand = later_token_attention(lr_model, x, first, second)
    library = lr.partner_attention(lr_model, SequenceBatch(x, lr_data.tokens[rows], y, first,
                                                              lr_data.distance[rows], lr_data.vocab))
    assert hand.numpy() == pytest.approx(stored.numpy(), **TOL)
    assert library.numpy() == pytest.approx(hand.numpy(), rel=1e-5, abs=1e-6)

    # zero-ablation effect on the margin and the stored correctness, per head
    with torch.no_grad():
        base = margin(lr_model(x)).double()
    assert base.numpy() == pytest.approx([tn["margin"][p] for p in picks], **TOL)
    for layer, attn in enumerate(layers):
        for head in range(attn.num_heads):
            with torch.no_grad(), head_edit(attn, zero_head(attn, head)):
                by_hand = margin(lr_model(x)).double()
            with torch.no_grad(), intervene(lr_model, zero_ablation(lr_model, {f"blocks.{layer}.attn.hook_z": [head]})):
                by_library = margin(lr_model(x)).double()
            assert by_library.numpy() == pytest.approx(by_hand.numpy(), rel=1e-5, abs=1e-5)
            assert (by_hand - base).numpy() == pytest.approx([tn["effect"][p][layer][head] for p in picks], **TOL)
            stored_hits = [long_range["ablation"]["correct"]["zero"][int(r)][layer][head] for r in rows]
            assert (by_hand > 0).long().tolist() == stored_hits

    # gradient of the margin w.r.t. a head mask at 1
    grad = reference_gradient(lr_model, lambda: margin(lr_model(x)), layers, len(rows))
    assert grad.numpy() == pytest.approx(np.array([tn["gradient"][p] for p in picks]), **GRAD_TOL)

    # mean ablation of the pair head: the mean written out from pre-hook captures on the reference batch
    layer, head = long_range["setup"]["pair_head"]
    attn = layers[layer]
    captured = []
    reference = lr.reference_batch().inputs
    handle = attn.out_proj.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
    with torch.no_grad():
        lr_model(reference)
    handle.remove()
    mean = captured[0].mean(0)[:, head_columns(attn, head)]  # (length, head_dim), per position

    def to_mean(z: torch.Tensor) -> torch.Tensor:
        z = z.clone()
        z[..., head_columns(attn, head)] = mean
        return z

    with torch.no_grad(), head_edit(attn, to_mean):
        by_hand = margin(lr_model(x)).double()
    means = unit_means(lr_model, lambda m, i: m(i), reference, lr.HOOKS)
    name = f"blocks.{layer}.attn.hook_z"
    with torch.no_grad(), intervene(lr_model, mean_ablation(lr_model, {name: [head]}, means)):
        by_library = margin(lr_model(x)).double()
    assert by_library.numpy() == pytest.approx(by_hand.numpy(), rel=1e-4, abs=1e-4)
    sure = by_hand.abs() > 1e-3  # a sign is only comparable away from 0
    stored_hits = torch.tensor([long_range["ablation"]["correct"]["mean"][int(r)][layer][head] for r in rows])
    assert torch.equal((by_hand > 0).long()[sure], stored_hits[sure])


def test_long_range_summaries_equal_a_recomputation(long_range):
    distance = np.asarray(long_range["data"]["distance"])
    label = np.asarray(long_range["data"]["label"])
    correct = long_range["ablation"]["correct"]
    tables = long_range["ablation"]["accuracy"]
    heads = long_range["setup"]["heads"]
    columns = {"unablated": np.asarray(correct["unablated"])}
    for how in ("zero", "mean"):
        per_head = np.asarray(correct[how]).reshape(len(distance), -1)
        columns.update({f"{how} {h}": per_head[:, i] for i, h in enumerate(heads)})
        columns[f"{how} all but pair"] = np.asarray(correct["all_but_pair"][how])
    assert sorted(columns) == sorted(tables)
    for name, hits in columns.items():
        for d in np.unique(distance):
            summary = tables[name]["by_distance"][str(d)]
            sel = distance == d
            assert (summary["correct"], summary["n"]) == (int(hits[sel].sum()), int(sel.sum()))
            assert summary["ci95"] == pytest.approx(wilson_scipy(summary["correct"], summary["n"]), abs=1e-9)
            assert summary["chance_in_ci"] == (summary["ci95"][0] <= 0.5 <= summary["ci95"][1])
        for part, sel in (("within_field", distance < 11), ("beyond_field", distance >= 11)):
            summary = tables[name][part]
            assert summary["accuracy"] == pytest.approx(hits[sel].mean(), abs=1e-12)
            assert summary["ci95"] == pytest.approx(wilson_scipy(int(hits[sel].sum()), int(sel.sum())), abs=1e-9)
            predicted = np.where(hits[sel] == 1, label[sel], 1 - label[sel])
            assert summary["predicts_one"] == pytest.approx(predicted.mean(), abs=1e-12)

    tn = long_range["three_numbers"]
    index = np.asarray(tn["index"])
    attention, gradient, effect = (np.asarray(tn[k]) for k in ("attention", "gradient", "effect"))
    margin = np.asarray(tn["margin"])
    assert len(index) >= 200 and np.all(np.diff(index) > 0)
    # the stored effect and margin give the stored zero-ablation correctness (away from a tie)
    after = margin[:, None, None] + effect
    zero = np.asarray(correct["zero"])[index]
    sure = np.abs(after) > 1e-3
    np.testing.assert_array_equal((after > 0)[sure], zero[sure] == 1)
    for key, values in (("attention", attention), ("gradient", gradient), ("abs_gradient", np.abs(gradient)),
                        ("effect", effect), ("abs_effect", np.abs(effect))):
        np.testing.assert_allclose(tn["means"][key], values.mean(0), rtol=1e-6, atol=1e-9)
    check_agreement(long_range["agreement"], effect, gradient, attention)

    # pruning: step 0 is the unablated subset, step 1 the first head of the order alone (both from per-input flags)
    pruning = long_range["pruning"]
    base = np.asarray(correct["unablated"])[index]
    for order, curve in pruning["curves"].items():
        layer, head = pruning["orders"][order][0]
        assert curve[0] == pytest.approx(base.mean(), abs=1e-9)
        assert curve[1] == pytest.approx(zero[:, layer, head].mean(), abs=1e-9)
        assert pruning["ci95"][order][0] == pytest.approx(wilson_scipy(int(base.sum()), len(base)), abs=1e-9)
    assert len({curve[-1] for curve in pruning["curves"].values()}) == 1  # every head removed, whatever the order
    assert sum(k.startswith("random_") for k in pruning["curves"]) >= 3
    assert lr.claims(long_range) == long_range["claims"]


def test_long_range_section_prints_the_json(long_range):
    lines = lr.section("long_range", long_range)
    text = "\n".join(lines)
    pair = long_range["setup"]["pair_head_label"]
    tables = long_range["ablation"]["accuracy"]
    assert f"| **d ≥ 11** | {percent(tables['unablated']['beyond_field'])} |" in text
    assert percent(tables[f"zero {pair}"]["beyond_field"]) in text
    assert rho_text(long_range["agreement"]["attention~effect"]) in text
    claims = [line for line in lines if line.startswith("- **")]
    assert len(claims) == len(long_range["claims"])
    assert sum("**did not hold**" in line for line in claims) == sum(not c["held"] for c in long_range["claims"])
    changed = copy.deepcopy(long_range)
    changed["agreement"]["attention~effect"]["mean"] = 0.777
    changed["ablation"]["accuracy"][f"zero {pair}"]["beyond_field"]["accuracy"] = 0.1234
    text = "\n".join(lr.section("long_range", changed))
    assert "+0.78 [" in text and "| 12.3 [" in text


# --- cross-modal --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cross_modal() -> dict:
    return load_study("cross_modal")


@pytest.fixture(scope="module")
def cm_setup(cross_modal):
    torch.set_num_threads(1)
    model, card = load_cross_modal()
    return model, sample_batch(cross_modal["setup"]["scenes"], seed=card["heldout_seed"])


def answer_attention(model: nn.Module, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``[scene, layer, head, patch]``: the answer token's cross-attention written out from the weights (post-LN
    blocks: self-attention, then queries from the text and keys from the patches, scale 1 / sqrt(head_dim))."""
    with torch.no_grad():
        features = model.stem(images) + model.patch_pos  # (scene, embed, rows, cols)
        patches = model.patch_norm(features.flatten(2).transpose(1, 2))  # (scene, patch, embed)
        text = model.text_norm(model.token_embed(ids) + model.token_pos[:, : ids.shape[1]])
        padding = ids == 0
        out = []
        for block in model.blocks:
            attn = block.cross_attn
            mid = block.self_norm(text + block.self_attn(text, key_padding_mask=padding))
            q = attn.q_proj(mid[:, 0]).unflatten(-1, (attn.num_heads, attn.head_dim))  # (scene, head, head_dim)
            k = attn.k_proj(patches).unflatten(-1, (attn.num_heads, attn.head_dim))  # (scene, patch, head, dim)
            out.append((torch.einsum("bhd,bphd->bhp", q, k) / math.sqrt(attn.head_dim)).softmax(-1))
            text = block(text, patches, padding)
    return torch.stack(out, dim=1).double()


def test_cross_modal_sample_recomputed_by_library_and_by_hand(cross_modal, cm_setup):
    model, scenes = cm_setup
    per_input = cross_modal["per_input"]
    assert scenes.answers.tolist() == cross_modal["data"]["answers"]
    rows = [0, 1, 2, 500, 999]
    images, ids, answers = scenes.images[rows], scenes.query_ids[rows], scenes.answers[rows]
    masks = scenes.target_masks[rows]
    layers = [block.cross_attn for block in model.blocks]
    prob = class_probability(answers)

    # localisation of each head: the recorded pattern against the mask, written out pixel block by pixel block
    with torch.no_grad(), record(model, "blocks.*.cross_attn.hook_pattern") as trace:
        model(images, ids)
    rows_, cols = model.grid
    side = model.patch_size
    share = torch.stack([torch.stack([masks[:, r * side:(r + 1) * side, c * side:(c + 1) * side].double().mean((1, 2))
                                      for c in range(cols)], dim=1) for r in range(rows_)], dim=1).flatten(1)
    hand = answer_attention(model, images, ids)
    for layer in range(len(layers)):
        pattern = trace[f"blocks.{layer}.cross_attn.hook_pattern"][:, :, 0].double()  # (scene, head, patch)
        assert pattern.numpy() == pytest.approx(hand[:, layer].numpy(), rel=1e-4, abs=1e-6)
        mass = (pattern * share[:, None]).sum(-1)
        hit = (share[:, None] > 0.5).expand_as(pattern).gather(-1, pattern.argmax(-1, keepdim=True))[..., 0]
        stored = np.array([per_input["attention"][r][layer] for r in rows])
        assert mass.numpy() == pytest.approx(stored, **TOL)
        assert hit.long().tolist() == [per_input["pointing"][r][layer] for r in rows]
        for head in range(pattern.shape[1]):  # the library's localisation score of one head, scene by scene
            for i in range(len(rows)):
                score = attention_localisation(pattern[i:i + 1, head], masks[i:i + 1], model.grid)
                assert score.mass == pytest.approx(stored[i, head], **TOL)

    # zero-ablation effect on p(correct), by hand and by the library, and the stored accuracy flags
    with torch.no_grad():
        base = prob(model(images, ids)).double()
    assert base.numpy() == pytest.approx([per_input["probability"][r] for r in rows], **TOL)
    for layer, attn in enumerate(layers):
        for head in range(attn.num_heads):
            with torch.no_grad(), head_edit(attn, zero_head(attn, head)):
                logits = model(images, ids)
            with torch.no_grad(), intervene(model, zero_ablation(model, {f"blocks.{layer}.cross_attn.hook_z": [head]})):
                library = prob(model(images, ids)).double()
            by_hand = prob(logits).double()
            assert library.numpy() == pytest.approx(by_hand.numpy(), rel=1e-5, abs=1e-6)
            assert (by_hand - base).numpy() == pytest.approx(
                [per_input["effect"][r][layer][head] for r in rows], rel=1e-4, abs=1e-6)
            assert (logits.argmax(-1) == answers).long().tolist() == [per_input["correct_zero"][r][layer][head]
                                                                     for r in rows]

    grad = reference_gradient(model, lambda: prob(model(images, ids)), layers, len(rows))
    assert grad.numpy() == pytest.approx(np.array([per_input["gradient"][r] for r in rows]), rel=2e-3, abs=1e-6)


def test_cross_modal_summaries_equal_a_recomputation(cross_modal):
    per_input, heads = cross_modal["per_input"], cross_modal["heads"]
    n = cross_modal["setup"]["scenes"]
    assert n >= 200
    mass = np.asarray(per_input["attention"]).reshape(n, -1)
    hit = np.asarray(per_input["pointing"]).reshape(n, -1)
    gradient = np.asarray(per_input["gradient"])
    effect = np.asarray(per_input["effect"])
    zero = np.asarray(per_input["correct_zero"]).reshape(n, -1)
    mean = np.asarray(per_input["correct_mean"]).reshape(n, -1)
    after = np.asarray(per_input["last_layer_localisation_after"])
    base = np.asarray(per_input["correct"])
    assert list(heads) == cross_modal["setup"]["heads"]
    for u, h in enumerate(heads):
        s = heads[h]
        for key, values in (("localisation", mass[:, u]), ("gradient", gradient.reshape(n, -1)[:, u]),
                            ("effect", effect.reshape(n, -1)[:, u]), ("last_layer_localisation_after", after[:, u])):
            assert s[key]["mean"] == pytest.approx(values.mean(), rel=1e-6, abs=1e-9)
            assert s[key]["ci95"] == pytest.approx(t_interval(values), rel=1e-6, abs=1e-9)
        for key, values in (("pointing", hit[:, u]), ("accuracy_zero", zero[:, u]), ("accuracy_mean", mean[:, u])):
            assert (s[key]["correct"], s[key]["n"]) == (int(values.sum()), n)
            assert s[key]["ci95"] == pytest.approx(wilson_scipy(int(values.sum()), n), abs=1e-9)
    assert cross_modal["accuracy"]["unablated"]["correct"] == int(base.sum())
    answers = np.asarray(cross_modal["data"]["answers"])
    assert cross_modal["accuracy"]["chance"] == pytest.approx(np.where(answers < 3, 1 / 3, 1 / 4).mean())
    # the layer-mean localisation matches the model card's held-out numbers (same 1000 scenes)
    layer_mass = mass.reshape(n, 2, -1).mean(-1).mean(0)
    card = list(cross_modal["setup"]["card_localisation_by_layer"].values())
    assert layer_mass == pytest.approx(card, abs=1e-4)

    # localisation vs harm: Spearman over heads (scipy) and the bootstrap redrawn with the same generator
    drops = {"accuracy": base[:, None] - zero, "probability": -effect.reshape(n, -1),
             "accuracy_mean_ablation": base[:, None] - mean}
    for name, drop in drops.items():
        stat = cross_modal["localise_vs_harm"][name]
        assert stat["rho"] == pytest.approx(stats.spearmanr(mass.mean(0), drop.mean(0)).statistic, abs=1e-6)
        rng = np.random.default_rng(cm.BOOTSTRAP_SEED)
        rhos = []
        for _ in range(stat["resamples"]):
            pick = rng.integers(0, n, n)
            rhos.append(stats.spearmanr(mass[pick].mean(0), drop[pick].mean(0)).statistic)
        rhos = np.asarray(rhos)
        assert stat["undefined"] == int(np.isnan(rhos).sum())
        assert stat["ci95"] == pytest.approx(np.quantile(rhos[~np.isnan(rhos)], [0.025, 0.975]), abs=1e-6)
    check_agreement(cross_modal["agreement"], effect, gradient, mass.reshape(effect.shape))

    pruning = cross_modal["pruning"]
    for order, curve in pruning["curves"].items():
        layer, head = pruning["orders"][order][0]
        assert curve[0] == pytest.approx(base.mean(), abs=1e-9)
        assert curve[1] == pytest.approx(zero[:, layer * 4 + head].mean(), abs=1e-9)
        assert pruning["ci95"][order][-1] == pytest.approx(wilson_scipy(round(curve[-1] * n), n), abs=1e-9)
    assert len(pruning["steps"]) == 9 and sum(k.startswith("random_") for k in pruning["curves"]) >= 3
    assert cm.claims(cross_modal) == cross_modal["claims"]


def test_cross_modal_section_prints_the_json(cross_modal):
    lines = cm.section("cross_modal", cross_modal)
    text = "\n".join(lines)
    first = cross_modal["setup"]["heads"][0]
    assert f"| {first} | {mean_text(cross_modal['heads'][first]['localisation'])} |" in text
    stat = cross_modal["localise_vs_harm"]["accuracy"]
    assert f"| accuracy | {stat['rho']:+.2f} | [{stat['ci95'][0]:+.2f}, {stat['ci95'][1]:+.2f}] |" in text
    assert rho_text(cross_modal["agreement"]["gradient~effect"]) in text
    claims = [line for line in lines if line.startswith("- **")]
    assert len(claims) == len(cross_modal["claims"])
    changed = copy.deepcopy(cross_modal)
    changed["pruning"]["curves"]["attention"][3] = 0.4321
    assert "| 43.2 |" in "\n".join(cm.section("cross_modal", changed))


def test_report_renders_both_sections(long_range, cross_modal, tmp_path):
    write_json(long_range, tmp_path / "long_range.json")
    write_json(cross_modal, tmp_path / "cross_modal.json")
    text = render_report(tmp_path).read_text()
    assert "## long_range: lesson 06 attention model" in text and "## cross_modal: cross-modal shapes model" in text
    assert "Not run yet" in text  # the other models' files are not in this folder


# --- bad input ----------------------------------------------------------------------------------------------------


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="k"):
        wilson(5, 3)
    with pytest.raises(ValueError, match="hits"):
        binomial_summary(torch.zeros(0))
    with pytest.raises(ValueError, match="key"):
        lr.section("minilm", {})
    with pytest.raises(ValueError, match="key"):
        cm.run("long_range", 200)
    with pytest.raises(ValueError, match="pattern"):
        cm.head_localisation(torch.rand(2, 1, 4, 10), torch.zeros(2, 8, 8, dtype=torch.bool), (2, 2))
    with pytest.raises(ValueError, match="localisation and drop"):
        cm.bootstrap_rho(torch.rand(5, 3), torch.rand(5, 4))
    with pytest.raises(ValueError, match="margin|correct"):
        lr.accuracy_table(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.long),
                          torch.ones(3, dtype=torch.long))
