"""Train the head-to-head image classifiers and measure them: learning rates, equivariance, data efficiency, position.

``python -m explorer.train.head_to_head {sweep,equivariance,data_efficiency,ood_position} [--out DIR] [--seeds ...]``

Five models (:mod:`explorer.models.vision`: ``cnn``, ``vit``, ``hybrid``, ``se_cnn``, and ``vit_nopos``, the ViT
with ``positions="none"``) on the digits (:mod:`explorer.data.digits`) on a 24 x 24 canvas. Deterministic on CPU:
seeded initialisation (``build_vision_model(seed=...)``), seeded shuffling (a ``torch.Generator``), 1 thread,
``torch.use_deterministic_algorithms(True)``. Adam with a one-cycle schedule (``OneCycleLR``, peak = the chosen
learning rate), batch 64. Each command takes about 7-12 minutes on 2 cores; run ``sweep`` first (the others read the
learning rates it chose):

* ``sweep``: each architecture at each rate of :data:`LR_GRID`, seeds :data:`SWEEP_SEEDS`, trained on the first
  1077 training images and scored on the last :data:`VAL_SIZE` (the test split is never used to choose); the rate
  with the best mean validation accuracy over the seeds wins (``vit_nopos`` uses the ViT's rate, so the two ViTs
  differ only in their position embeddings). ``sweep.json``.
* ``equivariance``: centred digits, whole training split, every seed; test accuracy and
  :func:`explorer.analysis.equivariance.equivariance_report` (shifts 1-4 along each axis, circular and zeros).
  ``equivariance.json`` and the seed-0 weights ``<name>.safetensors`` (:func:`load_head_to_head`).
* ``data_efficiency``: test accuracy vs training-set size (:data:`SIZES`, nested class-balanced subsets drawn per
  seed), at least :data:`MIN_STEPS` optimiser steps per run (as many as the full-size run); per size mean, std and
  a 95 % t-interval over seeds, and for each pair of models the paired differences and where they change sign.
  Two worker processes, one thread each. ``data_efficiency.json``.
* ``ood_position``: digits anywhere in the left half for training (:data:`OOD_EPOCHS` epochs); tested in the left
  half, the centre and the right half. Two worker processes. ``ood_position.json`` and ``ood_<name>.safetensors``.

Every command rewrites ``MODEL_CARD.md`` from the result files present (:func:`write_model_card`, in
:mod:`explorer.train.head_to_head_card`); :func:`load_results` reads one and :func:`load_head_to_head` loads a model
(both in :mod:`explorer.models.head_to_head`, with the constants that describe the shipped models). This module
re-exports them.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import platform
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from explorer._checks import check_choice
from explorer._provenance import git_commit
from explorer.analysis.equivariance import SHIFT_MODES, equivariance_report
from explorer.data.digits import digits_dataset, digits_indices
from explorer.guard import RequestRefused, human_bytes, memory_budget
# the shipped side (what the models are, where they lie, the loaders) lives in explorer.models.head_to_head and the
# model card in explorer.train.head_to_head_card: imported and re-exported here
from explorer.models.head_to_head import (
    CANVAS, DATA_SEED, EXPERIMENTS, MAX_SHIFT, MODELS, PLACEMENT, RESULT_FILES, RESULTS_FILE, RETRAIN_COMMAND,
    _check_name, default_head_to_head_dir, load_head_to_head, load_results,
)
from explorer.models.vision import build_vision_model, parameter_table
from explorer.train.head_to_head_card import write_model_card
# the statistics over seeds and the seed / name checks, shared with explorer.train.long_range
from explorer.train.stats import T_975 as T_975, _check_names, _check_seeds, _mean_std, interval

__all__ = [
    "EXPERIMENTS", "MODELS", "CANVAS", "BATCH", "EPOCHS", "LR_GRID", "SWEEP_SEEDS", "VAL_SIZE", "MAX_SHIFT", "SIZES",
    "MIN_STEPS", "OOD_TEST_PLACEMENTS", "RESULT_FILES", "RESULTS_FILE", "RETRAIN_COMMAND", "default_head_to_head_dir",
    "train", "training_memory", "accuracy", "evaluate", "aggregate", "interval", "crossings", "run_sweep",
    "chosen_lrs", "run_equivariance", "run_data_efficiency", "run_ood_position", "load_results", "write_model_card",
    "load_head_to_head", "run_experiment", "main",
]

LR_FROM = {"vit_nopos": "vit"}  # models that take another's swept rate (the two ViTs differ only in positions)
BATCH = 64
EPOCHS = 16
LR_GRID = (1e-3, 3e-3, 1e-2)
SWEEP_SEEDS = (0, 1, 2)
VAL_SIZE = 270       # last 270 of the 1347 training images (class-balanced: 27 per class) validate the sweep
THREADS = 1  # one thread: two spin-waiting OpenMP threads slow down 9x when the 2 cores are shared
SIZES = (50, 100, 200, 500, 1347)      # data efficiency: training-set sizes (nested, class-balanced)
SIZE_MODELS = ("cnn", "vit", "hybrid", "se_cnn")
# data efficiency: every run takes at least as many optimiser steps as the full-size run (16 epochs x 22 batches);
# with 128 the CNNs did not fit their 200 and 500 training images (final loss 0.6-1.3): steps, not data, limited them
MIN_STEPS = 352
OOD_TRAIN_PLACEMENT = "left"
OOD_TEST_PLACEMENTS = ("left", "centre", "right")
# three times the centred runs' epochs: at 16, digits anywhere in the left half left the ViTs at 35-40 % even on the
# left half (the CNN 92-94 %), and a model that has not learned the task says nothing about transfer
OOD_EPOCHS = 48
METRICS = ("feature_error", "feature_error_cropped", "logit_error", "prediction_flips")


def _build(name: str, seed: int | None = None) -> nn.Module:
    kind, options = MODELS[_check_name(name)]
    return build_vision_model(kind, seed=seed, image_size=CANVAS, **options)


def _data(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return digits_dataset(split, canvas=CANVAS, placement=PLACEMENT, seed=DATA_SEED)


@functools.lru_cache(maxsize=None)
def _activation_elements(name: str, image_size: int) -> int:
    """Elements of every leaf module's output for one image (what autograd may keep for the backward pass)."""
    kind, options = MODELS[name]
    model = build_vision_model(kind, seed=0, **{**options, "image_size": image_size})
    total = 0

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, image_size, image_size))
    finally:
        for handle in handles:
            handle.remove()
    return total


def training_memory(name: str, batch: int = BATCH, n_images: int = 0, image_size: int = CANVAS) -> int:
    """Estimated peak bytes of training model ``name`` (float32): an estimate for the memory guard, not a measurement.

    ``4 * (4 * parameters + 4 * batch * activations + n_images * image_size**2)``: weights, gradients and Adam's two
    moments; four times every leaf module's output for the batch (counted by forward hooks on a one-image pass):
    what autograd saves for the backward pass (measured by ``tests/train`` for these
    models: 0.9-2.5x the leaf outputs, as the functional ops inside modules save their inputs too) plus the gradients in flight; and the
    training images themselves.
    """
    name = _check_name(name)
    for arg, value, low in (("batch", batch, 1), ("n_images", n_images, 0), ("image_size", image_size, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{arg} must be an int >= {low}, got {value!r}")
    kind, options = MODELS[name]
    parameters = sum(p.numel() for p in build_vision_model(kind, seed=0, **{**options, "image_size": image_size})
                     .parameters())
    return 4 * (4 * parameters + 4 * batch * _activation_elements(name, image_size) + n_images * image_size ** 2)


def train(name: str, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0, lr: float = 1e-3,
          epochs: int = EPOCHS, batch: int = BATCH, budget: int | None = None) -> tuple[nn.Module, list[float]]:
    """Train model ``name`` (a key of :data:`MODELS`) with Adam on ``images``/``labels``.

    The initial weights come from ``build_vision_model(seed=seed)``; each epoch visits the images in an order drawn
    from a ``torch.Generator`` seeded with ``seed``. Torch's global generator is not used. Before anything is
    built, :func:`training_memory` is compared with ``budget`` (bytes; default :func:`explorer.guard.memory_budget`).

    Returns:
        ``(model in eval mode, mean training loss of each epoch)``.

    Raises:
        ValueError: a bad argument (named). :class:`explorer.guard.RequestRefused` (a ValueError): the run would
        need more memory than ``budget``; the message says how much.
    """
    name = _check_name(name)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty [N, 1, {CANVAS}, {CANVAS}] tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if not isinstance(labels, torch.Tensor) or labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be a tensor [{images.shape[0]}], got "
                         f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}")
    for arg, value in (("epochs", epochs), ("batch", batch), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if arg == "seed" else 1):
            raise ValueError(f"{arg} must be an int >= {0 if arg == 'seed' else 1}, got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"lr must be a positive float, got {lr!r}")
    if budget is None:
        budget = memory_budget()
    elif isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise ValueError(f"budget must be a positive int number of bytes, got {budget!r}")
    need = training_memory(name, min(batch, len(images)), len(images), images.shape[-1])
    if need > budget:
        raise RequestRefused(f"training {name} with batch {min(batch, len(images))} on {len(images)} images would "
                             f"need about {human_bytes(need)} (budget {human_bytes(budget)}); try a smaller batch")
    model = _build(name, seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    # One-cycle schedule (warm-up to ``lr``, then cosine down): with a constant rate the CNNs, which have no
    # normalisation, started slowly (72.5 +- 9.5 % after 16 epochs) or not at all (SE-CNN, 2 of 3 seeds at 1e-2).
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr,
                                                   total_steps=epochs * math.ceil(len(images) / batch))
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for start in range(0, len(images), batch):
            part = order[start:start + batch]
            loss = F.cross_entropy(model(images[part]), labels[part])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(part)
        losses.append(total / len(images))
    return model.eval(), losses


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """``(share correct, number correct)`` of ``model`` (in eval mode) on ``images``."""
    model.eval()
    correct = int((model(images).argmax(-1) == labels).sum())
    return correct / len(labels), correct


def evaluate(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             max_shift: int = MAX_SHIFT) -> dict[str, Any]:
    """Test accuracy and the equivariance report (all of ``images``, both modes, shifts 1..max_shift per axis)."""
    acc, correct = accuracy(model, images, labels)
    rows = equivariance_report(model, images, max_shift=max_shift, modes=SHIFT_MODES, name=name)
    return {"accuracy": acc, "correct": correct, "n": len(labels), "equivariance": [_row_dict(r) for r in rows]}


def _row_dict(row: Any) -> dict[str, Any]:
    d = asdict(row)
    for key in ("shift", "feature_stride", "feature_shift"):
        if d[key] is not None:
            d[key] = list(d[key])
    return d


def aggregate(per_seed: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Mean and sample std over seeds of accuracy and of each equivariance metric per model / mode / shift.

    Args:
        per_seed: ``{model: {seed (str): evaluate(...) result}}``.

    Returns:
        ``{"accuracy": {model: {mean, std}}, "equivariance": [{model, mode, shift, aligned, <metric>: {mean,
        std}}, ...]}`` (rows in the per-seed order).
    """
    result: dict[str, Any] = {"accuracy": {}, "equivariance": []}
    for model, seeds in per_seed.items():
        runs = [seeds[s] for s in sorted(seeds, key=int)]
        result["accuracy"][model] = _mean_std([r["accuracy"] for r in runs])
        for i, row in enumerate(runs[0]["equivariance"]):
            rows = [r["equivariance"][i] for r in runs]
            entry = {"model": model, "mode": row["mode"], "shift": row["shift"], "aligned": row["aligned"]}
            for metric in METRICS:
                entry[metric] = _mean_std([r[metric] for r in rows])
            result["equivariance"].append(entry)
    return result


def _metadata(experiment: str, progress: bool) -> dict[str, Any]:
    return {
        "experiment": experiment,
        "command": " ".join(["python -m explorer.train.head_to_head", *sys.argv[1:]]) if progress else None,
        "git_commit": git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def _write(out: Path, experiment: str, results: dict[str, Any], log: Any) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILES[experiment]).write_text(json.dumps(results, indent=1) + "\n")
    write_model_card(out)
    log(f"done in {results['total_seconds']:.0f} s: {out / RESULT_FILES[experiment]}")
    return results


def _logger(progress: bool) -> Any:
    return (lambda *a: print(*a, flush=True)) if progress else (lambda *a: None)


def run_sweep(out: Path, seeds: list[int] = list(SWEEP_SEEDS), epochs: int = EPOCHS, names: list[str] | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Choose each architecture's learning rate: every rate of :data:`LR_GRID` x every seed, on a validation split.

    Trained on the first ``1347 - VAL_SIZE`` images of the training split's class-balanced order, scored on the last
    :data:`VAL_SIZE`. The rate with the best mean validation accuracy over the seeds wins (ties: the smaller rate),
    so a rate at which one seed fails to train loses to a slightly slower rate that trains on every seed. Models in
    ``LR_FROM`` are not swept. Writes ``sweep.json``.
    """
    seeds = _check_seeds(seeds)
    names = [n for n in _check_names(names) if n not in LR_FROM]
    start_all = time.perf_counter()
    log = _logger(progress)
    train_x, train_y = _data("train")
    fit, val = slice(0, len(train_x) - VAL_SIZE), slice(len(train_x) - VAL_SIZE, len(train_x))
    results: dict[str, Any] = {}
    for name in names:
        results[name] = {}
        for lr in LR_GRID:
            runs = {}
            for seed in seeds:
                t = time.perf_counter()
                model, losses = train(name, train_x[fit], train_y[fit], seed=seed, lr=lr, epochs=epochs)
                acc, _ = accuracy(model, train_x[val], train_y[val])
                runs[str(seed)] = {"val_accuracy": acc, "final_train_loss": losses[-1]}
                log(f"sweep {name:8s} lr {lr:g} seed {seed}: val acc {acc:.3f} ({time.perf_counter() - t:.1f} s)")
            accs = [r["val_accuracy"] for r in runs.values()]
            results[name][repr(lr)] = {"per_seed": runs, **interval(accs), "worst": min(accs)}
    chosen = {name: max(LR_GRID, key=lambda lr: (results[name][repr(lr)]["mean"], -lr)) for name in names}
    for name, source in LR_FROM.items():
        if source in chosen:
            chosen[name] = chosen[source]
    return _write(out, "sweep", {
        **_metadata("sweep", progress),
        "data": {"dataset": "sklearn digits via explorer.data.digits", "canvas": CANVAS, "placement": PLACEMENT,
                 "data_seed": DATA_SEED, "fit": fit.stop, "val": VAL_SIZE,
                 "val_note": "the last VAL_SIZE images of the training split's class-balanced order (27 per class)"},
        "training": {"optimizer": "Adam", "schedule": "OneCycleLR (peak = lr)", "batch": BATCH, "epochs": epochs},
        "grid": list(LR_GRID), "seeds": seeds, "results": results, "chosen": chosen, "lr_from": dict(LR_FROM),
        "rule": "best mean validation accuracy over the seeds, ties to the smaller lr",
        "total_seconds": round(time.perf_counter() - start_all, 1),
    }, log)


def chosen_lrs(folder: str | Path | None = None) -> dict[str, float]:
    """The learning rate ``sweep.json`` chose for every model (FileNotFoundError: run the sweep first)."""
    return {k: float(v) for k, v in load_results("sweep", folder)["chosen"].items()}


def run_equivariance(out: Path, seeds: list[int], epochs: int = EPOCHS, names: list[str] | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Train every model on the whole (centred) training split with each seed; accuracy and equivariance on test.

    Writes ``equivariance.json`` and the weights of the first seed, ``<name>.safetensors``.
    """
    from safetensors.torch import save_file

    names, seeds = _check_names(names), _check_seeds(seeds)
    lrs = chosen_lrs(out)
    start_all = time.perf_counter()
    log = _logger(progress)
    train_x, train_y = _data("train")
    test_x, test_y = _data("test")
    out.mkdir(parents=True, exist_ok=True)
    per_seed: dict[str, dict[str, Any]] = {}
    train_seconds: dict[str, list[float]] = {}
    for name in names:
        per_seed[name], train_seconds[name] = {}, []
        for seed in seeds:
            t = time.perf_counter()
            model, losses = train(name, train_x, train_y, seed=seed, lr=lrs[name], epochs=epochs)
            train_seconds[name].append(round(time.perf_counter() - t, 2))
            result = evaluate(name, model, test_x, test_y)
            result["final_train_loss"] = losses[-1]
            per_seed[name][str(seed)] = result
            log(f"{name:10s} seed {seed}: test acc {result['accuracy']:.3f} ({train_seconds[name][-1]:.1f} s)")
            if seed == seeds[0]:
                state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
                save_file(state, out / f"{name}.safetensors")

    params = {row["model"]: row for row in parameter_table(image_size=CANVAS)}
    models = {}
    for name in names:
        kind, options = MODELS[name]
        model = _build(name, 0)
        models[name] = {
            "builder": kind, "options": {"image_size": CANVAS, **options}, "class": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "feature_stride": model.feature_stride, "lr": lrs[name],
            "weights": f"{name}.safetensors", "weights_seed": seeds[0],
        }
    table = []
    for name in names:
        row = dict(params[MODELS[name][0]]) | {"model": name}
        if name == "vit_nopos":  # parameter_table's vit row has the position embedding this model lacks
            row["Embedding"] = row.get("Embedding", 0) - (row["parameters"] - models[name]["parameters"])
            row["parameters"] = models[name]["parameters"]
        table.append(row)
    return _write(out, "equivariance", {
        **_metadata("equivariance", progress),
        "data": {"dataset": "sklearn digits via explorer.data.digits", "canvas": CANVAS, "placement": PLACEMENT,
                 "data_seed": DATA_SEED, "train": len(train_x), "test": len(test_x)},
        "training": {"optimizer": "Adam", "schedule": "OneCycleLR (peak = the chosen lr, torch defaults otherwise)",
                     "batch": BATCH, "epochs": epochs, "loss": "cross entropy"},
        "seeds": seeds,
        "lr": {"from": RESULT_FILES["sweep"], "chosen": {n: lrs[n] for n in names}},
        "equivariance_settings": {"max_shift": MAX_SHIFT, "modes": list(SHIFT_MODES), "margin": 0,
                                  "images": f"all {len(test_x)} test images"},
        "models": models,
        "parameter_table": table,
        "train_seconds": train_seconds,
        "per_seed": per_seed,
        "aggregates": aggregate(per_seed),
        "std": "sample standard deviation over seeds (n - 1)",
        "total_seconds": round(time.perf_counter() - start_all, 1),
    }, log)


def _check_sizes(sizes: object) -> list[int]:
    limit = len(digits_indices("train"))
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise ValueError(f"sizes must be a non-empty list of training-set sizes, got {sizes!r}")
    if any(isinstance(n, bool) or not isinstance(n, int) or not 10 <= n <= limit for n in sizes):
        raise ValueError(f"sizes must be ints in [10, {limit}] (at least one image per class), got {sizes!r}")
    if list(sizes) != sorted(set(sizes)):
        raise ValueError(f"sizes must be increasing without repeats, got {sizes!r}")
    return list(sizes)


def epochs_for(size: int, epochs: int = EPOCHS) -> int:
    """Epochs for a training set of ``size`` images: ``epochs``, or more so that there are >= MIN_STEPS steps."""
    steps_per_epoch = math.ceil(size / BATCH)
    return max(epochs, math.ceil(MIN_STEPS / steps_per_epoch))


def crossings(curves: dict[str, dict[str, dict[str, float]]], sizes: list[int], seeds: list[int]) -> list[dict]:
    """Where two models' learning curves cross, from paired per-seed differences.

    Args:
        curves: ``{model: {size (str): {seed (str): accuracy}}}``; the runs of one seed and size used the same
            images, so the difference ``a - b`` is taken per seed (paired).

    Returns:
        One entry per pair ``(a, b)``: ``differences`` per size (:func:`interval` of ``a - b`` plus ``leader``: the
        model whose accuracy is higher with the 95 % interval excluding 0, else None), ``crossing`` (``between``:
        consecutive sizes where the mean difference changes sign, ``estimate``: the size where the straight line
        through them in log size crosses 0, ``seed_estimates``: the same per seed, None where that seed's curves do
        not cross there), and ``supported``: True when some size is led by ``a`` and another by ``b``.
    """
    out = []
    for a, b in itertools.combinations(list(curves), 2):
        diffs = []
        for size in sizes:
            d = [curves[a][str(size)][str(s)] - curves[b][str(size)][str(s)] for s in seeds]
            stat = interval(d)
            low, high = stat["ci95"]
            stat["leader"] = a if low > 0 else b if high < 0 else None
            diffs.append({"size": size, "per_seed": d, **stat})
        found = []
        for i in range(len(sizes) - 1):
            m0, m1 = diffs[i]["mean"], diffs[i + 1]["mean"]
            if m0 == 0 or m0 * m1 >= 0:
                continue

            def cross(y0: float, y1: float) -> float | None:
                if y0 * y1 >= 0:
                    return None
                x0, x1 = math.log(sizes[i]), math.log(sizes[i + 1])
                return math.exp(x0 + (x1 - x0) * y0 / (y0 - y1))

            found.append({"between": [sizes[i], sizes[i + 1]], "estimate": cross(m0, m1),
                          "seed_estimates": [cross(diffs[i]["per_seed"][k], diffs[i + 1]["per_seed"][k])
                                             for k in range(len(seeds))],
                          "from_leader": a if m0 > 0 else b, "to_leader": b if m0 > 0 else a})
        leaders = {d["leader"] for d in diffs} - {None}
        out.append({"a": a, "b": b, "differences": diffs, "crossings": found, "supported": leaders == {a, b}})
    return out


def _deterministic() -> None:
    """What every training process sets first: :data:`THREADS` threads and deterministic kernels."""
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)


def _efficiency_run(job: tuple[str, int, int, float, int]) -> dict[str, Any]:
    """One data-efficiency run ``(name, size, seed, lr, epochs)`` -> its row (top level: worker processes call it)."""
    name, size, seed, lr, epochs = job
    _deterministic()
    t = time.perf_counter()
    images, labels = digits_dataset("train", canvas=CANVAS, placement=PLACEMENT, seed=seed, n=size)
    model, losses = train(name, images, labels, seed=seed, lr=lr, epochs=epochs)
    test_x, test_y = _data("test")
    acc, correct = accuracy(model, test_x, test_y)
    return {"accuracy": acc, "correct": correct, "n": len(test_y), "epochs": epochs,
            "steps": epochs * math.ceil(size / BATCH), "final_train_loss": losses[-1],
            "seconds": round(time.perf_counter() - t, 2)}


def run_data_efficiency(out: Path, seeds: list[int], sizes: list[int] = list(SIZES), epochs: int = EPOCHS,
                        names: list[str] | None = None, progress: bool = True, workers: int = 1) -> dict[str, Any]:
    """Test accuracy vs training-set size for each model, every seed. Writes ``data_efficiency.json``.

    A run with seed ``s`` and size ``n`` trains on ``digits_dataset("train", n=n, seed=s)`` (the first ``n`` of
    seed ``s``'s class-balanced order: nested across sizes, different across seeds, so the spread includes which
    images were drawn) for :func:`epochs_for` epochs with the swept learning rate, initialised and shuffled by
    ``s``; all models see the same images for a given seed and size. ``workers`` > 1 runs them in that many
    processes (one thread each; ``main`` uses 2 for this experiment, one per core).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    names = _check_names(names, SIZE_MODELS) if names is not None else list(SIZE_MODELS)
    seeds, sizes = _check_seeds(seeds), _check_sizes(sizes)
    lrs = chosen_lrs(out)
    start_all = time.perf_counter()
    log = _logger(progress)
    test_x, test_y = _data("test")
    per_seed: dict[str, dict[str, dict[str, Any]]] = {n: {str(k): {} for k in sizes} for n in names}
    jobs = [(name, size, seed, lrs[name], epochs_for(size, epochs)) for seed in seeds for size in sizes
            for name in names]
    if workers > 1:  # separate processes, one thread each: the same numbers as in one process
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = pool.map(_efficiency_run, jobs)
            for (name, size, seed, _, _), row in zip(jobs, runs):
                per_seed[name][str(size)][str(seed)] = row
                log(f"{name:8s} n={size:5d} seed {seed}: test acc {row['accuracy']:.3f} ({row['seconds']:.1f} s)")
    else:
        for job in jobs:
            name, size, seed = job[:3]
            row = per_seed[name][str(size)][str(seed)] = _efficiency_run(job)
            log(f"{name:8s} n={size:5d} seed {seed}: test acc {row['accuracy']:.3f} ({row['seconds']:.1f} s)")
    accs = {n: {str(k): {str(s): per_seed[n][str(k)][str(s)]["accuracy"] for s in seeds} for k in sizes}
            for n in names}
    curves = {n: [{"size": k, **interval([accs[n][str(k)][str(s)] for s in seeds]),
                   "accuracies": [accs[n][str(k)][str(s)] for s in seeds]} for k in sizes] for n in names}
    return _write(out, "data_efficiency", {
        **_metadata("data_efficiency", progress),
        "data": {"dataset": "sklearn digits via explorer.data.digits", "canvas": CANVAS, "placement": PLACEMENT,
                 "subsets": "digits_dataset('train', n=size, seed=seed): nested across sizes, drawn per seed",
                 "test": len(test_y)},
        "training": {"optimizer": "Adam", "schedule": "OneCycleLR (peak = lr)", "batch": BATCH,
                     "epochs": {str(k): epochs_for(k, epochs) for k in sizes}, "min_steps": MIN_STEPS,
                     "workers": workers, "threads_per_worker": THREADS,
                     "lr": {"from": RESULT_FILES["sweep"], "chosen": {n: lrs[n] for n in names}}},
        "sizes": sizes, "seeds": seeds, "models": names,
        "per_seed": per_seed, "curves": curves, "crossings": crossings(accs, sizes, seeds),
        "interval": "mean +- t(0.975, n-1) * std / sqrt(n) over seeds; std is the sample std (n - 1)",
        "total_seconds": round(time.perf_counter() - start_all, 1),
    }, log)


def _ood_run(job: tuple[str, int, float, int]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """One out-of-position run ``(name, seed, lr, epochs)`` -> (its row, its weights); top level for workers."""
    name, seed, lr, epochs = job
    _deterministic()
    t = time.perf_counter()
    train_x, train_y = digits_dataset("train", canvas=CANVAS, placement=OOD_TRAIN_PLACEMENT, seed=seed)
    model, losses = train(name, train_x, train_y, seed=seed, lr=lr, epochs=epochs)
    row: dict[str, Any] = {"final_train_loss": losses[-1], "seconds": round(time.perf_counter() - t, 2)}
    for placement in OOD_TEST_PLACEMENTS:
        images, labels = digits_dataset("test", canvas=CANVAS, placement=placement, seed=seed)
        acc, correct = accuracy(model, images, labels)
        row[placement] = {"accuracy": acc, "correct": correct, "n": len(labels)}
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    return row, state


def run_ood_position(out: Path, seeds: list[int], epochs: int = OOD_EPOCHS, names: list[str] | None = None,
                     progress: bool = True, workers: int = 1) -> dict[str, Any]:
    """Train on digits in the left half of the canvas, test them in the left half, the centre and the right half.

    Seed ``s`` draws the positions (``digits_dataset(placement=..., seed=s)``: rows anywhere, columns 0-4 on the
    left, 12-16 on the right, 8 in the centre), initialises and shuffles. Writes ``ood_position.json`` and the first
    seed's weights ``ood_<name>.safetensors`` (``load_head_to_head(name, experiment="ood_position")``). ``workers`` >
    1 runs the models in that many processes (one thread each; ``main`` uses 2).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    from safetensors.torch import save_file

    names, seeds = _check_names(names), _check_seeds(seeds)
    lrs = chosen_lrs(out)
    out.mkdir(parents=True, exist_ok=True)
    start_all = time.perf_counter()
    log = _logger(progress)
    per_seed: dict[str, dict[str, Any]] = {n: {} for n in names}
    jobs = [(name, seed, lrs[name], epochs) for seed in seeds for name in names]
    if workers > 1:  # separate processes, one thread each: the same numbers as in one process
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        runs = pool.map(_ood_run, jobs)
    else:
        pool, runs = None, map(_ood_run, jobs)
    try:
        for (name, seed, _, _), (row, state) in zip(jobs, runs):
            per_seed[name][str(seed)] = row
            log(f"{name:10s} seed {seed}: " + ", ".join(f"{p} {row[p]['accuracy']:.3f}" for p in OOD_TEST_PLACEMENTS))
            if seed == seeds[0]:
                save_file(state, out / f"ood_{name}.safetensors")
    finally:
        if pool is not None:
            pool.shutdown()
    summary = {}
    for name in names:
        runs = [per_seed[name][str(s)] for s in seeds]
        summary[name] = {p: interval([r[p]["accuracy"] for r in runs]) for p in OOD_TEST_PLACEMENTS}
        summary[name]["drop"] = interval([r[OOD_TRAIN_PLACEMENT]["accuracy"] - r[OOD_TEST_PLACEMENTS[-1]]["accuracy"]
                                          for r in runs])
    return _write(out, "ood_position", {
        **_metadata("ood_position", progress),
        "data": {"dataset": "sklearn digits via explorer.data.digits", "canvas": CANVAS,
                 "train_placement": OOD_TRAIN_PLACEMENT, "test_placements": list(OOD_TEST_PLACEMENTS),
                 "positions": "explorer.data.digits.digit_positions(placement, 24, seed): columns 0-4 (left), 8 "
                              "(centre), 12-16 (right); rows 0-16"},
        "training": {"optimizer": "Adam", "schedule": "OneCycleLR (peak = lr)", "batch": BATCH, "epochs": epochs,
                     "lr": {"from": RESULT_FILES["sweep"], "chosen": {n: lrs[n] for n in names}}},
        "seeds": seeds, "models": names, "per_seed": per_seed, "summary": summary,
        "weights": {n: f"ood_{n}.safetensors" for n in names}, "weights_seed": seeds[0],
        "drop": f"accuracy on {OOD_TRAIN_PLACEMENT} minus accuracy on {OOD_TEST_PLACEMENTS[-1]}, per seed",
        "interval": "mean +- t(0.975, n-1) * std / sqrt(n) over seeds",
        "total_seconds": round(time.perf_counter() - start_all, 1),
    }, log)


def run_experiment(experiment: str, out: Path | None = None, seeds: list[int] | None = None,
                   epochs: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run one of :data:`EXPERIMENTS` (ValueError naming ``experiment`` otherwise) into ``out``.

    ``epochs`` None means the experiment's own default: :data:`OOD_EPOCHS` for ``ood_position``, :data:`EPOCHS` for
    the others. ``data_efficiency`` and ``ood_position`` run in two worker processes.
    """
    check_choice("experiment", experiment, EXPERIMENTS)
    if epochs is None:
        epochs = OOD_EPOCHS if experiment == "ood_position" else EPOCHS
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    out = default_head_to_head_dir() if out is None else Path(out)
    seeds = (list(SWEEP_SEEDS) if experiment == "sweep" else [0, 1, 2]) if seeds is None else list(seeds)
    _deterministic()
    if experiment == "data_efficiency":
        return run_data_efficiency(out, seeds, epochs=epochs, progress=progress, workers=2)
    if experiment == "ood_position":
        return run_ood_position(out, seeds, epochs=epochs, progress=progress, workers=2)
    run = {"sweep": run_sweep, "equivariance": run_equivariance}[experiment]
    return run(out, seeds, epochs=epochs, progress=progress)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help=f"one of {EXPERIMENTS}")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default assets/head_to_head)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"default {OOD_EPOCHS} for ood_position, {EPOCHS} for the others")
    args = parser.parse_args(argv)
    return run_experiment(args.experiment, args.out, args.seeds, args.epochs)


if __name__ == "__main__":
    main()
