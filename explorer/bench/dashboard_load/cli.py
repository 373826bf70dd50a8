"""Command line of ``python -m explorer.bench.dashboard_load``: parsing with checked options, and ``main``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from explorer.bench.common import write_json

from .common import MAX_VISITORS, ROOT, _check_range, check_counts, check_url
from .http_visitors import serve_only_command, serve_only_table
from .latency import LATENCY_NAMES, latency_command, latency_table
from .server import _stop_all_started
from .visitors import visitors_command, visitors_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m explorer.bench.dashboard_load",
                                     description="Load and latency benchmark of the Voila dashboard (loopback only).")
    sub = parser.add_subparsers(dest="command", required=True)

    vis = sub.add_parser("visitors", help="N concurrent visitors: first plot, memory, kernel culling")
    vis.add_argument("--n", type=int, nargs="+", default=[1, 4, 8, 16], help=f"visitor counts (1..{MAX_VISITORS})")
    vis.add_argument("--preheat", type=int, nargs="+", default=[0],
                     help="preheated kernel pool sizes to compare (0 = no preheat)")
    vis.add_argument("--repeats", type=int, default=3, help="repeats of the reference page and of N=1 (1..10)")
    vis.add_argument("--no-reference", action="store_true", help="skip the one-slider reference page")
    vis.add_argument("--cull-timeout", type=int, default=60, help="server's cull_idle_timeout in seconds")
    vis.add_argument("--cull-interval", type=int, default=10, help="server's cull_interval in seconds")
    vis.add_argument("--close", choices=["tab", "drop"], default="tab",
                     help="tab: close like a browser tab (beforeunload runs); drop: without beforeunload")
    vis.add_argument("--load-timeout", type=float, default=300.0, help="seconds a visitor may wait for a plot")
    vis.add_argument("--pool-manager", choices=["fixed", "voila"], default="fixed",
                     help="fixed: launch through explorer/deploy/voila_pool.py; voila: Voila's own kernel manager")
    vis.add_argument("--out", default=str(ROOT / "assets/benchmarks/dashboard_load_cpu.json"))
    _common_options(vis)

    srv = sub.add_parser("serve-only", help="N plain HTTP visitors at once (no browser): page time, server CPU, memory")
    srv.add_argument("--n", type=int, nargs="+", default=[1, 4, 8, 16, 32],
                     help=f"visitor counts (1..{MAX_VISITORS})")
    srv.add_argument("--preheat", type=int, nargs="+", default=[0],
                     help="preheated kernel pool sizes to compare (0 = no preheat)")
    srv.add_argument("--pool-manager", choices=["fixed", "voila"], default="fixed",
                     help="fixed: launch through explorer/deploy/voila_pool.py; voila: Voila's own kernel manager")
    srv.add_argument("--cull-timeout", type=int, default=300, help="server's cull_idle_timeout in seconds")
    srv.add_argument("--cull-interval", type=int, default=60, help="server's cull_interval in seconds")
    srv.add_argument("--round-timeout", type=float, default=300.0, help="seconds a round's visitors may take")
    srv.add_argument("--timeout", type=float, default=3600.0, help="global deadline in seconds")
    srv.add_argument("--out", default=str(ROOT / "assets/benchmarks/dashboard_load_serve_only_cpu.json"))

    lat = sub.add_parser("latency", help="one visitor: control change -> settled plot")
    lat.add_argument("--repeats", type=int, default=16, help="samples per scenario (1..200)")
    lat.add_argument("--only", nargs="+", default=None, metavar="SCENARIO",
                     help=f"measure only these scenarios (of {', '.join(LATENCY_NAMES)}; default all)")
    lat.add_argument("--out", default=str(ROOT / "assets/benchmarks/dashboard_latency_cpu.json"))
    _common_options(lat)
    return parser


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="use this running dashboard (loopback only) instead of "
                                                    "starting one")
    parser.add_argument("--timeout", type=float, default=600.0, help="global deadline in seconds")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check ``argv``; argument errors raise ValueError / TypeError naming the option."""
    args = build_parser().parse_args(argv)
    if getattr(args, "url", None) is not None:
        args.url = check_url(args.url)
    _check_range(args.timeout, "--timeout", 10, 7200)
    if args.command in ("visitors", "serve-only"):  # both start N visitors against their own pooled server
        args.n = check_counts(args.n, "--n", 1)
        args.preheat = check_counts(args.preheat, "--preheat", 0)
        _check_range(args.cull_timeout, "--cull-timeout", 1, 3600)
        _check_range(args.cull_interval, "--cull-interval", 1, 600)
    if args.command == "visitors":
        _check_range(args.repeats, "--repeats", 1, 10)
        _check_range(args.load_timeout, "--load-timeout", 5, 3600)
        if args.url is not None and args.preheat != [0]:
            raise ValueError("--preheat needs the benchmark's own server; leave it out with --url")
    elif args.command == "serve-only":
        _check_range(args.round_timeout, "--round-timeout", 5, 600)
    else:
        _check_range(args.repeats, "--repeats", 1, 200)
        if args.only is not None:
            unknown = [name for name in args.only if name not in LATENCY_NAMES]
            if unknown:
                raise ValueError(f"--only takes scenario names of {LATENCY_NAMES}, got {unknown}")
            args.only = list(dict.fromkeys(args.only))
    return args


def _raise_interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parse_args(argv)
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # unwind through every finally, as on Ctrl-C
    try:
        if args.command == "visitors":
            result = asyncio.run(visitors_command(args, argv))
            table = visitors_table(result)
        elif args.command == "serve-only":
            result = asyncio.run(serve_only_command(args, argv))
            table = serve_only_table(result)
        else:
            result = asyncio.run(latency_command(args, argv))
            table = latency_table(result)
    except KeyboardInterrupt:
        print("interrupted: servers and browser stopped, nothing written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_all_started()
    print(table)
    print(f"wrote {write_json(args.out, result)}")
    return 0

