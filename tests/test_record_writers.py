"""Several writers of one treatment record (two devices of a clinic sharing clinic.db): every
append continues the chain from the last committed row, so the chain and its head hold."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.errors import SettingsError
from controller.record import RecordError, RecordLocked, TreatmentRecord
from tests.test_record import session_args
from tests.test_record_crash import (
    delete_last_row_and_roll_back_the_head,
    execute,
    filled,
    rows_of,
)

WRITER = """
import sys
from controller.record import TreatmentRecord
from tests.test_record import session_args
with TreatmentRecord(sys.argv[1]) as record:
    session = record.new_session(**session_args(operator=sys.argv[2]))
    for k in range(int(sys.argv[3])):
        record.append(session, "delivered", pass_index=0, first=k, count=1, measured_uj=[k])
"""


def test_interleaved_writers_in_one_process_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "clinic.db"
    with TreatmentRecord(path) as a, TreatmentRecord(path) as b:
        first = a.new_session(**session_args(operator="a"))
        # b was opened before a wrote: it must not reuse row 1
        second = b.new_session(**session_args(operator="b"))
        assert (first, second) == (1, 2)
        seqs = [a.append(first, "note", k=0), b.append(second, "note", k=1),
                a.append(first, "note", k=2)]
        assert seqs == [3, 4, 5]
        assert a.verify().ok and b.verify().ok and a.verify().entries == 5
    assert [e.session for e in TreatmentRecord(path).entries()] == [1, 2, 1, 2, 1]


def test_concurrent_writer_processes_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "clinic.db"
    count = 60
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(count)],
                                cwd=Path(__file__).parents[1], stderr=subprocess.PIPE,
                                text=True) for name in ("a", "b", "c")]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    with TreatmentRecord(path) as record:
        check = record.verify()
        assert check.ok, check.problems
        assert check.entries == 3 * (count + 1)
        sessions = record.sessions()
        assert sorted(e.body["operator"] for e in sessions) == ["a", "b", "c"]
        for session in sessions:
            firsts = [e.body["first"] for e in record.entries(session.session, "delivered")]
            assert firsts == list(range(count))


HOLDER = """
import sys
from controller.record import TreatmentRecord
with TreatmentRecord(sys.argv[1]) as record, record._writing():
    print("holding", flush=True)
    sys.stdin.readline()
"""


def flock_held(lock_path: Path) -> int:
    """A descriptor of ``lock_path`` (an open file description of its own, as another
    process's) holding its exclusive lock, without naming a holder: close it to let go."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_writer_gives_up_on_a_lock_held_too_long_naming_it_and_writes_nothing(
        tmp_path: Path) -> None:
    """Another process stalled while holding the writers' lock blocked every append for as
    long as it stalled (forever for a process stopped with SIGSTOP); a writer now waits
    lock_timeout_s and raises RecordLocked, a RecordError naming the lock file."""
    path = tmp_path / "clinic.db"
    with TreatmentRecord(path, lock_timeout_s=0.2) as record:
        session = record.new_session(**session_args())
        fd = flock_held(record._lock_path)
        try:
            for write in (lambda: record.append(session, "note"),
                          lambda: record.new_session(**session_args()),
                          lambda: record.delivered(session, 0, np.arange(1), np.array([1]))):
                with pytest.raises(RecordLocked) as raised:
                    write()
                assert isinstance(raised.value, RecordError)
                assert raised.value.lock_path == tmp_path / "clinic.db.lock"
                assert raised.value.holder_pid is None  # a holder that does not write it
                assert f"its lock file {tmp_path / 'clinic.db.lock'} was held by a writer " \
                       "that did not name itself" in str(raised.value)
                assert "nothing was written" in str(raised.value)
            with pytest.raises(RecordLocked, match="cannot verify"):
                record.verify()
        finally:
            os.close(fd)
        assert record.verify().ok and record.verify().entries == 1
        record.append(session, "note")  # let go of: written at once
        assert record.verify().entries == 2


def test_a_writer_that_gives_up_names_the_process_holding_the_lock(tmp_path: Path) -> None:
    """A co2scan writer writes its process id into the lock file while it holds it: the
    writer that gives up names it (then empties it), in another process or this one."""
    path = tmp_path / "clinic.db"
    TreatmentRecord(path).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                              cwd=Path(__file__).parents[1], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        with TreatmentRecord(path, lock_timeout_s=0.1) as record:
            with pytest.raises(RecordLocked) as raised:
                record.new_session(**session_args())
            assert raised.value.holder_pid == holder.pid
            assert f"held by process {holder.pid} for the 0.1 s" in str(raised.value)
    finally:
        holder.communicate("let go\n", timeout=60)
    assert holder.returncode == 0
    assert (tmp_path / "clinic.db.lock").read_bytes() == b""  # the holder emptied it
    with TreatmentRecord(path) as a, TreatmentRecord(path, lock_timeout_s=0) as b:
        with a._writing():
            assert (tmp_path / "clinic.db.lock").read_bytes() == f"{os.getpid()}\n".encode()
            with pytest.raises(RecordLocked, match="this one: another TreatmentRecord"):
                b.append(1, "note")
        assert b.new_session(**session_args()) == 1 and b.verify().ok


def test_waits_for_the_lock_in_a_lock_waits_end_by_block_share_its_deadline(
        tmp_path: Path) -> None:
    """Each write waited lock_timeout_s for a stalled holder, one after the other (a stopped
    session's last entries: 4 x 5 s). In a lock_waits_end_by block every wait gives up by its
    deadline, one already under way on another thread too; a write after the deadline
    still takes a lock that is free; after the block, waits are lock_timeout_s again."""
    path = tmp_path / "clinic.db"
    with TreatmentRecord(path, lock_timeout_s=30.0) as record:
        session = record.new_session(**session_args())
        fd = flock_held(record._lock_path)
        raised: list[BaseException] = []

        def waiting() -> None:
            try:
                record.append(session, "transition")
            except RecordLocked as exc:
                raised.append(exc)

        try:
            other = threading.Thread(target=waiting)
            other.start()
            time.sleep(0.2)  # it waits (for 30 s)
            started = time.monotonic()
            with record.lock_waits_end_by(started + 0.5):
                for _ in range(3):
                    with pytest.raises(RecordLocked, match=r"s this writer waited \(the "
                                       "writes after a session stopped share one wait of "
                                       r"lock_timeout_s, 30 s\); nothing was written"):
                        record.append(session, "note")
                other.join(timeout=20.0)
                assert not other.is_alive() and len(raised) == 1
                assert time.monotonic() - started < 10.0  # 4 x 30 s without the block
            record.lock_timeout_s = 0.5
            waited = time.monotonic()
            with pytest.raises(RecordLocked, match=r"for the 0\.5 s this writer waits"):
                record.append(session, "note")
            assert time.monotonic() - waited >= 0.5  # the block's deadline is gone
        finally:
            os.close(fd)
        with record.lock_waits_end_by(time.monotonic() - 1.0):  # passed, the lock free
            record.append(session, "note")
        assert [e.kind for e in record.entries()] == ["session", "note"]
        assert record.verify().ok


def another_writer_appends(path: Path) -> None:
    with TreatmentRecord(path, lock_timeout_s=0) as other:  # gives up if the lock is held
        other.append(1, "note", by="other")


def a_row_that_does_not_follow(path: Path) -> None:
    execute(path, f"INSERT INTO entries VALUES (5, 1, 1.0, 'note', '{{}}', '{'f' * 64}', "
                  f"'{'e' * 64}')")


#: What happens while a writer's first append checks the whole record, and what that append
#: then says (None: it appends, after what was added).
DURING_THE_CHECK = {
    "another writer appends": (another_writer_appends, None),
    "a row that does not follow is added": (
        a_row_that_does_not_follow, "row 5: does not follow the row before it"),
    "the last row is removed, the head rolled back to match": (
        lambda path: delete_last_row_and_roll_back_the_head(path, 0),
        "row 4, the last one this writer wrote or checked, was removed or replaced"),
}


@pytest.mark.parametrize("during", sorted(DURING_THE_CHECK))
def test_a_first_append_checks_the_whole_record_without_the_writers_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, during: str) -> None:
    """A writer's first append walked the whole chain holding the writers' lock (1.7 s per
    100,000 rows here, 2.6 s for 300,000: other writers wait 5 s at most, and a session
    delivering on another device stops emission). It now checks it before taking the lock,
    another writer appending meanwhile; under the lock it checks what was added since and
    that the last row it checked is still there, unchanged: an append never extends a
    chain broken or altered meanwhile."""
    path = tmp_path / "clinic.db"
    filled(path, rows=4)
    change, refused = DURING_THE_CHECK[during]
    before = None
    with TreatmentRecord(path) as record:
        entry = record._entry

        def checking(row: tuple[Any, ...]) -> Any:
            nonlocal before
            if before is None:  # the whole record's check has begun
                change(path)
                before = rows_of(path)
            return entry(row)

        monkeypatch.setattr(record, "_entry", checking)
        if refused is None:
            assert record.append(1, "note", by="this") == 6
        else:
            with pytest.raises(RecordError, match="does not verify, so nothing was written") \
                    as raised:
                record.append(1, "note", by="this")
            assert refused in str(raised.value)
    assert before is not None
    if refused is not None:
        assert rows_of(path) == before  # nothing written
        return
    with TreatmentRecord(path) as record:
        assert record.verify().ok
        assert [e.body for e in record.entries()][-2:] == [{"by": "other"}, {"by": "this"}]


@pytest.mark.parametrize("timeout", [-1.0, float("nan"), float("inf"), "5", True, 3601])
def test_a_lock_timeout_out_of_range_is_refused(tmp_path: Path, timeout: object) -> None:
    with pytest.raises(SettingsError, match="lock_timeout_s"):
        TreatmentRecord(tmp_path / "r.db", lock_timeout_s=timeout)  # type: ignore[arg-type]
    assert not (tmp_path / "r.db").exists()
