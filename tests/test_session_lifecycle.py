"""A session's life on one Device: one session under way at a time per Device, nothing run
after close(), and a closed record refused with RecordError."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from controller.cli import main
from controller.commands.run import EXIT
from controller.errors import SettingsError
from controller.outcomes import session_outcomes
from controller.record import RecordError, TreatmentRecord
from controller.session import SessionBusy, SessionOutcome, SessionProgress
from drivers import Device, LimitError, open_device
from drivers.protocol.messages import Capability
from tests.test_session import FAST, assert_record_equals_truth, session_for
from tests.test_session_halts import PLAN, REALTIME, running

WAITING = "sim://?pre_emission_ms=20&footswitch=up&seed=5"


def test_a_second_session_on_the_device_is_refused_while_one_is_under_way(
        record: TreatmentRecord, tmp_path: Path) -> None:
    """Two threads, two sessions, one Device: the second one's quiesce paused the first
    mid-pass, which then resumed by itself, and each recorded the other's transitions."""
    with open_device(WAITING) as dev, TreatmentRecord(tmp_path / "b.db") as other_record:
        a = session_for(dev, record, start_wait_s=1.5)
        b = session_for(dev, other_record, patient_ref="P-2")
        thread, outcomes = running(a)
        busy = f"session {a.session_id} of {record.path} is under way on this device"
        for call in (b.run, b.abort, b.cancel, b.operator_reset):
            with pytest.raises(SessionBusy, match=busy):
                call()
        with pytest.raises(SessionBusy, match=busy):
            session_for(dev, other_record, patient_ref="P-3")
        thread.join()
        assert outcomes == ["waiting"]  # armed and disarmed: transitions of a's alone
        assert [e.kind for e in other_record.entries()] == ["session"]
        assert "transition" in [e.kind for e in record.entries(a.session_id)]
        assert b.cancel().status == "cancelled"  # free again
        assert len(dev.simulator.device.ground_truth) == 0


def test_run_after_close_is_refused_and_fires_nothing(record: TreatmentRecord) -> None:
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record)
        session.close()
        for call in (session.run, session.abort, session.cancel, session.operator_reset):
            with pytest.raises(SettingsError, match="it was closed"):
                call()
        assert len(dev.simulator.device.ground_truth) == 0
    assert [e.kind for e in record.entries()] == ["session"]


def test_run_on_a_closed_record_raises_record_error(record: TreatmentRecord) -> None:
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record)
        record.close()
        with pytest.raises(RecordError, match="record closed"):
            session.run()
        assert len(dev.simulator.device.ground_truth) == 0


def without_energy_monitor(dev: Device) -> Device:
    """``dev`` as a device without an energy monitor would identify itself."""
    dev.info = replace(dev.info, capabilities=dev.info.capabilities & ~Capability.ENERGY_MONITOR)
    return dev


def test_a_device_without_an_energy_monitor_is_refused_before_anything_is_recorded(
        record: TreatmentRecord) -> None:
    """Its measured_uj read 0 (firmware_protocol.md 4.2): the energy check would have
    faulted the pass at its first report, after firing."""
    with open_device(f"sim://?{FAST}") as dev:
        with pytest.raises(LimitError, match="ENERGY_MONITOR"):
            session_for(without_energy_monitor(dev), record)
        assert list(record.entries()) == []
        assert len(dev.simulator.device.ground_truth) == 0


def test_co2scan_run_names_the_missing_energy_monitor(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "s.toml"
    script.write_text('[[pass]]\nsize_mm = 2\npitch_um = 500\ndepth_um = 200\n', "utf-8")
    monkeypatch.setattr("controller.commands.run.open_device",
                        lambda url: without_energy_monitor(open_device(url)))
    status = main(["run", str(script), "--device", f"sim://?{FAST}", "--yes", "--operator",
                   "o", "--patient", "p", "--record", str(tmp_path / "r.db")])
    err = capsys.readouterr().err
    assert status == EXIT["device"]
    assert "cannot treat with the device" in err and "ENERGY_MONITOR" in err


def test_close_from_another_thread_while_run_delivers_is_refused(
        record: TreatmentRecord) -> None:
    """It unsubscribed the session from the device's events mid-run: its transitions went
    unrecorded."""
    with open_device(WAITING) as dev:
        session = session_for(dev, record, start_wait_s=1.0)
        thread, outcomes = running(session)
        deadline = time.monotonic() + 5.0
        while session._delivering_thread is None and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(SessionBusy, match=r"close\(\) refused"):
            session.close()
        thread.join()
        session.close()  # run() has returned: fine
    assert outcomes == ["waiting"]
    kinds = [e.kind for e in record.entries(session.session_id)]
    assert kinds.count("transition") >= 2  # armed and disarmed, both recorded


def test_an_ended_session_is_not_aborted_again(record: TreatmentRecord) -> None:
    """abort() after run() completed added a second session_end, 'aborted': log list then
    showed a completed treatment as aborted, and the device's pass (maybe another
    session's) was aborted."""
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record, plan={"passes": 1})
        assert session.run().status == "completed"
        before = [e.kind for e in record.entries(session.session_id)]
        with pytest.raises(SettingsError, match="it ended: completed"):
            session.abort()
        assert [e.kind for e in record.entries(session.session_id)] == before


def test_closing_the_record_while_a_session_delivers_on_it_is_refused(
        record: TreatmentRecord) -> None:
    """A GUI closed its TreatmentRecord while run() delivered on its worker thread: the
    session ended with the record holding ['session', 'pass_start'], no run_stopped, 100
    spots recorded of 121 fired, and log list showed it open. close() is now refused
    (SessionBusy) while a session's run() is under way on the record, which stays open:
    the session delivers and records to the end, and closes once run() returned."""
    delivering = threading.Event()

    def progress(p: SessionProgress) -> None:
        if p.delivered > 40:
            delivering.set()

    with open_device(REALTIME) as dev:
        session = session_for(dev, record, plan=PLAN, on_progress=progress)
        outcome: list[SessionOutcome] = []
        thread = threading.Thread(target=lambda: outcome.append(session.run()))
        thread.start()
        assert delivering.wait(30.0)
        with pytest.raises(SessionBusy, match=rf"close\(\) of {re.escape(str(record.path))} "
                           rf"refused: session {session.session_id}'s run\(\) is under way"):
            record.close()
        thread.join(60.0)
        assert [o.status for o in outcome] == ["completed"]
        assert_record_equals_truth(session, dev.simulator.device.ground_truth)
        session.close()
    assert session_outcomes(record)[session.session_id] == ("completed", "")
    record.close()  # nothing under way: closed
    with pytest.raises(RecordError, match="record closed"):
        record.sessions()
