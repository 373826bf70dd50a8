"""MODEL_CARD.md of the tiny Whisper, rendered from its ``model_card.json`` alone: :func:`render_model_card`.

Kept apart from ``explorer.train.speech`` (which trains and calls it) so that the alignment study
(``python -m explorer.analysis.speech_study``) and the tests can re-render the card without importing the trainer.
The *Word timing* section renders ``card["alignment"]`` (written by the study, see
:func:`explorer.analysis.speech_study.headline`) when present; otherwise it says how to add it. Heads are named
1-based in the text (``L2H1`` = decoder layer 2, head 1), as in the dashboard; the JSON keeps 0-based indices. The
section names the chosen *space convention* (``card["alignment"]["space"]``: which word owns the space between two
words, :data:`SPACE_TEXT`); results written before the study chose it ask for a rerun.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_model_card", "head_label", "heads_label", "STUDY_COMMAND", "CARD_METHODS", "SPACE_TEXT"]

STUDY_COMMAND = "python -m explorer.analysis.speech_study"
# test methods shown in the card's word-timing table, in order, with their plain names
CARD_METHODS = (("chosen", "chosen setting"), ("whisper_width7", "Whisper's recipe as published"),
                ("all_heads", "all heads averaged"), ("uniform", "uniform split"))
# the two readings of the space token (explorer.analysis.alignment), in words
SPACE_TEXT = {
    "leading": ("the space between two words starts the following word, as in Whisper's \" word\" tokens: a word "
                "after the first starts at its leading space"),
    "trailing": ("the space between two words ends the preceding word: a word starts at its first letter and ends at "
                 "the next word's first letter, the last word at the end-of-text token"),
}


def head_label(layer: int, head: int) -> str:
    """``"L{layer + 1}H{head + 1}"``: a 0-based ``(layer, head)`` named 1-based (``head_label(1, 0) == "L2H1"``)."""
    return f"L{int(layer) + 1}H{int(head) + 1}"


def heads_label(heads: Any) -> str:
    """``"L2H1, L2H4"`` for 0-based pairs ``[[1, 0], [1, 3]]`` (``"all heads"`` for ``"all"``)."""
    if isinstance(heads, str):
        return "all heads" if heads == "all" else heads
    return ", ".join(head_label(layer, head) for layer, head in heads)


def _ms(s: dict[str, Any]) -> str:
    return f"{s['mean']:.1f} [{s['low']:.1f}, {s['high']:.1f}]"


def _pct(s: dict[str, Any]) -> str:
    return f"{100 * s['mean']:.1f} % [{100 * s['low']:.1f}, {100 * s['high']:.1f}]"


def _word_timing(card: dict[str, Any]) -> str:
    """The *Word timing* section's body."""
    a = card.get("alignment")
    if not a:
        return (f"Not measured yet: run `{STUDY_COMMAND}` to add the word-timing results (alignment heads and median "
                "filter width chosen on validation voices; MAE and F1 of the word boundaries on test voices).")
    if "test" not in a or "filter_width" not in a or a.get("space") not in SPACE_TEXT:
        return (f"The stored word-timing results predate the current study (no filter width or space convention "
                f"chosen on validation): rerun `{STUDY_COMMAND}`.")
    test, width, space = a["test"], a["filter_width"], a["space"]
    whisper = a.get("whisper_width7_setting", {})
    method_notes = {
        "chosen": f"{a['chosen_heads_label']}, width {width}, {space} space",
        "whisper_width7": (f"width 7, leading space, heads chosen on validation at width 7: "
                           f"{whisper.get('heads_label', '?')}"),
        "all_heads": f"width {width}, {space} space",
        "uniform": "baseline: the words spread over the true speech span by letter count",
    }
    val = a["validation_mae_ms"]
    named = "named 1-based, L2H1 = decoder layer 2, head 1"
    if a["chosen_k"] == "all":
        heads_text = (f"**all {len(a['chosen_heads'])} cross-attention heads** averaged ({a['chosen_heads_label']}; "
                      f"{named})")
    else:
        heads_text = f"alignment heads **{a['chosen_heads_label']}** (the top {a['chosen_k']}; {named})"
    lines = [
        f"Whisper's word-timing recipe (`explorer.analysis.alignment`: cross-attention of the alignment heads, "
        f"z-scored per frame, median-filtered along time, averaged, DTW) measured by `{a['command']}` against "
        "eSpeak NG's exact word times. Chosen on "
        f"{a['validation_utterances']} validation utterances (voices unheard in training, none of them a test voice): "
        f"{heads_text} with median-filter width **{width}** "
        f"({width * 20} ms) and the **{space}**-space convention ({SPACE_TEXT[space]}), validation MAE {_ms(val)} ms. "
        "Our tokens are characters, so the space is a token of its own and which word owns it is a choice; like the "
        "heads and the width it was made on the validation voices only (leading or trailing, whichever gave the "
        "lower validation MAE).",
        "",
        f"On {a['test_utterances']} test utterances (held-out voices), mean [95 % interval]:",
        "",
        "| method | MAE ms | F1@50 ms | F1@100 ms |",
        "|---|---|---|---|",
    ]
    for key, name in CARD_METHODS:
        if key not in test:
            continue
        row = test[key]
        lines.append(f"| {name} ({method_notes[key]}) | {_ms(row['mae_ms'])} | {_pct(row['f1_50'])} | "
                     f"{_pct(row['f1_100'])} |")
    lines += ["", "Targets: " + "; ".join(f"{t['claim']}: **{t['verdict']}**" for t in a["target_list"]) + ".",
              "", f"Details (per voice, every head, the validation grid of space conventions x widths x heads): "
              f"[ALIGNMENT.md](ALIGNMENT.md) (`{a['report']}`), numbers in `{a['file']}`."]
    return "\n".join(lines)


def render_model_card(card: dict[str, Any]) -> str:
    """MODEL_CARD.md from the parsed ``model_card.json`` (as ``explorer.train.speech`` writes it, with the study's
    ``"alignment"`` when present)."""
    cfg = card["config"]
    voices = "\n".join(f"  - `{v}`: {w:.1%}" for v, w in card["test"]["wer_by_voice"].items())
    return f"""# Tiny Whisper (speech)

A speech recogniser with Whisper's layout (`explorer.models.speech.TinyWhisper`), trained here on synthetic speech
from eSpeak NG {card['espeak_version']} (PyPI wheel `espeakng-loader`): random sentences of 3-8 words from a
{card['words']}-word vocabulary (`explorer.data.speech.WORDS`), characters as tokens.

- **Architecture**: conv front-end (k3, then k3 stride 2, GELU; 20 ms per encoder frame), sinusoidal positions,
  {cfg['encoder_layers']} pre-norm encoder blocks; decoder with {cfg['decoder_layers']} blocks of causal
  self-attention, cross-attention to the audio frames and MLP, learned positions, tied output embedding; embed
  {cfg['embed']}, {cfg['heads']} heads; {card['parameters']} parameters (CTC head included).
- **Training data**: {card['train_utterances']} utterances, voices {', '.join(card['train_voices'])}; rate
  {card['rate_range'][0]}-{card['rate_range'][1]} words/min, pitch {card['pitch_range'][0]}-{card['pitch_range'][1]},
  white noise at {card['snr_range'][0]:.0f}-{card['snr_range'][1]:.0f} dB SNR; 16 kHz; Whisper's log-mel features.
- **Training**: `{card['command']}`; AdamW, lr {card['lr']}, batch {card['batch']}, {card['steps']} steps, loss =
  cross-entropy + {card['ctc_weight']} x CTC on the encoder (a training aid; nothing supervises the cross-attention);
  {card['train_seconds']:.0f} s training ({card['train_cpu_seconds']:.0f} CPU-seconds) + {card['data_seconds']:.0f} s
  synthesis on {card['threads']} CPU thread(s) (the worker process speaks on the other core),
  torch {card['torch_version']}. Final smoothed loss {card['loss_curve'][-1]:.3f}.
- **Held-out voices** ({card['test']['utterances']} utterances of `make_utterances(n, "test", {card['test_seed']})`,
  variants never heard in training): word error rate **{card['test']['wer']:.1%}**, character error rate
  {card['test']['cer']:.1%}, sentences exactly right {card['test']['exact']:.1%}. Per voice:
{voices}

## Word timing

{_word_timing(card)}

## Limits

Only eSpeak NG's formant voices, only the {card['words']} words of its vocabulary in random order (no grammar), short
clips (up to {cfg['max_frames'] * 0.02:.0f} s), light white noise. Real speech, other words or other synthesisers
are out of its reach; the word times it is measured against are eSpeak's own phoneme events, not human labels.
"""
