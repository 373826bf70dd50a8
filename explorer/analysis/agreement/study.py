"""Attention vs attribution: how well do attention-based maps rank the inputs like integrated gradients?

The study itself: :func:`run` measures both models and writes ``agreement.json`` and ``REPORT.md``;
:func:`load_agreement` reads them back; :func:`main` is ``python -m explorer.analysis.agreement``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import explorer
from explorer._checks import check_int, check_type
from explorer._provenance import git_commit
from explorer.analysis.agreement.settings import (
    COMMAND, DEFAULT_N, FORMAT, IG_METHOD, IG_STEPS, JSON_FILE, MEASURES, MINILM_K, MODELS, PRIMARY, REPORT_FILE, SEED,
    THREADS, VIT_K
)
from explorer.analysis.agreement.stats import _round, agreement, paired_difference, pointing
from explorer.analysis.agreement.maps import ModelMaps, minilm_maps, vit_maps
from explorer.analysis.agreement.report import render_report


# --- the study ----------------------------------------------------------------------------------------------------


def analyse(result: ModelMaps, k: int) -> dict[str, Any]:
    """Agreement of every map with every IG reference, IG references with the primary, pointing, comparisons."""
    out: dict[str, Any] = {"agreement": {}, "calibration": {}, "pointing": {}, "comparisons": {}}
    for name, rows in result.maps.items():
        out["agreement"][name] = {ref: _strip_units(agreement(rows, ref_rows, k, result.keep))
                                  for ref, ref_rows in result.references.items()}
    for ref, ref_rows in result.references.items():
        if ref != PRIMARY:
            out["calibration"][ref] = _strip_units(agreement(ref_rows, result.references[PRIMARY], k, result.keep))
    for name, rows in {**result.maps, **result.references}.items():
        out["pointing"][name] = pointing(rows, result.targets, result.keep)
    raw = out["agreement"]["attention"][PRIMARY]
    for name in result.maps:
        if name != "attention":
            out["comparisons"][name] = {
                measure: paired_difference(out["agreement"][name][PRIMARY][measure]["values"], raw[measure]["values"])
                for measure in MEASURES}
    return out


def _strip_units(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in summary.items() if key != "n_units"}


def _ig_summary(run: dict[str, Any]) -> dict[str, Any]:
    """Per-input delta / gap / f(x) rounded as the maps' values, and the completeness summary computed from them."""
    run = {key: [_round(v) for v in value] if key in ("delta", "gap", "f_x") else value for key, value in run.items()}
    deltas = np.abs(np.asarray(run["delta"], dtype=np.float64))
    gaps = np.abs(np.asarray(run["gap"], dtype=np.float64))
    return {**run, "max_abs_delta": float(deltas.max()), "mean_abs_delta": float(deltas.mean()),
            "max_rel_delta": float((deltas / np.maximum(gaps, 1e-12)).max()),
            "mean_abs_gap": float(gaps.mean())}


def _metadata(command: str) -> dict[str, Any]:
    import captum

    return {"command": command, "git_commit": git_commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch_version": torch.__version__, "captum_version": captum.__version__,
            "numpy_version": np.__version__, "python_version": platform.python_version(),
            "platform": platform.platform(), "threads": torch.get_num_threads()}


def _model_entry(name: str, result: ModelMaps, k: int, description: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    analysed = analyse(result, k)
    seconds = {**{key: round(value, 2) for key, value in result.seconds.items()},
               "agreement": round(time.perf_counter() - start, 2)}
    return {**description, "n_inputs": len(result.inputs), "k": k, "primary_reference": PRIMARY,
            "maps": list(result.maps), "references": list(result.references),
            "ig": {ref: _ig_summary(run) for ref, run in result.ig.items()},
            **analysed, "inputs": result.inputs, "seconds": seconds}


def _run_vit(n: int, steps: int, log: Callable[[str], None]) -> dict[str, Any]:
    from explorer.data.digits import digits_dataset, digits_indices
    from explorer.models.head_to_head import CANVAS, PLACEMENT, load_head_to_head

    start = time.perf_counter()
    model, entry = load_head_to_head("vit")
    model = model.double()
    images, labels = digits_dataset("test", canvas=CANVAS, placement=PLACEMENT, seed=SEED, n=n)
    indices = digits_indices("test", seed=SEED, n=n)
    loaded = time.perf_counter() - start
    result = vit_maps(model, images.double(), steps)
    for item, index, label in zip(result.inputs, indices, labels):
        item.update({"digit_index": int(index), "label": int(label)})
    result.seconds["load"] = loaded
    log(f"vit: maps of {n} digits in {sum(result.seconds.values()):.1f} s")
    correct = sum(item["predicted"] == item["label"] for item in result.inputs)
    return _model_entry("vit", result, VIT_K, {
        "model": "SmallViT of the image head-to-head, seed-0 weights (load_head_to_head('vit')), float64",
        "data": f"first {n} test digits of the class-balanced order (seed {SEED}), centred on a {CANVAS} x "
                f"{CANVAS} canvas", "accuracy_on_inputs": correct / n,
        "test_accuracy_of_weights": entry["accuracy"]["accuracy"],
        "units": "patches (4 x 4 pixels, 36), [CLS] excluded", "target": "logit of the predicted class",
        "readout": "[CLS] row", "pointing_target": "patches with ink (any nonzero pixel)",
    })


def _run_minilm(n: int, steps: int, log: Callable[[str], None]) -> dict[str, Any]:
    from explorer.data.sentence_pairs import sentence_pairs
    from explorer.models import load_pretrained

    start = time.perf_counter()
    pretrained = load_pretrained()
    pairs = sentence_pairs(n, seed=SEED)
    loaded = time.perf_counter() - start
    result = minilm_maps(pairs, pretrained, steps, progress=log)
    for index, item in enumerate(result.inputs):
        item["pair_index"] = index
    result.seconds["load"] = loaded
    log(f"minilm: maps of {n} pairs in {sum(result.seconds.values()):.1f} s")
    return _model_entry("minilm", result, MINILM_K, {
        "model": f"{pretrained.name} (explorer.models.load_pretrained, float32)",
        "data": f"sentence_pairs({n}, seed={SEED}) (explorer.data.sentence_pairs)",
        "units": "tokens of sentence A, [CLS] and [SEP] excluded",
        "target": "cosine of the mean-pooled embeddings of A and of a fixed sentence B",
        "readout": "mean of all query rows (mean pooling); attention_cls: the [CLS] row",
        "pointing_target": "tokens of the word A shares with B",
    })


def run(out: str | Path | None = None, n: int = DEFAULT_N, steps: int | None = None,
        models: Sequence[str] = MODELS, progress: bool = True) -> dict[str, Any]:
    """The study: maps and agreement for each model; writes ``agreement.json`` and ``REPORT.md`` to ``out``.

    Sets ``torch.set_num_threads(THREADS)`` (1) for the run and restores it afterwards.

    Args:
        out: folder (default :func:`default_agreement_dir`).
        n: inputs per model (2 .. 450: the ViT uses the 450 test digits at most).
        steps: IG integration points for every model; None: :data:`IG_STEPS` (per model).
        models: a subset of :data:`MODELS`.
        progress: print progress lines.

    Returns:
        The result dict written to ``agreement.json``.
    """
    check_int("n", n, 2, 450, note="inputs per model")
    if steps is None:
        per_model = dict(IG_STEPS)
    else:
        steps = check_int("steps", steps, 1, integral=True, note="integration points")
        per_model = {name: steps for name in MODELS}
    if isinstance(models, str) or not models or any(m not in MODELS for m in models):
        raise ValueError(f"models must be a non-empty list from {MODELS}, got {models!r}")
    folder = default_agreement_dir() if out is None else Path(out)
    log = (lambda line: print(line, flush=True)) if progress else (lambda line: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        start = time.perf_counter()
        command = " ".join([COMMAND, *sys.argv[1:]]) if progress else None
        result: dict[str, Any] = {"format": FORMAT, "metadata": _metadata(command), "settings": {
            "n": n, "ig_steps": {name: per_model[name] for name in models}, "ig_method": IG_METHOD, "seed": SEED,
            "interval": "two-sided 95 % Student-t interval of the mean over inputs (n - 1 degrees of freedom); "
                        "undefined per-input values (a constant map) are left out and counted in n_undefined",
            "top_k": "|top_k(map) & top_k(reference)| / k, ties at the k-th place shared out (expected overlap "
                     "under random tie-breaking); random = mean over inputs of k / units",
            "ceiling": "the best value any map can reach against a reference with tied units: the measure of the "
                       "reference's own order with its ties broken (1 without ties)",
            "rounding": "per-input values are rounded to 9 significant digits before they are summarised",
            "spearman": "Pearson correlation of average ranks", "kendall": "tau-b",
            "pointing": "share of the map's maximal units on the target; random = mean share of target units",
            "gradient_weighted_attention": "mean over heads of (A * dtarget/dA) clamped at 0; grad_attention: "
                                           "last layer; grad_rollout: R = I, R <- R + A_bar R over the layers "
                                           "(Chefer et al. 2021)",
            "rollout": "Abnar & Zuidema 2020: 0.5 A + 0.5 I, heads averaged, rows renormalised, product"},
            "models": {}}
        for name in models:
            result["models"][name] = (_run_vit if name == "vit" else _run_minilm)(n, per_model[name], log)
        result["total_seconds"] = round(time.perf_counter() - start, 1)
    finally:
        torch.set_num_threads(threads)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / JSON_FILE).write_text(_dumps(result))
    stored = json.loads((folder / JSON_FILE).read_text())  # the report is rendered from what was written
    (folder / REPORT_FILE).write_text(render_report(stored))
    log(f"done in {result['total_seconds']:.0f} s: {folder / JSON_FILE}, {folder / REPORT_FILE}")
    return stored


def _dumps(result: dict[str, Any]) -> str:
    """JSON with one line per list of numbers (per-input values) and indentation elsewhere."""
    text = json.dumps(result, indent=1, allow_nan=False)
    scalar = r"(?:-?\d[\d.eE+-]*|null|true|false)"
    return re.sub(rf"\[\n\s*({scalar}(?:,\n\s*{scalar})*)\n\s*\]",
                  lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", text) + "\n"


# --- files --------------------------------------------------------------------------------------------------------


def default_agreement_dir() -> Path:
    """``assets/agreement`` of the repository (next to the ``explorer`` package)."""
    return Path(explorer.__file__).resolve().parents[1] / "assets" / "agreement"


def load_agreement(folder: str | Path | None = None) -> dict[str, Any]:
    """The shipped (or a given folder's) ``agreement.json``.

    Raises:
        FileNotFoundError: no file (the message names the command that writes it).
        ValueError: not a result of this module (format or keys).
    """
    if folder is not None:
        check_type("folder", folder, (str, Path), "a str, a Path or None")
    path = (default_agreement_dir() if folder is None else Path(folder)) / JSON_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; write it with `{COMMAND} --out {path.parent}`")
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(result, dict) or result.get("format") != FORMAT or not isinstance(result.get("models"), dict):
        raise ValueError(f"{path} is not an agreement result of format {FORMAT}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder (default: assets/agreement)")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help=f"inputs per model (default {DEFAULT_N})")
    parser.add_argument("--steps", type=int, default=None, help=f"IG points for every model (default {IG_STEPS})")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--report-only", action="store_true",
                        help=f"only rewrite {REPORT_FILE} from the {JSON_FILE} already in --out")
    args = parser.parse_args(argv)
    if args.report_only:
        folder = default_agreement_dir() if args.out is None else args.out
        (folder / REPORT_FILE).write_text(render_report(load_agreement(folder)))
        return 0
    run(args.out, n=args.n, steps=args.steps, models=args.models)
    return 0
