"""Metrics of the interventions: each takes the model's output and returns one number per input, ``[batch]``.

Built by :func:`logit_difference`, :func:`class_probability`, :func:`kl_divergence`, :func:`pair_similarity` and
:func:`accuracy`; :mod:`explorer.analysis.intervention` re-exports them and passes them to its sweeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from explorer._checks import check_int, check_tensor

__all__ = ["Metric", "logit_difference", "class_probability", "kl_divergence", "pair_similarity", "accuracy"]

Metric = Callable[[Any], torch.Tensor]  # metric(output) -> [batch]


def _logits(output: object) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"the metric needs logits [batch, classes], got {got}")
    return output


def _per_input(name: str, value: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.shape != (batch,):
            raise ValueError(f"{name} must be an int or a LongTensor [batch={batch}], got shape {tuple(value.shape)}")
        return value.to(device=device, dtype=torch.long)
    return torch.full((batch,), check_int(name, value, 0), dtype=torch.long, device=device)


def logit_difference(correct: int | torch.Tensor, wrong: int | torch.Tensor) -> Metric:
    """Metric: ``logits[correct] - logits[wrong]`` per input (ints, or LongTensors ``[batch]``)."""
    def metric(output: object) -> torch.Tensor:
        logits = _logits(output)
        a = _per_input("correct", correct, logits.shape[0], logits.device)
        b = _per_input("wrong", wrong, logits.shape[0], logits.device)
        rows = torch.arange(logits.shape[0], device=logits.device)
        return logits[rows, a] - logits[rows, b]
    return metric


def class_probability(target: int | torch.Tensor) -> Metric:
    """Metric: the softmax probability of class ``target`` (an int, or a LongTensor ``[batch]``) per input."""
    def metric(output: object) -> torch.Tensor:
        logits = _logits(output)
        t = _per_input("target", target, logits.shape[0], logits.device)
        return logits.softmax(-1)[torch.arange(logits.shape[0], device=logits.device), t]
    return metric


def kl_divergence(reference_logits: torch.Tensor) -> Metric:
    """Metric: ``KL(p_reference || p_output)`` in nats per input (0 for the unchanged model)."""
    check_tensor("reference_logits", reference_logits, "[batch, classes]", dtype="float")
    reference = reference_logits.detach().log_softmax(-1)

    def metric(output: object) -> torch.Tensor:
        logits = _logits(output)
        if logits.shape != reference.shape:
            raise ValueError(f"logits {tuple(logits.shape)} do not match reference_logits {tuple(reference.shape)}")
        return (reference.exp() * (reference - logits.log_softmax(-1))).sum(-1)
    return metric


def pair_similarity() -> Metric:
    """Metric: cosine similarity of the two embeddings of each pair, output ``[batch, 2, embed]``."""
    def metric(output: object) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.ndim != 3 or output.shape[1] != 2:
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(f"pair_similarity needs embeddings [batch, 2, embed], got {got}")
        return F.cosine_similarity(output[:, 0], output[:, 1], dim=-1)
    return metric


def accuracy(labels: torch.Tensor) -> Metric:
    """Metric: 1.0 where ``argmax(logits) == labels`` else 0.0, per input."""
    check_tensor("labels", labels, "[batch] class indices", dtype="int")

    def metric(output: object) -> torch.Tensor:
        logits = _logits(output)
        if labels.shape != (logits.shape[0],):
            raise ValueError(f"labels must be [batch={logits.shape[0]}], got shape {tuple(labels.shape)}")
        return (logits.argmax(-1) == labels.to(logits.device)).to(logits.dtype)
    return metric
