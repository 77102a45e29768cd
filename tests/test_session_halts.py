"""When delivery cannot go on as recorded (the record fails, the caller's code raises), the
session stops emission at once; a resume later records what the device fired meanwhile."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from controller.outcomes import outcome_text, session_outcomes
from controller.record import RecordError, RecordLocked, TreatmentRecord
from controller.scanpath import Plan
from controller.session import (
    MAX_UNREAD_SPOTS,
    NOT_CONFIRMED_STOPPED,
    SessionBusy,
    SessionProgress,
    TreatmentSession,
    plan_for_device,
)
from controller.settings import DensitySpec, PassSettings, Pattern, TreatmentSettings
from drivers import Device, DeviceLost, EventQueue, IllegalState, open_device
from drivers.protocol import Message
from drivers.protocol.messages import ErrorCode, FaultCode, State
from drivers.stream import MIN_REPORT_GAP_S
from tests.handpieces import unscreened
from tests.test_record_writers import flock_held
from tests.test_session import FAST, assert_record_equals_truth, session_for

REALTIME = "sim://?pre_emission_ms=20&footswitch=down&seed=5&clock=realtime"
PLAN = {"size_mm": 8.0, "passes": 1}


def assert_stopped(dev: Device, session: TreatmentSession) -> int:
    """Emission is off and stays off; returns the spots fired."""
    assert dev.status().state not in (State.EMITTING, State.ARMED)
    fired = len(dev.simulator.device.ground_truth)
    time.sleep(0.3)
    assert len(dev.simulator.device.ground_truth) == fired
    assert 0 < fired < session.jobs[0].spots.count
    return fired


def test_a_record_that_cannot_be_written_stops_emission(record: TreatmentRecord,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    writes = {"left": 2}
    delivered = record.delivered

    def failing(*args: Any, **kwargs: Any) -> None:
        if writes["left"] == 0:
            raise RecordError("cannot write to treatments.db: disk full")
        writes["left"] -= 1
        delivered(*args, **kwargs)

    with open_device(REALTIME) as dev:
        session = session_for(dev, record, plan=PLAN)
        monkeypatch.setattr(record, "delivered", failing)
        outcome = session.run()
        assert outcome.status == "fault" and "disk full" in outcome.detail
        assert "emission stopped" in outcome.detail
        assert_stopped(dev, session)
        monkeypatch.undo()  # the disk has room again: resume the same session
        resumed = session_for(dev, record, plan=PLAN, session_id=session.session_id)
        assert resumed.run().status == "completed"
        assert_record_equals_truth(resumed, dev.simulator.device.ground_truth)
    kinds = [e.kind for e in record.entries(session.session_id)]
    assert "record_error" in kinds and "reconciled" in kinds


@pytest.mark.parametrize("error, reason", [
    (ValueError("bug in the service script"), "ValueError: bug in the service script"),
    (KeyboardInterrupt(), "KeyboardInterrupt")])
def test_an_exception_in_the_callers_progress_callback_stops_emission(
        record: TreatmentRecord, error: BaseException, reason: str) -> None:
    """Emission stops, the spots the device fired since the last batch recorded are
    reconciled into the record (26 of 191 were missing), the interruption is recorded, and
    the exception reaches the caller; a resume then fires the rest, none twice."""
    def progress(p: SessionProgress) -> None:
        if p.delivered > 40:
            raise error

    with open_device(REALTIME) as dev:
        session = session_for(dev, record, plan=PLAN, on_progress=progress)
        with pytest.raises(type(error)):
            session.run()
        assert_stopped(dev, session)
        assert_record_equals_truth(session, dev.simulator.device.ground_truth)
        kinds = [e.kind for e in record.entries(session.session_id)]
        assert kinds[-2:] == ["interrupted", "pass_confirmed"]
        assert next(record.entries(session.session_id, "interrupted")).body == {"reason": reason}
        session.on_progress = lambda p: None
        assert session.run().status == "completed"
        assert_record_equals_truth(session, dev.simulator.device.ground_truth)


def test_a_hung_caller_lets_the_watchdog_stop_emission(record: TreatmentRecord) -> None:
    """The link's heartbeat thread fed the device's watchdog while the delivery loop hung in
    a progress callback: the rest of the pass fired, unchecked and unrecorded (3,916 spots in
    a 5 s hang). The heartbeats now stop with the loop: emission stops within two watchdog
    periods, and the record still holds every spot fired."""
    hang_s, during = 2.5, dict[str, int]()

    def progress(p: SessionProgress) -> None:
        if p.delivered > 100 and not during:
            before = len(dev.simulator.device.ground_truth)
            time.sleep(hang_s)  # a GUI callback blocked, a stalled network share
            during["fired"] = len(dev.simulator.device.ground_truth) - before

    with open_device(REALTIME) as dev:
        session = session_for(dev, record, plan={"size_mm": 18.0, "passes": 1,
                                                 "coverage": 15.0}, on_progress=progress)
        metrics = session.jobs[0].plan.metrics.passes[0]
        assert metrics.duration_s > hang_s + 1.0  # it would still fire after the hang
        outcome = session.run()
        watchdog_s = dev.info.limits.watchdog_ms / 1000.0
        assert_record_equals_truth(session, dev.simulator.device.ground_truth)
    assert outcome.status == "fault" and "WATCHDOG" in outcome.detail
    assert during["fired"] <= metrics.spot_rate_hz * (2.0 * watchdog_s + 0.3)


def test_a_device_the_host_no_longer_hears_is_stopped_within_its_watchdog(
        record: TreatmentRecord) -> None:
    """Every frame of the device lost while the host's frames still arrive (so its watchdog
    never runs out): the host waited for 1 s of silence, then 1 s for a status, while the
    device fired on unseen (2,150 spots at 1 kHz); then, asking after the pass's report gap
    (0.25 s), still 1.30 s (1,304 spots), the stop sent after the status timed out. Now the
    link is lost once the device has owed replies for a watchdog period (0.5 s) without a
    frame, PAUSE and DISARM go out at once, and the session stops with ``link_lost``: 0.54 s
    (543 spots)."""
    lost: dict[str, float] = {}

    def progress(p: SessionProgress) -> None:
        if p.delivered > 100 and not lost:
            lost["fired"] = len(dev.simulator.device.ground_truth)
            dev.simulator.faults.link(direction="out", drop=1.0)  # every device frame

    with open_device(REALTIME) as dev:
        session = session_for(dev, record, plan={"size_mm": 18.0, "passes": 1,
                                                 "coverage": 15.0}, on_progress=progress)
        metrics = session.jobs[0].plan.metrics.passes[0]
        outcome = session.run()
        unseen = len(dev.simulator.device.ground_truth) - lost["fired"]
        state = dev.simulator.device.state
        watchdog_s = dev.info.limits.watchdog_ms / 1000.0
        assert metrics.duration_s > 2.0 * dev.link.request_timeout_s + 1.0  # it would fire on
    assert outcome.status == "fault" and outcome.cause == "link_lost", outcome
    (entry,) = record.entries(session.session_id, "link_lost")
    assert "nothing from the device" in entry.body["error"]
    assert state not in (State.ARMED, State.EMITTING)  # told to stop, unanswered
    assert unseen <= metrics.spot_rate_hz * (watchdog_s + 0.35)
    assert record.verify().ok


def test_a_device_whose_delivery_reports_stop_is_asked_within_its_report_gap(
        record: TreatmentRecord) -> None:
    """Only the device's EVT_DELIVERED frames lost, its ACKs and events still arriving (so
    neither its watchdog nor the link's loss detection acts): the host asks the device's
    status once no report came for the pass's report gap, and records the spots it fired
    from it, energy unknown (-1). Without the ask the host saw none of them: the device fired
    on unrecorded (4,080 of the 4,225 spots, 3,970 of them unseen), then the stream waited
    for ever for credits only the lost reports would bring. With MAX_UNREAD_SPOTS of them in
    a row the energy monitor no longer guards the pass: the session stops it (it completed
    with 4,115 spots' energy unknown)."""
    cut: dict[str, float] = {}
    stalls: list[float] = []  # how long the host's count stood still after the cut, each time
    seen = {"delivered": 0, "at": 0.0}

    def progress(p: SessionProgress) -> None:
        now = time.monotonic()
        if p.delivered > 100 and not cut:
            cut["at"], cut["fired"] = now, len(dev.simulator.device.ground_truth)
            dev.simulator.faults.only(["EVT_DELIVERED"], "out")  # ACKs, events pass
            dev.simulator.faults.link("out", drop=1.0)
            seen.update(delivered=p.delivered, at=now)
        elif cut and p.delivered != seen["delivered"]:
            stalls.append(now - seen["at"])
            seen.update(delivered=p.delivered, at=now)
        elif cut and now - seen["at"] > 5.0:  # the host no longer learns what fires: stop
            raise TimeoutError(f"no spot recorded for {now - seen['at']:.1f} s while the "
                               f"device fired {len(dev.simulator.device.ground_truth)}")

    with open_device(REALTIME) as dev:
        session = session_for(dev, record, plan={"size_mm": 18.0, "passes": 1,
                                                 "coverage": 15.0}, on_progress=progress)
        metrics = session.jobs[0].plan.metrics.passes[0]
        gap_s = max(session.jobs[0].report_gap_s, MIN_REPORT_GAP_S)
        outcome = session.run()
        truth = dev.simulator.device.ground_truth
        dropped = dev.simulator.faults.applied("out")["drop"]
        assert metrics.duration_s > 10 * gap_s  # the pass would fire on long after the cut
        assert_record_equals_truth(session, truth)
        assert dev.status().state is State.FAULT
    assert outcome.status == "fault" and "ENERGY_DEVIATION" in outcome.detail, outcome
    assert dropped > 0
    # noticed within the report gap (bound: gap + 1 s for a busy machine)
    assert stalls and max(stalls) < gap_s + 1.0, stalls
    index, measured = record.delivered_spots(session.session_id, 0)
    assert len(index) < session.jobs[0].spots.count / 2  # stopped, not completed blind
    assert (measured[int(cut["fired"]) + 50:] == -1).all()  # from the status, not reports
    faults = [e.body for e in record.entries(session.session_id, "energy_fault")]
    assert len(faults) == 1 and faults[0]["unread"] >= MAX_UNREAD_SPOTS
    assert session_outcomes(record)[session.session_id][1].startswith("energy readings lost")


def limit_plan(dev: Device, passes: int) -> Plan:
    """A plan whose first pass has exactly MAX_UNREAD_SPOTS spots (a 16 x 1 mm rectangle at
    8 % coverage; its second pass, offset, has 84)."""
    return plan_for_device(TreatmentSettings(unscreened(), Pattern("rectangle", 16.0, 1.0),
                                             DensitySpec(coverage_pct=8.0), depth_um=200.0,
                                             passes=PassSettings(passes)), dev.info.limits)


@pytest.mark.parametrize("passes", [1, 2])
def test_readings_lost_up_to_a_passs_last_spot_end_the_run_as_a_fault(
        record: TreatmentRecord, passes: int) -> None:
    """Every EVT_DELIVERED lost in a pass of exactly MAX_UNREAD_SPOTS spots: no status while
    it emits confirms its last spot, so the run of unread spots reaches the limit only with
    the status after the pass's end (the device back in STANDBY). The session raised
    ENERGY_DEVIATION then, but a session's last pass (here its only one) went on to end the run
    "completed" (``session_end``; ``log list``: completed). Now the run ends as a fault, its
    cause the lost readings, every spot fired recorded (energy unknown), nothing more fired;
    after the operator's reset a resume fires only what is left."""
    with open_device(f"sim://?{FAST}") as dev:
        session = TreatmentSession(dev, [limit_plan(dev, passes)], record, operator="tester",
                                   patient_ref="P-1")
        assert session.jobs[0].spots.count == MAX_UNREAD_SPOTS
        dev.simulator.faults.only(["EVT_DELIVERED"], "out")  # ACKs, events pass
        dev.simulator.faults.link("out", drop=1.0)
        outcome = session.run()
        assert outcome.status == "fault" and outcome.cause == "device_fault", outcome
        truth = dev.simulator.device.ground_truth
        status = dev.status()
        listed = outcome_text(session_outcomes(record)[session.session_id])  # as log list
        assert_record_equals_truth(session, truth)
        dev.simulator.faults.clear()  # the reports arrive again
        session.operator_reset()
        resumed = session.run()
        fired_after = len(dev.simulator.device.ground_truth) - len(truth)
        assert_record_equals_truth(session, dev.simulator.device.ground_truth)
    assert "ENERGY_DEVIATION" in outcome.detail
    assert outcome.delivered == {0: MAX_UNREAD_SPOTS, **({1: 0} if passes == 2 else {})}
    assert truth["pass_index"].tolist() == [0] * MAX_UNREAD_SPOTS  # the next pass: nothing
    assert status.state is State.FAULT and status.fault_code is FaultCode.ENERGY_DEVIATION
    index, measured = record.delivered_spots(session.session_id, 0)
    assert index.tolist() == list(range(MAX_UNREAD_SPOTS)) and (measured == -1).all()
    (fault,) = [e.body for e in record.entries(session.session_id, "energy_fault")]
    assert fault == {"pass_index": 0, "spot": MAX_UNREAD_SPOTS - 1, "unread": MAX_UNREAD_SPOTS}
    first_run = next(e for e in record.entries(session.session_id)
                     if e.kind in ("run_stopped", "session_end"))
    assert first_run.kind == "run_stopped" and first_run.body["status"] == "fault"
    assert listed == f"fault (energy readings lost ({MAX_UNREAD_SPOTS} spots in a row))"
    assert resumed.status == "completed"
    assert fired_after == (0 if passes == 1 else session.jobs[1].spots.count)
    assert resumed.delivered == {j.number: j.spots.count for j in session.jobs}


def lose_first_raise_fault(dev: Device) -> list[FaultCode]:
    """The device's first RAISE_FAULT lost with the link, unsent (DeviceLost); the later ones
    sent. Returns the list of the lost one's code."""
    real, lost = dev.raise_fault, list[FaultCode]()

    def raise_lost(code: FaultCode) -> None:
        if not lost:
            lost.append(code)
            raise DeviceLost("link lost (test)")
        real(code)

    dev.raise_fault = raise_lost  # type: ignore[method-assign]
    return lost


@pytest.mark.parametrize("passes", [1, 2])
def test_a_fault_raised_as_the_link_is_lost_still_ends_the_run_as_a_fault(
        record: TreatmentRecord, passes: int) -> None:
    """As above, but the link is lost as the session raises ENERGY_DEVIATION (the command
    never reaches the device) and the session reconnects to the same device: the attempt
    after the reconnect found the pass fully recorded and returned, so the run ended
    "completed" with the device in STANDBY and a second pass fired blind (found by the
    session 18 review). Now the device is put in FAULT again and the run ends as a fault."""
    with open_device(f"sim://?{FAST}") as dev:
        session = TreatmentSession(dev, [limit_plan(dev, passes)], record, operator="tester",
                                   patient_ref="P-1", reconnect=lambda: dev)
        lost = lose_first_raise_fault(dev)
        dev.simulator.faults.only(["EVT_DELIVERED"], "out")
        dev.simulator.faults.link("out", drop=1.0)
        outcome = session.run()
        truth = dev.simulator.device.ground_truth
        status = dev.status()
        assert_record_equals_truth(session, truth)
    assert lost == [FaultCode.ENERGY_DEVIATION]
    assert outcome.status == "fault" and outcome.cause == "device_fault", outcome
    assert "ENERGY_DEVIATION" in outcome.detail and "not reset" in outcome.detail
    assert status.state is State.FAULT and status.fault_code is FaultCode.ENERGY_DEVIATION
    assert truth["pass_index"].tolist() == [0] * MAX_UNREAD_SPOTS  # the next pass: nothing
    assert [e.kind for e in record.entries(session.session_id, "link_lost")] == ["link_lost"]
    (fault,) = [e.body for e in record.entries(session.session_id, "energy_fault")]
    assert fault["unread"] == MAX_UNREAD_SPOTS
    # log list: the reconnect reopened the run; the fault it then stopped on is the device's
    assert session_outcomes(record)[session.session_id] == ("fault",
                                                            "device fault ENERGY_DEVIATION")


def test_a_fault_raised_as_the_link_is_lost_holds_a_resume_until_the_operator_resets(
        record: TreatmentRecord) -> None:
    """As above, but no reconnect: the run stops (link lost) with the device never told of
    the fault. A resume fired the second pass blind, with no operator reset (found by the
    session 18 review); now it puts the device in FAULT and stops until the operator resets."""
    with open_device(f"sim://?{FAST}") as dev:
        session = TreatmentSession(dev, [limit_plan(dev, 2)], record, operator="tester",
                                   patient_ref="P-1")
        lose_first_raise_fault(dev)
        dev.simulator.faults.only(["EVT_DELIVERED"], "out")
        dev.simulator.faults.link("out", drop=1.0)
        first = session.run()
        dev.simulator.faults.clear()  # the reports arrive again
        before = dev.status().state
        held = session.run()  # a resume without a reset
        after = dev.status()
        fired_held = len(dev.simulator.device.ground_truth)
        session.operator_reset()
        resumed = session.run()
        truth = dev.simulator.device.ground_truth
        assert_record_equals_truth(session, truth)
    assert first.status == "fault" and first.cause == "link_lost", first
    assert before is not State.FAULT  # the device never got the fault
    assert held.status == "fault" and held.cause == "device_fault", held
    assert after.state is State.FAULT and after.fault_code is FaultCode.ENERGY_DEVIATION
    assert fired_held == MAX_UNREAD_SPOTS  # nothing of the second pass fired blind
    assert resumed.status == "completed"
    assert resumed.delivered == {j.number: j.spots.count for j in session.jobs}


def running(session: TreatmentSession) -> tuple[threading.Thread, list[str]]:
    """``session.run()`` on another thread, once it is under way; the list gets its status."""
    outcomes: list[str] = []
    thread = threading.Thread(target=lambda: outcomes.append(session.run().status))
    thread.start()
    deadline = time.monotonic() + 5.0
    while not session._delivering.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    return thread, outcomes


def test_a_second_caller_is_refused_while_run_delivers(record: TreatmentRecord) -> None:
    with open_device("sim://?pre_emission_ms=20&footswitch=up&seed=5") as dev:
        session = session_for(dev, record, plan=PLAN, start_wait_s=1.0)
        first, outcomes = running(session)
        for call in (session.run, session.abort, session.operator_reset):
            with pytest.raises(SessionBusy, match="request_pause"):
                call()
        first.join()
        assert outcomes == ["waiting"]  # the first run ended on its own: footswitch never down
        assert session.abort().status == "aborted"  # free again
        assert len(dev.simulator.device.ground_truth) == 0


def test_a_wall_clock_step_forward_does_not_shorten_the_cooling_wait(
        record: TreatmentRecord, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait runs on the recorded wall-clock time (so that a resumed session waits too)
    and, within the process, on the monotonic clock: an NTP step of an hour after the first
    pass must not end it early."""
    real_time, jump = time.time, {"s": 0.0}
    monkeypatch.setattr(time, "time", lambda: real_time() + jump["s"])
    seen: dict[str, float] = {}
    append = record.append

    def watch(session: int, kind: str, **body: object) -> int:
        seq = append(session, kind, **body)
        if kind in ("pass_end", "cooling_wait") and kind not in seen:
            seen[kind] = time.monotonic()
            if kind == "pass_end":
                jump["s"] = 3600.0  # the clock steps forward right after the first pass
        return seq

    monkeypatch.setattr(record, "append", watch)
    with open_device("sim://?pre_emission_ms=20&footswitch=down&seed=5") as dev:
        session = session_for(dev, record, plan={"passes": 2}, pass_wait_s=1.0)
        assert session.run().status == "completed"
    assert seen["cooling_wait"] - seen["pass_end"] >= 1.0


@pytest.mark.parametrize("lets_go", [True, False], ids=["lets go", "stalled on"])
def test_a_writer_stalled_on_the_records_lock_stops_emission_and_run_returns(
        record: TreatmentRecord, monkeypatch: pytest.MonkeyPatch, lets_go: bool) -> None:
    """Another process holding the record's writers' lock (a stalled writer) blocked run()
    for as long as it held it; request_abort() could not end it, and a holder stopped for good
    hung run() and TreatmentSession() for ever. A write now gives up after lock_timeout_s:
    emission stops, run() returns a fault (record_error) naming the lock file, the entries
    that can still be written are (all, once the holder lets go), and a resume records what
    the device fired meanwhile."""
    record.lock_timeout_s = 0.2
    held: dict[str, int] = {}

    def progress(p: SessionProgress) -> None:
        if p.delivered > 40 and not held:
            held["fd"] = flock_held(record._lock_path)

    locked = record._locked

    def gives_up(*args: Any) -> RecordLocked:
        if lets_go and "fd" in held and threading.current_thread() is threading.main_thread():
            os.close(held.pop("fd"))  # the holder goes on just after the session gave up
        return locked(*args)

    monkeypatch.setattr(record, "_locked", gives_up)
    with open_device(REALTIME) as dev:
        session = session_for(dev, record, plan=PLAN, on_progress=progress)
        outcome = session.run()
        assert outcome.status == "fault" and outcome.cause == "record_error"
        assert f"its lock file {record._lock_path} was held" in outcome.detail
        assert "emission stopped" in outcome.detail
        assert_stopped(dev, session)
        if not lets_go:
            with pytest.raises(RecordLocked):  # nor does a new session hang
                session_for(dev, record, plan=PLAN)
            os.close(held.pop("fd"))
        kinds = [e.kind for e in record.entries(session.session_id)]
        assert ("run_stopped" in kinds and "record_error" in kinds) is lets_go
        if lets_go:
            assert next(record.entries(session.session_id, "run_stopped")).body["cause"] == \
                "record_error"
        session.on_progress = lambda p: None
        assert session.run().status == "completed"
        assert_record_equals_truth(session, dev.simulator.device.ground_truth)
    assert [e.kind for e in record.sessions()] == ["session"]  # the refused one left none


@pytest.mark.parametrize("lets_go_after_s", [None, 0.4], ids=["stalled on", "lets go later"])
def test_a_run_that_met_a_stalled_writer_returns_within_one_more_lock_timeout(
        record: TreatmentRecord, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, lets_go_after_s: float | None) -> None:
    """Behind a writer stalled on the record's lock, run() gave up on the batch it was
    writing after lock_timeout_s and stopped emission, then waited lock_timeout_s again for
    each entry after it (record_error, the link's transition, run_stopped) and returned
    4 x lock_timeout_s after the stall began (20 s at the default 5 s; 3 s after giving up
    at 1 s here). Those entries now share one wait of lock_timeout_s: run() returns about
    lock_timeout_s after giving up, and a holder that lets go meanwhile lets every one of
    them be written."""
    record.lock_timeout_s = 1.0
    held: dict[str, int] = {}
    gave_up: list[float] = []

    def progress(p: SessionProgress) -> None:
        if p.delivered > 40 and not held:
            held["fd"] = flock_held(record._lock_path)

    locked = record._locked

    def noted(*args: Any) -> RecordLocked:
        if not gave_up and lets_go_after_s is not None:
            threading.Timer(lets_go_after_s, os.close, (held.pop("fd"),)).start()
        gave_up.append(time.monotonic())
        return locked(*args)

    monkeypatch.setattr(record, "_locked", noted)
    with open_device(REALTIME) as dev:
        session = session_for(dev, record, plan=PLAN, on_progress=progress)
        outcome = session.run()
        returned = time.monotonic()
        if "fd" in held:
            os.close(held.pop("fd"))
        assert outcome.status == "fault" and outcome.cause == "record_error"
        assert "emission stopped" in outcome.detail
        assert dev.status().state not in (State.EMITTING, State.ARMED)
        # one shared wait of 1 s after giving up (3 waits of 1 s each before): a bound with
        # 1.5 s to spare for a busy machine, 0.5 s below what the old waits take at least
        assert returned - gave_up[0] < 2.5
        kinds = [e.kind for e in record.entries(session.session_id)]
        after = kinds[len(kinds) - kinds[::-1].index("delivered"):]  # after the last batch
        if lets_go_after_s is None:  # the entries after it tried, and gave up together
            assert len(gave_up) >= 3 and max(gave_up) - gave_up[0] < 2.0
            assert "record_error" not in after and "run_stopped" not in after
        else:  # nothing of what could be written once the holder let go is lost
            assert len(gave_up) == 1
            assert "not recorded" not in caplog.text  # the link's transitions neither
            assert after[-1] == "run_stopped" and "record_error" in after
            assert "transition" in after
        session.on_progress = lambda p: None
        assert session.run().status == "completed"
        assert_record_equals_truth(session, dev.simulator.device.ground_truth)


def test_a_safety_mirror_that_fails_on_an_event_stops_emission(
        record: TreatmentRecord) -> None:
    """The mirror runs on the link's event thread: an exception there was only logged, the
    mirror's view of state and interlocks went stale and the pass fired on to its end. The
    session now hears of it, stops emission and records why; a resume completes the pass."""
    with open_device(REALTIME) as dev:
        session = session_for(dev, record, plan=PLAN)
        on_event, reports = session.mirror.on_event, {"n": 0}

        def fails_once(msg: Message) -> None:
            if msg.name == "EVT_DELIVERED":
                reports["n"] += 1
                if reports["n"] == 3:
                    raise RuntimeError("bug in the mirror")
            on_event(msg)

        session.mirror.on_event = fails_once  # type: ignore[method-assign]
        outcome = session.run()
        assert outcome.status == "fault" and outcome.cause == "device_error"
        assert "safety mirror failed" in outcome.detail
        assert "bug in the mirror" in outcome.detail
        assert_stopped(dev, session)
        stopped = next(record.entries(session.session_id, "run_stopped")).body
        assert stopped["cause"] == "device_error" and "safety mirror" in stopped["detail"]
        (error,) = record.entries(session.session_id, "device_error")
        assert "bug in the mirror" in error.body["error"]
        session.mirror.on_event = on_event  # type: ignore[method-assign]
        assert session.run().status == "completed"
        assert_record_equals_truth(session, dev.simulator.device.ground_truth)


def test_a_halt_the_device_does_not_confirm_is_recorded_as_not_confirmed(
        record: TreatmentRecord) -> None:
    """Mid-pass the device stops hearing the host (PAUSE, DISARM, status requests never
    arrive). The session halted emission and its record said nothing of the halt going
    unanswered; the outcome and the run_stopped entry now say emission was not confirmed
    stopped."""
    muted: list[int] = []

    def progress(p: SessionProgress) -> None:
        if p.delivered > 40 and not muted:
            muted.append(p.delivered)
            dev.simulator.faults.link(drop=1.0, direction="in")

    with open_device(REALTIME) as dev:
        dev.link.request_timeout_s = 0.2
        session = session_for(dev, record, plan=PLAN, on_progress=progress)
        outcome = session.run()
        dev.simulator.faults.clear()
        # its watchdog (the host's link is lost by then: the device owed replies and sent
        # nothing for a watchdog period once it had faulted)
        assert dev.simulator.device.state not in (State.ARMED, State.EMITTING)
    assert outcome.status == "fault"
    assert NOT_CONFIRMED_STOPPED in outcome.detail
    stopped = next(record.entries(session.session_id, "run_stopped")).body
    assert stopped["detail"].endswith(NOT_CONFIRMED_STOPPED)


def test_the_event_queues_a_session_opens_are_released_whatever_ends_the_pass(
        record: TreatmentRecord, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session opened and released the link's event queues itself (``link.
    queue_events``); a START refused with anything but FOOTSWITCH_UP left its queue
    registered, filling with every later event. It now takes them from ``Device.events()``,
    released on leaving the block."""
    with open_device("sim://?pre_emission_ms=20&footswitch=down&seed=5") as dev:
        session = session_for(dev, record, plan=PLAN)
        opened: list[object] = []
        events = dev.events

        def counted() -> contextlib.AbstractContextManager[EventQueue]:
            opened.append(1)
            return events()

        def refused(wait_indicator: bool = True) -> None:
            raise IllegalState("START", int(ErrorCode.ILLEGAL_STATE), 0, int(State.READY),
                               "refused for the test")

        monkeypatch.setattr(dev, "events", counted)
        monkeypatch.setattr(dev, "start", refused)
        outcome = session.run()
        assert outcome.status == "fault" and outcome.cause == "refused"
        assert opened and dev.link._event_queues == []
        monkeypatch.undo()
        assert session.run().status == "completed"
        assert dev.link._event_queues == []
    with open_device("sim://") as dev, dev.events() as queue:
        assert dev.link._event_queues == [queue]
    assert dev.link._event_queues == []


def test_the_controller_reaches_events_through_the_device_api() -> None:
    """One owner of the link's event plumbing: the session imports nothing of drivers.link."""
    import controller.session

    source = Path(controller.session.__file__).read_text(encoding="utf-8")
    assert "drivers.link" not in source and ".link." not in source


def test_a_transition_the_record_refused_for_a_moment_stops_the_run(
        record: TreatmentRecord) -> None:
    """Another writer held the record's lock a little longer than lock_timeout_s around
    START: the EMITTING transition, written on the link's thread, was refused and only
    logged, and the run's next write went through once the lock was free, so the session
    completed with that entry missing (review of session 15). The run now stops emission and
    ends as record_error, naming the transition; a resume completes the pass."""
    record.lock_timeout_s = 0.3
    with open_device(REALTIME) as dev:
        session = session_for(dev, record, plan={"size_mm": 8.0, "passes": 1})
        start = dev.start

        def start_while_held(*args: Any, **kwargs: Any) -> None:
            fd = flock_held(record._lock_path)  # another writer, stalled for 0.4 s
            threading.Timer(0.4, os.close, (fd,)).start()
            start(*args, **kwargs)

        dev.start = start_while_held  # type: ignore[method-assign]
        outcome = session.run()
        assert outcome.status == "fault" and outcome.cause == "record_error"
        assert "the transition to EMITTING could not be recorded" in outcome.detail
        assert_stopped(dev, session)
        dev.start = start  # type: ignore[method-assign]
        assert session.run().status == "completed"
        assert_record_equals_truth(session, dev.simulator.device.ground_truth)


@pytest.mark.parametrize("answers", [True, False])
def test_a_close_from_another_thread_says_whether_it_stopped_emission(
        record: TreatmentRecord, answers: bool) -> None:
    """A GUI thread closes the Device mid-pass: the session trusted that close to stop
    emission and recorded "emission stopped" even when the device never confirmed it
    (review of session 15). It now waits for the close's answer and says which."""
    gone: list[threading.Thread] = []

    def progress(p: SessionProgress) -> None:
        if p.delivered > 40 and not gone:
            if not answers:
                dev.simulator.faults.link(drop=1.0, direction="in")
            gone.append(threading.Thread(target=dev.close))
            gone[0].start()

    with open_device(REALTIME) as dev:
        session = session_for(dev, record, plan=PLAN, on_progress=progress)
        outcome = session.run()
        gone[0].join()
        assert dev.stop_confirmed is answers
    assert (outcome.status, outcome.cause) == ("fault", "closed_by_host")
    assert ("emission stopped," in outcome.detail) is answers
    assert (NOT_CONFIRMED_STOPPED in outcome.detail) is not answers
    stopped = next(record.entries(session.session_id, "run_stopped")).body
    assert stopped["detail"].endswith(NOT_CONFIRMED_STOPPED) is not answers
