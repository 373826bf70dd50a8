"""The shipped head-to-head image classifiers and their results: what they are, where they lie, how to load them.

Five small classifiers (:mod:`explorer.models.vision`: ``cnn``, ``vit``, ``vit_nopos`` -- the ViT with
``positions="none"`` --, ``hybrid``, ``se_cnn``) trained on the digits (:mod:`explorer.data.digits`) on a
:data:`CANVAS` x :data:`CANVAS` canvas by ``python -m explorer.train.head_to_head`` into ``assets/head_to_head``:
one JSON file per experiment (:data:`RESULT_FILES`), the seed-0 weights ``<name>.safetensors`` (centred digits) and
``ood_<name>.safetensors`` (digits in the left half), and ``MODEL_CARD.md``. :func:`load_results` reads one result
file, :func:`load_head_to_head` a model. Loading never imports the training code (``explorer.train.head_to_head``
imports and re-exports these names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

import explorer
from explorer._checks import check_choice
from explorer.models.vision import build_vision_model
from explorer.models.shipped import load_weights, read_result

__all__ = [
    "EXPERIMENTS", "MODELS", "CANVAS", "PLACEMENT", "DATA_SEED", "MAX_SHIFT", "RESULT_FILES", "RESULTS_FILE",
    "RETRAIN_COMMAND", "default_head_to_head_dir", "load_results", "load_head_to_head",
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
CANVAS = 24          # digits (8 x 8) centred at rows/cols 8..15: shifts up to 8 keep them in frame
PLACEMENT = "centre"
DATA_SEED = 0        # digits_dataset seed (class-balanced order; the centre placement does not depend on it)
MAX_SHIFT = 4
RESULT_FILES = {"sweep": "sweep.json", "equivariance": "equivariance.json",
                "data_efficiency": "data_efficiency.json", "ood_position": "ood_position.json"}
RESULTS_FILE = RESULT_FILES["equivariance"]  # the one with the shipped weights' entries
RETRAIN_COMMAND = "python -m explorer.train.head_to_head"


def default_head_to_head_dir() -> Path:
    """``assets/head_to_head`` of the repository (next to the ``explorer`` package)."""
    return Path(explorer.__file__).resolve().parents[1] / "assets" / "head_to_head"


def _check_name(name: object) -> str:
    return check_choice("name", name, tuple(MODELS))  # type: ignore[return-value]


def load_results(experiment: str, folder: str | Path | None = None) -> dict[str, Any]:
    """The shipped results of one of :data:`EXPERIMENTS` (``assets/head_to_head/<experiment>.json``).

    Raises:
        ValueError: unknown ``experiment`` or an unreadable file. FileNotFoundError: not run yet (says the command).
    """
    check_choice("experiment", experiment, EXPERIMENTS)
    folder = default_head_to_head_dir() if folder is None else Path(folder)
    return read_result(folder / RESULT_FILES[experiment], f"{RETRAIN_COMMAND} {experiment} --out {folder}")


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
    return load_weights(model, folder / entry["weights"], f"{RETRAIN_COMMAND} {experiment} --out {folder}"), entry
