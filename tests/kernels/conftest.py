"""Kernel tests: the Triton interpreter on CPU, native CUDA where a device exists.

``TRITON_INTERPRET=1`` must be set before triton is first imported (``triton.jit`` fixes GPU or interpreter then,
for triton's own helpers too), so tests/conftest.py sets it before collection, only on machines without CUDA:
there the CUDA-marked tests run the compiled kernels instead.

The random-case tests record their largest errors in :data:`MAX_ERRORS`; the table is printed at the end of the
session (``pytest tests/kernels -q`` shows it).
"""

from collections import defaultdict

import pytest
import torch

# (device, dtype) -> quantity -> largest absolute error seen; CASES_RUN counts cases per (device, dtype)
MAX_ERRORS: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
# the same, divided by max |reference| of that quantity in that case
MAX_RELATIVE: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
CASES_RUN: dict[tuple[str, str], int] = defaultdict(int)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same random state, so failures reproduce."""
    torch.manual_seed(0)


def pytest_terminal_summary(terminalreporter):
    if not CASES_RUN:
        return
    quantities = sorted({q for errors in MAX_ERRORS.values() for q in errors})
    terminalreporter.section("fused attention: max |kernel - reference| over the random cases")
    terminalreporter.write_line("device dtype    cases  error     " + "  ".join(f"{q:>13}" for q in quantities))
    for (device, dtype), count in sorted(CASES_RUN.items()):
        for label, table in (("absolute", MAX_ERRORS), ("/max|ref|", MAX_RELATIVE)):
            errors = table[(device, dtype)]
            row = "  ".join(f"{errors.get(q, float('nan')):13.2e}" for q in quantities)
            terminalreporter.write_line(f"{device:6} {dtype:8} {count:6}  {label:9} {row}")
