"""The shipped head-to-head models and results (assets/head_to_head) and the training script's contract.

Tolerances: accuracy of shipped weights, or of a run re-trained here, within 1 test image of the shipped count (the
weights are float32 and this machine's threads may differ from the script's); equivariance numbers within rtol 1e-5
(plus atol 1e-6 for errors at float32 rounding level, e.g. the position-free ViT under whole-patch circular shifts);
statistics recomputed from the shipped per-seed numbers within 1e-12.
"""

import json
import math
import shutil
import statistics

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from explorer.analysis.equivariance import equivariance_report
from explorer.data.digits import digits_dataset
from explorer.guard import RequestRefused
from explorer.train import head_to_head as h2h
from explorer.train.head_to_head import (
    MODELS, RESULT_FILES, RESULTS_FILE, T_975, _build, _data, aggregate, crossings, default_head_to_head_dir,
    epochs_for, interval, load_head_to_head, load_results, main, run_experiment, train, training_memory,
    write_model_card,
)

FOLDER = default_head_to_head_dir()
SUBSET = [(0, 1), (4, 0)]  # one unaligned and one aligned shift, both axes covered
METRICS = ("feature_error", "feature_error_cropped", "logit_error", "prediction_flips")


@pytest.fixture(scope="module")
def card():
    return json.loads((FOLDER / RESULTS_FILE).read_text())


@pytest.fixture(scope="module")
def test_set():
    return _data("test")


def _correct(model, images, labels):
    with torch.no_grad():
        return int((model(images).argmax(-1) == labels).sum())


# --- statistics -----------------------------------------------------------------------------------------------------

def test_t_quantiles_match_scipy():
    for df, t in T_975.items():
        assert t == pytest.approx(stats.t.ppf(0.975, df), abs=5e-4)  # the table's 3 decimals


def test_interval_is_the_student_t_interval():
    values = [0.91, 0.95, 0.94]
    got = interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=statistics.fmean(values), scale=stats.sem(values))
    assert got["mean"] == pytest.approx(statistics.fmean(values), abs=1e-15)
    assert got["std"] == pytest.approx(statistics.stdev(values), abs=1e-15)
    assert got["ci95"] == pytest.approx([low, high], abs=1e-4)  # T_975 has 3 decimals
    assert interval([0.5]) == {"mean": 0.5, "std": 0.0, "ci95": [0.5, 0.5], "n": 1}
    with pytest.raises(ValueError, match="values"):
        interval([])


def test_crossings_closed_form():
    # a leads by 10 points at n=50 on every seed, b by 10 at n=200: the log-linear crossing is at sqrt(50*200)=100
    curves = {"a": {"50": {"0": 0.6, "1": 0.62, "2": 0.61}, "200": {"0": 0.8, "1": 0.82, "2": 0.81}},
              "b": {"50": {"0": 0.5, "1": 0.52, "2": 0.51}, "200": {"0": 0.9, "1": 0.92, "2": 0.91}}}
    (pair,) = crossings(curves, [50, 200], [0, 1, 2])
    assert [d["leader"] for d in pair["differences"]] == ["a", "b"] and pair["supported"]
    (cross,) = pair["crossings"]
    assert cross["between"] == [50, 200] and cross["estimate"] == pytest.approx(100.0, rel=1e-9)
    assert cross["seed_estimates"] == pytest.approx([100.0] * 3, rel=1e-9)
    assert (cross["from_leader"], cross["to_leader"]) == ("a", "b")
    # noisy: the mean changes sign but one interval includes 0 -> a crossing the intervals do not support
    curves["b"]["50"] = {"0": 0.70, "1": 0.52, "2": 0.55}
    (pair,) = crossings(curves, [50, 200], [0, 1, 2])
    assert pair["differences"][0]["leader"] is None and not pair["supported"] and pair["crossings"]


# --- training ------------------------------------------------------------------------------------------------------

def test_training_is_deterministic_and_lowers_the_loss():
    images, labels = _data("train")
    images, labels = images[:128], labels[:128]
    first, losses = train("vit", images, labels, seed=0, lr=3e-3, epochs=1)
    second, _ = train("vit", images, labels, seed=0, lr=3e-3, epochs=1)
    for (k, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), k
    with torch.no_grad():
        before = F.cross_entropy(_build("vit", 0)(images), labels).item()
        after = F.cross_entropy(first(images), labels).item()
    assert after < before and math.isfinite(after) and len(losses) == 1


@pytest.mark.parametrize("name", ["cnn", "vit", "hybrid", "se_cnn"])
def test_training_memory_covers_what_autograd_saves(name):
    # independent reference: the bytes of every tensor autograd saves for the backward pass of a batch of 8
    model = _build(name, 0).train()
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.rand(8, 1, 24, 24)).sum()
    parameters = sum(p.numel() for p in model.parameters())
    activations = training_memory(name, batch=8, n_images=0) - 16 * parameters
    assert saved <= activations <= 4 * saved  # the estimate covers the saved tensors, at most 4x over
    assert training_memory(name, 8, 100) - training_memory(name, 8, 0) == 100 * 24 * 24 * 4  # the images, float32


def test_memory_guard_refuses_a_training_run_and_says_what_it_needs():
    images, labels = _data("train")
    need = training_memory("cnn", 64, 128)
    with pytest.raises(RequestRefused, match=r"training cnn with batch 64 on 128 images would need about "
                                             r"[0-9.]+ MB \(budget 1.0 kB\)"):
        train("cnn", images[:128], labels[:128], budget=1000)
    model, _ = train("cnn", images[:16], labels[:16], epochs=1, budget=need)  # fits exactly: runs
    assert not model.training


def test_bad_input_raises_value_error_naming_the_argument(tmp_path):
    images, labels = _data("train")
    with pytest.raises(ValueError, match="name"):
        train("mlp", images[:8], labels[:8])
    with pytest.raises(ValueError, match="images"):
        train("cnn", images[:0], labels[:0])
    with pytest.raises(ValueError, match="epochs"):
        train("cnn", images[:8], labels[:8], epochs=0)
    with pytest.raises(ValueError, match="budget"):
        train("cnn", images[:8], labels[:8], budget=0)
    with pytest.raises(ValueError, match="experiment"):
        run_experiment("robustness", out=tmp_path)
    with pytest.raises(ValueError, match="experiment"):
        main(["robustness", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="name"):
        load_head_to_head("resnet")
    with pytest.raises(ValueError, match="experiment"):
        load_head_to_head("cnn", experiment="sweep")
    with pytest.raises(ValueError, match="experiment"):
        load_results("robustness")
    with pytest.raises(ValueError, match="sizes"):
        h2h.run_data_efficiency(tmp_path, [0], sizes=[])  # an empty list of training sizes
    with pytest.raises(ValueError, match="sizes"):
        h2h.run_data_efficiency(tmp_path, [0], sizes=[0, 50])
    with pytest.raises(ValueError, match="sizes"):
        h2h.run_data_efficiency(tmp_path, [0], sizes=[100, 50])
    with pytest.raises(ValueError, match="seeds"):
        h2h.run_sweep(tmp_path, [])
    with pytest.raises(ValueError, match="names"):
        h2h.run_ood_position(tmp_path, [0], names=["resnet"])
    with pytest.raises(FileNotFoundError, match="sweep"):
        h2h.chosen_lrs(tmp_path)
    assert not any(tmp_path.iterdir())


# --- the learning-rate sweep ---------------------------------------------------------------------------------------

def test_sweep_chose_the_best_mean_over_seeds():
    sweep = load_results("sweep")
    assert sweep["seeds"] == [0, 1, 2] and sweep["data"]["fit"] + sweep["data"]["val"] == 1347
    for name, rates in sweep["results"].items():
        for lr, entry in rates.items():
            accs = [entry["per_seed"][str(s)]["val_accuracy"] for s in sweep["seeds"]]
            assert {k: entry[k] for k in ("mean", "std", "ci95", "n")} == interval(accs)
            assert entry["worst"] == min(accs)
        best = max(sweep["grid"], key=lambda lr: (rates[repr(lr)]["mean"], -lr))
        assert sweep["chosen"][name] == best
    assert sweep["chosen"]["vit_nopos"] == sweep["chosen"]["vit"] and set(sweep["chosen"]) == set(MODELS)


# --- equivariance (the shipped weights) -------------------------------------------------------------------------------

def test_card_covers_every_model(card):
    assert set(card["models"]) == set(MODELS)
    assert card["seeds"] and set(card["per_seed"]) == set(MODELS)
    assert card["lr"]["chosen"] == load_results("sweep")["chosen"]
    for name in MODELS:
        assert set(card["per_seed"][name]) == {str(s) for s in card["seeds"]}


@pytest.mark.parametrize("name", list(MODELS))
def test_shipped_weights_reproduce_accuracy_and_equivariance(name, card, test_set):
    images, labels = test_set
    model, entry = load_head_to_head(name)
    assert not model.training and entry["lr"] == card["lr"]["chosen"][name]
    assert entry["parameters"] == sum(p.numel() for p in model.parameters())
    correct = _correct(model, images, labels)
    shipped = card["per_seed"][name][str(entry["weights_seed"])]
    assert abs(correct - shipped["correct"]) <= 1  # tolerance: one test image
    assert entry["accuracy"]["correct"] == shipped["correct"]

    rows = equivariance_report(model, images, modes=("circular", "zeros"), shifts=SUBSET, name=name)
    for row in rows:
        ref = next(r for r in shipped["equivariance"] if r["mode"] == row.mode and tuple(r["shift"]) == row.shift)
        for metric in METRICS:
            assert getattr(row, metric) == pytest.approx(ref[metric], rel=1e-5, abs=1e-6), (row.mode, row.shift, metric)


def test_aggregates_are_mean_and_std_of_per_seed_rows(card):
    assert aggregate(card["per_seed"]) == card["aggregates"]
    for name, seeds in card["per_seed"].items():
        accs = [seeds[str(s)]["accuracy"] for s in card["seeds"]]
        assert card["aggregates"]["accuracy"][name]["mean"] == pytest.approx(statistics.fmean(accs), abs=1e-12)
        assert card["aggregates"]["accuracy"][name]["std"] == pytest.approx(statistics.stdev(accs), abs=1e-12)
    for entry in card["aggregates"]["equivariance"]:
        runs = card["per_seed"][entry["model"]]
        for metric in METRICS:
            values = [next(r[metric] for r in runs[str(s)]["equivariance"]
                           if r["mode"] == entry["mode"] and r["shift"] == entry["shift"]) for s in card["seeds"]]
            assert entry[metric]["mean"] == pytest.approx(statistics.fmean(values), rel=1e-12, abs=1e-15)
            assert entry[metric]["std"] == pytest.approx(statistics.stdev(values), rel=1e-12, abs=1e-15)


# --- data efficiency -------------------------------------------------------------------------------------------------

def test_data_efficiency_covers_the_issue_and_its_statistics_follow_from_the_runs():
    res = load_results("data_efficiency")
    assert len(res["sizes"]) >= 5 and len(res["seeds"]) >= 3 and set(res["models"]) == {"cnn", "vit", "hybrid",
                                                                                        "se_cnn"}
    accs = {}
    for name in res["models"]:
        accs[name] = {}
        for point, size in zip(res["curves"][name], res["sizes"]):
            runs = res["per_seed"][name][str(size)]
            values = [runs[str(s)]["accuracy"] for s in res["seeds"]]
            accs[name][str(size)] = {str(s): runs[str(s)]["accuracy"] for s in res["seeds"]}
            assert point["size"] == size and point["accuracies"] == values
            assert {k: point[k] for k in ("mean", "std", "ci95", "n")} == interval(values)
            assert all(r["steps"] >= h2h.MIN_STEPS and r["epochs"] == epochs_for(size) for r in runs.values())
    assert res["crossings"] == json.loads(json.dumps(crossings(accs, res["sizes"], res["seeds"])))


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_smallest_training_set_run_reproduces(name, test_set):
    # re-train the shipped run at the smallest size, seed 0 (128 steps of 50 images: a few seconds)
    res = load_results("data_efficiency")
    size, seed = res["sizes"][0], res["seeds"][0]
    images, labels = digits_dataset("train", canvas=24, placement="centre", seed=seed, n=size)
    assert sorted(labels.tolist()) == sorted(list(range(10)) * (size // 10))  # class-balanced subset
    lr = res["training"]["lr"]["chosen"][name]
    threads = torch.get_num_threads()
    torch.set_num_threads(res["training"]["threads_per_worker"])  # the script's thread count: the same arithmetic
    try:
        model, _ = train(name, images, labels, seed=seed, lr=lr, epochs=epochs_for(size))
    finally:
        torch.set_num_threads(threads)
    shipped = res["per_seed"][name][str(size)][str(seed)]
    assert abs(_correct(model, *test_set) - shipped["correct"]) <= 1  # tolerance: one test image


# --- out-of-distribution position --------------------------------------------------------------------------------------

def test_ood_summary_follows_from_the_runs():
    res = load_results("ood_position")
    assert res["data"]["train_placement"] == "left" and res["data"]["test_placements"] == ["left", "centre", "right"]
    for name in res["models"]:
        runs = [res["per_seed"][name][str(s)] for s in res["seeds"]]
        for place in res["data"]["test_placements"]:
            assert res["summary"][name][place] == interval([r[place]["accuracy"] for r in runs])
        assert res["summary"][name]["drop"] == interval([r["left"]["accuracy"] - r["right"]["accuracy"] for r in runs])


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_shipped_ood_weights_reproduce_each_placement(name):
    model, entry = load_head_to_head(name, experiment="ood_position")
    for place, shipped in entry["accuracy"].items():
        images, labels = digits_dataset("test", canvas=24, placement=place, seed=entry["weights_seed"])
        if place != "centre":  # the digits really are in that half
            cols = images.squeeze(1).amax(dim=1) > 0  # (N, 24): columns with ink
            assert bool(cols[:, 12:].any()) is (place == "right") and bool(cols[:, :12].any()) is (place == "left")
        assert abs(_correct(model, images, labels) - shipped["correct"]) <= 1  # tolerance: one test image


# --- model card -------------------------------------------------------------------------------------------------------

def test_model_card_is_generated_from_the_shipped_results(tmp_path):
    for name in RESULT_FILES.values():
        shutil.copy(FOLDER / name, tmp_path / name)
    assert write_model_card(tmp_path).read_text() == (FOLDER / "MODEL_CARD.md").read_text()
    text = (FOLDER / "MODEL_CARD.md").read_text()
    for section in ("Learning rates", "translation equivariance", "Data efficiency", "Out-of-distribution position",
                    "What the data supports", "Limitations"):
        assert section in text
