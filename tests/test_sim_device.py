"""Conformance of the simulated device, driven with raw frames built by the protocol codec."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from typing import Any, cast

import numpy as np
import pytest

from drivers.protocol import Message, decode, encode, encode_frame, message
from drivers.protocol import messages as m
from drivers.protocol.codec import Value
from drivers.protocol.messages import Cause, DeviceFlag, ErrorCode, FaultCode, Interlock, State
from sim_hw.config import DEV_KEY, SimConfig
from sim_hw.device import SimDevice
from sim_hw.probe import RawHost, attach, make_spots, plan_checksum
from sim_hw.reports_ref import DELIVERED_MAX_SPOTS
from sim_hw.truth import GroundTruth

SPOTS = make_spots(1000)
CHECKSUM = plan_checksum(SPOTS)
#: A valid payload for every host request, for the state-table tests.
SAMPLE: dict[str, dict[str, int | bytes]] = {
    "AUTH_RESPONSE": {"mac": bytes(32)},
    "SET_CALIBRATION": {"field_size_um": 20000, "x_gain_ppm": 0, "y_gain_ppm": 0,
                        "x_offset_lsb": 0, "y_offset_lsb": 0},
    "SET_LIMITS": {"energy_max_uj": 100_000, "rep_rate_max_hz": 500, "avg_power_max_mw": 20_000},
    "SET_DEVICE_KEY": {"key": bytes(32)},
    "GALVO_JUMP": {"x_lsb": 0x8000, "y_lsb": 0x8100},
    "AIMING_BEAM": {"on": 1},
    "PULSE_SETTINGS": {"rep_rate_hz": 200},
    "LOAD_PLAN": {"pass_index": 0, "spot_count": 1000, "plan_checksum": CHECKSUM,
                  "first_index": 0},
    "ARM": {"plan_checksum": CHECKSUM},
    "RAISE_FAULT": {"fault_code": int(FaultCode.HOST_REQUEST)},
}
HOST_REQUESTS = [d for d in m.MESSAGES if d.direction == m.Direction.HOST]


def new_device(**overrides: Any) -> tuple[SimDevice, RawHost]:
    config = SimConfig(**{"pre_emission_ms": 0, "footswitch": True, **overrides})
    device = SimDevice(config)
    return device, attach(device)


def ok(host: RawHost, name: str, records: np.ndarray | None = None,
       **values: int | bytes) -> Message:
    reply = host.request(name, records, timeout_s=2.0, **values)  # named: values are fields
    assert reply.name != "NACK", (name, reply)
    return reply


def nack(host: RawHost, name: str, error: ErrorCode, detail: int | None = None,
         records: np.ndarray | None = None, **values: int | bytes) -> Message:
    reply = host.request(name, records, timeout_s=2.0, **values)  # named: values are fields
    assert reply.name == "NACK", (name, reply)
    assert (reply["refused_type"], ErrorCode(int(reply["error"]))) == (
        m.BY_NAME[name].type_id, error)
    if detail is not None:
        assert reply["detail"] == detail
    return reply


def load(host: RawHost, spots: np.ndarray = SPOTS, first_index: int = 0) -> None:
    ok(host, "LOAD_PLAN", pass_index=0, spot_count=len(spots), plan_checksum=plan_checksum(spots),
       first_index=first_index)


def stream(host: RawHost, spots: np.ndarray) -> None:
    for start in range(0, len(spots), m.MAX_BATCH_SPOTS):
        ok(host, "SPOT_BATCH", spots[start:start + m.MAX_BATCH_SPOTS])


def emitting(host: RawHost, spots: np.ndarray = SPOTS, buffered: int = 255) -> None:
    load(host, spots)
    stream(host, spots[:buffered])
    ok(host, "ARM", plan_checksum=plan_checksum(spots))
    ok(host, "START")


def drive_to(state: State) -> tuple[SimDevice, RawHost]:
    """A device in ``state`` with a plan loaded where the state allows one."""
    device, host = new_device()
    if state == State.FAULT:
        ok(host, "RAISE_FAULT", fault_code=int(FaultCode.HOST_REQUEST))
    elif state != State.STANDBY:
        load(host)
        ok(host, "SPOT_BATCH", SPOTS[:10])
        if state != State.READY:
            ok(host, "ARM", plan_checksum=CHECKSUM)
        if state in (State.EMITTING, State.PAUSED):
            ok(host, "START")
        if state == State.PAUSED:
            ok(host, "PAUSE")
    assert device.state == state
    host.events.clear()
    return device, host


def run_with_heartbeats(device: SimDevice, host: RawHost, seconds: float) -> None:
    """Let device time run while the host keeps the watchdog fed."""
    end_s = device.now_s + seconds
    while device.now_s < end_s:
        device.advance(min(end_s, device.now_s + device.config.heartbeat_ms / 1000))
        host.send("HEARTBEAT")


def status(host: RawHost) -> dict[str, int]:
    values = dict(ok(host, "STATUS_REQUEST").values)
    values.pop("uptime_ms")
    assert all(isinstance(v, int) for v in values.values())  # STATUS fields are integers
    return cast("dict[str, int]", values)


# -- replies, exact bytes ----------------------------------------------------------------------

def test_identify_reports_config_limits() -> None:
    device, host = new_device(serial="SIM-42", fw_version=(2, 3, 4))
    reply = ok(host, "IDENTIFY")
    assert reply["serial"] == b"SIM-42".ljust(16, b"\0")
    assert (reply["fw_major"], reply["fw_minor"], reply["fw_patch"]) == (2, 3, 4)
    cfg = device.config
    for name in ("field_size_um", "usable_lsb_min", "usable_lsb_max", "energy_min_uj",
                 "energy_max_uj", "pulse_min_us", "pulse_max_us", "rep_rate_max_hz",
                 "avg_power_max_mw", "buffer_spots", "max_stack", "watchdog_ms", "heartbeat_ms",
                 "pre_emission_ms", "jump_speed_um_per_ms", "settle_us"):
        assert reply[name] == getattr(cfg, name), name


def test_heartbeat_ack_exact_bytes() -> None:
    device, _ = new_device()
    device.receive(bytes.fromhex("00 04 01 02 02 01 01 05 ed e9 57 aa 00"))  # spec vector
    expected = encode(message("ACK", 2, acked_type=0x02, state=State.STANDBY, credits=4096,
                              value=0))
    assert device.transmit() == expected


def test_reply_comes_before_the_event_it_caused() -> None:
    _, host = new_device()
    host.send("LOAD_PLAN", records=None, seq=None, **SAMPLE["LOAD_PLAN"])
    got = host.poll()
    assert [msg.name for msg in got] == ["PLAN_LOADED", "EVT_STATE"]
    assert (got[1]["old_state"], got[1]["new_state"], got[1]["cause"]) == (
        State.STANDBY, State.READY, Cause.HOST_COMMAND)
    assert got[0]["credits"] == 4096 and got[0]["next_index"] == 0


# -- section 2.1: valid frame, invalid message --------------------------------------------------

def raw_reply(device: SimDevice, type_id: int, payload: bytes, version: int = 1
              ) -> tuple[ErrorCode, Value, Value]:
    host = attach(device)
    device.receive(encode_frame(type_id, 77, payload, version=version))
    (reply,) = host.poll()
    assert reply.name == "NACK" and reply.seq == 77
    return ErrorCode(int(reply["error"])), reply["detail"], reply["refused_type"]


@pytest.mark.parametrize(("type_id", "payload", "version", "expected"), [
    (0x01, b"", 2, (ErrorCode.BAD_VERSION, 1)),
    (0x7F, b"", 1, (ErrorCode.UNKNOWN_MESSAGE, 0x7F)),
    (0x80, bytes(8), 1, (ErrorCode.UNKNOWN_MESSAGE, 0x80)),  # device -> host type
    (0x91, bytes(4), 1, (ErrorCode.UNKNOWN_MESSAGE, 0x91)),
    (0x01, b"\x00", 1, (ErrorCode.BAD_LENGTH, 0)),
    (0x22, b"\x00\x00\x00", 1, (ErrorCode.BAD_LENGTH, 4)),
    (0x21, b"\x02\x00\x00\x00" + bytes(16), 1, (ErrorCode.BAD_LENGTH, 36)),
    (0x21, b"\x01\x00", 1, (ErrorCode.BAD_LENGTH, 4)),
    (0x11, b"\x02", 1, (ErrorCode.OUT_OF_RANGE, 2)),
    (0x29, b"\x07", 1, (ErrorCode.OUT_OF_RANGE, 7)),
    (0x21, b"\x00\x00\x00\x00", 1, (ErrorCode.OUT_OF_RANGE, 0)),  # count 0
    (0x21, b"\x01\x00\x01\x00" + bytes(16), 1, (ErrorCode.OUT_OF_RANGE, 1)),  # reserved
    (0x07, (500).to_bytes(4, "little") + bytes(12), 1, (ErrorCode.OUT_OF_RANGE, 500)),
    (0x12, bytes(4), 1, (ErrorCode.OUT_OF_RANGE, 0)),
])
def test_invalid_message_nacks(type_id: int, payload: bytes, version: int,
                               expected: tuple[ErrorCode, int]) -> None:
    device, _ = new_device()
    before = device.status_values()
    error, detail, refused = raw_reply(device, type_id, payload, version)
    assert (error, detail, refused) == (*expected, type_id)
    assert device.status_values() == before


def test_spot_record_out_of_table_range_names_the_spot() -> None:
    device, _ = drive_to(State.READY)
    spots = SPOTS[10:13].copy()
    spots["stack"][1] = 17  # table range 1..16: the codec refuses to encode it, so build raw
    payload = len(spots).to_bytes(2, "little") + bytes(2) + spots.tobytes()
    assert raw_reply(device, 0x21, payload) == (ErrorCode.OUT_OF_RANGE, 11, 0x21)


def test_damaged_frames_are_dropped_silently_and_counted() -> None:
    device, host = new_device()
    wire = bytearray(encode(message("IDENTIFY", 5)))
    wire[4] ^= 0x10
    device.receive(bytes(wire) + b"\x00\x17\x55\x00")
    assert device.transmit() == b""
    assert device.frames_dropped == 2
    ok(host, "IDENTIFY")  # resynchronised


# -- section 5: the state table -----------------------------------------------------------------

ILLEGAL = [(d.name, s) for d in HOST_REQUESTS for s in State if s not in d.legal_in]


@pytest.mark.parametrize(("name", "state"), ILLEGAL, ids=[f"{n}-{s.name}" for n, s in ILLEGAL])
def test_illegal_message_in_state_is_refused(name: str, state: State) -> None:
    device, host = drive_to(state)
    before = status(host)
    truth_before = device.fired_count
    values = SAMPLE.get(name, {})
    records = SPOTS[10:12] if name == "SPOT_BATCH" else None
    reply = nack(host, name, ErrorCode.ILLEGAL_STATE, detail=None, records=records, **values)
    assert reply["state"] == state
    assert status(host) == before
    assert host.events == [] and device.fired_count == truth_before


@pytest.mark.parametrize("name", [d.name for d in HOST_REQUESTS if d.service])
def test_service_command_without_service_mode(name: str) -> None:
    _, host = new_device()
    nack(host, name, ErrorCode.NOT_AUTHENTICATED, detail=None, records=None, **SAMPLE[name])


# -- section 8: service mode --------------------------------------------------------------------

def auth_begin(host: RawHost) -> bytes:
    """AUTH_BEGIN's nonce."""
    nonce = ok(host, "AUTH_BEGIN")["nonce"]
    assert isinstance(nonce, bytes)
    return nonce


def authenticate(host: RawHost, key: bytes = DEV_KEY) -> bytes:
    nonce = auth_begin(host)
    mac = hmac.new(key, m.AUTH_CONTEXT + nonce, hashlib.sha256).digest()
    ok(host, "AUTH_RESPONSE", mac=mac)
    return mac


def test_auth_replay_and_wrong_mac_are_refused() -> None:
    device, host = new_device()
    nack(host, "AUTH_RESPONSE", ErrorCode.AUTH_FAILED, mac=bytes(32))  # no challenge
    mac = authenticate(host)
    assert device.flags & DeviceFlag.SERVICE_MODE
    ok(host, "AUTH_END")
    assert not device.flags & DeviceFlag.SERVICE_MODE
    nack(host, "AUTH_RESPONSE", ErrorCode.AUTH_FAILED, mac=mac)  # replay of a used response
    nonce = auth_begin(host)
    nack(host, "AUTH_RESPONSE", ErrorCode.AUTH_FAILED, mac=mac)  # old response, new nonce
    right = hmac.new(DEV_KEY, m.AUTH_CONTEXT + nonce, hashlib.sha256).digest()
    nack(host, "AUTH_RESPONSE", ErrorCode.AUTH_FAILED, mac=right)  # challenge consumed
    assert not device.flags & DeviceFlag.SERVICE_MODE
    assert ok(host, "AUTH_BEGIN")["nonce"] != nonce


def test_service_commands_and_key_change() -> None:
    device, host = new_device()
    authenticate(host)
    nack(host, "SET_LIMITS", ErrorCode.OUT_OF_RANGE, 200_000,
         energy_max_uj=200_001, rep_rate_max_hz=500, avg_power_max_mw=20_000)
    nack(host, "SET_LIMITS", ErrorCode.OUT_OF_RANGE, 30_000,
         energy_max_uj=1000, rep_rate_max_hz=500, avg_power_max_mw=30_001)
    ok(host, "SET_LIMITS", records=None, **SAMPLE["SET_LIMITS"])
    reply = ok(host, "IDENTIFY")
    assert (reply["energy_max_uj"], reply["rep_rate_max_hz"], reply["avg_power_max_mw"]) == (
        100_000, 500, 20_000)
    nack(host, "PULSE_SETTINGS", ErrorCode.OUT_OF_RANGE, 501, rep_rate_hz=501)
    ok(host, "SET_CALIBRATION", records=None,
       **{**SAMPLE["SET_CALIBRATION"], "field_size_um": 30_000})
    assert ok(host, "IDENTIFY")["field_size_um"] == 30_000
    new_key = bytes(range(32))
    ok(host, "SET_DEVICE_KEY", key=new_key)
    ok(host, "AUTH_END")
    nonce = auth_begin(host)
    old_mac = hmac.new(DEV_KEY, m.AUTH_CONTEXT + nonce, hashlib.sha256).digest()
    nack(host, "AUTH_RESPONSE", ErrorCode.AUTH_FAILED, mac=old_mac)
    authenticate(host, new_key)
    device.reset()  # the key survives a reset; service mode does not
    assert not device.flags & DeviceFlag.SERVICE_MODE
    ok(host, "RESET_FAULT")
    authenticate(host, new_key)


def test_service_mode_ends_on_leaving_standby_and_on_silence() -> None:
    device, host = new_device()
    authenticate(host)
    load(host)
    assert not device.flags & DeviceFlag.SERVICE_MODE
    ok(host, "ABORT")
    authenticate(host)
    device.advance(0.499)
    assert device.flags & DeviceFlag.SERVICE_MODE
    device.advance(0.501)
    assert not device.flags & DeviceFlag.SERVICE_MODE
    assert device.state == State.STANDBY  # silence in STANDBY is not a fault


# -- plan, buffer and flow control --------------------------------------------------------------

def test_load_plan_checks() -> None:
    _, host = new_device()
    nack(host, "LOAD_PLAN", ErrorCode.OUT_OF_RANGE, 10,
         pass_index=0, spot_count=10, plan_checksum=1, first_index=10)
    reply = ok(host, "LOAD_PLAN", pass_index=3, spot_count=10, plan_checksum=1, first_index=4)
    assert (reply["pass_index"], reply["next_index"]) == (3, 4)
    nack(host, "SPOT_BATCH", ErrorCode.BAD_INDEX, 4, SPOTS[0:2])


def test_spot_batch_index_and_limit_checks() -> None:
    device, host = drive_to(State.READY)
    nack(host, "SPOT_BATCH", ErrorCode.BAD_INDEX, 10, SPOTS[11:13])
    gap = SPOTS[[10, 12]]
    nack(host, "SPOT_BATCH", ErrorCode.BAD_INDEX, 11, gap)
    cases = {"energy_uj": 200_001, "x_lsb": 1023, "y_lsb": 64512, "pulse_us": 9, "stack": 6}
    for name, value in cases.items():
        spots = SPOTS[10:14].copy()
        spots[name][2] = value
        nack(host, "SPOT_BATCH", ErrorCode.OUT_OF_RANGE, 12, spots)
    power = SPOTS[10:12].copy()
    power["energy_uj"][1] = 60_000
    power["stack"][1] = 5  # 60 mJ x 5 x 100 Hz = 30.0 W: at the limit, allowed
    ok(host, "SPOT_BATCH", power)
    nack(host, "PULSE_SETTINGS", ErrorCode.OUT_OF_RANGE, 101, rep_rate_hz=101)
    too_much = SPOTS[12:13].copy()
    too_much["energy_uj"] = 60_001
    too_much["stack"] = 5
    nack(host, "SPOT_BATCH", ErrorCode.OUT_OF_RANGE, 12, too_much)
    short = make_spots(3)
    ok(host, "LOAD_PLAN", pass_index=0, spot_count=3, plan_checksum=plan_checksum(short),
       first_index=0)
    nack(host, "SPOT_BATCH", ErrorCode.OUT_OF_RANGE, 3, make_spots(4))
    assert device.credits == device.config.buffer_spots


def test_oversize_batch_refused_whole_and_buffered_spots_kept() -> None:
    device, host = new_device(buffer_spots=300)
    load(host)
    assert ok(host, "SPOT_BATCH", SPOTS[:255])["credits"] == 45
    nack(host, "SPOT_BATCH", ErrorCode.BUFFER_FULL, 45, SPOTS[255:301])
    assert status(host)["credits"] == 45 and status(host)["next_index"] == 255
    reply = ok(host, "SPOT_BATCH", SPOTS[255:300])
    assert (reply["credits"], reply["value"]) == (0, 300)
    ok(host, "ARM", plan_checksum=CHECKSUM)
    ok(host, "START")
    run_with_heartbeats(device, host, 4.0)
    np.testing.assert_array_equal(device.ground_truth["index"], np.arange(300))


def test_duplicate_spot_batch_frame_never_fires_twice() -> None:
    device, host = new_device()
    emitting(host, buffered=0)
    wire = encode(message("SPOT_BATCH", 500, records=SPOTS[:50]))
    device.receive(wire)
    device.advance(0.1)
    device.receive(wire)
    device.advance(2.0)
    replies = [msg for msg in host.poll() if msg.seq == 500]
    assert [r.name for r in replies] == ["ACK", "NACK"]
    assert replies[1]["error"] == ErrorCode.BAD_INDEX and replies[1]["detail"] == 50
    np.testing.assert_array_equal(device.ground_truth["index"], np.arange(50))


# -- arming and emission ------------------------------------------------------------------------

def test_arm_and_start_checks() -> None:
    device, host = new_device(pre_emission_ms=2000, footswitch=False, door=False)
    load(host)
    nack(host, "ARM", ErrorCode.PLAN_MISMATCH, CHECKSUM, plan_checksum=CHECKSUM ^ 1)
    nack(host, "ARM", ErrorCode.INTERLOCK_OPEN, int(Interlock.KEY_ON | Interlock.ESTOP_RELEASED),
         plan_checksum=CHECKSUM)
    device.set_input(door="closed")
    device.advance(1.0)
    ok(host, "ARM", plan_checksum=CHECKSUM)
    assert device.flags & DeviceFlag.EMISSION_INDICATOR
    run_with_heartbeats(device, host, 0.4)
    nack(host, "START", ErrorCode.INDICATOR_DELAY, 1600)
    run_with_heartbeats(device, host, 1.599)
    nack(host, "START", ErrorCode.INDICATOR_DELAY, 1)
    run_with_heartbeats(device, host, 0.001)
    nack(host, "START", ErrorCode.FOOTSWITCH_UP)
    device.set_input(footswitch="down")
    ok(host, "START")
    assert device.flags & DeviceFlag.SHUTTER_OPEN


def fired_pass(count: int = 300) -> tuple[SimDevice, RawHost, np.ndarray]:
    """A device at 1 kHz that was sent ``count`` spots and has had a second to fire them."""
    device, host = new_device(rep_rate_hz=1000)
    spots = make_spots(count)
    emitting(host, spots, buffered=0)
    stream(host, spots)
    device.advance(1.0)
    return device, host, spots


def test_emission_timing_reports_and_completion() -> None:
    device, host, spots = fired_pass()
    truth = device.ground_truth
    np.testing.assert_array_equal(truth["index"], np.arange(300))
    np.testing.assert_array_equal(truth[["x_lsb", "y_lsb", "energy_uj"]],
                                  spots[["x_lsb", "y_lsb", "energy_uj"]])
    gaps_s = np.diff(truth["time_s"])
    assert gaps_s.min() >= 1e-3 - 1e-12  # never faster than the rep rate
    jump_lsb = np.maximum(np.abs(np.diff(spots["x_lsb"].astype(int))),
                          np.abs(np.diff(spots["y_lsb"].astype(int))))
    long_jumps = jump_lsb > 10_000  # row changes: galvo time exceeds the period
    assert (gaps_s[long_jumps] > 1e-3).all()
    ratio = truth["measured_uj"] / truth["energy_uj"]
    assert ratio.min() >= 0.98 and ratio.max() <= 1.02 and ratio.std() > 0
    events = host.poll()
    delivered = [e for e in events if e.name == "EVT_DELIVERED"]
    assert all(int(e["count"]) <= DELIVERED_MAX_SPOTS for e in delivered)
    reports: list[np.ndarray] = []
    for e in delivered:
        assert e.records is not None  # EVT_DELIVERED carries records
        reports.append(e.records)
    np.testing.assert_array_equal(np.concatenate(reports),
                                  truth[["index", "measured_uj"]].astype(m.DELIVERED_DTYPE))
    last_fired = np.array([truth["time_s"][truth["index"] == r["index"][-1]][0]
                           for r in reports])
    first_fired = np.array([truth["time_s"][truth["index"] == r["index"][0]][0]
                            for r in reports])
    assert (last_fired - first_fired <= 0.010 + 1e-9).all()
    final = events[-1]
    assert final.name == "EVT_STATE" and final["cause"] == Cause.PLAN_COMPLETE
    assert device.state == State.STANDBY and device.flags == DeviceFlag(0)
    assert status(host)["last_delivered"] == 299


def test_delivered_reports_are_the_codec_bytes() -> None:
    """The device packs EVT_DELIVERED straight from its layout: the same bytes as the codec."""
    device, _, _ = fired_pass()
    frames = [part for part in device.transmit().split(b"\0") if part]
    delivered = [f for f in frames if decode(f).name == "EVT_DELIVERED"]
    assert sum(int(decode(f)["count"]) for f in delivered) == 300
    assert all(encode(decode(f)) == b"\0" + f + b"\0" for f in delivered)


def test_ground_truth_keeps_firing_order_across_its_ways_of_recording() -> None:
    truth = GroundTruth()
    spots = make_spots(6)
    index, x_lsb, y_lsb, energy_uj, pulse_us, stack = (
        int(spots[0][f]) for f in ("index", "x_lsb", "y_lsb", "energy_uj", "pulse_us", "stack"))
    truth.append(index, x_lsb, y_lsb, energy_uj, pulse_us, stack, 11, 0.1, 0)
    truth.extend_fired(spots[1:4], np.array([12, 13, 14]), np.array([0.2, 0.3, 0.4]), 1)
    assert len(truth) == 4 and truth.array["index"].tolist() == [0, 1, 2, 3]
    truth.extend_fired(spots[4:], np.array([15, 16]), np.array([0.5, 0.6]), 2)
    rows = truth.array
    assert rows["measured_uj"].tolist() == [11, 12, 13, 14, 15, 16]
    assert rows["pass_index"].tolist() == [0, 1, 1, 1, 2, 2]
    assert rows["time_s"].tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    np.testing.assert_array_equal(rows["x_lsb"], spots["x_lsb"])


def test_pause_resume_disarm_abort() -> None:
    device, host = new_device()
    emitting(host)
    device.advance(0.05)
    ok(host, "PAUSE")
    fired = device.fired_count
    assert fired > 0 and not device.flags & DeviceFlag.SHUTTER_OPEN
    ok(host, "HEARTBEAT")
    device.advance(0.3)
    assert device.fired_count == fired
    ok(host, "RESUME")
    device.advance(0.4)
    assert device.fired_count > fired
    ok(host, "PAUSE")
    ok(host, "DISARM")
    left = status(host)["credits"]
    assert device.state == State.READY and left < 4096  # buffer kept
    ok(host, "ABORT")
    assert status(host)["credits"] == 4096
    assert not device.flags & DeviceFlag.PLAN_LOADED


def test_footswitch_release_pauses_and_needs_resume() -> None:
    device, host = new_device()
    emitting(host)
    device.advance(0.05)
    device.set_input(footswitch="up")
    assert device.state == State.PAUSED
    fired = device.fired_count
    device.set_input(footswitch="down")
    ok(host, "HEARTBEAT")
    device.advance(0.3)
    assert device.state == State.PAUSED and device.fired_count == fired
    changes = [(e["new_state"], e["cause"]) for e in host.events if e.name == "EVT_STATE"]
    assert changes[-1] == (State.PAUSED, Cause.FOOTSWITCH)
    device.set_input(footswitch="up")
    nack(host, "RESUME", ErrorCode.FOOTSWITCH_UP)


@pytest.mark.parametrize(("inputs", "code"), [
    ({"door": "open"}, FaultCode.INTERLOCK_OPEN),
    ({"interlock": "open"}, FaultCode.INTERLOCK_OPEN),
    ({"key": "off"}, FaultCode.KEY_OFF),
    ({"estop": "pressed"}, FaultCode.ESTOP),
])
def test_interlock_opened_mid_stream_stops_before_next_spot(inputs: dict[str, str],
                                                            code: FaultCode) -> None:
    device, host = new_device(rep_rate_hz=100)
    emitting(host)
    device.advance(0.105)  # spots fire every 10 ms: 11 have fired
    fired = device.ground_truth
    next_due = device.next_deadline()
    device.set_input(**inputs)
    assert device.state == State.FAULT and device.fault_code == code
    device.advance(5.0)
    np.testing.assert_array_equal(device.ground_truth, fired)
    assert next_due is not None and fired["time_s"][-1] < 0.105 < next_due
    names = [e.name for e in host.poll()]
    assert names[-3:] == ["EVT_INTERLOCK", "EVT_DELIVERED", "EVT_STATE"]
    report = status(host)
    assert report["credits"] == 4096 and report["next_index"] == len(fired)
    assert not report["flags"] & (DeviceFlag.EMISSION_INDICATOR | DeviceFlag.SHUTTER_OPEN)
    nack(host, "RESET_FAULT", ErrorCode.INTERLOCK_OPEN)
    device.set_input(door="closed", key="on", estop="released")
    ok(host, "RESET_FAULT")
    assert device.state == State.READY  # no automatic restart: the host must re-arm
    ok(host, "SPOT_BATCH", SPOTS[len(fired):len(fired) + 5])
    device.advance(6.0)
    assert device.fired_count == len(fired)


def test_estop_faults_in_standby_and_interlock_events_in_every_state() -> None:
    device, host = new_device()
    device.set_input(door="open")
    assert device.state == State.STANDBY
    device.set_input(estop="pressed")
    assert device.state == State.FAULT and device.fault_code == FaultCode.ESTOP
    bits = [(e["old"], e["new"]) for e in host.poll() if e.name == "EVT_INTERLOCK"]
    assert bits == [(0b1111, 0b1101), (0b1101, 0b1001)]


def test_watchdog_fires_within_its_timeout() -> None:
    device, host = new_device(watchdog_ms=500)
    emitting(host)
    ok(host, "HEARTBEAT")  # at t = 0
    device.advance(0.25)
    ok(host, "HEARTBEAT")
    device.advance(0.749)
    assert device.state == State.EMITTING
    device.advance(0.751)
    assert device.state == State.FAULT and device.fault_code == FaultCode.WATCHDOG
    assert device.ground_truth["time_s"].max() <= 0.75
    assert status(host)["fault_code"] == FaultCode.WATCHDOG


def test_refused_requests_do_not_feed_the_watchdog() -> None:
    """A host whose every request is refused is not in control: the watchdog runs out as if
    it were silent (refused frames used to feed it, keeping the laser firing)."""
    device, host = new_device(watchdog_ms=500, rep_rate_hz=100)
    emitting(host)
    ok(host, "HEARTBEAT")  # at t = 0: the last accepted request
    refused = [lambda: host.send("START"),  # ILLEGAL_STATE while emitting
               lambda: host.send("SET_LIMITS", None, None, **SAMPLE["SET_LIMITS"]),  # ILLEGAL_STATE
               lambda: device.receive(encode_frame(0x7F, 900, b"")),  # UNKNOWN_MESSAGE
               lambda: device.receive(encode_frame(0x02, 901, b"", version=2)),  # BAD_VERSION
               lambda: device.receive(encode_frame(0x02, 902, b"\0"))]  # BAD_LENGTH
    t_s = 0.0
    while device.state == State.EMITTING and t_s < 2.0:
        t_s += 0.05
        device.advance(t_s)
        refused[int(t_s * 20) % len(refused)]()
    assert device.state == State.FAULT and device.fault_code == FaultCode.WATCHDOG
    assert t_s == pytest.approx(0.5, abs=0.06)
    assert device.ground_truth["time_s"].max() <= 0.5
    nacks = [r for r in host.poll() if r.name == "NACK"]
    assert len(nacks) >= 9


def test_requests_held_behind_a_galvo_jump_feed_the_watchdog_from_their_arrival() -> None:
    device, host = new_device(watchdog_ms=500, jump_speed_um_per_ms=1)  # jumps of seconds
    seq = host.send("AUTH_BEGIN")
    nonce = bytes(host.reply(seq)["nonce"])
    ok(host, "AUTH_RESPONSE", mac=hmac.new(DEV_KEY, m.AUTH_CONTEXT + nonce,
                                           hashlib.sha256).digest())
    jump = host.send("GALVO_JUMP", x_lsb=0x8000 + 16384, y_lsb=0x8000)  # 5 s
    t_s = 0.0
    while t_s < 4.9:
        t_s = round(t_s + 0.1, 3)
        device.advance(t_s)
        host.send("HEARTBEAT")  # held behind the jump, taken up when it ends
    device.advance(5.2)
    assert host.reply(jump).name == "ACK"
    assert status(host)["flags"] & DeviceFlag.SERVICE_MODE  # kept by the held heartbeats
    device.advance(device.now_s + 0.6)  # silence, nothing held: service mode ends
    assert not status(host)["flags"] & DeviceFlag.SERVICE_MODE


def test_no_watchdog_fault_when_idle() -> None:
    device, _ = drive_to(State.READY)
    device.advance(60.0)
    assert device.state == State.READY


def test_raise_fault_in_any_state() -> None:
    for state in State:
        device, host = drive_to(state)
        ok(host, "RAISE_FAULT", fault_code=int(FaultCode.ENERGY_DEVIATION))
        assert device.state == State.FAULT
        if state != State.FAULT:
            assert device.fault_code == FaultCode.ENERGY_DEVIATION


# -- reset, resume, faults of the device ---------------------------------------------------------

def test_reset_mid_pass_restores_plan_and_never_refires() -> None:
    device, host = new_device(rep_rate_hz=200)
    emitting(host, buffered=510)
    device.advance(0.5)
    fired = device.fired_count
    device.reset()
    assert device.state == State.FAULT and device.fault_code == FaultCode.DEVICE_RESET
    host.poll()
    host.events.clear()
    report = status(host)
    assert host.events[0].name == "EVT_STATE" and host.events[0].seq == 0
    assert host.events[0]["cause"] == Cause.POWER_ON
    assert (report["plan_checksum"], report["last_delivered"], report["next_index"],
            report["credits"]) == (CHECKSUM, fired - 1, fired, 4096)
    ok(host, "RESET_FAULT")
    assert device.state == State.READY
    nack(host, "LOAD_PLAN", ErrorCode.BAD_INDEX, fired, **SAMPLE["LOAD_PLAN"])
    ok(host, "LOAD_PLAN", **{**SAMPLE["LOAD_PLAN"], "first_index": fired})
    nack(host, "LOAD_PLAN", ErrorCode.BAD_INDEX, fired, **SAMPLE["LOAD_PLAN"])
    ok(host, "ARM", plan_checksum=CHECKSUM)
    ok(host, "START")
    stream(host, SPOTS[fired:])
    run_with_heartbeats(device, host, 10.0)
    np.testing.assert_array_equal(device.ground_truth["index"], np.arange(1000))


def test_galvo_jump_reply_waits_for_settling() -> None:
    device, host = new_device()
    seq = host.send("GALVO_JUMP", x_lsb=0x8000 + 16384, y_lsb=0x8000)
    assert host.poll() == []
    distance_um = 16384 * 20_000 / 65536
    jump_us = math.ceil(distance_um * 1000 / 5000) + 150
    device.advance(jump_us / 1e6 - 1e-6)
    assert host.poll() == []
    device.advance(jump_us / 1e6)
    reply = host.reply(seq)
    assert reply.name == "ACK" and reply["value"] == jump_us
    seq = host.send("GALVO_JUMP", x_lsb=0x8000 + 16384, y_lsb=0x8000)
    device.advance(device.now_s)
    assert host.reply(seq)["value"] == 0  # already there
    nack(host, "GALVO_JUMP", ErrorCode.OUT_OF_RANGE, 64512, x_lsb=64512, y_lsb=0x8000)
    nack(host, "GALVO_JUMP", ErrorCode.OUT_OF_RANGE, 100, x_lsb=0x8000, y_lsb=100)


def test_stuck_galvo_faults() -> None:
    device, host = new_device()
    device.set_galvo_stuck(True)
    seq = host.send("GALVO_JUMP", x_lsb=0x9000, y_lsb=0x8000)
    device.advance(0.01)
    reply = host.reply(seq)
    assert (reply.name, reply["error"], reply["detail"]) == (
        "NACK", ErrorCode.FAULT_ACTIVE, FaultCode.GALVO_STUCK)
    assert device.state == State.FAULT
    nack(host, "RESET_FAULT", ErrorCode.FAULT_ACTIVE, FaultCode.GALVO_STUCK)
    device.set_galvo_stuck(False)
    ok(host, "RESET_FAULT")
    emitting(host)
    device.advance(0.05)
    device.set_galvo_stuck(True)
    fired = device.fired_count
    device.advance(1.0)
    assert device.fault_code == FaultCode.GALVO_STUCK and device.fired_count == fired


def test_over_temperature_faults_until_cooled() -> None:
    device, host = new_device()
    emitting(host)
    device.advance(0.05)
    device.set_temperature(device.config.over_temperature_dc)
    assert device.state == State.FAULT and device.fault_code == FaultCode.OVER_TEMPERATURE
    assert status(host)["flags"] & DeviceFlag.OVER_TEMPERATURE
    nack(host, "RESET_FAULT", ErrorCode.FAULT_ACTIVE, FaultCode.OVER_TEMPERATURE)
    device.set_temperature(300)
    ok(host, "RESET_FAULT")


def test_over_temperature_at_power_on_is_a_fault_before_anything_arms() -> None:
    """Was caught only at the first spot: the device started in STANDBY, took a plan and
    armed (emission indicator on) with the laser head over its limit."""
    device, host = new_device(temperature_dc=460, over_temperature_dc=450)
    assert (device.state, device.fault_code) == (State.FAULT, FaultCode.OVER_TEMPERATURE)
    report = status(host)
    (power_on,) = host.events
    assert (power_on.name, power_on.seq) == ("EVT_STATE", 0)
    assert (power_on["old_state"], power_on["new_state"], power_on["cause"],
            power_on["fault_code"]) == (State.FAULT, State.FAULT, Cause.POWER_ON,
                                        FaultCode.OVER_TEMPERATURE)
    assert int(report["flags"]) & DeviceFlag.OVER_TEMPERATURE
    nack(host, "LOAD_PLAN", ErrorCode.ILLEGAL_STATE, State.FAULT, None, **SAMPLE["LOAD_PLAN"])
    nack(host, "ARM", ErrorCode.ILLEGAL_STATE, State.FAULT, plan_checksum=CHECKSUM)
    nack(host, "RESET_FAULT", ErrorCode.FAULT_ACTIVE, FaultCode.OVER_TEMPERATURE)
    device.reset()  # a later start: DEVICE_RESET, and still refused while hot
    assert (device.state, device.fault_code) == (State.FAULT, FaultCode.DEVICE_RESET)
    nack(host, "RESET_FAULT", ErrorCode.FAULT_ACTIVE, FaultCode.OVER_TEMPERATURE)
    device.set_temperature(300)
    ok(host, "RESET_FAULT")
    assert device.state == State.STANDBY and not device.flags & DeviceFlag.OVER_TEMPERATURE
    emitting(host)
    device.advance(0.5)
    assert device.fired_count > 0


@pytest.mark.parametrize("fault", ["RAISE_FAULT", "estop", "overtemp", "watchdog"])
def test_a_fault_switches_the_aiming_beam_off(fault: str) -> None:
    """AIMING_BEAM is not legal in FAULT: a beam left on there went off only at a reset."""
    device, host = new_device(watchdog_ms=500)
    load(host)
    ok(host, "AIMING_BEAM", on=1)
    ok(host, "SPOT_BATCH", SPOTS[:10])
    ok(host, "ARM", plan_checksum=CHECKSUM)
    assert status(host)["flags"] & DeviceFlag.AIMING_BEAM
    if fault == "RAISE_FAULT":
        ok(host, "RAISE_FAULT", fault_code=int(FaultCode.HOST_REQUEST))
    elif fault == "estop":
        device.set_input(estop="pressed")
    elif fault == "overtemp":
        device.set_temperature(device.config.over_temperature_dc)
    else:
        device.advance(device.now_s + 0.6)
    assert device.state == State.FAULT
    assert not status(host)["flags"] & DeviceFlag.AIMING_BEAM
    nack(host, "AIMING_BEAM", ErrorCode.ILLEGAL_STATE, State.FAULT, on=1)


def test_the_aiming_beam_stays_on_while_emitting_and_goes_off_without_a_host() -> None:
    device, host = new_device(watchdog_ms=500, rep_rate_hz=100)
    ok(host, "AIMING_BEAM", on=1)
    run_with_heartbeats(device, host, 2.0)  # a host in control keeps it on, in STANDBY too
    load(host)
    stream(host, SPOTS[:300])
    ok(host, "ARM", plan_checksum=CHECKSUM)
    ok(host, "START")
    run_with_heartbeats(device, host, 1.0)
    assert device.state == State.EMITTING and device.fired_count > 50
    assert status(host)["flags"] & DeviceFlag.AIMING_BEAM  # it shows where the pulses land
    ok(host, "ABORT")
    assert status(host)["flags"] & DeviceFlag.AIMING_BEAM
    device.advance(device.now_s + 0.499)
    assert device.laser.aiming_beam
    device.advance(device.now_s + 0.002)  # no host in control: off, and no fault in STANDBY
    assert device.state == State.STANDBY and not device.laser.aiming_beam


def test_energy_drift_shifts_monitor_reading() -> None:
    device, host = new_device(noise_percent=0.0)
    device.set_drift(25.0)
    emitting(host, buffered=20)
    device.advance(1.0)
    truth = device.ground_truth
    np.testing.assert_array_equal(truth["measured_uj"], truth["energy_uj"] * 1.25)


def test_noise_is_seeded() -> None:
    runs = []
    for seed in (3, 3, 4):
        device, host = new_device(seed=seed)
        emitting(host, buffered=30)
        device.advance(1.0)
        runs.append(device.ground_truth["measured_uj"])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_ground_truth_of_a_million_spots_stays_cheap() -> None:
    truth = GroundTruth()
    for i in range(1_000_000):
        truth.append(i, 0x8000, 0x8000, 10_000, 200, 1, 10_000, i / 1000, 2)
    assert len(truth) == 1_000_000
    spots = truth.array
    assert spots is truth.array  # cached until the next spot
    assert (np.diff(spots["index"].astype(np.int64)) == 1).all()
    assert len(truth.indices(pass_index=2)) == 1_000_000 and len(truth.indices(0)) == 0


@pytest.mark.parametrize(("query", "says"), [
    ({"heartbeat_ms": "500"}, "heartbeat_ms=500 must be below watchdog_ms=500"),
    ({"energy_min_uj": "300000"}, "energy_min_uj=300000 must be at most energy_max_uj="),
    ({"usable_lsb_min": "64511"}, "usable_lsb_min=64511 must be below usable_lsb_max=64511"),
])
def test_a_config_whose_limits_contradict_each_other_is_refused(query: dict[str, str],
                                                                says: str) -> None:
    """IDENTIFY_REPLY's relations (firmware_protocol.md section 4): a host would refuse it."""
    with pytest.raises(ValueError, match=re.escape(says)):
        SimConfig.from_query(query)


@pytest.mark.parametrize(("field", "value", "lo"), [
    ("pre_emission_ms", -5, 0), ("watchdog_ms", 70_000, 1), ("buffer_spots", 2**32, 1),
    ("max_stack", 256, 1), ("buffer_spots", 0, 1), ("heartbeat_ms", 0, 1)])
def test_a_config_its_identify_reply_cannot_carry_is_refused(field: str, value: int,
                                                             lo: int) -> None:
    """Else the simulator's serving loop died encoding IDENTIFY_REPLY and the host timed out
    (or, with no spot buffer, a pass waited for ever while the device was armed)."""
    with pytest.raises(ValueError,
                       match=rf"{field}={value} outside {lo}\.\.\d+ \(IDENTIFY_REPLY\)"):
        SimConfig.from_query({field: str(value)})
    from drivers import TransportURLError, open_device

    with pytest.raises(TransportURLError, match=field):
        open_device(f"sim://?{field}={value}")
