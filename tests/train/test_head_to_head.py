"""The shipped head-to-head models and results (assets/head_to_head) and the training script's contract.

Tolerances: accuracy of the shipped seed-0 weights within 1 test image of the shipped count (the weights are
float32 and the threads may differ from the 2 the script used); equivariance numbers within rtol 1e-5 (plus atol
1e-6 for errors at float32 rounding level, e.g. the position-free ViT under whole-patch circular shifts).
"""

import json
import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from explorer.analysis.equivariance import equivariance_report
from explorer.train.head_to_head import (
    MODELS, RESULTS_FILE, _build, _data, aggregate, default_head_to_head_dir, load_head_to_head, main, run_experiment,
    train,
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


def test_card_covers_every_model(card):
    assert set(card["models"]) == set(MODELS)
    assert card["seeds"] and set(card["per_seed"]) == set(MODELS)
    assert card["lr_sweep"]["seed"] == 0 and set(card["lr_sweep"]["chosen"]) == set(MODELS)
    assert card["data"]["sweep_fit"] + card["data"]["sweep_val"] == card["data"]["train"] == 1347
    for name in MODELS:
        assert set(card["per_seed"][name]) == {str(s) for s in card["seeds"]}


@pytest.mark.parametrize("name", list(MODELS))
def test_shipped_weights_reproduce_accuracy_and_equivariance(name, card, test_set):
    images, labels = test_set
    model, entry = load_head_to_head(name)
    assert not model.training and entry["lr"] == card["lr_sweep"]["chosen"][name]
    assert entry["parameters"] == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        correct = int((model(images).argmax(-1) == labels).sum())
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


def test_bad_input_raises_value_error_naming_the_argument(tmp_path):
    images, labels = _data("train")
    with pytest.raises(ValueError, match="name"):
        train("mlp", images[:8], labels[:8])
    with pytest.raises(ValueError, match="images"):
        train("cnn", images[:0], labels[:0])
    with pytest.raises(ValueError, match="epochs"):
        train("cnn", images[:8], labels[:8], epochs=0)
    with pytest.raises(ValueError, match="experiment"):
        run_experiment("robustness", out=tmp_path)
    with pytest.raises(ValueError, match="experiment"):
        main(["robustness", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="name"):
        load_head_to_head("resnet")
    assert not any(tmp_path.iterdir())
