"""Models built from explorer layers: the receptive-field conv stack and a BERT encoder with pretrained weights,
the cross-modal shapes model, and four small image classifiers (CNN, ViT, hybrid, SE-CNN) for the head-to-head
lesson."""

from explorer.models.bert import BertConfig, BertEncoder, BertOutput
from explorer.models.checkpoint import Encoding, Pretrained, Tokenizer, default_checkpoint_dir, load_pretrained
from explorer.models.conv_stack import ConvStackConfig, build_conv_stack
from explorer.models.cross_modal import CrossModalConfig, CrossModalModel, load_cross_modal
from explorer.models.vision import (
    SECNN, VISION_MODELS, CNNConfig, HybridViT, HybridViTConfig, SECNNConfig, SmallCNN, SmallViT, ViTConfig,
    build_vision_model, parameter_table, weight_sharing_table,
)

__all__ = [
    "ConvStackConfig",
    "build_conv_stack",
    "BertConfig",
    "BertEncoder",
    "BertOutput",
    "Encoding",
    "Tokenizer",
    "Pretrained",
    "default_checkpoint_dir",
    "load_pretrained",
    "CrossModalConfig",
    "CrossModalModel",
    "load_cross_modal",
    "VISION_MODELS",
    "CNNConfig",
    "SECNNConfig",
    "ViTConfig",
    "HybridViTConfig",
    "SmallCNN",
    "SECNN",
    "SmallViT",
    "HybridViT",
    "build_vision_model",
    "parameter_table",
    "weight_sharing_table",
]
