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

Every command rewrites ``MODEL_CARD.md`` from the result files present (:func:`write_model_card`);
:func:`load_results` reads one.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import explorer
from explorer._checks import check_choice
from explorer._provenance import git_commit
from explorer.analysis.equivariance import SHIFT_MODES, equivariance_report
from explorer.data.digits import digits_dataset, digits_indices
from explorer.guard import RequestRefused, human_bytes, memory_budget
from explorer.models.vision import build_vision_model, parameter_table

__all__ = [
    "EXPERIMENTS", "MODELS", "CANVAS", "BATCH", "EPOCHS", "LR_GRID", "SWEEP_SEEDS", "VAL_SIZE", "MAX_SHIFT", "SIZES",
    "MIN_STEPS", "OOD_TEST_PLACEMENTS", "RESULT_FILES", "RESULTS_FILE", "RETRAIN_COMMAND", "default_head_to_head_dir",
    "train", "training_memory", "accuracy", "evaluate", "aggregate", "interval", "crossings", "run_sweep",
    "chosen_lrs", "run_equivariance", "run_data_efficiency", "run_ood_position", "load_results", "write_model_card",
    "load_head_to_head", "run_experiment", "main",
]

EXPERIMENTS = ("sweep", "equivariance", "data_efficiency", "ood_position")
# shipped name -> (build_vision_model name, options besides image_size)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "cnn": ("cnn", {}),
    "vit": ("vit", {}),
    "vit_nopos": ("vit", {"positions": "none"}),
    "hybrid": ("hybrid", {}),
    "se_cnn": ("se_cnn", {}),
}
LR_FROM = {"vit_nopos": "vit"}  # models that take another's swept rate (the two ViTs differ only in positions)
CANVAS = 24          # digits (8 x 8) centred at rows/cols 8..15: shifts up to 8 keep them in frame
PLACEMENT = "centre"
DATA_SEED = 0        # digits_dataset seed (class-balanced order; the centre placement does not depend on it)
BATCH = 64
EPOCHS = 16
LR_GRID = (1e-3, 3e-3, 1e-2)
SWEEP_SEEDS = (0, 1, 2)
VAL_SIZE = 270       # last 270 of the 1347 training images (class-balanced: 27 per class) validate the sweep
MAX_SHIFT = 4
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
RESULT_FILES = {"sweep": "sweep.json", "equivariance": "equivariance.json",
                "data_efficiency": "data_efficiency.json", "ood_position": "ood_position.json"}
RESULTS_FILE = RESULT_FILES["equivariance"]  # the one with the shipped weights' entries
RETRAIN_COMMAND = "python -m explorer.train.head_to_head"
METRICS = ("feature_error", "feature_error_cropped", "logit_error", "prediction_flips")
# two-sided 95 % quantiles of Student's t (any statistics table), by degrees of freedom
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def default_head_to_head_dir() -> Path:
    """``assets/head_to_head`` of the repository (next to the ``explorer`` package)."""
    return Path(explorer.__file__).resolve().parents[1] / "assets" / "head_to_head"


def _check_name(name: object) -> str:
    return check_choice("name", name, tuple(MODELS))  # type: ignore[return-value]


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


def _mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (n - 1; 0.0 for a single value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


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


def interval(values: list[float]) -> dict[str, Any]:
    """Mean, sample std (n - 1) and the two-sided 95 % Student-t interval of the mean (``[mean, mean]`` for one value).

    Returns:
        ``{"mean", "std", "ci95": [low, high], "n"}``.
    """
    if not values:
        raise ValueError("values must not be empty")
    stat = _mean_std(list(values))
    k = len(values)
    half = T_975[k - 1] * stat["std"] / math.sqrt(k) if k > 1 else 0.0
    return {**stat, "ci95": [stat["mean"] - half, stat["mean"] + half], "n": k}


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


def _check_seeds(seeds: object) -> list[int]:
    if (not isinstance(seeds, (list, tuple)) or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)):
        raise ValueError(f"seeds must be a non-empty list of ints >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must not repeat, got {seeds!r}")
    if len(seeds) > len(T_975) + 1:
        raise ValueError(f"seeds must be at most {len(T_975) + 1}, got {len(seeds)}")
    return list(seeds)


def _check_names(names: object, allowed: tuple[str, ...] = tuple(MODELS)) -> list[str]:
    if names is None:
        return list(allowed)
    if not isinstance(names, (list, tuple)) or not names or any(n not in allowed for n in names):
        raise ValueError(f"names must be a non-empty list from {allowed}, got {names!r}")
    return list(names)


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


def load_results(experiment: str, folder: str | Path | None = None) -> dict[str, Any]:
    """The shipped results of one of :data:`EXPERIMENTS` (``assets/head_to_head/<experiment>.json``).

    Raises:
        ValueError: unknown ``experiment`` or an unreadable file. FileNotFoundError: not run yet (says the command).
    """
    check_choice("experiment", experiment, EXPERIMENTS)
    folder = default_head_to_head_dir() if folder is None else Path(folder)
    path = folder / RESULT_FILES[experiment]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `{RETRAIN_COMMAND} {experiment} --out {folder}`")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} cannot be read ({error})") from error


def _fmt(stat: dict[str, float], pct: bool = False) -> str:
    if pct:
        return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def _mean_over(results: dict, model: str, mode: str, metric: str, aligned: bool | None = None) -> float:
    vals = [r[metric]["mean"] for r in results["aggregates"]["equivariance"]
            if r["model"] == model and r["mode"] == mode and (aligned is None or r["aligned"] == aligned)]
    return statistics.fmean(vals) if vals else math.nan


def _mean_axis(res: dict, model: str, axis: int) -> float:
    """Mean over shifts along one axis (0: horizontal, ``shift == [0, s]``; 1: vertical) of the circular logit change."""
    return statistics.fmean(r["logit_error"]["mean"] for r in res["aggregates"]["equivariance"]
                            if r["model"] == model and r["mode"] == "circular" and r["shift"][axis] == 0)


def _pct_ci(stat: dict[str, Any]) -> str:
    low, high = stat["ci95"]
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _sweep_section(sweep: dict) -> list[str]:
    grid = sweep["grid"]
    lines = ["## Learning rates (`sweep.json`)", "",
             f"`{RETRAIN_COMMAND} sweep` ({sweep['total_seconds']:.0f} s): every rate x seeds "
             f"{', '.join(map(str, sweep['seeds']))}, trained on the first {sweep['data']['fit']} training images "
             f"and scored on the last {sweep['data']['val']} (27 per class); the test split was not used for any "
             f"choice. Rule: {sweep['rule']}. " + "".join(f"`{m}` uses `{s}`'s rate. " for m, s in
                                                            sweep["lr_from"].items()), "",
             "| model | " + " | ".join(f"lr {lr:g}: val. % mean ± std (worst seed)" for lr in grid) + " | chosen |",
             "|---|" + "---|" * (len(grid) + 1)]
    for name, rates in sweep["results"].items():
        cells = [f"{100 * rates[repr(lr)]['mean']:.1f} ± {100 * rates[repr(lr)]['std']:.1f} "
                 f"({100 * rates[repr(lr)]['worst']:.1f})" for lr in grid]
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {sweep['chosen'][name]:g} |")
    failed = [f"`{n}` lr {lr} seed {s} ({100 * r['val_accuracy']:.0f} %)" for n, rates in sweep["results"].items()
              for lr, entry in rates.items() for s, r in entry["per_seed"].items() if r["val_accuracy"] < 0.5]
    if failed:
        lines += ["", "Runs that did not train (validation accuracy below 50 %; chance is 10 %): " + ", ".join(failed)
                  + "."]
    edge = [f"`{n}`" for n in sweep["results"] if sweep["chosen"][n] == max(grid)]
    if edge:
        lines += ["", f"{', '.join(edge)} chose the largest rate of the grid: a larger one might have done better, "
                  "so their accuracies may understate what the architecture can reach in this budget."]
    return lines + [""]


def _equivariance_section(res: dict) -> list[str]:
    names = list(res["models"])
    agg = res["aggregates"]
    lines = [
        "## Trained models and translation equivariance (`equivariance.json`, weights)", "",
        f"`{RETRAIN_COMMAND} equivariance --seeds {' '.join(map(str, res['seeds']))} --epochs "
        f"{res['training']['epochs']}` ({res['total_seconds']:.0f} s): digits in the **centre of the {CANVAS} x "
        f"{CANVAS} canvas** (rows/cols 8-15), so a circular shift of up to 8 px gives the same image as a zero-filled "
        f"one; whole training split ({res['data']['train']} images), Adam with a one-cycle schedule (peak = the "
        f"swept lr), batch {BATCH}, {res['training']['epochs']} epochs, cross-entropy, no augmentation; seeded init "
        f"and shuffling, {res['threads']} CPU threads, deterministic algorithms "
        f"{'on' if res['deterministic_algorithms'] else 'off'}, torch {res['torch_version']}. The weights shipped "
        "are seed 0's; `explorer.train.head_to_head.load_head_to_head(name)` loads them.", "",
        f"| model | class | options | parameters | lr | test accuracy % (mean ± std, {len(res['seeds'])} seeds) | "
        "seed-0 weights |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in names:
        m = res["models"][n]
        opts = ", ".join(f"{k}={v!r}" for k, v in m["options"].items())
        run = res["per_seed"][n][str(m["weights_seed"])]
        lines.append(f"| `{n}` | {m['class']} | {opts} | {m['parameters']} | {m['lr']:g} | "
                     f"{_fmt(agg['accuracy'][n], pct=True)} | {run['correct']}/{run['n']} |")
    lines += [
        "", "Standard deviations are sample standard deviations over the seeds (n - 1). Parameter counts are at "
        f"{CANVAS} x {CANVAS} (the ViTs' position embeddings grow with the canvas).", "",
        "Relative feature error `||f(Sx) - S'f(x)|| / ||f(x)||` (`features`: the last map before pooling; for the ViTs",
        "the patch tokens), relative logit change and share of flipped predictions, for horizontal shifts by s px. "
        "The CNNs' feature stride is 2 (odd shifts are not aligned), the ViTs' 4 (only s = 4 is aligned): a flagged",
        "shift is compared with the best nearby whole-cell shift. Mean relative logit change, horizontal vs vertical "
        "shifts (circular; every row in the JSON): " + ", ".join(
            f"`{n}` {_mean_axis(res, n, 0):.3f} vs {_mean_axis(res, n, 1):.3f}" for n in names) + ". In",
        "zeros mode the feature error shown is the cropped one (margin 0: it still includes border effects beyond",
        "the shift).", "",
    ]
    shifts = [[0, s] for s in range(1, MAX_SHIFT + 1)]
    for mode in SHIFT_MODES:
        feat = "feature_error" if mode == "circular" else "feature_error_cropped"
        lines += [f"**{mode}** — cells: feature error / logit error / flips %", "",
                  "| model | " + " | ".join(f"s={s[1]}" for s in shifts) + " |", "|---|" + "---|" * len(shifts)]
        for n in names:
            cells = []
            for s in shifts:
                r = next(r for r in agg["equivariance"] if r["model"] == n and r["mode"] == mode and r["shift"] == s)
                cells.append(f"{_fmt(r[feat])} / {_fmt(r['logit_error'])} / "
                             f"{_fmt(r['prediction_flips'], pct=True)}")
            lines.append(f"| `{n}` | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _data_efficiency_section(res: dict) -> list[str]:
    sizes, names = res["sizes"], res["models"]
    lines = [
        "## Data efficiency (`data_efficiency.json`)", "",
        f"`{RETRAIN_COMMAND} data_efficiency --seeds {' '.join(map(str, res['seeds']))}` "
        f"({res['total_seconds']:.0f} s): centred digits, the first n of each seed's class-balanced order of the "
        "training split (nested across n, different images per seed; every model sees the same images for a given "
        f"seed and n), at least {res['training']['min_steps']} optimiser steps (epochs per n: "
        + ", ".join(f"{k}: {v}" for k, v in res["training"]["epochs"].items()) + "), the swept learning rates; "
        "tested on all 450 test images. Cells: test accuracy %, mean ± std [95 % t-interval] over "
        f"{len(res['seeds'])} seeds.", "",
        "| model | " + " | ".join(f"n = {k}" for k in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for n in names:
        lines.append(f"| `{n}` | " + " | ".join(_pct_ci(p) for p in res["curves"][n]) + " |")
    lines += ["", "Paired differences (same seed, same images), accuracy points of the first minus the second model, "
              "mean [95 % interval]; **bold** where the interval excludes 0:", "",
              "| pair | " + " | ".join(f"n = {k}" for k in sizes) + " | curves cross |", "|---|" + "---|" * (len(sizes) + 1)]
    for pair in res["crossings"]:
        cells = []
        for d in pair["differences"]:
            text = f"{100 * d['mean']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]"
            cells.append(f"**{text}**" if d["leader"] else text)
        cross = "; ".join(
            f"between n = {c['between'][0]} and {c['between'][1]} (≈ {c['estimate']:.0f}; per seed: "
            + ", ".join("—" if e is None else f"{e:.0f}" for e in c["seed_estimates"])
            + f"; {c['from_leader']} ahead before, {c['to_leader']} after)" for c in pair["crossings"]) or "no"
        verdict = " — supported: each side's lead excludes 0" if pair["supported"] else (
            " — not supported by the intervals" if pair["crossings"] else "")
        lines.append(f"| `{pair['a']}` − `{pair['b']}` | " + " | ".join(cells) + f" | {cross}{verdict} |")
    return lines + [""]


def _ood_section(res: dict) -> list[str]:
    places = res["data"]["test_placements"]
    lines = [
        "## Out-of-distribution position (`ood_position.json`)", "",
        f"`{RETRAIN_COMMAND} ood_position --seeds {' '.join(map(str, res['seeds']))}` ({res['total_seconds']:.0f} s): "
        f"trained on the training digits placed in the **{res['data']['train_placement']} half** (columns 0-4, any "
        "row; positions drawn per seed), tested on the test digits in each placement (centre: columns 8-15, "
        f"straddling the halves; right: columns 12-16, never seen), {res['training']['epochs']} epochs, the swept "
        "rates. Cells: test accuracy %, mean ± std [95 % t-interval] over seeds; drop = left minus right, per seed.",
        "", "| model | " + " | ".join(places) + " | drop (points) |", "|---|" + "---|" * (len(places) + 1)]
    for n in res["models"]:
        s = res["summary"][n]
        drop = s["drop"]
        lines.append(f"| `{n}` | " + " | ".join(_pct_ci(s[p]) for p in places) +
                     f" | {100 * drop['mean']:.1f} [{100 * drop['ci95'][0]:.1f}, {100 * drop['ci95'][1]:.1f}] |")
    return lines + [""]


def _efficiency_claims(res: dict) -> list[str]:
    out = []
    pairs = {(p["a"], p["b"]): p for p in res["crossings"]}

    def pair_text(a: str, b: str, claim: str) -> str | None:
        p = pairs.get((a, b)) or pairs.get((b, a))
        if p is None:
            return None
        sign = 1 if p["a"] == a else -1
        cells, ahead, behind = [], [], []
        for d in p["differences"]:
            mean, (low, high) = sign * d["mean"], sorted(sign * x for x in d["ci95"])
            text = f"n = {d['size']}: {100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
            cells.append(f"**{text}**" if low > 0 or high < 0 else text)
            (ahead if low > 0 else behind if high < 0 else []).append(str(d["size"]))
        verdict = (f"`{a}` ahead with an interval excluding 0 at n = {', '.join(ahead)}" if ahead else
                   f"no size where `{a}` is ahead with an interval excluding 0")
        if behind:
            verdict += f"; behind at n = {', '.join(behind)}"
        cross = "; ".join(f"the mean curves cross between n = {c['between'][0]} and {c['between'][1]} "
                          f"(≈ {c['estimate']:.0f})" for c in p["crossings"])
        if cross:
            cross += (", a crossing the intervals support" if p["supported"] else
                      ", but no crossing is supported by the intervals")
        return (f"- *{claim}* (`{a}` − `{b}`, points): " + "; ".join(cells) + f". **{verdict}**"
                + (f"; {cross}" if cross else "") + ".")

    for a, b, claim in (("cnn", "vit", "Convolution needs less data than attention"),
                        ("hybrid", "vit", "A conv stem helps attention"),
                        ("hybrid", "cnn", "A hybrid beats the CNN"),
                        ("se_cnn", "cnn", "Channel attention helps a CNN")):
        line = pair_text(a, b, claim)
        if line:
            out.append(line)
    return out


def _ood_claims(res: dict) -> list[str]:
    out = []
    s = res["summary"]
    for name in res["models"]:
        left, right, drop = s[name]["left"], s[name]["right"], s[name]["drop"]
        out.append(f"- *Out of position, `{name}`*: {100 * left['mean']:.1f} % on the left half it was trained on, "
                   f"{100 * right['mean']:.1f} % on the right half; drop {100 * drop['mean']:+.1f} points "
                   f"[{100 * drop['ci95'][0]:+.1f}, {100 * drop['ci95'][1]:+.1f}]"
                   + (" (an interval excluding 0)." if drop["ci95"][0] > 0 or drop["ci95"][1] < 0 else
                      " (the interval includes 0)."))
    if {"cnn", "vit"} <= set(s):
        c, v = s["cnn"], s["vit"]
        reading = ("- Reading: the claim that convolution transfers to unseen positions and attention with learned "
                   "positions does not is ")
        if v["left"]["mean"] < 0.9 * c["left"]["mean"]:
            reading += (f"**not tested fairly by this data**: with digits anywhere in the left half the ViT reaches "
                        f"only {100 * v['left']['mean']:.0f} % even there ({res['training']['epochs']} epochs; the "
                        f"CNN {100 * c['left']['mean']:.0f} %) although it fits its training images (final loss "
                        f"at most {max(r['final_train_loss'] for r in res['per_seed']['vit'].values()):.2f}): "
                        "what it fails at first is generalising from 1347 jittered images — the data-hunger half "
                        "of the claim — and its drop on the right half "
                        f"({100 * v['drop']['mean']:.1f} points) "
                        + ("has an interval excluding 0." if v["drop"]["ci95"][0] > 0 else "is within noise.")
                        + " The CNN's global average pooling over a weight-shared map makes the right half "
                        f"nearly free ({100 * c['drop']['mean']:+.1f} points).")
        elif c["drop"]["ci95"][1] < v["drop"]["ci95"][0]:
            reading += "supported: the CNN's drop is smaller, with intervals apart."
        else:
            reading += "not supported: the intervals of the two drops overlap."
        out.append(reading)
    return out


def write_model_card(folder: str | Path | None = None) -> Path:
    """(Re)write ``MODEL_CARD.md`` in ``folder`` from whichever result files are there; returns its path."""
    folder = default_head_to_head_dir() if folder is None else Path(folder)
    res = {e: json.loads((folder / f).read_text()) for e, f in RESULT_FILES.items() if (folder / f).is_file()}
    lines = [
        "# Head-to-head image classifiers: convolution vs attention on the same digits", "",
        "Five small classifiers from `explorer.models.vision` (a CNN, a ViT with and without position embeddings, a",
        "conv-stem hybrid and a squeeze-excitation CNN, 26.7-29.0 k parameters) trained on the same digits by",
        "`explorer.train.head_to_head`. This card is generated from the JSON files next to it (every per-seed number",
        "is there) by `write_model_card`; each section names the command that regenerates its file. "
        f"Run `{RETRAIN_COMMAND} sweep` first: the other commands read the learning rates it chose.", "",
        "## Data", "",
        "scikit-learn's 8 x 8 handwritten digits (`explorer.data.digits`, read from the copy bundled with",
        "scikit-learn), fixed stratified split of 1347 train / 450 test images, values scaled to [0, 1] and pasted",
        f"on a zero {CANVAS} x {CANVAS} canvas. Real data with a fixed split, small enough to train every model and",
        "seed on 2 CPU cores; the position of the digit is the controlled variable (centre for the equivariance and",
        "data-efficiency runs, left/right halves for the out-of-position run). The cross-modal lesson's shapes world",
        "is not used: its generator places objects at random (no half-image control), and one dataset keeps the",
        "learning rates and models comparable across the experiments.", "",
    ]
    if "sweep" in res:
        lines += _sweep_section(res["sweep"])
    if "equivariance" in res:
        lines += _equivariance_section(res["equivariance"])
    if "data_efficiency" in res:
        lines += _data_efficiency_section(res["data_efficiency"])
    if "ood_position" in res:
        lines += _ood_section(res["ood_position"])
    lines += ["## What the data supports", ""]
    if "equivariance" in res:
        lines += _claims(res["equivariance"])
    if "data_efficiency" in res:
        lines += _efficiency_claims(res["data_efficiency"])
    if "ood_position" in res:
        lines += _ood_claims(res["ood_position"])
    lines += [
        "", "## Limitations", "",
        "- Tiny data (1347 training images of 8 x 8 digits on an empty canvas), tiny models (about 27-29 k "
        "parameters), short training, three seeds: a t-interval from three seeds is wide (t = 4.30), and "
        "differences of a few tenths of a percent are noise.",
        "- Learning rates were swept once, at the full training size with centred digits, and reused for the small "
        "training sets and the out-of-position run; a model whose best rate changes with n is disadvantaged there.",
        "- Feature errors are relative to each model's own feature map; maps of different models live in different "
        "spaces and have different strides (2 vs 4), so compare them as orders of magnitude, and compare logit "
        "errors and flips (same space) for the head to head.",
    ]
    if "equivariance" in res:
        lines.append(_training_note(res["equivariance"], list(res["equivariance"]["models"])))
    lines += ["- Integer shifts only, 1-4 px along one axis at a time; no rotations, scalings or sub-pixel shifts.", ""]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path


def _training_note(res: dict, names: list[str]) -> str:
    """The limitation training length imposes, from the measured final training losses (0.3 nats: undertrained)."""
    losses = {m: statistics.fmean(r["final_train_loss"] for r in res["per_seed"][m].values()) for m in names}
    text = (f"- Equivariance runs: {res['training']['epochs']} epochs (the command took {res['total_seconds']:.0f} s); mean "
            "final training loss " + ", ".join(f"`{m}` {v:.2f}" for m, v in losses.items()))
    slow = [m for m, v in losses.items() if v > 0.3]
    if slow:
        return text + (f": {', '.join(f'`{m}`' for m in slow)} undertrained, so those accuracies are not a verdict "
                       "on convolution vs attention on this data.")
    return text + ": every model fits its training set (loss < 0.3)."


def _claims(res: dict) -> list[str]:
    names = set(res["models"])
    out = []

    def mean(model: str, mode: str, metric: str, aligned: bool | None = None) -> float:
        return _mean_over(res, model, mode, metric, aligned)

    if {"cnn", "vit"} <= names:
        for mode in SHIFT_MODES:
            c, v = mean("cnn", mode, "logit_error"), mean("vit", mode, "logit_error")
            cf, vf = mean("cnn", mode, "prediction_flips"), mean("vit", mode, "prediction_flips")
            verdict = "less" if c < v else "**not** less"
            out.append(f"- *CNN vs ViT, {mode} shifts*: the CNN's logits change {verdict} than the ViT's (mean "
                       f"relative logit change over all 8 shifts {c:.3f} vs {v:.3f}; flips {100 * cf:.1f} % vs "
                       f"{100 * vf:.1f} %).")
    if {"vit", "vit_nopos"} <= names:
        for mode in SHIFT_MODES:
            feat = "feature_error" if mode == "circular" else "feature_error_cropped"
            a_p, a_n = mean("vit", mode, feat, True), mean("vit_nopos", mode, feat, True)
            u_p, u_n = mean("vit", mode, feat, False), mean("vit_nopos", mode, feat, False)
            l_p, l_n = mean("vit", mode, "logit_error"), mean("vit_nopos", mode, "logit_error")
            out.append(f"- *position embeddings, {mode} shifts*: ViT with learned positions vs without — feature "
                       f"error at the aligned shift (4 px = one patch) {a_p:.2e} vs {a_n:.2e}; at the unaligned "
                       f"shifts (1-3 px) {u_p:.3f} vs {u_n:.3f}; logit change {l_p:.3f} vs {l_n:.3f}.")
    if {"vit", "hybrid"} <= names:
        h, v = mean("hybrid", "circular", "logit_error"), mean("vit", "circular", "logit_error")
        out.append(f"- *conv stem*: mean relative logit change under circular shifts, hybrid {h:.3f} vs ViT {v:.3f}"
                   + (": the conv stem does not make the stride-4 patchify shift invariant." if h >= v * 0.9 else
                      ": the conv stem reduces it."))
    failed = [f"`{m}` seed {s} ({100 * r['accuracy']:.1f} %)" for m, seeds in res["per_seed"].items()
              for s, r in seeds.items() if r["accuracy"] < 0.5]
    if failed:
        out.append("- **Runs that did not train** (test accuracy below 50 %; chance is 10 %): " + ", ".join(failed)
                   + ". Their equivariance errors are those of an almost constant function and say little about the "
                   "architecture; they are kept in the means and standard deviations above (which is why those "
                   "models' standard deviations are large). The learning rate was the best mean over the sweep's three "
                   "seeds, on which every run at that rate trained: the failure comes back on the full split, so "
                   "the model is unstable at the rate its other seeds need.")
    if {"vit", "vit_nopos"} <= names:
        whole_n, whole_p = (mean(m, "circular", "feature_error", True) for m in ("vit_nopos", "vit"))
        part_n, part_p = (mean(m, "circular", "feature_error", False) for m in ("vit_nopos", "vit"))
        reading = [f"without position embeddings the ViT is {'exactly' if whole_n < 1e-4 else '**not** exactly'} "
                   f"equivariant to whole-patch (4 px) circular shifts, which permute its tokens (feature error "
                   f"{whole_n:.1e})"]
        if whole_p > 10 * max(whole_n, 1e-6):
            reading.append(f"learned positions break that ({whole_p:.2f})")
        if abs(part_p - part_n) <= 0.1 * max(part_p, part_n):
            reading.append(f"for 1-3 px shifts both ViTs are about as far from equivariant ({part_p:.2f} with "
                           f"positions, {part_n:.2f} without): there the patch grid (stride 4) is the cause, so "
                           "\"position embeddings are why the ViT is not equivariant\" holds for whole-patch shifts only")
        else:
            reading.append(f"for 1-3 px shifts the feature error is {part_p:.2f} with positions and {part_n:.2f} "
                           "without")
        out.append("- Reading: " + "; ".join(reading) + ".")
    if "cnn" in names:
        odd = mean("cnn", "circular", "feature_error", False)
        out.append(f"- The CNN (zero padding, one stride-2 max-pool) is {'not ' if odd > 1e-3 else ''}exactly "
                   f"equivariant at odd shifts (feature error {odd:.2f}): the max-pool's stride aliases them; "
                   "circular padding without pooling would make it exact (the sanity check in "
                   "`tests/analysis/test_equivariance.py`).")
    return out


def load_head_to_head(name: str, folder: str | Path | None = None,
                      experiment: str = "equivariance") -> tuple[nn.Module, dict[str, Any]]:
    """A shipped model (the first seed's weights, eval mode) and what is known about it.

    Args:
        name: a key of :data:`MODELS` (``"cnn"``, ``"vit"``, ``"vit_nopos"``, ``"hybrid"``, ``"se_cnn"``).
        folder: holding the result files and weights; default :func:`default_head_to_head_dir`.
        experiment: ``"equivariance"`` (trained on centred digits, ``<name>.safetensors``) or ``"ood_position"``
            (trained on digits in the left half, ``ood_<name>.safetensors``).

    Returns:
        ``(model, entry)``: ``entry`` is ``models[name]`` of ``equivariance.json`` (builder, options, lr,
        parameters, ...) plus, for ``"equivariance"``, ``accuracy`` (the weights' test accuracy and correct count)
        and ``accuracy_over_seeds`` (mean, std); for ``"ood_position"``, ``weights`` and ``weights_seed`` of that
        run and ``accuracy`` per test placement (``{"left": {accuracy, correct, n}, ...}``).

    Raises:
        ValueError: unknown ``name`` or ``experiment``, or a file that cannot be read / does not fit.
        FileNotFoundError: a missing file.
    """
    from safetensors.torch import load_file

    name = _check_name(name)
    check_choice("experiment", experiment, ("equivariance", "ood_position"))
    folder = default_head_to_head_dir() if folder is None else Path(folder)
    card = load_results("equivariance", folder)
    try:
        entry = dict(card["models"][name])
        model = build_vision_model(entry["builder"], seed=0, **entry["options"])
        if experiment == "equivariance":
            run = card["per_seed"][name][str(entry["weights_seed"])]
            entry["accuracy"] = {"accuracy": run["accuracy"], "correct": run["correct"], "n": run["n"]}
            entry["accuracy_over_seeds"] = card["aggregates"]["accuracy"][name]
        else:
            ood = load_results("ood_position", folder)
            entry["weights"], entry["weights_seed"] = ood["weights"][name], ood["weights_seed"]
            entry["lr"] = ood["training"]["lr"]["chosen"][name]
            run = ood["per_seed"][name][str(ood["weights_seed"])]
            entry["accuracy"] = {p: run[p] for p in ood["data"]["test_placements"]}
    except (KeyError, TypeError) as error:
        raise ValueError(f"{folder} has no usable {experiment} entry for {name!r} ({error!r})") from error
    weights = folder / entry["weights"]
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing; retrain with `{RETRAIN_COMMAND} {experiment} --out {folder}`")
    try:
        model.load_state_dict(load_file(weights))
    except (RuntimeError, OSError, ValueError) as error:
        raise ValueError(f"{weights} does not fit {name} ({error})") from error
    return model.eval(), entry


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
