"""MODEL_CARD.md of the tiny Whisper (:func:`explorer.models.speech_card.render_model_card`): rendered from a card
built here, with and without the alignment study's ``"alignment"``; the shipped MODEL_CARD.md is the rendering of
the shipped model_card.json (so the two cannot drift); the trainer renders through the same function. The
*Word timing* section names the chosen space convention (leading / trailing) in words; results without it ask for a
rerun."""

from __future__ import annotations

import copy
import json

import pytest

from explorer.models.speech import CARD_FILE, default_speech_dir
from explorer.models.speech_card import SPACE_TEXT, head_label, heads_label, render_model_card

FOLDER = default_speech_dir()


def _interval(mean: float, low: float, high: float) -> dict:
    return {"mean": mean, "low": low, "high": high}


def _card() -> dict:
    return {
        "espeak_version": "1.52.0", "words": 143, "seed": 0, "steps": 2400, "batch": 24, "lr": 0.002,
        "ctc_weight": 0.3, "threads": 1, "command": "python -m explorer.train.speech --steps 2400",
        "train_utterances": 8000, "train_voices": ["en-us+m1", "en-us+f1"], "rate_range": [140, 210],
        "pitch_range": [30, 70], "snr_range": [20.0, 40.0], "data_seconds": 196.4, "train_seconds": 640.1,
        "train_cpu_seconds": 639.6, "loss_curve": [3.2, 0.1364], "test_seed": 1,
        "test": {"utterances": 240, "wer": 0.18141, "cer": 0.1304, "exact": 0.4625,
                 "wer_by_voice": {"en-us+m7": 0.254, "en-us+f4": 0.1}},
        "parameters": 271518, "torch_version": "2.13.0+cpu",
        "config": {"encoder_layers": 2, "decoder_layers": 2, "embed": 64, "heads": 4, "max_frames": 400},
    }


def _alignment() -> dict:
    return {
        "file": "assets/speech/alignment.json", "report": "assets/speech/ALIGNMENT.md",
        "command": "python -m explorer.analysis.speech_study",
        "chosen_heads": [[1, 0], [1, 3]], "chosen_heads_label": "L2H1, L2H4", "filter_width": 3, "space": "trailing",
        "chosen_k": 2,
        "validation_utterances": 60, "validation_mae_ms": _interval(51.96, 47.04, 56.88),
        "whisper_width7_setting": {"heads": [[1, 0]], "heads_label": "L2H1", "k": 1, "filter_width": 7,
                                   "space": "leading", "validation_mae_ms": _interval(60.5, 55.0, 66.0)},
        "test_utterances": 120,
        "test": {
            "chosen": {"mae_ms": _interval(48.25, 44.04, 52.46), "f1_50": _interval(0.6512, 0.6101, 0.6923),
                       "f1_100": _interval(0.8876, 0.8632, 0.9120)},
            "whisper_width7": {"mae_ms": _interval(60.93, 55.5, 66.36), "f1_50": _interval(0.5836, 0.54, 0.6272),
                               "f1_100": _interval(0.802, 0.77, 0.834)},
            "best_head": {"mae_ms": _interval(70.6, 60.0, 81.2), "f1_50": _interval(0.55, 0.5, 0.6),
                          "f1_100": _interval(0.74, 0.7, 0.78)},
            "all_heads": {"mae_ms": _interval(55.0, 50.0, 60.0), "f1_50": _interval(0.6, 0.56, 0.64),
                          "f1_100": _interval(0.85, 0.82, 0.88)},
            "uniform": {"mae_ms": _interval(53.38, 48.2, 58.56), "f1_50": _interval(0.5584, 0.52, 0.5968),
                        "f1_100": _interval(0.8287, 0.8, 0.857)},
        },
        "targets": {"mae_below_40ms": "not held", "half_of_uniform": "not held"},
        "target_list": [{"claim": "chosen-setting MAE < 40 ms", "verdict": "not held"},
                        {"claim": "chosen-setting MAE <= 0.5 x the uniform split's", "verdict": "held"}],
    }


def _section(text: str) -> str:
    return text.split("## Word timing\n", 1)[1].split("## Limits", 1)[0]


def test_labels_are_one_based():
    assert head_label(0, 0) == "L1H1" and head_label(1, 3) == "L2H4"
    assert heads_label([[1, 0], (0, 2)]) == "L2H1, L1H3" and heads_label("all") == "all heads"


def test_card_without_alignment_says_to_run_the_study():
    text = render_model_card(_card())
    assert text.startswith("# Tiny Whisper (speech)\n")
    assert "word error rate **18.1%**" in text and "character error rate\n  13.0%" in text
    assert "sentences exactly right 46.2%" in text and "  - `en-us+m7`: 25.4%" in text
    assert "271518 parameters" in text and "Final smoothed loss 0.136." in text
    assert "640 s training (640 CPU-seconds) + 196 s" in text
    assert "clips (up to 8 s)" in text
    section = _section(text)
    assert "Not measured yet: run `python -m explorer.analysis.speech_study`" in section
    assert "MAE" in section and "|" not in section


def test_card_with_alignment_renders_its_numbers():
    card = {**_card(), "alignment": _alignment()}
    text = render_model_card(card)
    assert text.startswith(render_model_card(_card()).split("## Word timing")[0])  # the rest unchanged
    section = _section(text)
    assert "Not measured yet" not in section
    assert ("alignment heads **L2H1, L2H4** (the top 2; named 1-based, L2H1 = decoder layer 2, head 1) with "
            "median-filter width **3** (60 ms) and the **trailing**-space convention (the space between two words "
            "ends the preceding word: a word starts at its first letter and ends at the next word's first letter, "
            "the last word at the end-of-text token), validation MAE 52.0 [47.0, 56.9] ms.") in section
    assert "made on the validation voices only (leading or trailing" in section
    card["alignment"].update(chosen_k="all", chosen_heads=[[0, 0], [0, 1]], chosen_heads_label="L1H1, L1H2")
    assert "**all 2 cross-attention heads** averaged (L1H1, L1H2; named 1-based" in _section(render_model_card(card))
    assert "Chosen on 60 validation utterances" in section
    assert "On 120 test utterances" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and "method" not in line]
    assert rows == [
        "| chosen setting (L2H1, L2H4, width 3, trailing space) | 48.2 [44.0, 52.5] | 65.1 % [61.0, 69.2] | "
        "88.8 % [86.3, 91.2] |",
        "| Whisper's recipe as published (width 7, leading space, heads chosen on validation at width 7: L2H1) | "
        "60.9 [55.5, 66.4] | 58.4 % [54.0, 62.7] | 80.2 % [77.0, 83.4] |",
        "| all heads averaged (width 3, trailing space) | 55.0 [50.0, 60.0] | 60.0 % [56.0, 64.0] | "
        "85.0 % [82.0, 88.0] |",
        "| uniform split (baseline: the words spread over the true speech span by letter count) | "
        "53.4 [48.2, 58.6] | 55.8 % [52.0, 59.7] | 82.9 % [80.0, 85.7] |",
    ]
    assert "70.6" not in section  # the best single head is in ALIGNMENT.md, not in the card
    assert ("Targets: chosen-setting MAE < 40 ms: **not held**; chosen-setting MAE <= 0.5 x the uniform split's: "
            "**held**.") in section
    assert "[ALIGNMENT.md](ALIGNMENT.md) (`assets/speech/ALIGNMENT.md`)" in section
    assert "`assets/speech/alignment.json`" in section
    # the leading convention, in its own words
    card["alignment"]["space"] = "leading"
    section = _section(render_model_card(card))
    assert f"and the **leading**-space convention ({SPACE_TEXT['leading']})" in section
    assert "as in Whisper's \" word\" tokens" in section
    assert "| chosen setting (L1H1, L1H2, width 3, leading space) |" in section


def test_card_does_not_change_the_card():
    card = {**_card(), "alignment": _alignment()}
    before = copy.deepcopy(card)
    render_model_card(card)
    assert card == before


def test_shipped_markdown_is_the_rendered_card():
    card = json.loads((FOLDER / CARD_FILE).read_text())
    assert (FOLDER / "MODEL_CARD.md").read_text() == render_model_card(card)


def test_trainer_renders_through_the_same_function(tmp_path, monkeypatch):
    """``--evaluate-only`` rewrites the card and its Markdown through render_model_card (model and data stubbed)."""
    from explorer.train import speech as train

    card = {**_card(), "alignment": _alignment()}
    monkeypatch.setattr("explorer.models.speech.load_speech", lambda folder: (None, dict(card)))
    monkeypatch.setattr(train, "_test_results", lambda model: card["test"])
    train._reevaluate(tmp_path)
    assert (tmp_path / "MODEL_CARD.md").read_text() == render_model_card(card)
    assert json.loads((tmp_path / "model_card.json").read_text()) == card


@pytest.mark.parametrize("alignment", [
    {"chosen_heads": [[1, 0]], "chosen": {"mae_ms": 60.9}},                         # before the width was chosen
    {k: v for k, v in _alignment().items() if k != "space"},                        # before the space was chosen
    {**_alignment(), "space": "middle"},
])
def test_card_with_an_older_alignment_asks_for_a_rerun(alignment):
    card = {**_card(), "alignment": alignment}
    section = _section(render_model_card(card))
    assert "predate the current study" in section and "python -m explorer.analysis.speech_study" in section
    assert "space convention" in section and "|" not in section
