"""The intervention study of MiniLM, the ViT and the CNN: the shipped JSON re-checked against independent references.

References and tolerances:

- per-input values are stored with 6 significant digits (``DIGITS``), so every comparison with the JSON allows
  ``ROUNDING = 5e-6`` relative on top of the numeric tolerance;
- ablation effects: hand-written ablations that never touch explorer's hook points -- a torch
  ``forward_pre_hook`` on the attention's ``out_proj`` zeroing one head's slice of its input (MiniLM, ViT), and a
  CNN forward written out with ``F.conv2d`` (float32: ``1e-5`` of a probability or a cosine; ViT float64: ``1e-9``);
- gradients: central differences of the same hand-written mask in float64 (``eps = 1e-5``, truncation ~``1e-10``;
  compared with float32 gradients to ``1e-4``, with the float64 ViT to ``1e-7``), and autograd through the written-out
  CNN;
- attention: transformers' ``BertModel`` (eager attention) on each sentence alone, and the ViT's ``[CLS]`` row
  recomputed from ``q_proj`` / ``k_proj`` of the captured block input; the word's tokens found by matching its
  wordpieces, the ink patches by reshaping the image into 4 x 4 patches;
- summaries: ``scipy.stats.spearmanr`` per input (``1e-6``: the JSON keeps 6 digits), ``scipy.stats.t.interval``
  over the stored per-input values (``1e-12``: they are what the summaries were computed from), the Wilson interval
  written out (``1e-9``), ``torch.randperm`` for the random orders.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from explorer.analysis.intervention import (
    ablation_sweep, class_probability, flat_units, gradient_importance, mean_ablation, pair_similarity, unit_means,
)
from explorer.analysis.intervention_study import load_study, render_report
from explorer.analysis.intervention_study import minilm as study_minilm
from explorer.analysis.intervention_study import vision as study_vision
from explorer.analysis.intervention_study.common import RARELY, default_study_dir, one_unit_per_input, proportion
from explorer.hooks import intervene, record

ROUNDING = 5e-6  # relative error of 6 significant digits
KEYS = ("minilm", "vit", "cnn")
N_CHECK = 3  # inputs recomputed per model


def close(actual, expected, tol: float) -> bool:
    """|actual - expected| <= tol + ROUNDING |expected|, elementwise."""
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return bool(np.all(np.abs(a - e) <= tol + ROUNDING * np.abs(e)))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/analysis/conftest.py


@pytest.fixture(scope="module")
def shipped():
    return {key: load_study(key) for key in KEYS}


@pytest.fixture(scope="module")
def pretrained():
    from explorer.models import load_pretrained

    return load_pretrained()


def head_slice_hook(head: int, head_dim: int, factor: float):
    """A torch forward pre-hook on ``out_proj`` scaling one head's slice of the merged heads."""
    def hook(module, args):
        x = args[0].clone()
        x[..., head * head_dim:(head + 1) * head_dim] *= factor
        return (x,)
    return hook


# --- MiniLM -----------------------------------------------------------------------------------------------------


def test_pair_forward_restart_equals_the_full_forward(pretrained):
    model, tok = pretrained.model, pretrained.tokenizer
    texts = [["The old dog ate the red cake.", "Why was the map here?"], ["A dog.", "The map is on the table."]]
    cached = study_minilm.encode_sides(tok, texts)
    edits = {"blocks.4.attn.hook_z": lambda z, hook: z * 0.5}
    with torch.no_grad():
        study_minilm.pair_forward(model, cached)  # intact run: stores the block inputs
        assert cached._cache is not None
        with intervene(model, edits), record(model, "blocks.1.attn.hook_pattern") as trace:
            restarted = study_minilm.pair_forward(model, cached)
        fresh = study_minilm.encode_sides(tok, texts)
        with intervene(model, edits):
            full = study_minilm.pair_forward(model, fresh)  # no cache yet: every block runs
        plain = torch.stack([model(*tok.encode_batch(side)).mean_pooled(tok.encode_batch(side)[1]) for side in texts],
                            dim=1)
    assert fresh._cache is None
    assert len(trace.history("blocks.1.attn.hook_pattern")) == 2  # a recorded block before the edit still runs
    torch.testing.assert_close(restarted, full, rtol=0, atol=1e-6)
    assert (restarted - plain).abs().max() > 1e-3  # the edit changed the embeddings


def _side_embeddings(model, tok, texts, layer=None, head=None, factor=1.0):
    """Mean-pooled embeddings [pair, embed] of each text alone, with one head scaled by a torch pre-hook."""
    handle = None
    if layer is not None:
        attn = model.blocks[layer].attn
        handle = attn.out_proj.register_forward_pre_hook(head_slice_hook(head, attn.head_dim, factor))
    try:
        return torch.cat([model(tok.encode(t).input_ids).mean_pooled() for t in texts])
    finally:
        if handle is not None:
            handle.remove()


def _similarity(model, tok, a, b, **kw):
    return F.cosine_similarity(_side_embeddings(model, tok, a, **kw), _side_embeddings(model, tok, b, **kw), dim=-1)


def _word_positions(tok, text, word):
    """Positions of the word's wordpieces in the text's tokens (a whole word: the next token is no '##' piece)."""
    ids, piece = tok.encode(text).input_ids[0].tolist(), tok.encode(word).input_ids[0, 1:-1].tolist()
    tokens = tok.encode(text).tokens
    for start in range(len(ids) - len(piece) + 1):
        end = start + len(piece)
        if ids[start:end] == piece and not tokens[end].startswith("##"):
            return list(range(start, end))
    raise AssertionError(f"{word!r} not in {text!r}")


def test_minilm_shipped_values_recomputed_on_three_pairs(shipped, pretrained):
    import transformers

    from explorer.models import default_checkpoint_dir

    result, model, tok = shipped["minilm"], pretrained.model, pretrained.tokenizer
    per, inputs = result["per_input"], result["inputs"][:N_CHECK]
    a, b, words = [p["a"] for p in inputs], [p["b"] for p in inputs], [p["shared"] for p in inputs]
    from explorer.data.sentence_pairs import sentence_pairs

    assert [(p.a, p.b, p.shared) for p in sentence_pairs(N_CHECK, seed=0)] == list(zip(a, b, words))
    effect, gradient = np.array(per["effect"][:N_CHECK]), np.array(per["gradient"][:N_CHECK])
    with torch.no_grad():
        base = _similarity(model, tok, a, b)
    assert close(base, result["baseline"][:N_CHECK], 1e-5)

    # the library on three pairs: every head's zero-ablation effect and gradient
    sentences = study_minilm.encode_sides(tok, [a, b])
    sweep = ablation_sweep(model, study_minilm.pair_forward, sentences, pair_similarity(), study_minilm.HOOKS)
    assert close(sweep.per_input - sweep.baseline[:, None, None], effect, 1e-5)
    grad = gradient_importance(model, study_minilm.pair_forward, sentences, pair_similarity(), study_minilm.HOOKS)
    assert close(grad.per_input, gradient, 1e-5)

    # hand-written: a torch pre-hook on out_proj, each sentence alone; gradient by float64 central differences
    heads = [(5, 11), divmod(int(np.abs(gradient[0]).argmax()), 12), divmod(int(np.abs(effect[1]).argmax()), 12)]
    model64 = copy.deepcopy(model).double()
    eps = 1e-5
    for layer, head in heads:
        with torch.no_grad():
            ablated = _similarity(model, tok, a, b, layer=layer, head=head, factor=0.0)
            up = _similarity(model64, tok, a, b, layer=layer, head=head, factor=1 + eps)
            down = _similarity(model64, tok, a, b, layer=layer, head=head, factor=1 - eps)
        assert close(ablated - base, effect[:, layer, head], 1e-5), (layer, head)
        assert close((up - down) / (2 * eps), gradient[:, layer, head], 1e-4), (layer, head)

    # mean ablation: the head's mean output over every real token of the 400 sentences
    from explorer.data.sentence_pairs import sentence_pairs as pairs_of

    everything = pairs_of(result["n_inputs"], seed=0)
    means = study_minilm.head_means(model, study_minilm.encode_sides(tok, [[p.a for p in everything],
                                                                           [p.b for p in everything]]))
    layer, head = heads[1]
    name = f"blocks.{layer}.attn.hook_z"
    with torch.no_grad(), intervene(model, mean_ablation(model, {name: [head]}, means)):
        meaned = pair_similarity()(study_minilm.pair_forward(model, sentences))
    assert close(meaned - sweep.baseline, np.array(per["effect_mean"][:N_CHECK])[:, layer, head], 1e-5)

    # attention on the shared word: the library, and transformers' eager attention on each sentence alone
    attention = study_minilm.shared_word_attention(model, sentences, words)  # (side, pair, layer, head)
    assert close(attention.mean(0), per["attention"][:N_CHECK], 1e-6)
    assert close(attention[0], per["attention_a"][:N_CHECK], 1e-6)
    hf = transformers.BertModel.from_pretrained(default_checkpoint_dir(), attn_implementation="eager",
                                                local_files_only=True).eval()
    sides = []
    for texts in (a, b):
        rows = []
        for text, word in zip(texts, words):
            with torch.no_grad():
                probs = hf(tok.encode(text).input_ids, output_attentions=True).attentions  # layer: (1, head, q, k)
            keys = _word_positions(tok, text, word)
            rows.append(torch.stack([p[0][:, :, keys].sum(-1).mean(-1) for p in probs]))  # (layer, head)
        sides.append(torch.stack(rows))
    assert close(sides[0], per["attention_a"][:N_CHECK], 1e-5)
    assert close((sides[0] + sides[1]) / 2, per["attention"][:N_CHECK], 1e-5)


def test_minimal_pairs_change_only_the_shared_word(shipped):
    from explorer.data.sentence_pairs import AGENTS, OBJECTS, PLACES, sentence_pairs

    pairs = sentence_pairs(shipped["minilm"]["n_inputs"], seed=0)
    others = study_minilm.minimal_pairs(pairs)
    assert others == [item["b_other"] for item in shipped["minilm"]["inputs"]]
    assert study_minilm.minimal_pairs(pairs[:N_CHECK]) == others[:N_CHECK]  # drawn pair after pair
    vocabulary = {"agent": AGENTS, "object": OBJECTS, "place": PLACES}
    for pair, other in zip(pairs, others):
        before, after = pair.b.rstrip(".?").split(), other.rstrip(".?").split()
        changed = [(x, y) for x, y in zip(before, after) if x != y]
        assert len(before) == len(after) and 1 <= len(changed) <= 2, (pair.b, other)
        word = changed[-1][1]
        assert changed[-1][0] == pair.shared and word in vocabulary[pair.slot] and word.lower() not in pair.a.lower()
        if len(changed) == 2:  # the article, made to agree with the new word
            assert changed[0][1].lower() == ("an" if word[0] in "aeiou" else "a")
    assert (pairs[0].b, others[0]) == ("The cake is on the table.", "The key is on the table.")  # written out


def test_order_kept_by_hand():
    reference = torch.tensor([0.1, 0.5, 0.3, 0.9], dtype=torch.float64)
    metric = study_minilm.order_kept(reference)
    a = torch.eye(4, dtype=torch.float64)[None].repeat(4, 1, 1)[:, 0]  # (pair, embed): A = e0 for every pair

    def output(similarities):  # B at angle arccos(s) from A in the (e0, e1) plane: cos(A, B) = s
        s = torch.tensor(similarities, dtype=torch.float64)
        b = torch.stack([s, torch.sqrt(1 - s * s), torch.zeros(4), torch.zeros(4)], dim=1)
        return torch.stack([a, b], dim=1)

    torch.testing.assert_close(metric(output([0.1, 0.5, 0.3, 0.9])), torch.ones(4, dtype=torch.float64))
    # swap the order of pairs 1 and 2 only: each of them keeps 2 of its 3 comparisons, the others all 3
    expected = torch.tensor([1, 2 / 3, 2 / 3, 1], dtype=torch.float64)
    torch.testing.assert_close(metric(output([0.1, 0.3, 0.5, 0.9])), expected)
    torch.testing.assert_close(metric(output([0.9, 0.5, 0.3, 0.1])), torch.tensor([0, 1 / 3, 1 / 3, 0.0],
                                                                               dtype=torch.float64))


def test_minilm_single_head_check_recomputed_on_three_pairs(shipped, pretrained):
    result, model, tok = shipped["minilm"], pretrained.model, pretrained.tokenizer
    check, inputs = result["check"], result["inputs"][:N_CHECK]
    triples = study_minilm.encode_sides(tok, [[p["a"] for p in inputs], [p["b"] for p in inputs],
                                              [p["b_other"] for p in inputs]])
    with torch.no_grad():
        base = [_side_embeddings(model, tok, [p[side] for p in inputs]) for side in ("a", "b", "b_other")]
    margin = F.cosine_similarity(base[0], base[1], dim=-1) - F.cosine_similarity(base[0], base[2], dim=-1)
    assert close(margin, check["margin"][:N_CHECK], 1e-5)
    assert result["preference_correct"][:N_CHECK] == (margin > 0).tolist()
    hooks, counts = result["units"]["hooks"], result["units"]["counts"]
    effect = np.array(result["per_input"]["effect"][:N_CHECK]).reshape(N_CHECK, -1)
    for name in ("attention", "gradient", "random_1"):
        chosen = torch.tensor(check["selectors"][name]["chosen"][:N_CHECK])
        output = one_unit_per_input(model, study_minilm.pair_forward, triples, hooks, counts, chosen)
        after = (F.cosine_similarity(output[:, 0], output[:, 1], dim=-1)
                 - F.cosine_similarity(output[:, 0], output[:, 2], dim=-1))
        assert ((after > 0) != (margin > 0)).tolist() == check["selectors"][name]["flipped"][:N_CHECK], name
        change = pair_similarity()(output[:, :2]).double() - torch.tensor(result["baseline"][:N_CHECK])
        assert close(change, check["selectors"][name]["change"][:N_CHECK], 1e-5)
        # the (A, B) part of the triple run is the sweep's ablation of that head
        assert close(change, effect[np.arange(N_CHECK), chosen.numpy()], 1e-5)
        # hand-written: the chosen head scaled to 0 by a torch pre-hook, each sentence alone
        for i, unit in enumerate(chosen.tolist()):
            layer, head = divmod(unit, counts[0])
            with torch.no_grad():
                emb = [_side_embeddings(model, tok, [inputs[i][side]], layer=layer, head=head, factor=0.0)
                       for side in ("a", "b", "b_other")]
            hand = F.cosine_similarity(emb[0], emb[1], dim=-1) - F.cosine_similarity(emb[0], emb[2], dim=-1)
            assert close(hand, after[i], 1e-5), (name, i)


# --- ViT and CNN ------------------------------------------------------------------------------------------------


def _digits(key, n=N_CHECK):
    from explorer.data.digits import digits_dataset
    from explorer.models.head_to_head import CANVAS, PLACEMENT, load_head_to_head

    model, _ = load_head_to_head(key)
    model = model.to(study_vision.DTYPES[key])
    images, labels = digits_dataset("test", canvas=CANVAS, placement=PLACEMENT, seed=0, n=n)
    return model, images.to(study_vision.DTYPES[key]), labels


def test_vit_shipped_values_recomputed_on_three_digits(shipped):
    result = shipped["vit"]
    per = result["per_input"]
    model, x, labels = _digits("vit")
    assert [item["label"] for item in result["inputs"][:N_CHECK]] == labels.tolist()
    p_true = class_probability(labels)
    effect, gradient = np.array(per["effect"][:N_CHECK]), np.array(per["gradient"][:N_CHECK])

    def hand(layer, head, factor):
        attn = model.blocks[layer].attn
        handle = attn.out_proj.register_forward_pre_hook(head_slice_hook(head, attn.head_dim, factor))
        try:
            with torch.no_grad():
                return p_true(model(x))
        finally:
            handle.remove()

    with torch.no_grad():
        base = p_true(model(x))
    assert close(base, result["baseline"][:N_CHECK], 1e-9)
    eps = 1e-5
    for layer in range(3):
        for head in range(4):
            assert close(hand(layer, head, 0.0) - base, effect[:, layer, head], 1e-9), (layer, head)
            derivative = (hand(layer, head, 1 + eps) - hand(layer, head, 1 - eps)) / (2 * eps)
            assert close(derivative, gradient[:, layer, head], 1e-7), (layer, head)
    sweep = ablation_sweep(model, study_vision.forward, x, p_true, study_vision.HOOKS["vit"])
    assert close(sweep.per_input - sweep.baseline[:, None, None], effect, 1e-9)

    # mean ablation: per-position mean over all the study's digits
    model_all, x_all, _ = _digits("vit", result["n_inputs"])
    means = unit_means(model_all, study_vision.forward, x_all, "blocks.1.attn.hook_z")
    with torch.no_grad(), intervene(model, mean_ablation(model, {"blocks.1.attn.hook_z": [2]}, means)):
        meaned = p_true(model(x))
    assert close(meaned - base, np.array(per["effect_mean"][:N_CHECK])[:, 1, 2], 1e-9)

    # [CLS] attention on the ink: q / k of the captured block input, patches with ink by reshaping the image
    ink = (x[:, 0].reshape(N_CHECK, 6, 4, 6, 4) != 0).any(dim=4).any(dim=2).reshape(N_CHECK, 36)  # (digit, patch)
    inputs = {}
    handles = [block.attn.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0]))
               for i, block in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    for layer in range(3):
        attn = model.blocks[layer].attn.requires_grad_(False)
        q = attn.q_proj(inputs[layer])[:, :1].view(N_CHECK, 1, 4, -1).transpose(1, 2)  # (digit, head, 1, d)
        k = attn.k_proj(inputs[layer]).view(N_CHECK, 37, 4, -1).transpose(1, 2)  # (digit, head, token, d)
        row = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)[:, :, 0, 1:]  # (digit, head, 36)
        mass = (row * ink[:, None, :]).sum(-1)
        assert close(mass, np.array(per["attention"][:N_CHECK])[:, layer], 1e-9), layer
    assert close(study_vision.ink_attention(model, x), per["attention"][:N_CHECK], 1e-12)


def _cnn_by_hand(model, x, layer=None, scale=None):
    """SmallCNN written out with F.conv2d: conv-ReLU, conv-ReLU, maxpool, conv-ReLU, mean, linear; ``scale``
    [batch, channel] multiplies conv ``layer``'s output (before its ReLU)."""
    body = model.body
    h = x
    for i, conv in enumerate((body.conv1, body.conv2, body.conv3), start=1):
        h = F.conv2d(h, conv.weight, conv.bias, padding=1)
        if i == layer:
            h = h * scale[:, :, None, None]
        h = F.relu(h)
        if i == 2:
            h = F.max_pool2d(h, 2, 2)
    return model.head(h.mean(dim=(2, 3)))


def test_cnn_shipped_values_recomputed_on_three_digits(shipped):
    result = shipped["cnn"]
    per = result["per_input"]
    model, x, labels = _digits("cnn")
    assert model.config.padding_mode == "zeros" and result["units"]["counts"] == [32, 40, 40]
    p_true = class_probability(labels)
    effect, gradient = np.array(per["effect"][:N_CHECK]), np.array(per["gradient"][:N_CHECK])
    with torch.no_grad():
        base = p_true(_cnn_by_hand(model, x))
    assert close(base, result["baseline"][:N_CHECK], 1e-5)
    model64 = copy.deepcopy(model).double()
    starts = [0, 32, 72]
    for layer, width in ((1, 32), (2, 40), (3, 40)):
        for channel in (0, width // 2, width - 1):
            scale = torch.ones(N_CHECK, width)
            scale[:, channel] = 0
            with torch.no_grad():
                ablated = p_true(_cnn_by_hand(model, x, layer, scale))
            assert close(ablated - base, effect[:, starts[layer - 1] + channel], 1e-5), (layer, channel)
        mask = torch.ones(N_CHECK, width, dtype=torch.float64, requires_grad=True)
        value = p_true(_cnn_by_hand(model64, x.double(), layer, mask)).sum()
        (grad,) = torch.autograd.grad(value, mask)
        assert close(grad, gradient[:, starts[layer - 1]:starts[layer - 1] + width], 1e-4), layer
    # the library, the three convs in one sweep: [digit, layer, channel] padded with NaN to 40, flat as stored
    sweep = ablation_sweep(model, study_vision.forward, x, p_true, study_vision.HOOKS["cnn"])
    assert sweep.layers == result["units"]["hooks"] and sweep.counts == [32, 40, 40]
    assert sweep.per_input.shape == (N_CHECK, 3, 40) and sweep.per_input[:, 0, 32:].isnan().all()
    assert not sweep.per_input[:, 1:].isnan().any()
    flat = flat_units(sweep.per_input - sweep.baseline[:, None, None], sweep.counts)
    assert close(flat, effect, 1e-5)


def test_vision_single_unit_check_recomputed_on_three_digits(shipped):
    for key in ("vit", "cnn"):
        result = shipped[key]
        model, x, labels = _digits(key)
        with torch.no_grad():
            predicted = model(x).argmax(-1)
        hooks, counts = result["units"]["hooks"], result["units"]["counts"]
        for name, selector in result["check"]["selectors"].items():
            chosen = torch.tensor(selector["chosen"][:N_CHECK])
            output = one_unit_per_input(model, study_vision.forward, x, hooks, counts, chosen)
            assert (output.argmax(-1) != predicted).tolist() == selector["flipped"][:N_CHECK], (key, name)
            change = class_probability(labels)(output).double() - torch.tensor(result["baseline"][:N_CHECK])
            assert close(change, selector["change"][:N_CHECK], 1e-5), (key, name)


# --- summaries from the stored per-input values -------------------------------------------------------------------


def t_summary(values):
    x = np.asarray(values, dtype=np.float64)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return {"mean": x.mean(), "std": x.std(ddof=1), "ci95": [low, high], "n": len(x)}


def assert_summary(summary, values, name, tol=1e-9):
    expected = t_summary(values)
    assert summary["n"] == expected["n"], name
    for field in ("mean", "std"):
        assert abs(summary[field] - expected[field]) <= tol, (name, field)
    assert np.allclose(summary["ci95"], expected["ci95"], rtol=0, atol=tol), name


def wilson(k, n):
    """The Wilson score interval written out (Wilson 1927), 95 %."""
    z = stats.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [centre - half, centre + half]


def _units(values):
    """[input, ...] -> [input, units]."""
    return np.asarray(values, dtype=np.float64).reshape(len(values), -1)


@pytest.mark.parametrize("key", KEYS)
def test_shipped_summaries_recomputed_from_per_input_values(shipped, key):
    result = shipped[key]
    per = {name: _units(value) for name, value in result["per_input"].items()}
    for how, effect in (("zero", per["effect"]), ("mean", per["effect_mean"])):
        pairs = {"gradient~effect": (np.abs(per["gradient"]), np.abs(effect)),
                 "prediction~effect": (-per["gradient"], effect)}
        if "attention" in per:
            pairs["attention~effect"] = (per["attention"], np.abs(effect))
            pairs["attention~gradient"] = (per["attention"], np.abs(per["gradient"]))
        assert set(result["agreement"][how]) == set(pairs)
        for name, (x, y) in pairs.items():
            rhos = [stats.spearmanr(x[i], y[i]).statistic for i in range(len(x))]
            stored = result["agreement"][how][name]
            assert np.allclose(stored["per_input"], rhos, rtol=0, atol=1e-6), (how, name)  # 6 digits stored
            assert stored["undefined"] == 0
            # the summary is that of the stored rhos: re-derived from the file to float precision
            assert_summary(stored, stored["per_input"], (how, name), tol=1e-12)
    if "attention" in per:
        diff = np.subtract(result["agreement"]["zero"]["gradient~effect"]["per_input"],
                           result["agreement"]["zero"]["attention~effect"]["per_input"])
        assert_summary(result["gradient_minus_attention"], diff, "gradient - attention")

    check = result["check"]
    argmax = {"gradient": np.abs(per["gradient"]), "oracle": np.abs(per["effect"]), "attention": per.get("attention")}
    randoms = []
    for name, selector in check["selectors"].items():
        chosen = np.asarray(selector["chosen"])
        if name.startswith("random_"):
            seed = int(name.split("_")[1])
            draw = torch.Generator().manual_seed(seed)
            expected = torch.randint(per["effect"].shape[1], (len(chosen),), generator=draw)
            assert chosen.tolist() == expected.tolist(), name
            randoms.append(np.abs(selector["change"]))
        else:
            assert chosen.tolist() == argmax[name].argmax(axis=1).tolist(), name
        k, n = sum(selector["flipped"]), len(selector["flipped"])
        assert selector["flips"]["k"] == k and selector["flips"]["n"] == n
        assert np.allclose(selector["flips"]["ci95"], wilson(k, n), rtol=0, atol=1e-9), name
        assert_summary(selector["abs_change"], np.abs(selector["change"]), name)
        assert_summary(selector["mean_change"], selector["change"], name)
    paired = check["paired"]
    random = np.mean(randoms, axis=0)
    abs_change = {name: np.abs(s["change"]) for name, s in check["selectors"].items()}
    assert_summary(paired["gradient-random"], abs_change["gradient"] - random, "gradient-random")
    assert_summary(paired["oracle-gradient"], abs_change["oracle"] - abs_change["gradient"], "oracle-gradient")
    if "attention" in per:
        assert_summary(paired["attention-random"], abs_change["attention"] - random, "attention-random")
        assert_summary(paired["gradient-attention"], abs_change["gradient"] - abs_change["attention"], "g-a")


@pytest.mark.parametrize("key", KEYS)
def test_shipped_pruning_orders_and_ends(shipped, key):
    result = shipped[key]
    per = {name: _units(value) for name, value in result["per_input"].items()}
    n_units = per["effect"].shape[1]
    scores = {"gradient": np.abs(per["gradient"]).mean(0), "effect": np.abs(per["effect"]).mean(0)}
    if "attention" in per:
        scores["attention"] = per["attention"].mean(0)
    counts = result["units"]["counts"]
    starts = np.cumsum([0, *counts[:-1]])  # flat index of each layer's first unit
    for metric, pruning in result["pruning"].items():
        for name, order in pruning["orders"].items():
            assert all(0 <= unit < counts[layer] for layer, unit in order), (metric, name)
            flat = [int(starts[layer]) + unit for layer, unit in order]
            if name.startswith("random_"):
                expected = torch.randperm(n_units, generator=torch.Generator().manual_seed(int(name[7:]))).tolist()
            else:
                expected = np.argsort(scores[name], kind="stable").tolist()  # least important first
            assert flat == expected, (metric, name)
        ends = {name: (curve[0], curve[-1]) for name, curve in pruning["curves"].items()}
        assert pruning["steps"][0] == 0 and pruning["steps"][-1] == n_units
        assert len({round(v, 9) for v, _ in ends.values()}) == 1 and len({round(v, 9) for _, v in ends.values()}) == 1
        start = next(iter(ends.values()))[0]
        if metric == "order_kept":
            assert start == 1.0  # the intact model keeps its own order
        elif metric == "accuracy":
            assert abs(start - np.mean([i["label"] == i["predicted"] for i in result["inputs"]])) <= 1e-9
        elif metric in ("similarity", "probability"):
            assert abs(start - np.mean(result["baseline"])) <= 1e-5, metric


@pytest.mark.parametrize("key", KEYS)
def test_claims_follow_from_the_json(shipped, key):
    result = shipped[key]
    module = study_minilm if key == "minilm" else study_vision
    found = {c["claim"]: c["held"] for c in module.claims(result)}
    sel = result["check"]["selectors"]
    if "attention" in sel:
        flips = sel["attention"]["flipped"]
        rarely = next(v for c, v in found.items() if "rarely changes the decision" in c)
        assert rarely == (wilson(sum(flips), len(flips))[1] < RARELY)
    pruning = result["pruning"]["order_kept" if key == "minilm" else "accuracy"]
    n_units = sum(result["units"]["counts"])
    curve = dict(zip(pruning["steps"], pruning["curves"]["gradient"]))
    little = next(v for c, v in found.items() if "with little loss" in c)
    assert little == all(curve[0] - curve[round(f * n_units)] <= 0.05 + 1e-9 for f in (0.2, 0.4))


# --- the report -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_section_renders_the_json_and_report_holds_it(shipped, key):
    result = shipped[key]
    module = study_minilm if key == "minilm" else study_vision
    lines = module.section(key, result)
    text = "\n".join(lines)
    zero = result["agreement"]["zero"]["gradient~effect"]
    row = next(line for line in lines if line.startswith("| \\|gradient\\| ~ \\|effect\\|"))
    assert f"{zero['mean']:.3f} [{zero['ci95'][0]:.3f}, {zero['ci95'][1]:.3f}]" in row
    pruning = result["pruning"]["order_kept" if key == "minilm" else "accuracy"]
    n_units = sum(result["units"]["counts"])
    at40 = round(0.4 * n_units)
    grad_row = next(line for line in lines if line.startswith("| by \\|gradient\\|"))
    assert f"{pruning['curves']['gradient'][pruning['steps'].index(at40)]:.3f}" in grad_row
    for claim in module.claims(result):
        assert f"**{'held' if claim['held'] else 'did not hold'}**: {claim['claim']}" in text
    # a changed number in the JSON changes the rendered section
    changed = json.loads(json.dumps(result))
    changed["agreement"]["zero"]["gradient~effect"].update(mean=0.123456, ci95=[0.111111, 0.135791])
    row = next(line for line in module.section(key, changed) if line.startswith("| \\|gradient\\| ~ \\|effect\\|"))
    assert "0.123 [0.111, 0.136]" in row
    assert text in (default_study_dir() / "REPORT.md").read_text()


def test_report_renders_every_shipped_model(tmp_path, shipped):
    for key in KEYS:
        (tmp_path / f"{key}.json").write_text(json.dumps(shipped[key]))
    report = render_report(tmp_path).read_text()
    for key in KEYS:
        assert f"## {key}: " in report and "Claims:" in report
    assert "## long_range\n\nNot run yet" in report or "## long_range:" in report


# --- arguments ----------------------------------------------------------------------------------------------------


def test_bad_arguments_name_themselves(pretrained):
    tok = pretrained.tokenizer
    with pytest.raises(TypeError, match="sides"):
        study_minilm.encode_sides(tok, "not a list of lists")
    with pytest.raises(ValueError, match="sides"):
        study_minilm.encode_sides(tok, [["a b"], ["c d", "e f"]])
    with pytest.raises(TypeError, match="pairs"):
        study_minilm.minimal_pairs("teacher")
    with pytest.raises(ValueError, match="reference"):
        study_minilm.order_kept(torch.tensor([0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="output"):
        study_minilm.preference(torch.zeros(4, 2, 8))
    with pytest.raises(TypeError, match="sentences"):
        study_minilm.pair_forward(pretrained.model, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="flags"):
        proportion(torch.tensor([0.0, 1.0]))
    model, x, _ = _digits("cnn")
    hooks = ["body.conv1.hook_out", "body.conv2.hook_out"]
    with pytest.raises(ValueError, match="chosen"):
        one_unit_per_input(model, study_vision.forward, x, hooks, [32, 40], torch.tensor([0, 72, 1]))
    with pytest.raises(ValueError, match="key"):
        study_vision.section("minilm", {})
    with pytest.raises(ValueError, match="key"):
        study_minilm.run("vit", 2)
