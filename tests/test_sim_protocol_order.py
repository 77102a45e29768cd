"""The simulated device keeps firmware_protocol.md's ordering and e-stop rules, checked on the
raw frames it sends: the reply to a request goes out before the events the request caused
(section 5, rule 10), also for a GALVO_JUMP that faults the device; and the e-stop faults on
its press, not on an e-stop already pressed at power-on (rule 8)."""

from __future__ import annotations

from typing import Any

from drivers.protocol import FrameDecoder, Message, decode_payload
from drivers.protocol.messages import Cause, ErrorCode, FaultCode, Interlock, State
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
