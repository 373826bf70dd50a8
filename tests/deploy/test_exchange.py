"""nbgrader's exchange on the hub: the modes the hub sets, and the teacher's audit of hand-ins (owner, time, strangers'
files), on real folders owned by real system accounts (as root, as on CI)."""

from __future__ import annotations

import datetime as dt
import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from explorer.deploy.exchange import EXCHANGE_MODES, audit_inbound, collect_exchange, nbgrader_student_config, prepare_exchange

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="folders owned by other accounts need root (CI runs as root)")
A, B = pwd.getpwnam("daemon"), pwd.getpwnam("nobody")  # two accounts every Debian system has
GROUP = grp.getgrgid(0).gr_name  # stands in for the teachers' group


def stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def handin(inbound: Path, owner: pwd.struct_passwd, student: str, when: dt.datetime, content: str = "{}") -> Path:
    folder = inbound / f"{student}+01_lesson+{stamp(when)}+r4nd0m"
    folder.mkdir()
    (folder / "01_lesson.ipynb").write_text(content)
    (folder / "timestamp.txt").write_text(stamp(when))
    for path in (folder, *folder.iterdir()):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return folder


def test_exchange_modes(tmp_path):
    course = prepare_exchange(tmp_path / "exchange", "explorer", GROUP)
    for key, path in (("", tmp_path / "exchange"), ("course", course), ("outbound", course / "outbound"),
                      ("inbound", course / "inbound"), ("feedback", course / "feedback")):
        info = path.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (EXCHANGE_MODES[key], 0), (path, oct(info.st_mode))
    assert EXCHANGE_MODES["inbound"] & stat.S_ISVTX and not EXCHANGE_MODES["inbound"] & stat.S_IROTH
    assert nbgrader_student_config(tmp_path, "explorer")["ExchangeFactory"]["submit"].endswith("PrivateSubmit")


@pytest.mark.parametrize("kwargs, match", [({"course_id": "a b"}, "course_id"),
                                           ({"teachers_group": "no-such-group-xyz"}, "teachers_group"),
                                           ({"root": "relative/path"}, "absolute")])
def test_bad_exchange_settings(tmp_path, kwargs, match):
    args = {"root": tmp_path / "x", "course_id": "explorer", "teachers_group": GROUP, **kwargs}
    with pytest.raises(ValueError, match=match):
        prepare_exchange(**args)


def test_audit_refuses_impersonation_backdating_and_strangers(tmp_path):
    inbound = prepare_exchange(tmp_path / "exchange", "explorer", GROUP) / "inbound"
    now = dt.datetime.now(dt.timezone.utc)
    good = handin(inbound, A, A.pw_name, now)
    impersonated = handin(inbound, B, A.pw_name, now + dt.timedelta(seconds=3))  # nobody hands in as daemon
    backdated = handin(inbound, B, B.pw_name, now - dt.timedelta(hours=2))  # written now, claims 2 h ago
    mismatch = handin(inbound, B, B.pw_name, now + dt.timedelta(seconds=1))
    (mismatch / "timestamp.txt").write_text(stamp(now - dt.timedelta(days=1)))
    os.chown(mismatch / "timestamp.txt", B.pw_uid, B.pw_gid)
    stranger = handin(inbound, B, B.pw_name, now + dt.timedelta(seconds=2))
    (stranger / "planted.py").write_text("x")  # written by root: someone else
    (inbound / "notes.txt").write_text("not a hand-in")
    found = {h.path: h for h in audit_inbound(tmp_path / "exchange", "explorer")}
    assert found[good].accepted
    assert found[impersonated].problems == [f"claims to be from {A.pw_name} but its folder belongs to {B.pw_name}"]
    assert len(found[backdated].problems) == 1 and "after the time it claims" in found[backdated].problems[0]
    late = float(found[backdated].problems[0].split("changed ")[1].split(" s")[0])
    assert 7190 <= late <= 7300, late  # two hours, as written
    assert any("timestamp.txt says" in p for p in found[mismatch].problems)
    assert found[stranger].problems == ["holds files written by root"]
    assert "not an nbgrader hand-in" in found[inbound / "notes.txt"].problems[0]


def test_collect_takes_the_newest_accepted_hand_in(tmp_path):
    inbound = prepare_exchange(tmp_path / "exchange", "explorer", GROUP) / "inbound"
    now = dt.datetime.now(dt.timezone.utc)
    handin(inbound, A, A.pw_name, now - dt.timedelta(seconds=30), content='{"v": 1}')
    handin(inbound, A, A.pw_name, now, content='{"v": 2}')
    handin(inbound, B, A.pw_name, now + dt.timedelta(seconds=5), content='{"v": "forged"}')
    course = tmp_path / "course"
    written, refused = collect_exchange(course, tmp_path / "exchange", "explorer", prefix="dae")
    assert written == [course / "submitted" / "mon" / "01_lesson"]  # "daemon" without the prefix "dae"
    assert (written[0] / "01_lesson.ipynb").read_text() == '{"v": 2}'
    assert (written[0] / "timestamp.txt").read_text() == stamp(now)
    assert [h.owner for h in refused] == [B.pw_name]
    # collecting again changes nothing; an older hand-in never replaces a newer one
    assert collect_exchange(course, tmp_path / "exchange", "explorer", prefix="dae")[0] == []


def test_missing_inbound_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no inbound folder"):
        audit_inbound(tmp_path / "nowhere", "explorer")
