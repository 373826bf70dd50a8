"""Widget apps: one class per dashboard tab, shared by the notebooks and the Voila dashboard."""

from explorer.apps.attention_maps import AttentionMapsApp
from explorer.apps.cost_scaling import CostScalingApp
from explorer.apps.cross_modal import CrossModalApp
from explorer.apps.dashboard import dashboard
from explorer.apps.receptive_field import ReceptiveFieldApp

__all__ = ["AttentionMapsApp", "CostScalingApp", "CrossModalApp", "ReceptiveFieldApp", "dashboard"]
