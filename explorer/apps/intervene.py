"""Intervene: switch MiniLM's attention heads off one by one and watch a sentence pair's similarity change.

Attention maps say where a head looks; they do not say whether the output needs it. This tab asks the model: a
layer x head grid of toggles zero- (or mean-) ablates heads at ``hook_z`` (before the output projection, where
heads are separate; :func:`explorer.intervene`), and the output is recomputed at once -- the pair's cosine
similarity, and for a fixed batch of generated pairs each pair's similarity, the probability that sentence A picks
its own partner among the batch's sentences B, and the accuracy of that pick. Beside it, three numbers per head,
computed once per pair: the attention the pair puts on the word the two sentences share, the gradient importance
``|d similarity / d xi|`` of a multiplicative head mask (Michel, Levy & Neubig 2019,
https://arxiv.org/abs/1905.10650), and the measured effect of zero-ablating the head alone; then clean -> corrupted
activation patching (the shared word masked in A), and one head's query/key arithmetic.

The numbers come from :mod:`explorer.analysis.pair_intervention` (:class:`~explorer.analysis.pair_intervention.
PairExperiment` for the pair, :class:`~explorer.analysis.pair_intervention.PairBatch` for the fixed batch; lesson 08
uses them too); :class:`InterveneApp` owns the widgets, runs its callbacks on one thread
(:func:`explorer.apps._callbacks.single_thread`) and redraws the views.
"""

from __future__ import annotations

import html
from collections import OrderedDict

import ipywidgets as W
import numpy as np
from ipywidgets.widgets.widget_bool import ToggleButtonStyle  # not exported at ipywidgets' top level

from explorer._checks import check_choice
from explorer.analysis.intervention import QueryKeyView
from explorer.analysis.pair_intervention import ABLATIONS, PairBatch, PairExperiment, fixed_batch
from explorer.apps._callbacks import callback, quietly, single_thread
from explorer.apps._comm_guard import harden
from explorer.apps._layout import WidthWatcher, figure_box, row
from explorer.apps._plot import PlotView
from explorer.models import load_pretrained
from explorer.viz.intervene import head_numbers_figure, output_change_spec, patching_figure, query_key_figure

__all__ = ["InterveneApp", "DEFAULT_A", "DEFAULT_B"]

DEFAULT_A = "The old teacher carefully repaired the broken piano in the kitchen."
DEFAULT_B = "Everyone wanted to hear the piano again."


# --- the app ----------------------------------------------------------------------------------------------------


class InterveneApp:
    """Widget app: ablate MiniLM's heads from a layer x head grid and see the output change.

    Args:
        a, b: the starting pair (default: two sentences sharing "piano").
        how: ``"zero"`` or ``"mean"`` ablation (mean: each head's mean ``hook_z`` over the fixed batch's tokens).
        checkpoint: a local Hugging Face-format folder; None = all-MiniLM-L6-v2 from its package.

    State tests read: ``ablated`` (set of 0-based ``(layer, head)``), ``how``, ``experiment``
    (:class:`~explorer.analysis.pair_intervention.PairExperiment`: ``clean_similarity``, ``attention``,
    ``importance``, ``gradient``, ``effect``, ``patching``), ``batch`` (the fixed batch's
    :class:`~explorer.analysis.pair_intervention.PairBatch`), ``similarity`` (the pair now),
    ``batch_similarity`` / ``clean_batch_similarity``,
    ``batch_probability`` / ``clean_batch_probability`` (``[pairs]``), ``accuracy`` / ``clean_accuracy``, ``qk``
    (the :class:`~explorer.analysis.intervention.QueryKeyView` drawn). Widgets: ``sentence_a``, ``sentence_b``,
    ``analyse``, ``cells[(layer, head)]`` (toggles), ``ablation``, ``reset``, ``qk_layer``, ``qk_head``,
    ``qk_sentence``, ``qk_query``; ``status`` (``data-*`` attributes say what is drawn), ``message`` (errors).
    """

    def __init__(self, a: str = DEFAULT_A, b: str = DEFAULT_B, how: str = "zero", checkpoint=None) -> None:
        check_choice("how", how, ABLATIONS)
        with single_thread():
            self._build(a, b, how, checkpoint)

    def _build(self, a: str, b: str, how: str, checkpoint) -> None:
        self.pretrained = load_pretrained(checkpoint)
        # outputs per (experiment, ablated heads, how): toggling a cell back, or reset, runs nothing
        self._outputs: OrderedDict[tuple, tuple] = OrderedDict()
        config = self.pretrained.config
        self.layers, self.heads = config.num_hidden_layers, config.num_attention_heads

        # the fixed batch: its clean numbers and the heads' mean activations, once
        self.batch = PairBatch(self.pretrained, fixed_batch())
        self.clean_batch_similarity, self.clean_batch_probability, self.clean_accuracy = self.batch.clean
        self.experiment = PairExperiment(self.pretrained, a, b)
        self.ablated: set[tuple[int, int]] = set()
        self.how = how
        self._busy = False
        self.similarity, self.batch_similarity, self.batch_probability, self.accuracy = self._compute_output(
            self.experiment, self.ablated, how)

        style = {"description_width": "80px"}
        text = {"layout": W.Layout(flex="1 1 420px", min_width="240px", max_width="640px"), "style": style}
        self.sentence_a = W.Text(value=a, description="sentence A", placeholder="a sentence", **text)
        self.sentence_b = W.Text(value=b, description="sentence B", placeholder="a sentence sharing a word", **text)
        self.analyse = W.Button(description="Analyse pair", button_style="primary", icon="play",
                                layout=W.Layout(width="140px"))
        self.ablation = W.ToggleButtons(options=[("zero", "zero"), ("mean", "mean")], value=how,
                                        description="ablation", style={"button_width": "60px",
                                                                       "description_width": "60px"},
                                        tooltips=["set the head's output to 0",
                                                  "set it to its mean over the batch's tokens"])
        self.reset = W.Button(description="Reset", icon="undo", layout=W.Layout(width="100px"))
        # 72 toggles share one layout and one style: three comm models instead of 216
        cell_layout = W.Layout(width="34px", height="28px", padding="0", margin="0")
        cell_style = ToggleButtonStyle()
        self.cells: dict[tuple[int, int], W.ToggleButton] = {}
        grid: list[W.Widget] = [W.HTML("")] + [W.HTML(f"<div style='text-align:center'>{h + 1}</div>")
                                               for h in range(self.heads)]
        for layer in range(self.layers):
            grid.append(W.HTML(f"<b>L{layer + 1}</b>"))
            for head in range(self.heads):
                cell = W.ToggleButton(value=False, description=str(head + 1), layout=cell_layout, style=cell_style,
                                      tooltip=f"ablate layer {layer + 1}, head {head + 1}")
                cell.add_class("iv-cell")
                cell.add_class(f"iv-cell-{layer}-{head}")
                self.cells[layer, head] = cell
                grid.append(cell)
        self.grid = W.GridBox(grid, layout=W.Layout(grid_template_columns=f"28px repeat({self.heads}, 34px)",
                                                    grid_gap="2px", width="fit-content"))
        self.qk_layer = W.Dropdown(options=[(str(l + 1), l) for l in range(self.layers)], description="layer",
                                   style={"description_width": "40px"}, layout=W.Layout(width="110px"))
        self.qk_head = W.Dropdown(options=[(str(h + 1), h) for h in range(self.heads)], description="head",
                                  style={"description_width": "40px"}, layout=W.Layout(width="110px"))
        self.qk_sentence = W.ToggleButtons(options=[("A", 0), ("B", 1)], value=0, description="sentence",
                                           style={"button_width": "40px", "description_width": "60px"})
        self.qk_query = W.Dropdown(options=[("0", 0)], description="query", style={"description_width": "45px"},
                                   layout=W.Layout(width="240px"))
        self.status = W.HTML()
        self.message = W.HTML()
        for widget, name in ((self.sentence_a, "iv-a"), (self.sentence_b, "iv-b"), (self.analyse, "iv-analyse"),
                             (self.ablation, "iv-ablation"), (self.reset, "iv-reset"), (self.grid, "iv-grid"),
                             (self.qk_layer, "iv-qk-layer"), (self.qk_head, "iv-qk-head"),
                             (self.qk_sentence, "iv-qk-sentence"), (self.qk_query, "iv-qk-query"),
                             (self.status, "iv-status"), (self.message, "iv-message")):
            widget.add_class(name)

        # the query/key view starts on the head whose ablation moves the similarity most
        layer, head = np.unravel_index(int(np.nanargmax(np.abs(self.experiment.effect))), self.experiment.effect.shape)
        self.qk_layer.value, self.qk_head.value = int(layer), int(head)
        self._set_query_options()
        self.qk = self._compute_qk()
        self.output_figure = PlotView(self._output_figure(), "iv-output")
        self.heads_figure = PlotView(self._heads_figure(), "iv-heads")
        self.patching_figure = PlotView(self._patching_figure(), "iv-patching")
        self.qk_figure = PlotView(self._qk_figure(), "iv-qk")
        self._update_status()

        def on(action):
            def run() -> None:
                with single_thread():
                    action()
            return callback(run, self.message, "iv-error")

        for cell in self.cells.values():
            cell.observe(on(self._on_toggle), names="value")
        self.ablation.observe(on(self._on_ablation), names="value")
        self.reset.on_click(on(self._on_reset))
        self.analyse.on_click(on(self._on_analyse))
        for control in (self.qk_layer, self.qk_head, self.qk_query):
            control.observe(on(self._on_qk), names="value")
        self.qk_sentence.observe(on(self._on_qk_sentence), names="value")

        self.widget = W.VBox([
            W.HTML("<b>Which heads does the output need?</b> <small>Attention maps show where a head looks, not "
                   "whether the model uses it. Click a head in the grid to switch it off (ablate it) and watch the "
                   "similarity of the two sentences, and of a fixed batch of pairs, change. Below: three numbers per "
                   "head for this pair, computed once per pair.</small>"),
            row([self.sentence_a]),
            row([self.sentence_b, self.analyse], align="center"),
            self.message,
            self.status,
            row([W.VBox([row([self.ablation, self.reset], align="center"), self.grid]),
                 figure_box(self.output_figure, 620, min_width=320)]),
            W.HTML("<b>Three numbers per head</b> <small>(this pair): the attention it puts on the shared word, the "
                   "gradient importance of a head mask ξ (Michel et al. 2019), and the measured effect of "
                   "zero-ablating it alone. Do they agree?</small>"),
            row([figure_box(self.heads_figure, 980, min_width=320)]),
            row([figure_box(self.patching_figure, 620, min_width=320)]),
            W.HTML("<b>Query and key</b> <small>How one head's attention from one token is made: the query times "
                   "each key, summed (the dot product), scaled, softmaxed.</small>"),
            row([self.qk_layer, self.qk_head, self.qk_sentence, self.qk_query], align="center"),
            row([figure_box(self.qk_figure, 980, min_width=320)]),
            WidthWatcher(),
        ])
        self.widget.add_class("iv-app")
        harden(self.widget, self.message, "iv-error")

    # --- computation ----------------------------------------------------------------------------------
    def _compute_output(self, experiment: PairExperiment, ablated: set[tuple[int, int]], how: str
                        ) -> tuple[float, np.ndarray, np.ndarray, float]:
        """``(similarity, batch similarity, batch partner probability, accuracy)`` with ``ablated`` ablated: two
        forward passes from the first ablated layer. Changes no state (a refusal leaves the app as it was)."""
        # the memory guard answers the same with or without a remembered result (what a visitor sees stays one rule)
        self.batch.check_memory()
        experiment.check_memory()
        key = (id(experiment), frozenset(ablated), how)
        hit = self._outputs.get(key)
        if hit is not None and hit[0] is experiment:  # the same cells again (a toggle undone): nothing to run
            self._outputs.move_to_end(key)
            return hit[1]
        ordered = sorted(ablated)
        batch = self.batch.measure(ordered, how)
        numbers = (experiment.similarity(ordered, how, self.batch.means), *batch)
        self._outputs[key] = (experiment, numbers)
        while len(self._outputs) > 64:
            self._outputs.popitem(last=False)
        return numbers

    def _apply(self, experiment: PairExperiment, ablated: set[tuple[int, int]], how: str) -> None:
        """Compute the output for this state and, only if that worked, make it the app's state."""
        numbers = self._compute_output(experiment, ablated, how)
        self.experiment, self.ablated, self.how = experiment, set(ablated), how
        self.similarity, self.batch_similarity, self.batch_probability, self.accuracy = numbers

    def _sync_controls(self) -> None:
        """The grid and the ablation choice show the app's state (after a refusal: what it was before)."""
        with quietly(self):
            for key, cell in self.cells.items():
                cell.value = key in self.ablated
                cell.button_style = "danger" if cell.value else ""
            self.ablation.value = self.how

    def _redraw_output(self) -> None:
        self.output_figure.update(self._output_figure())
        self._update_status()

    def _compute_qk(self) -> QueryKeyView:
        return self.experiment.query_key(self.qk_layer.value, self.qk_head.value, self.qk_sentence.value,
                                         self.qk_query.value)

    def _set_query_options(self) -> None:
        """Query choices of the chosen sentence; the shared word's first token selected (else [CLS])."""
        sentence = self.qk_sentence.value
        tokens = self.experiment.tokens[sentence]
        hits = np.flatnonzero(self.experiment.word_tokens[sentence])
        with quietly(self):
            self.qk_query.options = [(f"{i}: {t}", i) for i, t in enumerate(tokens)]
            self.qk_query.value = int(hits[0]) if hits.size else 0

    # --- figures and text -----------------------------------------------------------------------------
    def _output_figure(self) -> dict:
        return output_change_spec((self.experiment.clean_similarity, self.similarity), self.clean_batch_similarity,
                                    self.batch_similarity, self.clean_batch_probability, self.batch_probability,
                                    [p[2] for p in self.batch.pairs], (self.clean_accuracy, self.accuracy),
                                    len(self.ablated))

    def _heads_figure(self):
        e = self.experiment
        return head_numbers_figure(e.attention, e.importance, e.effect, e.word)

    def _patching_figure(self):
        e = self.experiment
        return patching_figure(e.patching, e.clean_similarity,
                               np.nan if e.corrupted_similarity is None else e.corrupted_similarity, e.word)

    def _qk_figure(self):
        v = self.qk
        tokens = self.experiment.tokens[self.qk_sentence.value]
        title = (f"layer {self.qk_layer.value + 1}, head {v.head + 1}: query '{html.escape(tokens[v.query])}' "
                 f"(position {v.query}) in sentence {'AB'[self.qk_sentence.value]}")
        return query_key_figure(v.q.numpy(), v.k.numpy(), v.product.numpy(), v.dots.numpy(), v.softmax.numpy(),
                                tokens, v.query, title)

    def _update_status(self) -> None:
        e = self.experiment
        heads = ", ".join(f"L{l + 1}H{h + 1}" for l, h in sorted(self.ablated)) or "none"
        word = "no shared word" if e.word is None else f"shared word <b>{html.escape(e.word)}</b>"
        attributes = {
            "similarity": repr(self.similarity), "clean-similarity": repr(e.clean_similarity),
            "ablated": ",".join(f"{l}.{h}" for l, h in sorted(self.ablated)), "how": self.how,
            "batch-similarity": repr(float(np.mean(self.batch_similarity))), "accuracy": repr(self.accuracy),
            "shared": e.word or "", "a": e.a, "b": e.b,
        }
        data = " ".join(f"data-{key}=\"{html.escape(value, quote=True)}\"" for key, value in attributes.items())
        # data-*: what was computed and drawn, for tests and page scripts (the page's controls may be ahead)
        self.status.value = (f"<div class='iv-reading' style='font-size:14px' {data}>Similarity "
                             f"<b>{e.clean_similarity:.4f}</b> → <b>{self.similarity:.4f}</b> "
                             f"({self.how}-ablated: {heads}); {word}. Batch of {len(self.batch.pairs)} pairs: mean "
                             f"similarity {np.mean(self.clean_batch_similarity):.3f} → "
                             f"{np.mean(self.batch_similarity):.3f}, partner picked right "
                             f"{self.clean_accuracy:.0%} → {self.accuracy:.0%}.</div>")

    # --- callbacks: public endpoints, run through ``callback`` (they never raise into the kernel) ----------
    def _on_toggle(self) -> None:
        if self._busy:
            return
        try:
            self._apply(self.experiment, {key for key, cell in self.cells.items() if cell.value}, self.how)
        finally:
            self._sync_controls()
        self._redraw_output()

    def _on_ablation(self) -> None:
        if self._busy:
            return
        try:
            self._apply(self.experiment, self.ablated, self.ablation.value)
        finally:
            self._sync_controls()
        self._redraw_output()

    def _on_reset(self) -> None:
        try:
            self._apply(self.experiment, set(), self.how)
        finally:
            self._sync_controls()
        self._redraw_output()

    def _on_analyse(self) -> None:
        experiment = PairExperiment(self.pretrained, self.sentence_a.value, self.sentence_b.value)  # may refuse
        self._apply(experiment, self.ablated, self.how)
        self._set_query_options()
        self.qk = self._compute_qk()
        self.output_figure.update(self._output_figure())
        self.heads_figure.update(self._heads_figure())
        self.patching_figure.update(self._patching_figure())
        self.qk_figure.update(self._qk_figure())
        self._update_status()

    def _on_qk_sentence(self) -> None:
        if self._busy:
            return
        self._set_query_options()
        self._on_qk()

    def _on_qk(self) -> None:
        if self._busy:
            return
        self.qk = self._compute_qk()
        self.qk_figure.update(self._qk_figure())

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
