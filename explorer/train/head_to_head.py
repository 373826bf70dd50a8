"""Train the head-to-head image classifiers and measure their translation equivariance.

``python -m explorer.train.head_to_head equivariance [--out assets/head_to_head] [--seeds 0 1 2] [--epochs N]``

Five models (:mod:`explorer.models.vision`: ``cnn``, ``vit``, ``hybrid``, ``se_cnn``, and ``vit_nopos``, the ViT
with ``positions="none"``) are trained on the digits (:mod:`explorer.data.digits`) placed in the centre of a
24 x 24 canvas, so that shifts of 1-4 pixels keep the digit in frame. Deterministic on CPU: seeded initialisation
(``build_vision_model(seed=...)``), seeded shuffling (a ``torch.Generator``), 2 threads,
``torch.use_deterministic_algorithms(True)``. Adam with a one-cycle schedule (``OneCycleLR``, peak = the chosen
learning rate), batch 64, a fixed number of epochs.

The learning rate of each model is chosen by a sweep with seed 0 on a validation split carved from the training
split (the last :data:`VAL_SIZE` images of its class-balanced order; the test split is never used to choose).
The chosen settings are then trained on the whole training split with every seed, and measured on the 450 test
images: accuracy and :func:`explorer.analysis.equivariance.equivariance_report` (shifts 1-4 along each axis,
circular and zeros modes). Writes ``equivariance.json`` (metadata, sweep, per-seed rows, aggregates), the seed-0
weights ``<name>.safetensors`` and ``MODEL_CARD.md`` into ``--out``. :func:`load_head_to_head` rebuilds a shipped
model.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
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
from explorer.analysis.equivariance import SHIFT_MODES, equivariance_report
from explorer.data.digits import digits_dataset
from explorer.models.vision import build_vision_model, parameter_table

__all__ = [
    "EXPERIMENTS", "MODELS", "CANVAS", "BATCH", "EPOCHS", "LR_GRID", "VAL_SIZE", "MAX_SHIFT", "RESULTS_FILE",
    "RETRAIN_COMMAND", "default_head_to_head_dir", "train", "accuracy", "evaluate", "aggregate",
    "run_equivariance", "load_head_to_head", "main",
]

EXPERIMENTS = ("equivariance",)
# shipped name -> (build_vision_model name, options besides image_size)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "cnn": ("cnn", {}),
    "vit": ("vit", {}),
    "vit_nopos": ("vit", {"positions": "none"}),
    "hybrid": ("hybrid", {}),
    "se_cnn": ("se_cnn", {}),
}
CANVAS = 24          # digits (8 x 8) centred at rows/cols 8..15: shifts up to 8 keep them in frame
PLACEMENT = "centre"
DATA_SEED = 0        # digits_dataset seed (class-balanced order; the centre placement does not depend on it)
BATCH = 64
EPOCHS = 16
LR_GRID = (1e-3, 3e-3, 1e-2)
VAL_SIZE = 270       # last 270 of the 1347 training images (class-balanced: 27 per class) validate the sweep
SWEEP_SEED = 0
MAX_SHIFT = 4
THREADS = 2
RESULTS_FILE = "equivariance.json"
RETRAIN_COMMAND = "python -m explorer.train.head_to_head equivariance"
METRICS = ("feature_error", "feature_error_cropped", "logit_error", "prediction_flips")


def default_head_to_head_dir() -> Path:
    """``assets/head_to_head`` of the repository (next to the ``explorer`` package)."""
    return Path(explorer.__file__).resolve().parents[1] / "assets" / "head_to_head"


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"name must be one of {tuple(MODELS)}, got {name!r}")
    return name


def _build(name: str, seed: int | None = None) -> nn.Module:
    kind, options = MODELS[_check_name(name)]
    return build_vision_model(kind, seed=seed, image_size=CANVAS, **options)


def _data(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return digits_dataset(split, canvas=CANVAS, placement=PLACEMENT, seed=DATA_SEED)


def train(name: str, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0, lr: float = 1e-3,
          epochs: int = EPOCHS, batch: int = BATCH) -> tuple[nn.Module, list[float]]:
    """Train model ``name`` (a key of :data:`MODELS`) with Adam on ``images``/``labels``.

    The initial weights come from ``build_vision_model(seed=seed)``; each epoch visits the images in an order drawn
    from a ``torch.Generator`` seeded with ``seed``. Torch's global generator is not used.

    Returns:
        ``(model in eval mode, mean training loss of each epoch)``.
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


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(explorer.__file__).resolve().parents[1],
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=Path(explorer.__file__).resolve().parents[1], capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def run_equivariance(out: Path, seeds: list[int], epochs: int = EPOCHS, names: list[str] | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """The whole experiment (sweep, training, measurement) -> the results dict; writes the files into ``out``."""
    from safetensors.torch import save_file

    names = list(MODELS) if names is None else [_check_name(n) for n in names]
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of ints >= 0, got {seeds!r}")
    start_all = time.perf_counter()
    log = (lambda *a: print(*a, flush=True)) if progress else (lambda *a: None)
    train_x, train_y = _data("train")
    test_x, test_y = _data("test")
    fit = slice(0, len(train_x) - VAL_SIZE)
    val = slice(len(train_x) - VAL_SIZE, len(train_x))

    sweep: dict[str, Any] = {}
    for name in names:
        sweep[name] = {}
        for lr in LR_GRID:
            t = time.perf_counter()
            model, losses = train(name, train_x[fit], train_y[fit], seed=SWEEP_SEED, lr=lr, epochs=epochs)
            acc, _ = accuracy(model, train_x[val], train_y[val])
            sweep[name][repr(lr)] = {"val_accuracy": acc, "final_train_loss": losses[-1]}
            log(f"sweep {name:10s} lr {lr:g}: val acc {acc:.3f} ({time.perf_counter() - t:.1f} s)")
    # best validation accuracy; ties go to the smaller learning rate (grid order)
    chosen = {name: max(LR_GRID, key=lambda lr: (sweep[name][repr(lr)]["val_accuracy"], -lr)) for name in names}

    out.mkdir(parents=True, exist_ok=True)
    per_seed: dict[str, dict[str, Any]] = {}
    train_seconds: dict[str, list[float]] = {}
    for name in names:
        per_seed[name], train_seconds[name] = {}, []
        for seed in seeds:
            t = time.perf_counter()
            model, losses = train(name, train_x, train_y, seed=seed, lr=chosen[name], epochs=epochs)
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
            "feature_stride": model.feature_stride, "lr": chosen[name],
            "weights": f"{name}.safetensors", "weights_seed": seeds[0],
        }
    results = {
        "experiment": "equivariance",
        "command": " ".join(["python -m explorer.train.head_to_head", *sys.argv[1:]]) if progress else None,
        "git_commit": _git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "data": {"dataset": "sklearn digits via explorer.data.digits", "canvas": CANVAS, "placement": PLACEMENT,
                 "data_seed": DATA_SEED, "train": len(train_x), "test": len(test_x),
                 "sweep_fit": fit.stop - fit.start, "sweep_val": VAL_SIZE,
                 "sweep_val_note": "the last VAL_SIZE images of the training split's class-balanced order"},
        "training": {"optimizer": "Adam", "schedule": "OneCycleLR (peak = the chosen lr, torch defaults otherwise)",
                     "batch": BATCH, "epochs": epochs, "loss": "cross entropy"},
        "seeds": seeds,
        "lr_sweep": {"grid": list(LR_GRID), "seed": SWEEP_SEED, "results": sweep, "chosen": chosen,
                     "rule": "best validation accuracy, ties to the smaller lr"},
        "equivariance_settings": {"max_shift": MAX_SHIFT, "modes": list(SHIFT_MODES), "margin": 0,
                                  "images": f"all {len(test_x)} test images"},
        "models": models,
        "parameter_table": [params[MODELS[n][0]] | {"model": n} for n in names]
        if all(MODELS[n][0] in params for n in names) else list(params.values()),
        "train_seconds": train_seconds,
        "per_seed": per_seed,
        "aggregates": aggregate(per_seed),
        "std": "sample standard deviation over seeds (n - 1)",
    }
    # vit_nopos has no position embedding, so parameter_table's vit row overstates it: count it directly
    for row in results["parameter_table"]:
        if row["model"] == "vit_nopos":
            row["parameters"] = models["vit_nopos"]["parameters"]
            row["Embedding"] = row.get("Embedding", 0) - (models["vit"]["parameters"] - row["parameters"]
                                                          if "vit" in models else 0)
    results["total_seconds"] = round(time.perf_counter() - start_all, 1)
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=1) + "\n")
    _write_markdown(out / "MODEL_CARD.md", results)
    log(f"done in {results['total_seconds']:.0f} s")
    return results


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


def _write_markdown(path: Path, res: dict) -> None:
    names = list(res["models"])
    agg = res["aggregates"]
    lines = [
        "# Head-to-head image classifiers: trained models and translation equivariance", "",
        "Five small classifiers from `explorer.models.vision` trained on the same digits, and measured for how their",
        "features and predictions follow a translated input (`explorer.analysis.equivariance.equivariance_report`).",
        "Results, settings and every per-seed number: `equivariance.json`; seed-0 weights: `<model>.safetensors`",
        "(load with `explorer.train.head_to_head.load_head_to_head(name)`).", "",
        "## Data", "",
        f"scikit-learn's 8 x 8 digits (`explorer.data.digits`), fixed stratified split: {res['data']['train']} "
        f"train / {res['data']['test']} test, each digit placed in the **centre of a {CANVAS} x {CANVAS} canvas** "
        f"(rows/cols 8-15), so shifts of up to 8 px keep it in frame and a circular shift of up to 8 px gives the "
        "same image as a zero-filled one (only what the model does with its border differs).",
        f"Learning rates were chosen on a validation split carved from the training split (the last "
        f"{res['data']['sweep_val']} images of its class-balanced order, 27 per class; trained on the first "
        f"{res['data']['sweep_fit']}); the test split was not used for any choice.", "",
        "## Training", "",
        f"`{RETRAIN_COMMAND} --seeds {' '.join(map(str, res['seeds']))} --epochs {res['training']['epochs']}`: "
        f"Adam with a one-cycle schedule (peak = the lr below), batch {BATCH}, {res['training']['epochs']} epochs, "
        "cross-entropy, no augmentation; "
        f"seeded init and shuffling, {res['threads']} CPU threads, deterministic algorithms "
        f"{'on' if res['deterministic_algorithms'] else 'off'}, torch {res['torch_version']}. Whole command "
        f"(sweep + {len(res['seeds'])} seeds x {len(names)} models + measurements): {res['total_seconds']:.0f} s.", "",
        "| model | class | options | parameters | lr (sweep: val. accuracy at " +
        ", ".join(f"{lr:g}" for lr in res["lr_sweep"]["grid"]) + ") | test accuracy % (mean ± std, "
        f"{len(res['seeds'])} seeds) |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        m = res["models"][n]
        sweep = ", ".join(f"{res['lr_sweep']['results'][n][repr(lr)]['val_accuracy']:.3f}"
                          for lr in res["lr_sweep"]["grid"])
        opts = ", ".join(f"{k}={v!r}" for k, v in m["options"].items())
        lines.append(f"| `{n}` | {m['class']} | {opts} | {m['parameters']} | {m['lr']:g} ({sweep}) | "
                     f"{_fmt(agg['accuracy'][n], pct=True)} |")
    lines += [
        "", "Standard deviations are sample standard deviations over the seeds (n - 1). Parameter counts are at "
        f"{CANVAS} x {CANVAS} (the ViTs' position embeddings grow with the canvas; `parameter_table(image_size="
        f"{CANVAS})`).", "",
        "## Translation equivariance (test images, mean ± std over seeds)", "",
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
    lines += ["## What the data supports", ""] + _claims(res) + [
        "", "## Limitations", "",
        "- Tiny data (1347 training images of 8 x 8 digits on an empty canvas), tiny models (about 27-29 k "
        "parameters), short training, three seeds: differences of a few tenths of a percent in accuracy are noise.",
        "- The digits are always centred in training: nothing taught any model to be invariant; what is measured "
        "is what the architecture (and training) gives for free.",
        "- Feature errors are relative to each model's own feature map; maps of different models live in different "
        "spaces and have different strides (2 vs 4), so compare them as orders of magnitude, and compare logit "
        "errors and flips (same space) for the head to head.",
        _training_note(res, names),
        "- Integer shifts only, 1-4 px along one axis at a time; no rotations, scalings or sub-pixel shifts.", "",
    ]
    path.write_text("\n".join(lines))


def _training_note(res: dict, names: list[str]) -> str:
    """The limitation training length imposes, from the measured final training losses (0.3 nats: undertrained)."""
    losses = {m: statistics.fmean(r["final_train_loss"] for r in res["per_seed"][m].values()) for m in names}
    text = (f"- {res['training']['epochs']} epochs (the whole command stays under 10 minutes on 2 CPU cores); mean "
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
                   "models' standard deviations are large). The learning rate was chosen on seed 0 only.")
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


def load_head_to_head(name: str, folder: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A shipped model (seed-0 weights, eval mode) and its entry of ``equivariance.json``.

    Args:
        name: a key of :data:`MODELS` (``"cnn"``, ``"vit"``, ``"vit_nopos"``, ``"hybrid"``, ``"se_cnn"``).
        folder: holding ``equivariance.json`` and ``<name>.safetensors``; default :func:`default_head_to_head_dir`.

    Returns:
        ``(model, entry)``: ``entry`` is ``models[name]`` of the JSON (builder, options, lr, parameters, ...) plus
        ``accuracy`` (the weights' test accuracy and correct count) and ``accuracy_over_seeds`` (mean, std).

    Raises:
        ValueError: unknown ``name``, or a file that cannot be read / does not fit. FileNotFoundError: a missing file.
    """
    from safetensors.torch import load_file

    name = _check_name(name)
    folder = default_head_to_head_dir() if folder is None else Path(folder)
    card_path = folder / RESULTS_FILE
    if not card_path.is_file():
        raise FileNotFoundError(f"{card_path} is missing; retrain with `{RETRAIN_COMMAND} --out {folder}`")
    try:
        card = json.loads(card_path.read_text())
        entry = dict(card["models"][name])
        model = build_vision_model(entry["builder"], seed=0, **entry["options"])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{card_path} has no usable entry for {name!r} ({error})") from error
    weights = folder / entry["weights"]
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing; retrain with `{RETRAIN_COMMAND} --out {folder}`")
    try:
        model.load_state_dict(load_file(weights))
    except (RuntimeError, OSError, ValueError) as error:
        raise ValueError(f"{weights} does not fit {name} ({error})") from error
    run = card["per_seed"][name][str(entry["weights_seed"])]
    entry["accuracy"] = {"accuracy": run["accuracy"], "correct": run["correct"], "n": run["n"]}
    entry["accuracy_over_seeds"] = card["aggregates"]["accuracy"][name]
    return model.eval(), entry


def run_experiment(experiment: str, out: Path | None = None, seeds: list[int] | None = None,
                   epochs: int = EPOCHS, progress: bool = True) -> dict[str, Any]:
    """Run one of :data:`EXPERIMENTS` (ValueError naming ``experiment`` otherwise)."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {EXPERIMENTS}, got {experiment!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    torch.set_num_threads(THREADS)
    try:
        torch.use_deterministic_algorithms(True)
    except RuntimeError:  # pragma: no cover - recorded in the JSON
        pass
    return run_equivariance(default_head_to_head_dir() if out is None else Path(out),
                            [0, 1, 2] if seeds is None else list(seeds), epochs=epochs, progress=progress)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help=f"one of {EXPERIMENTS}")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default assets/head_to_head)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args(argv)
    return run_experiment(args.experiment, args.out, args.seeds, args.epochs)


if __name__ == "__main__":
    main()
