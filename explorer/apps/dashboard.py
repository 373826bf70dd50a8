"""The Voila dashboard: one tab per app, each app built when its tab is first opened.

``notebooks/dashboard.ipynb`` only calls :func:`dashboard`. Building every app at kernel start cost every visitor
the attention tab's pretrained model and all the apps' figures before the first plot; now the first tab is built
at once and each other tab on first selection (its module imported then too).

Above the tabs, one export bar (:class:`explorer.apps._export.ExportBar`) acts on the selected tab: PNG and SVG of
each of its figures, or an HTML snapshot (figures and the controls' values in one offline page), offered as
browser downloads. The notebook shows ``dashboard()``; what it displays is the bar above the tab widget.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import ipywidgets as W

from explorer.apps._callbacks import error_html, guarded
from explorer.apps._comm_guard import harden
from explorer.apps._export import ExportBar

__all__ = ["dashboard", "Dashboard", "TABS", "LOADING"]


def _lazy(module: str, name: str) -> Callable[[], object]:
    """A factory that imports ``module`` and builds ``name()`` only when called."""
    def build():
        return getattr(importlib.import_module(module), name)()
    return build


# (tab title, factory) in display order; later lessons append their apps here.
TABS = [
    ("Receptive fields", _lazy("explorer.apps.receptive_field", "ReceptiveFieldApp")),
    ("Attention maps", _lazy("explorer.apps.attention_maps", "AttentionMapsApp")),
    ("Cross-modal", _lazy("explorer.apps.cross_modal", "CrossModalApp")),
    ("Cost scaling", _lazy("explorer.apps.cost_scaling", "CostScalingApp")),
    ("Head to head", _lazy("explorer.apps.head_to_head", "HeadToHeadApp")),
    ("Long range", _lazy("explorer.apps.long_range", "LongRangeApp")),
    ("Intervene", _lazy("explorer.apps.intervene", "InterveneApp")),
    ("Speech", _lazy("explorer.apps.speech", "SpeechApp")),
]
LOADING = "<div class='dash-loading' style='padding:12px;color:#555'>Loading this tab …</div>"


class Dashboard(W.Tab):
    """The dashboard's tab widget. Displayed, it shows ``page``: the export bar (``export``) above the tabs."""

    def _repr_mimebundle_(self, **kwargs):
        page = getattr(self, "page", None)
        return page._repr_mimebundle_(**kwargs) if page is not None else super()._repr_mimebundle_(**kwargs)


def dashboard(tabs=None) -> Dashboard:
    """The tab widget; ``tab.apps[i]`` is tab i's app once it has been opened (None before); ``tab.export`` is the
    export bar acting on the selected tab and ``tab.page`` the bar and the tabs together (what is displayed).

    Args:
        tabs: ``[(title, factory)]``; default :data:`TABS`.

    A factory that fails leaves its tab showing the error (the kernel keeps running); selecting the tab again
    tries again.
    """
    tabs = TABS if tabs is None else tabs
    notice = W.HTML()
    notice.add_class("dash-notice")
    slots = [W.VBox() for _ in tabs]
    tab = Dashboard(children=slots)
    tab.notice = notice
    for i, (title, _factory) in enumerate(tabs):
        tab.set_title(i, title)
    tab.add_class("explorer-dashboard")
    tab.apps = [None] * len(tabs)

    def build(index: int | None) -> None:
        if index is None or tab.apps[index] is not None:
            return
        slot, factory = slots[index], tabs[index][1]
        message = W.HTML(LOADING)
        slot.children = (message,)

        def make() -> None:
            app = factory()
            tab.apps[index] = app
            slot.children = (notice, app.widget) if index == 0 else (app.widget,)
            message.close()  # its page view goes; nothing may address it any more

        if not guarded(make, message, "dash-error", what=f"open the {tabs[index][0]!r} tab", clear=False):
            message.value += error_html("dash-retry", "select another tab and come back to try again")

    tab.selected_index = 0
    tab.observe(lambda change: build(change["new"]), names="selected_index")
    build(0)
    # each app hardened itself (first guard wins); this covers the tab bar and the slots, whose refusals (a hostile
    # selected_index, say) are shown on the first tab, above its app
    harden(tab, tab.notice, "dash-error")

    def current() -> tuple[str, object | None]:
        index = tab.selected_index
        return (tabs[index][0], tab.apps[index]) if index is not None else ("dashboard", None)

    tab.export = ExportBar(current)
    # a new tab's export status is not the previous tab's
    tab.observe(lambda _change: tab.export.clear(), names="selected_index")
    tab.page = W.VBox([tab.export.widget, tab])
    tab.page.add_class("explorer-dashboard-page")
    harden(tab.page, tab.export.status, "export-error")  # the page box itself (bar and tabs are guarded)
    return tab
