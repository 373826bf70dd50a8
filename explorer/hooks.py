"""Named hook points and the ``record()`` context manager.

Layers declare identity :class:`HookPoint` modules in ``__init__`` and pass tensors through them in
``forward``::

    self.hook_pattern = HookPoint(("batch", "head", "query", "key"))
    ...
    pattern = self.hook_pattern(pattern)

A hook point's name is its module path inside the model being recorded (``blocks.0.attn.hook_pattern``);
:func:`record` sets the names when it starts, so the same layer can live in several models.

Cost when nothing records or edits: ``HookPoint.__call__`` is overridden to skip ``nn.Module.__call__`` and its
hook dispatch; an idle hook point is one attribute test and a return (see ``explorer/bench/hook_overhead.py``).
Recording attaches a callback to the selected hook points only, inside a ``try/finally``, so nothing stays
attached after the ``with`` block, whether the forward pass succeeded or raised.

:func:`intervene` is the writing twin of :func:`record` (TransformerLens's convention): inside
``with intervene(model, {"blocks.0.attn.hook_z": fn}):`` the hook point passes its tensor to
``fn(activation, hook)`` and goes on with what ``fn`` returns (``None`` = unchanged). Edits run before recorders,
in the order they were attached, so a :func:`record` context open at the same time captures the tensor the model
actually went on with. Per-head edits act on ``hook_z`` ``[batch, head, query, head_dim]``, before the output
projection mixes the heads; per-channel edits on a conv's ``hook_out`` ``[batch, channel, *spatial]``
(:mod:`explorer.analysis.intervention` builds the standard ones).

A consequence of the overridden ``__call__``: ``register_forward_hook`` on a hook point is never called, and
``torch.fx`` traces straight through hook points (they leave no node in the graph), which is what the
receptive-field analysis wants.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Union

import torch
from torch import nn

__all__ = ["HookPoint", "Trace", "hook_points", "record", "intervene", "nearest_names", "NameFilter", "Edit"]

NameFilter = Union[None, str, Iterable[str], Callable[[str], bool]]
Edit = Callable[[torch.Tensor, "HookPoint"], Union[torch.Tensor, None]]  # fn(activation, hook) -> replacement


class HookPoint(nn.Module):
    """Identity module marking a tensor that :func:`record` can capture.

    Args:
        dims: names of the tensor's dimensions, from the shared vocabulary
            (``batch, head, query, key, channel, height, width, length, head_dim, embed``).
            Stored in the trace so every recorded key documents its shape.
    """

    def __init__(self, dims: tuple[str, ...] = ()) -> None:
        super().__init__()
        if not isinstance(dims, tuple) or not all(isinstance(d, str) for d in dims):
            raise TypeError(f"dims must be a tuple of str, got {dims!r}")
        self.dims = dims
        self.name: str | None = None
        # edits (fn(x, hook) -> replacement or None) first, in attachment order, then recorders (fn(name, x));
        # one list so that an idle hook point costs one truth test
        self._hooks: list[tuple[bool, Callable]] = []

    @property
    def active(self) -> bool:
        """True while at least one :func:`record` or :func:`intervene` context uses this hook point."""
        return bool(self._hooks)

    @property
    def edited(self) -> bool:
        """True while at least one :func:`intervene` context edits this hook point."""
        return bool(self._hooks) and self._hooks[0][0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D401 - identity
        if self._hooks:
            return self._run_hooks(x)
        return x

    def _run_hooks(self, x: torch.Tensor) -> torch.Tensor:
        name = self.name or ""
        for is_edit, fn in list(self._hooks):
            if not is_edit:
                fn(name, x)
                continue
            try:
                out = fn(x, self)
            except Exception as error:
                error.add_note(f"raised by the intervention at hook point {name!r}")
                raise
            if out is not None:
                _check_replacement(name, x, out)
                x = out
        return x

    def _attach(self, fn: Callable, is_edit: bool) -> tuple[bool, Callable]:
        entry = (is_edit, fn)
        at = sum(1 for e, _ in self._hooks if e) if is_edit else len(self._hooks)
        self._hooks.insert(at, entry)
        return entry

    def _detach(self, entry: tuple[bool, Callable]) -> None:
        for i, held in enumerate(self._hooks):
            if held is entry:
                del self._hooks[i]
                return

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


def _check_replacement(name: str, old: torch.Tensor, new: object) -> None:
    """ValueError/TypeError unless an edit's replacement has the activation's shape, dtype and device."""
    if not isinstance(new, torch.Tensor):
        raise TypeError(f"the intervention at hook point {name!r} must return a Tensor or None, "
                        f"got {type(new).__name__}")
    if new.shape != old.shape or new.dtype != old.dtype or new.device != old.device:
        raise ValueError(
            f"the intervention at hook point {name!r} returned shape {tuple(new.shape)}, {new.dtype} on "
            f"{new.device}; the activation there is shape {tuple(old.shape)}, {old.dtype} on {old.device}"
        )


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """All hook points of ``model`` by module path, with their ``name`` set to that path."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    found: dict[str, HookPoint] = {}
    for path, module in model.named_modules():
        if isinstance(module, HookPoint):
            module.name = path
            found[path] = module
    return found


def _compile_filter(names: NameFilter) -> Callable[[str], bool]:
    if names is None:
        return lambda _name: True
    if callable(names):
        return names
    if isinstance(names, str):
        patterns = [names]
    else:
        try:
            patterns = list(names)
        except TypeError:
            raise TypeError(
                f"names must be None, a str (exact name or glob), an iterable of str or a callable, "
                f"got {type(names).__name__}"
            ) from None
        if not all(isinstance(p, str) for p in patterns):
            raise TypeError("names: every item of the iterable must be a str")

    def match(name: str) -> bool:
        return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)

    return match


class Trace:
    """Tensors captured by :func:`record`, keyed by hook-point name.

    ``trace[name]`` is the tensor from the last time that hook point fired; ``trace.history(name)`` gives every
    firing in order (a module called twice in one forward fires twice). ``trace.dims(name)`` names the dimensions.

    Shapes of the hook points that explorer layers declare:

    ==========================  =========================================
    key suffix                  shape
    ==========================  =========================================
    ``hook_in`` / ``hook_out``  conv/pool: ``[batch, channel, *spatial]``
    ``hook_out`` (attention)    ``[batch, query, embed]``
    ``hook_q``                  ``[batch, head, query, head_dim]``
    ``hook_k`` / ``hook_v``     ``[batch, head, key, head_dim]``
    ``hook_scores``             ``[batch, head, query, key]`` (scaled, masked logits)
    ``hook_pattern``            ``[batch, head, query, key]`` (softmax probabilities, rows sum to 1)
    ``hook_z``                  ``[batch, head, query, head_dim]`` (per-head output, before the projection)
    ==========================  =========================================
    """

    def __init__(self, dims: dict[str, tuple[str, ...]]) -> None:
        self._dims = dims
        self._store: dict[str, list[torch.Tensor]] = {}

    def _add(self, name: str, tensor: torch.Tensor) -> None:
        self._store.setdefault(name, []).append(tensor)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._store:
            raise KeyError(f"{name!r} was not recorded; recorded: {sorted(self._store)}")
        return self._store[name][-1]

    def __contains__(self, name: object) -> bool:
        return name in self._store

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def keys(self) -> list[str]:
        return list(self._store)

    def items(self) -> list[tuple[str, torch.Tensor]]:
        return [(k, v[-1]) for k, v in self._store.items()]

    def history(self, name: str) -> list[torch.Tensor]:
        """Every tensor recorded at ``name``, in call order."""
        self[name]  # raises a helpful KeyError
        return list(self._store[name])

    def dims(self, name: str) -> tuple[str, ...]:
        """Dimension names of the hook point ``name``."""
        if name not in self._dims:
            raise KeyError(f"{name!r} is not a hook point of the recorded model")
        return self._dims[name]

    def describe(self) -> str:
        """One line per recorded key: name, dimension names, shape."""
        lines = []
        for name, tensor in self.items():
            dims = ", ".join(self._dims.get(name, ()))
            lines.append(f"{name}  [{dims}]  {tuple(tensor.shape)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Trace({len(self)} keys)"


@contextmanager
def record(
    model: nn.Module,
    names: NameFilter = None,
    *,
    device: torch.device | str | None = None,
    detach: bool = True,
) -> Iterator[Trace]:
    """Record the tensors passing through ``model``'s hook points while the context is open.

    Args:
        model: any module containing :class:`HookPoint` submodules.
        names: which hook points to record: ``None`` (all), an exact name or a glob (``"*.hook_pattern"``),
            an iterable of those, or a callable ``name -> bool``.
        device: move recorded tensors there (e.g. ``"cpu"`` to keep GPU memory free).
        detach: store detached tensors (default) so the trace keeps no autograd graph alive.

    Returns:
        A :class:`Trace`, filled as the model runs inside the ``with`` block.

    Raises:
        ValueError: if ``names`` selects no hook point of ``model``.
    """
    points = hook_points(model)
    match = _compile_filter(names)
    selected = [hp for path, hp in points.items() if match(path)]
    if names is not None and not selected:
        raise ValueError(
            f"names={names!r} matches no hook point of the model; it has {len(points)}: "
            f"{sorted(points)[:8]}{' ...' if len(points) > 8 else ''}"
        )
    trace = Trace({path: hp.dims for path, hp in points.items()})
    target = torch.device(device) if device is not None else None

    def capture(name: str, tensor: torch.Tensor) -> None:
        if detach:
            tensor = tensor.detach()
        if target is not None:
            tensor = tensor.to(target)
        trace._add(name, tensor)

    attached: list[tuple[HookPoint, tuple[bool, Callable]]] = []
    try:
        for hp in selected:
            attached.append((hp, hp._attach(capture, is_edit=False)))
        yield trace
    finally:
        for hp, entry in attached:
            hp._detach(entry)


def nearest_names(name: str, known: Iterable[str], n: int = 4) -> list[str]:
    """Up to ``n`` names of ``known`` closest to ``name`` (difflib), else those sharing its last component; for
    error messages that say what the user may have meant."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.5)
    if not close:  # fall back to the names sharing the pattern's last component
        tail = name.rsplit(".", 1)[-1]
        close = [k for k in known if fnmatch.fnmatchcase(k.rsplit(".", 1)[-1], tail)][:n]
    return close


def _check_edits(edits: object) -> list[tuple[str, Edit]]:
    if isinstance(edits, Mapping):
        pairs = list(edits.items())
    else:
        try:
            pairs = [tuple(item) for item in edits]  # type: ignore[union-attr]
        except TypeError:
            raise TypeError(f"edits must be a mapping {{name_or_glob: fn}} or an iterable of (name_or_glob, fn) "
                            f"pairs, got {type(edits).__name__}") from None
    if not pairs:
        raise ValueError("edits is empty: give at least one {name_or_glob: fn}")
    for pair in pairs:
        if len(pair) != 2 or not isinstance(pair[0], str) or not callable(pair[1]):
            raise TypeError(f"edits: every entry must be (name_or_glob: str, fn: callable), got {pair!r}")
    return pairs  # type: ignore[return-value]


@contextmanager
def intervene(model: nn.Module, edits: Mapping[str, Edit] | Iterable[tuple[str, Edit]]) -> Iterator[None]:
    """Replace the tensors passing through ``model``'s hook points while the context is open.

    ``fn(activation, hook)`` gets the tensor and the :class:`HookPoint` (``hook.name``, ``hook.dims``) and returns
    the replacement -- same shape, dtype and device -- or ``None`` to leave it. Contexts nest and compose with
    :func:`record`: edits run in the order they were attached, before any recorder of the same hook point.
    Everything is detached on exit, also when the forward pass raises; an exception raised by ``fn`` propagates
    with a note naming the hook point. Parameters are never touched, so the model is unchanged afterwards.

    An edit of ``hook_scores`` / ``hook_pattern`` sends an ``"auto"`` attention layer to its math path, as
    recording does; ``backend="sdpa"`` / ``"triton"`` refuse it.

    Args:
        model: any module containing :class:`HookPoint` submodules.
        edits: ``{name_or_glob: fn}`` or an iterable of ``(name_or_glob, fn)`` pairs (to give one name two edits).

    Raises:
        ValueError: a name or glob matches no hook point (the nearest names are listed), or ``edits`` is empty.
        TypeError: ``edits`` is not a mapping or pairs of (str, callable).
    """
    points = hook_points(model)
    pairs = _check_edits(edits)
    plan: list[tuple[HookPoint, Edit]] = []
    for pattern, fn in pairs:
        matched = [hp for path, hp in points.items() if path == pattern or fnmatch.fnmatchcase(path, pattern)]
        if not matched:
            raise ValueError(f"edits: {pattern!r} matches no hook point of the model; nearest: "
                             f"{nearest_names(pattern, points)} ({len(points)} hook points in all)")
        plan += [(hp, fn) for hp in matched]
    attached: list[tuple[HookPoint, tuple[bool, Callable]]] = []
    try:
        for hp, fn in plan:
            attached.append((hp, hp._attach(fn, is_edit=True)))
        yield
    finally:
        for hp, entry in attached:
            hp._detach(entry)
