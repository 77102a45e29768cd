"""Resuming a session: only an unfinished session of the record, planned exactly as now."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from controller.cli import main
from controller.commands.run import deliver
from controller.errors import SettingsError
from controller.record import TreatmentRecord
from controller.session import SessionOutcome, SessionProgress, TreatmentSession
from drivers import open_device
from drivers.protocol.messages import FaultCode
from tests.test_cli_run import FAST as CLI_FAST
from tests.test_cli_run import SCRIPT
from tests.test_session import FAST, session_for


def refused(rec: TreatmentRecord, session_id: object, device: str = f"sim://?{FAST}",
            **kwargs: Any) -> SettingsError:
    """The refusal of a resume; the device fired nothing and the record is unchanged."""
    before = [(e.seq, e.kind, e.body) for e in rec.entries()]
    with open_device(device) as dev, pytest.raises(SettingsError) as caught:
        session_for(dev, rec, session_id=session_id, **kwargs)
    assert len(dev.simulator.device.ground_truth) == 0
    assert [(e.seq, e.kind, e.body) for e in rec.entries()] == before and rec.verify().ok
    assert caught.value.field == "resume" and caught.value.value == session_id
    return caught.value


def unfinished(rec: TreatmentRecord) -> TreatmentSession:
    """A session that never started: the footswitch stayed up (no session_end)."""
    with open_device("sim://?pre_emission_ms=30&footswitch=up&seed=5") as dev:
        session = session_for(dev, rec, start_wait_s=0.2)
        assert session.run().status not in ("completed", "aborted")
        session.close()
    return session


def test_a_completed_session_is_not_resumed(record: TreatmentRecord) -> None:
    with open_device(f"sim://?{FAST}") as dev:
        done = session_for(dev, record)
        assert done.run().status == "completed"
        done.close()
    exc = refused(record, done.session_id)
    assert "ended: completed" in exc.reason and "(none)" in exc.allowed


@pytest.mark.parametrize("session_id", [77, -4, 0, "1", True])
def test_a_session_not_in_the_record_is_not_resumed(record: TreatmentRecord,
                                                    session_id: object) -> None:
    waiting = unfinished(record)
    exc = refused(record, session_id)
    assert exc.reason in ("no such session", "not a session id")
    assert f"({waiting.session_id})" in exc.allowed  # the one that could be resumed


@pytest.mark.parametrize(("plan", "differs"), [
    ({"size_mm": 6.0}, "spots"),  # another pattern
    ({"depth_um": 250.0}, "plan_checksum"),  # the same spots, another energy
    ({"passes": 1}, "2 passes recorded, 1 planned now"),
])
def test_another_plan_does_not_resume_a_session(record: TreatmentRecord, plan: dict,
                                                differs: str) -> None:
    waiting = unfinished(record)
    exc = refused(record, waiting.session_id, plan=plan)
    assert "planned differently" in exc.reason and differs in exc.reason


def test_the_same_plan_resumes_and_completes(record: TreatmentRecord) -> None:
    waiting = unfinished(record)
    with open_device(f"sim://?{FAST}") as dev:
        resumed = session_for(dev, record, session_id=waiting.session_id, operator="Dr B")
        assert resumed.run().status == "completed"
        resumed.close()
        fired = dev.simulator.device.ground_truth
        serial = dev.info.serial
    assert len(fired) == sum(j.spots.count for j in resumed.jobs)
    assert record.verify().ok
    # the record names who resumed, on which device; the session entry who started it
    (entry,) = record.entries(waiting.session_id, "session_resumed")
    assert entry.body["operator"] == "Dr B" and entry.body["device_serial"] == serial
    assert [e.body["operator"] for e in record.sessions()] == ["tester"]
    with pytest.raises(SettingsError, match="ended: completed"), \
            open_device(f"sim://?{FAST}") as dev:
        session_for(dev, record, session_id=waiting.session_id)


@pytest.mark.parametrize("given", ["", "  ", "P-1"])
def test_a_resumed_session_keeps_its_patient(record: TreatmentRecord, given: str) -> None:
    waiting = unfinished(record)  # recorded for P-1
    with open_device(f"sim://?{FAST}") as dev:
        resumed = session_for(dev, record, session_id=waiting.session_id, patient_ref=given)
        assert resumed.patient_ref == "P-1"
        assert resumed.run().status == "completed"
        resumed.close()
    assert [e.body["patient_ref"] for e in record.sessions()] == ["P-1"]


def test_another_patient_does_not_resume_a_session(record: TreatmentRecord) -> None:
    waiting = unfinished(record)
    before = [(e.seq, e.kind, e.body) for e in record.entries()]
    with open_device(f"sim://?{FAST}") as dev, pytest.raises(SettingsError) as caught:
        session_for(dev, record, session_id=waiting.session_id, patient_ref="P-2")
    assert len(dev.simulator.device.ground_truth) == 0
    assert [(e.seq, e.kind, e.body) for e in record.entries()] == before
    exc = caught.value
    assert exc.field == "patient_ref" and exc.value == "P-2"
    assert exc.allowed.startswith(f"'P-1', the patient session {waiting.session_id} was "
                                  "recorded for")


def test_cli_refuses_a_resume_with_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          ) -> None:
    script = tmp_path / "s.toml"
    script.write_text(SCRIPT, encoding="utf-8")
    db = str(tmp_path / "t.db")
    assert main(["run", str(script), "--device", CLI_FAST, "--yes", "--record", db]) == 0
    capsys.readouterr()
    assert main(["run", str(script), "--device", CLI_FAST, "--yes", "--record", db,
                 "--resume", "1"]) == 3
    err = capsys.readouterr().err
    assert "resume = 1 rejected (it ended: completed)" in " ".join(err.split())
    with TreatmentRecord(tmp_path / "t.db") as rec:
        assert rec.verify().ok and [e.session for e in rec.sessions()] == [1]


def test_a_session_is_not_resumed_on_another_device(record: TreatmentRecord) -> None:
    """Only the device that fired a session's spots knows which fired (its fired-index
    memory): a resume on another one (another serial, the same field) was accepted and
    fired again the spots the record had not yet confirmed."""
    waiting = unfinished(record)  # on SIM-0001
    exc = refused(record, waiting.session_id, device=f"sim://?{FAST}&serial=SIM-0002")
    assert "recorded on (serial SIM-0001" in exc.allowed and "serial SIM-0002" in exc.reason


class Crash(Exception):
    """A host that dies mid-pass: the record is behind the device, nothing confirms it (an
    exception run() survives reconciles the record: the test skips that, as a kill does)."""


def test_a_pass_the_device_no_longer_holds_is_not_fired_again(
        record: TreatmentRecord, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host dies mid-pass; another session then loads its own pass onto the device, so
    the device no longer knows how far the first got. A resume fires none of that pass
    (count_mismatch) rather than trusting the record, which may be behind the device."""
    with open_device(f"sim://?{FAST}&clock=realtime") as dev:  # at the pulse rate: mid-pass
        def crash(p: SessionProgress) -> None:
            if p.delivered >= 20:
                raise Crash

        first = session_for(dev, record, on_progress=crash, plan={"passes": 1})
        monkeypatch.setattr(first, "record_interruption", lambda reason: None)  # killed
        with pytest.raises(Crash):
            first.run()
        first.close()
        fired_first = len(dev.simulator.device.ground_truth)
        other = session_for(dev, record, patient_ref="P-9", plan={"passes": 1, "size_mm": 4.0})
        assert other.run().status == "completed"
        other.close()
        fired_before = len(dev.simulator.device.ground_truth)
        resumed = session_for(dev, record, session_id=first.session_id, plan={"passes": 1})
        outcome = deliver(resumed, interactive=False, resets=1)  # as co2scan run --reset-fault
        resumed.close()
        assert len(dev.simulator.device.ground_truth) == fired_before  # nothing fired
    assert outcome.status == "fault" and outcome.cause == "count_mismatch"
    assert "no longer holds it" in outcome.detail
    # not a device fault: no reset was tried (it was, and refused: noise for the operator)
    assert not list(record.entries(first.session_id, "operator_reset"))
    assert 20 <= record.delivered_summary(first.session_id, 0)[0] <= fired_first < 169
    assert record.verify().ok


def test_reset_fault_flag_resets_no_laser_fault_without_asking(record: TreatmentRecord) -> None:
    """``--reset-fault N`` (resets given to deliver) is for a crash or a power cycle: an
    energy deviation (the laser 30 % off its setting) is not reset without a terminal to
    ask; the audit saw four bursts re-fired at +25 % with --reset-fault 3."""
    with open_device(f"sim://?{FAST}&noise_percent=0.5&drift_percent=30") as dev:
        session = session_for(dev, record)
        outcome = deliver(session, interactive=False, resets=3)
        fired = len(dev.simulator.device.ground_truth)
        session.close()
    assert outcome.status == "fault" and session.mirror.fault is FaultCode.ENERGY_DEVIATION
    assert not list(record.entries(session.session_id, "operator_reset"))
    assert fired < sum(j.spots.count for j in session.jobs)


def test_a_run_stopped_elsewhere_is_not_reset_by_the_flag() -> None:
    """A pass paused or disarmed by someone else leaves the device paused or ready, not
    faulted: co2scan run --reset-fault sent an operator reset, which the device refused
    (review of session 15). It now ends there, for a --resume."""
    stopped = SessionOutcome("fault", 1, "pass 1 paused, not by this session nor the "
                             "footswitch (host_command)", {0: 40}, "stopped_elsewhere")
    calls: list[str] = []

    class Stub:
        mirror = SimpleNamespace(fault=FaultCode.NONE)

        def run(self) -> SessionOutcome:
            calls.append("run")
            return stopped

        def operator_reset(self) -> None:
            calls.append("reset")

    assert deliver(Stub(), interactive=False, resets=3) is stopped  # type: ignore[arg-type]
    assert calls == ["run"]
