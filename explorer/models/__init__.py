"""Models built from explorer layers: the receptive-field conv stack and a BERT encoder with pretrained weights,
and the cross-modal shapes model."""

from explorer.models.bert import BertConfig, BertEncoder, BertOutput
from explorer.models.checkpoint import Encoding, Pretrained, Tokenizer, default_checkpoint_dir, load_pretrained
from explorer.models.conv_stack import ConvStackConfig, build_conv_stack
from explorer.models.cross_modal import CrossModalConfig, CrossModalModel, load_cross_modal

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
]
