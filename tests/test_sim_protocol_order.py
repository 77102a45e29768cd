"""The simulated device keeps firmware_protocol.md's ordering and e-stop rules, checked on the
raw frames it sends: the reply to a request goes out before the events the request caused
(section 5, rule 10), also for a GALVO_JUMP that faults the device; the e-stop faults on its
press, not on an e-stop already pressed at power-on (rule 8); a pause waits for the spot under
way to end before it is answered and announced (rule 5), while ABORT and faults cut that spot
at once (rules 7, 8)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from drivers.link import ACK_STATES
from drivers.protocol import FrameDecoder, Message, decode_payload
from drivers.protocol.messages import Cause, DeviceFlag, ErrorCode, FaultCode, Interlock, State
from sim_hw.config import SimConfig
from sim_hw.device import SimDevice
from sim_hw.probe import RawHost, attach, make_spots, plan_checksum

SPOTS = make_spots(20)
CHECKSUM = plan_checksum(SPOTS)


def new_device(**overrides: Any) -> tuple[SimDevice, RawHost]:
    device = SimDevice(SimConfig(**{"pre_emission_ms": 0, "footswitch": False, **overrides}))
    return device, attach(device)


def sent(device: SimDevice) -> list[Message]:
    """Everything the device has sent since the last call, in wire order."""
    return [decode_payload(frame) for frame in FrameDecoder().feed(device.transmit())]


def summary(msg: Message) -> tuple[Any, ...]:
    if msg.name == "NACK":
        return ("NACK", msg.seq, msg["refused_type"], ErrorCode(int(msg["error"])),
                State(int(msg["state"])), int(msg["detail"]))
    if msg.name == "ACK":
        return ("ACK", msg.seq, msg["acked_type"], State(int(msg["state"])))
    if msg.name == "EVT_STATE":
        return ("EVT_STATE", State(int(msg["old_state"])), State(int(msg["new_state"])),
                Cause(int(msg["cause"])), FaultCode(int(msg["fault_code"])))
    if msg.name == "EVT_INTERLOCK":
        return ("EVT_INTERLOCK", int(msg["old"]), int(msg["new"]))
    return (msg.name, msg.seq)


# -- the documented exception: pending delivered records go out before a STATUS_REPORT -------

def test_pending_delivered_records_precede_status_report_but_follow_a_pause_ack() -> None:
    device, host = new_device(footswitch=True, rep_rate_hz=1000, noise_percent=0.0)
    spots = make_spots(200)
    checksum = plan_checksum(spots)
    host.send("LOAD_PLAN", pass_index=0, spot_count=200, plan_checksum=checksum, first_index=0)
    host.send("SPOT_BATCH", spots[:100])
    host.send("ARM", plan_checksum=checksum)
    host.send("START")
    sent(device)
    device.advance(0.0035)  # 4 spots fired, their report not due yet (10 ms, 64 spots)
    assert sent(device) == []
    status = host.send("STATUS_REQUEST")
    got = sent(device)
    assert [(m.name, m.seq) for m in got] == [("EVT_DELIVERED", got[0].seq),
                                               ("STATUS_REPORT", status)]
    assert got[0]["count"] == got[1]["delivered_count"] == 4
    device.advance(0.0075)
    pause = host.send("PAUSE")  # a request's own flush goes out after its reply
    got = sent(device)
    assert [summary(m)[0] for m in got] == ["ACK", "EVT_DELIVERED", "EVT_STATE"]
    assert got[0].seq == pause and got[1]["count"] == 4


# -- bug 1: GALVO_JUMP to a stuck galvo -----------------------------------------------------------

def test_stuck_galvo_jump_nack_goes_out_before_the_fault_event() -> None:
    device, host = new_device()
    device.set_galvo_stuck(True)
    jump = host.send("GALVO_JUMP", x_lsb=0x9000, y_lsb=0x8000)
    beat = host.send("HEARTBEAT")  # pipelined behind the jump: handled once it is over
    assert sent(device) == []  # answered once the move should have completed
    device.advance(0.01)
    got = [summary(msg) for msg in sent(device)]
    assert got == [
        ("NACK", jump, 0x10, ErrorCode.FAULT_ACTIVE, State.FAULT, int(FaultCode.GALVO_STUCK)),
        ("EVT_STATE", State.STANDBY, State.FAULT, Cause.DEVICE_FAULT, FaultCode.GALVO_STUCK),
        ("ACK", beat, 0x02, State.FAULT),
    ]
    assert device.state == State.FAULT and device.fault_code == FaultCode.GALVO_STUCK


def test_stuck_galvo_zero_move_also_replies_first() -> None:
    """A jump to where the mirrors are takes 0 µs, and still finds the galvo stuck."""
    device, host = new_device()
    device.set_galvo_stuck(True)
    jump = host.send("GALVO_JUMP", x_lsb=0x8000, y_lsb=0x8000)
    device.advance(device.now_s)
    got = [summary(msg) for msg in sent(device)]
    assert [g[0] for g in got] == ["NACK", "EVT_STATE"]
    assert got[0][1] == jump and got[1][2] == State.FAULT


def test_good_galvo_jump_ack_and_no_event() -> None:
    device, host = new_device()
    jump = host.send("GALVO_JUMP", x_lsb=0x9000, y_lsb=0x8000)
    device.advance(0.01)
    assert [summary(msg) for msg in sent(device)] == [("ACK", jump, 0x10, State.STANDBY)]


# -- bug 2: an e-stop pressed at power-on ---------------------------------------------------------

def test_estop_pressed_at_power_on_is_no_fault_on_other_input_changes() -> None:
    device, _ = new_device(estop=False)
    assert device.state == State.STANDBY and device.fault_code == FaultCode.NONE
    pressed = int(Interlock.KEY_ON | Interlock.DOOR_CLOSED)
    device.set_input(footswitch="down")
    assert [summary(msg) for msg in sent(device)] == [
        ("EVT_INTERLOCK", pressed, pressed | Interlock.FOOTSWITCH_DOWN)]
    device.set_input(footswitch="up", key="off")
    device.set_input(key="on")
    assert device.state == State.STANDBY and device.fault_code == FaultCode.NONE
    assert [m.name for m in sent(device)] == ["EVT_INTERLOCK", "EVT_INTERLOCK"]


def test_estop_pressed_at_power_on_refuses_arm() -> None:
    device, host = new_device(estop=False, footswitch=True)
    host.request("LOAD_PLAN", pass_index=0, spot_count=len(SPOTS), plan_checksum=CHECKSUM,
                 first_index=0)
    assert host.request("SPOT_BATCH", SPOTS).name == "ACK"
    reply = host.request("ARM", plan_checksum=CHECKSUM)
    assert (reply.name, ErrorCode(int(reply["error"])), reply["detail"]) == (
        "NACK", ErrorCode.INTERLOCK_OPEN, int(device.interlocks))
    assert device.state == State.READY and device.fault_code == FaultCode.NONE
    assert device.fired_count == 0


def test_estop_faults_on_the_press_after_power_on_release() -> None:
    device, host = new_device(estop=False)
    device.set_input(estop="released")
    assert device.state == State.STANDBY
    sent(device)
    device.set_input(estop="pressed")
    assert [summary(msg) for msg in sent(device)] == [
        ("EVT_INTERLOCK", 0b0111, 0b0011),
        ("EVT_STATE", State.STANDBY, State.FAULT, Cause.INTERLOCK, FaultCode.ESTOP)]
    assert device.fault_code == FaultCode.ESTOP
    reply = host.request("RESET_FAULT")  # refused while the e-stop stays pressed
    assert (reply.name, ErrorCode(int(reply["error"]))) == ("NACK", ErrorCode.INTERLOCK_OPEN)
    device.set_input(estop="released")
    assert host.request("RESET_FAULT").name == "ACK"
    assert device.state == State.STANDBY


# -- rule 5: a pause waits for the spot under way; faults and ABORT cut it (rules 7, 8) ------------

SPOT_S = 0.008  # stack 4 x 2000 µs of pulses per spot


def mid_spot(rep_rate_hz: int = 20, into_s: float = 0.003,
             **overrides: Any) -> tuple[SimDevice, RawHost, float]:
    """A device emitting spots of 8 ms, ``into_s`` into its second spot; the device time at
    which that spot's last pulse ends."""
    device, host = new_device(footswitch=True, rep_rate_hz=rep_rate_hz, noise_percent=0.0,
                              **overrides)
    fire_into(device, host, make_spots(20, energy_uj=5000, pulse_us=2000, stack=4), 2, into_s)
    return device, host, float(device.ground_truth["time_s"][-1]) + SPOT_S


def fire_into(device: SimDevice, host: RawHost, spots: np.ndarray, spot: int,
              into_s: float) -> None:
    """Load, arm and start a pass of ``spots``, then advance ``into_s`` into its ``spot``-th
    spot (from 1), what the device sent until then read and dropped."""
    checksum = plan_checksum(spots)
    host.send("LOAD_PLAN", pass_index=0, spot_count=len(spots), plan_checksum=checksum,
              first_index=0)
    host.send("SPOT_BATCH", spots)
    host.send("ARM", plan_checksum=checksum)
    host.send("START")
    while device.fired_count < spot:
        deadline = device.next_deadline()
        assert deadline is not None
        device.advance(deadline)
    device.advance(device.now_s + into_s)
    sent(device)


def test_a_pause_is_answered_once_the_spot_under_way_has_ended() -> None:
    """The ACK (state PAUSED), the EVT_STATE and the flags come when the spot's last pulse has
    ended, not before; requests sent after the PAUSE wait behind it; the spot's record is
    flushed between the ACK and the EVT_STATE; no further spot fires."""
    device, host, end_s = mid_spot()
    pause = host.send("PAUSE")
    beat = host.send("HEARTBEAT")
    asked = host.send("STATUS_REQUEST")
    device.advance(end_s - 1e-6)
    assert sent(device) == []
    assert device.state == State.EMITTING and device.pausing
    assert device.flags & DeviceFlag.SHUTTER_OPEN and device.flags & DeviceFlag.LASER_ON
    device.advance(end_s)
    got = sent(device)
    assert [summary(m) for m in got] == [
        ("ACK", pause, 0x25, State.PAUSED), ("EVT_DELIVERED", got[1].seq),
        ("EVT_STATE", State.EMITTING, State.PAUSED, Cause.HOST_COMMAND, FaultCode.NONE),
        ("ACK", beat, 0x02, State.PAUSED), ("STATUS_REPORT", asked)]
    assert got[1].records is not None and got[1].records["index"].tolist() == [1]
    assert not int(got[4]["flags"]) & (DeviceFlag.SHUTTER_OPEN | DeviceFlag.LASER_ON)
    device.advance(end_s + 0.4)  # within the watchdog
    assert device.fired_count == 2 and device.state == State.PAUSED


def test_a_pause_with_no_spot_under_way_is_answered_at_once() -> None:
    device, host, end_s = mid_spot()
    device.advance(end_s + 0.011)  # between spots, the last one reported (10 ms after its end)
    assert [m.name for m in sent(device)] == ["EVT_DELIVERED"]
    pause = host.send("PAUSE")
    assert [summary(m) for m in sent(device)] == [
        ("ACK", pause, 0x25, State.PAUSED),
        ("EVT_STATE", State.EMITTING, State.PAUSED, Cause.HOST_COMMAND, FaultCode.NONE)]


def test_the_footswitch_released_mid_spot_pauses_once_the_spot_has_ended() -> None:
    """Requests are answered meanwhile (EMITTING); a PAUSE then waits for the same end and the
    cause stays the footswitch's; pressing the footswitch again does not cancel the pause."""
    device, host, end_s = mid_spot()
    device.set_input(footswitch="up")
    assert [m.name for m in sent(device)] == ["EVT_INTERLOCK"]
    beat = host.send("HEARTBEAT")
    assert [summary(m) for m in sent(device)] == [("ACK", beat, 0x02, State.EMITTING)]
    pause = host.send("PAUSE")
    device.set_input(footswitch="down")
    assert [m.name for m in sent(device)] == ["EVT_INTERLOCK"]
    device.advance(end_s)
    got = sent(device)
    assert [summary(m) for m in got] == [
        ("ACK", pause, 0x25, State.PAUSED), ("EVT_DELIVERED", got[1].seq),
        ("EVT_STATE", State.EMITTING, State.PAUSED, Cause.FOOTSWITCH, FaultCode.NONE)]
    device.advance(end_s + 1.0)
    assert device.fired_count == 2


def test_a_fault_cuts_the_spot_a_pause_waits_for() -> None:
    """The door opens mid-spot while a PAUSE waits: at once the PAUSE is answered (state
    FAULT), the records flushed, the fault announced; then the requests held behind it."""
    device, host, end_s = mid_spot()
    pause = host.send("PAUSE")
    beat = host.send("HEARTBEAT")
    device.set_input(door="open")
    got = sent(device)
    assert [summary(m) for m in got] == [
        ("EVT_INTERLOCK", 0b1111, 0b1101), ("ACK", pause, 0x25, State.FAULT),
        ("EVT_DELIVERED", got[2].seq),
        ("EVT_STATE", State.EMITTING, State.FAULT, Cause.INTERLOCK, FaultCode.INTERLOCK_OPEN),
        ("ACK", beat, 0x02, State.FAULT)]
    # the host's link takes that ACK as the PAUSE's reply, not as an invalid one
    assert State(int(got[1]["state"])) in ACK_STATES["PAUSE"]
    device.advance(end_s + 0.1)
    assert sent(device) == [] and device.fired_count == 2


@pytest.mark.parametrize("stop", ["ABORT", "RAISE_FAULT", "estop"])
def test_abort_and_faults_cut_the_spot_under_way(stop: str) -> None:
    """Emission ends at once, the reply (when a request caused it) before the flushed records
    and the EVT_STATE (rule 10); the cut spot's pulses end there, so the mirrors are free: a
    pass started at once fires without waiting for the rest of the cut spot (1000 Hz: the
    period is shorter than a spot)."""
    device, host, end_s = mid_spot(rep_rate_hz=1000, into_s=0.001)
    if stop == "estop":
        device.set_input(estop="pressed")
    else:
        values = {"fault_code": int(FaultCode.HOST_REQUEST)} if stop == "RAISE_FAULT" else {}
        host.send(stop, None, None, **values)
    got = [summary(m)[0] for m in sent(device)]
    first = "EVT_INTERLOCK" if stop == "estop" else "ACK"
    assert got == [first, "EVT_DELIVERED", "EVT_STATE"]
    assert not device.laser.shutter_open
    spots = make_spots(20, energy_uj=5000, pulse_us=2000, stack=4)
    checksum = plan_checksum(spots)
    if stop == "estop":
        device.set_input(estop="released")
    if device.state == State.FAULT:
        assert host.request("RESET_FAULT").name == "ACK"
    else:
        host.request("LOAD_PLAN", pass_index=1, spot_count=20, plan_checksum=checksum,
                     first_index=2)
    assert host.request("SPOT_BATCH", spots[2:]).name == "ACK"
    assert host.request("ARM", plan_checksum=checksum).name == "ACK"
    assert host.request("START").name == "ACK"
    device.advance(end_s + 0.05)
    times = device.ground_truth["time_s"]
    assert len(times) > 2 and times[2] < end_s  # not after the cut spot's notional end


# -- rule 6: the pass completes once its last spot's last pulse has ended ----------------------

LONG_SPOT_S = 0.016  # stack 8 x 2000 µs of pulses per spot


def in_last_spot(into_s: float = 0.004) -> tuple[SimDevice, RawHost, float]:
    """A device firing a pass of 3 spots of 16 ms, ``into_s`` into its last spot (nothing
    sent since); the device time at which that spot's last pulse ends."""
    device, host = new_device(footswitch=True, rep_rate_hz=20, noise_percent=0.0, max_stack=8)
    fire_into(device, host, make_spots(3, energy_uj=5000, pulse_us=2000, stack=8), 3, into_s)
    return device, host, float(device.ground_truth["time_s"][-1]) + LONG_SPOT_S


def test_the_pass_completes_when_its_last_spot_has_ended_not_when_it_fires() -> None:
    """Until the last spot's last pulse has ended the state is EMITTING, with the shutter open
    and its flags, and requests are answered in EMITTING; the EVT_STATE to STANDBY
    (PLAN_COMPLETE) comes at the spot's start + stack x pulse_us."""
    device, host, end_s = in_last_spot()
    assert device.state == State.EMITTING and device.completing and not device.pausing
    assert device.flags & DeviceFlag.SHUTTER_OPEN and device.flags & DeviceFlag.LASER_ON
    assert device.laser.shutter_open
    beat = host.send("HEARTBEAT")
    assert [summary(m) for m in sent(device)] == [("ACK", beat, 0x02, State.EMITTING)]
    device.advance(end_s - 1e-6)
    assert sent(device) == []  # the last spot's record waits for its end (section 6.1)
    assert device.state == State.EMITTING
    assert device.next_deadline() == pytest.approx(end_s, abs=1e-9)
    device.advance(end_s)
    got = sent(device)
    assert [summary(m) for m in got] == [
        ("EVT_DELIVERED", got[0].seq),
        ("EVT_STATE", State.EMITTING, State.STANDBY, Cause.PLAN_COMPLETE, FaultCode.NONE)]
    assert got[0].records is not None and got[0].records["index"].tolist() == [2]
    assert device.state == State.STANDBY and device.flags == DeviceFlag(0)
    assert not device.laser.shutter_open and device.fired_count == 3


def test_a_pause_during_the_last_spot_waits_for_it_and_is_refused_in_standby() -> None:
    """The pass completes (PLAN_COMPLETE, no pause); the PAUSE, and the requests after it, wait
    for the spot's end and are taken up after the EVT_STATE: PAUSE is not legal in STANDBY."""
    device, host, end_s = in_last_spot()
    pause = host.send("PAUSE")
    beat = host.send("HEARTBEAT")
    device.advance(end_s - 1e-6)
    assert sent(device) == [] and device.state == State.EMITTING
    device.advance(end_s)
    got = sent(device)
    assert [summary(m) for m in got] == [
        ("EVT_DELIVERED", got[0].seq),
        ("EVT_STATE", State.EMITTING, State.STANDBY, Cause.PLAN_COMPLETE, FaultCode.NONE),
        ("NACK", pause, 0x25, ErrorCode.ILLEGAL_STATE, State.STANDBY, int(State.STANDBY)),
        ("ACK", beat, 0x02, State.STANDBY)]


def test_the_footswitch_released_during_the_last_spot_does_not_pause_the_pass() -> None:
    device, _, end_s = in_last_spot()
    device.set_input(footswitch="up")
    assert [m.name for m in sent(device)] == ["EVT_INTERLOCK"]
    assert device.state == State.EMITTING and device.laser.shutter_open
    device.advance(end_s)
    assert [summary(m) for m in sent(device)][-1] == (
        "EVT_STATE", State.EMITTING, State.STANDBY, Cause.PLAN_COMPLETE, FaultCode.NONE)


@pytest.mark.parametrize("held", [False, True])
def test_an_estop_during_the_last_spot_cuts_it_and_faults_with_every_spot_fired(
        held: bool) -> None:
    """The spot is cut (counted as fired, rule 7), the device goes to FAULT, not STANDBY, with
    the plan still loaded and nothing left to fire; a PAUSE that waited is then refused."""
    device, host, end_s = in_last_spot()
    pause = host.send("PAUSE") if held else None
    device.set_input(estop="pressed")
    got = [summary(m) for m in sent(device)]
    assert got[0] == ("EVT_INTERLOCK", 0b1111, 0b1011)
    assert ("EVT_STATE", State.EMITTING, State.FAULT, Cause.INTERLOCK, FaultCode.ESTOP) in got
    assert ("EVT_STATE", State.EMITTING, State.STANDBY, Cause.PLAN_COMPLETE,
            FaultCode.NONE) not in got
    if held:
        assert got[-1] == ("NACK", pause, 0x25, ErrorCode.ILLEGAL_STATE, State.FAULT,
                           int(State.FAULT))
    assert device.state == State.FAULT and not device.laser.shutter_open
    device.advance(end_s + 0.1)
    assert sent(device) == [] and device.fired_count == 3
    report = host.request("STATUS_REQUEST")
    assert int(report["delivered_count"]) == 3 and int(report["last_delivered"]) == 2
    assert int(report["next_index"]) == 3
    assert int(report["flags"]) & DeviceFlag.PLAN_LOADED
    device.set_input(estop="released")
    assert host.request("RESET_FAULT").name == "ACK" and device.state == State.READY


def test_abort_during_the_last_spot_cuts_it() -> None:
    device, host, end_s = in_last_spot()
    abort = host.send("ABORT")
    got = [summary(m) for m in sent(device)]
    assert got[0] == ("ACK", abort, 0x27, State.STANDBY)
    assert got[-1] == ("EVT_STATE", State.EMITTING, State.STANDBY, Cause.HOST_COMMAND,
                       FaultCode.NONE)
    assert not device.laser.shutter_open
    device.advance(end_s + 0.1)
    assert sent(device) == []


def test_the_report_deadline_counts_from_the_spots_last_pulse() -> None:
    """Section 6.1: 10 ms after the end of the first unreported spot's last pulse (the energy
    monitor knows the stack's total only then), not after its start."""
    device, host = new_device(footswitch=True, rep_rate_hz=20, noise_percent=0.0, max_stack=8)
    spots = make_spots(3, energy_uj=5000, pulse_us=2000, stack=8)
    checksum = plan_checksum(spots)
    host.send("LOAD_PLAN", pass_index=0, spot_count=3, plan_checksum=checksum, first_index=0)
    host.send("SPOT_BATCH", spots)
    host.send("ARM", plan_checksum=checksum)
    host.send("START")
    sent(device)
    device.advance(0.001)
    assert device.fired_count == 1
    due_s = float(device.ground_truth["time_s"][0]) + LONG_SPOT_S + 0.010
    device.advance(due_s - 1e-6)
    assert sent(device) == [] and device.fired_count == 1
    device.advance(due_s)
    got = sent(device)
    assert [m.name for m in got] == ["EVT_DELIVERED"]
    assert got[0].records is not None and got[0].records["index"].tolist() == [0]
