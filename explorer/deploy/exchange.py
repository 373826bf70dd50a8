"""nbgrader's exchange on a hub with one Unix user per student: set up so students cannot see or change each other's
hand-ins, and collected so that a hand-in made in someone else's name, or changed after the time it claims, is not
graded.

nbgrader's exchange is a folder tree every student writes into (``<root>/<course>/inbound``); its design relies on
Unix permissions, and two of its known weaknesses are impersonation (a student can submit as another with
``nbgrader submit --student=<id>``, or by creating ``<id>+<assignment>+<time>+<random>`` by hand; nbgrader's collect
only *logs* "cheating attempt?" and collects it) and timestamps (the time is a name and a file the student writes).

:func:`prepare_exchange` (run by the hub, as root, when it starts) makes the tree with these modes:

=================================== ============ =============================================================
``<root>``                          root 0755    nobody but root creates a course in it
``<root>/<course>``                 root:T 2775  teachers (group T) release; students read
``<root>/<course>/outbound``        root:T 2775  released assignments: teachers write, students fetch
``<root>/<course>/inbound``         root:T 3773  students create their hand-in folders but cannot list the folder
                                                 (no ``r`` for others), and the sticky bit stops them removing or
                                                 renaming a folder that is not theirs; new folders get group T
``<root>/<course>/feedback``        root:T 2771  teachers write; a student reads only a file whose name they know
=================================== ============ =============================================================

nbgrader runs with ``CourseDirectory.groupshared = True`` for teachers (several teachers in one group; nbgrader then
leaves the root's mode to the admin instead of forcing it to 0777).

:func:`audit_inbound` (run by a teacher's collect) refuses a hand-in when the Unix owner of its folder is not the
student it names, when its ``timestamp.txt`` disagrees with its name, or when anything in it changed (inode change
time, which the owner cannot set back) more than ``tolerance_s`` after the time it claims, or when it holds a file
another user wrote. nbgrader makes each hand-in folder mode 0777 (so that an instructor can delete it); students'
servers hand in through :class:`explorer.deploy.nbgrader_submit.PrivateSubmit`, which makes it ``rwxr-x---``
(owner and teachers), so another student cannot enter it even knowing its name.
"""

from __future__ import annotations

import datetime as _dt
import grp
import os
import pwd
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["prepare_exchange", "Handin", "audit_inbound", "collect_exchange", "nbgrader_student_config",
           "EXCHANGE_MODES"]

EXCHANGE_MODES = {"": 0o755, "course": 0o2775, "outbound": 0o2775, "inbound": 0o3773, "feedback": 0o2771}
TOLERANCE_S = 60.0


def prepare_exchange(root: Path | str, course_id: str, teachers_group: str) -> Path:
    """Create (or fix) the exchange tree for ``course_id`` with the modes in the module docstring; returns the
    course's folder. Run as root.

    Raises:
        ValueError: ``course_id`` not letters, digits, '-' or '_'; ``teachers_group`` does not exist;
            ``root`` relative.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", course_id or ""):
        raise ValueError(f"course_id must be letters, digits, '-' or '_', got {course_id!r}")
    root = Path(root)
    if not root.is_absolute():
        raise ValueError(f"exchange root {root} must be an absolute path")
    try:
        gid = grp.getgrnam(teachers_group).gr_gid
    except KeyError:
        raise ValueError(f"teachers_group {teachers_group!r} does not exist") from None
    course = root / course_id
    for path, key, group in ((root, "", 0), (course, "course", gid), (course / "outbound", "outbound", gid),
                             (course / "inbound", "inbound", gid), (course / "feedback", "feedback", gid)):
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, 0, group)
        path.chmod(EXCHANGE_MODES[key])
    return course


def nbgrader_student_config(exchange: Path | str, course_id: str) -> dict:
    """What students' servers need to list, fetch and submit (``nbgrader_config.json`` on their config path)."""
    # groupshared: nbgrader otherwise insists the exchange root be world-writable (0777) for everyone, students
    # included; here only root writes it, so nobody can squat another course's folder
    return {"CourseDirectory": {"course_id": course_id, "groupshared": True}, "Exchange": {"root": str(exchange)},
            "ExchangeFactory": {"submit": "explorer.deploy.nbgrader_submit.PrivateSubmit"}}


@dataclass
class Handin:
    """One folder of the inbound: ``<student>+<assignment>+<timestamp>[+<random>]``."""

    path: Path
    student: str
    assignment: str
    claimed: _dt.datetime | None
    owner: str
    problems: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.problems


def _parse_time(text: str) -> _dt.datetime | None:
    from nbgrader.utils import parse_utc  # noqa: PLC0415 (optional dependency)

    try:
        return parse_utc(text.strip())
    except (ValueError, TypeError, OverflowError):
        return None


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def audit_inbound(exchange: Path | str, course_id: str, *, tolerance_s: float = TOLERANCE_S) -> list[Handin]:
    """Every hand-in of the course's inbound, each with the reasons it must not be graded (empty: accepted).

    Raises:
        PermissionError: the inbound cannot be listed (the caller is not a teacher).
        ValueError: no such course in the exchange.
    """
    inbound = Path(exchange) / course_id / "inbound"
    if not inbound.is_dir():
        raise ValueError(f"no inbound folder at {inbound}: is the exchange set up (the hub does it when it starts "
                         "with EXPLORER_HUB_EXCHANGE) and the course id right?")
    if not os.access(inbound, os.R_OK | os.X_OK):
        raise PermissionError(f"{inbound} cannot be listed by {_owner(os.getuid())}: only teachers can collect "
                              "hand-ins")
    handins = []
    for path in sorted(inbound.iterdir()):
        parts = path.name.split("+")
        info = path.lstat()
        handin = Handin(path=path, student=parts[0], assignment=parts[1] if len(parts) > 1 else "",
                        claimed=_parse_time(parts[2]) if len(parts) > 2 else None, owner=_owner(info.st_uid))
        if not stat.S_ISDIR(info.st_mode) or len(parts) not in (3, 4):
            handin.problems.append("not an nbgrader hand-in folder (<student>+<assignment>+<time>[+<random>])")
            handins.append(handin)
            continue
        if handin.owner != handin.student:
            handin.problems.append(f"claims to be from {handin.student} but its folder belongs to {handin.owner}")
        if handin.claimed is None:
            handin.problems.append(f"its time {parts[2]!r} is not a time")
        stamp = path / "timestamp.txt"
        try:
            written = stamp.read_text().strip()
        except OSError as error:
            handin.problems.append(f"timestamp.txt unreadable ({error.strerror})")
            written = None
        if written is not None and handin.claimed is not None and _parse_time(written) != handin.claimed:
            handin.problems.append(f"timestamp.txt says {written!r}, its name {parts[2]!r}")
        newest, strangers = info.st_ctime, set()
        for folder, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                child = (Path(folder) / name).lstat()
                newest = max(newest, child.st_ctime)
                if child.st_uid != info.st_uid:
                    strangers.add(_owner(child.st_uid))
        if strangers:
            handin.problems.append(f"holds files written by {', '.join(sorted(strangers))}")
        if handin.claimed is not None:
            late = newest - handin.claimed.replace(tzinfo=_dt.timezone.utc).timestamp()
            if late > tolerance_s:
                handin.problems.append(f"changed {late:.0f} s after the time it claims "
                                       f"({handin.claimed.isoformat(sep=' ', timespec='seconds')} UTC)")
        handins.append(handin)
    return handins


def collect_exchange(course_root: Path, exchange: Path | str, course_id: str, *, prefix: str = "jupyter-",
                     tolerance_s: float = TOLERANCE_S) -> tuple[list[Path], list[Handin]]:
    """Copy each student's newest accepted hand-in of each assignment into ``course_root/submitted/<id>/<assignment>``
    (nbgrader's layout, with ``timestamp.txt``), where ``<id>`` is the Unix name without ``prefix``; a newer
    submission replaces an older one. Returns (the folders written, the refused hand-ins)."""
    handins = audit_inbound(exchange, course_id, tolerance_s=tolerance_s)
    newest: dict[tuple[str, str], Handin] = {}
    for handin in handins:
        if handin.accepted:
            key = (handin.student, handin.assignment)
            if key not in newest or handin.claimed > newest[key].claimed:
                newest[key] = handin
    written = []
    for (student, assignment), handin in sorted(newest.items()):
        student_id = student[len(prefix):] if student.startswith(prefix) else student
        target = course_root / "submitted" / student_id / assignment
        stamp = target / "timestamp.txt"
        if stamp.is_file():
            existing = _parse_time(stamp.read_text())
            if existing is not None and existing >= handin.claimed:
                continue
            shutil.rmtree(target)
        shutil.copytree(handin.path, target)
        written.append(target)
    return written, [h for h in handins if not h.accepted]
