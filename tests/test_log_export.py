"""``co2scan log export`` uses only a record that verifies, ``log list`` and ``log show`` mark
one that does not; the record's files are documented (FILE.head goes with every copy); ``log``
rejects a session id where it takes none."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from controller.api import (
    DensitySpec,
    PassSettings,
    Pattern,
    RecordError,
    TreatmentRecord,
    TreatmentSettings,
    get_handpiece,
    open_device,
    plan_for_device,
    treat,
)
from controller.cli import main
from controller.record import EXPORT_COLUMNS
from controller.scanpath import Plan

README = Path(__file__).resolve().parents[1] / "README.md"


def treat_two_passes(path: Path, pattern: Pattern, coverage_pct: float, depth_um: float,
                     seed: int, operator: str, patient_ref: str
                     ) -> tuple[Plan, np.ndarray, float]:
    """Treat one completed two-pass session (id 1) into ``path`` on the in-process simulator:
    its plan, the simulator's ground truth and the field size (µm)."""
    with open_device(f"sim://?footswitch=down&pre_emission_ms=20&seed={seed}") as dev:
        settings = TreatmentSettings(get_handpiece("spot120"), pattern,
                                     DensitySpec(coverage_pct=coverage_pct), depth_um=depth_um,
                                     passes=PassSettings(count=2))
        plan = plan_for_device(settings, dev.info.limits)
        outcome = treat(dev, [plan], path, operator=operator, patient_ref=patient_ref)
        truth = dev.simulator.device.ground_truth.copy()
        field_um = float(dev.info.limits.field_size_um)
    assert outcome.status == "completed" and outcome.session_id == 1
    return plan, truth, field_um


@pytest.fixture(scope="module")
def treated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed record (WAL merged into the file) of one completed two-pass session, id 1."""
    path = tmp_path_factory.mktemp("record") / "treatments.db"
    treat_two_passes(path, Pattern("square", 3.0), 5.0, 200.0, 4, "Dr Export", "E-1")
    return path


def copy_of(record: Path, where: Path, head: bool = True) -> Path:
    """The record copied into ``where`` as ``copy.db`` (with ``copy.db.head`` if ``head``)."""
    target = where / "copy.db"
    shutil.copy(record, target)
    if head:
        shutil.copy(str(record) + ".head", str(target) + ".head")
    return target


def execute(path: Path, sql: str, *args: object) -> None:
    with sqlite3.connect(path) as db:
        db.execute(sql, args)
    db.close()


def flip_a_spot_byte(path: Path) -> None:
    """One byte of the first pass's stored SPOT records changed (not part of the chain rows)."""
    with sqlite3.connect(path) as db:
        blob = bytearray(db.execute("SELECT records FROM pass_spots WHERE session = 1 "
                                    "ORDER BY pass_index LIMIT 1").fetchone()[0])
        blob[10] ^= 0x01
        db.execute("UPDATE pass_spots SET records = ? WHERE session = 1 AND pass_index = "
                   "(SELECT MIN(pass_index) FROM pass_spots WHERE session = 1)", (bytes(blob),))
    db.close()


TAMPERING: dict[str, tuple[Callable[[Path], None], str]] = {
    "a pass_spots byte": (flip_a_spot_byte, "stored spots of session 1 pass"),
    "an entry edited": (lambda p: execute(p, "UPDATE entries SET body = replace(body, "
                                             "'Dr Export', 'Dr Other') WHERE seq = 1"),
                        "row 1 (session): content was edited"),
    "the head file missing": (lambda p: Path(str(p) + ".head").unlink(),
                              "copy.db.head is missing"),
    "a pass's stored spots deleted": (
        lambda p: execute(p, "DELETE FROM pass_spots WHERE session = 1 AND pass_index = 1"),
        "stored spots of session 1 pass 2 (pass_index 1) are missing"),
}


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit status (argparse's own exits included), stdout and stderr of ``co2scan argv``."""
    capsys.readouterr()
    try:
        status = main(list(argv))
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


# -- export refuses a record that does not verify ------------------------------------------------

@pytest.mark.parametrize("fmt", ["json", "csv"])
@pytest.mark.parametrize("tampering", sorted(TAMPERING))
def test_export_refuses_a_record_that_does_not_verify(
        treated: Path, tmp_path: Path, tampering: str, fmt: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    record = copy_of(treated, tmp_path)
    damage, problem = TAMPERING[tampering]
    damage(record)
    assert main(["log", "verify", "--record", str(record)]) == 4  # as the auditor saw it
    out_file = tmp_path / f"out.{fmt}"
    status, out, err = cli(capsys, "log", "export", "1", "--record", str(record), "--format", fmt,
                           "-o", str(out_file))
    assert status == 4, err
    assert err.startswith(f"error: {record} does not verify (TAMPERED), nothing exported to "
                          f"{out_file}:")
    assert problem in err
    assert "wrote" not in out
    assert not out_file.exists()


def test_verify_names_a_pass_whose_stored_spots_were_deleted(
        treated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The pass_spots rows are not chained; deleting one went unseen by verify, and report
    then said the spots were missing (audit). The session entry names every pass, with the
    CRC-32 of its spots: each must be there."""
    record = copy_of(treated, tmp_path)
    TAMPERING["a pass's stored spots deleted"][0](record)
    status, out, _ = cli(capsys, "log", "verify", "--record", str(record))
    assert status == 4 and "TAMPERED" in out
    assert "stored spots of session 1 pass 2 (pass_index 1) are missing" in out
    status, _, err = cli(capsys, "report", "1", "--record", str(record), "-o",
                         str(tmp_path / "r.png"))
    assert status == 4 and "no report drawn" in err and "pass 2 (pass_index 1) are missing" in err


def test_export_refuses_with_the_default_file_name_too(
        treated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    record = copy_of(treated, tmp_path)
    flip_a_spot_byte(record)
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.iterdir())
    status, out, err = cli(capsys, "log", "export", "1", "--record", str(record))
    assert status == 4 and "nothing exported to session1.json" in err and out == ""
    assert not (tmp_path / "session1.json").exists()
    assert set(tmp_path.iterdir()) - before <= {Path(str(record) + ".lock")}


def test_export_and_report_refuse_alike(treated: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """One refusal (the shared helper): same exit status, same first words, same problems."""
    record = copy_of(treated, tmp_path)
    flip_a_spot_byte(record)
    exported = cli(capsys, "log", "export", "1", "--record", str(record), "-o",
                   str(tmp_path / "x.json"))
    reported = cli(capsys, "report", "1", "--record", str(record), "-o", str(tmp_path / "r.png"))
    assert exported[0] == reported[0] == 4
    prefix = f"error: {record} does not verify (TAMPERED), "
    assert exported[2].startswith(prefix + "nothing exported")
    step, refusal = reported[2].split("\n", 1)  # the report's progress line comes first
    assert step.startswith(f"report: verifying {record} (")
    assert refusal.startswith(prefix + "no report drawn")
    assert exported[2].split(":\n", 1)[1] == refusal.split(":\n", 1)[1]
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "r.png").exists()


# -- list and show mark a record that does not verify ------------------------------------------

@pytest.mark.parametrize("action", ["list", "show"])
@pytest.mark.parametrize("tampering", sorted(TAMPERING))
def test_list_and_show_mark_a_record_that_does_not_verify(
        treated: Path, tmp_path: Path, tampering: str, action: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Still shown (a damaged record is read to find out what happened), but the output begins
    with TAMPERED, stderr names the problems, and the exit status is 4."""
    record = copy_of(treated, tmp_path)
    damage, problem = TAMPERING[tampering]
    damage(record)
    status, out, err = cli(capsys, "log", action, *(["1"] if action == "show" else []),
                           "--record", str(record))
    assert status == 4, err
    first, *shown = out.splitlines()
    assert first == (f"TAMPERED RECORD: {record} does not verify; what follows cannot be "
                     "trusted (co2scan log verify)")
    assert err.startswith(f"warning: {record} does not verify (TAMPERED); shown for "
                          "inspection only, its entries cannot be trusted:\n")
    assert problem in err
    operator = "Dr Other" if tampering == "an entry edited" else "Dr Export"
    assert operator in "\n".join(shown)  # the entries as the record holds them
    if action == "show":
        assert any(" session_end " in line for line in shown)


def test_show_of_a_session_missing_from_a_tampered_record_exits_4(
        treated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The session's rows may be what was removed: the verdict on the record comes first."""
    record = copy_of(treated, tmp_path)
    flip_a_spot_byte(record)
    status, out, err = cli(capsys, "log", "show", "7", "--record", str(record))
    assert status == 4 and out.startswith("TAMPERED RECORD: ")
    assert f"error: no session 7 in {record}" in err and "stored spots of session 1" in err


def test_list_and_show_of_a_sound_record_are_unmarked(treated: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    record = copy_of(treated, tmp_path)
    for argv in (["list"], ["show", "1"]):
        status, out, err = cli(capsys, "log", *argv, "--record", str(record))
        assert status == 0 and err == "" and "TAMPERED" not in out and "Dr Export" in out
    status, out, err = cli(capsys, "log", "show", "7", "--record", str(record))
    assert status == 3 and out == "" and f"error: no session 7 in {record}" in err


def test_log_help_and_readme_say_what_list_and_show_do_with_a_tampered_record(
        capsys: pytest.CaptureFixture[str]) -> None:
    help_text = " ".join(cli(capsys, "log", "--help")[1].split())
    assert "list and show verify the record first" in help_text
    assert "damaged record must stay readable" in help_text
    readme = " ".join(README.read_text(encoding="utf-8").split())
    assert "`co2scan log list` and `log show ID` verify it first" in readme


# -- export of a sound record --------------------------------------------------------------------

def delivered_total(record: Path) -> int:
    with TreatmentRecord(record) as rec:
        return sum(rec.delivered_spots(1, p)[0].size for p in (0, 1))


def test_export_json_and_csv_of_a_sound_record(treated: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    record = copy_of(treated, tmp_path)
    status, out, _ = cli(capsys, "log", "export", "1", "--record", str(record), "-o",
                         str(tmp_path / "s.json"))
    assert status == 0 and out.strip() == f"wrote {tmp_path / 's.json'}"
    entries = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))["entries"]
    assert entries[0]["kind"] == "session" and entries[0]["body"]["operator"] == "Dr Export"
    assert {e["session"] for e in entries} == {1}
    status, out, _ = cli(capsys, "log", "export", "1", "--record", str(record), "--format",
                         "csv", "-o", str(tmp_path / "s.csv"))
    assert status == 0
    with open(tmp_path / "s.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert len(rows) - 1 == delivered_total(record) > 0


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_export_without_o_writes_session_id_dot_format_in_the_current_directory(
        treated: Path, tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    record = copy_of(treated, tmp_path)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    status, out, _ = cli(capsys, "log", "export", "1", "--record", str(record), "--format", fmt)
    assert status == 0 and out.strip() == f"wrote session1.{fmt}"
    assert [p.name for p in work.iterdir()] == [f"session1.{fmt}"]
    assert (work / f"session1.{fmt}").stat().st_size > 0


def test_log_help_documents_the_export_default_and_the_record_files(
        capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = cli(capsys, "log", "--help")
    text = " ".join(out.split())
    assert status == 0
    assert "sessionID.FORMAT in the current directory" in text and "session1.json" in text
    assert "FILE.head" in text and "FILE.lock" in text and "FILE-wal" in text
    assert "show and export only" in text


def test_demo_help_names_the_head_file(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = cli(capsys, "demo", "--help")
    text = " ".join(out.split())
    assert status == 0 and "treatments.db.head" in text and "treatments.db.lock" in text


def test_readme_names_the_files_of_a_record() -> None:
    text = README.read_text(encoding="utf-8")
    for name in ("`FILE.head`", "`FILE.lock`", "`FILE-wal`", "WAL mode",
                 "cp clinic.db clinic.db.head"):
        assert name in text, name


# -- a copy without its head file ----------------------------------------------------------------

def test_a_copy_without_the_head_file_says_to_copy_it(treated: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    record = copy_of(treated, tmp_path, head=False)
    with TreatmentRecord(record) as rec:
        (problem,) = rec.verify().problems
    assert "copy.db.head is missing or unreadable" in problem
    assert "copy or backup" in problem and "must include FILE.head" in problem
    status, out, _ = cli(capsys, "log", "verify", "--record", str(record))
    assert status == 4 and "TAMPERED" in out and problem in out
    status, _, err = cli(capsys, "log", "export", "1", "--record", str(record), "-o",
                         str(tmp_path / "x.json"))
    assert status == 4 and problem in err and not (tmp_path / "x.json").exists()
    shutil.copy(str(treated) + ".head", str(record) + ".head")  # as the message says
    assert cli(capsys, "log", "verify", "--record", str(record))[0] == 0


# -- a session id only where the action takes one ------------------------------------------------

@pytest.mark.parametrize("action", ["list", "verify"])
def test_an_id_where_none_is_taken_is_refused(treated: Path, action: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = cli(capsys, "log", action, "5", "--record", str(treated))
    assert status == 2 and out == ""
    assert f"error: `log {action}` takes no session id (got 5)" in err


@pytest.mark.parametrize("action", ["show", "export"])
def test_an_id_where_one_is_needed_is_asked_for(treated: Path, tmp_path: Path, action: str,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    status, _, err = cli(capsys, "log", action, "--record", str(treated))
    assert status == 2 and f"error: `log {action}` needs a session id" in err
    assert list(tmp_path.iterdir()) == []


def test_list_and_verify_without_an_id_still_work(treated: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = cli(capsys, "log", "list", "--record", str(treated))
    assert status == 0 and "Dr Export" in out
    status, out, _ = cli(capsys, "log", "verify", "--record", str(treated))
    assert status == 0 and "chain verified" in out


@pytest.mark.parametrize("suffix", ["", ".head"])
def test_export_onto_the_record_itself_is_refused(treated: Path, tmp_path: Path, suffix: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """-o naming the record (or its chain head) would destroy it: refused, record intact."""
    record = copy_of(treated, tmp_path)
    target = Path(str(record) + suffix)
    before = target.read_bytes()
    assert main(["log", "export", "1", "--record", str(record), "-o", str(target)]) == 3
    assert "one of the record's own files" in capsys.readouterr().err
    assert target.read_bytes() == before
    assert main(["log", "verify", "--record", str(record)]) == 0
    written = {p.name for p in tmp_path.iterdir()} - {"copy.db.lock"}  # made when opened
    assert written == {"copy.db", "copy.db.head"}  # no partial export left either


def test_export_replaces_an_existing_file_only_with_force(
        treated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It replaced whatever -o named: another record (which then no longer opened), a
    treatment script (audit)."""
    record = copy_of(treated, tmp_path)
    other = tmp_path / "other.db"
    other.write_bytes(b"SQLite format 3\0 another record")
    status, _, err = cli(capsys, "log", "export", "1", "--record", str(record), "-o",
                         str(other))
    assert status == 3 and "the file exists (replace it with --force)" in err
    assert other.read_bytes() == b"SQLite format 3\0 another record"
    status, _, _ = cli(capsys, "log", "export", "1", "--record", str(record), "-o", str(other),
                       "--force")
    exported = json.loads(other.read_text(encoding="utf-8"))
    assert status == 0 and exported["entries"][0]["kind"] == "session"
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == []


@pytest.mark.parametrize("kind", ["fifo", "symlink", "folder"])
def test_export_never_replaces_what_is_not_a_regular_file(
        treated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    """Renaming over /dev/null made it a regular file (the audit had to re-create it)."""
    record = copy_of(treated, tmp_path)
    target = tmp_path / "target"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink":
        (tmp_path / "script.toml").write_text("[[pass]]\n", encoding="utf-8")
        target.symlink_to(tmp_path / "script.toml")
    else:
        target.mkdir()
    status, _, err = cli(capsys, "log", "export", "1", "--record", str(record), "-o",
                         str(target), "--force")
    assert status == 3 and "it exists and is not a regular file" in err
    assert target.is_fifo() if kind == "fifo" else (
        target.is_symlink() if kind == "symlink" else target.is_dir())


def test_list_shows_control_characters_of_an_edited_record_escaped(
        treated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An operator edited to a terminal escape sequence (and the record re-chained, which the
    unkeyed chain allows) cleared the screen of whoever listed the record (audit)."""
    record = copy_of(treated, tmp_path)
    execute(record, "UPDATE entries SET body = json_set(body, '$.operator', ?) "
                    "WHERE kind = 'session'", "\x1b[2J\x1b[31mEVIL\x07")
    _, out, _ = cli(capsys, "log", "list", "--record", str(record))
    assert "\x1b" not in out and "\x07" not in out and "\\x1b[2J" in out


# -- a read-only record is read, and never written by a reader ----------------------------------

def readers(out: Path) -> list[list[str]]:
    """Every command that only reads the record (export and report write into ``out``)."""
    return [["log", "list"], ["log", "show", "1"], ["log", "verify"],
            ["log", "export", "1", "--format", "csv", "-o", str(out / "s.csv"), "--force"],
            ["report", "1", "-o", str(out / "r.png")]]


def test_readers_change_nothing_in_a_file_that_is_not_a_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A reader opened the record as a writer does and created the record's tables in any
    SQLite file --record named (audit: readers open the record for writing)."""
    other = tmp_path / "other.db"
    execute(other, "CREATE TABLE notes (text TEXT)")
    before = other.read_bytes()
    for argv in readers(tmp_path):
        status, _, err = cli(capsys, *argv, "--record", str(other))
        assert status == 3 and f"{other} is not a treatment record" in err, (argv, err)
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_readers_work_in_sqlites_read_only_mode(
        treated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Where the record's file and folder are not writable (here: said so, which also works as
    root), readers open it in SQLite's read-only mode; a writer refuses, saying why."""
    record = copy_of(treated, tmp_path)
    before = record.read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(os, "access", lambda *args, **kwargs: False)
        for argv in readers(tmp_path):
            status, _, err = cli(capsys, *argv, "--record", str(record))
            assert status == 0, (argv, err)
        with pytest.raises(RecordError, match=f"cannot write treatment record {record}: "
                                              f"{record} is read-only"):
            TreatmentRecord(record)
    assert record.read_bytes() == before
    with TreatmentRecord(record, read_only=True) as reader:
        assert reader.verify().ok
        with pytest.raises(RecordError, match="opened read-only: nothing is written"):
            reader.append(1, "note", text="x")


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0,
                    reason="root reads and writes a chmod 0444 file in a 0555 folder anyway "
                           "(test_readers_work_in_sqlites_read_only_mode covers the reader)")
@pytest.mark.parametrize(("file_mode", "folder_mode"),
                         [(0o444, 0o755), (0o644, 0o555), (0o444, 0o555)],
                         ids=["read-only file", "read-only folder", "both"])
def test_a_read_only_record_is_read_and_not_written(
        treated: Path, tmp_path: Path, file_mode: int, folder_mode: int,
        capsys: pytest.CaptureFixture[str]) -> None:
    """log list/show/verify/export and report read a record in a read-only file, folder, or
    both (audit: the reader opened it for writing and failed); a writer refuses, saying why."""
    where, out = tmp_path / "records", tmp_path / "out"
    where.mkdir()
    out.mkdir()
    record = copy_of(treated, where)
    files = sorted(where.iterdir())
    for path in files:
        path.chmod(file_mode)
    where.chmod(folder_mode)
    try:
        for argv in readers(out):
            status, _, err = cli(capsys, *argv, "--record", str(record))
            assert status == 0, (argv, err)
        unwritable = record if file_mode == 0o444 else where
        with pytest.raises(RecordError, match=f"{unwritable} is read-only"):
            TreatmentRecord(record)
        if folder_mode == 0o555:
            assert sorted(where.iterdir()) == files
    finally:
        where.chmod(0o755)
        for path in files:
            path.chmod(0o644)
