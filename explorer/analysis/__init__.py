"""Analyses of models built from explorer layers (or any ``nn.Module``): receptive fields, attention statistics, ..."""

from explorer.analysis.attention import (
    attention_rollout,
    distance_histogram,
    downsample_pattern,
    head_entropy,
    mean_attention_distance,
    row_entropy,
    sink_share,
    special_token_mask,
    stack_patterns,
    streamed_statistics,
)
from explorer.analysis.cost import OPS, Cost, attention_matrix_bytes, cost
from explorer.analysis.localisation import (
    LocalisationScore,
    attention_localisation,
    integrated_gradients,
    patch_object_share,
    pixel_localisation,
    upsample_patches,
)
from explorer.analysis.receptive_field import (
    EffectiveRF,
    ReceptiveField,
    RFLayer,
    ZeroGradient,
    effective_receptive_field,
    receptive_field,
)

__all__ = [
    "EffectiveRF",
    "ReceptiveField",
    "RFLayer",
    "ZeroGradient",
    "effective_receptive_field",
    "receptive_field",
    "stack_patterns",
    "row_entropy",
    "head_entropy",
    "mean_attention_distance",
    "distance_histogram",
    "attention_rollout",
    "sink_share",
    "special_token_mask",
    "downsample_pattern",
    "streamed_statistics",
    "LocalisationScore",
    "patch_object_share",
    "attention_localisation",
    "pixel_localisation",
    "upsample_patches",
    "integrated_gradients",
    "OPS",
    "Cost",
    "cost",
    "attention_matrix_bytes",
]
