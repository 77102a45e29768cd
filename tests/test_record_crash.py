"""The treatment record across a crashed writer: the chain head file is written whole and
durably, a host killed at any point of an append leaves a record that verifies, and a record
that does not verify is never written to (an appended row would hide the damage)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from controller.record import RecordError, TreatmentRecord


def filled(path: Path, rows: int = 4) -> None:
    """A closed record of one session with ``rows`` entries."""
    with TreatmentRecord(path) as rec:
        session = rec.new_session(operator="dr a", patient_ref="p1")
        for k in range(rows - 1):
            rec.append(session, "note", k=k)


def head_of(path: Path) -> str:
    return Path(str(path) + ".head").read_text(encoding="ascii")


# -- the head file is written whole and durably --------------------------------------------------

def test_the_head_write_syncs_the_file_and_then_its_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename is durable only once its directory is synced: without that, a power loss could
    leave an older head, more than the one row being appended behind the record."""
    if os.name == "nt":
        pytest.skip("Windows makes renames durable itself; it has no directory fsync")
    path = tmp_path / "r.db"
    filled(path)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    with TreatmentRecord(path) as rec:
        monkeypatch.setattr(os, "fsync", fsync)
        rec.append(1, "note", k=9)
    assert synced[-2:] == ["file", "dir"], synced  # the head's temporary file, its directory


def test_a_failed_head_write_leaves_no_temporary_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.db"
    filled(path)
    before = head_of(path)

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    with TreatmentRecord(path) as rec:
        monkeypatch.setattr(os, "replace", refuse)
        with pytest.raises(RecordError, match=r"cannot write .*r\.db\.head: .*No space left"):
            rec.append(1, "note", k=9)
    assert head_of(path) == before
    assert not Path(str(path) + ".head.tmp").exists()


@pytest.mark.parametrize("text", [b"abc def\n", b"4 " + "é".encode() * 32 + b"\n",
                                  b"4 " + b"A" * 64 + b"\n", b"-4 " + b"0" * 64 + b"\n"],
                         ids=["words", "non-ascii", "upper-case", "negative"])
def test_a_head_file_that_is_not_one_is_a_problem_not_a_crash(tmp_path: Path,
                                                              text: bytes) -> None:
    path = tmp_path / "r.db"
    filled(path)
    Path(str(path) + ".head").write_bytes(text)
    with TreatmentRecord(path) as rec:
        (problem,) = rec.verify().problems
    assert "r.db.head is missing or unreadable" in problem

