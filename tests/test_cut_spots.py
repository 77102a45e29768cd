"""A fault or an ABORT cuts the spot under way (firmware_protocol.md section 5, rules 7, 8):
that spot counts as fired, and its record, the last one reported before the EVT_STATE that
ends EMITTING, carries the partial reading. The stream marks it (Progress.cut), holding back
a low last reading until what follows it is known; the session records it (a ``spot_cut``
entry, the reading kept) and does not judge it as an energy deviation. A low reading in
mid-emission still is one."""

from __future__ import annotations

import numpy as np
import pytest

from controller.record import TreatmentRecord
from drivers import open_device
from drivers.protocol import Message, message
from drivers.protocol.messages import DELIVERED_DTYPE, SPOT_DTYPE, Cause, FaultCode, State
from drivers.spots import PassSpots
from drivers.stream import PassStreamer, Progress
from tests.test_session import FAST, session_for

SET_UJ = 10_000
LOW_UJ = SET_UJ * 0.8


def _pass(count: int = 100) -> PassSpots:
    records = np.zeros(count, SPOT_DTYPE)
    records["index"] = np.arange(count)
    return PassSpots.from_records(0, records)


def streamer(hold: bool = True) -> PassStreamer:
    """A PassStreamer with the state recording deliveries and events touches; its status
    requests counted instead of sent."""
    s = object.__new__(PassStreamer)
    s.last_seen, s.known, s.index, s.measured, s.credits = -1, True, [], [], 0
    s.spots = _pass()
    s.state, s.cause, s.fault_code, s.ending, s.next_send = (State.EMITTING, None,
                                                             FaultCode.NONE, False, 0)
    s.interlocks = 0  # type: ignore[assignment]
    s.hold_below_uj = np.full(100, LOW_UJ) if hold else None
    s.hold_from, s.latest_open, s.cut = None, False, []
    s.asked = 0  # type: ignore[attr-defined]

    def reconcile() -> None:
        s.asked += 1  # type: ignore[attr-defined]
    s.reconcile = reconcile  # type: ignore[method-assign]
    return s


def delivered(first: int, *measured: int) -> Message:
    records = np.zeros(len(measured), DELIVERED_DTYPE)
    records["index"] = np.arange(first, first + len(measured))
    records["measured_uj"] = measured
    return message("EVT_DELIVERED", records=records, credits=100)


def state(new: State, cause: Cause, fault: FaultCode = FaultCode.NONE,
          old: State = State.EMITTING) -> Message:
    return message("EVT_STATE", old_state=int(old), new_state=int(new), cause=int(cause),
                   fault_code=int(fault))


ENDINGS = {
    "estop": (state(State.FAULT, Cause.INTERLOCK, FaultCode.ESTOP), True),
    "abort": (state(State.STANDBY, Cause.HOST_COMMAND), True),
    "complete": (state(State.STANDBY, Cause.PLAN_COMPLETE), False),
    "pause": (state(State.PAUSED, Cause.HOST_COMMAND), False),
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_the_last_record_before_a_fault_or_abort_is_marked_cut(ending: str) -> None:
    event, cut = ENDINGS[ending]
    s = streamer()
    s.handle_all([delivered(0, SET_UJ, SET_UJ, 3000), event])
    s.hold_if_low()
    p = s.progress()
    assert p.index.tolist() == [0, 1, 2] and p.measured_uj.tolist() == [SET_UJ, SET_UJ, 3000]
    assert p.cut.tolist() == ([2] if cut else [])


def test_a_low_last_reading_is_held_until_its_eventual_fault_is_seen() -> None:
    """The flushed record and its EVT_STATE read apart: the low record waits (the status is
    asked at once), then comes marked with the fault."""
    s = streamer()
    s.handle_all([delivered(0, SET_UJ, 3000)])
    s.hold_if_low()
    assert s.asked == 1  # type: ignore[attr-defined]
    assert s.progress().index.tolist() == [0]
    s.handle_all([ENDINGS["estop"][0]])
    p = s.progress()
    assert (p.index.tolist(), p.measured_uj.tolist(), p.cut.tolist()) == ([1], [3000], [1])


def test_a_low_reading_followed_by_another_record_is_not_cut() -> None:
    s = streamer()
    s.handle_all([delivered(0, 3000)])
    s.hold_if_low()
    assert s.progress().index.tolist() == []
    s.handle_all([delivered(1, SET_UJ), ENDINGS["estop"][0]])
    p = s.progress()
    assert (p.index.tolist(), p.cut.tolist()) == ([0, 1], [1])


def test_a_spot_reported_before_a_fault_but_already_passed_on_is_still_marked() -> None:
    """A reading within the tolerance is passed on at once; the fault after it marks the
    spot in the next Progress."""
    s = streamer()
    s.handle_all([delivered(0, SET_UJ)])
    s.hold_if_low()
    assert s.progress().index.tolist() == [0]
    s.handle_all([ENDINGS["abort"][0]])
    p = s.progress(done=True)
    assert (p.index.tolist(), p.cut.tolist()) == ([], [0])


def _commit(record: TreatmentRecord, measured: list[int], cut: list[int],
            fault: FaultCode = FaultCode.ESTOP) -> tuple[list[str], State]:
    """Commit spots 0.. of a session's first pass with these readings (stack energy), the
    ``cut`` ones marked; the entry kinds written and the device's state after."""
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record, plan={"passes": 1})
        job = session.jobs[0]
        set_uj = int(job.set_energy_uj[0])
        values = np.asarray([set_uj * v // SET_UJ for v in measured], np.int64)
        index = np.arange(len(measured), dtype=np.int64)
        before = {e.seq for e in record.entries(session.session_id)}
        session._commit(job, Progress(index, values, State.FAULT, 0,  # type: ignore[arg-type]
                                      len(measured), len(measured) - 1, fault_code=fault,
                                      cut=np.asarray(cut, np.int64)))
        new = [e for e in record.entries(session.session_id) if e.seq not in before]
        assert record.delivered_spots(session.session_id, 0)[1].tolist() == values.tolist()
        if cut:
            assert [e.body for e in new if e.kind == "spot_cut"] == [
                {"pass_index": 0, "spot": c, "by": f"fault {fault.name}"} for c in cut]
            rows = record.delivered_spot_rows(session.session_id)
            assert [r["reading"] for r in rows] == [
                "cut" if i in cut else "ok" for i in range(len(measured))]
        return [e.kind for e in new], dev.status().state


def test_a_cut_spots_partial_reading_is_recorded_not_judged(record: TreatmentRecord) -> None:
    kinds, now = _commit(record, [SET_UJ, SET_UJ, 3000], cut=[2])
    assert "energy_fault" not in kinds and now is not State.FAULT  # no second fault raised
    assert record.verify().ok


def test_a_low_reading_mid_emission_is_still_a_deviation(record: TreatmentRecord) -> None:
    kinds, now = _commit(record, [SET_UJ, 3000, SET_UJ], cut=[2])
    assert "energy_fault" in kinds and now is State.FAULT
    assert record.verify().ok
