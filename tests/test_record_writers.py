"""Several writers of one treatment record (two devices of a clinic sharing clinic.db): every
append continues the chain from the last committed row, so the chain and its head hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from controller.record import TreatmentRecord
from tests.test_record import session_args

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
