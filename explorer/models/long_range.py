"""The shipped long-range models and results: what they are, where they lie, how to load and score them.

The three sequence classifiers of the long-range lesson (:mod:`explorer.models.sequence`: a residual CNN, the same
CNN dilated, a causal attention model), trained by ``python -m explorer.train.long_range`` into
``assets/long_range``: ``long_range.json`` (every per-seed number, the statistics, metadata), the seed-0 weights
``<name>.safetensors`` and ``MODEL_CARD.md``. :func:`load_long_range` reads the JSON, :func:`load_long_range_model`
a model, :func:`evaluation_set` rebuilds the fixed, seeded test set and :func:`accuracy_by_distance` scores a model
on it. Loading never imports the training code (``explorer.train.long_range`` imports and re-exports these names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

import explorer
from explorer._checks import check_choice
from explorer.data.sequences import SequenceBatch, long_range_test_set
from explorer.models.sequence import SEQUENCE_MODELS, build_sequence_model
from explorer.models.shipped import load_weights, read_result

__all__ = [
    "MODELS", "TEST_DISTANCES", "TEST_PER_DISTANCE", "TEST_SEED", "RESULTS_FILE", "RETRAIN_COMMAND",
    "default_long_range_dir", "evaluation_set", "accuracy_by_distance", "load_long_range", "load_long_range_model",
]

MODELS = SEQUENCE_MODELS  # ("cnn", "dilated_cnn", "attention")
# test distances: powers of two, and both sides of each CNN's field edge (r - 1 is the last d a window of r holds)
TEST_DISTANCES = (1, 2, 4, 6, 8, 10, 11, 12, 16, 24, 32, 48, 56, 62, 63, 64, 96, 128, 192, 256)
TEST_PER_DISTANCE = 256
TEST_SEED = 1000  # distance i of the test set is drawn with seed 1000 + i; training streams use the run's seed
RESULTS_FILE = "long_range.json"
RETRAIN_COMMAND = "python -m explorer.train.long_range"


def default_long_range_dir() -> Path:
    """``assets/long_range`` of the repository (next to the ``explorer`` package)."""
    return Path(explorer.__file__).resolve().parents[1] / "assets" / "long_range"


def _check_name(name: object) -> str:
    return check_choice("name", name, MODELS)  # type: ignore[return-value]


def evaluation_set() -> SequenceBatch:
    """The fixed test set: :data:`TEST_PER_DISTANCE` sequences at each of :data:`TEST_DISTANCES`."""
    return long_range_test_set(TEST_DISTANCES, TEST_PER_DISTANCE, seed=TEST_SEED)


@torch.no_grad()
def accuracy_by_distance(model: nn.Module, data: SequenceBatch, chunk: int = 256) -> dict[str, dict[str, Any]]:
    """``{str(d): {"accuracy", "correct", "n"}}`` of ``model`` (eval mode) on ``data``, per distance."""
    model.eval()
    right = torch.cat([model(data.inputs[i:i + chunk]).argmax(-1) == data.labels[i:i + chunk]
                       for i in range(0, len(data), chunk)])
    out = {}
    for d in sorted(set(data.distance.tolist())):
        sel = data.distance == d
        correct, n = int(right[sel].sum()), int(sel.sum())
        out[str(d)] = {"accuracy": correct / n, "correct": correct, "n": n}
    return out


def load_long_range(folder: str | Path | None = None) -> dict[str, Any]:
    """The shipped results (``assets/long_range/long_range.json``).

    Raises:
        FileNotFoundError: not run yet (the message says the command). ValueError: an unreadable file.
    """
    folder = default_long_range_dir() if folder is None else Path(folder)
    return read_result(folder / RESULTS_FILE, f"{RETRAIN_COMMAND} --out {folder}")


def load_long_range_model(name: str, folder: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A shipped model (the first seed's weights, eval mode) and its entry of ``long_range.json`` (``models[name]``
    plus ``accuracy``: that run's per-distance accuracies)."""
    name = _check_name(name)
    folder = default_long_range_dir() if folder is None else Path(folder)
    res = load_long_range(folder)
    try:
        entry = dict(res["models"][name])
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in entry["config"].items()}
        entry["accuracy"] = res["per_seed"][name][str(entry["weights_seed"])]["accuracy"]
    except (KeyError, TypeError) as error:
        raise ValueError(f"{folder / RESULTS_FILE} has no usable entry for {name!r} ({error!r})") from error
    model = build_sequence_model(name, seed=0, **config)
    return load_weights(model, folder / entry["weights"], f"{RETRAIN_COMMAND} --out {folder}"), entry
