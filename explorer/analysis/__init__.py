"""Analyses of models built from explorer layers (or any ``nn.Module``): receptive fields, ..."""

from explorer.analysis.receptive_field import (
    EffectiveRF,
    ReceptiveField,
    RFLayer,
    effective_receptive_field,
    receptive_field,
)

__all__ = ["EffectiveRF", "ReceptiveField", "RFLayer", "effective_receptive_field", "receptive_field"]
