"""Entry bodies are checked as co2scan writes them: the chain has no key, so a record edited and
chained again, or written by another program, verifies as a chain yet may hold a string where a
count belongs, a count of 10^15, a time of 1e300 or a missing key. Such a record is named (row,
session, kind, field) by every command, which refuses it as any record that does not verify
(exit 4; ``run`` 3, nothing written or fired), never with a traceback (audit)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.record import GENESIS, RecordError, TreatmentRecord, _canonical, _hash
from drivers.protocol.messages import SPOT_DTYPE
from tests.test_cli_run import FAST, SCRIPT
from tests.test_log_export import cli

Row = list[Any]  # seq, session, at, kind, body (JSON text)


def rechain(path: Path, change: Callable[[list[Row]], object]) -> None:
    """Let ``change`` edit the rows of the record at ``path``, then number and chain them
    again as the writer does, and rewrite the head to match."""
    with sqlite3.connect(path) as db:
        rows = [list(row) for row in db.execute("SELECT seq, session, at, kind, body FROM "
                                                "entries ORDER BY seq")]
        change(rows)
        chained, prev = [], GENESIS
        for seq, (_, session, at, kind, body) in enumerate(rows, 1):
            digest = _hash(prev, seq, session, at, kind, body)
            chained.append((seq, session, at, kind, body, prev, digest))
            prev = digest
        db.execute("DELETE FROM entries")
        db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", chained)
    db.close()
    Path(f"{path}.head").write_text(f"{len(chained)} {prev}\n", encoding="ascii")


def reopened(rows: list[Row]) -> None:
    """Session 1's end removed: it looks unfinished, to be resumed."""
    rows[:] = [row for row in rows if row[3] != "session_end"]


def body_of(kind: str, edit: Callable[[dict[str, Any]], dict[str, Any] | str]
            ) -> Callable[[list[Row]], None]:
    """A change that reopens session 1 and gives the first ``kind`` entry the body ``edit``
    makes of its own (an object, written as the writer does, or JSON text as it is)."""
    def change(rows: list[Row]) -> None:
        reopened(rows)
        row = next(row for row in rows if row[3] == kind)
        body = edit(json.loads(row[4]))
        row[4] = body if isinstance(body, str) else _canonical(body)
    return change


def time_of(kind: str, at: float) -> Callable[[list[Row]], None]:
    def change(rows: list[Row]) -> None:
        reopened(rows)
        next(row for row in rows if row[3] == kind)[2] = at
    return change


MALFORMED: dict[str, tuple[Callable[[list[Row]], None], str, str]] = {
    "passes as a string": (body_of("session", lambda b: {**b, "passes": "2"}), "session",
                           "passes is '2', not a list of 1 or more"),
    "a count of 10^15": (body_of("delivered", lambda b: {**b, "count": 10**15}), "delivered",
                         "count is 1000000000000000, not an integer in 1..4294967295"),
    "a key missing": (body_of("delivered", lambda b: {k: v for k, v in b.items()
                                                      if k != "measured_uj"}),
                      "delivered", "measured_uj is missing"),
    "a string for an index": (body_of("pass_start", lambda b: {**b, "pass_index": "0"}),
                              "pass_start", "pass_index is '0', not an integer in 0..4294967295"),
    "a pass's rate a list": (
        body_of("session", lambda b: {**b, "passes": [{**b["passes"][0], "rep_rate_hz": [1]},
                                                      *b["passes"][1:]]}),
        "session", "passes[0].rep_rate_hz is [1], not a number in 1..1e+06"),
    "an infinite field size": (
        body_of("session", lambda b: _canonical(b).replace('"field_size_um":20000',
                                                           '"field_size_um":1e400')),
        "session", "field_size_um is inf, not a number in 1..1e+06"),
    "NaN, which JSON has not": (body_of("pass_end", lambda b: '{"pass_index":NaN}'),
                                "pass_end", "its body is not a JSON object"),
    "a time of 1e300": (time_of("delivered", 1e300), "delivered",
                        "time is 1e+300, not a time from 1970 to 9999"),
    "spots beyond the pass": (body_of("delivered", lambda b: {**b, "first": 10**6}),
                              "delivered", "it reaches spot 1000"),
    "more energies than spots": (
        body_of("delivered", lambda b: {**b, "measured_uj": [*b["measured_uj"], 100]}),
        "delivered", "measured_uj holds"),
    "a pass the session has not": (body_of("pass_end", lambda b: {**b, "pass_index": 7}),
                                   "pass_end", "pass_index is 7, its session has 2 passes"),
}


@pytest.fixture
def record(run_record: str, tmp_path: Path) -> Path:
    """A copy of a record of one session (id 1, two passes) that ``co2scan run`` completed."""
    path = tmp_path / "t.db"
    for suffix in ("", ".head"):
        shutil.copy(run_record + suffix, f"{path}{suffix}")
    return path


def rows_of(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT * FROM entries ORDER BY seq").fetchall()
    db.close()
    return rows


def resume(record: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    script = record.with_name("s.toml")
    script.write_text(SCRIPT, encoding="utf-8")
    return cli(capsys, "run", str(script), "--device", FAST, "--yes", "--record", str(record),
               "--resume", "1", "--reset-fault", "1")


def test_a_record_chained_again_verifies_and_resumes(record: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The control: chained again as the writer does, the record verifies, and its reopened
    session is resumed (nothing is left to fire)."""
    rechain(record, reopened)
    assert cli(capsys, "log", "verify", "--record", str(record))[0] == 0
    status, out, err = resume(record, capsys)
    assert status == 0, err
    assert "session 1: completed" in out


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_body_is_named_by_every_command(record: Path, tmp_path: Path, case: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    change, kind, problem = MALFORMED[case]
    rechain(record, change)
    named = f"(session 1, {kind}) is not as co2scan writes it: {problem}"
    status, out, _ = cli(capsys, "log", "verify", "--record", str(record))
    assert status == 4 and "TAMPERED" in out and named in out, out
    commands = {"log list": ["log", "list"], "log show": ["log", "show", "1"],
                "log export": ["log", "export", "1", "-o", str(tmp_path / "s.json")],
                "report": ["report", "1", "-o", str(tmp_path / "r.png")]}
    for name, argv in commands.items():
        status, _, err = cli(capsys, *argv, "--record", str(record))
        assert status == 4 and named in err, (name, err)
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "r.png").exists()
    before = rows_of(record)
    status, out, err = resume(record, capsys)
    assert status == 3 and named in " ".join(err.split()), err
    assert "session 1:" not in out  # nothing delivered, nothing written
    assert rows_of(record) == before


@pytest.mark.parametrize("case", ["a count of 10^15", "passes as a string", "a time of 1e300"])
def test_reading_a_malformed_entry_raises_record_error_naming_it(
        record: Path, case: str) -> None:
    change, kind, problem = MALFORMED[case]
    rechain(record, change)
    with TreatmentRecord(record, read_only=True) as rec, \
            pytest.raises(RecordError, match=r"row \d+ \(session 1, " + kind) as raised:
        list(rec.entries(1))
    assert f"{record}: row " in str(raised.value) and problem in str(raised.value)


def no_stack(blob: bytes) -> bytes:
    spots = np.frombuffer(blob, SPOT_DTYPE).copy()
    spots["stack"] = 0
    return spots.tobytes()


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda blob: blob[:len(blob) // 2],
     "the stored spots of session 1 pass 1 (pass_index 0) are not the"),
    (no_stack, "pass 1: its stored spots have a stack or set energy of 0")],
    ids=["cut short", "a stack of 0"])
def test_stored_spots_not_as_co2scan_sends_them_are_refused_by_report(
        record: Path, tmp_path: Path, edit: Callable[[bytes], bytes], problem: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Spots edited, their checksum and the session's chained again: the record verifies,
    and report says what is wrong instead of failing on them (IndexError, a histogram of
    infinite ratios)."""
    with sqlite3.connect(record) as db:
        spots = edit(db.execute("SELECT records FROM pass_spots WHERE pass_index = 0"
                                ).fetchone()[0])
        db.execute("UPDATE pass_spots SET records = ?, checksum = ? WHERE pass_index = 0",
                   (spots, zlib.crc32(spots)))
    db.close()

    def checksum(b: dict[str, Any]) -> dict[str, Any]:
        return {**b, "passes": [{**b["passes"][0], "device_checksum": zlib.crc32(spots)},
                                *b["passes"][1:]]}

    rechain(record, body_of("session", checksum))
    assert cli(capsys, "log", "verify", "--record", str(record))[0] == 0
    status, _, err = cli(capsys, "report", "1", "--record", str(record), "-o",
                         str(tmp_path / "r.png"))
    assert status == 3 and problem in err, err
