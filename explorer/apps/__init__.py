"""Widget apps: one class per dashboard tab, shared by the notebooks and the Voila dashboard.

The app classes are imported when first used (PEP 562), so ``from explorer.apps import dashboard`` does not load
every app's dependencies (the attention app's pretrained-model code among them) before a tab needs them.
"""

from __future__ import annotations

import importlib

from explorer.apps.dashboard import dashboard

__all__ = ["AttentionMapsApp", "CostScalingApp", "CrossModalApp", "HeadToHeadApp", "InterveneApp", "LongRangeApp",
           "ReceptiveFieldApp", "SpeechApp", "dashboard"]

_MODULES = {
    "AttentionMapsApp": "explorer.apps.attention_maps",
    "CostScalingApp": "explorer.apps.cost_scaling",
    "CrossModalApp": "explorer.apps.cross_modal",
    "HeadToHeadApp": "explorer.apps.head_to_head",
    "InterveneApp": "explorer.apps.intervene",
    "LongRangeApp": "explorer.apps.long_range",
    "ReceptiveFieldApp": "explorer.apps.receptive_field",
    "SpeechApp": "explorer.apps.speech",
}


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'explorer.apps' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
