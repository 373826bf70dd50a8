"""Cross-modal attention: text tokens of a question attend to image patches of a generated scene."""

from __future__ import annotations

import html
from collections import OrderedDict

import ipywidgets as W
import numpy as np
import torch

from explorer.apps._callbacks import callback, quietly, soon
from explorer.apps._comm_guard import harden
from explorer.apps._layout import WidthWatcher, figure_box, row
from explorer.apps._plot import PlotView
from explorer.analysis import (attention_localisation, integrated_gradients, pixel_localisation, stack_patterns,
                               upsample_patches)
from explorer.data.shapes import ANSWERS, COLOURS, SHAPES, VOCAB, generate_scene, question, tokenize
from explorer.guard import check
from explorer.hooks import record
from explorer.models.cross_modal import ANSWER_TOKEN, load_cross_modal
from explorer.viz.cross_modal import cross_modal_spec

__all__ = ["CrossModalApp"]

MAX_SEED = 1_000_000
MEMO = 32  # model outputs remembered per (seed, objects, question): about 0.2 MB each
IG_STEPS = 32  # interpolation steps of Integrated Gradients


class CrossModalApp:
    """Widget app over the shipped cross-modal model (``assets/cross_modal``).

    Args:
        seed: scene seed (0 .. 1,000,000).
        n_objects: objects per scene (1 .. 3).
        weights: folder with ``weights.safetensors`` and ``model_card.json``; ``None`` = the shipped ones.

    After each run: ``scene``, ``text``, ``tokens``, ``patterns`` [layer, head, token, patch], ``probs`` [answers],
    ``ig`` [height, width], ``attention_score`` and ``ig_score`` (LocalisationScore for this scene, or None when the
    question names no object of the scene).
    """

    def __init__(self, seed: int = 0, n_objects: int = 3, weights=None) -> None:
        self.model, self.card = load_cross_modal(weights)
        self._grid = tuple(self.model.grid)
        style = {"description_width": "80px"}
        self.seed = W.BoundedIntText(seed, min=0, max=MAX_SEED, description="scene", style=style,
                                     layout=W.Layout(width="200px"))
        self.new_scene = W.Button(description="New scene", icon="refresh")
        self.n_objects = W.IntSlider(n_objects, 1, 3, description="objects", style=style)
        self.kind = W.Dropdown(options=[("what shape is the <colour> object", "shape_of_colour"),
                                        ("what colour is the <shape>", "colour_of_shape")],
                               value="shape_of_colour", description="question", style=style,
                               layout=W.Layout(width="380px"))
        self.target = W.Dropdown(options=[], description="about", style=style, layout=W.Layout(width="220px"))
        self.query = W.Text(description="or type", style=style, layout=W.Layout(width="380px"),
                            continuous_update=False)
        self.ask = W.Button(description="Ask", button_style="primary")
        layers = len(self.model.blocks)
        self.layer = W.IntSlider(1, 1, layers, description="layer", style=style)
        self.token = W.Dropdown(options=[], description="token", style=style, layout=W.Layout(width="220px"))
        self.answer = W.HTML()
        self.scores = W.HTML()
        self.message = W.HTML()
        for widget, name in ((self.seed, "xm-seed"), (self.new_scene, "xm-new-scene"), (self.kind, "xm-kind"),
                             (self.target, "xm-target"), (self.query, "xm-query"), (self.ask, "xm-ask"),
                             (self.layer, "xm-layer"), (self.token, "xm-token"), (self.answer, "xm-answer"),
                             (self.scores, "xm-scores"), (self.message, "xm-message")):
            widget.add_class(name)

        self._busy = False
        self._memo: OrderedDict[tuple, tuple] = OrderedDict()  # (seed, objects, question) -> model outputs
        self._make_scene()
        self._run()
        self.figure = PlotView(cross_modal_spec(*self._figure_arrays()), "xm-figure")

        def on(action):
            return callback(action, self.message, "xm-error")

        self.new_scene.on_click(on(self._on_new_scene))
        for control in (self.seed, self.n_objects):
            control.observe(on(self._on_scene), names="value")
        for control in (self.kind, self.target):
            control.observe(on(self._on_question), names="value")
        self.ask.on_click(on(self._on_typed))
        self.query.observe(on(self._on_typed), names="value")
        for control in (self.layer, self.token):
            control.observe(on(self._refresh), names="value")

        card = self.card
        loc = card["localisation"]
        self.widget = W.VBox([
            row([self.seed, self.new_scene, self.n_objects], align="center"),
            row([self.kind, self.target]),
            row([self.query, self.ask]),
            self.message,
            row([self.layer, self.token]),
            row([figure_box(self.figure, 640, min_width=360), W.VBox([self.answer, self.scores], layout=W.Layout(flex="0 1 330px",
                                                                                        min_width="280px"))]),
            W.HTML(f"<small>Model card: held-out accuracy {card.get('accuracy', float('nan')):.1%}; attention mass "
                   f"on the queried object {loc.get('mass', float('nan')):.1%} (chance "
                   f"{loc.get('chance_mass', float('nan')):.1%}). Vocabulary: {html.escape(' '.join(VOCAB[1:]))}"
                   f"</small>"),
            WidthWatcher(),
        ])
        self.widget.add_class("xm-app")
        harden(self.widget, self.message, "xm-error")

    # --- computation ----------------------------------------------------------------------------------
    def _make_scene(self) -> None:
        self.scene = generate_scene(self.seed.value, size=self.model.config.image_size,
                                    n_objects=self.n_objects.value)
        self._set_targets()

    def _set_targets(self) -> None:
        attribute = "colour" if self.kind.value == "shape_of_colour" else "shape"
        options = [getattr(obj, attribute) for obj in self.scene.objects]
        with quietly(self):
            self.target.options = options
            self.target.value = options[0]
            self.query.value = question(self.kind.value, self.target.value)

    def _target_index(self) -> int | None:
        """The scene object the question names (by colour or shape), or None."""
        words = set(self.tokens)
        for i, obj in enumerate(self.scene.objects):
            if obj.colour in words or obj.shape in words:
                return i
        return None

    def _evaluate(self, scene, seed: int, text: str) -> tuple:
        """``(patterns, probs, ig)`` of the model on ``scene`` (made from ``seed``) and ``text``, remembered per
        (seed, objects, text): a scene is a deterministic function of its seed, size and object count."""
        key = (seed, len(scene.objects), text)
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        ids = torch.tensor([tokenize(text)])  # (1, token); raises ValueError listing the vocabulary
        image = scene.image[None]  # (1, 3, height, width)
        # Integrated Gradients runs the model on IG_STEPS interpolated images at once, keeping activations for the
        # backward pass: ask the memory guard for that batch of every layer's patch attention first
        config = self.model.config
        check("attention_math", self._grid[0] * self._grid[1] + config.max_query, d=config.embed,
              heads=config.heads, batch=IG_STEPS * 2 * config.layers)
        with torch.no_grad(), record(self.model, "*.cross_attn.hook_pattern") as trace:
            logits = self.model(image, ids)  # (1, answers)
        patterns = stack_patterns(trace, "*.cross_attn.hook_pattern")[:, 0]  # (layer, head, token, patch)
        probs = logits.softmax(-1)[0]
        prediction = int(probs.argmax())
        ig = integrated_gradients(self.model, image, ids, target=torch.tensor([prediction]), steps=IG_STEPS)[0]
        self._memo[key] = (patterns, probs, ig)
        while len(self._memo) > MEMO:
            self._memo.popitem(last=False)
        return self._memo[key]

    def _prefetch(self) -> None:
        """Compute the next "New scene" (seed + 1, its first question) while the visitor looks at this one."""
        seed = (self.seed.value + 1) % (MAX_SEED + 1)
        scene = generate_scene(seed, size=self.model.config.image_size, n_objects=self.n_objects.value)
        attribute = "colour" if self.kind.value == "shape_of_colour" else "shape"
        self._evaluate(scene, seed, question(self.kind.value, getattr(scene.objects[0], attribute)))

    def _run(self) -> None:
        text = self.query.value
        self.patterns, self.probs, self.ig = self._evaluate(self.scene, self.seed.value, text)
        self.text = text
        self.tokens = [VOCAB[i] for i in tokenize(text)]
        self._target = self._target_index()
        # token 0 is the one the answer head reads: its attention is what localisation is measured on
        token_options = [("all tokens (mean)", -1)] + [
            (f"{i}: {t}" + (" (answer)" if i == ANSWER_TOKEN else ""), i) for i, t in enumerate(self.tokens)]
        with quietly(self):
            self.token.options = token_options
            self.token.value = ANSWER_TOKEN
        self._update_text()

    def _attention(self) -> torch.Tensor:
        """(head, patch) attention of the chosen token in the chosen layer."""
        layer = self.patterns[self.layer.value - 1]  # (head, token, patch)
        return layer.mean(1) if self.token.value == -1 else layer[:, self.token.value]

    def _update_text(self) -> None:
        prediction = int(self.probs.argmax())
        answer = ANSWERS[prediction]
        truth = None
        if self._target is not None:
            obj = self.scene.objects[self._target]
            truth = obj.shape if "shape" in self.tokens else obj.colour  # what the question asks, not the answer
        verdict = "" if truth is None else (" — correct ✓" if answer == truth else f" — wrong ✗ (it is {truth})")
        self.answer.value = (f"<div style='font-size:15px'>Q: <i>{html.escape(self.text)}?</i><br>"
                             f"A: <b class='xm-answer-word'>{answer}</b> (p = {self.probs[prediction]:.2f})"
                             f"{verdict}</div>")
        if self._target is None:
            self.attention_score = self.ig_score = None
            self.scores.value = "<i>The question names no object of this scene: no localisation score.</i>"
            return
        mask = self.scene.masks[self._target][None]  # (1, height, width)
        attn = self._attention().mean(0)[None]  # (1, patch), heads averaged
        self.attention_score = attention_localisation(attn, mask, self._grid)
        self.ig_score = pixel_localisation(self.ig[None], mask)
        a, g = self.attention_score, self.ig_score
        self.scores.value = (
            "<table class='xm-score-table' style='font-size:13px'><tr><th></th><th>mass on object</th>"
            "<th>argmax on object</th></tr>"
            f"<tr><td>attention</td><td class='xm-attn-mass'>{a.mass:.0%}</td><td>{'yes' if a.pointing else 'no'}"
            f"</td></tr><tr><td>Integrated Gradients</td><td>{g.mass:.0%}</td><td>{'yes' if g.pointing else 'no'}"
            f"</td></tr><tr><td>chance (object area)</td><td>{a.chance_mass:.0%}</td><td>{a.chance_pointing:.0%}"
            "</td></tr></table>")

    def _figure_arrays(self):
        size = tuple(self.scene.image.shape[-2:])
        heads = upsample_patches(self._attention(), self._grid, size)  # (head, height, width)
        image = (self.scene.image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        box = None
        if self._target is not None:
            rows, cols = np.nonzero(self.scene.masks[self._target].numpy())
            box = ((rows.min(), rows.max()), (cols.min(), cols.max()))
        return image, heads.mean(0).numpy(), self.ig.numpy(), heads.numpy(), box

    def _refresh(self) -> None:
        if self._busy:
            return
        # the figure before the text: the page handles the updates in the order they arrive
        self.figure.update(cross_modal_spec(*self._figure_arrays()))
        self._update_text()

    # --- callbacks: public endpoints, run through ``callback`` (they never raise into the kernel) ----------

    def _on_new_scene(self) -> None:
        self.seed.value = (self.seed.value + 1) % (MAX_SEED + 1)  # observed: triggers _on_scene
        # in a kernel, the next scene is computed right after this one is shown (none in tests: nothing extra runs)
        soon(self._prefetch, self.message, "xm-error", what="prepare the next scene", run_now=False)

    def _on_scene(self) -> None:
        # the figure reaches the page first; the controls the new scene changes (the target's options, the question)
        # right after it
        with self.target.hold_sync(), self.query.hold_sync():
            self._make_scene()
            self._run()
            self._refresh()

    def _on_question(self) -> None:
        if self._busy:
            return
        if self.target.value not in (COLOURS if self.kind.value == "shape_of_colour" else SHAPES):
            self._set_targets()  # the kind changed: offer the other attribute of the scene's objects
        else:
            with quietly(self):
                self.query.value = question(self.kind.value, self.target.value)
        self._run()
        self._refresh()

    def _on_typed(self) -> None:
        if self._busy:
            return
        self._run()
        self._refresh()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
