"""Models trained in this repository and shipped in ``assets/<name>/``: a model card and float32 safetensors weights.

One loader for all of them (and the two writers the training scripts and studies share): the card's ``"config"`` builds the model's config dataclass (unknown keys ignored, so an
older card still loads), the weights are loaded strictly, and every failure names the file and the command that
retrains it. Loading never imports the training code.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Callable, TypeVar

from torch import nn

__all__ = ["load_shipped", "read_result", "load_weights", "save_weights", "write_card", "WEIGHTS_FILE", "CARD_FILE",
           "CARD_REPORT_FILE"]

WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "model_card.json"
CARD_REPORT_FILE = "MODEL_CARD.md"
M = TypeVar("M", bound=nn.Module)


def load_shipped(folder: Path, config_class: type, build: Callable[[object], M], retrain: str) -> tuple[M, dict]:
    """``(model in eval mode, parsed card)`` from ``folder``.

    Args:
        folder: holds ``weights.safetensors`` and ``model_card.json``.
        config_class: the dataclass built from ``card["config"]``.
        build: makes the model from a config.
        retrain: the command that regenerates the folder (quoted in every error).

    Raises:
        FileNotFoundError: a file is missing. ValueError: a file cannot be read or does not fit the config.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    card_path, weights_path = folder / CARD_FILE, folder / WEIGHTS_FILE
    for file in (card_path, weights_path):
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing; retrain it with `{retrain} --out {folder}`")
    try:
        card = json.loads(card_path.read_text())
        known = {f.name for f in fields(config_class)}
        config = config_class(**{k: v for k, v in card["config"].items() if k in known})
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{card_path} is not a valid model card ({error}); "
                         f"retrain with `{retrain} --out {folder}`") from error
    try:
        model = build(config)
        model.load_state_dict(load_file(weights_path))
    except (SafetensorError, RuntimeError, OSError, ValueError) as error:
        raise ValueError(f"{weights_path} could not be loaded ({type(error).__name__}: {error}); "
                         f"retrain with `{retrain} --out {folder}`") from error
    return model.eval(), card


def read_result(path: Path, command: str) -> dict:
    """A shipped result file (JSON), or FileNotFoundError / ValueError naming ``path`` and the ``command`` that
    writes it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `{command}`")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} cannot be read ({error}); rerun `{command}`") from error


def load_weights(model: M, path: Path, command: str) -> M:
    """``model`` with the safetensors weights at ``path`` loaded strictly, in eval mode; FileNotFoundError /
    ValueError name ``path`` and the ``command`` that retrains it."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; retrain with `{command}`")
    try:
        model.load_state_dict(load_file(path))
    except (RuntimeError, OSError, ValueError) as error:
        raise ValueError(f"{path} does not fit the model ({error}); retrain with `{command}`") from error
    return model.eval()


def save_weights(folder: Path, model: nn.Module) -> Path:
    """Write ``model``'s state as float32 ``weights.safetensors`` in ``folder`` (created if needed)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / WEIGHTS_FILE)
    return folder / WEIGHTS_FILE


def write_card(folder: Path, card: dict, markdown: str) -> None:
    """Write ``model_card.json`` (``card``) and ``MODEL_CARD.md`` (``markdown``, rendered from it) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    (folder / CARD_REPORT_FILE).write_text(markdown)
