"""Session control from an embedding program: a pause or abort asked before or during a run,
from the run's thread or another; a run after the end; a device that is not the planned one;
a refused operator reset."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from controller.api import treat
from controller.errors import SettingsError
from controller.outcomes import session_outcomes
from controller.record import RecordError, TreatmentRecord
from controller.safety import Transition
from controller.session import SessionProgress, TreatmentSession, plan_for_device
from drivers import Device, open_device
from drivers.errors import DeviceError, DeviceMisreport
from drivers.protocol import FrameDecoder, Message, encode, message
from drivers.protocol.messages import DELIVERED_DTYPE, State
from sim_hw.config import SimConfig
from sim_hw.pty_server import serve_pty
from sim_hw.tcp_server import serve_tcp
from tests.test_session import (
    FAST,
    assert_record_equals_truth,
    session_for,
    settings,
    unplug_after,
)

REALTIME = f"sim://?{FAST}&clock=realtime"  # spots at the pulse rate: time to act mid-pass


def test_an_abort_asked_before_run_fires_nothing(record: TreatmentRecord) -> None:
    """No pre-emission delay: the device is ready at once, and the abort must still win."""
    with open_device("sim://?footswitch=down&pre_emission_ms=0&seed=5") as dev:
        session = session_for(dev, record)
        session.request_abort()
        outcome = session.run()
        assert len(dev.simulator.device.ground_truth) == 0
        session.close()
    assert outcome.status == "aborted"
    assert [e.body["status"] for e in record.entries(session.session_id, "session_end")] == [
        "aborted"]


def test_a_pause_asked_before_run_stops_it_before_emission(record: TreatmentRecord) -> None:
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record)
        session.request_pause()
        first = session.run()
        fired_then = len(dev.simulator.device.ground_truth)
        second = session.run()  # the pause applied to one run
        session.close()
        truth = dev.simulator.device.ground_truth
    assert first.status == "paused" and "before emission" in first.detail and fired_then == 0
    assert second.status == "completed"
    assert_record_equals_truth(session, truth)


def test_a_session_that_ended_does_not_run_again(record: TreatmentRecord) -> None:
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record)
        session.request_abort()
        assert session.run().status == "aborted"
        with pytest.raises(SettingsError) as caught:
            session.run()
        fired = len(dev.simulator.device.ground_truth)
        session.close()
    assert caught.value.field == "run" and "ended: aborted" in str(caught.value)
    assert fired == 0
    assert len(list(record.entries(session.session_id, "session_end"))) == 1


def test_a_pause_from_another_thread_does_not_wait_for_a_slow_callback(
        record: TreatmentRecord) -> None:
    """A GUI thread's pause while the progress callback blocks: the device pauses at once,
    not when the callback returns."""
    asked = threading.Event()
    fired_at_request: list[int] = []

    with open_device(REALTIME) as dev:
        def slow(p: SessionProgress) -> None:
            if p.delivered >= 50 and not asked.is_set():
                asked.set()
                threading.Timer(0.05, pause_from_gui).start()
                time.sleep(1.0)  # a GUI callback that blocks for a second

        def pause_from_gui() -> None:
            fired_at_request.append(len(dev.simulator.device.ground_truth))
            session.request_pause()

        session = session_for(dev, record, on_progress=slow, plan={"passes": 1, "size_mm": 8.0})
        outcome = session.run()
        fired = len(dev.simulator.device.ground_truth)
        session.close()
    assert outcome.status == "paused"
    # 1 s at the pulse rate would be hundreds of spots; at once is a few
    assert fired - fired_at_request[0] < 30, (fired_at_request, fired)


def test_a_device_disarmed_by_someone_else_is_a_resumable_fault_not_an_abort(
        record: TreatmentRecord) -> None:
    with open_device(REALTIME) as dev:
        def disarm_elsewhere(p: SessionProgress) -> None:
            if p.delivered >= 40 and not done.is_set():
                done.set()
                dev.pause()  # another host, or Device.stop_emission from another thread
                dev.disarm()

        done = threading.Event()
        session = session_for(dev, record, on_progress=disarm_elsewhere, plan={"passes": 1})
        outcome = session.run()
        ends = list(record.entries(session.session_id, "session_end"))
        pass_ends = list(record.entries(session.session_id, "pass_end"))
        # the record says why it stopped (log list read such a session as "open")
        stopped = session_outcomes(record)[session.session_id]
        session.on_progress = lambda p: None
        again = session.run()
        truth = dev.simulator.device.ground_truth
        session.close()
    assert outcome.status == "fault" and "not by this session" in outcome.detail
    assert outcome.cause == "stopped_elsewhere"
    assert not ends and not pass_ends  # not recorded as aborted: it could be resumed
    assert stopped == ("fault", "stopped elsewhere")
    assert session_outcomes(record)[session.session_id] == ("completed", "")
    assert again.status == "completed"
    assert_record_equals_truth(session, truth)


def test_a_device_reporting_a_spot_beyond_the_pass_fires_no_more(record: TreatmentRecord
                                                                  ) -> None:
    """A delivered report naming spot count + 5 (a device that misreports): the session stops
    emission at once and records nothing beyond the pass (the record once took such a report
    and filled the gap up to it as fired spots of unknown energy)."""
    with open_device(REALTIME) as dev:
        def misreport(p: SessionProgress) -> None:
            if p.delivered >= 40 and not done.is_set():
                done.set()
                forged = encode(message("EVT_DELIVERED", 60000, credits=1,
                                        records=np.array([(count + 5, 1000)], DELIVERED_DTYPE)))
                dev.link._handle_frames(FrameDecoder().feed(forged))

        done = threading.Event()
        session = session_for(dev, record, on_progress=misreport, plan={"passes": 1})
        (job,) = session.jobs
        count = job.spots.count
        outcome = session.run()
        fired_at_end = len(dev.simulator.device.ground_truth)
        state = dev.status().state
        time.sleep(0.3)  # at the pulse rate, 300 ms would fire dozens more spots
        truth = dev.simulator.device.ground_truth
        session.close()
    assert outcome.status == "fault" and outcome.cause == "device_error"
    assert f"reported spot {count + 5} of pass" in outcome.detail
    assert state is not State.EMITTING and len(truth) == fired_at_end < count
    index, _ = record.delivered_spots(session.session_id, job.number)
    assert index.size and int(index.max()) < count and record.verify().ok
    assert set(index.tolist()) <= set(truth["index"].tolist())


def test_a_misreporting_device_confirms_no_count(record: TreatmentRecord,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped by a misreport records no ``pass_confirmed`` from that device's status,
    which a later resume would trust; a clean stop (the footswitch wait) does."""
    with open_device("sim://?footswitch=up&pre_emission_ms=0&seed=5") as dev:
        session = session_for(dev, record, start_wait_s=0.2)
        assert session.run().status == "waiting"
        assert len(list(record.entries(session.session_id, "pass_confirmed"))) == 1

        def misreport(self: TreatmentSession, job: object) -> None:
            raise DeviceMisreport("the device reported spot 9999 of pass 0 fired")

        monkeypatch.setattr(TreatmentSession, "_attempt_pass", misreport)
        outcome = session.run()
        session.close()
    assert outcome.status == "fault" and "spot 9999" in outcome.detail
    assert len(list(record.entries(session.session_id, "pass_confirmed"))) == 1


def test_a_reconnect_to_another_device_fires_nothing_on_it(record: TreatmentRecord) -> None:
    """The link is lost mid-pass and the reconnect reaches a device with another serial and
    field size: the spots' positions were converted for the first one."""
    base = dict(kv.split("=") for kv in f"{FAST}&clock=realtime".split("&"))
    with serve_pty(SimConfig.from_query(base)) as planned, serve_pty(SimConfig.from_query(
            {**base, "serial": "OTHER-9", "field_size_um": "40000"})) as other:
        dev = open_device(planned.path)
        session = session_for(dev, record, on_progress=unplug_after(planned, 60),
                              plan={"passes": 1},
                              reconnect=lambda: open_device(other.path))
        outcome = session.run()
        assert outcome.status == "fault" and "not the one this session was planned for" in \
            outcome.detail
        assert outcome.cause == "device_mismatch"
        assert len(other.device.ground_truth) == 0
        again = session.run()  # on the other device still: refused again
        assert again.status == "fault" and len(other.device.ground_truth) == 0
        kinds = [e.kind for e in record.entries(session.session_id)]
        assert "device_mismatch" in kinds and "reconnected" not in kinds
        session.device.close()


def test_a_refused_operator_reset_is_recorded_as_refused(record: TreatmentRecord) -> None:
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record)
        dev.simulator.device.set_input(estop="pressed")  # faults the device (ESTOP)
        assert dev.status().state is State.FAULT
        with pytest.raises(DeviceError):
            session.operator_reset()  # refused while the e-stop is pressed
        session.close()
    kinds = [e.kind for e in record.entries(session.session_id)]
    assert kinds[-1] == "operator_reset_refused" and "operator_reset" in kinds[:-1]


@pytest.mark.parametrize("operator", ["", "   "])
def test_a_session_names_its_operator(record: TreatmentRecord, operator: str) -> None:
    """The record says who treated: no session without the operator's name."""
    with open_device(f"sim://?{FAST}") as dev, pytest.raises(SettingsError) as caught:
        plan = plan_for_device(settings(), dev.info.limits)
        TreatmentSession(dev, [plan], record, operator=operator, patient_ref="P-1")
    assert caught.value.field == "operator" and "--operator" in str(caught.value)
    assert not record.sessions()


@pytest.mark.parametrize("patient_ref", ["", "   "])
def test_a_session_names_its_patient(record: TreatmentRecord, patient_ref: str) -> None:
    """The record says whom the session treats (a test pass names what it fires at)."""
    with open_device(f"sim://?{FAST}") as dev, pytest.raises(SettingsError) as caught:
        plan = plan_for_device(settings(), dev.info.limits)
        TreatmentSession(dev, [plan], record, operator="tester", patient_ref=patient_ref)
    assert caught.value.field == "patient_ref" and caught.value.value == patient_ref
    assert "--patient REF" in caught.value.reason and "patient_ref =" in caught.value.reason
    assert "'test card'" in caught.value.allowed
    assert not record.sessions()


@pytest.mark.parametrize(("inputs", "when", "cause"), [
    ({"door": "open"}, "before", "refused"),  # ARM refused: INTERLOCK_OPEN
    ({"estop": "pressed"}, "during", "device_fault"),  # the device faults mid-pass
])
def test_a_fault_says_what_kind_it_is(record: TreatmentRecord, inputs: dict[str, str],
                                      when: str, cause: str) -> None:
    with open_device(REALTIME) as dev:
        def mid_pass(p: SessionProgress) -> None:
            if when == "during" and p.delivered >= 30 and not done.is_set():
                done.set()
                dev.simulator.device.set_input(**inputs)

        done = threading.Event()
        session = session_for(dev, record, on_progress=mid_pass, plan={"passes": 1})
        if when == "before":
            dev.simulator.device.set_input(**inputs)
        outcome = session.run()
        session.close()
    assert (outcome.status, outcome.cause) == ("fault", cause), outcome.detail


def test_statuses_other_than_fault_have_no_cause(record: TreatmentRecord) -> None:
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record)
        outcome = session.run()
        session.close()
    assert (outcome.status, outcome.cause) == ("completed", "")


def test_a_transition_the_record_cannot_take_is_a_warning_not_a_traceback(
        record: TreatmentRecord, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Transitions are recorded on the link's event thread, where an exception was logged
    with a traceback per event (a full disk: six of them in the audit); run() meets the
    failure at its own next write and stops emission."""
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record)
        append = record.append

        def failing(session_id: int, kind: str, **body: object) -> object:
            if kind == "transition":
                raise RecordError("cannot write t.db.head: disk full")
            return append(session_id, kind, **body)

        monkeypatch.setattr(record, "append", failing)
        session._on_transition(Transition(0.0, State.READY, State.ARMED, "host_command"))
        session.close()
    assert "transition ARMED not recorded: cannot write t.db.head: disk full" in caplog.text


def test_a_blocked_subscriber_of_the_caller_delays_neither_treat_nor_its_record(
        tmp_path: Path) -> None:
    """The caller's own event subscriber blocks on the ARMED -> EMITTING event (a network log
    that stalls): treat() returned only when it did, and the record lacked both EMITTING
    transitions (the session's handler waited behind it, and was unsubscribed meanwhile)."""
    blocked, release, returned = threading.Event(), threading.Event(), threading.Event()

    def my_logger(item: object) -> None:
        if (isinstance(item, Message) and item.name == "EVT_STATE"
                and int(item["new_state"]) == State.EMITTING):
            blocked.set()
            release.wait(10.0)
            returned.set()

    path = tmp_path / "t.db"
    with open_device(f"sim://?{FAST}") as dev:
        unsubscribe = dev.subscribe(my_logger)
        plan = plan_for_device(settings(passes=1), dev.info.limits)
        try:
            outcome = treat(dev, [plan], path, operator="tester", patient_ref="P-1",
                            acknowledge_warnings=True)
            still_blocked = blocked.is_set() and not returned.is_set()
        finally:
            release.set()
        unsubscribe()
    with TreatmentRecord(path, read_only=True) as record:
        transitions = [(e.body["old"], e.body["new"])
                       for e in record.entries(outcome.session_id, "transition")]
    assert outcome.status == "completed"
    assert still_blocked
    assert transitions == [(None, "STANDBY"), ("STANDBY", "READY"), ("READY", "ARMED"),
                           ("ARMED", "EMITTING"), ("EMITTING", "STANDBY")]


def once_from_another_thread(action: Callable[[], object], after: int
                             ) -> Callable[[SessionProgress], None]:
    """An ``on_progress`` that runs ``action`` once ``after`` spots are delivered, on a thread
    of its own (a GUI's), and waits for it."""
    done = threading.Event()

    def on_progress(p: SessionProgress) -> None:
        if p.delivered >= after and not done.is_set():
            done.set()
            gui = threading.Thread(target=action)
            gui.start()
            gui.join()

    return on_progress


def test_a_pause_from_another_thread_is_not_resumed_by_the_session(
        record: TreatmentRecord) -> None:
    """Device.pause() from another thread than run()'s: the session took the PAUSED it had
    not asked for as a footswitch release and sent RESUME (the footswitch being down), firing
    the rest of the pass. Only the footswitch's pause is resumed; this one ends the run as
    stopped elsewhere, the device left paused, and a later run() resumes it."""
    with open_device(REALTIME) as dev:
        session = session_for(dev, record, on_progress=once_from_another_thread(dev.pause, 40),
                              plan={"passes": 1})
        count = session.jobs[0].spots.count
        outcome = session.run()
        state = dev.status().state
        fired = len(dev.simulator.device.ground_truth)
        stopped = session_outcomes(record)[session.session_id]
        session.on_progress = lambda p: None
        again = session.run()
        truth = dev.simulator.device.ground_truth
        session.close()
    assert outcome.status == "fault" and outcome.cause == "stopped_elsewhere"
    assert "paused, not by this session nor the footswitch (host_command)" in outcome.detail
    assert state is State.PAUSED and fired == outcome.delivered[0] < count
    assert stopped == ("fault", "stopped elsewhere")
    assert again.status == "completed"
    assert_record_equals_truth(session, truth)


def test_a_device_closed_by_the_host_mid_pass_is_not_reconnected(
        record: TreatmentRecord) -> None:
    """A GUI thread closes the Device while a session with reconnect= delivers on a device
    that lives on (TCP): the session took the closed link for a pulled cable, reconnected and
    fired the rest of the pass. Now the run stops, says why, and resumes as other stops do."""
    served = serve_tcp(SimConfig.from_query(dict(kv.split("=") for kv in REALTIME
                                                 .removeprefix("sim://?").split("&"))))
    try:
        dev = open_device(served.url)
        opened: list[Device] = []

        def reconnect() -> Device:
            opened.append(open_device(served.url))
            return opened[-1]

        session = session_for(dev, record, on_progress=once_from_another_thread(dev.close, 40),
                              plan={"passes": 1}, reconnect=reconnect)
        count = session.jobs[0].spots.count
        outcome = session.run()
        state, fired = served.device.state, len(served.device.ground_truth)
        session.close()
        stopped = [e.body for e in record.entries(session.session_id, "run_stopped")]
        kinds = [e.kind for e in record.entries(session.session_id)]
        with open_device(served.url) as again:  # co2scan run --resume
            resumed = TreatmentSession(again, session.plans, record, operator="tester",
                                       patient_ref="", session_id=session.session_id)
            completed = resumed.run()
            resumed.close()
        truth = served.device.ground_truth
    finally:
        served.stop()
    assert outcome.status == "fault" and outcome.cause == "closed_by_host"
    assert "closed by the host" in outcome.detail
    assert not opened and "link_lost" not in kinds and "reconnected" not in kinds
    assert [b["cause"] for b in stopped] == ["closed_by_host"]
    assert state is State.READY and fired < count  # close() disarmed it
    assert completed.status == "completed"
    assert_record_equals_truth(resumed, truth)
