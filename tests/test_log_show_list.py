"""``co2scan log show`` and ``log list`` tell what the record holds, in full and readably
(audit: show cut every entry's JSON at 200 characters, so the session's patient_ref, after
its passes, was always lost, and non-ASCII names read as \\u00eb; list cut operator and patient
without a mark and said "open" for every session without an end)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controller.commands.log import _width
from controller.record import TreatmentRecord
from tests.test_log_export import cli
from tests.test_record import session_args

OPERATOR = "Dr Zoë Ångström-Müller"
PATIENT = "2024-0117/Éloïse Brontë-Žižek"


def one_session(path: Path, passes: int = 3, **body: object) -> TreatmentRecord:
    record = TreatmentRecord(path)
    record.new_session(**session_args(passes=passes, spots=50, operator=OPERATOR,
                                      patient_ref=PATIENT, device_serial="SIM-0001",
                                      firmware="1.0.0", **body))
    return record


def test_show_gives_the_session_entry_in_full_and_readably(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.db"
    with one_session(path) as record:
        record.delivered(1, 1, np.arange(0, 4), np.array([100, 101, -1, 99]))
        record.append(1, "note", text="x" * 400 + "\x1b[2J")
    status, out, err = cli(capsys, "log", "show", "1", "--record", str(path))
    assert status == 0 and err == ""
    assert f"operator: {OPERATOR}" in out and f"patient:  {PATIENT}" in out
    assert "\\u00eb" not in out and "\\u" not in out
    assert "serial SIM-0001" in out and "field 20000 µm" in out
    for k in range(3):
        assert f"pass {k + 1} (pass_index {k}): 50 spots planned" in out
    assert "passes are numbered from 1 (pass N); the record stores pass_index = N - 1" in out
    assert "pass 2 (pass_index 1): spots 0..3 (4), measured 99..101 µJ per stack, " \
           "1 readings lost (-1)" in out
    assert "x" * 400 + "\\x1b[2J" in out and "\x1b" not in out  # whole, and escaped


def test_show_escapes_control_characters_in_the_session_entry(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.db"
    TreatmentRecord(path).new_session(**session_args(operator="a\x1b[31mb", patient_ref="p\x07"))
    status, out, _ = cli(capsys, "log", "show", "1", "--record", str(path))
    assert status == 0 and "a\\x1b[31mb" in out and "p\\x07" in out
    assert "\x1b" not in out and "\x07" not in out


# -- log list ------------------------------------------------------------------------------------

def test_list_shows_operator_and_patient_whole(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Cut at 16 and 12 characters without a mark, two patients read the same (audit)."""
    path = tmp_path / "r.db"
    with TreatmentRecord(path) as record:
        for patient in ("2024-0117-A-Andersson", "2024-0117-B-Bergström"):
            record.new_session(**session_args(operator="Dr Maximilian Oberhauser-Wendt",
                                              patient_ref=patient))
    status, out, _ = cli(capsys, "log", "list", "--record", str(path))
    assert status == 0
    assert out.count("Dr Maximilian Oberhauser-Wendt") == 2
    assert "2024-0117-A-Andersson" in out and "2024-0117-B-Bergström" in out


def test_list_cuts_only_beyond_a_generous_display_width_and_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Widths are display columns: a CJK character takes two; a cut value ends in "…"."""
    path = tmp_path / "r.db"
    long_patient = "患者" * 30  # 120 columns
    with TreatmentRecord(path) as record:
        record.new_session(**session_args(operator="Dr A", patient_ref=long_patient))
        record.new_session(**session_args(operator="Dr B", patient_ref="患者-42"))
    _, out, _ = cli(capsys, "log", "list", "--record", str(path))
    _, first, second = out.splitlines()
    cut = ("患者" * 10)[:19] + "…"  # 38 columns and the mark: within the 40
    assert long_patient not in out and cut in first
    assert "患者-42" in second
    # the columns after the patient line up in display width
    assert _width(first[:first.index(" 0/100")]) == _width(second[:second.index(" 0/100")])
    assert _width(first[:first.index(cut) + len(cut)]) == _width(first[:first.index(cut)]) + 39


def outcome_of(record: TreatmentRecord, *entries: tuple[str, dict[str, object]]) -> None:
    sid = record.new_session(**session_args(passes=2, spots=50))
    for kind, body in entries:
        record.append(sid, kind, **body)


def transition(old: str, new: str, fault: str = "NONE") -> tuple[str, dict[str, object]]:
    return "transition", {"old": old, "new": new, "fault": fault, "cause": "host_command"}


def test_list_says_each_sessions_last_outcome_and_its_spots(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Only session_end was read: a faulted, paused or interrupted session read "open"."""
    path = tmp_path / "r.db"
    with TreatmentRecord(path) as record:
        outcome_of(record, transition("ARMED", "EMITTING"),
                   ("session_end", {"status": "completed"}))
        outcome_of(record, ("session_end", {"status": "aborted"}))
        outcome_of(record, ("session_end", {"status": "cancelled"}))
        outcome_of(record, transition("ARMED", "EMITTING"),
                   ("energy_fault", {"pass_index": 0, "spot": 3, "worst_deviation": 0.3251}),
                   transition("EMITTING", "FAULT", "ENERGY_DEVIATION"))
        outcome_of(record, transition("EMITTING", "FAULT", "WATCHDOG"))
        outcome_of(record, transition("ARMED", "EMITTING"), transition("EMITTING", "PAUSED"),
                   ("pass_confirmed", {"pass_index": 0, "last": -1}))
        outcome_of(record, transition("READY", "ARMED"), transition("ARMED", "READY"))
        outcome_of(record, transition("EMITTING", "PAUSED"), ("interrupted", {"reason": "SIGTERM"}))
        outcome_of(record, transition("ARMED", "EMITTING"))
        outcome_of(record, transition("EMITTING", "FAULT", "WATCHDOG"),
                   ("session_resumed", {"operator": "dr a"}), ("operator_reset", {}),
                   transition("FAULT", "READY"), transition("READY", "ARMED"),
                   transition("ARMED", "EMITTING"), ("session_end", {"status": "completed"}))
        record.delivered(1, 0, np.arange(0, 50), np.full(50, 100))
        record.delivered(1, 1, np.arange(0, 20), np.full(20, 100))
    status, out, _ = cli(capsys, "log", "list", "--record", str(path))
    assert status == 0
    statuses = [line.split("  ")[-1].strip() for line in out.splitlines()[1:]]
    assert statuses == ["completed", "aborted", "cancelled", "fault (energy deviation 32.5 %)",
                        "fault (device fault WATCHDOG)", "paused", "waiting",
                        "interrupted (SIGTERM)", "open", "completed"]
    assert " 70/100 " in out.splitlines()[1] and " 0/100 " in out.splitlines()[2]
    assert "spots" in out.splitlines()[0] and "status" in out.splitlines()[0]


def test_the_stops_own_transitions_recorded_after_it_do_not_change_the_outcome(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The link's thread records the device's transitions: those of the stop's own PAUSE and
    DISARM may land after run_stopped. A run paused before emission read "waiting" (its
    disarm's ARMED -> READY came last, seen under load in test_api_treat), a run stopped by a
    record error "paused". A later run (ARMED again) and a device fault still count."""
    path = tmp_path / "r.db"
    stop = "run_stopped"
    with TreatmentRecord(path) as record:
        outcome_of(record, transition("READY", "ARMED"),
                   (stop, {"status": "paused", "cause": "", "detail": ""}),
                   transition("ARMED", "READY"))
        outcome_of(record, transition("ARMED", "EMITTING"),
                   ("record_error", {"error": "locked"}),
                   (stop, {"status": "fault", "cause": "record_error", "detail": ""}),
                   transition("EMITTING", "PAUSED"), transition("PAUSED", "READY"))
        outcome_of(record, transition("ARMED", "EMITTING"),
                   ("interrupted", {"reason": "SIGTERM"}), transition("EMITTING", "PAUSED"))
        outcome_of(record, (stop, {"status": "paused", "cause": "", "detail": ""}),
                   transition("READY", "ARMED"), transition("ARMED", "READY"))
        outcome_of(record, (stop, {"status": "paused", "cause": "", "detail": ""}),
                   transition("PAUSED", "FAULT", "WATCHDOG"))
    status, out, _ = cli(capsys, "log", "list", "--record", str(path))
    assert status == 0
    statuses = [line.split("  ")[-1].strip() for line in out.splitlines()[1:]]
    assert statuses == ["paused", "fault (record error)", "interrupted (SIGTERM)", "waiting",
                        "fault (device fault WATCHDOG)"]
