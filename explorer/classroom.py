"""Classroom: the notebooks' exercises as nbgrader assignments -- marked, released to students, autograded.

Each lesson ends with exercises in a fixed pattern: an instruction (markdown, starting ``**Exercise k.**`` or the
``## Exercises`` heading), a solution cell holding ``### BEGIN SOLUTION`` / ``### END SOLUTION``, and the cell right
after it, which checks the answer with ``assert``. :func:`mark_exercises` writes nbgrader's cell metadata (schema
version 3) for that pattern -- solution cells editable, check cells graded and locked with their points,
instructions locked -- so ``nbgrader generate_assignment`` can make student copies without the solutions and
``nbgrader autograde`` can grade them. It is deterministic and idempotent: the tests check every shipped notebook is
already marked (``mark_exercises(nb)`` changes nothing) and that the pattern holds.

Run ``python -m explorer.classroom mark notebooks/*.ipynb`` after adding an exercise.

A course directory is nbgrader's layout, one assignment per lesson (its name is the notebook's stem)::

    COURSE/nbgrader_config.py       course id, the SQLite gradebook, the per-cell timeout
    COURSE/gradebook.db
    COURSE/source/01_receptive_fields/01_receptive_fields.ipynb      the teacher's copy, with solutions
    COURSE/release/01_receptive_fields/01_receptive_fields.ipynb     the student copy (make student)
    COURSE/submitted/<student>/01_receptive_fields/...               what students hand in
    COURSE/autograded/<student>/01_receptive_fields/...              executed and scored by nbgrader autograde

:func:`release` writes the first three and checks that no solution line reached a student copy; :func:`submit`
files a student's notebook where ``nbgrader autograde`` looks, and :func:`collect` does it for every student of
the JupyterHub in ``explorer/deploy`` (their homes); :func:`autograde` grades; :func:`grades` reads the gradebook back, one row per check
cell with the reason a check lost its points. nbgrader runs in this process (``NbGraderAPI``), imported on first
use: the library does not need it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["mark_exercises", "exercise_cells", "BEGIN", "END", "POINTS", "CELL_TIMEOUT_S", "CellGrade",
           "write_course", "release", "solution_leaks", "submit", "collect", "publish", "collect_exchange",
           "autograde", "grades"]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
POINTS = 1  # per check cell
CELL_TIMEOUT_S = 60  # nbgrader's per-cell limit when grading (its default is 30 s); every lesson cell takes < 10 s
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")
_BARE_BEGIN, _BARE_END = BEGIN.lstrip("# "), END.lstrip("# ")
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
        ValueError: a solution cell without its END marker, or not followed by a code cell that asserts; a marker
            outside a solution cell.
    """
    cells = nb.get("cells")
    if not isinstance(cells, list):
        raise ValueError("nb must be a notebook dict with a 'cells' list")
    pairs = []
    for i, cell in enumerate(cells):
        text = _source(cell)
        if cell.get("cell_type") != "code" or BEGIN not in text:
            # nbgrader treats any line holding "BEGIN SOLUTION" as a marker, even in prose
            if _BARE_BEGIN in text or _BARE_END in text:
                raise ValueError(f"cell {i}: only a code cell holding the solution may mention "
                                 f"{_BARE_BEGIN!r} or {_BARE_END!r} (nbgrader would read it as a marker)")
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


# --- a course: release, submit, autograde, grades ----------------------------------------------------------

@dataclass(frozen=True)
class CellGrade:
    """One check cell of one submission, as the gradebook has it."""

    student: str
    assignment: str
    notebook: str
    cell: str  # the check cell's grade id, e.g. "01-ex1-check"
    score: float
    max_score: float
    message: str  # "passed", or why the check lost its points (the error nbgrader recorded)


def _course_root(course: Path | str, *, exists: bool = True) -> Path:
    if not isinstance(course, (str, os.PathLike)):
        raise TypeError(f"course must be a path, got {type(course).__name__}")
    root = Path(course).resolve()
    if exists and not (root / "nbgrader_config.py").is_file():
        raise ValueError(f"course {str(course)!r} is not a course directory (no nbgrader_config.py); "
                         "make one with: python -m explorer.classroom release COURSE")
    return root


def _notebook_paths(notebooks: Sequence[Path | str] | None) -> list[Path]:
    paths = sorted(NOTEBOOKS.glob("0*.ipynb")) if notebooks is None else [Path(p) for p in notebooks]
    if not paths:
        raise ValueError("notebooks is empty: give at least one lesson notebook")
    for path in paths:
        if path.suffix != ".ipynb" or not path.is_file():
            raise ValueError(f"notebooks: {str(path)!r} is not a notebook file")
    return paths


def _timeout(timeout_s: int) -> int:
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int) or not 1 <= timeout_s <= 3600:
        raise ValueError(f"timeout_s must be an int of seconds in [1, 3600], got {timeout_s!r}")
    return timeout_s


def write_course(course: Path | str, notebooks: Sequence[Path | str] | None = None, *, course_id: str = "explorer",
                 timeout_s: int = CELL_TIMEOUT_S) -> Path:
    """Create (or refresh) a course directory: ``nbgrader_config.py`` and every lesson under ``source/`` as its own
    assignment. Lessons are re-marked on the way (:func:`mark_exercises`), so a source copy always carries the
    metadata nbgrader needs. Returns the course root."""
    if not isinstance(course_id, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", course_id):
        raise ValueError(f"course_id must be letters, digits, '-' or '_', got {course_id!r}")
    timeout_s = _timeout(timeout_s)
    root = _course_root(course, exists=False)
    paths = _notebook_paths(notebooks)
    root.mkdir(parents=True, exist_ok=True)
    (root / "nbgrader_config.py").write_text(
        "# Written by python -m explorer.classroom; nbgrader reads it from this folder.\n"
        "import os\n"
        "c = get_config()  # noqa: F821\n"
        f"c.CourseDirectory.course_id = {course_id!r}\n"
        "c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))\n"
        "c.CourseDirectory.db_url = 'sqlite:///' + c.CourseDirectory.root + '/gradebook.db'\n"
        f"c.Execute.timeout = {timeout_s}  # seconds per cell; a cell that never ends is interrupted\n"
        "c.ClearSolutions.code_stub = {'python': '# YOUR CODE HERE\\nraise NotImplementedError()'}\n",
        encoding="utf-8")
    for path in paths:
        nb = json.loads(path.read_text(encoding="utf-8"))
        marked = mark_exercises(nb, _prefix(path))
        if not exercise_cells(marked):
            raise ValueError(f"notebooks: {path.name} has no exercise to grade")
        target = root / "source" / path.stem / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(marked, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    return root


@contextlib.contextmanager
def _nbgrader(root: Path, timeout_s: int | None = None, exchange: Path | None = None) -> Iterator[object]:
    """nbgrader's API on ``root``, configured from its ``nbgrader_config.py``, in this process.

    nbgrader runs the ``alembic`` command to check the gradebook's schema: put this interpreter's scripts on PATH
    so a venv's copy is found even when the venv is not activated."""
    from nbgrader.apps import NbGraderAPI  # noqa: PLC0415 (optional dependency, imported on use)
    from traitlets.config import PyFileConfigLoader  # noqa: PLC0415

    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    config.CourseDirectory.root = str(root)
    if timeout_s is not None:
        config.Execute.timeout = _timeout(timeout_s)
    if exchange is not None:  # a hub's exchange (explorer.deploy.exchange): teachers share it as a group
        config.Exchange.root = str(exchange)
        config.CourseDirectory.groupshared = True
        config.ExchangeReleaseAssignment.force = True  # publishing again replaces the released copy
    old_path, old_cwd = os.environ.get("PATH", ""), Path.cwd()
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), old_path])
    os.chdir(root)  # nbgrader resolves some paths against the working directory
    try:
        with warnings.catch_warnings():
            # nbgrader 0.9.6 with SQLAlchemy 2.1, after a failed submission: harmless, and noisy
            warnings.filterwarnings("ignore", message=".*not in session.*")
            yield NbGraderAPI(config=config)
    finally:
        os.chdir(old_cwd)
        os.environ["PATH"] = old_path


def _check(result: dict, what: str) -> None:
    if not result.get("success"):
        detail = (result.get("error") or result.get("log") or "").strip().splitlines()[-12:]
        raise RuntimeError(f"nbgrader {what} failed:\n" + "\n".join(detail))


def _solution_lines(nb: dict) -> set[str]:
    """Lines only the solutions hold: stripped, inside the markers, not found in any other cell of the notebook."""
    inside: set[str] = set()
    outside: set[str] = set()
    for cell in nb["cells"]:
        text = _source(cell)
        if BEGIN in text:
            in_solution = False
            for line in text.splitlines():
                if BEGIN in line:
                    in_solution = True
                elif END in line:
                    in_solution = False
                elif in_solution and line.strip():
                    inside.add(line.strip())
                else:
                    outside.add(line.strip())
        else:
            outside.update(line.strip() for line in text.splitlines())
    return inside - outside


def solution_leaks(source: dict, student_copy: dict) -> list[str]:
    """Solution lines of ``source`` that appear anywhere in ``student_copy`` (sources and outputs): [] when none."""
    text = json.dumps(student_copy, ensure_ascii=False)
    copy_lines = {line.strip() for cell in student_copy["cells"] for line in _source(cell).splitlines()}
    return sorted(line for line in _solution_lines(source)
                  if line in copy_lines or json.dumps(line, ensure_ascii=False)[1:-1] in text)


def release(course: Path | str, notebooks: Sequence[Path | str] | None = None, **course_options) -> dict[str, Path]:
    """Student copies of every lesson: :func:`write_course`, then ``nbgrader generate_assignment`` per lesson into
    ``release/``. Returns ``{assignment: release folder}``.

    Raises:
        RuntimeError: nbgrader failed, or a solution line survived into a student copy (the check
            :func:`solution_leaks` makes on every copy before returning).
    """
    root = write_course(course, notebooks, **course_options)
    assignments = sorted(p.name for p in (root / "source").iterdir() if p.is_dir())
    with _nbgrader(root) as api:
        for name in assignments:
            _check(api.generate_assignment(name, force=True, create=True), f"generate_assignment {name}")
    out = {}
    for name in assignments:
        for source in sorted((root / "source" / name).glob("*.ipynb")):
            copy = root / "release" / name / source.name
            leaks = solution_leaks(json.loads(source.read_text(encoding="utf-8")),
                                   json.loads(copy.read_text(encoding="utf-8")))
            if leaks:
                raise RuntimeError(f"{copy}: solution lines reached the student copy: {leaks[:3]}")
        out[name] = root / "release" / name
    return out


def _student_id(student: str) -> str:
    if not isinstance(student, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", student):
        raise ValueError(f"student must be 1-64 letters, digits, '.', '-' or '_' (not starting with one of "
                         f"the last three), got {student!r}")
    return student


def submit(course: Path | str, student: str, notebook: Path | str, assignment: str | None = None) -> Path:
    """File ``notebook`` as ``student``'s submission (``submitted/<student>/<assignment>/``), where autograde
    looks. ``assignment`` defaults to the notebook's stem; the file name must be the assignment's notebook."""
    root = _course_root(course)
    student = _student_id(student)
    path = Path(notebook)
    if path.suffix != ".ipynb" or not path.is_file():
        raise ValueError(f"notebook: {str(notebook)!r} is not a notebook file")
    assignment = path.stem if assignment is None else assignment
    expected = root / "source" / str(assignment) / path.name
    if not expected.is_file():
        known = sorted(p.relative_to(root / "source").as_posix() for p in (root / "source").glob("*/*.ipynb"))
        raise ValueError(f"assignment/notebook: {assignment}/{path.name} is not in this course; it has {known}")
    target = root / "submitted" / student / str(assignment) / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    return target


def collect(course: Path | str, homes: Path | str) -> list[Path]:
    """:func:`submit` every student's copy of every lesson of the course found in a homes folder laid out as
    ``homes/<student>/<notebook>.ipynb`` -- the JupyterHub of ``explorer/deploy`` keeps students' files that way
    (``<state dir>/homes``). Folders whose name is not a valid student id are skipped (with a note on stderr).
    Returns the submitted paths."""
    root = _course_root(course)
    folder = Path(homes)
    if not folder.is_dir():
        raise ValueError(f"homes: {str(homes)!r} is not a folder")
    lessons = {p.name: p.parent.name for p in (root / "source").glob("*/*.ipynb")}
    out = []
    for home in sorted(p for p in folder.iterdir() if p.is_dir()):
        try:
            student = _student_id(home.name)
        except ValueError:
            print(f"collect: skipped {home} (not a valid student id)", file=sys.stderr)
            continue
        for name, assignment in sorted(lessons.items()):
            if (home / name).is_file():
                out.append(submit(root, student, home / name, assignment))
    return out


def _course_id(root: Path) -> str:
    match = re.search(r"course_id = '([A-Za-z0-9_-]+)'", (root / "nbgrader_config.py").read_text(encoding="utf-8"))
    if not match:
        raise ValueError(f"{root / 'nbgrader_config.py'} names no course_id")
    return match.group(1)


def _teacher_course(course: Path | str) -> Path:
    """The course root, refused with a clear message when the caller cannot write it (a student, on the hub)."""
    root = _course_root(course, exists=False)  # the type check; existence is checked below, after access
    if root.is_dir() and not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        import pwd  # noqa: PLC0415

        raise PermissionError(f"course {str(course)!r} is not readable and writable by {pwd.getpwuid(os.getuid()).pw_name}"
                              ": only teachers can run this (on the hub: members of the teachers' group)")
    return _course_root(course)


def publish(course: Path | str, exchange: Path | str, assignment: str | None = None) -> list[str]:
    """Release the student copies (``release/``) into a hub's nbgrader exchange, where students fetch them from
    JupyterLab's Assignments list (``nbgrader release_assignment``; an assignment already there is replaced).
    Returns the assignments published."""
    root = _teacher_course(course)
    names = sorted(p.name for p in (root / "release").iterdir() if p.is_dir()) if (root / "release").is_dir() else []
    if assignment is not None:
        if assignment not in names:
            raise ValueError(f"assignment {assignment!r} has no student copy in {root / 'release'}; it has {names}")
        names = [assignment]
    if not names:
        raise ValueError(f"{root / 'release'} holds no student copies: run python -m explorer.classroom release first")
    folder = Path(exchange) / _course_id(root)
    if not os.access(folder / "outbound", os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {folder / 'outbound'}: only teachers publish (is the exchange set up by "
                              "the hub, with EXPLORER_HUB_EXCHANGE, and are you in the teachers' group?)")
    with _nbgrader(root, exchange=Path(exchange)) as api:
        for name in names:
            _check(api.release_assignment(name), f"release_assignment {name}")
    return names


def collect_exchange(course: Path | str, exchange: Path | str, *, prefix: str = "jupyter-") -> tuple[list[Path], list]:
    """Collect students' hand-ins from a hub's nbgrader exchange into ``submitted/`` after checking each one
    (:func:`explorer.deploy.exchange.audit_inbound`: the owner must be the student it names, its time must be
    the time it was written); returns (folders written, refused hand-ins with their reasons)."""
    from explorer.deploy.exchange import collect_exchange as _collect  # noqa: PLC0415

    root = _teacher_course(course)
    return _collect(root, exchange, _course_id(root), prefix=prefix)


def autograde(course: Path | str, assignment: str | None = None, student: str | Sequence[str] | None = None, *,
              timeout_s: int | None = None) -> list[CellGrade]:
    """``nbgrader autograde`` every submission (or one assignment / one student or a list of students): executes each submitted notebook
    with the course's per-cell timeout (or ``timeout_s``), restores locked and graded cells from the teacher's copy, records the
    scores in the gradebook. One submission that nbgrader cannot grade is reported in its rows' message and does not
    stop the others. Returns :func:`grades` for what was graded."""
    root = _teacher_course(course)
    submitted = root / "submitted"
    pairs = sorted((s.name, a.name) for s in submitted.glob("*") if s.is_dir() for a in s.iterdir() if a.is_dir())
    if student is not None:
        wanted = {_student_id(student)} if isinstance(student, str) else {_student_id(s) for s in student}
        pairs = [p for p in pairs if p[0] in wanted]
    if assignment is not None:
        pairs = [p for p in pairs if p[1] == assignment]
    if not pairs:
        raise ValueError(f"nothing submitted for assignment={assignment!r}, student={student!r} in {root}")
    failures = {}
    with _nbgrader(root, timeout_s) as api:
        for who, name in pairs:
            result = api.autograde(name, who, force=True, create=True)
            if not result.get("success"):
                failures[(who, name)] = "\n".join(filter(None, [result.get("log"), result.get("error")]))
    rows = [g for g in grades(root) if (g.student, g.assignment) in set(pairs)]
    for (who, name), error in failures.items():
        causes = [line.strip() for line in error.splitlines()
                  if _EXCEPTION_LINE.match(line.strip()) and "NbGraderException" not in line]
        last = causes[-1] if causes else "nbgrader failed (see its log)"
        rows = [g for g in rows if (g.student, g.assignment) != (who, name)]
        for source in sorted((root / "source" / name).glob("*.ipynb")):
            for grade_id, cell in (_graded_cells(source) or {}).items():
                meta = cell["metadata"]["nbgrader"]
                if meta.get("grade"):
                    rows.append(CellGrade(who, name, source.stem, grade_id, 0.0, float(meta.get("points", 0)),
                                          f"not graded: {last}"))
    return sorted(rows, key=lambda g: (g.student, g.assignment, g.notebook, g.cell))


def _graded_cells(path: Path) -> dict[str, dict] | None:
    """``{grade id: cell}`` of a notebook file; None when it is missing or not a notebook."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        return {c["metadata"]["nbgrader"]["grade_id"]: c for c in nb["cells"]
                if isinstance(c.get("metadata", {}).get("nbgrader"), dict) and "grade_id" in c["metadata"]["nbgrader"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _error(cell: dict | None) -> str:
    """The last error a cell's execution recorded, as ``Name: first line``; "" when none."""
    for output in reversed((cell or {}).get("outputs", [])):
        if output.get("output_type") == "error":
            name = str(output.get("ename", "Error"))
            value = str(output.get("evalue", "")).strip().splitlines()
            if not value:  # nbgrader's timeout error says what happened in its traceback only
                last = re.sub(r"\x1b\[[0-9;]*m", "", str((output.get("traceback") or [""])[-1])).strip()
                value = [last.removeprefix(name).lstrip(": ")] if last else []
            return f"{name}: {value[0] if value else ''}".rstrip(": ")
    return ""


def _reasons(root: Path, student: str, assignment: str, notebook: str) -> dict[str, str]:
    """Why each check cell of one submission lost points: the error it raised, and what the student did to it or to
    its answer cell (deleted, edited, an answer that raised or timed out)."""
    name = f"{notebook}.ipynb"
    source = _graded_cells(root / "source" / assignment / name) or {}
    submitted = _graded_cells(root / "submitted" / student / assignment / name)
    graded = _graded_cells(root / "autograded" / student / assignment / name) or {}
    reasons = {}
    for grade_id, cell in source.items():
        if not cell["metadata"]["nbgrader"].get("grade"):
            continue
        parts = [_error(graded.get(grade_id))]
        if submitted is None:
            parts.append("the submitted file is not a readable notebook")
        elif grade_id not in submitted:
            parts.append("check cell deleted from the submission")
        elif _source(submitted[grade_id]) != _source(cell):
            parts.append("check cell edited in the submission (nbgrader ran the teacher's version)")
        answer = grade_id.removesuffix("-check") + "-answer"
        if answer in source:
            if submitted is not None and answer not in submitted:
                parts.append("its answer cell was deleted")
            elif _error(graded.get(answer)):
                parts.append(f"its answer cell raised {_error(graded.get(answer))}")
        reasons[grade_id] = "; ".join(p for p in parts if p) or "failed without an error output"
    return reasons


def grades(course: Path | str) -> list[CellGrade]:
    """Every autograded check cell in the gradebook, with why it lost points (the error its execution recorded)."""
    from nbgrader.api import Gradebook, MissingEntry  # noqa: PLC0415

    root = _teacher_course(course)
    rows = []
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for assignment in gb.assignments:
            for student in gb.students:
                try:
                    submission = gb.find_submission(assignment.name, student.id)
                except MissingEntry:
                    continue
                for nb in submission.notebooks:
                    reasons = _reasons(root, student.id, assignment.name, nb.name)
                    for grade in nb.grades:
                        if grade.cell_type != "code":
                            continue
                        score = float(grade.score)
                        message = "passed" if score >= grade.max_score else reasons.get(grade.name, "not graded")
                        rows.append(CellGrade(student.id, assignment.name, nb.name, grade.name, score,
                                              float(grade.max_score), message))
    return sorted(rows, key=lambda g: (g.student, g.assignment, g.notebook, g.cell))


def _table(rows: Sequence[CellGrade]) -> str:
    lines = [f"{'student':<12} {'assignment':<26} {'cell':<14} {'score':>7}  message"]
    lines += [f"{g.student:<12} {g.assignment:<26} {g.cell:<14} {g.score:>3g}/{g.max_score:<3g}  {g.message}"
              for g in rows]
    totals: dict[tuple[str, str], list[float]] = {}
    for g in rows:
        total = totals.setdefault((g.student, g.assignment), [0.0, 0.0])
        total[0] += g.score
        total[1] += g.max_score
    lines += [f"total {who}/{name}: {s:g} of {m:g}" for (who, name), (s, m) in sorted(totals.items())]
    return "\n".join(lines)


def _prefix(path: Path) -> str:
    """``01_receptive_fields.ipynb`` -> ``"01"``: the lesson number keeps grade ids unique."""
    return path.stem.split("_", 1)[0].lower()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer.classroom", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mark = sub.add_parser("mark", help="write nbgrader metadata on the exercises of these notebooks")
    mark.add_argument("notebooks", nargs="+", type=Path)
    rel = sub.add_parser("release", help="make a course directory and the student copies of every lesson")
    rel.add_argument("course", type=Path)
    rel.add_argument("notebooks", nargs="*", type=Path, help="lessons (default: notebooks/0*.ipynb)")
    rel.add_argument("--course-id", default="explorer")
    rel.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S, help="seconds per cell when grading")
    sbm = sub.add_parser("submit", help="file a student's notebook as their submission")
    sbm.add_argument("course", type=Path)
    sbm.add_argument("student")
    sbm.add_argument("notebooks", nargs="+", type=Path)
    col = sub.add_parser("collect", help="collect hand-ins from a hub's nbgrader exchange (--exchange), or submit "
                                         "every student's lessons from a one-account hub's homes folder")
    col.add_argument("course", type=Path)
    col.add_argument("homes", type=Path, nargs="?", help="homes/<student>/<lesson>.ipynb (a hub run with "
                                                          "EXPLORER_HUB_ISOLATION=none: its <state dir>/homes)")
    col.add_argument("--exchange", type=Path, help="the hub's exchange root (EXPLORER_HUB_EXCHANGE)")
    col.add_argument("--prefix", default="jupyter-", help="the hub's Unix name prefix (EXPLORER_HUB_USER_PREFIX)")
    pub = sub.add_parser("publish", help="put the student copies into a hub's nbgrader exchange")
    pub.add_argument("course", type=Path)
    pub.add_argument("--exchange", type=Path, required=True, help="the hub's exchange root (EXPLORER_HUB_EXCHANGE)")
    pub.add_argument("--assignment")
    grade = sub.add_parser("autograde", help="grade the submissions and print every check cell's score")
    grade.add_argument("course", type=Path)
    grade.add_argument("--assignment")
    grade.add_argument("--student")
    grade.add_argument("--timeout", type=int, help="seconds per cell (default: the course's)")
    grade.add_argument("--json", action="store_true", help="print the rows as JSON")
    show = sub.add_parser("grades", help="print the gradebook, one row per check cell")
    show.add_argument("course", type=Path)
    show.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "mark":
            for path in args.notebooks:
                nb = json.loads(path.read_text(encoding="utf-8"))
                marked = mark_exercises(nb, _prefix(path))
                if marked != nb:
                    text = json.dumps(marked, indent=1, ensure_ascii=False, sort_keys=True) + "\n"  # as nbformat
                    path.write_text(text, encoding="utf-8")
                    print(f"marked {path}: {len(exercise_cells(marked))} exercises")
        elif args.command == "release":
            for name, folder in release(args.course, args.notebooks or None, course_id=args.course_id,
                                        timeout_s=args.timeout).items():
                print(f"{name}: student copy in {folder}")
        elif args.command == "collect":
            if (args.homes is None) == (args.exchange is None):
                raise ValueError("collect needs either a homes folder or --exchange ROOT, not both")
            if args.exchange is not None:
                written, refused = collect_exchange(args.course, args.exchange, prefix=args.prefix)
                for path in written:
                    print(f"collected {path}")
                for handin in refused:
                    print(f"refused {handin.path.name}: {'; '.join(handin.problems)}")
            else:
                for path in collect(args.course, args.homes):
                    print(f"submitted {path}")
        elif args.command == "publish":
            for name in publish(args.course, args.exchange, args.assignment):
                print(f"published {name} to {args.exchange}")
        elif args.command == "submit":
            for path in args.notebooks:
                print(f"submitted {submit(args.course, args.student, path)}")
        else:
            rows = (autograde(args.course, args.assignment, args.student, timeout_s=args.timeout) if args.command == "autograde"
                    else grades(args.course))
            print(json.dumps([asdict(g) for g in rows], indent=1) if args.json else _table(rows))
    except (ValueError, TypeError, RuntimeError, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
