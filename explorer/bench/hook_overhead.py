"""Cost of idle hook points: explorer layers vs the same math in plain torch modules, nothing recording.

    python -m explorer.bench.hook_overhead [--repeats 40] [--out assets/benchmarks/hook_overhead_cpu.json]

Two models, each in two builds with identical weights:
  * conv:      5 x (3x3 conv, ReLU) with a 2x2 max pool after the 2nd and 4th, batch 8, 32 channels, 64 x 64;
  * attention: 2 x (self-attention, 4 heads, embed 128, + residual), batch 8, 256 tokens.
The explorer builds pass every tensor through idle hook points (and the attention layer picks its backend);
the plain builds call ``nn.Conv2d`` / ``F.scaled_dot_product_attention`` directly. Overhead is the ratio of
median times minus one; the target is <= 3 %.

End-to-end ratios on a shared 2-core machine wobble by a few percent, so the script also measures the fixed
Python cost directly: an idle ``HookPoint`` call, and an explorer layer vs its torch twin on a tiny input
(where the math costs almost nothing), in microseconds per call. That cost times the calls per forward pass,
divided by the forward time, bounds the overhead independently of the noise.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch import nn

from explorer.bench.common import interleaved_times, median_ms, metadata, write_json
from explorer.layers import Conv2d, MaxPool2d, MultiheadAttention


def conv_models(channels: int = 32) -> tuple[nn.Module, nn.Module]:
    def build(conv_cls, pool_cls) -> nn.Sequential:
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(5):
            layers += [conv_cls(c_in, channels, 3, padding=1), nn.ReLU()]
            if i in (1, 3):
                layers.append(pool_cls(2, 2))
            c_in = channels
        return nn.Sequential(*layers)

    torch.manual_seed(0)
    ours = build(Conv2d, MaxPool2d).eval()
    plain = build(nn.Conv2d, nn.MaxPool2d).eval()
    plain.load_state_dict(ours.state_dict())
    return ours, plain


class PlainSelfAttention(nn.Module):
    """Multi-head self-attention written directly with torch ops (the reference the explorer layer must match)."""

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, embed = x.shape
        heads = lambda t: t.view(batch, length, self.num_heads, -1).transpose(1, 2)  # (batch, head, query, head_dim)
        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        z = F.scaled_dot_product_attention(q, k, v)  # (batch, head, query, head_dim)
        return self.out_proj(z.transpose(1, 2).reshape(batch, length, embed))


class Residual(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


def attention_models(embed_dim: int = 128, num_heads: int = 4) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ours = nn.Sequential(*[Residual(MultiheadAttention(embed_dim, num_heads)) for _ in range(2)]).eval()
    plain = nn.Sequential(*[Residual(PlainSelfAttention(embed_dim, num_heads)) for _ in range(2)]).eval()
    with torch.no_grad():
        for mine, ref in zip(ours, plain):
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                getattr(ref.inner, name).load_state_dict(getattr(mine.inner, name).state_dict())
    return ours, plain


def fixed_costs(repeats: int = 30, inner: int = 2000) -> dict[str, float]:
    """Microseconds per call: idle hook point vs a plain identity function, explorer vs torch layers on tiny inputs."""
    from explorer.hooks import HookPoint, intervene

    hook, x = HookPoint(("batch",)), torch.zeros(1)
    edited = nn.Sequential(HookPoint(("batch",)))  # the same call with one pass-through edit attached
    identity = lambda t: t  # noqa: E731 - the cheapest possible call, the baseline
    conv_ours, conv_plain = Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1)
    attn_ours, attn_plain = attention_models(embed_dim=8, num_heads=2)
    tiny_image, tiny_tokens = torch.zeros(1, 1, 1, 1), torch.zeros(1, 2, 8)
    with intervene(edited, {"0": lambda t, _hook: t}):
        times = interleaved_times({
            "hook_point": lambda: hook(x), "identity": lambda: identity(x), "edited_hook_point": lambda: edited[0](x),
            "conv_explorer": lambda: conv_ours(tiny_image), "conv_torch": lambda: conv_plain(tiny_image),
            "attention_explorer": lambda: attn_ours[0].inner(tiny_tokens),
            "attention_plain": lambda: attn_plain[0].inner(tiny_tokens),
        }, repeats=repeats, inner=inner)
    us = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    return {
        "idle_hook_point_us": us["hook_point"] - us["identity"],
        "edited_hook_point_us": us["edited_hook_point"] - us["identity"],  # an edit costs only where attached
        "conv_layer_extra_us": us["conv_explorer"] - us["conv_torch"],
        "attention_layer_extra_us": us["attention_explorer"] - us["attention_plain"],
    }


def run(repeats: int = 40, inner: int = 5) -> dict:
    cases = {
        "conv": (conv_models(), torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))),
        "attention": (attention_models(), torch.randn(8, 256, 128, generator=torch.Generator().manual_seed(0))),
    }
    rows = []
    with torch.no_grad():
        for case, ((ours, plain), x) in cases.items():
            err = (ours(x) - plain(x)).abs().max().item()
            if err > 1e-4:
                raise AssertionError(f"{case}: explorer and plain builds disagree by {err:.2e}")
            times = interleaved_times({"explorer": lambda: ours(x), "plain": lambda: plain(x)},
                                      repeats=repeats, inner=inner)
            ratios = [a / b for a, b in zip(times["explorer"], times["plain"])]
            rows.append({
                "model": case,
                "explorer_ms": median_ms(times["explorer"]),
                "plain_ms": median_ms(times["plain"]),
                "overhead_pct": (statistics.median(times["explorer"]) / statistics.median(times["plain"]) - 1) * 100,
                "paired_ratio_median": statistics.median(ratios),
                "paired_ratio_q1_q3": statistics.quantiles(ratios, n=4)[::2],
                "max_abs_diff": err,
            })
    fixed = fixed_costs()
    calls = {"conv": ("conv_layer_extra_us", 7), "attention": ("attention_layer_extra_us", 2)}  # layers per forward
    for row in rows:
        key, count = calls[row["model"]]
        row["fixed_cost_bound_pct"] = fixed[key] * count / (row["plain_ms"] * 1e3) * 100
    return {"benchmark": "hook_overhead", "meta": metadata(), "repeats": repeats, "inner": inner,
            "fixed_costs_us": fixed, "results": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--inner", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = least noisy)")
    parser.add_argument("--out", default="assets/benchmarks/hook_overhead_cpu.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(args.repeats, args.inner)
    print(f"{'model':<10} {'explorer ms':>12} {'plain ms':>10} {'overhead':>9} {'paired ratio (q1..q3)':>24} "
          f"{'fixed-cost bound':>17}")
    for r in result["results"]:
        q1, q3 = r["paired_ratio_q1_q3"]
        print(f"{r['model']:<10} {r['explorer_ms']:>12.3f} {r['plain_ms']:>10.3f} {r['overhead_pct']:>8.2f}% "
              f"{r['paired_ratio_median']:>10.4f} ({q1:.4f}..{q3:.4f}) {r['fixed_cost_bound_pct']:>16.3f}%")
    print("fixed costs per call (us): " + ", ".join(f"{k} {v:.2f}" for k, v in result["fixed_costs_us"].items()))
    print(f"wrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
