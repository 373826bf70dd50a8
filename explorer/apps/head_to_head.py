"""Head to head: the same digits through five trained classifiers (CNN, SE-CNN, ViT with and without positions, a
conv-stem hybrid) -- what each looks at, what it answers when the digit moves, and how they compare overall."""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as W
import numpy as np
import torch

from explorer._checks import check_choice
from explorer.apps._callbacks import callback, quietly
from explorer.apps._comm_guard import harden
from explorer.apps._layout import WidthWatcher, figure_box, row
from explorer.apps._plot import PlotView
from explorer.analysis.equivariance import shift_images
from explorer.analysis.looks_at import looks_at
from explorer.data.digits import digits_dataset
from explorer.guard import check
from explorer.models.head_to_head import (CANVAS, MAX_SHIFT, MODELS, RESULT_FILES, default_head_to_head_dir,
                                          load_head_to_head, load_results)
from explorer.viz._spec import figure_spec
from explorer.viz.head_to_head import (digit_spec, flip_rows, learning_curves_figure, probability_spec,
                                       shift_flips_figure)

__all__ = ["HeadToHeadApp", "NAMES", "OVERLAYS", "IG_STEPS", "EFFICIENCY_FILE"]

IG_STEPS = 32  # interpolation steps of Integrated Gradients (32 images of 24 x 24: milliseconds)
EFFICIENCY_FILE = RESULT_FILES["data_efficiency"]
SHIFT_MODE = "circular"  # what leaves one side re-enters on the other: the digit is never cut
RANDOM_SEED = 0  # the "random image" button's generator: the same sequence in every session (reproducible lessons)
NAMES = {"cnn": "CNN", "se_cnn": "SE-CNN", "vit": "ViT", "vit_nopos": "ViT without positions",
         "hybrid": "hybrid (conv stem + ViT)"}
# overlay value -> label; the last two only for models with attention
OVERLAYS = {"ig": "Integrated Gradients", "gradient": "logit gradient (ERF)", "rollout": "attention rollout",
            "attention": "attention of one layer / head"}
_ATTENTION_ONLY = ("rollout", "attention")
# LooksAt.on_digit keys -> what the share line calls them
SHARE_NAMES = {"gradient": "logit gradient", "ig": "Integrated Gradients", "attention": "last-layer attention",
               "rollout": "rollout"}
# why the attention controls are hidden, per model without attention
NO_ATTENTION = {
    "cnn": "The CNN has no attention to show: its weights are fixed kernels, the same at every position and for "
           "every image.",
    "se_cnn": "The SE-CNN's only attention is squeeze-and-excitation: one gate per channel, applied alike at every "
              "position, so there is no map over the pixels to show.",
}
_NOTE = ("<i>{why} Rollout and attention maps exist for the ViTs and the hybrid; here compare Integrated Gradients "
         "with the logit gradient (the effective receptive field of the predicted class).</i>")


def _efficiency(folder: Path) -> tuple[dict | None, str]:
    """``(data_efficiency results, "")``, or ``(None, why not)`` (HTML for the empty figure) when the file is missing
    or unreadable: the tab still shows everything else. The reason names the file, not the server's path."""
    name = html.escape(folder.name)
    try:
        return load_results("data_efficiency", folder), ""
    except FileNotFoundError:
        return None, f"no {EFFICIENCY_FILE} in {name}/ yet:<br>python -m explorer.train.head_to_head data_efficiency"
    except ValueError:
        return None, f"{EFFICIENCY_FILE} in {name}/ cannot be read"


class HeadToHeadApp:
    """Widget app over the shipped head-to-head classifiers (``assets/head_to_head``).

    Args:
        model: a key of :data:`explorer.train.head_to_head.MODELS` (``"cnn"``, ``"vit"``, ``"vit_nopos"``,
            ``"hybrid"``, ``"se_cnn"``).
        index: test image (0 .. 449 of ``digits_dataset("test", canvas=24, placement="centre")``).
        shift: pixels to move the digit right (negative: left), -4 .. 4, circular.
        overlay: a key of :data:`OVERLAYS`; ``"rollout"`` and ``"attention"`` only for models with attention.
        folder: holding the weights, ``equivariance.json`` and ``data_efficiency.json``; ``None`` = the shipped ones.

    After each run: ``result`` (the :class:`~explorer.analysis.looks_at.LooksAt` of the shown model and image; its
    maps explain the predicted class), ``image`` [height, width] (the shifted digit the model saw), ``label`` (the
    true class). Figures: ``figure`` (digit and overlay), ``probs_figure``, ``learning_figure`` (from
    ``data_efficiency.json``), ``flips_figure`` (from ``equivariance.json``). Texts: ``status`` (the prediction;
    its ``data-model`` / ``data-index`` / ``data-shift`` say what was computed), ``shares`` (map mass on the
    digit), ``attention_note`` (why a CNN has no attention controls), ``message`` (refusals and errors).
    """

    def __init__(self, model: str = "cnn", index: int = 0, shift: int = 0, overlay: str = "ig",
                 folder: str | Path | None = None) -> None:
        check_choice("model", model, tuple(MODELS))
        self.folder = default_head_to_head_dir() if folder is None else Path(folder)
        self.models = {name: load_head_to_head(name, self.folder) for name in MODELS}  # name -> (model, entry)
        self.images, self.labels = digits_dataset("test", canvas=CANVAS, placement="centre")  # [N, 1, H, W], [N]
        n = len(self.labels)
        for arg, value, low, high in (("index", index, 0, n - 1), ("shift", shift, -MAX_SHIFT, MAX_SHIFT)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{arg} must be an int in {low} .. {high}, got {value!r}")
        check_choice("overlay", overlay, tuple(OVERLAYS))
        if overlay in _ATTENTION_ONLY and not self._has_attention(model):
            raise ValueError(f"overlay {overlay!r} needs a model with attention; {model!r} has none "
                             f"(use 'ig' or 'gradient')")
        results = load_results("equivariance", self.folder)
        self.flip_rows = flip_rows(results["aggregates"]["equivariance"], SHIFT_MODE)  # model -> rows, by shift
        self.efficiency, self._no_efficiency = _efficiency(self.folder)  # None until the experiment has been run
        self._rng = np.random.default_rng(RANDOM_SEED)

        style = {"description_width": "90px"}
        self.model = W.Dropdown(options=[(self._label(name), name) for name in MODELS], value=model,
                                description="model", style=style, layout=W.Layout(width="430px"))
        self.index = W.BoundedIntText(index, min=0, max=n - 1, description="test image", style=style,
                                      layout=W.Layout(width="190px"))
        self.random = W.Button(description="Random image", icon="random", layout=W.Layout(width="140px"))
        self.shift = W.IntSlider(shift, -MAX_SHIFT, MAX_SHIFT, description="shift → (px)", style=style,
                                 layout=W.Layout(width="330px"))
        self.overlay = W.Dropdown(options=self._overlay_options(model), value=overlay, description="overlay",
                                  style=style, layout=W.Layout(width="330px"))
        self.layer = W.IntSlider(1, 1, 1, description="layer", style=style, layout=W.Layout(width="260px"))
        self.head = W.Dropdown(options=[("mean of heads", -1)], value=-1, description="head", style=style,
                               layout=W.Layout(width="200px"))
        self.attention_note = W.HTML()
        self.status = W.HTML()
        self.shares = W.HTML()
        self.message = W.HTML()
        for widget, name in ((self.model, "h2h-model"), (self.index, "h2h-index"), (self.random, "h2h-random"),
                             (self.shift, "h2h-shift"), (self.overlay, "h2h-overlay"), (self.layer, "h2h-layer"),
                             (self.head, "h2h-head"), (self.attention_note, "h2h-note"), (self.status, "h2h-status"),
                             (self.shares, "h2h-shares"), (self.message, "h2h-message")):
            widget.add_class(name)
        self._attention_controls = row([self.layer, self.head], align="center")
        self._attention_controls.add_class("h2h-attention-controls")

        self._busy = False
        self._results: dict[tuple, tuple] = {}  # (model, index, shift) -> (looks_at result, image, label)
        self._flip_specs: dict[tuple, dict] = {}  # (model, |shift|) -> flips figure spec
        self._set_model_controls()
        self._run()
        self.figure = PlotView(digit_spec(*self._digit_arrays()), "h2h-figure")
        self.probs_figure = PlotView(self._probs(), "h2h-probs")
        self.learning_figure = PlotView(self._learning(), "h2h-learning")
        self.flips_figure = PlotView(self._flips(), "h2h-flips")

        def on(action):
            return callback(action, self.message, "h2h-error")

        self.random.on_click(on(self._on_random))
        self.model.observe(on(self._on_model), names="value")
        for control in (self.index, self.shift):
            control.observe(on(self._on_input), names="value")
        for control in (self.overlay, self.layer, self.head):
            control.observe(on(self._refresh), names="value")

        aggregates = results["aggregates"]["accuracy"]
        spread = ", ".join(f"{NAMES[m]} {a['mean']:.1%} ± {a['std']:.1%}" for m, a in aggregates.items() if m in NAMES)
        self.widget = W.VBox([
            row([self.model, self.index, self.random], align="center"),
            row([self.shift, self.overlay], align="center"),
            self._attention_controls,
            self.attention_note,
            self.message,
            row([figure_box(self.figure, 400, min_width=300, max_width=480),
                 W.VBox([self.status, self.probs_figure, self.shares],
                        layout=W.Layout(flex="1 1 360px", min_width="300px", max_width="560px"))]),
            W.HTML("<b>All five side by side</b> <small>(from the training runs in "
                   "<code>assets/head_to_head</code>, not from this page)</small>"),
            row([figure_box(self.learning_figure, 460), figure_box(self.flips_figure, 460)]),
            W.HTML(f"<small>Test accuracy over {len(results['seeds'])} seeds: {html.escape(spread)}. A prediction flip is a test digit "
                   f"whose predicted class changes when it moves; the stride of a model's features decides which "
                   f"shifts it can follow exactly.</small>"),
            WidthWatcher(),
        ])
        self.widget.add_class("h2h-app")
        harden(self.widget, self.message, "h2h-error")

    # --- models and controls ----------------------------------------------------------------------------
    def _has_attention(self, name: str) -> bool:
        return hasattr(self.models[name][0], "blocks")  # the ViTs and the hybrid: transformer blocks

    def _label(self, name: str) -> str:
        entry = self.models[name][1]
        return (f"{NAMES[name]} · {entry['parameters']:,} parameters · "
                f"{entry['accuracy']['accuracy']:.1%} test accuracy")

    def _overlay_options(self, name: str) -> list[tuple[str, str]]:
        keys = [k for k in OVERLAYS if self._has_attention(name) or k not in _ATTENTION_ONLY]
        return [(OVERLAYS[k], k) for k in keys]

    def _set_model_controls(self) -> None:
        """Overlay choices, layer and head ranges for the chosen model; attention controls hidden for CNNs."""
        name = self.model.value
        model = self.models[name][0]
        with quietly(self):
            options = self._overlay_options(name)
            keep = self.overlay.value if self.overlay.value in {key for _label, key in options} else "ig"
            self.overlay.options = options
            self.overlay.value = keep
            if self._has_attention(name):
                layers, heads = len(model.blocks), model.config.heads
                self.layer.max = layers
                self.layer.value = min(self.layer.value, layers)
                if len(self.head.options) != heads + 1:
                    self.head.options = [("mean of heads", -1)] + [(str(h + 1), h) for h in range(heads)]
                    self.head.value = -1
                self._attention_controls.layout.display = None
                self.attention_note.value = ""
            else:
                self._attention_controls.layout.display = "none"
                why = NO_ATTENTION.get(name, f"The {NAMES[name]} has no attention layers.")
                self.attention_note.value = _NOTE.format(why=html.escape(why))
        self._attention_controls_enabled()

    def _attention_controls_enabled(self) -> None:
        on = self.overlay.value == "attention"
        self.layer.disabled = self.head.disabled = not on

    # --- computation ----------------------------------------------------------------------------------
    def _check_budget(self, model: torch.nn.Module) -> None:
        """Ask the memory guard for Integrated Gradients' batch (IG_STEPS images, activations kept for backward)."""
        if self._has_attention(self.model.value):
            config = model.config
            tokens = (CANVAS // config.patch) ** 2 + 1  # patches and [CLS]
            check("attention_math", tokens, d=config.embed, heads=config.heads, batch=IG_STEPS * 2 * config.depth)
        else:
            channels = max(model.config.channels)
            check("conv2d", CANVAS, d=channels, kernel_size=3, batch=IG_STEPS * 2 * len(model.config.channels))

    def _run(self) -> None:
        name, index, shift = self.model.value, self.index.value, self.shift.value
        model = self.models[name][0]
        self._check_budget(model)
        key = (name, index, shift)
        if key not in self._results:  # the same model, image and shift again (a slider moved back): nothing runs
            image = shift_images(self.images[index:index + 1], 0, shift, SHIFT_MODE)  # (1, 1, height, width)
            result = looks_at(model, image[0], steps=IG_STEPS)  # the maps explain the predicted class
            self._results[key] = (result, image[0, 0], int(self.labels[index]))
            while len(self._results) > 64:
                self._results.pop(next(iter(self._results)))
        self.result, self.image, self.label = self._results[key]
        self._update_text()

    def _overlay_map(self) -> np.ndarray:
        """(height, width) map the overlay control chose, from the last result."""
        r, kind = self.result, self.overlay.value
        if kind == "ig":
            return r.ig.numpy()
        if kind == "gradient":
            return r.gradient.numpy()
        if r.attention is None:  # a hostile or stale choice for a CNN: the control's options do not offer it
            raise ValueError(f"overlay {kind!r} needs a model with attention; {NAMES[self.model.value]} has none")
        if kind == "rollout":
            return r.rollout.numpy()
        layer = r.attention[self.layer.value - 1]  # (head, height, width)
        return (layer.mean(0) if self.head.value == -1 else layer[self.head.value]).numpy()

    def _overlay_title(self) -> str:
        kind = self.overlay.value
        if kind != "attention":
            return OVERLAYS[kind]
        head = "heads averaged" if self.head.value == -1 else f"head {self.head.value + 1}"
        return f"[CLS] attention, layer {self.layer.value}, {head}"

    def _digit_arrays(self) -> tuple[np.ndarray, np.ndarray, str]:
        shift = self.shift.value
        moved = "" if shift == 0 else f", moved {abs(shift)} px {'right' if shift > 0 else 'left'}"
        title = f"test image {self.index.value}{moved}: {self._overlay_title()}"
        return self.image.numpy(), self._overlay_map(), title

    def _probs(self):
        r = self.result
        return probability_spec(r.probs.numpy(), r.predicted, self.label)

    def _learning(self):
        curves = {} if self.efficiency is None else self.efficiency["curves"]
        return learning_curves_figure(curves, NAMES, selected=self.model.value, empty=self._no_efficiency)

    def _flips(self) -> dict:
        """The shipped flip rates with the chosen model and shift marked: built (validated) once per choice."""
        key = (self.model.value, abs(self.shift.value))
        if key not in self._flip_specs:
            self._flip_specs[key] = figure_spec(shift_flips_figure(self.flip_rows, NAMES, selected=key[0],
                                                                   shift=self.shift.value))
        return self._flip_specs[key]

    def _update_text(self) -> None:
        r, label = self.result, self.label
        verdict = "correct ✓" if r.predicted == label else f"wrong ✗ (it is a {label})"
        # data-*: what was computed, for tests and page scripts (the page's controls may be ahead of the kernel)
        self.status.value = (f"<div class='h2h-verdict' style='font-size:15px' data-model='{self.model.value}' "
                             f"data-index='{self.index.value}' data-shift='{self.shift.value}' "
                             f"data-predicted='{r.predicted}' data-label='{label}'>"
                             f"{html.escape(NAMES[self.model.value])} says "
                             f"<b>{r.predicted}</b> (p = {float(r.probs[r.predicted]):.2f}) — {verdict}</div>")
        area = float(self.image.ne(0).float().mean())  # what a uniform map would score
        shares = ", ".join(f"{SHARE_NAMES[k]} <b>{v:.0%}</b>" for k, v in r.on_digit.items() if k != "ig")
        self.shares.value = (f"<div class='h2h-share-line' style='font-size:13px'>Mass on the digit's pixels: "
                             f"{shares} (a uniform map: {area:.0%}; Integrated Gradients: 100 % by construction, "
                             f"its all-zero baseline makes it zero wherever the pixel is 0).</div>")

    def _refresh(self) -> None:
        if self._busy:
            return
        self._attention_controls_enabled()
        self.figure.update(digit_spec(*self._digit_arrays()))

    def _redraw(self) -> None:
        self.figure.update(digit_spec(*self._digit_arrays()))
        self.probs_figure.update(self._probs())

    # --- callbacks: public endpoints, run through ``callback`` (they never raise into the kernel) ----------
    def _on_random(self) -> None:
        n = len(self.labels)
        pick = int(self._rng.integers(0, n - 1))
        self.index.value = pick if pick < self.index.value else pick + 1  # never the image shown; observed: runs

    def _on_model(self) -> None:
        if self._busy:
            return
        self._set_model_controls()
        self._run()
        self._redraw()
        self.learning_figure.update(self._learning())
        self.flips_figure.update(self._flips())

    def _on_input(self) -> None:
        if self._busy:
            return
        self._run()
        self._redraw()
        self.flips_figure.update(self._flips())

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
