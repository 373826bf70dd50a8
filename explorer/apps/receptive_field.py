"""Receptive-field explorer: build a conv stack with sliders, see its theoretical and effective fields on a photo."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict

import ipywidgets as W
import numpy as np
import torch

from explorer.apps._callbacks import callback
from explorer.apps._comm_guard import harden
from explorer.apps._layout import WidthWatcher, row
from explorer.apps._plot import PlotView
from explorer.analysis import ZeroGradient, effective_receptive_field, receptive_field
from explorer.data import PHOTOS, load_photo
from explorer.guard import check
from explorer.models import ConvStackConfig, build_conv_stack
from explorer.viz.receptive_field import receptive_field_spec, rf_table_html

__all__ = ["ReceptiveFieldApp"]


MEMO = 64  # networks and effective fields remembered (a few MB at the default photo height)
DILATIONS = [("1", 1), ("2", 2), ("3", 3), ("4", 4), ("doubling 1, 2, 4, ...", "doubling")]


class ReceptiveFieldApp:
    """Widget app: sliders define a conv stack; the figure shows the field of one output position.

    The theoretical field comes from :func:`explorer.analysis.receptive_field` (graph analysis, no forward pass);
    the effective field from :func:`explorer.analysis.effective_receptive_field` (one backward pass).

    Args:
        config: starting architecture (default :attr:`DEFAULT`: six 3x3 convs with 2x2 max pooling every two).
        photo: one of ``explorer.data.PHOTOS``.
        height: photo height in pixels fed to the network (keeps interaction instant on a laptop CPU).
        erf_input: ``"photo"`` or ``"noise"`` (seeded Gaussian), the input the gradient is taken at.

    Attributes after each update: ``model``, ``rf`` (ReceptiveField), ``erf`` (EffectiveRF, or None when no
    gradient reaches the input from that position: dead ReLUs), ``position``
    (output row, col), ``output_shape`` (height, width of the network output).
    """

    DEFAULT = ConvStackConfig(layers=6, kernel_size=3, pool="max", pool_every=2)

    def __init__(self, config: ConvStackConfig | None = None, photo: str = "china", height: int = 128,
                 erf_input: str = "photo") -> None:
        config = config if config is not None else self.DEFAULT
        if not isinstance(config, ConvStackConfig):
            raise TypeError(f"config must be a ConvStackConfig, got {type(config).__name__}")
        if photo not in PHOTOS:
            raise ValueError(f"photo must be one of {sorted(PHOTOS)}, got {photo!r}")
        if erf_input not in ("photo", "noise"):
            raise ValueError(f"erf_input must be 'photo' or 'noise', got {erf_input!r}")
        self._height = height
        self._busy = False

        style = {"description_width": "110px"}
        layout = W.Layout(width="330px")
        self.layers = W.IntSlider(config.layers, 1, 12, description="conv layers", style=style, layout=layout)
        self.kernel = W.IntSlider(config.kernel_size, 1, 9, description="kernel size", style=style, layout=layout)
        self.stride = W.IntSlider(config.stride, 1, 3, description="stride", style=style, layout=layout)
        self.dilation = W.Dropdown(options=DILATIONS, value=config.dilation, description="dilation",
                                   style=style, layout=layout)
        self.pool = W.Dropdown(options=[("none", "none"), ("max 2×2", "max"), ("average 2×2", "avg")],
                               value=config.pool, description="pooling", style=style, layout=layout)
        self.pool_every = W.IntSlider(config.pool_every, 1, 4, description="pool every", style=style,
                                      layout=layout)
        self.activation = W.Dropdown(options=[("ReLU", "relu"), ("none (linear)", "none")],
                                     value=config.activation, description="activation", style=style, layout=layout)
        self.weights = W.Dropdown(options=[("random (seeded)", "random"), ("uniform", "uniform")],
                                  value=config.weights, description="weights", style=style, layout=layout)
        self.photo = W.Dropdown(options=sorted(PHOTOS), value=photo, description="photo", style=style,
                                layout=layout)
        self.erf_input = W.Dropdown(options=[("the photo", "photo"), ("random noise", "noise")], value=erf_input,
                                    description="ERF input", style=style, layout=layout)
        self.row = W.IntSlider(0, 0, 1, description="output row", style=style, layout=layout)
        self.col = W.IntSlider(0, 0, 1, description="output col", style=style, layout=layout)
        self._arch_controls = (self.layers, self.kernel, self.stride, self.dilation, self.pool, self.pool_every,
                               self.activation, self.weights)
        for control in self._arch_controls:
            control.add_class("rf-control")
        self.layers.add_class("rf-layers")
        self.kernel.add_class("rf-kernel")
        self.row.add_class("rf-row")
        self.col.add_class("rf-col")

        self.summary = W.HTML()
        self.summary.add_class("rf-summary")
        self.message = W.HTML()
        self.message.add_class("rf-message")
        self.table = W.HTML()

        # computed results, remembered per choice (a slider moved back and forth recomputes nothing):
        # (config, photo, ERF input) -> (model, field, output shape); (that key, position) -> ERF
        self._models: OrderedDict[tuple, tuple] = OrderedDict()
        self._erfs: OrderedDict[tuple, object] = OrderedDict()
        self._image = None  # (height, width, 3) uint8 shown
        self._input = None  # (1, 3, height, width) float tensor fed to the network
        self._load_input()
        self._rebuild(config, centre=True)
        self.figure = PlotView(self._make_figure(), "rf-figure")

        for control in self._arch_controls:
            control.observe(callback(self._on_arch, self.message, "rf-error"), names="value")
        for control in (self.photo, self.erf_input):
            control.observe(callback(self._on_input, self.message, "rf-error"), names="value")
        for control in (self.row, self.col):
            control.observe(callback(self._on_position, self.message, "rf-error"), names="value")

        controls = W.VBox([W.HTML("<b>Network</b>"), *self._arch_controls, W.HTML("<b>Input and position</b>"),
                           self.photo, self.erf_input, self.row, self.col])
        readings = W.VBox([self.summary, self.message, self.table], layout=W.Layout(flex="1 1 360px"))
        self.widget = W.VBox([row([controls, readings]), self.figure, WidthWatcher()])
        self.widget.add_class("rf-app")
        harden(self.widget, self.message, "rf-error")

    # --- what the sliders say ---------------------------------------------------------------------------
    @property
    def config(self) -> ConvStackConfig:
        return ConvStackConfig(layers=self.layers.value, kernel_size=self.kernel.value, stride=self.stride.value,
                               dilation=self.dilation.value, pool=self.pool.value, pool_every=self.pool_every.value,
                               activation=self.activation.value, weights=self.weights.value)

    def _load_input(self) -> None:
        photo = load_photo(self.photo.value, self._height)  # (3, height, width)
        self._image = (photo.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        if self.erf_input.value == "noise":
            generator = torch.Generator().manual_seed(0)
            self._input = torch.randn((1, *photo.shape), generator=generator)
        else:
            self._input = photo[None]

    # --- computation ----------------------------------------------------------------------------------
    def _guard(self, config: ConvStackConfig) -> None:
        """Ask the memory guard for the forward and backward pass of the stack on the input (every layer's
        activations kept for the gradient: one ``conv2d`` at the photo's size per layer, forward and backward)."""
        check("conv2d", max(self._input.shape[-2:]), d=max(config.channels, 3), kernel_size=config.kernel_size,
              batch=2 * config.layers)

    def _rebuild(self, config: ConvStackConfig, centre: bool) -> None:
        """New architecture: rebuild the model, its field table and the position sliders."""
        self._guard(config)
        key = (config, self.photo.value, self.erf_input.value)
        if key not in self._models:  # models are seeded: the same choices build the same network
            model = build_conv_stack(config)
            with torch.no_grad():
                out = model(self._input)  # (1, channel, out_height, out_width)
            if out.shape[-1] < 1 or out.shape[-2] < 1:
                raise ValueError("the stack shrinks the image to nothing; use fewer layers, stride or pooling")
            self._models[key] = (model, receptive_field(model), tuple(out.shape[-2:]))
        self._models.move_to_end(key)
        while len(self._models) > MEMO:
            self._models.popitem(last=False)
        self.model, self.rf, self.output_shape = self._models[key]
        self._model_key = key
        self._busy = True
        try:
            for slider, size in zip((self.row, self.col), self.output_shape):
                old_max = max(slider.max, 1)
                target = size // 2 if centre else round(slider.value * (size - 1) / old_max)
                slider.max = max(size - 1, 0)
                slider.value = min(max(target, 0), size - 1)
        finally:
            self._busy = False
        self._compute_erf()

    def _compute_erf(self) -> None:
        self.position = (self.row.value, self.col.value)
        self._guard(self.config)
        key = (self._model_key, self.position)
        if key not in self._erfs:
            try:
                self._erfs[key] = effective_receptive_field(self.model, self._input, position=self.position)
            except ZeroGradient:  # a real answer for this position, not a failure: the view shows it, nothing stale
                self._erfs[key] = None
        self._erfs.move_to_end(key)
        while len(self._erfs) > MEMO:
            self._erfs.popitem(last=False)
        self.erf = self._erfs[key]
        out = self.rf.output
        size, stride, padding = out.size, out.stride, out.padding
        if self.erf is None:
            erf_text = ("<span class='erf-none'>ERF: none — no gradient reaches the input from this position (every "
                        "path runs through a ReLU that is off for this input); try random noise as ERF input, linear "
                        "layers or another position</span>")
        else:
            erf_text = (f"ERF: 95% of |∂y/∂x| within <b><span class='erf-r95'>±{self.erf.radius[0.95]:.1f}</span>"
                        f"</b> px, std {self.erf.std[0]:.1f} px (<span class='erf-share'>"
                        f"{self._erf_share_in_rf():.0%}</span> of its mass inside the theoretical box)")
        self.summary.value = (
            f"<div class='rf-reading' data-position='{self.position[0]},{self.position[1]}' "
            f"data-layers='{self.layers.value}' data-activation='{self.activation.value}' "
            f"style='font-size:14px;line-height:1.6'>"
            f"Theoretical receptive field: <b><span class='rf-size' data-size='{size[0]}'>{size[0]} × {size[1]}"
            f"</span></b> px<br>effective stride <span class='rf-stride'>{stride[0]}</span>, "
            f"effective padding {padding[0]}, output {self.output_shape[0]} × {self.output_shape[1]}<br>"
            f"{erf_text}</div>")
        # elementwise layers (activations) repeat the row above them: list only the layers that grow the field
        self.table.value = rf_table_html([row for row in self.rf.table() if row["op"] != "elementwise"])

    def _erf_share_in_rf(self) -> float:
        (r0, r1), (c0, c1) = self.rf.output.box(self.position)
        grad = self.erf.grad
        h, w = grad.shape
        inside = grad[max(r0, 0):min(r1, h - 1) + 1, max(c0, 0):min(c1, w - 1) + 1].sum()
        return float(inside / grad.sum())

    def _boxes(self) -> tuple[tuple, tuple, tuple]:
        rf_box = self.rf.output.box(self.position)
        (r0, r1), (c0, c1) = rf_box
        centre = ((r0 + r1) / 2, (c0 + c1) / 2)
        if self.erf is None:  # no effective field: its dashed box collapses onto the centre
            return rf_box, ((centre[0], centre[0]), (centre[1], centre[1])), centre
        r95 = self.erf.radius[0.95]
        cy, cx = self.erf.centre
        erf_box = ((cy - r95, cy + r95), (cx - r95, cx + r95))
        return rf_box, erf_box, centre

    def _make_figure(self) -> dict:
        """The figure as a spec: built (validated) once per image size, then only its values change."""
        rf_box, erf_box, centre = self._boxes()
        erf = np.zeros(self._image.shape[:2], np.float32) if self.erf is None else self.erf.grad.numpy()
        return receptive_field_spec(self._image, erf, rf_box, erf_box, centre)

    # --- callbacks: public endpoints, run through ``callback`` (they never raise into the kernel) ----------
    def _on_arch(self) -> None:
        self._rebuild(self.config, centre=False)
        self.figure.update(self._make_figure())

    def _on_input(self) -> None:
        self._load_input()
        self._rebuild(self.config, centre=False)
        self.figure.update(self._make_figure())

    def _on_position(self) -> None:
        if not self._busy:
            self._compute_erf()
            self.figure.update(self._make_figure())

    def settings(self) -> dict:
        """The current choices as a plain dict (architecture + position)."""
        return {**asdict(self.config), "position": self.position, "photo": self.photo.value}

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
