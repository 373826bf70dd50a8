"""The Voila dashboard: one tab per app. ``notebooks/dashboard.ipynb`` only calls :func:`dashboard`."""

from __future__ import annotations

import ipywidgets as W

from explorer.apps.attention_maps import AttentionMapsApp
from explorer.apps.cost_scaling import CostScalingApp
from explorer.apps.cross_modal import CrossModalApp
from explorer.apps.receptive_field import ReceptiveFieldApp

__all__ = ["dashboard", "TABS"]

# (tab title, factory) in display order; later lessons append their apps here.
TABS = [
    ("Receptive fields", ReceptiveFieldApp),
    ("Attention maps", AttentionMapsApp),
    ("Cross-modal", CrossModalApp),
    ("Cost scaling", CostScalingApp),
]


def dashboard() -> W.Tab:
    """Build every tab's app and return the tab widget (apps are kept on ``tab.apps``)."""
    apps = [factory() for _title, factory in TABS]
    tab = W.Tab(children=[app.widget for app in apps])
    for i, (title, _factory) in enumerate(TABS):
        tab.set_title(i, title)
    tab.add_class("explorer-dashboard")
    tab.apps = apps
    return tab
