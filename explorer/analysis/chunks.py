"""Run a model on a batch in chunks and join the outputs, as if it had run the batch at once.

The interventions (:mod:`explorer.analysis.intervention`) run thousands of edited forward passes; on one CPU thread
batches of ~100 inputs run about twice as fast as one batch of 1000, and recording attention patterns of a large
batch at once may not fit in memory. A chunked batch is a tensor, or a tuple/list of tensors, whose dim 0 is the
batch; the model's output must be a tensor or a tuple/list of tensors with the batch first, so that the chunks'
outputs join along dim 0 (:func:`join`) before any metric reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from explorer._checks import check_int, describe
from explorer._modes import evaluating
from explorer.hooks import Edit, intervene, record

__all__ = ["Part", "slices", "take", "join", "splice", "run_parts", "record_parts"]

Part = slice | None  # rows of the batch; None: all of it
Edits = Mapping[str, Edit] | Callable[[Part], Mapping[str, Edit] | None] | None


def slices(inputs: Any, chunk: int | None) -> list[Part]:
    """Slices of ``chunk`` inputs along dim 0 covering the batch; ``[None]`` (the batch at once) without ``chunk``
    or when one chunk holds every input.

    Raises:
        TypeError: ``chunk`` is set and ``inputs`` is not a tensor or a tuple/list of tensors of one batch size.
        ValueError: ``chunk`` is not an int >= 1.
    """
    if chunk is None:
        return [None]
    check_int("chunk", chunk, 1)
    tensors = [inputs] if isinstance(inputs, torch.Tensor) else inputs if isinstance(inputs, (tuple, list)) else []
    if not tensors or not all(isinstance(t, torch.Tensor) and t.ndim for t in tensors) or \
            len({t.shape[0] for t in tensors}) != 1:
        raise TypeError(f"chunk={chunk} slices the inputs along dim 0, so they must be a tensor or a tuple/list of "
                        f"tensors of one batch size, got {describe(inputs)}; pass chunk=None to run one batch")
    size = tensors[0].shape[0]
    if size <= chunk:
        return [None]
    return [slice(start, min(start + chunk, size)) for start in range(0, size, chunk)]


def take(inputs: Any, part: Part) -> Any:
    """Rows ``part`` of a tensor or of each tensor of a tuple/list (``inputs`` itself for None)."""
    if part is None:
        return inputs
    if isinstance(inputs, torch.Tensor):
        return inputs[part]
    return tuple(t[part] for t in inputs) if isinstance(inputs, tuple) else [t[part] for t in inputs]


def join(outputs: Sequence[Any]) -> Any:
    """The chunks' outputs joined along dim 0 (a single output as it is)."""
    if len(outputs) == 1:
        return outputs[0]
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(outputs))
    if isinstance(first, (tuple, list)) and first and all(isinstance(t, torch.Tensor) for t in first):
        joined = [torch.cat(column) for column in zip(*outputs)]
        return tuple(joined) if isinstance(first, tuple) else joined
    raise TypeError(f"chunk: forward must return a tensor or a tuple/list of tensors with the batch along dim 0 to "
                    f"join the chunks' outputs, got {describe(first)}; pass chunk=None to run one batch")


def splice(whole: Any, part: slice, output: Any) -> Any:
    """The joined outputs ``whole`` with the rows of ``part`` taken from ``output`` (a chunk run with gradients)."""
    return join([take(whole, slice(0, part.start)), output, take(whole, slice(part.stop, None))])


def run_parts(model: nn.Module, forward: Callable[[nn.Module, Any], Any], inputs: Any, parts: Sequence[Part],
              edits: Edits = None) -> Any:
    """``forward(model, inputs)`` part by part, joined, in eval mode without gradients (flags restored).

    ``edits`` are applied with :func:`explorer.intervene`: a mapping for every part, or a function of the part
    (edits that hold per-input values take that part's rows).
    """
    outputs = []
    with evaluating(model), torch.no_grad():
        for part in parts:
            chosen = edits(part) if callable(edits) else edits
            if chosen:
                with intervene(model, chosen):
                    outputs.append(forward(model, take(inputs, part)))
            else:
                outputs.append(forward(model, take(inputs, part)))
    return join(outputs)


def record_parts(model: nn.Module, forward: Callable[[nn.Module, Any], Any], inputs: Any, names: Sequence[str],
                 parts: Sequence[Part]) -> dict[str, torch.Tensor]:
    """``{name: activation}`` recorded part by part (the last firing of each forward call), joined along dim 0; eval
    mode, no gradients."""
    pieces = []
    with evaluating(model), torch.no_grad():
        for part in parts:
            with record(model, list(names)) as trace:
                forward(model, take(inputs, part))
            pieces.append({name: trace[name] for name in names})
    return {name: torch.cat([p[name] for p in pieces]) if len(pieces) > 1 else pieces[0][name] for name in names}
