"""Long range, on the same input: where does a CNN stop seeing a pair d apart, and does dilation move that point?

``python -m explorer.train.long_range [--out DIR] [--seeds ...] [--steps N] [--workers K]``

The task (:mod:`explorer.data.sequences`): 320 random tokens with two marked tokens ``A`` and ``B`` ``d`` positions
apart; label = ``A`` comes first. The models (:mod:`explorer.models.sequence`): a residual CNN (receptive field 11),
the same CNN with dilations 1, 2, 4, 8, 16 (field 63) and a causal attention model, 16.4-16.9 k parameters each.
One model per (architecture, seed; seeds :data:`SEEDS`), trained on a log-uniform mixture of distances 1-256 (every
seed's models see the same stream of training batches; steps per model :data:`STEPS`, about 8-11 minutes on 2
cores for everything); accuracy measured at each of :data:`TEST_DISTANCES` on one fixed, seeded test
set (:data:`TEST_PER_DISTANCE` sequences per distance, labels balanced per distance). The prediction to test: a CNN
with field ``r`` is at chance for ``d >= r`` (no window of ``r`` positions holds both tokens); the field comes from
``explorer.analysis.receptive_field(model.features, spatial_dims=1)``.

For the attention model the mean attention distance of each layer and head is measured on the same test inputs
from ``blocks.{i}.attn.hook_pattern`` (:func:`attention_distance`): over all queries, from the later marked token,
and the attention weight the later marked token puts on the earlier one.

Deterministic on CPU: seeded initialisation and data, 1 thread per process, ``torch.use_deterministic_algorithms``;
two worker processes (spawn), one run each at a time. Adam with a one-cycle schedule. Writes ``long_range.json``
(every per-seed number, the statistics, metadata), the seed-0 weights ``<name>.safetensors`` and ``MODEL_CARD.md``
(generated from the JSON by :func:`write_model_card`); :func:`load_long_range` reads the JSON and
:func:`load_long_range_model` a model (both live in :mod:`explorer.models.long_range`, with the constants that describe
the shipped models and the test set; this module re-exports them).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from explorer._checks import check_int, check_real
from explorer._provenance import git_commit
from explorer.analysis.receptive_field import attention_receptive_field, receptive_field
# long_range_test_set stays importable from here (the test set itself is built in explorer.models.long_range)
from explorer.data.sequences import (
    LENGTH, MAX_DISTANCE, VOCAB, SequenceBatch, log_uniform_distances, log_uniform_probability, long_range_batch,
    long_range_test_set as long_range_test_set,
)
from explorer.hooks import record
from explorer.masks import causal
# the shipped side (constants, test set, loaders) lives in explorer.models.long_range: imported and re-exported here
from explorer.models.long_range import (
    MODELS, RESULTS_FILE, RETRAIN_COMMAND, TEST_DISTANCES, TEST_PER_DISTANCE, TEST_SEED, _check_name,
    accuracy_by_distance, default_long_range_dir, evaluation_set, load_long_range, load_long_range_model,
)
from explorer.models.sequence import build_sequence_model
# the seed checks and the t-interval (its T_975 table) of the head-to-head script: one rule for both
from explorer.train.stats import T_975, _check_names, _check_seeds, interval

__all__ = [
    "MODELS", "SEEDS", "STEPS", "BATCH", "LR", "TEST_DISTANCES", "TEST_PER_DISTANCE", "TEST_SEED",
    "ATTENTION_PER_DISTANCE", "ATTENTION_STATS", "CHANCE_BELOW", "SOLVED_FROM", "RESULTS_FILE", "RETRAIN_COMMAND",
    "T_975", "default_long_range_dir", "training_batch", "train", "evaluation_set", "accuracy_by_distance",
    "attention_distance", "attention_statistics", "interval", "failure_point", "loss_floor", "run_long_range",
    "summarise", "load_long_range", "load_long_range_model", "write_model_card", "main",
]

SEEDS = (0, 1, 2, 3)
# optimiser steps per model and the learning rate: set by hand (no sweep is shipped); the check that they suffice is
# in the results: every final training loss sits on the loss floor its model's field allows (MODEL_CARD.md).
STEPS = {"cnn": 3000, "dilated_cnn": 3000, "attention": 800}
BATCH = 32
LR = 3e-3
THREADS = 1  # one thread per process: two spin-waiting OpenMP threads slow down 9x when the 2 cores are shared
LOSS_EVERY = 50   # the JSON keeps the mean training loss of every 50 steps ...
FIRST_STEPS = 20  # ... and the first 20 per-step losses exactly (the reproduction test re-trains them)
FINAL_STEPS = 200  # "final training loss" = mean over the last 200 steps
ATTENTION_PER_DISTANCE = 64  # the first 64 test sequences of each distance feed the attention statistics
ATTENTION_STATS = ("all_queries", "later_token", "partner_weight", "self_weight")
CHANCE_BELOW = 0.6  # a mean accuracy under 60 % counts as failed (chance is 50 %)
SOLVED_FROM = 0.9   # a mean accuracy of 90 % or more counts as solved


# --- training ------------------------------------------------------------------------------------------------------


def training_batch(generator: torch.Generator, batch: int = BATCH) -> SequenceBatch:
    """One training batch from ``generator``: distances log-uniform on 1..256, then the sequences."""
    distances = log_uniform_distances(batch, MAX_DISTANCE, generator=generator)
    return long_range_batch(distances, generator=generator)


def train(name: str, *, seed: int = 0, steps: int | None = None, batch: int = BATCH, lr: float = LR,
          stop_after: int | None = None) -> tuple[nn.Module, list[float]]:
    """Train model ``name`` on a fresh stream of batches; returns ``(model in eval mode, loss of every step)``.

    The initial weights come from ``build_sequence_model(name, seed=seed)``, the batches from a
    ``torch.Generator`` seeded with ``seed`` (the same stream for every architecture). Adam with a one-cycle schedule
    (peak ``lr``) over ``steps`` (default ``STEPS[name]``); ``stop_after`` stops early on the same schedule (a
    prefix of the full run).
    """
    name = _check_name(name)
    steps = STEPS[name] if steps is None else steps
    check_int("seed", seed, 0)
    check_int("steps", steps, 1)
    check_int("batch", batch, 2)
    check_real("lr", lr, 0, low_open=True, finite=True)
    stop = steps if stop_after is None else check_int("stop_after", stop_after, 1)
    if stop > steps:
        raise ValueError(f"stop_after must be at most steps={steps}, got {stop}")
    model = build_sequence_model(name, seed=seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(stop):
        data = training_batch(generator, batch)
        loss = F.cross_entropy(model(data.inputs), data.labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    return model.eval(), losses


# --- attention statistics ---------------------------------------------------------------------------------------


def attention_distance(pattern: torch.Tensor) -> torch.Tensor:
    """Attention distance of each query: ``sum_k p(q, k) |q - k|``.

    Args:
        pattern: ``[..., query, key]`` self-attention probabilities (``query == key``).

    Returns:
        ``[..., query]``, in positions. Averaged over queries it is the mean attention distance of the ViT paper.
    """
    if not isinstance(pattern, torch.Tensor) or pattern.ndim < 2 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(f"pattern must be a [..., query, key] tensor with query == key, got "
                         f"{tuple(pattern.shape) if isinstance(pattern, torch.Tensor) else type(pattern).__name__}")
    n = pattern.shape[-1]
    pos = torch.arange(n, device=pattern.device)
    distance = (pos[:, None] - pos[None, :]).abs().to(pattern.dtype)  # (query, key)
    return (pattern * distance).sum(dim=-1)


@torch.no_grad()
def attention_statistics(model: nn.Module, data: SequenceBatch, chunk: int = 32) -> dict[str, dict[str, Any]]:
    """Per distance, per layer and head: mean attention distance over all queries and from the later marked token,
    and the weights the later marked token puts on the earlier one and on itself (on ``data``; the model's
    attention layers ``blocks.{i}.attn``; layers and heads are counted from 0 here, from 1 in the model card).

    Returns:
        ``{str(d): {stat: [[layer][head]], "n": int}}`` for each stat of :data:`ATTENTION_STATS` (means over the
        sequences of that distance).
    """
    model.eval()
    depth = len(model.blocks)  # type: ignore[arg-type]
    sums: dict[int, dict[str, torch.Tensor]] = {}
    counts: dict[int, int] = {}
    for i in range(0, len(data), chunk):
        part = slice(i, i + chunk)
        with record(model, "blocks.*.attn.hook_pattern") as trace:
            model(data.inputs[part])
        first, second, dist = data.first[part], data.second[part], data.distance[part]
        rows = torch.arange(len(first))
        stats: dict[str, list[torch.Tensor]] = {k: [] for k in ATTENTION_STATS}
        for layer in range(depth):
            pattern = trace[f"blocks.{layer}.attn.hook_pattern"].to(torch.float64)  # (batch, head, query, key)
            per_query = attention_distance(pattern)  # (batch, head, query)
            stats["all_queries"].append(per_query.mean(dim=-1))  # (batch, head)
            stats["later_token"].append(per_query[rows, :, second])  # (batch, head)
            stats["partner_weight"].append(pattern[rows, :, second, first])  # (batch, head)
            stats["self_weight"].append(pattern[rows, :, second, second])  # (batch, head)
        for d in dist.unique().tolist():
            sel = dist == d
            add = {k: torch.stack([t[sel].sum(dim=0) for t in v]) for k, v in stats.items()}  # (layer, head)
            if d not in sums:
                sums[d], counts[d] = add, 0
            else:
                sums[d] = {k: sums[d][k] + add[k] for k in add}
            counts[d] += int(sel.sum())
    return {str(d): {**{k: (v / counts[d]).tolist() for k, v in sums[d].items()}, "n": counts[d]}
            for d in sorted(sums)}


def _attention_subset(data: SequenceBatch, per_distance: int = ATTENTION_PER_DISTANCE) -> SequenceBatch:
    """The first ``per_distance`` sequences of each distance of the test set."""
    keep = torch.zeros(len(data), dtype=torch.bool)
    for d in data.distance.unique():
        keep[torch.nonzero(data.distance == d).flatten()[:per_distance]] = True
    return SequenceBatch(data.inputs[keep], data.tokens[keep], data.labels[keep], data.first[keep],
                         data.distance[keep], data.vocab)


# --- statistics -------------------------------------------------------------------------------------------------


def failure_point(curve: dict[str, dict[str, Any]], distances: list[int]) -> dict[str, Any]:
    """Where a model's accuracy-vs-distance curve fails.

    Args:
        curve: ``{str(d): interval(...)}`` of the per-seed accuracies.

    Returns:
        ``fails_from``: the smallest d whose mean accuracy is below :data:`CHANCE_BELOW` or whose 95 % interval
        includes 0.5 (None: none); ``solved_up_to``: the largest d below ``fails_from`` (or any, if none fails)
        whose mean is at least :data:`SOLVED_FROM` while every smaller d is too (None: d = 1 is not solved).
    """
    ds = sorted(distances)
    means = {d: curve[str(d)]["mean"] for d in ds}
    fails = next((d for d in ds if means[d] < CHANCE_BELOW or curve[str(d)]["ci95"][0] <= 0.5
                  <= curve[str(d)]["ci95"][1]), None)
    solved = None
    for d in ds:
        if means[d] < SOLVED_FROM or (fails is not None and d >= fails):
            break
        solved = d
    return {"fails_from": fails, "solved_up_to": solved}


def loss_floor(field: int | None, max_distance: int = MAX_DISTANCE) -> float:
    """Training loss of a model that is perfect where ``d < field`` and guesses (ln 2) where ``d >= field``, under
    the log-uniform training distances (None: no field limit, 0)."""
    if field is None:
        return 0.0
    return math.log(2) * sum(log_uniform_probability(d, max_distance) for d in range(field, max_distance + 1))


def _predicted_failure(field: int | None, distances: list[int]) -> int | None:
    """The smallest test distance a field of ``field`` positions cannot hold (``d >= field``)."""
    if field is None:
        return None
    return next((d for d in sorted(distances) if d >= field), None)


# --- the experiment ----------------------------------------------------------------------------------------------


def _metadata(progress: bool) -> dict[str, Any]:
    return {
        "experiment": "long_range",
        "command": " ".join([RETRAIN_COMMAND, *sys.argv[1:]]) if progress else None,
        "git_commit": git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "threads": THREADS,
        "deterministic_algorithms": True,
    }


def _run(job: tuple[str, int, int]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """One run ``(name, seed, steps)`` -> (its row, its weights); top level so worker processes can call it."""
    name, seed, steps = job
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    t = time.perf_counter()
    model, losses = train(name, seed=seed, steps=steps)
    seconds = time.perf_counter() - t
    data = evaluation_set()
    t = time.perf_counter()
    row: dict[str, Any] = {
        "train_seconds": round(seconds, 1),
        "final_train_loss": statistics.fmean(losses[-FINAL_STEPS:]),
        "first_losses": losses[:FIRST_STEPS],
        "loss_curve": [statistics.fmean(losses[i:i + LOSS_EVERY]) for i in range(0, len(losses), LOSS_EVERY)],
        "accuracy": accuracy_by_distance(model, data),
    }
    if name == "attention":
        row["attention"] = attention_statistics(model, _attention_subset(data))
    row["eval_seconds"] = round(time.perf_counter() - t, 1)
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    return row, state


def _fields() -> dict[str, dict[str, Any]]:
    """Each model's theoretical receptive field: CNNs from the graph of ``features``, attention from its mask."""
    out = {}
    for name in MODELS:
        model = build_sequence_model(name, seed=0)
        if hasattr(model, "features"):
            rf = receptive_field(model.features, spatial_dims=1)
            out[name] = {"size": rf.output.size[0], "source": "explorer.analysis.receptive_field(model.features, "
                         "spatial_dims=1).output.size", "layers": [[lay.name, lay.op, lay.size[0]] for lay in rf.layers
                                                              if lay.op in ("conv", "input")]}
        else:
            depth = model.config.depth
            arf = attention_receptive_field(causal(), LENGTH, depth)
            out[name] = {"size": None, "largest": int(arf.size.max()), "predicted": arf.predicted,
                         "source": f"explorer.analysis.attention_receptive_field(causal(), {LENGTH}, {depth}): query "
                                   "q sees positions 0..q; the pooled output sees all of them",
                         "formula": arf.formula}
    return out


def run_long_range(out: Path | None = None, seeds: list[int] | None = None, steps: int | None = None,
                   names: list[str] | None = None, workers: int = 2, progress: bool = True) -> dict[str, Any]:
    """Train every model of ``names`` with every seed, measure, and write the results into ``out``.

    ``steps``: for every model (default :data:`STEPS`, per model). Writes ``long_range.json``, the first seed's
    weights ``<name>.safetensors`` and ``MODEL_CARD.md``. ``workers``
    > 1 runs the jobs in that many spawned processes (one thread each: the same numbers as in one process).
    """
    from safetensors.torch import save_file

    out = default_long_range_dir() if out is None else Path(out)
    seeds = _check_seeds(list(SEEDS) if seeds is None else seeds)
    names = _check_names(names, MODELS)
    steps_of = {n: STEPS[n] for n in names} if steps is None else {n: check_int("steps", steps, 1) for n in names}
    check_int("workers", workers, 1)
    log = (lambda *a: print(*a, flush=True)) if progress else (lambda *a: None)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    fields = _fields()
    # the attention runs take longest: start them first so the two workers finish together
    order = sorted(names, key=lambda n: n != "attention")
    jobs = [(name, seed, steps_of[name]) for name in order for seed in seeds]
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(_run, jobs)
    else:
        pool, results = None, map(_run, jobs)
    per_seed: dict[str, dict[str, Any]] = {n: {} for n in names}
    out.mkdir(parents=True, exist_ok=True)
    try:
        for (name, seed, _), (row, state) in zip(jobs, results):
            per_seed[name][str(seed)] = row
            accs = " ".join(f"{d}:{100 * row['accuracy'][str(d)]['accuracy']:.0f}" for d in TEST_DISTANCES)
            log(f"{name:12s} seed {seed}: loss {row['final_train_loss']:.3f} ({row['train_seconds']:.0f} s) {accs}")
            if seed == seeds[0]:
                save_file(state, out / f"{name}.safetensors")
    finally:
        if pool is not None:
            pool.shutdown()
    results_json = {
        **_metadata(progress),
        "task": {"generator": "explorer.data.sequences.long_range_batch", "length": LENGTH, "vocab": VOCAB,
                 "label": "1 if marked token A comes before marked token B", "inputs": "one-hot [batch, vocab + 2, "
                 "length]", "train_distances": f"log-uniform on 1..{MAX_DISTANCE} "
                 "(explorer.data.sequences.log_uniform_distances)",
                 "test_distances": list(TEST_DISTANCES), "test_per_distance": TEST_PER_DISTANCE,
                 "test_seed": TEST_SEED, "attention_per_distance": ATTENTION_PER_DISTANCE},
        "training": {"optimizer": "Adam", "schedule": "OneCycleLR (peak = lr, torch defaults otherwise)",
                     "lr": LR, "batch": BATCH, "steps": steps_of, "loss": "cross entropy", "workers": workers,
                     "threads_per_worker": THREADS, "loss_every": LOSS_EVERY, "first_steps": FIRST_STEPS,
                     "final_steps": FINAL_STEPS, "data": "a torch.Generator seeded with the run's seed: the same "
                     "batches for every architecture"},
        "seeds": seeds,
        "models": {},
        "per_seed": per_seed,
        "interval": "mean +- t(0.975, n-1) * std / sqrt(n) over seeds; std is the sample std (n - 1)",
        "thresholds": {"chance_below": CHANCE_BELOW, "solved_from": SOLVED_FROM},
    }
    for name in names:
        model = build_sequence_model(name, seed=0)
        field = fields[name]["size"]
        results_json["models"][name] = {
            "class": type(model).__name__, "config": _jsonable(vars(model.config)),
            "parameters": sum(p.numel() for p in model.parameters()), "receptive_field": fields[name],
            "predicted_failure": _predicted_failure(field, list(TEST_DISTANCES)),
            "loss_floor": loss_floor(field), "weights": f"{name}.safetensors", "weights_seed": seeds[0],
        }
    results_json["summary"] = summarise(results_json)
    results_json["total_seconds"] = round(time.perf_counter() - start, 1)
    (out / RESULTS_FILE).write_text(json.dumps(results_json, indent=1) + "\n")
    write_model_card(out)
    log(f"done in {results_json['total_seconds']:.0f} s: {out / RESULTS_FILE}")
    return results_json


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    """The statistics of ``long_range.json`` recomputed from its per-seed numbers (the script stores exactly this).

    Returns:
        ``{model: {"accuracy": {str(d): interval}, "failure": failure_point(...), "final_train_loss": interval,
        "train_seconds": interval}}``; the attention model also has ``"attention"``: ``{str(d): {stat: [per layer:
        interval over seeds of the mean over heads]}}``, and ``"pair_head"``: the head of each seed that puts the
        most weight on the partner (largest mean over the test distances), ``{"heads": {seed: [layer, head]},
        "by_distance": {str(d): {stat: interval over seeds of that head's value}}}``.
    """
    seeds = [str(s) for s in res["seeds"]]
    distances = res["task"]["test_distances"]
    out: dict[str, Any] = {}
    for name, runs in res["per_seed"].items():
        rows = [runs[s] for s in seeds]
        curve = {str(d): interval([r["accuracy"][str(d)]["accuracy"] for r in rows]) for d in distances}
        entry = {"accuracy": curve, "failure": failure_point(curve, distances),
                 "final_train_loss": interval([r["final_train_loss"] for r in rows]),
                 "train_seconds": interval([r["train_seconds"] for r in rows])}
        if all("attention" in r for r in rows):
            entry["attention"] = {
                str(d): {stat: [interval([statistics.fmean(r["attention"][str(d)][stat][layer]) for r in rows])
                                for layer in range(len(rows[0]["attention"][str(d)][stat]))]
                         for stat in ATTENTION_STATS}
                for d in distances}
            entry["pair_head"] = _pair_head(rows, seeds, distances)
        out[name] = entry
    return out


def _pair_head(rows: list[dict[str, Any]], seeds: list[str], distances: list[int]) -> dict[str, Any]:
    heads = {}
    for seed, r in zip(seeds, rows):
        att = r["attention"]
        shape = [(layer, head) for layer in range(len(att[str(distances[0])]["partner_weight"]))
                 for head in range(len(att[str(distances[0])]["partner_weight"][layer]))]
        heads[seed] = list(max(shape, key=lambda lh: (statistics.fmean(att[str(d)]["partner_weight"][lh[0]][lh[1]]
                                                                      for d in distances), -lh[0], -lh[1])))
    by_distance = {str(d): {stat: interval([r["attention"][str(d)][stat][heads[s][0]][heads[s][1]]
                                            for s, r in zip(seeds, rows)])
                            for stat in ("later_token", "partner_weight", "self_weight")} for d in distances}
    return {"heads": heads, "by_distance": by_distance}


# --- the model card ----------------------------------------------------------------------------------------------


def _pct(stat: dict[str, Any]) -> str:
    low, high = stat["ci95"]
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _d(value: int | None) -> str:
    return "—" if value is None else f"d = {value}"


def write_model_card(folder: str | Path | None = None) -> Path:
    """(Re)write ``MODEL_CARD.md`` in ``folder`` from its ``long_range.json``; returns its path."""
    folder = default_long_range_dir() if folder is None else Path(folder)
    res = load_long_range(folder)
    names, seeds, distances = list(res["per_seed"]), res["seeds"], res["task"]["test_distances"]
    summary, models, task, training = res["summary"], res["models"], res["task"], res["training"]
    seed_list = " ".join(map(str, seeds))
    lines = [
        "# Long range, on the same input: CNN, dilated CNN and attention", "",
        f"Three small sequence classifiers (`explorer.models.sequence`) trained on the same synthetic task by "
        f"`{RETRAIN_COMMAND} --seeds {seed_list}` ({res['total_seconds']:.0f} s wall clock for all runs, "
        f"{training['workers']} worker processes). This card is generated from `long_range.json` next to it (every "
        "per-seed number is there) by `write_model_card`.", "",
        "## Task", "",
        f"`explorer.data.sequences`: {task['length']} random filler tokens (vocabulary {task['vocab']}) with two "
        "marked tokens `A` and `B` placed `d` positions apart, the pair uniformly placed; **label: does `A` come first?** "
        "(balanced). The label depends on the two tokens together: a window holding only one of them looks the same "
        "in both orders, so a model whose every feature sees fewer than `d + 1` consecutive positions can only guess. "
        "(Equality of two marked tokens, the obvious alternative, does not test reach: with a global pool a "
        "CNN can tell from pooled one-position features which tokens are marked, and equal means one kind.) "
        "The CNNs pad circularly so that no feature knows its distance to an end (with zero padding a marked token "
        f"near the start would reveal itself as the first), and {task['length']} - 256 = "
        f"{task['length'] - 256} keeps the wrapped-around pair out of reach too.", "",
        "Training: one model per architecture and seed, "
        + ", ".join(f"`{n}` {k} steps" for n, k in training["steps"].items())
        + f" of {training['batch']} fresh sequences, distances log-uniform on 1-256 (each octave equally often; "
        "the steps per model set by hand, no sweep shipped; the final losses below sit on the loss floors); Adam, one-cycle schedule, peak "
        f"lr {training['lr']:g}; batches from a generator seeded by the run's seed, so the three architectures of a seed "
        f"see the same data. {training['workers']} worker processes, {training['threads_per_worker']} thread each, "
        f"deterministic algorithms, torch {res['torch_version']}, commit `{res['git_commit']}`, {res['date']}. "
        f"Test: {task['test_per_distance']} sequences at each distance, one fixed seeded set (seed "
        f"{task['test_seed']} + index of the distance), labels balanced per distance; chance is 50 %.", "",
        "## Models", "",
        "| model | parameters | theoretical receptive field | predicted failure (first test d ≥ field) | "
        "loss floor if perfect inside the field | final train loss (mean ± std) | train time per run (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in names:
        m, s = models[n], summary[n]
        rf = m["receptive_field"]
        field = (f"{rf['size']} positions" if rf["size"] is not None else
                 f"all earlier positions (largest: {rf['largest']} = the whole sequence)")
        lines.append(f"| `{n}` | {m['parameters']} | {field} | {_d(m['predicted_failure'])} | "
                     f"{m['loss_floor']:.3f} | {s['final_train_loss']['mean']:.3f} ± "
                     f"{s['final_train_loss']['std']:.3f} | {s['train_seconds']['mean']:.0f} |")
    lines += [
        "", "Fields of the CNNs from `explorer.analysis.receptive_field(model.features, spatial_dims=1)` (1 + Σ "
        "dilation·(k − 1) for these stacks); the attention model's from `explorer.analysis.attention_receptive_field`"
        " (causal mask). The loss floor is ln 2 times the share of training distances at or beyond the field.", "",
        f"## Accuracy vs distance (%, mean ± std [95 % t-interval] over {len(seeds)} seeds)", "",
        "| d | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names)]
    for d in distances:
        cells = []
        for n in names:
            text = _pct(summary[n]["accuracy"][str(d)])
            field = models[n]["receptive_field"]["size"]
            cells.append(f"*{text}*" if field is not None and d >= field else text)
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines += ["", "*Italics*: d at or beyond that CNN's receptive field (no window holds both tokens).", ""]
    lines += _failure_section(res)
    if any("attention" in summary[n] for n in names):
        lines += _attention_section(res)
    lines += ["", "## What the data supports", ""] + _claims(res)
    lines += [
        "", "## Limitations", "",
        f"- {len(seeds)} seeds: a t-interval from {len(seeds)} values is wide (t = "
        f"{T_975.get(len(seeds) - 1, float('nan')):.2f}), and it is 0 wide where every seed scored the same. The "
        "seeds share one test set, so the spread is that of the training runs, not of the test sample: at 50 % a "
        f"per-seed accuracy has a binomial standard error of {50 / math.sqrt(task['test_per_distance']):.1f} points "
        f"({task['test_per_distance']} sequences): a model that guesses lands in 50 ± "
        f"{196 * 0.5 / math.sqrt(task['test_per_distance']):.1f} % (95 %) at a single seed.",
        f"- One learning rate ({training['lr']:g}) for every model and one fixed budget per model, both set by hand "
        "(no sweep is shipped). A CNN that fails inside its field may do better with longer training; no budget "
        "lets a CNN do better beyond its field.",
        "- The task is synthetic and made so that reach is the only difficulty; it says nothing about which "
        "architecture is better on real sequences.",
        "- The attention model is causal (see `explorer.models.sequence`): the mask tells it which token came "
        "first. A bidirectional one would have to learn left from right from its positions alone; that variant "
        "(`causal=False`) is not trained or measured here.", ""]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path


def _edge(res: dict[str, Any], name: str) -> tuple[int, list[float]] | None:
    """The largest test distance inside ``name``'s field (the pair at the two ends of one window, if ``r - 1``) and
    the per-seed accuracies there."""
    field = res["models"][name]["receptive_field"]["size"]
    inside = [d for d in res["task"]["test_distances"] if d < field]
    if not inside:
        return None
    d = max(inside)
    return d, [res["per_seed"][name][str(s)]["accuracy"][str(d)]["accuracy"] for s in res["seeds"]]


def _failure_section(res: dict[str, Any]) -> list[str]:
    summary, models = res["summary"], res["models"]
    lines = ["## Failure points", "",
             f"*Fails from*: the smallest d whose mean accuracy is below {100 * CHANCE_BELOW:.0f} % or whose 95 % "
             f"interval includes 50 %. *Solved up to*: the largest d up to which every mean is at least "
             f"{100 * SOLVED_FROM:.0f} %. *Edge*: the largest test d inside the field (r − 1 puts the pair at the two "
             "ends of one window), accuracy per seed.", "",
             "| model | receptive field r | predicted failure (first test d ≥ r) | fails from | solved up to | "
             "edge: per-seed accuracy % |", "|---|---|---|---|---|---|"]
    for n in res["per_seed"]:
        f, m = summary[n]["failure"], models[n]
        field = m["receptive_field"]["size"]
        edge = _edge(res, n) if field is not None else None
        edge_text = "—" if edge is None else f"d = {edge[0]}: " + ", ".join(f"{100 * a:.1f}" for a in edge[1])
        lines.append(f"| `{n}` | {field if field is not None else 'every earlier position'} | "
                     f"{_d(m['predicted_failure'])} | {_d(f['fails_from'])} | {_d(f['solved_up_to'])} | "
                     f"{edge_text} |")
    return lines


def _attention_section(res: dict[str, Any]) -> list[str]:
    name = next(n for n in res["per_seed"] if "attention" in res["summary"][n])
    att = res["summary"][name]["attention"]
    pair = res["summary"][name]["pair_head"]
    distances = res["task"]["test_distances"]
    depth = len(att[str(distances[0])]["all_queries"])
    n = res["task"]["length"]
    heads = ", ".join(f"seed {s}: layer {lh[0] + 1} head {lh[1] + 1}" for s, lh in pair["heads"].items())
    lines = ["", f"## Attention distance of `{name}` on the same test inputs", "",
             f"From `blocks.{{i}}.attn.hook_pattern` on the first {res['task']['attention_per_distance']} test "
             "sequences of each distance: Σ_k p(q, k)·|q − k| per query, mean ± std over seeds. *All queries*: the "
             f"mean over every position (uniform causal attention gives (n − 1)/4 = {(n - 1) / 4:.2f}; a conv-like "
             "head stays near 0); *later token*: the query at the later marked token; *on partner / on itself*: the "
             "attention weight the later marked token puts on the earlier one / on itself. Per layer, averaged over "
             "its heads (layers and heads counted from 1):", "",
             "| d | " + " | ".join(f"layer {i}: all queries | layer {i}: later token | layer {i}: on partner / on "
                                   f"itself" for i in range(1, depth + 1)) + " |",
             "|---|" + "---|---|---|" * depth]
    for d in distances:
        cells = []
        for i in range(depth):
            s = att[str(d)]
            cells += [f"{s['all_queries'][i]['mean']:.1f} ± {s['all_queries'][i]['std']:.1f}",
                      f"{s['later_token'][i]['mean']:.1f} ± {s['later_token'][i]['std']:.1f}",
                      f"{s['partner_weight'][i]['mean']:.2f} / {s['self_weight'][i]['mean']:.2f}"]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines += ["", f"The pair head of each seed (the head with the most weight on the partner, averaged over the test "
              f"distances): {heads}. Its values, mean ± std over seeds:", "",
              "| d | later token: attention distance | on partner | on itself |", "|---|---|---|---|"]
    for d in distances:
        s = pair["by_distance"][str(d)]
        lines.append(f"| {d} | {s['later_token']['mean']:.1f} ± {s['later_token']['std']:.1f} | "
                     f"{s['partner_weight']['mean']:.2f} ± {s['partner_weight']['std']:.2f} | "
                     f"{s['self_weight']['mean']:.2f} ± {s['self_weight']['std']:.2f} |")
    return lines


def _claims(res: dict[str, Any]) -> list[str]:
    summary, models = res["summary"], res["models"]
    distances = res["task"]["test_distances"]
    out = []
    cnns = [n for n in ("cnn", "dilated_cnn") if n in summary]
    for n in cnns:
        field = models[n]["receptive_field"]["size"]
        curve, f = summary[n]["accuracy"], summary[n]["failure"]
        beyond = [d for d in distances if d >= field]
        top = max(curve[str(d)]["mean"] for d in beyond) if beyond else math.nan
        at_chance = all(curve[str(d)]["mean"] < CHANCE_BELOW for d in beyond)
        text = (f"- *`{n}` (field {field})*: beyond its field (d ≥ {field}) the best mean accuracy is "
                f"{100 * top:.1f} %: " + ("chance everywhere, as the field predicts." if at_chance else
                                          "**above the chance band somewhere: the field does not bound it** — "
                                          "look for a leak."))
        fails, solved = f["fails_from"], f["solved_up_to"]
        if fails is None:
            text += " It never fails on the test distances."
        elif fails >= field:
            text += f" It fails from d = {fails}, the first test distance at or beyond its field."
        else:
            text += (f" It fails from d = {fails}, inside its field: the field bounds reach, but training did not "
                     "use all of it.")
        edge = _edge(res, n)
        if edge is not None:
            d, accs = edge
            learned = sum(a >= SOLVED_FROM for a in accs)
            text += (f" At d = {d}{' = r − 1' if d == field - 1 else ''} {learned} of {len(accs)} seeds reach "
                     f"≥ {100 * SOLVED_FROM:.0f} % (" + ", ".join(f"{100 * a:.0f} %" for a in accs) + ")")
            text += ("." if learned == len(accs) else
                     ": a pair at the ends of the window is joined only through the outermost taps of every layer, "
                     "and not every run learns that path (the effective receptive field is smaller than the "
                     "theoretical one).")
        text += (f" Solved (every mean ≥ {100 * SOLVED_FROM:.0f} %) up to d = {solved}." if solved is not None
                 else f" Not solved (≥ {100 * SOLVED_FROM:.0f} %) even at d = 1.")
        out.append(text)
    if len(cnns) == 2:
        a, b = (summary[n]["failure"]["fails_from"] for n in cnns)
        ra, rb = (models[n]["receptive_field"]["size"] for n in cnns)
        pa, pb = (models[n]["predicted_failure"] for n in cnns)
        if a is not None and b is not None:
            grid = sorted(distances)
            steps_early = [grid.index(p) - grid.index(o) for o, p in ((a, pa), (b, pb))]
            text = (f"- *Does dilation move the failure point as its field predicts?* The field grows from {ra} to "
                    f"{rb} positions (× {rb / ra:.1f}), predicting failure from d = {pa} and d = {pb}; observed "
                    f"failure from d = {a} and d = {b} (× {b / a:.1f}). ")
            if b <= a:
                text += "**No**: the dilated CNN does not fail later than the plain one."
            elif steps_early == [0, 0]:
                text += "**Yes**: both fail exactly at the first test distance at or beyond their fields."
            elif all(0 <= k <= 1 for k in steps_early):
                text += ("**Yes, to within one test distance**: neither reaches beyond its field, and "
                         + " and ".join(f"`{n}` fails {'at' if k == 0 else 'one test distance before'} its predicted "
                                        "point" for n, k in zip(cnns, steps_early)) + " (see the edge above).")
            else:
                text += ("**Partly**: dilation moves the failure point up, and neither model reaches beyond its field, "
                         "but at least one fails well before its field's edge.")
            out.append(text)
    if "attention" in summary:
        curve, f = summary["attention"]["accuracy"], summary["attention"]["failure"]
        worst = min(distances, key=lambda d: curve[str(d)]["mean"])
        text = (f"- *Attention*: lowest mean accuracy {100 * curve[str(worst)]['mean']:.1f} % (d = {worst}); "
                + ("it does **not** fail at any test distance" if f["fails_from"] is None else
                   f"**it fails from d = {f['fails_from']}**: it did not learn those distances in this budget")
                + (f", and every mean is at least {100 * SOLVED_FROM:.0f} % up to d = {max(distances)}: it learned "
                   "the long distances." if f["solved_up_to"] == max(distances) else "."))
        losses = summary["attention"]["final_train_loss"]
        text += f" Final training loss {losses['mean']:.4f} ± {losses['std']:.4f}."
        out.append(text)
        pair = summary["attention"].get("pair_head")
        if pair:
            by = pair["by_distance"]
            weights = [by[str(d)]["partner_weight"]["mean"] for d in distances]
            own = [by[str(d)]["self_weight"]["mean"] for d in distances]
            low, high = min(weights), max(weights)
            far = [d for d in distances if d >= 64]
            text = (f"- *Attention distance*: in every seed one head (its \"pair head\", table above) has the later "
                    f"marked token put {low:.2f}-{high:.2f} of its attention on the earlier one and "
                    f"{min(own):.2f}-{max(own):.2f} on itself, at every test distance from 1 to {max(distances)}: ")
            if low >= 0.25:
                text += ("a share that does not shrink with d, so the later token's attention distance grows with d "
                         "(" + ", ".join(f"d = {d}: {by[str(d)]['later_token']['mean']:.0f}" for d in distances
                                         if d in (1, 16, 64, 256)) + "). One layer joins the pair, whatever the "
                         "distance: the reach a CNN buys with depth or dilation, attention has from the first layer.")
            else:
                text += "too small a share to say that the head reads the pair directly."
            if far:
                alls = [summary["attention"]["attention"][str(d)]["all_queries"] for d in distances]
                mean_all = statistics.fmean(layer["mean"] for row in alls for layer in row)
                uniform = (res["task"]["length"] - 1) / 4
                text += (f" Averaged over all queries and layers the attention distance is {mean_all:.0f} positions "
                         f"(uniform causal attention: {uniform:.0f}): "
                         + ("the average position looks about as far as uniform attention would, nothing like a "
                            "conv's local window." if mean_all >= uniform / 2 else
                            "the average position looks mostly nearby; only the pair head looks far."))
            out.append(text)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default assets/long_range)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help=f"default {SEEDS}")
    parser.add_argument("--steps", type=int, default=None, help=f"for every model (default {STEPS})")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    return run_long_range(args.out, args.seeds, args.steps, workers=args.workers)


if __name__ == "__main__":
    main()
