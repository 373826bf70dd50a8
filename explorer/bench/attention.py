"""Fused attention throughput: our Triton kernel against PyTorch's SDPA kernels and FlexAttention.

On a CUDA machine (bf16 by default; the JSON lands in ``assets/benchmarks/attention_<gpu>.json``)::

    python -m explorer.bench.attention                       # forward, the full grid (minutes)
    python -m explorer.bench.attention --backward            # forward and forward+backward
    python -m explorer.bench.attention --quick               # N = 1024, 2048 and d = 64 only
    python -m explorer.bench.attention --n 4096 --d 128 --masks causal --out /tmp/a.json

On CPU (no CUDA) the same command times the pure-PyTorch reference (:func:`explorer.kernels.attention_reference`),
``F.scaled_dot_product_attention`` and the chunked statistics path at tiny sizes (N = 64, 128, 256; d = 16, 32;
fp32) with a median-of-repeats timer, and writes the same JSON shape -- so CI exercises the script.

What is measured
----------------
Inputs ``q, k, v`` are ``[batch, head, N, d]``. Following the FlashAttention benchmarks, the number of tokens per
step is held constant: ``batch = max(1, 16384 // N)`` and ``head = 16``, so ``batch * head * N`` stays near
16 * 16384 (GPU; on CPU ``batch = 1, head = 2``). Masks: ``full``, ``causal`` and ``window`` (a causal sliding
window of ``--window`` = 512 keys, :func:`explorer.masks.sliding_window` convention; its N list adds 65536).

Backends (CUDA): ``ours`` (:func:`explorer.kernels.fused_attention` with ``backend="triton"``), ``ours_stats``
(the same with ``return_stats=True``: entropy, mean distance, distance histogram), ``sdpa_flash``,
``sdpa_cudnn``, ``sdpa_efficient`` (``F.scaled_dot_product_attention`` pinned with
``torch.nn.attention.sdpa_kernel``; the window mask reaches them as a dense boolean ``attn_mask``, which the flash
kernel refuses) and ``flex`` (``flex_attention`` under ``torch.compile`` with a block mask built from the same
:mod:`explorer.masks` callable). A backend that cannot run a configuration records its error string instead.

Time is the median of ``triton.testing.do_bench`` (CUDA) or of interleaved repeats (CPU). Peak memory is
``torch.cuda.max_memory_allocated`` after a reset, minus what was allocated before (CPU: the dispatch-level
tracker of :mod:`explorer.bench.scaling`).

FLOPs (the convention of the FlashAttention papers, counting only the pairs a mask allows)::

    forward  = 4 * pairs * d * head * batch       # two matmuls (q k^T, p v), 2 FLOPs per multiply-add
    pairs    = N^2 (full), N (N + 1) / 2 (causal), the exact allowed count (window)
    fwd+bwd  = 3.5 * forward                      # backward = 2.5 * forward (five matmuls instead of two)

``TFLOP/s = FLOPs / time``. The ``ratios`` section gives, per configuration, ours vs ``sdpa_flash`` and vs
``sdpa_cudnn`` (their time / ours: > 1 means ours is faster), ``ours_stats`` vs ``ours`` (time with statistics
/ without: the price of the statistics) and, for the window mask at N = 65536, ``flex`` vs ``ours``; each with
its geometric mean. A CPU run reports ``sdpa_vs_reference`` and ``chunked_vs_reference`` instead.

JSON: ``{"metadata": {date, python, torch, triton, device, platform, ... and on CUDA cuda, driver, cudnn,
capability, gpu_memory_bytes}, "config": {...}, "records": [{backend, mask, window, n, d, heads, batch, dtype,
device, mode, flops, ms, tflops, peak_bytes, max_abs_diff, error}], "ratios": {name: {definition, values,
geomean}}}``. ``max_abs_diff`` compares each backend's forward output with the first backend's (a sanity check);
``error`` is None or the reason the backend could not run that configuration (then ``ms`` is None).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from explorer import masks
from explorer.bench.common import interleaved_times, median_ms, metadata, write_json

__all__ = ["MASKS", "attention_pairs", "attention_flops", "device_tag", "run", "main"]

MASKS = ("full", "causal", "window")
TOKENS = 16384  # batch * N on CUDA
GPU_HEADS = 16
CPU_HEADS = 2
BACKWARD_FACTOR = 2.5  # backward FLOPs / forward FLOPs
ERROR_CHARS = 300  # an error string is cut to this length
DENSE_MASK_LIMIT = 2**28  # elements of a dense [query, key] window mask for SDPA (N <= 16384)

CUDA_BACKENDS = ("ours", "ours_stats", "sdpa_flash", "sdpa_cudnn", "sdpa_efficient", "flex")
CPU_BACKENDS = ("reference", "sdpa", "reference_chunked")

# Each ratio: (name, numerator backend, denominator backend, which configurations, definition).
RATIOS = (
    ("ours_vs_flash", "sdpa_flash", "ours", None, "time(sdpa_flash) / time(ours); > 1: ours faster"),
    ("ours_vs_cudnn", "sdpa_cudnn", "ours", None, "time(sdpa_cudnn) / time(ours); > 1: ours faster"),
    ("stats_on_vs_off", "ours_stats", "ours", None, "time(ours_stats) / time(ours); the cost of the statistics"),
    ("window_vs_flex_65536", "flex", "ours", ("window", 65536),
     "time(flex) / time(ours) for the sliding window at N = 65536; > 1: ours faster"),
)
CPU_RATIOS = (
    ("sdpa_vs_reference", "reference", "sdpa", None, "time(reference) / time(sdpa); > 1: sdpa faster"),
    ("chunked_vs_reference", "reference_chunked", "reference", None,
     "time(reference_chunked) / time(reference); the cost of chunking and statistics"),
)


# --------------------------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------------------------

def _mask_of(mask: str, window: int) -> masks.Mask:
    if mask == "full":
        return masks.full()
    if mask == "causal":
        return masks.causal()
    if mask == "window":
        return masks.sliding_window(window, causal=True)
    raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")


def attention_pairs(n: int, mask: str, window: int | None = None) -> int:
    """Number of (query, key) pairs the mask allows for ``n`` queries and ``n`` keys (exact, O(n) work).

    Args:
        n: sequence length (>= 1).
        mask: ``"full"`` (n^2), ``"causal"`` (n (n + 1) / 2) or ``"window"`` (causal sliding window of ``window``
            keys: query ``i`` sees ``min(i + 1, window)``).
        window: width for ``mask="window"``.

    Returns:
        The count, an int.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if mask == "full":
        return n * n
    if mask == "causal":
        return n * (n + 1) // 2
    if mask == "window":
        if window is None or window < 1:
            raise ValueError(f"window must be an int >= 1 for mask='window', got {window}")
        w = min(window, n)  # the first w queries see 1, 2, ..., w keys, the rest exactly window
        return w * (w + 1) // 2 + (n - w) * window
    raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")


def attention_flops(n: int, d: int, heads: int, batch: int, mask: str, window: int | None = None,
                    backward: bool = False) -> float:
    """Useful FLOPs of one attention call: ``4 * pairs * d * heads * batch``, times 3.5 with ``backward``."""
    forward = 4.0 * attention_pairs(n, mask, window) * d * heads * batch
    return forward * (1.0 + BACKWARD_FACTOR) if backward else forward


# --------------------------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------------------------

def device_tag(device: torch.device) -> str:
    """``"cpu"`` or the GPU name in lower case with dashes (``"nvidia-h100-80gb-hbm3"``), for file names."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def _driver_version() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip().splitlines()[0] if result.stdout.strip() else None


def bench_metadata(device: torch.device) -> dict:
    """:func:`explorer.bench.common.metadata` plus triton, driver, cuDNN and GPU facts."""
    info = metadata()
    try:  # the installed version, without importing triton (which fixes its interpreter choice for the process)
        info["triton"] = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        info["triton"] = None
    if device.type != "cuda":
        info["device"] = "cpu"  # metadata() names the GPU whenever one exists, also for a --cpu run
    else:
        info["driver"] = _driver_version()
        info["cudnn"] = torch.backends.cudnn.version()
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
    return info


# --------------------------------------------------------------------------------------------------------------
# Backends: each builder returns a zero-argument function computing the output [batch, head, N, d]
# --------------------------------------------------------------------------------------------------------------

def _sdpa(q, k, v, mask: str, window: int, sdpa_backend=None) -> Callable[[], torch.Tensor]:
    """``F.scaled_dot_product_attention``, optionally pinned to one torch kernel; the window as a dense mask."""
    attn_mask = None
    if mask == "window":
        if q.shape[2] * k.shape[2] > DENSE_MASK_LIMIT:
            raise ValueError(f"SDPA has no sliding-window mode and a dense [{q.shape[2]}, {k.shape[2]}] mask is over "
                             f"the {DENSE_MASK_LIMIT} element limit of this benchmark")
        attn_mask = _mask_of(mask, window).dense(q.shape[2], k.shape[2], device=q.device)  # (query, key)

    def fn() -> torch.Tensor:
        if sdpa_backend is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=mask == "causal")
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(sdpa_backend):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=mask == "causal")

    return fn


def _ours(q, k, v, mask: str, window: int, return_stats: bool, backend: str) -> Callable[[], torch.Tensor]:
    from explorer.kernels import fused_attention

    causal = mask in ("causal", "window")
    win = window if mask == "window" else None
    return lambda: fused_attention(q, k, v, causal=causal, window=win, return_stats=return_stats,
                                   backend=backend).out


def _chunked(q, k, v, mask: str, window: int) -> Callable[[], torch.Tensor]:
    from explorer.kernels import attention_stats_chunked

    causal = mask in ("causal", "window")
    win = window if mask == "window" else None
    return lambda: attention_stats_chunked(q, k, v, causal=causal, window=win, chunk=64).out


def _flex(q, k, v, mask: str, window: int) -> Callable[[], torch.Tensor]:
    """``flex_attention`` compiled for this configuration, with a block mask from the :mod:`explorer.masks` rule."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    torch._dynamo.reset()  # a fresh compile per configuration: never the recompile limit's eager fallback
    compiled = torch.compile(flex_attention, dynamic=False)
    block_mask = None
    if mask != "full":
        rule = _mask_of(mask, window)  # the same callable: explorer masks are written like a mask_mod
        n = q.shape[2]
        # _compile=True builds the block mask without materialising the n x n boolean matrix
        block_mask = create_block_mask(lambda b, h, q_idx, kv_idx: rule(q_idx, kv_idx), None, None, n, n,
                                       device=q.device, _compile=True)
    return lambda: compiled(q, k, v, block_mask=block_mask)


def _build(backend: str, q, k, v, mask: str, window: int) -> Callable[[], torch.Tensor]:
    if backend == "ours":
        return _ours(q, k, v, mask, window, return_stats=False, backend="triton")
    if backend == "ours_stats":
        return _ours(q, k, v, mask, window, return_stats=True, backend="triton")
    if backend in ("sdpa_flash", "sdpa_cudnn", "sdpa_efficient"):
        from torch.nn.attention import SDPBackend

        pinned = {"sdpa_flash": SDPBackend.FLASH_ATTENTION, "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION,
                  "sdpa_efficient": SDPBackend.EFFICIENT_ATTENTION}[backend]
        return _sdpa(q, k, v, mask, window, pinned)
    if backend == "flex":
        return _flex(q, k, v, mask, window)
    if backend == "reference":
        return _ours(q, k, v, mask, window, return_stats=False, backend="reference")
    if backend == "sdpa":
        return _sdpa(q, k, v, mask, window)
    if backend == "reference_chunked":
        return _chunked(q, k, v, mask, window)
    raise ValueError(f"unknown backend {backend!r}")


# --------------------------------------------------------------------------------------------------------------
# Timing and memory
# --------------------------------------------------------------------------------------------------------------

def _time_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median milliseconds per call: ``triton.testing.do_bench`` on CUDA, interleaved repeats on CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench  # needs a GPU driver: imported only here

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    samples = interleaved_times({"fn": fn}, repeats=repeats, inner=1, warmup=1)["fn"]
    return median_ms(samples)


def _peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated during one call beyond what existed before (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    from explorer.bench.scaling import PeakMemoryMode

    with PeakMemoryMode() as mem:
        fn()
    return int(mem.peak_bytes)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]


def measure_config(backends: Sequence[str], *, n: int, d: int, heads: int, batch: int, mask: str, window: int,
                   dtype: torch.dtype, device: torch.device, backward: bool, repeats: int,
                   seed: int = 0) -> list[dict]:
    """Time every backend on one configuration; one record per backend and mode (``fwd``, ``fwd+bwd``).

    Each record also holds ``max_abs_diff``: the largest ``|out - out_ref|`` of the forward output against the
    first backend that ran (a sanity check that all backends compute the same attention).
    """
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, n, d, generator=gen).to(device=device, dtype=dtype) for _ in range(3))
    records: list[dict] = []
    baseline: torch.Tensor | None = None
    modes = ("fwd", "fwd+bwd") if backward else ("fwd",)
    for backend in backends:
        base = {"backend": backend, "mask": mask, "window": window if mask == "window" else None, "n": n, "d": d,
                "heads": heads, "batch": batch, "dtype": str(dtype).removeprefix("torch."), "device": str(device)}
        fn: Callable[[], torch.Tensor] | None = None
        build_error = None
        try:
            fn = _build(backend, q, k, v, mask, window)
        except Exception as exc:  # an unsupported configuration is a result, not a crash
            build_error = _error(exc)
        for mode in modes:
            record = {**base, "mode": mode, "flops": attention_flops(n, d, heads, batch, mask, window,
                                                                     backward=mode == "fwd+bwd"),
                      "ms": None, "tflops": None, "peak_bytes": None, "max_abs_diff": None, "error": build_error}
            if fn is not None:
                try:
                    if mode == "fwd":  # first: also compiles / autotunes before anything is timed
                        with torch.no_grad():
                            out = fn().float()
                        if baseline is None:
                            baseline = out
                        record["max_abs_diff"] = float((out - baseline).abs().max())
                        del out
                    _measure_into(record, fn, q, k, v, mode, device, repeats)
                except Exception as exc:
                    record.update(ms=None, tflops=None, peak_bytes=None, error=_error(exc))
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            records.append(record)
    return records


def _measure_into(record: dict, fn: Callable[[], torch.Tensor], q, k, v, mode: str, device: torch.device,
                  repeats: int) -> None:
    if mode == "fwd":
        def call() -> None:
            with torch.no_grad():
                fn()
    else:
        for t in (q, k, v):  # leaves the builders closed over: give them gradients for this mode
            t.requires_grad_(True)
        grad_out = torch.randn_like(q)

        def call() -> None:
            for t in (q, k, v):
                t.grad = None
            fn().backward(grad_out)

    try:
        call()  # compile / autotune / check it runs before timing
        record["ms"] = _time_ms(call, device, repeats)
        try:
            record["peak_bytes"] = _peak_bytes(call, device)
        except Exception as exc:  # e.g. a compiled op the CPU dispatch-level tracker cannot trace: keep the time
            record["error"] = f"peak memory: {_error(exc)}"
    finally:
        for t in (q, k, v):
            t.grad = None
            t.requires_grad_(False)
    record["tflops"] = record["flops"] / (record["ms"] * 1e-3) / 1e12


# --------------------------------------------------------------------------------------------------------------
# Ratios, table, CLI
# --------------------------------------------------------------------------------------------------------------

def compute_ratios(records: Sequence[dict], definitions: Sequence[tuple] = RATIOS) -> dict:
    """The ratios the project tracks (see the module docstring), per configuration and as a geometric mean.

    Args:
        records: as :func:`measure_config` returns them.
        definitions: ``(name, numerator backend, denominator backend, (mask, n) or None, definition)`` tuples.

    Returns:
        ``{name: {"definition", "values": [{mask, n, d, mode, ratio}], "geomean"}}``.
    """
    by_key = {(r["backend"], r["mask"], r["n"], r["d"], r["mode"]): r["ms"] for r in records}
    configs = sorted({(r["mask"], r["n"], r["d"], r["mode"]) for r in records})
    ratios = {}
    for name, numerator, denominator, only, definition in definitions:
        values = []
        for mask, n, d, mode in configs:
            if only is not None and (mask, n) != only:
                continue
            top = by_key.get((numerator, mask, n, d, mode))
            bottom = by_key.get((denominator, mask, n, d, mode))
            if top and bottom:
                values.append({"mask": mask, "n": n, "d": d, "mode": mode, "ratio": top / bottom})
        geomean = math.exp(statistics.fmean(math.log(v["ratio"]) for v in values)) if values else None
        ratios[name] = {"definition": definition, "values": values, "geomean": geomean}
    return ratios


def format_table(records: Sequence[dict]) -> str:
    lines = [f"{'backend':<18} {'mask':<7} {'mode':<8} {'n':>6} {'d':>4} {'ms':>10} {'TFLOP/s':>8} "
             f"{'peak MB':>9} {'max|diff|':>10}"]
    for r in records:
        if r["ms"] is None:
            lines.append(f"{r['backend']:<18} {r['mask']:<7} {r['mode']:<8} {r['n']:>6} {r['d']:>4}  "
                         f"error: {r['error'][:70]}")
            continue
        diff = "" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2e}"
        peak = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.2f}"
        lines.append(f"{r['backend']:<18} {r['mask']:<7} {r['mode']:<8} {r['n']:>6} {r['d']:>4} {r['ms']:>10.3f} "
                     f"{r['tflops']:>8.3f} {peak:>9} {diff:>10}")
    return "\n".join(lines)


def format_ratios(ratios: dict) -> str:
    lines = []
    for name, entry in ratios.items():
        g = "n/a" if entry["geomean"] is None else f"{entry['geomean']:.3f}"
        lines.append(f"{name:<22} geomean {g:>7}  ({entry['definition']})")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def run(args: argparse.Namespace) -> dict:
    """Run the grid described by parsed CLI ``args``; return the JSON payload."""
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        ns = args.n or ([1024, 2048] if args.quick else [1024, 2048, 4096, 8192, 16384])
        window_ns = args.window_n or (ns + [65536] if args.n is None and not args.quick else ns)
        ds = args.d or ([64] if args.quick else [64, 128])
        dtype = getattr(torch, args.dtype or "bfloat16")
        backends = args.backends or list(CUDA_BACKENDS)
        repeats = 0  # do_bench decides
    else:
        ns = args.n or ([64, 128] if args.quick else [64, 128, 256])
        window_ns = args.window_n or ns
        ds = args.d or ([16] if args.quick else [16, 32])
        dtype = getattr(torch, args.dtype or "float32")
        backends = args.backends or list(CPU_BACKENDS)
        repeats = 3 if args.quick else args.repeats
    window = args.window if cuda or args.window_set else 16

    records: list[dict] = []
    for mask in args.masks:
        for d in ds:
            for n in (window_ns if mask == "window" else ns):
                batch = max(1, TOKENS // n) if cuda else 1
                heads = GPU_HEADS if cuda else CPU_HEADS
                print(f"{mask} n={n} d={d} batch={batch} heads={heads}", file=sys.stderr, flush=True)
                records += measure_config(backends, n=n, d=d, heads=heads, batch=batch, mask=mask, window=window,
                                          dtype=dtype, device=device, backward=args.backward, repeats=repeats)
    return {"metadata": bench_metadata(device), "config": {
        "tokens_per_step": TOKENS if cuda else None, "heads": GPU_HEADS if cuda else CPU_HEADS,
        "backends": backends, "masks": list(args.masks), "window": window, "dtype": str(dtype).removeprefix("torch."),
        "backward": args.backward, "backward_factor": BACKWARD_FACTOR,
        "flops": "4 * pairs * d * heads * batch (forward); x (1 + backward_factor) for fwd+bwd"},
        "records": records, "ratios": compute_ratios(records, RATIOS if cuda else CPU_RATIOS)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=_ints, default=None, help="sequence lengths, e.g. 1024,2048")
    parser.add_argument("--window-n", type=_ints, default=None,
                        help="sequence lengths for the window mask (default: --n; on CUDA without --n or "
                             "--quick the default list plus 65536)")
    parser.add_argument("--d", type=_ints, default=None, help="head dimensions, e.g. 64,128")
    parser.add_argument("--masks", type=lambda s: [m for m in s.split(",") if m], default=list(MASKS),
                        help=f"subset of {','.join(MASKS)}")
    parser.add_argument("--window", type=int, default=None, help="sliding window width (CUDA 512, CPU 16)")
    parser.add_argument("--backends", type=lambda s: [b for b in s.split(",") if b], default=None,
                        help=f"CUDA: {','.join(CUDA_BACKENDS)}; CPU: {','.join(CPU_BACKENDS)}")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None,
                        help="default bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--backward", action="store_true", help="also time forward+backward")
    parser.add_argument("--quick", action="store_true", help="a small grid (what CI runs on CPU)")
    parser.add_argument("--cpu", action="store_true", help="the CPU run even where CUDA is available")
    parser.add_argument("--repeats", type=int, default=5, help="CPU timer repeats (CUDA: do_bench decides)")
    parser.add_argument("--out", default=None, help="JSON path (default assets/benchmarks/attention_<device>.json)")
    args = parser.parse_args(argv)
    for mask in args.masks:
        if mask not in MASKS:
            parser.error(f"--masks entries must be in {MASKS}, got {mask!r}")
    args.window_set = args.window is not None
    args.window = 512 if args.window is None else args.window
    if args.window < 1:
        parser.error(f"--window must be >= 1, got {args.window}")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    payload = run(args)
    print(format_table(payload["records"]))
    print()
    print(format_ratios(payload["ratios"]))
    device = torch.device("cpu" if payload["metadata"]["device"] == "cpu" else "cuda")
    out = Path(args.out) if args.out else (Path(__file__).resolve().parents[2] / "assets" / "benchmarks"
                                           / f"attention_{device_tag(device)}.json")
    print(f"wrote {write_json(out, payload)}")
    return payload


if __name__ == "__main__":
    main()
