"""Long range: two marked tokens ``d`` positions apart, a CNN, a dilated CNN and an attention model -- where each
fails, next to its receptive field, and what each can see of one sequence."""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as W
import numpy as np
import torch

from explorer._checks import check_int
from explorer.apps._callbacks import callback
from explorer.apps._comm_guard import harden
from explorer.apps._layout import WidthWatcher, figure_box, row
from explorer.apps._plot import PlotView
from explorer.data.sequences import LENGTH, MAX_DISTANCE, long_range_batch
from explorer.guard import check
from explorer.hooks import record
from explorer.models.long_range import MODELS, default_long_range_dir, load_long_range, load_long_range_model
from explorer.viz._spec import figure_spec
from explorer.viz.long_range import accuracy_distance_figure, curves_at_distance, sequence_spec

__all__ = ["LongRangeApp", "NAMES", "MAX_SEED"]

NAMES = {"cnn": "CNN", "dilated_cnn": "dilated CNN", "attention": "attention"}
MAX_SEED = 999_999  # the example control's range: any seed draws a sequence in microseconds


class LongRangeApp:
    """Widget app over the shipped long-range results and models (``assets/long_range``).

    Args:
        distance: distance between the two marked tokens of the example, 1 .. :data:`MAX_DISTANCE`.
        seed: seed of the example sequence (``long_range_batch([distance], seed=seed)``), 0 .. :data:`MAX_SEED`.
        folder: holding ``long_range.json`` and the weights; ``None`` = the shipped ones.

    After each run: ``batch`` (the example, a :class:`~explorer.data.sequences.SequenceBatch` of one),
    ``probs`` (model -> probability that ``A`` comes first), ``rows`` (the attention model's attention from the later
    marked token, ``(layer, head, length)``) and ``attention_row`` (the layer and head the controls chose, ``(length,)``;
    default: the last layer, heads averaged). Figures: ``curves_figure`` (accuracy vs distance with
    the receptive fields; a line at the chosen distance), ``sequence_figure``. Texts: ``status`` (each model's
    answer; ``data-distance`` / ``data-seed`` / ``data-answers`` say what was computed), ``message`` (errors).
    """

    def __init__(self, distance: int = 8, seed: int = 0, folder: str | Path | None = None) -> None:
        check_int("distance", distance, 1, MAX_DISTANCE)
        check_int("seed", seed, 0, MAX_SEED)
        self.folder = default_long_range_dir() if folder is None else Path(folder)
        self.results = load_long_range(self.folder)
        self.models = {name: load_long_range_model(name, self.folder) for name in MODELS}  # name -> (model, entry)
        self.fields = {name: entry["receptive_field"]["size"] for name, (_, entry) in self.models.items()}
        self.labels = {name: NAMES[name] + ("" if self.fields[name] is None else f" (field {self.fields[name]})")
                       for name in MODELS}

        style = {"description_width": "110px"}
        self.distance = W.IntSlider(distance, 1, MAX_DISTANCE, description="distance d", style=style,
                                    continuous_update=False, layout=W.Layout(width="420px"))
        self.seed = W.BoundedIntText(seed, min=0, max=MAX_SEED, description="example seed", style=style,
                                     layout=W.Layout(width="220px"))
        self.next = W.Button(description="New example", icon="random", layout=W.Layout(width="140px"))
        attention = self.models["attention"][0]
        depth, heads = len(attention.blocks), attention.config.heads
        self.layer = W.Dropdown(options=[(str(i + 1), i) for i in range(depth)], value=depth - 1,
                                description="attention layer", style=style, layout=W.Layout(width="220px"))
        self.head = W.Dropdown(options=[("mean of heads", -1)] + [(str(h + 1), h) for h in range(heads)], value=-1,
                               description="head", style=style, layout=W.Layout(width="260px"))
        self.status = W.HTML()
        self.message = W.HTML()
        for widget, name in ((self.distance, "lr-distance"), (self.seed, "lr-seed"), (self.next, "lr-next"),
                             (self.layer, "lr-layer"), (self.head, "lr-head"), (self.status, "lr-status"),
                             (self.message, "lr-message")):
            widget.add_class(name)

        self._results: dict[tuple[int, int], tuple] = {}  # (distance, seed) -> (batch, probabilities, attention rows)
        self._run()
        self.curves_figure = PlotView(self._curves(), "lr-curves")
        self.sequence_figure = PlotView(self._sequence(), "lr-sequence")

        def on(action):
            return callback(action, self.message, "lr-error")

        self.next.on_click(on(self._on_next))
        self.distance.observe(on(self._on_input), names="value")
        self.seed.observe(on(self._on_input), names="value")
        for control in (self.layer, self.head):
            control.observe(on(self._on_view), names="value")

        seeds = self.results["seeds"]
        self.widget = W.VBox([
            W.HTML("<b>Is marked token A before B?</b> <small>Two marked tokens d positions apart in "
                   f"{LENGTH} random tokens. A CNN can only answer when one output's receptive field holds both "
                   "tokens; attention can compare any two positions.</small>"),
            row([self.distance, self.seed, self.next], align="center"),
            row([self.layer, self.head], align="center"),
            self.message,
            self.status,
            row([figure_box(self.sequence_figure, 620, min_width=320)]),
            W.HTML(f"<b>All distances</b> <small>(test accuracy over {len(seeds)} seeds, from the training runs in "
                   "<code>assets/long_range</code>, not from this page)</small>"),
            row([figure_box(self.curves_figure, 620, min_width=320)]),
            WidthWatcher(),
        ])
        self.widget.add_class("lr-app")
        harden(self.widget, self.message, "lr-error")

    # --- computation ----------------------------------------------------------------------------------
    def _run(self) -> None:
        distance, seed = self.distance.value, self.seed.value
        attention = self.models["attention"][0]
        config = attention.config
        check("attention_math", LENGTH, d=config.embed, heads=config.heads, batch=len(attention.blocks))
        key = (distance, seed)
        if key in self._results:  # this example was run already (the slider moved back): nothing runs again
            self.batch, self.probs, self.rows = self._results[key]
            self._update_text()
            return
        batch = long_range_batch([distance], seed=seed)
        probs = {}
        with torch.no_grad():
            for name, (model, _) in self.models.items():
                if name == "attention":
                    with record(model, "blocks.*.attn.hook_pattern") as trace:
                        logits = model(batch.inputs)
                    later = int(batch.second[0])
                    self.rows = torch.stack([trace[f"blocks.{i}.attn.hook_pattern"][0, :, later]
                                             for i in range(len(model.blocks))]).numpy()  # (layer, head, key)
                else:
                    logits = model(batch.inputs)
                probs[name] = float(torch.softmax(logits[0], -1)[1])  # class 1: A comes first
        self.batch, self.probs = batch, probs
        self._results[key] = (batch, probs, self.rows)
        while len(self._results) > 64:
            self._results.pop(next(iter(self._results)))
        self._update_text()

    @property
    def attention_row(self) -> np.ndarray:
        """``(length,)``: the chosen layer's attention from the later marked token, one head or heads averaged."""
        layer = self.rows[self.layer.value]  # (head, key)
        return layer.mean(0) if self.head.value == -1 else layer[self.head.value]

    def _update_text(self) -> None:
        truth = int(self.batch.labels[0])
        parts, answers = [], []
        for name, p in self.probs.items():
            says = int(p >= 0.5)
            answers.append(f"{name}:{says}")
            verdict = "✓" if says == truth else "✗"
            parts.append(f"{html.escape(self.labels[name])}: <b>{'A' if says else 'B'} first</b> "
                         f"(p = {max(p, 1 - p):.2f}) {verdict}")
        first = "A" if truth == 1 else "B"
        d = self.distance.value
        within = [html.escape(NAMES[n]) for n, f in self.fields.items() if f is not None and d <= f - 1]
        beyond = [html.escape(NAMES[n]) for n, f in self.fields.items() if f is not None and d > f - 1]
        note = (f"d = {d}: " + (f"within the field of {', '.join(within)}" if within else "")
                + ("; " if within and beyond else "") + (f"beyond the field of {', '.join(beyond)}" if beyond else ""))
        # data-*: what was computed, for tests and page scripts (the page's controls may be ahead of the kernel)
        self.status.value = (f"<div class='lr-verdict' style='font-size:14px' data-distance='{d}' "
                             f"data-seed='{self.seed.value}' data-label='{truth}' data-answers='{','.join(answers)}'>"
                             f"Truth: <b>{first}</b> comes first ({note}).<br>" + " · ".join(parts) + "</div>")

    def _curves(self) -> dict:
        """The curves (shipped results: built and validated once) with the line at the chosen distance (a spec)."""
        if getattr(self, "_curves_spec", None) is None:
            summary = self.results["summary"]
            curves = {name: summary[name]["accuracy"] for name in MODELS if name in summary}
            attention = summary.get("attention", {}).get("attention")
            self._curves_spec = figure_spec(
                accuracy_distance_figure(curves, self.fields, self.labels, attention, self.distance.value))
        return curves_at_distance(self._curves_spec, self.distance.value)

    def _sequence(self):
        b = self.batch
        first, second = int(b.first[0]), int(b.second[0])
        names = ("A", "B") if int(b.labels[0]) == 1 else ("B", "A")
        cnn_fields = {n: f for n, f in self.fields.items() if f is not None}
        head = "heads averaged" if self.head.value == -1 else f"head {self.head.value + 1}"
        title = (f"seed {self.seed.value}: {names[0]} at {first}, {names[1]} at {second} (d = {second - first}); "
                 f"attention layer {self.layer.value + 1}, {head}")
        return sequence_spec(b.tokens[0].numpy(), first, second, names, cnn_fields, self.labels,
                             self.attention_row, title)

    # --- callbacks: public endpoints, run through ``callback`` (they never raise into the kernel) ----------
    def _on_next(self) -> None:
        self.seed.value = (self.seed.value + 1) % (MAX_SEED + 1)  # observed: runs

    def _on_input(self) -> None:
        self._run()
        # the curves first (the distance slider moves their line): the page draws figures in the order they arrive
        self.curves_figure.update(self._curves())
        self.sequence_figure.update(self._sequence())

    def _on_view(self) -> None:
        self.sequence_figure.update(self._sequence())

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
