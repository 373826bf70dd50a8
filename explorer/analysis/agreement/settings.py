"""The settings of the agreement study: measures, IG points, inputs, ``k`` per model, files and command.
"""

from __future__ import annotations


MEASURES = ("spearman", "kendall", "top_k")
# Gauss-Legendre points per model, chosen by the completeness delta on the 200 shipped inputs: the ViT (float64)
# needs 128 -- max |delta| over the digits at 32 / 64 / 128 points: gray baseline 1.6 / 0.054 / 4.9e-4 logits of a
# ~6.5 gap, black baseline 0.027 / 4.7e-4 / 7e-8; MiniLM's similarity (float32) at 32 points: max |delta| 1.8e-4
# ([PAD] baseline) and 9.3e-4 (zero baseline) of a ~0.35 gap, at most 0.32 % of an input's own gap.
IG_STEPS = {"vit": 128, "minilm": 32}
IG_METHOD = "gausslegendre"
DEFAULT_N = 200      # inputs per model
VIT_K = 4            # a centred 8 x 8 digit covers exactly 2 x 2 of the 4 x 4 patches
MINILM_K = 3         # sentences A have 10-15 tokens besides [CLS] / [SEP]
VIT_GRAY = 0.5       # second ViT baseline: uniform gray
SEED = 0             # sentence pairs and the digits' class-balanced order
THREADS = 1          # the machines' 2 cores are shared: one thread
LEVEL = 0.95
MODELS = ("vit", "minilm")
PRIMARY = "ig"
FORMAT = 1
JSON_FILE = "agreement.json"
REPORT_FILE = "REPORT.md"
COMMAND = "python -m explorer.analysis.agreement"
STRENGTH = ((0.6, "strong"), (0.3, "moderate"), (0.0, "weak"))  # mean rho at least -> word
