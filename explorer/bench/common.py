"""Shared benchmark plumbing: interleaved timing and the metadata every result file carries."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

__all__ = ["interleaved_times", "metadata", "write_json"]


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int, inner: int,
                      warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in alternating rounds so drift hits all of them alike.

    Each round calls every function ``inner`` times back to back and records the mean; ``repeats`` rounds.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_index in range(repeats):
        order = list(fns) if round_index % 2 == 0 else list(reversed(fns))
        for name in order:
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - start) / inner)
    return times


def metadata() -> dict:
    """Device and version facts recorded beside every measurement."""
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
    }
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3
