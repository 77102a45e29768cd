"""The treatment record across a crashed writer: the chain head file is written whole and
durably, a host killed at any point of an append leaves a record that verifies, and a record
that does not verify is never written to (an appended row would hide the damage)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller import record as record_module
from controller.cli import main
from controller.record import GENESIS, RecordError, TreatmentRecord
from tests.test_cli_run import FAST, SCRIPT
from tests.test_record import session_args
from tests.test_record_faults import FullDisk


def filled(path: Path, rows: int = 4) -> None:
    """A closed record of one session with ``rows`` entries."""
    with TreatmentRecord(path) as rec:
        session = rec.new_session(**session_args())
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



# -- a writer killed at any point of an append leaves a record that verifies ---------------------

class Crash(BaseException):
    """The host dying: nothing after it runs (no ``except Exception`` catches it)."""


def crash(*args: object, **kwargs: object) -> None:
    raise Crash


def rows_of(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT seq, hash FROM entries ORDER BY seq").fetchall()
    db.close()
    return [(int(seq), str(digest)) for seq, digest in rows]


def crashed_append(path: Path, monkeypatch: pytest.MonkeyPatch, where: str,
                   left_tmp: bytes | None = None) -> None:
    """Append a row to the record at ``path`` and crash ``where`` in it; ``left_tmp``: what a
    kill while the temporary head file was being written leaves in it."""
    targets = {"before the head": (TreatmentRecord, "_write_head"),
               "head written, not renamed": (os, "replace")}
    rec = TreatmentRecord(path)
    with monkeypatch.context() as patch:
        patch.setattr(*targets[where], crash)
        with pytest.raises(Crash):
            rec.append(1, "delivered", pass_index=0, first=0, count=1, measured_uj=[100])
    if left_tmp is not None:
        Path(str(path) + ".head.tmp").write_bytes(left_tmp)
    rec._db.close()  # what the dying process held goes with it; no orderly close()
    if rec._lock_fd is not None:
        os.close(rec._lock_fd)
        rec._lock_fd = None


@pytest.mark.parametrize("error", [Crash(), sqlite3.OperationalError("disk I/O error")],
                         ids=["host killed", "disk error"])
def test_a_session_entry_is_committed_with_its_stored_spots_or_not_at_all(
        tmp_path: Path, error: BaseException) -> None:
    """verify requires the spots of every pass a session names: a session entry committed
    without them (a crash in between) would leave a record that no longer verifies."""
    path = tmp_path / "r.db"
    filled(path)
    rec = TreatmentRecord(path)
    db = rec._db
    rec._db = FullDisk(db, "INTO pass_spots", error)  # type: ignore[assignment]
    with pytest.raises(Crash if isinstance(error, Crash) else RecordError):
        rec.new_session(**session_args(operator="dr b"))
    db.close()  # as the dying process's connection goes: what it did not commit is gone
    rec._release_lock_file()
    assert len(rows_of(path)) == 4
    with TreatmentRecord(path) as again:
        assert again.verify().ok
        assert again.new_session(**session_args(operator="dr b")) == 5 and again.verify().ok


@pytest.mark.parametrize(("where", "left_tmp"), [
    ("before the head", None),
    ("before the head", b""),  # as the auditor found it: an empty FILE.head.tmp
    ("head written, not renamed", None),
    ("head written, not renamed", b"5 3f2a"),  # half written
])
def test_a_crash_after_the_row_before_the_head_verifies_with_a_note(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str,
        left_tmp: bytes | None) -> None:
    path = tmp_path / "r.db"
    filled(path)
    crashed_append(path, monkeypatch, where, left_tmp)
    assert head_of(path).startswith("4 ")
    with TreatmentRecord(path) as rec:
        check = rec.verify()
        assert check.ok, check.problems
        (note,) = check.notes
        assert note.startswith("row 5, the last, is after the chain head (row 4): its writer "
                               "stopped between committing it and updating r.db.head")
        assert "removed" not in note.split("(until then")[0]
        rec.append(1, "session_resumed", operator="dr a")  # the host restarted: --resume
    seq, digest = rows_of(path)[-1]
    assert head_of(path) == f"{seq} {digest}\n" and seq == 6
    assert not Path(str(path) + ".head.tmp").exists()
    with TreatmentRecord(path) as rec:
        check = rec.verify()
        assert check.ok and check.notes == [] and check.entries == 6


def test_log_verify_says_chain_verified_and_notes_the_row_after_the_head(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.db"
    filled(path)
    crashed_append(path, monkeypatch, "before the head", b"")
    capsys.readouterr()
    assert main(["log", "verify", "--record", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("5 entries: chain verified\n  note: row 5, the last, is after the "
                          "chain head (row 4)"), out
    assert "TAMPERED" not in out
    assert main(["log", "list", "--record", str(path)]) == 0
    assert "TAMPERED" not in capsys.readouterr().out


KILLED_WRITER = """
import os, sys
from controller.record import TreatmentRecord
from tests.test_record import session_args
record = TreatmentRecord(sys.argv[1])
session = record.new_session(**session_args(operator="dr k"))
for k in range(3):
    record.append(session, "delivered", pass_index=0, first=k, count=1, measured_uj=[k])
TreatmentRecord._write_head = lambda self, seq, digest: os.kill(os.getpid(), 9)
record.append(session, "delivered", pass_index=0, first=3, count=1, measured_uj=[3])
"""


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL")
def test_a_writer_killed_between_row_and_head_leaves_a_record_that_verifies(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The auditor's crash, for real: SIGKILL right after the row is committed (its WAL not
    merged, its lock dropped by the system)."""
    path = tmp_path / "r.db"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)],
                            cwd=Path(__file__).parents[1], capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == -9, killed.stderr
    assert head_of(path).startswith("4 ") and rows_of(path)[-1][0] == 5
    assert main(["log", "verify", "--record", str(path)]) == 0
    assert "note: row 5, the last, is after the chain head (row 4)" in capsys.readouterr().out
    with TreatmentRecord(path) as rec:
        assert rec.append(1, "session_resumed", operator="dr k") == 6
        assert rec.verify().ok and rec.verify().notes == []


def test_a_crash_while_creating_the_record_leaves_one_that_verifies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The head is written before the database exists: a kill in between leaves a head
    without a database, never a database without its head."""
    path = tmp_path / "r.db"
    with monkeypatch.context() as patch:
        patch.setattr(sqlite3, "connect", crash)
        with pytest.raises(Crash):
            TreatmentRecord(path)
    with TreatmentRecord(path) as rec:
        assert rec.verify().ok
    path.unlink()
    Path(str(path) + ".head").unlink()
    with monkeypatch.context() as patch:
        patch.setattr(TreatmentRecord, "_write_head", crash)
        with pytest.raises(Crash):
            TreatmentRecord(path)
    assert not path.exists()
    with TreatmentRecord(path) as rec:
        assert rec.verify().ok and rec.new_session(**session_args()) == 1
        assert rec.verify().ok


# -- what the head still catches --------------------------------------------------------------

def set_head(path: Path, seq: int, digest: str | None = None) -> None:
    """Rewrite the head file as an editor would: row ``seq`` with its hash (or ``digest``)."""
    if digest is None:
        digest = dict([*rows_of(path), (0, GENESIS)])[seq]
    Path(str(path) + ".head").write_text(f"{seq} {digest}\n", encoding="ascii")


def delete_last_row(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM entries WHERE seq = (SELECT MAX(seq) FROM entries)")
    db.close()


def delete_last_row_and_roll_back_the_head(path: Path, behind: int) -> None:
    """The last row removed and the head rewritten to name the row ``behind`` rows before
    the new last one (0: the new last row, as a careful editor would)."""
    delete_last_row(path)
    set_head(path, rows_of(path)[-1][0] - behind)


TAMPERING = {
    "last row removed": (delete_last_row,
                         "chain head says row 5 is last, the record ends at row 4: rows were "
                         "removed from the end (from row 5 on)"),
    "last row removed, head two rows behind the rest": (
        lambda p: delete_last_row_and_roll_back_the_head(p, 2),
        "chain head says row 2 is last, the record goes on to row 4: rows 3..4 were added "
        "without it, or an older r.db.head was put back"),
    "head one row behind, by another hash": (
        lambda p: set_head(p, 4, "ab" * 32),
        "chain head names row 4 by another hash than the record's row 4: rows up to it were "
        "replaced, or r.db.head is another record's"),
    "head on the last row, by another hash": (
        lambda p: set_head(p, 5, "ab" * 32),
        "chain head names row 5 by another hash than the record's row 5"),
    "head two rows ahead": (lambda p: set_head(p, 7, "ab" * 32),
                            "chain head says row 7 is last, the record ends at row 5: rows were "
                            "removed from the end (from row 6 on)"),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
def test_the_head_still_catches_what_a_crash_cannot_leave(tmp_path: Path,
                                                          tampering: str) -> None:
    path = tmp_path / "r.db"
    filled(path, rows=5)
    damage, expected = TAMPERING[tampering]
    damage(path)
    with TreatmentRecord(path) as rec:
        check = rec.verify()
    assert not check.ok
    assert any(p.startswith(expected) for p in check.problems), check.problems


def test_the_temporary_head_file_is_one_of_the_record_files(tmp_path: Path) -> None:
    """An export onto it would be replaced by the next head write: refused as onto the head."""
    path = tmp_path / "r.db"
    filled(path)
    with TreatmentRecord(path) as rec, pytest.raises(RecordError, match="record's own files"):
        rec.export(1, "json", Path(str(path) + ".head.tmp"))


# -- a record that does not verify is never written to -------------------------------------------

def state_of(path: Path) -> tuple[list[tuple[int, str]], bytes | None]:
    head = Path(str(path) + ".head")
    return rows_of(path), head.read_bytes() if head.exists() else None


REFUSED = {**TAMPERING,
           "middle row edited": (
               lambda p: execute(p, "UPDATE entries SET body = '{}' WHERE seq = 3"),
               "row 3 (note): content was edited"),
           "head file missing": (lambda p: Path(str(p) + ".head").unlink(),
                                 "chain head file r.db.head is missing")}


def execute(path: Path, sql: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(sql)
    db.close()


@pytest.mark.parametrize("tampering", sorted(REFUSED))
def test_a_record_that_does_not_verify_is_not_written_to(tmp_path: Path, tampering: str) -> None:
    path = tmp_path / "r.db"
    filled(path, rows=5)
    damage, expected = REFUSED[tampering]
    damage(path)
    before = state_of(path)
    with TreatmentRecord(path) as rec:
        problems = rec.verify().problems
        for write in (lambda: rec.append(1, "note", k=9), lambda: rec.new_session(operator="b"),
                      lambda: rec.delivered(1, 0, np.arange(3), np.arange(3))):
            with pytest.raises(RecordError) as refused:
                write()
            message = str(refused.value)
            assert message.startswith(f"{path} does not verify, so nothing was written to it")
            assert expected in message and message.endswith(
                f"The record must be inspected: co2scan log verify --record {path}")
    assert state_of(path) == before
    with TreatmentRecord(path) as rec:
        assert rec.verify().problems == problems


def test_the_auditors_removed_session_end_stays_tampered_after_a_run(
        tmp_path: Path, run_record: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The last row (session 1's session_end) removed from a copy: a co2scan run, new or
    resuming the session that now looks open, is refused (exit 3, nothing written) and the
    copy stays TAMPERED."""
    path = tmp_path / "copy.db"
    shutil.copy(run_record, path)
    shutil.copy(run_record + ".head", str(path) + ".head")
    delete_last_row(path)
    before = state_of(path)
    script = tmp_path / "s.toml"
    script.write_text(SCRIPT, encoding="utf-8")
    for resume in ([], ["--resume", "1", "--reset-fault", "1"]):
        capsys.readouterr()
        assert main(["run", str(script), "--device", FAST, "--yes", "--record", str(path),
                     *resume]) == 3
        err = " ".join(capsys.readouterr().err.split())
        assert "does not verify, so nothing was written to it" in err, err
        assert "rows were removed from the end" in err and "co2scan log verify" in err
        assert state_of(path) == before
    assert main(["log", "verify", "--record", str(path)]) == 4
    assert "TAMPERED" in capsys.readouterr().out


def test_a_writer_notices_its_own_last_row_removed_with_the_head_rolled_back(
        tmp_path: Path) -> None:
    """Both files edited to match (which verify cannot tell from an untouched record, as the
    module docstring says): a writer still holding the record knows the row it wrote."""
    path = tmp_path / "r.db"
    with TreatmentRecord(path) as rec:
        session = rec.new_session(**session_args())
        last = rec.append(session, "session_end", status="completed")
        delete_last_row_and_roll_back_the_head(path, 0)
        assert rec.verify().ok  # the unkeyed head's limit
        with pytest.raises(RecordError, match=f"row {last}, the last one this writer wrote or "
                                              "checked, was removed or replaced"):
            rec.append(session, "note", k=1)
    assert rows_of(path)[-1][0] == last - 1


def test_a_head_left_behind_is_brought_up_before_the_next_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash, then an append whose own head write fails too (a full disk, another crash):
    the head is still at most one row behind, and the record verifies."""
    path = tmp_path / "r.db"
    filled(path)
    crashed_append(path, monkeypatch, "before the head")
    real = TreatmentRecord._write_head
    calls: list[int] = []

    def write_head_once(self: TreatmentRecord, seq: int, digest: str) -> None:
        calls.append(seq)
        if len(calls) > 1:
            raise Crash
        real(self, seq, digest)

    rec = TreatmentRecord(path)
    with monkeypatch.context() as patch:
        patch.setattr(TreatmentRecord, "_write_head", write_head_once)
        with pytest.raises(Crash):
            rec.append(1, "session_resumed", operator="dr a")
    rec.close()
    assert calls == [5, 6] and head_of(path).startswith("5 ")
    with TreatmentRecord(path) as rec:
        check = rec.verify()
    assert check.ok and check.entries == 6 and "row 6, the last" in check.notes[0]


def test_a_new_record_where_a_removed_one_left_its_head_is_not_written_to(
        tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    filled(path)
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    with TreatmentRecord(path) as rec, pytest.raises(RecordError, match="rows were removed"):
        rec.new_session(operator="dr b")
    assert rows_of(path) == [] and head_of(path).startswith("4 ")


# -- verify while another writer starts a session ---------------------------------------------

@pytest.mark.parametrize("meanwhile", ["_walk", "_verify_pass_spots"])
def test_a_session_started_while_verify_reads_is_no_problem(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, meanwhile: str) -> None:
    """Another device starts a session (its entry and stored spots, one commit) while verify
    reads, before it walks the chain or before it checks the stored spots: verify reads the
    record as one commit left it, so it sees neither a session without its spots nor spots
    of a session it has not seen."""
    path = tmp_path / "r.db"
    filled(path)
    reader, other = TreatmentRecord(path, read_only=True), TreatmentRecord(path)
    owner = record_module if meanwhile == "_walk" else TreatmentRecord
    real = getattr(owner, meanwhile)
    started: list[int] = []

    def starting(*args: Any) -> Any:
        if not started:  # once, from the reader (the other writer's own check comes here too)
            started.append(0)
            started[0] = other.new_session(**session_args(operator="dr b"))
        return real(*args)

    monkeypatch.setattr(owner, meanwhile, starting)
    check = reader.verify()
    monkeypatch.undo()
    assert started == [5] and check.ok and check.entries == 4, check.problems
    assert reader.verify().ok and reader.verify().entries == 5
    reader.close()
    other.close()


def test_demo_onto_a_record_that_does_not_verify_says_so(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    """--out holding an earlier demo's record, damaged: refused with the reason (exit 3),
    not a traceback, and the record left as it was."""
    path = tmp_path / "treatments.db"
    filled(path)
    delete_last_row(path)
    before = state_of(path)
    capsys.readouterr()
    assert main(["demo", "--out", str(tmp_path), "--device",
                 "sim://?footswitch=down&pre_emission_ms=20&seed=1"]) == 3
    err = " ".join(capsys.readouterr().err.split())
    assert "does not verify, so nothing was written to it" in err, err
    assert state_of(path) == before
