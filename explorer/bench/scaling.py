"""How time and memory grow with sequence length (or image side) for convolutions and attention variants.

``assets/benchmarks/scaling_cpu.json`` was produced (1 CPU thread) by::

    python -m explorer.bench.scaling --device cpu --threads 1 \
        --ops conv1d,depthwise_conv1d,fft_conv,attention_math,attention_fused,sliding_window_attention,block_sparse_attention,linear_attention,lsh_attention \
        --sizes 1024,2048,4096,8192,16384 --batch 4 --repeats 5 --out assets/benchmarks/scaling_cpu.json

(defaults: ``--d 64 --heads 1 --window 128 --block 64 --n-buckets 8 --n-rounds 2 --chunk 64 --dtype float32
--warmup 1``), on a 2-core machine shared with other jobs, so single points can be noisy. The time exponents a
little above 1 for the linear ops (sliding-window, block-sparse, LSH) are not in the algorithms (their FLOP and
memory models are linear in n); the likely cause, not measured systematically, is memory effects: once a tensor
outgrows the caches and glibc's largest dynamic mmap threshold (32 MB) it is page-faulted afresh on every call
(LSH's scores pass 32 MB between n = 4096 and 8192 at batch 4; with ``MALLOC_MMAP_THRESHOLD_`` raised the jump
there shrank in one informal, unrecorded check).

Each op is built once with seeded inputs (``make_op``) and timed with the shared interleaved timer; its peak
memory is measured in a separate, untimed call. A log-log least-squares fit of time and memory against ``n``
gives the empirical exponent (``fit_exponent``): ~2 for materialised attention, ~1 for convolutions,
sliding-window, block-sparse, linear and LSH attention (``explorer.layers.lsh_attention``, Reformer: hashing,
sorting and chunked attention, O(n * chunk) per round).

Shapes: attention ops use q, k, v of ``[batch, head, query|key, d / heads]`` (``lsh_attention``: shared ``qk`` and
``v``; ``d`` is the model width, as in ``explorer.analysis.cost``);
1-D convolutions use ``[batch, channel=d, n]``; ``conv2d`` uses ``[batch, channel=d, height=n, width=n]``.

Peak memory
-----------
On CUDA it is ``torch.cuda.max_memory_allocated`` after a reset, minus what was allocated before the call.
On CPU torch exposes no allocator statistics, so ``PeakMemoryMode`` (a ``TorchDispatchMode``) counts the bytes
of every new storage an aten op returns and subtracts them when the last tensor on that storage dies. It sees
every tensor visible at the aten level but not scratch buffers a single kernel allocates internally -- e.g.
the CPU flash kernel behind ``F.scaled_dot_product_attention`` counts only its output and log-sum-exp, which
is exactly the point: it never materialises the ``n x n`` scores.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from explorer._checks import check_positive_int
from explorer.analysis.cost import OPS, cost
from explorer.bench.common import interleaved_times, metadata, write_json
from explorer.masks import sliding_window, window_offsets

__all__ = [
    "OPS", "make_op", "Measurement", "measure", "sweep", "fit_exponent", "to_records", "save", "PeakMemoryMode",
    "fft_conv", "sliding_window_attention", "block_sparse_attention", "linear_attention", "attention_math",
]


# --------------------------------------------------------------------------------------------------------------
# Kernels (pure PyTorch). Each comment gives the largest intermediate, which sets the memory exponent.
# --------------------------------------------------------------------------------------------------------------

def fft_conv(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Causal per-channel long convolution ``y[t] = sum_{s<=t} h[s] x[t-s]`` via FFT of length ``2n``.

    Zero-padding to ``2n`` turns the FFT's circular convolution into a linear one (as in Hyena / S4).

    Args:
        x: ``[batch, channel, n]`` signal.
        h: ``[channel, n]`` kernel, one full-length filter per channel.
    Returns:
        ``[batch, channel, n]``; O(n log n) time, O(n) memory.
    """
    n = x.shape[-1]
    x_f = torch.fft.rfft(x, n=2 * n)  # [batch, channel, n+1] complex
    h_f = torch.fft.rfft(h, n=2 * n)  # [channel, n+1] complex
    return torch.fft.irfft(x_f * h_f, n=2 * n)[..., :n]


def attention_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` written out, materialising the ``[batch, head, n, n]`` scores."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [batch, head, query, key]
    return scores.softmax(dim=-1) @ v  # [batch, head, query, d]


def _window_offsets(window: int) -> tuple[int, int]:
    """``(left, right)``: a query sees keys at offsets ``-left .. right``, ``left + right + 1 = window``.

    From ``explorer.masks.window_offsets(window, causal=False)``, the one definition of a non-causal window, so the
    benchmark, the analytic model, the masks and the reference kernel share one convention:
    ``left = (window - 1) // 2``, ``right = window // 2``.
    """
    low, high = window_offsets(window, causal=False)
    return -low, high


def _window_mask(n: int, window: int, chunk: int, device=None) -> torch.Tensor:
    """``[n_chunks, chunk, chunk + window - 1]`` True where query ``i`` may see key ``j``.

    ``explorer.masks.sliding_window(window)`` evaluated on the chunked layout of ``sliding_window_attention``
    (key slot ``t`` of chunk ``c`` is key ``c * chunk + t - left``), restricted to real keys ``0 <= j < n``.
    """
    left, right = _window_offsets(window)
    n_chunks = -(-n // chunk)
    r = torch.arange(chunk, device=device).view(1, chunk, 1)  # query offset in chunk
    t = torch.arange(chunk + left + right, device=device).view(1, 1, -1)  # key slot in the chunk's key span
    c = torch.arange(n_chunks, device=device).view(-1, 1, 1)
    i = c * chunk + r  # absolute query position
    j = c * chunk + t - left  # absolute key position
    return sliding_window(window)(i, j) & (j >= 0) & (j < n)


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                             chunk: int | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Local attention over ``window`` keys per query, the ``explorer.masks.sliding_window(window)`` convention.

    Query ``i`` sees keys ``i - left .. i + right`` with ``left = (window - 1) // 2``, ``right = window // 2``
    (non-causal; an even window has one more key after the query), clipped at the sequence ends.

    Queries are cut into chunks of ``chunk`` (default ``window``); each chunk attends to its key span of
    ``chunk + window - 1`` keys, gathered with ``unfold`` (a view). The largest intermediate is the
    ``[batch, head, n/chunk, chunk, chunk + window - 1]`` score tensor: O(n * window) memory, not O(n^2).
    (Longformer, https://arxiv.org/abs/2004.05150.)

    Args:
        q, k, v: ``[batch, head, n, d]``.
        window: keys per query (away from the ends).
        chunk: query chunk length; ``mask`` may be passed precomputed (``_window_mask``) to save work.
    Returns:
        ``[batch, head, n, d]``.
    """
    b, h, n, d = q.shape
    left, right = _window_offsets(window)
    chunk = chunk or max(1, min(n, window))
    n_chunks = -(-n // chunk)
    pad_q = n_chunks * chunk - n
    span = chunk + left + right
    qc = F.pad(q, (0, 0, 0, pad_q)).view(b, h, n_chunks, chunk, d)  # [batch, head, chunk_idx, query, d]
    # keys padded by `left` in front and enough behind that every chunk's span exists
    k_pad = F.pad(k, (0, 0, left, right + pad_q))  # [batch, head, n + pad_q + window - 1, d]
    v_pad = F.pad(v, (0, 0, left, right + pad_q))
    kc = k_pad.unfold(2, span, chunk)  # [batch, head, chunk_idx, d, span]  (view)
    vc = v_pad.unfold(2, span, chunk)  # [batch, head, chunk_idx, d, span]  (view)
    scores = (qc @ kc) / math.sqrt(d)  # [batch, head, chunk_idx, query, span]
    if mask is None:
        mask = _window_mask(n, window, chunk, device=q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    out = scores.softmax(dim=-1) @ vc.transpose(-2, -1)  # [batch, head, chunk_idx, query, d]
    return out.reshape(b, h, n_chunks * chunk, d)[:, :, :n]


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int) -> torch.Tensor:
    """Block-diagonal attention: token ``i`` attends only within its block ``i // block``.

    If ``n`` is not a multiple of ``block`` the sequence is zero-padded to one and the padded keys are masked,
    so the last (short) block attends only to its real tokens. Largest intermediate:
    ``[batch, head, n/block, block, block]`` scores, O(n * block).

    Args:
        q, k, v: ``[batch, head, n, d]``.
        block: block length.
    Returns:
        ``[batch, head, n, d]``.
    """
    b, h, n, d = q.shape
    n_blocks = -(-n // block)
    pad = n_blocks * block - n

    def blocks(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 0, pad)).view(b, h, n_blocks, block, d)  # [batch, head, block_idx, pos, d]

    scores = blocks(q) @ blocks(k).transpose(-2, -1) / math.sqrt(d)  # [batch, head, block_idx, query, key]
    if pad:
        key_valid = torch.arange(n_blocks * block, device=q.device).view(n_blocks, 1, block) < n
        scores = scores.masked_fill(~key_valid, float("-inf"))
    out = scores.softmax(dim=-1) @ blocks(v)  # [batch, head, block_idx, query, d]
    return out.reshape(b, h, n_blocks * block, d)[:, :, :n]


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Non-causal linear attention with feature map ``phi(x) = elu(x) + 1``.

    ``out_i = phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i) . sum_j phi(k_j))``: O(n d^2) time, O(n d + d^2)
    memory. (Katharopoulos et al., https://arxiv.org/abs/2006.16236.)
    """
    phi_q = F.elu(q) + 1  # [batch, head, n, d]
    phi_k = F.elu(k) + 1  # [batch, head, n, d]
    kv = phi_k.transpose(-2, -1) @ v  # [batch, head, d, d]
    normaliser = phi_q @ phi_k.sum(dim=-2, keepdim=True).transpose(-2, -1)  # [batch, head, n, 1]
    return (phi_q @ kv) / (normaliser + eps)


# --------------------------------------------------------------------------------------------------------------
# Building ops
# --------------------------------------------------------------------------------------------------------------

def make_op(op: str, n: int, d: int = 64, *, heads: int = 1, kernel_size: int = 3, window: int = 128,
            block: int = 64, n_buckets: int = 8, n_rounds: int = 2, chunk: int = 64, batch: int = 1,
            device="cpu", dtype=torch.float32, seed: int = 0) -> Callable[[], torch.Tensor]:
    """Build seeded inputs for ``op`` at size ``n`` once and return a zero-argument closure that runs it.

    The arguments mean what they mean in ``explorer.analysis.cost.cost`` (which validates them here, allocating
    nothing), so a measurement and its analytic model describe the same computation.

    Args:
        op: one of ``OPS``.
        n: sequence length (``conv2d``: image side, input ``[batch, d, n, n]``).
        d: channels (convolutions) or model width (attention: ``heads`` heads of width ``d // heads``; ``heads``
            must divide ``d``).
        heads, batch: leading dimensions.
        kernel_size: for ``conv1d``, ``depthwise_conv1d``, ``conv2d`` (``same`` padding).
        window: ``sliding_window_attention`` keys per query, ``explorer.masks.sliding_window`` convention; <= n.
        block: ``block_sparse_attention`` block length (n is padded up to a multiple of it).
        n_buckets, n_rounds, chunk: ``lsh_attention``'s hashing and chunking
            (``explorer.layers.lsh_attention.lsh_attention``; rotations drawn from ``seed``).
        device, dtype, seed: where and how the inputs are made.
    Returns:
        A closure; its ``inputs`` attribute holds the input tensors by name (for reference checks in tests).
    """
    cost(op, n, d, heads=heads, kernel_size=kernel_size, window=window, block=block, n_buckets=n_buckets,
         n_rounds=n_rounds, chunk=chunk, batch=batch, dtype=dtype)

    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

    inputs: dict[str, torch.Tensor]
    if op in ("conv1d", "depthwise_conv1d"):
        groups = d if op == "depthwise_conv1d" else 1
        fan_in = (d // groups) * kernel_size
        inputs = {"x": randn(batch, d, n), "weight": randn(d, d // groups, kernel_size, scale=fan_in ** -0.5)}
        fn = lambda: F.conv1d(inputs["x"], inputs["weight"], padding="same", groups=groups)  # noqa: E731
    elif op == "conv2d":
        inputs = {"x": randn(batch, d, n, n),
                  "weight": randn(d, d, kernel_size, kernel_size, scale=(d * kernel_size ** 2) ** -0.5)}
        fn = lambda: F.conv2d(inputs["x"], inputs["weight"], padding="same")  # noqa: E731
    elif op == "fft_conv":
        inputs = {"x": randn(batch, d, n), "h": randn(d, n, scale=n ** -0.5)}
        fn = lambda: fft_conv(inputs["x"], inputs["h"])  # noqa: E731
    elif op == "lsh_attention":  # shared queries/keys (Reformer)
        from explorer.layers.lsh_attention import lsh_attention  # imported where used: the layers package

        inputs = {name: randn(batch, heads, n, d // heads) for name in ("qk", "v")}
        fn = lambda: lsh_attention(inputs["qk"], inputs["v"], n_buckets, n_rounds, chunk, seed=seed)  # noqa: E731
    else:
        inputs = {name: randn(batch, heads, n, d // heads) for name in ("q", "k", "v")}
        q, k, v = inputs["q"], inputs["k"], inputs["v"]
        if op == "attention_math":
            fn = lambda: attention_math(q, k, v)  # noqa: E731
        elif op == "attention_fused":
            fn = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
        elif op == "sliding_window_attention":
            query_chunk = window
            mask = _window_mask(n, window, query_chunk, device=device)  # built once, O(n * window) bools
            fn = lambda: sliding_window_attention(q, k, v, window, chunk=query_chunk, mask=mask)  # noqa: E731
        elif op == "block_sparse_attention":
            fn = lambda: block_sparse_attention(q, k, v, block)  # noqa: E731
        else:
            fn = lambda: linear_attention(q, k, v)  # noqa: E731
    fn.inputs = inputs
    return fn


# --------------------------------------------------------------------------------------------------------------
# Peak memory on CPU
# --------------------------------------------------------------------------------------------------------------

class PeakMemoryMode(TorchDispatchMode):
    """Track the peak of live bytes in storages created by aten ops while the mode is active.

    A storage counts when an op returns a tensor on a storage none of the op's inputs share (so views and
    in-place results are not new allocations); it stops counting when the last Python tensor created on it
    inside the mode is garbage-collected. Storages created before the mode (the inputs) are never counted;
    scratch memory inside a single kernel is invisible.

    Example::

        with PeakMemoryMode() as mem:
            y = fn()
        mem.peak_bytes
    """

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._storages: dict[int, list[int]] = {}  # data_ptr -> [nbytes, live tensor count]

    def _release(self, key: int) -> None:
        entry = self._storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live_bytes -= entry[0]
            del self._storages[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        input_ptrs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                      if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0:
                continue
            if key in self._storages:
                self._storages[key][1] += 1
            elif key in input_ptrs:
                continue
            else:
                self._storages[key] = [nbytes, 1]
                self.live_bytes += nbytes
                self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            weakref.finalize(t, self._release, key)
        return out


def peak_memory(fn: Callable[[], object], device="cpu") -> int:
    """Peak bytes allocated while running ``fn`` once (result included), beyond what existed before."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.no_grad():
            out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del out
        return int(peak)
    with torch.no_grad(), PeakMemoryMode() as mem:
        out = fn()
    del out
    return int(mem.peak_bytes)


# --------------------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------------------

@dataclass
class Measurement:
    op: str
    n: int
    d: int
    heads: int
    batch: int
    device: str
    dtype: str  # e.g. "float32"
    median_s: float  # median seconds per call over `repeats`
    q1_s: float  # first quartile
    q3_s: float  # third quartile
    repeats: int
    peak_bytes: int  # peak live bytes during one call (see module docstring)


def measure(op: str, n: int, repeats: int = 5, warmup: int = 1, **kwargs) -> Measurement:
    """Time ``op`` at size ``n`` (median and quartiles over ``repeats`` calls) and measure its peak memory.

    Args:
        op, n: as in ``make_op``; ``kwargs`` are passed on to it (d, heads, batch, device, dtype, ...).
        repeats: timed calls; warmup: untimed calls first.
    Returns:
        A ``Measurement``.
    """
    check_positive_int("repeats", repeats)
    fn = make_op(op, n, **kwargs)
    device = torch.device(kwargs.get("device", "cpu"))
    dtype = kwargs.get("dtype", torch.float32)
    if device.type == "cuda":
        def timed() -> None:
            fn()
            torch.cuda.synchronize(device)
    else:
        timed = fn
    with torch.no_grad():
        times = interleaved_times({op: timed}, repeats=repeats, inner=1, warmup=warmup)[op]
    if len(times) >= 2:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    else:
        q1 = q3 = times[0]
    return Measurement(
        op=op, n=n, d=kwargs.get("d", 64), heads=kwargs.get("heads", 1), batch=kwargs.get("batch", 1),
        device=str(device), dtype=str(dtype).removeprefix("torch."), median_s=statistics.median(times),
        q1_s=q1, q3_s=q3, repeats=repeats, peak_bytes=peak_memory(fn, device),
    )


def sweep(ops: Iterable[str], sizes: Iterable[int], progress: bool = True, **kwargs) -> list[Measurement]:
    """``measure`` every op at every size (a tqdm bar when ``progress``); ``kwargs`` go to ``measure``."""
    from tqdm.auto import tqdm

    grid = [(op, n) for op in ops for n in sizes]
    results = []
    for op, n in tqdm(grid, disable=not progress, desc="scaling"):
        results.append(measure(op, n, **kwargs))
    return results


_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def _t_quantile_975(dof: int) -> float:
    try:
        from scipy import stats
        return float(stats.t.ppf(0.975, dof))
    except ImportError:  # nearest tabulated dof at or below, normal beyond 30
        return _T975[max(k for k in _T975 if k <= dof)] if dof <= 30 else 1.960


def fit_exponent(ns: Sequence[float], values: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """Slope of ``log(values)`` against ``log(ns)`` by least squares, with a 95 % confidence interval.

    The interval is ``slope +- t_{0.975, k-2} * SE(slope)`` for ``k`` points (Student t).

    Args:
        ns: sizes (positive); values: times or bytes (positive), same length, at least 3 points.
    Returns:
        ``(slope, (low, high))``.
    """
    if len(ns) != len(values):
        raise ValueError(f"ns and values differ in length ({len(ns)} vs {len(values)})")
    if len(ns) < 3:
        raise ValueError(f"fit_exponent needs at least 3 points for a confidence interval, got {len(ns)}")
    x = [math.log(v) for v in ns]
    y = [math.log(v) for v in values]
    k = len(x)
    mx, my = sum(x) / k, sum(y) / k
    sxx = sum((a - mx) ** 2 for a in x)
    if sxx == 0:
        raise ValueError("ns must not all be equal")
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx
    intercept = my - slope * mx
    residual = sum((b - intercept - slope * a) ** 2 for a, b in zip(x, y))
    se = math.sqrt(residual / (k - 2) / sxx)
    half = _t_quantile_975(k - 2) * se
    return slope, (slope - half, slope + half)


# --------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------

def to_records(measurements: Iterable[Measurement]) -> list[dict]:
    return [asdict(m) for m in measurements]


def fit_by_op(measurements: Sequence[Measurement]) -> dict[str, dict]:
    """Fitted time and memory exponents per op (ops with fewer than 3 sizes are skipped)."""
    fits: dict[str, dict] = {}
    for op in dict.fromkeys(m.op for m in measurements):
        rows = [m for m in measurements if m.op == op]
        if len(rows) < 3:
            continue
        ns = [m.n for m in rows]
        entry = {}
        entry["time"], entry["time_ci"] = fit_exponent(ns, [m.median_s for m in rows])
        if all(m.peak_bytes > 0 for m in rows):
            entry["memory"], entry["memory_ci"] = fit_exponent(ns, [m.peak_bytes for m in rows])
        fits[op] = entry
    return fits


def save(measurements: Sequence[Measurement], path: str | Path) -> Path:
    """Write ``.json`` (metadata, records, fitted exponents) or ``.csv`` (records only), chosen by suffix."""
    path = Path(path)
    records = to_records(measurements)
    if path.suffix == ".csv":
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(Measurement.__dataclass_fields__))
            writer.writeheader()
            writer.writerows(records)
        return path
    if path.suffix != ".json":
        raise ValueError(f"path must end in .json or .csv, got {path.name!r}")
    return write_json(path, {"metadata": metadata(), "records": records, "exponents": fit_by_op(measurements)})


def format_table(measurements: Sequence[Measurement]) -> str:
    lines = [f"{'op':<26} {'n':>6} {'median ms':>10} {'peak MiB':>9}"]
    for m in measurements:
        lines.append(f"{m.op:<26} {m.n:>6} {m.median_s * 1e3:>10.3f} {m.peak_bytes / 2**20:>9.2f}")
    lines.append("")
    lines.append(f"{'op':<26} {'time exponent (95% CI)':>26} {'memory exponent (95% CI)':>28}")
    for op, fit in fit_by_op(measurements).items():
        t = f"{fit['time']:.2f} [{fit['time_ci'][0]:.2f}, {fit['time_ci'][1]:.2f}]"
        mem = (f"{fit['memory']:.2f} [{fit['memory_ci'][0]:.2f}, {fit['memory_ci'][1]:.2f}]"
               if "memory" in fit else "n/a")
        lines.append(f"{op:<26} {t:>26} {mem:>28}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ops", default="attention_math,attention_fused,conv1d")
    parser.add_argument("--sizes", default="256,512,1024,2048")
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--n-buckets", type=int, default=8, help="lsh_attention: hash buckets (1 or even)")
    parser.add_argument("--n-rounds", type=int, default=2, help="lsh_attention: hashing rounds")
    parser.add_argument("--chunk", type=int, default=64, help="lsh_attention: chunk length of the sorted order")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", default=None, help=".json or .csv")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(check_positive_int("threads", args.threads))
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results = sweep(ops, sizes, progress=not args.no_progress, repeats=args.repeats, warmup=args.warmup,
                    d=args.d, heads=args.heads, batch=args.batch, window=args.window, block=args.block,
                    n_buckets=args.n_buckets, n_rounds=args.n_rounds, chunk=args.chunk, device=args.device,
                    dtype=getattr(torch, args.dtype))
    print(format_table(results))
    if args.out:
        print(f"wrote {save(results, args.out)}")
    return results


if __name__ == "__main__":
    main()
