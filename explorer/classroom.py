"""Classroom: the notebooks' exercises as nbgrader assignments.

Each lesson ends with exercises in a fixed pattern: an instruction (markdown, starting ``**Exercise k.**`` or the
``## Exercises`` heading), a solution cell holding ``### BEGIN SOLUTION`` / ``### END SOLUTION``, and the cell right
after it, which checks the answer with ``assert``. :func:`mark_exercises` writes nbgrader's cell metadata (schema
version 3) for that pattern -- solution cells editable, check cells graded and locked with their points,
instructions locked -- so ``nbgrader generate_assignment`` can make student copies without the solutions and
``nbgrader autograde`` can grade them. It is deterministic and idempotent: the tests check every shipped notebook is
already marked (``mark_exercises(nb)`` changes nothing) and that the pattern holds.

Run ``python -m explorer.classroom mark notebooks/*.ipynb`` after adding an exercise.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["mark_exercises", "exercise_cells", "BEGIN", "END", "POINTS"]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
POINTS = 1  # per check cell
_INSTRUCTION = re.compile(r"^\s*(## Exercises|\*\*Exercise \d+\.\*\*)")


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _meta(grade_id: str, *, solution: bool = False, grade: bool = False, locked: bool = False,
          points: int | None = None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution,
            "task": False}
    if points is not None:
        meta["points"] = points
    return meta


def exercise_cells(nb: dict) -> list[tuple[int, int]]:
    """``(solution index, check index)`` of every exercise: a cell with the solution markers and the next cell.

    Raises:
        ValueError: a solution cell without its END marker, or not followed by a code cell that asserts.
    """
    cells = nb.get("cells")
    if not isinstance(cells, list):
        raise ValueError("nb must be a notebook dict with a 'cells' list")
    pairs = []
    for i, cell in enumerate(cells):
        text = _source(cell)
        if cell.get("cell_type") != "code" or BEGIN not in text:
            continue
        if END not in text:
            raise ValueError(f"cell {i}: {BEGIN!r} without {END!r}")
        check = cells[i + 1] if i + 1 < len(cells) else None
        if check is None or check.get("cell_type") != "code" or "assert" not in _source(check):
            raise ValueError(f"cell {i}: a solution must be followed by a code cell that checks it with assert")
        pairs.append((i, i + 1))
    return pairs


def mark_exercises(nb: dict, prefix: str) -> dict:
    """Return ``nb`` with nbgrader metadata on its exercise cells (see the module docstring); ``prefix`` makes the
    grade ids unique across notebooks (e.g. ``"rf"``). Other cells' nbgrader metadata is removed."""
    if not isinstance(prefix, str) or not re.fullmatch(r"[a-z0-9_-]+", prefix):
        raise ValueError(f"prefix must be lower-case letters, digits, '-' or '_', got {prefix!r}")
    nb = json.loads(json.dumps(nb))  # a copy
    pairs = exercise_cells(nb)
    for cell in nb["cells"]:
        cell.setdefault("metadata", {}).pop("nbgrader", None)
    for k, (solution, check) in enumerate(pairs, start=1):
        nb["cells"][solution]["metadata"]["nbgrader"] = _meta(f"{prefix}-ex{k}-answer", solution=True)
        nb["cells"][check]["metadata"]["nbgrader"] = _meta(f"{prefix}-ex{k}-check", grade=True, locked=True,
                                                            points=POINTS)
    n = 0
    for cell in nb["cells"]:
        if cell.get("cell_type") == "markdown" and _INSTRUCTION.match(_source(cell)):
            n += 1
            cell["metadata"]["nbgrader"] = _meta(f"{prefix}-instructions-{n}", locked=True)
    return nb


def _prefix(path: Path) -> str:
    """``01_receptive_fields.ipynb`` -> ``"01"``: the lesson number keeps grade ids unique."""
    return path.stem.split("_", 1)[0].lower()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer.classroom", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mark = sub.add_parser("mark", help="write nbgrader metadata on the exercises of these notebooks")
    mark.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.notebooks:
        nb = json.loads(path.read_text(encoding="utf-8"))
        marked = mark_exercises(nb, _prefix(path))
        if marked != nb:
            text = json.dumps(marked, indent=1, ensure_ascii=False, sort_keys=True) + "\n"  # as nbformat writes
            path.write_text(text, encoding="utf-8")
            print(f"marked {path}: {len(exercise_cells(marked))} exercises")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
