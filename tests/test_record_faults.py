"""The record closed under a writer, or failing in SQLite (a full disk): every public method
raises RecordError naming the file and the operation, never an sqlite3 exception, and a
session whose entry or spots cannot be written leaves nothing behind."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.cli import main
from controller.errors import SessionBusy
from controller.record import RecordError, TreatmentRecord
from drivers.protocol.messages import SPOT_DTYPE
from tests.test_cli_run import FAST, SCRIPT
from tests.test_record import filled, session_args

FULL = "database or disk is full"
DISK_FULL = sqlite3.OperationalError(FULL)


class FullDisk:
    """A connection whose statements containing ``sql`` fail with ``error`` (by default as on a
    full disk)."""

    def __init__(self, db: sqlite3.Connection, sql: str,
                 error: BaseException = DISK_FULL) -> None:
        self.db, self.sql, self.error = db, sql, error

    def execute(self, query: str, *args: Any) -> sqlite3.Cursor:
        return self._run(self.db.execute, query, *args)

    def executemany(self, query: str, *args: Any) -> sqlite3.Cursor:
        return self._run(self.db.executemany, query, *args)

    def _run(self, method: Callable[..., sqlite3.Cursor], query: str, *args: Any
             ) -> sqlite3.Cursor:
        if self.sql in query:
            raise self.error
        return method(query, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def uses(record: TreatmentRecord) -> dict[str, Callable[[], object]]:
    """Every public reading and writing method of ``record``, called on session 1."""
    records = session_args()["pass_spots"][0]  # stored as pass 0's: pass 1's are not yet
    return {
        "entries": lambda: list(record.entries()),
        "sessions": record.sessions,
        "verify": record.verify,
        "delivered_summary": lambda: record.delivered_summary(1, 0),
        "delivered_spots": lambda: record.delivered_spots(1, 0),
        "pass_spots": lambda: record.pass_spots(1, 0, SPOT_DTYPE),
        "append": lambda: record.append(1, "note"),
        "delivered": lambda: record.delivered(1, 0, np.arange(8, 9), np.array([100])),
        "store_pass_spots": lambda: record.store_pass_spots(1, 1, records),
        "new_session": lambda: record.new_session(**session_args()),
    }


def test_a_closed_record_refuses_every_use_with_record_error(tmp_path: Path) -> None:
    record = filled(tmp_path / "t.db")
    record.close()
    record.close()  # again: nothing
    for use in uses(record).values():
        with pytest.raises(RecordError, match=r"t\.db: record closed"):
            use()


def test_close_waits_for_a_writer_on_another_thread(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The link's event thread appends transitions; closing the connection under it crashed
    the interpreter (SIGSEGV). close() now waits for it, and a later append is refused."""
    record = filled(tmp_path / "t.db")
    inside, go_on = threading.Event(), threading.Event()
    write_head = record._write_head

    def slow_head(seq: int, digest: str) -> None:  # the writer is mid-append
        inside.set()
        go_on.wait(5.0)
        write_head(seq, digest)

    monkeypatch.setattr(record, "_write_head", slow_head)
    writer = threading.Thread(target=record.append, args=(1, "transition"),
                              kwargs={"old": "ARMED", "new": "EMITTING", "cause": "start"})
    writer.start()
    assert inside.wait(5.0)
    closer = threading.Thread(target=record.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive(), "close() did not wait for the writer"
    go_on.set()
    writer.join(5.0)
    closer.join(5.0)
    assert not closer.is_alive()
    with pytest.raises(RecordError, match="record closed"):
        record.append(1, "transition", old="EMITTING", new="PAUSED", cause="pause")
    with TreatmentRecord(tmp_path / "t.db", read_only=True) as again:
        assert again.verify().ok
        assert [e.kind for e in again.entries()][-1] == "transition"


@pytest.mark.parametrize("sql, operation", [("SELECT", "read"), ("BEGIN", "write to"),
                                            ("INSERT", "write to")])
def test_sqlite_errors_are_record_errors_naming_the_file_and_operation(
        tmp_path: Path, sql: str, operation: str) -> None:
    record = filled(tmp_path / "t.db")
    real = record._db
    record._db = FullDisk(real, sql)  # type: ignore[assignment]
    failed = []
    for name, use in uses(record).items():
        try:
            use()
        except RecordError as exc:
            assert FULL in str(exc) and str(tmp_path / "t.db") in str(exc), name
            assert str(exc).startswith("cannot "), name
            failed.append(name)
    record._db = real
    assert record.verify().ok and record.verify().entries == 5  # nothing written
    record.close()
    if sql == "SELECT":
        assert {"entries", "sessions", "verify", "delivered_summary", "delivered_spots",
                "pass_spots", "append", "new_session"} <= set(failed)
    else:
        assert {"append", "delivered", "store_pass_spots", "new_session"} <= set(failed)


def test_run_on_a_full_disk_exits_3_and_leaves_no_session(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The session's entry and its spots are one commit: a full disk at the spots writes
    neither, so no session is left open (to be taken for one to resume)."""
    script = tmp_path / "s.toml"
    script.write_text(SCRIPT, encoding="utf-8")
    db = tmp_path / "t.db"
    open_to_write = TreatmentRecord._open_to_write

    def full(self: TreatmentRecord) -> Any:
        return FullDisk(open_to_write(self), "INTO pass_spots")

    monkeypatch.setattr(TreatmentRecord, "_open_to_write", full)
    assert main(["run", str(script), "--device", FAST, "--yes", "--record", str(db)]) == 3
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: cannot write to {db}: {FULL}" in err
    monkeypatch.undo()
    with TreatmentRecord(db) as record:
        assert record.verify().ok and record.sessions() == []


def test_close_is_refused_while_the_record_is_in_use(tmp_path: Path) -> None:
    """A session holds its record in use from run() to its return: closing it meanwhile
    (a GUI's shutdown) is refused, and the record goes on working; afterwards it closes."""
    record = filled(tmp_path / "t.db")
    with record.in_use("session 1's run()"), record.in_use("session 1's abort()"):
        with pytest.raises(SessionBusy, match=r"session 1's run\(\), session 1's abort\(\) is "
                                              "under way on it"):
            record.close()
        record.append(1, "note")
    record.close()
    with record.in_use("session 1's run()"):
        record.close()  # closed already: nothing to refuse
    with TreatmentRecord(tmp_path / "t.db", read_only=True) as again:
        assert again.verify().ok and [e.kind for e in again.entries()][-1] == "note"
