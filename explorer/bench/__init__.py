"""Benchmark scripts (run with ``python -m explorer.bench.<name>``); they print tables and write JSON to assets/."""
