"""``co2scan log show`` and ``log list`` tell what the record holds, in full and readably
(audit: show cut every entry's JSON at 200 characters, so the session's patient_ref, after
its passes, was always lost, and non-ASCII names read as \\u00eb; list cut operator and patient
without a mark and said "open" for every session without an end)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
