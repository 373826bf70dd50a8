"""The shipped long-range results (assets/long_range) and the script's contract.

Tolerances: the first training losses of a re-trained run within 1e-6 of the shipped ones (same seed, one thread,
deterministic algorithms: the same float32 arithmetic); the shipped weights' correct counts within 1 sequence per
distance of the shipped counts; attention statistics within rel 1e-5 (float32 patterns, float64 sums); statistics
recomputed from the shipped per-seed numbers within 1e-12; the t-table's 3 decimals within 5e-4 of scipy.
"""

import math
import shutil
import statistics

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from explorer.analysis import mean_attention_distance, receptive_field
from explorer.data.sequences import MAX_DISTANCE, SequenceBatch, long_range_batch
from explorer.hooks import record
from explorer.models.sequence import build_sequence_model
from explorer.train import long_range as lr
from explorer.train.long_range import (
    CHANCE_BELOW, RESULTS_FILE, SOLVED_FROM, STEPS, T_975, TEST_DISTANCES, accuracy_by_distance, attention_distance,
    attention_statistics, default_long_range_dir, failure_point, interval, load_long_range, load_long_range_model,
    loss_floor, run_long_range, summarise, evaluation_set, train, write_model_card,
)

FOLDER = default_long_range_dir()
CHECK_DISTANCES = (1, 10, 11, 62, 63, 256)  # both sides of each CNN's field edge, and the extremes


@pytest.fixture(scope="module")
def res():
    return load_long_range()


@pytest.fixture(scope="module")
def subset():
    data = evaluation_set()
    keep = torch.isin(data.distance, torch.tensor(CHECK_DISTANCES))
    return SequenceBatch(data.inputs[keep], data.tokens[keep], data.labels[keep], data.first[keep],
                         data.distance[keep], data.vocab)


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the script's thread count: the same arithmetic
    yield
    torch.set_num_threads(threads)


# --- statistics -----------------------------------------------------------------------------------------------------

def test_t_quantiles_and_interval_match_scipy():
    for df, t in T_975.items():
        assert t == pytest.approx(stats.t.ppf(0.975, df), abs=5e-4)
    values = [0.61, 0.55, 0.58]
    got = interval(values)
    low, high = stats.t.interval(0.95, 2, loc=statistics.fmean(values), scale=stats.sem(values))
    assert got["ci95"] == pytest.approx([low, high], abs=1e-4) and got["std"] == pytest.approx(stats.tstd(values))
    assert interval([0.5]) == {"mean": 0.5, "std": 0.0, "ci95": [0.5, 0.5], "n": 1}
    with pytest.raises(ValueError, match="values"):
        interval([])


def test_failure_point_on_made_up_curves():
    ds = [1, 2, 4, 8, 16]

    def curve(means, halves):
        return {str(d): {"mean": m, "ci95": [m - h, m + h]} for d, m, h in zip(ds, means, halves)}

    # solved to 4, fails at 8 (mean 0.55 < 0.6)
    f = failure_point(curve([1.0, 1.0, 0.95, 0.55, 0.5], [0, 0, 0.01, 0.02, 0.02]), ds)
    assert f == {"fails_from": 8, "solved_up_to": 4}
    # a dip inside: fails from 2 although 4 recovers
    f = failure_point(curve([0.92, 0.58, 0.97, 0.56, 0.45], [0, 0, 0, 0.1, 0.01]), ds)
    assert f == {"fails_from": 2, "solved_up_to": 1}
    # a mean of 0.7 whose interval reaches down to 0.45 counts as failed: the seeds disagree
    f = failure_point(curve([1.0, 0.95, 0.7, 0.5, 0.5], [0, 0.02, 0.25, 0.02, 0.02]), ds)
    assert f == {"fails_from": 4, "solved_up_to": 2}
    # never fails, solved everywhere
    assert failure_point(curve([0.99] * 5, [0.01] * 5), ds) == {"fails_from": None, "solved_up_to": 16}
    assert (CHANCE_BELOW, SOLVED_FROM) == (0.6, 0.9)


def test_loss_floor_is_ln2_times_the_share_beyond_the_field():
    # the log-uniform probabilities telescope: P(d >= r) = ln((max + 1) / r) / ln(max + 1)
    for r in (1, 11, 63, 256):
        share = math.log((MAX_DISTANCE + 1) / r) / math.log(MAX_DISTANCE + 1)
        assert loss_floor(r) == pytest.approx(math.log(2) * share, rel=1e-12)
    assert loss_floor(None) == 0.0 and loss_floor(MAX_DISTANCE + 1) == 0.0


def test_attention_distance_matches_a_hand_loop():
    g = torch.Generator().manual_seed(0)
    pattern = torch.softmax(torch.randn(2, 3, 7, 7, generator=g, dtype=torch.float64), dim=-1)
    got = attention_distance(pattern)  # (batch, head, query)
    for b in range(2):
        for h in range(3):
            for q in range(7):
                ref = sum(float(pattern[b, h, q, k]) * abs(q - k) for k in range(7))
                assert float(got[b, h, q]) == pytest.approx(ref, rel=1e-12)
    # averaged over queries: the library's mean attention distance (ViT's measure)
    assert torch.allclose(got.mean(-1), mean_attention_distance(pattern), rtol=1e-12)
    uniform_causal = torch.tril(torch.ones(9, 9, dtype=torch.float64))
    uniform_causal /= uniform_causal.sum(-1, keepdim=True)
    assert float(attention_distance(uniform_causal).mean()) == pytest.approx((9 - 1) / 4, rel=1e-12)  # (n - 1) / 4
    with pytest.raises(ValueError, match="pattern"):
        attention_distance(torch.ones(3, 4))


def test_attention_statistics_match_a_loop_over_the_recorded_patterns():
    model = build_sequence_model("attention", seed=3).eval()
    data = long_range_batch([2, 2, 2, 90, 90], seed=5)
    got = attention_statistics(model, data, chunk=2)  # chunks that split the distances: sums must still add up
    with record(model, "blocks.*.attn.hook_pattern") as trace, torch.no_grad():
        model(data.inputs)
    for d, idx in (("2", [0, 1, 2]), ("90", [3, 4])):
        assert got[d]["n"] == len(idx)
        for layer in range(2):
            p = trace[f"blocks.{layer}.attn.hook_pattern"].double()
            for h in range(2):
                later = [sum(float(p[i, h, int(data.second[i]), k]) * abs(int(data.second[i]) - k)
                             for k in range(320)) for i in idx]
                weight = [float(p[i, h, int(data.second[i]), int(data.first[i])]) for i in idx]
                itself = [float(p[i, h, int(data.second[i]), int(data.second[i])]) for i in idx]
                everyone = [float(attention_distance(p[i, h]).mean()) for i in idx]
                assert got[d]["later_token"][layer][h] == pytest.approx(statistics.fmean(later), rel=1e-9)
                assert got[d]["partner_weight"][layer][h] == pytest.approx(statistics.fmean(weight), rel=1e-9)
                assert got[d]["self_weight"][layer][h] == pytest.approx(statistics.fmean(itself), rel=1e-9)
                assert got[d]["all_queries"][layer][h] == pytest.approx(statistics.fmean(everyone), rel=1e-9)


class _Oracle(nn.Module):
    """Reads the true label off the one-hot input when the pair is closer than 5, else always says 1."""

    def forward(self, x):
        vocab = x.shape[1] - 2
        a, b = x[:, vocab].argmax(-1), x[:, vocab + 1].argmax(-1)
        label = (a < b).long()
        label = torch.where((a - b).abs() < 5, label, torch.ones_like(label))
        return nn.functional.one_hot(label, 2).float()


def test_accuracy_by_distance_with_an_oracle():
    data = lr.long_range_test_set([1, 4, 5, 200], 20, seed=0)
    got = accuracy_by_distance(_Oracle(), data, chunk=7)
    assert got == {"1": {"accuracy": 1.0, "correct": 20, "n": 20}, "4": {"accuracy": 1.0, "correct": 20, "n": 20},
                   "5": {"accuracy": 0.5, "correct": 10, "n": 20}, "200": {"accuracy": 0.5, "correct": 10, "n": 20}}


# --- the shipped results ------------------------------------------------------------------------------------------

def test_results_cover_the_issue(res):
    assert set(res["per_seed"]) == {"cnn", "dilated_cnn", "attention"} and len(res["seeds"]) >= 3
    assert res["task"]["test_distances"] == list(TEST_DISTANCES)
    assert min(TEST_DISTANCES) == 1 and max(TEST_DISTANCES) >= 256
    for name, runs in res["per_seed"].items():
        assert set(runs) == {str(s) for s in res["seeds"]}
        for run in runs.values():
            assert set(run["accuracy"]) == {str(d) for d in TEST_DISTANCES}
            assert all(v["n"] == res["task"]["test_per_distance"] and v["accuracy"] == v["correct"] / v["n"]
                       for v in run["accuracy"].values())
            assert len(run["first_losses"]) == lr.FIRST_STEPS and math.isfinite(run["final_train_loss"])
    for key in ("torch_version", "git_commit", "date", "threads", "total_seconds"):
        assert res[key] is not None


def test_statistics_follow_from_the_per_seed_numbers(res):
    assert summarise(res) == res["summary"]
    seeds = [str(s) for s in res["seeds"]]
    k = len(seeds)
    for name, runs in res["per_seed"].items():
        for d in TEST_DISTANCES:
            values = [runs[s]["accuracy"][str(d)]["accuracy"] for s in seeds]
            stat = res["summary"][name]["accuracy"][str(d)]
            assert stat["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
            assert stat["std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
            half = stats.t.ppf(0.975, k - 1) * statistics.stdev(values) / math.sqrt(k)
            assert stat["ci95"] == pytest.approx([stat["mean"] - half, stat["mean"] + half], abs=1e-3 * half + 1e-12)
        # the failure point by a plain loop: mean below 60 % or a t-interval (scipy) that holds 50 %
        first_fail = None
        for d in TEST_DISTANCES:
            values = [runs[s]["accuracy"][str(d)]["accuracy"] for s in seeds]
            m, half = statistics.fmean(values), stats.t.ppf(0.975, k - 1) * statistics.stdev(values) / math.sqrt(k)
            if m < 0.6 or m - half <= 0.5 <= m + half:
                first_fail = d
                break
        assert res["summary"][name]["failure"]["fails_from"] == first_fail
        losses = [runs[s]["final_train_loss"] for s in seeds]
        assert res["summary"][name]["final_train_loss"]["mean"] == pytest.approx(statistics.fmean(losses), abs=1e-12)
    # the pair head: per seed, the (layer, head) with the largest mean weight on the partner
    runs = res["per_seed"]["attention"]
    for s in seeds:
        att = runs[s]["attention"]
        best, best_value = None, -1.0
        for layer in range(2):
            for head in range(2):
                value = statistics.fmean(att[str(d)]["partner_weight"][layer][head] for d in TEST_DISTANCES)
                if value > best_value:
                    best, best_value = [layer, head], value
        assert res["summary"]["attention"]["pair_head"]["heads"][s] == best


def test_receptive_fields_in_the_results_are_the_closed_form(res):
    for name in ("cnn", "dilated_cnn"):
        entry = res["models"][name]
        cfg = entry["config"]
        closed = 1 + sum(d * (cfg["kernel_size"] - 1) for d in cfg["dilations"])
        model = build_sequence_model(name, seed=0)
        assert entry["receptive_field"]["size"] == closed
        assert receptive_field(model.features, spatial_dims=1).output.size == (closed,)
        assert entry["predicted_failure"] == min(d for d in TEST_DISTANCES if d >= closed)
        assert entry["loss_floor"] == pytest.approx(loss_floor(closed), rel=1e-12)
        assert entry["parameters"] == sum(p.numel() for p in model.parameters())
    assert res["models"]["attention"]["receptive_field"]["largest"] == res["task"]["length"]


@pytest.mark.parametrize("name", ["cnn", "attention"])
def test_retrained_first_steps_reproduce_the_shipped_losses(name, res, one_thread):
    steps = res["training"]["steps"][name]
    assert steps == STEPS[name]
    _, losses = train(name, seed=res["seeds"][0], steps=steps, stop_after=lr.FIRST_STEPS)
    shipped = res["per_seed"][name][str(res["seeds"][0])]["first_losses"]
    assert losses == pytest.approx(shipped, abs=1e-6)


@pytest.mark.parametrize("name", ["cnn", "dilated_cnn", "attention"])
def test_shipped_weights_reproduce_their_accuracies(name, res, subset, one_thread):
    model, entry = load_long_range_model(name)
    assert not model.training and entry["parameters"] == sum(p.numel() for p in model.parameters())
    assert (FOLDER / entry["weights"]).stat().st_size < 200_000
    got = accuracy_by_distance(model, subset)
    for d in CHECK_DISTANCES:
        shipped = entry["accuracy"][str(d)]
        assert abs(got[str(d)]["correct"] - shipped["correct"]) <= 1, d  # tolerance: one sequence per distance


def test_shipped_attention_statistics_reproduce(res, subset, one_thread):
    model, entry = load_long_range_model("attention")
    shipped = res["per_seed"]["attention"][str(entry["weights_seed"])]["attention"]
    got = attention_statistics(model, lr._attention_subset(subset))
    for d in (1, 256):
        assert got[str(d)]["n"] == shipped[str(d)]["n"] == res["task"]["attention_per_distance"]
        for stat in ("all_queries", "later_token", "partner_weight", "self_weight"):
            # [layer][head] lists; float64 statistics of a float32 model, re-run here: 1e-5 relative
            np.testing.assert_allclose(np.array(got[str(d)][stat]), np.array(shipped[str(d)][stat]), rtol=1e-5,
                                       atol=1e-9, err_msg=f"d={d} {stat}")


def test_model_card_is_generated_from_the_shipped_results(tmp_path):
    shutil.copy(FOLDER / RESULTS_FILE, tmp_path / RESULTS_FILE)
    assert write_model_card(tmp_path).read_text() == (FOLDER / "MODEL_CARD.md").read_text()
    text = (FOLDER / "MODEL_CARD.md").read_text()
    for section in ("## Task", "## Models", "## Accuracy vs distance", "## Failure points", "## Attention distance",
                    "## What the data supports", "## Limitations"):
        assert section in text


def test_bad_input_raises_naming_the_argument(tmp_path):
    with pytest.raises(ValueError, match="name"):
        train("lstm")
    with pytest.raises(ValueError, match="stop_after"):
        train("cnn", steps=5, stop_after=6)
    with pytest.raises(ValueError, match="lr"):
        train("cnn", lr=0.0)
    with pytest.raises(TypeError, match="steps"):
        train("cnn", steps=2.5)
    with pytest.raises(ValueError, match="seeds"):
        run_long_range(tmp_path, seeds=[])
    with pytest.raises(ValueError, match="seeds"):
        run_long_range(tmp_path, seeds=[0, 0])
    with pytest.raises(ValueError, match="names"):
        run_long_range(tmp_path, names=["rnn"])
    with pytest.raises(ValueError, match="steps"):
        run_long_range(tmp_path, steps=0)
    with pytest.raises(FileNotFoundError, match="python -m explorer.train.long_range"):
        load_long_range(tmp_path)
    with pytest.raises(ValueError, match="name"):
        load_long_range_model("rnn")
    (tmp_path / RESULTS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read"):
        load_long_range(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [RESULTS_FILE]  # nothing else was written
