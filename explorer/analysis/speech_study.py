"""Word timings from the tiny Whisper's cross-attention, measured against eSpeak NG's exact word times.

``python -m explorer.analysis.speech_study [--model-dir DIR] [--out DIR] [--n-val 60] [--n-test 120]`` (about a
minute on one thread, synthesis included) runs Whisper's word-timing recipe (:mod:`explorer.analysis.alignment`)
on a trained :class:`~explorer.models.speech.TinyWhisper` (:func:`~explorer.models.speech.load_speech`; the shipped
one in ``assets/speech`` by default):

1. **Setting, on validation voices.** ``make_utterances(n_val, "validation", seed=2)`` (voices the model never
   heard, none of them a test voice). The grid is space convention x median-filter width x ``k``. The *space
   convention* (:data:`SPACES`; :mod:`explorer.analysis.alignment`) says which word owns the space between two
   words, a token of its own in this character vocabulary: ``"leading"`` = Whisper's ``" word"`` (the space starts
   the following word, whose start is read off the space), ``"trailing"`` = the space ends the preceding word (a
   word starts at its first letter and ends at the next word's first letter; the last word ends at EOT). For every
   convention and every width in :data:`FILTER_WIDTHS` (1, 3, 5, 7 frames of 20 ms; Whisper uses 7) every decoder
   cross-attention head is scored alone *with that convention at that width* (:func:`head_table`: MAE of the word
   boundaries, F1 at 50 and 100 ms; one head table per (space, width)), the heads are ranked by that validation
   MAE, and for each ``k`` in :data:`K_CHOICES` the top-``k`` heads are averaged and scored. The triple (space,
   width, ``k``) with the lowest validation MAE is the *chosen setting* (ties: ``"leading"`` before
   ``"trailing"``, then the smaller width, then the smaller ``k``); the chosen heads are thus the best ones for the
   chosen convention and width. *Whisper's recipe as published* is the best ``k`` at width 7 with the leading
   space (heads ranked at width 7, leading). Nothing of the setting is chosen on test voices.
2. **Test, on test voices.** ``make_utterances(n_test, "test", seed=3)``; per voice and overall, mean with a 95 %
   Student-t interval over utterances, for (a) ``chosen``: the chosen heads at the chosen width and space, (b)
   ``whisper_width7``: Whisper's recipe as published (width 7, leading space, heads chosen on validation at width
   7 with the leading space), (c) ``best_head``: the single best validation head at the chosen width and space,
   (d) ``all_heads``: every cross-attention head averaged at the chosen width and space, (e) ``uniform``: the words
   spread over the true speech span in proportion to their
   letters (:func:`~explorer.analysis.alignment.uniform_split`; it is given the true first start and last end, a
   generous baseline). Also the *inner* MAE (first start and last end left out, the two boundaries the baseline is
   given) and the paired per-utterance differences chosen - uniform and chosen - whisper_width7. Targets: chosen MAE
   < 40 ms and at most half the uniform split's MAE ("held" / "not held" on the means; "held on the mean only" when
   the MAE's 95 % interval reaches past 40 ms).
3. **Context.** The conv front end's receptive field (:func:`~explorer.analysis.receptive_field.receptive_field`) in
   mel frames and ms, and each encoder self-attention head's mean attention distance in ms
   (:func:`~explorer.analysis.attention.mean_attention_distance`, averaged over the test clips): how far the two
   kinds of layer look.

Utterance ``i`` of a split is the ``i``-th of ``make_utterances(n, split, seed)`` for any ``n > i`` (the generator
draws sentence, rate, pitch and noise for one utterance after the other, and the voice is ``i mod 6``), so a prefix
of either set can be re-synthesised alone (:func:`study_utterances`); ``tests/analysis/test_speech_study.py`` does
that for the first validation and test utterances and recomputes their stored scores.

Heads: the JSON stores 0-based ``[layer, head]`` pairs with a 1-based ``"label"`` beside them (``"L2H1"`` = decoder
layer 2, head 1, as the dashboard names them); all text (ALIGNMENT.md, log lines, MODEL_CARD.md) is 1-based.

Outputs (``--out``; default ``--model-dir``, or ``assets/speech`` when neither is given): ``alignment.json`` (every
per-utterance time and score, summaries computed from the stored rounded values, metadata) and ``ALIGNMENT.md``
rendered from it (:func:`render_report`); the headline numbers (:func:`headline`) go into ``model_card.json`` under
``"alignment"`` and ``MODEL_CARD.md`` is re-rendered from the card
(:func:`explorer.models.speech_card.render_model_card`). ``--model-dir DIR --out DIR`` evaluates a candidate model
in ``DIR`` and writes everything there; the run ends by printing the chosen setting's validation MAE (the number to
compare candidates on). :func:`load_alignment_results` reads the JSON; :func:`chosen_setting` reads the chosen
setting from it as keyword arguments of :func:`~explorer.analysis.alignment.align_words`
(``align_words(model, mel, text, **chosen_setting())``).

Main keys of ``alignment.json``: ``chosen_heads`` (0-based pairs), ``chosen_heads_label``, ``filter_width``,
``space`` (``"leading"`` or ``"trailing"``), ``targets`` (list of ``{"id", "claim", "verdict", "held", ...}``),
``validation`` (``chosen_heads``, ``filter_width``, ``space``, ``chosen_k``, ``grid`` (rows ``{"space",
"filter_width", "k", "heads", "label", "mae_ms", ...}`` in the tie order: space, width, k), ``head_tables``
(space -> str(width) -> one row per head), ``head_table`` (at the chosen space and width), ``best_per_space``
(space -> its best grid row in brief), ``whisper_width7``, ...), ``test`` (``overall`` -> method -> metric ->
``{"mean", "low", "high", "ci95", "std", "n"}``, ``methods`` (each with its ``heads``, ``filter_width`` and
``space``), ``utterances``, ``targets``, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from explorer._checks import check_int
from explorer.analysis.alignment import (
    FILTER_WIDTH, SPACE, SPACES, align_patterns, all_heads, boundary_errors, choose_heads, cross_attention,
    head_table, summarise, uniform_split, utterance_scores,
)
from explorer.analysis.attention import mean_attention_distance
from explorer.analysis.intervention_study.common import mean_text, metadata, read_json, rounded, write_json
from explorer.analysis.receptive_field import receptive_field
from explorer.data.speech import HOP_SECONDS, N_FFT, SAMPLE_RATE, espeak_version, log_mel, make_utterances, voices
from explorer.hooks import record
from explorer.models.shipped import CARD_REPORT_FILE, write_card
from explorer.models.speech import CARD_FILE, FRAME_SECONDS, default_speech_dir, load_speech
from explorer.models.speech_card import SPACE_TEXT, head_label, heads_label, render_model_card

__all__ = [
    "ALIGNMENT_FILE", "REPORT_FILE", "CARD_REPORT_FILE", "COMMAND", "SEEDS", "N_VAL", "N_TEST", "K_CHOICES",
    "FILTER_WIDTHS", "SPACES", "WHISPER_WIDTH", "WHISPER_SPACE", "WHISPER_SETTING", "METHODS", "MAE_TARGET_MS",
    "RATIO_TARGET", "study_utterances", "evaluate", "run", "headline", "render_report", "load_alignment_results",
    "chosen_setting", "main",
]

ALIGNMENT_FILE = "alignment.json"
REPORT_FILE = "ALIGNMENT.md"
COMMAND = "python -m explorer.analysis.speech_study"
SEEDS = {"validation": 2, "test": 3}
N_VAL, N_TEST = 60, 120
K_CHOICES: tuple[int | str, ...] = (1, 2, 3, 4, "all")
FILTER_WIDTHS = (1, 3, 5, 7)    # median filter widths tried on validation (frames of 20 ms)
WHISPER_WIDTH = FILTER_WIDTH    # 7: Whisper's medfilt_width
WHISPER_SPACE = SPACE           # "leading": Whisper's " word" tokens carry their leading space
# what chosen_setting() falls back to without a readable alignment.json: Whisper's recipe, every head averaged
WHISPER_SETTING: dict[str, Any] = {"heads": "all", "filter_width": WHISPER_WIDTH, "space": WHISPER_SPACE}
METHODS = ("chosen", "whisper_width7", "best_head", "all_heads", "uniform")
METRICS = ("mae_ms", "f1_50", "f1_100", "inner_mae_ms")
MAE_TARGET_MS = 40.0
RATIO_TARGET = 0.5
DIGITS = 9  # significant digits of every float in the JSON; summaries are computed from the rounded values


def _r(value: float, digits: int = DIGITS) -> float:
    return float(f"{float(value):.{digits}g}")


def _rounded(value: Any) -> Any:
    return rounded(value, DIGITS)


def _summary(values: Sequence[float]) -> dict[str, Any]:
    """:func:`summarise` of the values as the JSON stores them (rounded), itself rounded, with ``low`` and ``high``
    (the ends of ``ci95``) beside it."""
    return _bounded(summarise([_r(v) for v in values]))


def _bounded(s: dict[str, Any]) -> dict[str, Any]:
    """A :func:`summarise` dict rounded, with ``low`` and ``high`` beside ``ci95``."""
    s = _rounded(s)
    return {"mean": s["mean"], "low": s["ci95"][0], "high": s["ci95"][1], **s}


def study_utterances(split: str, n: int) -> list:
    """The first ``n`` utterances of the study's ``split`` (``"validation"`` or ``"test"``), seed :data:`SEEDS`."""
    if split not in SEEDS:
        raise ValueError(f"split must be one of {tuple(SEEDS)}, got {split!r}")
    return make_utterances(check_int("n", n, 1), split, seed=SEEDS[split])


def _patterns(model: torch.nn.Module, utterances: list, encoder: bool = False) -> tuple[list, list]:
    """Cross-attention ``[layer, head, token, frame]`` per utterance (and encoder distances ``[layer, head]`` in
    encoder frames, with the uniform-attention distance of the clip, when ``encoder``)."""
    cross, distances = [], []
    for u in utterances:
        mel = log_mel(u.audio)
        cross.append(cross_attention(model, mel, u.text))
        if encoder:
            names = [f"encoder.{i}.attn.hook_pattern" for i in range(model.config.encoder_layers)]
            with torch.no_grad(), record(model, names) as trace:
                model.encode(mel[None])
            d = torch.stack([mean_attention_distance(trace[name][0].double()) for name in names])  # (layer, head)
            n = trace[names[0]].shape[-1]
            distances.append((d.numpy(), (n * n - 1) / (3 * n)))
    return cross, distances


def evaluate(patterns: np.ndarray, utterance, heads: Sequence[tuple[int, int]] | str,
             filter_width: int = FILTER_WIDTH, space: str = SPACE) -> dict[str, Any]:
    """Word times and scores of one utterance with ``heads`` at ``filter_width`` with the ``space`` convention (or
    ``"uniform"``: the uniform split baseline, which ignores the width and the space).

    Returns:
        ``{"starts", "ends", "mae_ms", "f1_50", "f1_100", "inner_mae_ms"}`` (seconds; rounded as the JSON stores
        them). ``inner_mae_ms`` leaves out the first start and the last end (the two boundaries the uniform split is
        given): the MAE of the ``2 n - 2`` inner boundaries.
    """
    if isinstance(heads, str) and heads == "uniform":
        starts, ends = uniform_split(utterance.words, float(utterance.starts[0]), float(utterance.ends[-1]))
    else:
        a = align_patterns(patterns, utterance.text, heads, filter_width, FRAME_SECONDS, space)
        starts, ends = a.starts, a.ends
    errors = boundary_errors(starts, ends, utterance.starts, utterance.ends)  # starts, then ends
    return _rounded({"starts": starts, "ends": ends,
                     **utterance_scores(starts, ends, utterance.starts, utterance.ends),
                     "inner_mae_ms": float(errors[1:-1].mean() * 1000.0)})


def _pairs(heads: Sequence[tuple[int, int]]) -> list[list[int]]:
    return [[int(layer), int(head)] for layer, head in heads]


def _validation(model: torch.nn.Module, val_patterns: list, validation: list, log) -> dict[str, Any]:
    """Step 1: a head table per (space, filter width), the (space, width, k) grid, the chosen setting and
    Whisper's (width 7, leading space)."""
    layers, n_heads = model.config.decoder_layers, model.config.heads
    tables: dict[str, dict[str, list]] = {}
    grid: list[dict[str, Any]] = []  # in the tie order: space, then width, then k
    for space in SPACES:
        tables[space] = {}
        for width in FILTER_WIDTHS:
            table = head_table(val_patterns, validation, width, space)
            rows = [{"layer": r["layer"], "head": r["head"], "label": head_label(r["layer"], r["head"]),
                     "mae_ms": _summary(r["per_utterance_mae_ms"]),
                     "f1_50": _bounded(r["f1_50"]), "f1_100": _bounded(r["f1_100"]),
                     "per_utterance_mae_ms": _rounded(r["per_utterance_mae_ms"])} for r in table]
            tables[space][str(width)] = rows
            # rank on the stored (rounded) per-utterance means, exactly as a reader of the JSON would
            ranking = [{"layer": r["layer"], "head": r["head"], "mae_ms": {"mean": r["mae_ms"]["mean"]}}
                       for r in rows]
            cells = []
            for k in K_CHOICES:
                heads = all_heads(layers, n_heads) if k == "all" else choose_heads(ranking, k)
                scores = [evaluate(p, u, heads, width, space) for p, u in zip(val_patterns, validation)]
                cells.append({"space": space, "filter_width": width, "k": k, "heads": _pairs(heads),
                              "label": heads_label(heads),
                              **{key: _summary([s[key] for s in scores]) for key in ("mae_ms", "f1_50", "f1_100")},
                              "per_utterance_mae_ms": [s["mae_ms"] for s in scores]})
            grid += cells
            best_here = min(cells, key=lambda g: g["mae_ms"]["mean"])
            log(f"speech_study: validation space {space}, width {width}: best k = {best_here['k']} "
                f"({best_here['label']}), MAE {best_here['mae_ms']['mean']:.1f} ms")
    chosen = min(grid, key=lambda g: g["mae_ms"]["mean"])  # the first in grid order (the tie rule) on a tie
    whisper = min((g for g in grid if g["filter_width"] == WHISPER_WIDTH and g["space"] == WHISPER_SPACE),
                  key=lambda g: g["mae_ms"]["mean"])
    best_per_space = {space: min((g for g in grid if g["space"] == space), key=lambda g: g["mae_ms"]["mean"])
                      for space in SPACES}
    space, width = chosen["space"], chosen["filter_width"]
    table = tables[space][str(width)]
    best = min(table, key=lambda r: (r["mae_ms"]["mean"], r["layer"], r["head"]))
    return {"tables": tables, "grid": grid, "chosen": chosen, "whisper": whisper, "width": width, "space": space,
            "best_per_space": best_per_space, "best_head": [best["layer"], best["head"]]}


def run(out: Path | None = None, model_dir: Path | None = None, n_val: int = N_VAL, n_test: int = N_TEST,
        write: bool = True, log=print) -> dict[str, Any]:
    """Run the study (module docstring) on the model in ``model_dir`` (default: ``out``); write ``alignment.json``,
    ``ALIGNMENT.md``, the model card's ``"alignment"`` and MODEL_CARD.md into ``out`` (default: ``model_dir``, else
    ``assets/speech``) when ``write``. Returns the result dict."""
    n_val, n_test = check_int("n_val", n_val, 2), check_int("n_test", n_test, 2)
    if out is None:
        out = default_speech_dir() if model_dir is None else Path(model_dir)
    out = Path(out)
    model_dir = out if model_dir is None else Path(model_dir)
    tick = time.perf_counter()
    laps: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        laps[name] = round(now - tick, 2)
        tick = now
        log(f"speech_study: {name} {laps[name]} s")

    model, card = load_speech(model_dir)
    layers, n_heads = model.config.decoder_layers, model.config.heads
    validation, test = study_utterances("validation", n_val), study_utterances("test", n_test)
    lap("synthesis")

    # 1. filter width and heads, on validation voices
    val_patterns, _ = _patterns(model, validation)
    v = _validation(model, val_patterns, validation, log)
    chosen_row, whisper_row, width, space = v["chosen"], v["whisper"], v["width"], v["space"]
    chosen = [tuple(h) for h in chosen_row["heads"]]
    log(f"speech_study: chosen on validation: space {space}, filter width {width}, k = {chosen_row['k']} "
        f"({chosen_row['label']}), MAE {_ms(chosen_row['mae_ms'])} ms; Whisper's width 7, leading space: "
        f"k = {whisper_row['k']} ({whisper_row['label']}), MAE {_ms(whisper_row['mae_ms'])} ms")
    lap("validation grid (space x width x k)")
    method_setting = {
        "chosen": (chosen, width, space),
        "whisper_width7": ([tuple(h) for h in whisper_row["heads"]], WHISPER_WIDTH, WHISPER_SPACE),
        "best_head": ([tuple(v["best_head"])], width, space), "all_heads": (all_heads(layers, n_heads), width, space),
        "uniform": ("uniform", None, None)}

    # 2. test voices
    test_patterns, distances = _patterns(model, test, encoder=True)
    per_utterance = []
    for i, (p, u) in enumerate(zip(test_patterns, test)):
        per_utterance.append({
            "index": i, "voice": u.voice, "text": u.text, "duration": _r(u.duration),
            "true_starts": _rounded(u.starts), "true_ends": _rounded(u.ends),
            "methods": {m: evaluate(p, u, h, w or FILTER_WIDTH, sp or SPACE)
                        for m, (h, w, sp) in method_setting.items()}})
    lap("test alignment")
    test_voices = list(voices("test"))
    results: dict[str, Any] = {}
    for m in METHODS:
        heads, w, sp = method_setting[m]
        block: dict[str, Any] = {
            "heads": None if m == "uniform" else _pairs(heads), "label": None if m == "uniform" else heads_label(heads),
            "filter_width": w, "space": sp,
            "k": {"chosen": chosen_row["k"], "whisper_width7": whisper_row["k"], "best_head": 1,
                  "all_heads": "all"}.get(m), "overall": {}, "per_voice": {}}
        for key in METRICS:
            block["overall"][key] = _summary([r["methods"][m][key] for r in per_utterance])
        for voice in test_voices:
            rows = [r for r in per_utterance if r["voice"] == voice]
            if not rows:  # fewer test utterances than voices (tiny runs)
                continue
            block["per_voice"][voice] = {key: _summary([r["methods"][m][key] for r in rows]) for key in METRICS}
        results[m] = block
    chosen_mae, uniform_mae = results["chosen"]["overall"]["mae_ms"], results["uniform"]["overall"]["mae_ms"]
    ratio = chosen_mae["mean"] / uniform_mae["mean"]
    ratios = [r["methods"]["chosen"]["mae_ms"] / r["methods"]["uniform"]["mae_ms"] for r in per_utterance
              if r["methods"]["uniform"]["mae_ms"] > 0]

    def paired(a: str, b: str) -> dict[str, Any]:
        return {key: _summary([r["methods"][a][key] - r["methods"][b][key] for r in per_utterance])
                for key in ("mae_ms", "inner_mae_ms")}

    targets = {
        "mae_below_40ms": {"target": f"chosen-setting MAE < {MAE_TARGET_MS:g} ms", "value_ms": chosen_mae["mean"],
                           "ci95": chosen_mae["ci95"], "held": bool(chosen_mae["mean"] < MAE_TARGET_MS),
                           "upper_bound_below": bool(chosen_mae["ci95"][1] < MAE_TARGET_MS)},
        "half_of_uniform": {"target": f"chosen-setting MAE <= {RATIO_TARGET:g} x the uniform split's",
                            "ratio": _r(ratio), "held": bool(ratio <= RATIO_TARGET)},
    }
    for t in targets.values():
        t["verdict"] = "held" if t["held"] else "not held"
    mae_target = targets["mae_below_40ms"]
    if mae_target["held"] and not mae_target["upper_bound_below"]:  # the mean is below, the interval is not
        mae_target["verdict"] = f"held on the mean only (95 % interval up to {mae_target['ci95'][1]:.1f} ms)"
    target_list = [{"id": key, "claim": t["target"], "verdict": t["verdict"], "held": t["held"],
                    "value": t.get("value_ms", t.get("ratio"))} for key, t in targets.items()]

    # 3. receptive field of the conv front end, attention distance of the encoder heads
    rf = receptive_field(model.front_end(), spatial_dims=1)
    rf_frames, rf_stride = int(rf.output.size[0]), int(rf.output.stride[0])
    hop_ms, window_ms = HOP_SECONDS * 1000, N_FFT / SAMPLE_RATE * 1000
    receptive = {"mel_frames": rf_frames, "ms": _r((rf_frames - 1) * hop_ms + window_ms),
                 "stride_mel_frames": rf_stride, "stride_ms": _r(rf_stride * hop_ms),
                 "formula": "(rf - 1) x 10 ms hop + 25 ms window", "layers": _rounded(rf.table())}
    enc_layers = model.config.encoder_layers
    ms = FRAME_SECONDS * 1000
    distance_rows = [{"layer": layer, "head": head, "label": head_label(layer, head),
                      "distance_ms": _summary([d[layer, head] * ms for d, _ in distances])}
                     for layer in range(enc_layers) for head in range(model.config.heads)]
    attention = {"unit": "ms (encoder frames x 20 ms)", "heads": distance_rows,
                 "uniform_ms": _summary([u * ms for _, u in distances]),
                 "clip_ms": _summary([t["duration"] * 1000 for t in per_utterance])}
    lap("receptive field and attention distance")

    shown_model = "" if Path(model_dir).resolve() == out.resolve() else f" --model-dir {_shown(model_dir)}"
    meta = metadata(f"{COMMAND}{shown_model} --out {_shown(out)} --n-val {n_val} --n-test {n_test}")
    meta.update({"espeak_version": espeak_version(), "seeds": SEEDS, "n_val": n_val, "n_test": n_test,
                 "filter_width": width, "filter_widths": list(FILTER_WIDTHS), "whisper_filter_width": WHISPER_WIDTH,
                 "space": space, "spaces": list(SPACES), "whisper_space": WHISPER_SPACE,
                 "k_choices": list(K_CHOICES), "frame_seconds": FRAME_SECONDS, "tolerances_ms": [50, 100],
                 "out": _shown(out), "model_dir": _shown(model_dir), "seconds": laps,
                 "total_seconds": round(sum(laps.values()), 2),
                 "model": {"wer": card.get("test", {}).get("wer"), "words": card.get("words"),
                           "parameters": card.get("parameters"), "train_seconds": card.get("train_seconds"),
                           "heads": n_heads, "decoder_layers": layers, "command": card.get("command")}})
    k_rows = [{k: g[k] for k in ("k", "heads", "label", "mae_ms", "f1_50")} for g in v["grid"]
              if g["filter_width"] == width and g["space"] == space]
    result = {
        "metadata": meta,
        "chosen_heads": _pairs(chosen),
        "chosen_heads_label": heads_label(chosen),
        "filter_width": width,
        "space": space,
        "targets": target_list,
        "validation": {
            "voices": list(voices("validation")), "n": n_val,
            "filter_width": width, "space": space, "chosen_k": chosen_row["k"], "chosen_heads": _pairs(chosen),
            "chosen_heads_label": heads_label(chosen), "chosen_mae_ms": chosen_row["mae_ms"],
            "best_head": v["best_head"], "best_head_label": head_label(*v["best_head"]),
            "whisper_width7": {"filter_width": WHISPER_WIDTH, "space": WHISPER_SPACE, "k": whisper_row["k"],
                               "heads": whisper_row["heads"], "label": whisper_row["label"],
                               "mae_ms": whisper_row["mae_ms"]},
            "best_per_space": {sp: {key: g[key] for key in ("filter_width", "k", "heads", "label", "mae_ms")}
                               for sp, g in v["best_per_space"].items()},
            "grid": v["grid"],
            "head_table": v["tables"][space][str(width)],  # at the chosen space and width
            "head_tables": v["tables"],                     # space -> filter width (str) -> rows
            "k_choices": k_rows,                            # the grid at the chosen space and width
        },
        "test": {"voices": test_voices, "n": n_test,
                 "overall": {m: results[m]["overall"] for m in METHODS},
                 "methods": results, "ratio_chosen_to_uniform": _r(ratio),
                 "ratio_per_utterance": _summary(ratios), "chosen_minus_uniform": paired("chosen", "uniform"),
                 "chosen_minus_whisper_width7": paired("chosen", "whisper_width7"),
                 "targets": targets, "utterances": per_utterance},
        "receptive_field": receptive,
        "encoder_attention_distance": attention,
    }
    result = json.loads(json.dumps(_rounded(result)))  # tuples -> lists, exactly what the file holds
    if write:
        write_json(result, out / ALIGNMENT_FILE)
        (out / REPORT_FILE).write_text(render_report(result))
        card_path = out / CARD_FILE
        _update_card(card_path if card_path.is_file() else Path(model_dir) / CARD_FILE, out, result)
        log(f"speech_study: wrote {out / ALIGNMENT_FILE}, {out / REPORT_FILE}, {out / CARD_FILE}, "
            f"{out / CARD_REPORT_FILE}")
    log(f"speech_study: VALIDATION MAE of the chosen setting (model {_shown(model_dir)}; space {space}, filter "
        f"width {width}, k = {chosen_row['k']}: {chosen_row['label']}) = {_ms(chosen_row['mae_ms'])} ms over {n_val} "
        f"validation utterances; Whisper's width 7, leading space ({whisper_row['label']}) = "
        f"{_ms(whisper_row['mae_ms'])} ms")
    return result


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (so the stored command does not name this machine)."""
    root = default_speech_dir().parents[1]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def _brief(s: dict[str, Any]) -> dict[str, Any]:
    return {"mean": s["mean"], "low": s["low"], "high": s["high"]}


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers the model card keeps under ``"alignment"`` (what MODEL_CARD.md's *Word timing* shows).

    Besides the chosen setting (0-based ``chosen_heads``, ``chosen_heads_label``, ``filter_width``, ``space``,
    ``chosen_k``, ``validation_mae_ms``) and Whisper's width-7 setting (``whisper_width7_setting``, leading space)
    it holds per test method the
    means (``chosen`` -> metric -> mean, as before) and under ``"test"`` -> method -> ``mae_ms`` / ``f1_50`` /
    ``f1_100`` the means with their 95 % intervals (``{"mean", "low", "high"}``); ``targets`` maps each target to
    its verdict, ``target_list`` holds ``{"claim", "verdict"}``.
    """
    meta, val, test = result["metadata"], result["validation"], result["test"]
    methods, whisper = test["methods"], val["whisper_width7"]
    folder = meta["out"]
    return {
        "file": f"{folder}/{ALIGNMENT_FILE}", "report": f"{folder}/{REPORT_FILE}", "command": COMMAND,
        "chosen_heads": result["chosen_heads"], "chosen_heads_label": result["chosen_heads_label"],
        "filter_width": result["filter_width"], "space": result["space"], "chosen_k": val["chosen_k"],
        "validation_utterances": val["n"], "validation_mae_ms": _brief(val["chosen_mae_ms"]),
        "whisper_width7_setting": {"heads": whisper["heads"], "heads_label": whisper["label"], "k": whisper["k"],
                                   "filter_width": whisper["filter_width"], "space": whisper["space"],
                                   "validation_mae_ms": _brief(whisper["mae_ms"])},
        "test_utterances": test["n"],
        **{m: {key: methods[m]["overall"][key]["mean"] for key in METRICS} for m in METHODS},
        "test": {m: {key: _brief(methods[m]["overall"][key]) for key in ("mae_ms", "f1_50", "f1_100")}
                 for m in METHODS},
        "ratio_chosen_to_uniform": test["ratio_chosen_to_uniform"],
        "targets": {k: t["verdict"] for k, t in test["targets"].items()},
        "target_list": [{"claim": t["claim"], "verdict": t["verdict"]} for t in result["targets"]],
        "receptive_field_ms": result["receptive_field"]["ms"],
    }


def _update_card(source: Path, out: Path, result: dict[str, Any]) -> None:
    """Add/replace ``"alignment"`` in the model card read from ``source`` (other keys and their order kept), write
    it to ``out``/model_card.json and re-render ``out``/MODEL_CARD.md from it."""
    card = json.loads(source.read_text())
    card["alignment"] = headline(result)
    card.pop("alignment_summary", None)
    write_card(out, card, render_model_card(card))


# --- report -----------------------------------------------------------------------------------------------------


def _ms(s: dict[str, Any]) -> str:
    return mean_text(s, 1)


def _pct(s: dict[str, Any]) -> str:
    low, high = s["ci95"]
    return f"{100 * s['mean']:.1f} % [{100 * low:.1f}, {100 * high:.1f}]"


_LABELS = {"chosen": "the chosen setting, space convention, width and heads chosen on validation",
           "whisper_width7": ("Whisper's recipe as published, width 7 and the leading space, with heads chosen on "
                              "validation at width 7 with the leading space"),
           "best_head": "the best single validation head", "all_heads": "all heads averaged",
           "uniform": "uniform split (baseline)"}


def _difference_text(d: dict[str, Any], a: str = "chosen", b: str = "uniform") -> str:
    """Plain words for a paired difference a - b (ms) and its interval."""
    low, high = d["ci95"]
    names = {"chosen": "the chosen setting", "uniform": "the uniform split", "whisper_width7": "width 7"}
    if high < 0:
        verdict = f"{names[a]} is better"
    elif low > 0:
        verdict = f"{names[b]} is better"
    else:
        verdict = "no clear difference"
    return f"{a} - {b} = {_ms(d)} ms per utterance ({verdict})"


def _setting_text(k: int | str, label: str, n_heads: int, bold: bool = False) -> str:
    """``"the top-2 heads L2H1, L2H4"`` or ``"all 8 heads averaged (L1H1, ...)"``."""
    b = "**" if bold else ""
    if k == "all":
        return f"{b}all {n_heads} heads{b} averaged ({label})"
    return f"the top-{k} head{'s' if k != 1 else ''} {b}{label}{b}"


# how a word's boundaries are read off the path under each space convention (the comparison paragraph)
_READ_FROM = {"leading": "a word's start is read from its leading space",
              "trailing": "a word's start is read from its first letter, its end from the next word's first letter"}


def _method_text(m: dict[str, Any]) -> str:
    return f"{m['label']}, width {m['filter_width']}, {m['space']} space" if m["heads"] else "no heads"


def render_report(result: dict[str, Any]) -> str:
    """``ALIGNMENT.md``: the study's tables and claims, rendered from the JSON alone."""
    meta, val, test = result["metadata"], result["validation"], result["test"]
    methods, targets = test["methods"], test["targets"]
    rf, att = result["receptive_field"], result["encoder_attention_distance"]
    chosen, uniform = methods["chosen"]["overall"], methods["uniform"]["overall"]
    whisper = methods["whisper_width7"]["overall"]
    card = meta.get("model", {})
    width, widths, space, spaces = val["filter_width"], meta["filter_widths"], val["space"], meta["spaces"]
    same_w7 = (methods["chosen"]["heads"] == methods["whisper_width7"]["heads"] and width == WHISPER_WIDTH
               and space == WHISPER_SPACE)
    n_heads = len(val["head_table"])
    lines = [
        "# Word timings from cross-attention (tiny Whisper)",
        "",
        f"Generated by `{meta['command']}` into `{ALIGNMENT_FILE}` and rendered from it (torch "
        f"{meta['torch_version']}, eSpeak NG {meta['espeak_version']}, {meta['threads']} thread(s), "
        f"{meta['total_seconds']:.0f} s). Whisper's word-timing recipe (`explorer.analysis.alignment`): teacher-force "
        "the true text, take the decoder's cross-attention of the alignment heads, z-score each frame across the "
        "tokens, median-filter along the frames, average the heads, and run DTW on the negated matrix; a word starts "
        "at the first frame the path spends on its first token and ends where the next word (or `<eot>`) starts. "
        "Frames are 20 ms. This model's tokens are characters (about 70 ms each), which leaves two choices that "
        "Whisper's sub-word tokens make for it. The median-filter width: Whisper uses 7 (140 ms); here it is chosen "
        f"from {', '.join(str(w) for w in widths)}. And which word owns the space between two words, a token of its "
        "own here: **leading** = Whisper's `\" word\"` convention, the space starts the following word (a word "
        "after the first starts at its leading space); **trailing** = the space ends the preceding word (a word "
        "starts at its first letter and ends at the next word's first letter; the last word ends at `<eot>`). Both "
        "readings share the path and differ only in the inner word boundaries. The space convention, the width and "
        "the heads are chosen together on the validation voices only; the test voices are used for the reported "
        "numbers alone.",
        "",
        f"Validation: `make_utterances({val['n']}, \"validation\", seed={meta['seeds']['validation']})`; test: "
        f"`make_utterances({test['n']}, \"test\", seed={meta['seeds']['test']})`, voices the model never heard. "
        "Every number is a mean over utterances with its 95 % Student-t interval (which can leave [0, 100 %] for "
        "shares of small groups). MAE = mean absolute error of the 2·n word boundaries (starts and ends) in ms; "
        "inner MAE leaves out the first start and the last end, the two boundaries the uniform split is given. "
        "With forced alignment each true word has exactly one predicted span, so precision = recall and "
        "F1@50 / F1@100 = the share of boundaries within 50 / 100 ms (per utterance, then averaged). The true "
        "times are eSpeak NG's phoneme events (exact). Heads are named 1-based: L2H1 = decoder layer 2, head 1 "
        "(the JSON stores 0-based `[layer, head]` pairs with these labels beside them).",
        "",
        "## Headline",
        "",
        f"- Chosen on validation: the **{space}**-space convention ({SPACE_TEXT[space]}), median-filter width "
        f"**{width}** ({width * 20} ms) and "
        f"{_setting_text(val['chosen_k'], val['chosen_heads_label'], n_heads, bold=True)}, "
        f"validation MAE {_ms(val['chosen_mae_ms'])} ms. Best per convention: "
        + "; ".join(f"{sp}: width {b['filter_width']}, {_setting_text(b['k'], b['label'], n_heads)}, "
                    f"{_ms(b['mae_ms'])} ms" for sp, b in val["best_per_space"].items())
        + f". Whisper's width 7 with the leading space at its best k: "
        f"{_setting_text(val['whisper_width7']['k'], val['whisper_width7']['label'], n_heads)}, "
        f"{_ms(val['whisper_width7']['mae_ms'])} ms.",
        f"- Test, chosen setting: MAE **{_ms(chosen['mae_ms'])} ms**, F1@50 **{_pct(chosen['f1_50'])}**, F1@100 "
        f"**{_pct(chosen['f1_100'])}** on {test['n']} test utterances ({len(test['voices'])} voices).",
        f"- Test, Whisper's recipe as published (width 7, leading space, {methods['whisper_width7']['label']}"
        f"{'; the same setting as the chosen one' if same_w7 else ''}): MAE {_ms(whisper['mae_ms'])} ms, F1@50 "
        f"{_pct(whisper['f1_50'])}, F1@100 {_pct(whisper['f1_100'])}. Paired: "
        f"{_difference_text(test['chosen_minus_whisper_width7']['mae_ms'], 'chosen', 'whisper_width7')}.",
        f"- Uniform split given the true speech span (a generous baseline): MAE {_ms(uniform['mae_ms'])} ms, "
        f"F1@50 {_pct(uniform['f1_50'])}, F1@100 {_pct(uniform['f1_100'])}. Ratio of the mean MAEs chosen / "
        f"uniform = {test['ratio_chosen_to_uniform']:.2f}.",
        f"- All boundaries: {_difference_text(test['chosen_minus_uniform']['mae_ms'])}. Inner boundaries only "
        f"(MAE {_ms(chosen['inner_mae_ms'])} vs {_ms(uniform['inner_mae_ms'])} ms): "
        f"{_difference_text(test['chosen_minus_uniform']['inner_mae_ms'])}.",
        f"- Target MAE < {MAE_TARGET_MS:g} ms: **{targets['mae_below_40ms']['verdict']}**. Target MAE <= "
        f"{RATIO_TARGET:g} x the uniform split's: **{targets['half_of_uniform']['verdict']}**.",
    ]
    if card.get("wer") is not None:
        lines.append(f"- The model's held-out word error rate (model card): {card['wer']:.1%}.")
    ks = [r["k"] for r in val["grid"] if r["filter_width"] == widths[0] and r["space"] == spaces[0]]
    cell = {(r["space"], r["filter_width"], r["k"]): r for r in val["grid"]}
    lines += [
        "",
        f"## Validation: space convention x filter width x number of heads ({', '.join(val['voices'])}; "
        f"{val['n']} utterances)",
        "",
        "For each space convention (leading: the space starts the following word, Whisper's; trailing: the space "
        "ends the preceding word) and each median-filter width the heads are ranked by their validation MAE alone "
        "*with that convention at that width*, and the top-k are averaged. Validation MAE, ms (the chosen setting in "
        "bold; ties would go to leading before trailing, then the smaller width, then the smaller k):",
        "",
        "| space | k | " + " | ".join(f"width {w} ({w * 20} ms)" for w in widths) + " |",
        "|---|---|" + "---|" * len(widths),
    ]
    for sp in spaces:
        for k in ks:
            cells = []
            for w in widths:
                text = _ms(cell[(sp, w, k)]["mae_ms"])
                cells.append(f"**{text}**" if (sp, w, k) == (space, width, val["chosen_k"]) else text)
            lines.append(f"| {sp} | {k} | " + " | ".join(cells) + " |")
    lines += ["", "The heads behind each cell (top-k with that convention at that width):", "",
              "| space | k | " + " | ".join(f"width {w}" for w in widths) + " |",
              "|---|---|" + "---|" * len(widths)]
    for sp in spaces:
        for k in ks:
            lines.append(f"| {sp} | {k} | "
                         + " | ".join("all" if k == "all" else cell[(sp, w, k)]["label"] for w in widths) + " |")
    lines += [
        "",
        "## Test results per method and voice",
        "",
        "Methods: " + "; ".join(
            f"**{m}** = {_LABELS[m]}" + (f" ({_method_text(methods[m])})" if methods[m]["heads"] else "")
            for m in METHODS) + ".",
    ]
    for key, title, fmt in (("mae_ms", "MAE, ms", _ms), ("f1_50", "F1@50 ms", _pct), ("f1_100", "F1@100 ms", _pct),
                            ("inner_mae_ms", "Inner MAE (first start and last end left out), ms", _ms)):
        lines += ["", f"{title}:", "", "| voice | n | " + " | ".join(METHODS) + " |",
                  "|---|---|" + "---|" * len(METHODS)]
        rows = [("**all**", "overall"), *[(v, v) for v in test["voices"] if v in methods["chosen"]["per_voice"]]]
        for label, voice in rows:
            cells = [methods[m]["overall"][key] if voice == "overall" else methods[m]["per_voice"][voice][key]
                     for m in METHODS]
            lines.append(f"| {label} | {cells[0]['n']} | " + " | ".join(fmt(c) for c in cells) + " |")
    lines += [
        "",
        f"## Each head alone on validation voices ({val['n']} utterances)",
        "",
        f"Each decoder cross-attention head alone as the alignment head, with each space convention: validation MAE "
        f"in ms per filter width, and F1 at the chosen width {width}:",
        "",
        "| head | space | " + " | ".join(f"MAE width {w}" for w in widths)
        + f" | F1@50 (width {width}) | F1@100 (width {width}) |",
        "|---|---|" + "---|" * (len(widths) + 2),
    ]
    tables = val["head_tables"]
    for sp in spaces:
        for i, r in enumerate(tables[sp][str(width)]):
            lines.append(f"| {r['label']} | {sp} | " + " | ".join(_ms(tables[sp][str(w)][i]["mae_ms"]) for w in widths)
                         + f" | {_pct(r['f1_50'])} | {_pct(r['f1_100'])} |")
    distances = [r["distance_ms"]["mean"] for r in att["heads"]]
    lines += [
        "",
        "## How far the conv front end and the attention heads look",
        "",
        f"- Conv front end (conv k3 s1, conv k3 s2): receptive field **{rf['mel_frames']} mel frames = "
        f"{rf['ms']:g} ms** of audio ({rf['formula']}); one encoder frame every {rf['stride_mel_frames']} mel "
        f"frames = {rf['stride_ms']:g} ms.",
        f"- Encoder self-attention heads look {min(distances):.0f}-{max(distances):.0f} ms away on average (mean "
        f"attention distance over the test clips, which last {_ms(att['clip_ms'])} ms; attention spread uniformly "
        f"over a clip would give {_ms(att['uniform_ms'])} ms)"
        + (f": every head reaches beyond the front end's {rf['ms']:g} ms." if min(distances) > rf["ms"] else "."),
        "",
        "| head | mean attention distance ms |",
        "|---|---|",
    ]
    for r in att["heads"]:
        lines.append(f"| encoder {r['label']} | {_ms(r['distance_ms'])} |")
    model_facts = []
    if card.get("parameters"):
        model_facts.append(f"{card['parameters']:,} parameters")
    if card.get("train_seconds"):
        model_facts.append(f"trained here for {card['train_seconds'] / 60:.0f} minutes on CPU")
    words = f"{card['words']}-word" if card.get("words") else "small"
    lines += [
        "",
        "## Compared with published figures",
        "",
        f"Here the chosen setting reaches F1@50 {100 * chosen['f1_50']['mean']:.0f} % and F1@100 "
        f"{100 * chosen['f1_100']['mean']:.0f} %, MAE {chosen['mae_ms']['mean']:.0f} ms. For scale: Whisper "
        "medium.en with the same recipe reached F1 60 % at 50 ms and 86 % at 100 ms on 200 LibriSpeech utterances "
        "scored against the Montreal Forced Aligner (MFA) (k2-fsa/sherpa-onnx pull request 2945), and MFA itself is "
        "reported at about 21-27 ms mean boundary error against manual boundaries on TIMIT and Buckeye.",
        "",
        "The settings differ. In this study's favour: the speech is synthetic (eSpeak NG formant voices, no "
        "disfluencies, no real speakers), the reference times are eSpeak's own exact phoneme events rather than "
        "another aligner's or a phonetician's boundaries, the alignment is forced with the true text (no "
        f"recognition errors to absorb), the vocabulary is {words} in random order, and the sentences are short. "
        f"Against it: the model is tiny ({', '.join(model_facts) or 'trained here'}), its tokens are characters "
        f"({_READ_FROM[space]}), its frames are 20 ms, and nothing in its training "
        "supervises the cross-attention to align. The figures are therefore not comparable one to one; the "
        "within-study comparison with the uniform split is the informative one: "
        f"on all boundaries {_difference_text(test['chosen_minus_uniform']['mae_ms'])}; on the inner boundaries "
        f"{_difference_text(test['chosen_minus_uniform']['inner_mae_ms'])}.",
        "",
    ]
    return "\n".join(lines)


def load_alignment_results(folder: str | Path | None = None) -> dict[str, Any]:
    """The shipped ``alignment.json`` (from ``assets/speech`` by default).

    Raises:
        FileNotFoundError: the file is missing (the message names :data:`COMMAND`). ValueError: unreadable.
    """
    folder = default_speech_dir() if folder is None else Path(folder)
    return read_json(folder / ALIGNMENT_FILE, f"{COMMAND} --out {folder}")


def _setting_from(result: object) -> dict[str, Any]:
    """``{"heads", "filter_width", "space"}`` from a parsed ``alignment.json``; ValueError when malformed."""
    if not isinstance(result, dict):
        raise ValueError("the file does not hold a JSON object")
    validation = result.get("validation")
    chosen_k = validation.get("chosen_k") if isinstance(validation, dict) else None
    pairs = result.get("chosen_heads")
    if not isinstance(pairs, list) or not pairs or not all(
            isinstance(pair, list) and len(pair) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pair) for pair in pairs):
        raise ValueError(f"chosen_heads must be a non-empty list of 0-based [layer, head] pairs, got {pairs!r}")
    heads = [(pair[0], pair[1]) for pair in pairs]
    if len(set(heads)) != len(heads):
        raise ValueError(f"chosen_heads repeats a pair: {pairs!r}")
    width = result.get("filter_width")
    if not isinstance(width, int) or isinstance(width, bool) or width < 1 or width % 2 == 0:
        raise ValueError(f"filter_width must be an odd int >= 1, got {width!r}")
    # files written before the study chose the space convention were made with the leading space (Whisper's)
    space = result.get("space", WHISPER_SPACE)
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    return {"heads": "all" if chosen_k == "all" else heads, "filter_width": width, "space": space}


def chosen_setting(folder: str | Path | None = None) -> dict[str, Any]:
    """The word-timing setting chosen on the validation voices, as keyword arguments of
    :func:`~explorer.analysis.alignment.align_words`: ``align_words(model, mel, text, **chosen_setting())``.

    Read from ``folder``/alignment.json (``assets/speech`` by default, the study's output for the model there).

    Returns:
        A new dict ``{"heads": list of 0-based (layer, head) tuples, or "all" (the study chose every head
        averaged), "filter_width": int, "space": "leading" or "trailing"}``. A file written before the study chose
        the space convention reads as ``"leading"`` (the convention it was made with). When the file is missing,
        or unreadable or malformed (then with a :class:`RuntimeWarning` naming the file and the command that
        rewrites it), Whisper's own setting :data:`WHISPER_SETTING`: ``{"heads": "all", "filter_width": 7,
        "space": "leading"}``.
    """
    folder = default_speech_dir() if folder is None else Path(folder)
    path = folder / ALIGNMENT_FILE
    if not path.is_file():
        return dict(WHISPER_SETTING)
    try:
        return _setting_from(json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        warnings.warn(f"{path} cannot be read as the study's result ({error}); using Whisper's setting "
                      f"{WHISPER_SETTING}. Rerun `{COMMAND} --out {folder}`.", RuntimeWarning, stacklevel=2)
        return dict(WHISPER_SETTING)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (alignment.json, ALIGNMENT.md, model card); default: --model-dir, else "
                             "assets/speech")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="folder of the trained model to evaluate (default: --out, else assets/speech)")
    parser.add_argument("--n-val", type=int, default=N_VAL, help="validation utterances (width and head choice)")
    parser.add_argument("--n-test", type=int, default=N_TEST, help="test utterances (reported numbers)")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render ALIGNMENT.md and MODEL_CARD.md from the JSON files in --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out or args.model_dir or default_speech_dir()
    if args.report_only:
        result = load_alignment_results(out)
        (out / REPORT_FILE).write_text(render_report(result))
        _update_card(out / CARD_FILE, out, result)
        return result
    return run(out, args.model_dir or out, args.n_val, args.n_test)


if __name__ == "__main__":
    main(sys.argv[1:])
