"""firmware_protocol.md and drivers.protocol must agree: tables and test vectors, both ways;
the vectors written out in the text (plan checksum, HMAC, galvo) agree with co2scan's own
functions and the simulator, and so do statements of the text checked against the simulator."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import serial

from drivers import open_device
from drivers.protocol import FrameDecoder, Message, decode, encode, encode_frame, message
from drivers.protocol import messages as m
from drivers.protocol.codec import encode_payload
from drivers.protocol.errors import FrameError
from drivers.protocol.framing import decode_frame
from drivers.protocol.spec import BLOCK, RENDERERS, VECTOR, render_document
from drivers.spots import PassSpots
from drivers.spots import plan_checksum as host_plan_checksum
from sim_hw.config import DEV_KEY, SimConfig
from sim_hw.device import SimDevice
from sim_hw.probe import RawHost, attach, make_spots, plan_checksum
from sim_hw.tcp_server import serve_tcp
from tests.test_sim_transports import serial_host

DOC = Path(__file__).resolve().parents[1] / "firmware_protocol.md"
TEXT = DOC.read_text(encoding="utf-8")


def parse_vector(block: str) -> dict[str, str]:
    entries = dict(line.split(": ", 1) for line in block.strip().splitlines())
    return entries


VECTORS = [parse_vector(b) for b in VECTOR.findall(TEXT)]
FENCED = re.compile(r"```(\w+)\n(.*?)```", re.S)


def written_out(kind: str) -> dict[str, str]:
    """The one ```KIND block of the text (checksum, auth, galvo), parsed as a vector is."""
    (block,) = [parse_vector(body) for tag, body in FENCED.findall(TEXT) if tag == kind]
    return block


def test_generated_blocks_match_the_code() -> None:
    names = {match.group(2) for match in BLOCK.finditer(TEXT)}
    assert names == set(RENDERERS)
    assert render_document(TEXT) == TEXT, (
        "firmware_protocol.md is stale: run `python -m drivers.protocol.spec firmware_protocol.md`"
    )


def test_every_message_type_has_a_vector() -> None:
    assert {v["message"] for v in VECTORS} == set(m.BY_NAME)


def _expected(vector: dict[str, str]) -> Message:
    fields = json.loads(vector["fields"])
    definition = m.BY_NAME[vector["message"]]
    for f in definition.fields:
        if f.fmt.endswith("s"):
            fields[f.name] = bytes.fromhex(fields[f.name])
    records = None
    if "records" in vector:
        rows = json.loads(vector["records"])
        dtype = definition.record_dtype
        assert dtype is not None and dtype.names is not None  # structured records
        records = np.array([tuple(r[n] for n in dtype.names) for r in rows], dtype)
        fields.pop(definition.count)
    return message(vector["message"], int(vector["seq"]), records=records,
                   text=vector.get("text", ""), **fields)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["message"] for v in VECTORS])
def test_vector_encodes_to_its_wire_bytes(vector: dict[str, str]) -> None:
    assert encode(_expected(vector)) == bytes.fromhex(vector["wire"])


@pytest.mark.parametrize("vector", VECTORS, ids=[v["message"] for v in VECTORS])
def test_vector_wire_bytes_decode_to_its_fields(vector: dict[str, str]) -> None:
    wire = bytes.fromhex(vector["wire"])
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    assert decode(wire[1:-1]) == _expected(vector)


def test_crc_variant_is_the_documented_one() -> None:
    import zlib

    assert zlib.crc32(b"123456789") == 0xCBF43926
    assert "0xCBF43926" in TEXT


def test_a_vector_ends_in_a_full_cobs_group_and_its_other_form_is_refused() -> None:
    """Section 1.2: a frame whose last zero-free piece is 254 bytes long ends in the full group
    (0xFF and 254 bytes) with no 0x01 after it; the form with the 0x01 (an encoder that always
    closes with a final group) decodes to the same bytes but is not canonical: dropped."""
    full = [bytes.fromhex(v["wire"])[1:-1] for v in VECTORS]
    full = [e for e in full if len(e) > 255 and e[-255] == 0xFF and 0 not in e[-254:]]
    assert full, "no vector ends in a full 254-byte COBS group"
    encoded = full[0]
    other = encoded + b"\x01"
    with pytest.raises(FrameError, match="non-canonical"):
        decode_frame(other)
    decoder = FrameDecoder()
    assert decoder.feed(b"\0" + other + b"\0") == [] and decoder.errors == 1
    assert len(decoder.feed(b"\0" + encoded + b"\0")) == 1


def test_run_limit_is_max_wire_frame_without_delimiters() -> None:
    """Section 1.2: the longest valid run is MAX_FRAME + ceil(MAX_FRAME/254) bytes; a run longer
    than MAX_WIRE_FRAME bytes (delimiters not counted) is discarded whole, as one dropped frame,
    and the frame after it is received."""
    assert m.MAX_FRAME + -(-m.MAX_FRAME // 254) == 4123 == m.MAX_WIRE_FRAME - 3
    assert "4123" in TEXT and "4125" in TEXT
    good = bytes.fromhex(VECTORS[0]["wire"])
    for run in (m.MAX_WIRE_FRAME, m.MAX_WIRE_FRAME + 1):
        decoder = FrameDecoder()
        frames = decoder.feed(b"\0" + b"\x01" * run + good)
        assert len(frames) == 1 and decoder.errors == 1


# -- statements of the document the clean-room exercise found missing, checked against the
# -- reference device (sim_hw), so the document and the simulator cannot drift apart


def _sim(**overrides: Any) -> tuple[SimDevice, RawHost]:
    """A simulated device with no indicator delay, the footswitch down and a watchdog long
    enough for tests that advance its clock without heartbeats."""
    settings: dict[str, Any] = {"pre_emission_ms": 0, "footswitch": True, "watchdog_ms": 10_000}
    device = SimDevice(SimConfig(**{**settings, **overrides}))
    return device, attach(device)


def _ok(host: RawHost, name: str, records: np.ndarray | None = None,
        **values: int | bytes) -> Message:
    reply = host.request(name, records, timeout_s=2.0, **values)  # named: values are fields
    assert reply.name != "NACK", (name, reply)
    return reply


def _nack(host: RawHost, name: str, **values: int | bytes) -> tuple[m.ErrorCode, int]:
    reply = host.request(name, None, timeout_s=2.0, **values)
    assert reply.name == "NACK", (name, reply)
    return m.ErrorCode(int(reply["error"])), int(reply["detail"])


def test_status_keeps_the_pass_after_completion_and_abort() -> None:
    """Sections 4.3, 5 (rules 1, 3, 10, 11): 0 with no pass, the pass kept after completion
    and ABORT, 100 Hz before any PULSE_SETTINGS, START with an empty buffer, the causes."""
    device, host = _sim()
    status = _ok(host, "STATUS_REQUEST")
    assert [status[k] for k in ("pass_index", "plan_checksum", "spot_count", "next_index",
                                "delivered_count", "last_delivered", "rep_rate_hz")] == [
        0, 0, 0, 0, 0, m.NO_INDEX, 100]
    spots = make_spots(10)
    checksum = plan_checksum(spots)
    _ok(host, "LOAD_PLAN", pass_index=5, spot_count=10, plan_checksum=checksum, first_index=0)
    _ok(host, "ARM", plan_checksum=checksum)
    started = _ok(host, "START")  # nothing buffered: legal, the device waits for spots
    assert started["state"] == m.State.EMITTING
    device.advance(1.0)
    status = _ok(host, "STATUS_REQUEST")
    assert status["state"] == m.State.EMITTING and int(status["flags"]) & m.DeviceFlag.SHUTTER_OPEN
    _ok(host, "SPOT_BATCH", spots)
    device.advance(2.0)
    status = _ok(host, "STATUS_REQUEST")
    assert status["state"] == m.State.STANDBY
    assert not int(status["flags"]) & m.DeviceFlag.PLAN_LOADED
    assert [status[k] for k in ("pass_index", "plan_checksum", "spot_count", "next_index",
                                "delivered_count", "last_delivered")] == [
        5, checksum, 10, 10, 10, 9]
    causes = [(e["new_state"], e["cause"]) for e in host.events if e.name == "EVT_STATE"]
    assert causes == [(m.State.READY, m.Cause.HOST_COMMAND), (m.State.ARMED, m.Cause.HOST_COMMAND),
                      (m.State.EMITTING, m.Cause.HOST_COMMAND),
                      (m.State.STANDBY, m.Cause.PLAN_COMPLETE)]
    _ok(host, "LOAD_PLAN", pass_index=6, spot_count=10, plan_checksum=checksum, first_index=0)
    _ok(host, "ABORT")
    status = _ok(host, "STATUS_REQUEST")
    assert (status["pass_index"], status["plan_checksum"], status["spot_count"]) == (
        6, checksum, 10)
    device.reset()  # the pass record was erased by ABORT: no pass after the start
    status = _ok(host, "STATUS_REQUEST")
    assert (status["pass_index"], status["plan_checksum"], status["last_delivered"]) == (
        0, 0, m.NO_INDEX)


def test_nack_details_and_check_order() -> None:
    """Sections 2.1 and 2.2: the order of the checks and every detail the exercise missed."""
    device, host = _sim(pre_emission_ms=2000, footswitch=False)
    assert _nack(host, "SET_LIMITS", energy_max_uj=1, rep_rate_max_hz=1,
                 avg_power_max_mw=1) == (m.ErrorCode.NOT_AUTHENTICATED, 0)
    assert _nack(host, "AUTH_RESPONSE", mac=bytes(32)) == (m.ErrorCode.AUTH_FAILED, 0)
    seq = 900
    device.receive(encode_frame(m.BY_NAME["SPOT_BATCH"].type_id, seq, b"\x01\x00"))
    reply = host.reply(seq)
    assert (reply["error"], reply["detail"]) == (m.ErrorCode.BAD_LENGTH, 4)
    spots = make_spots(10)
    checksum = plan_checksum(spots)
    assert _nack(host, "LOAD_PLAN", pass_index=0, spot_count=10, plan_checksum=checksum,
                 first_index=10) == (m.ErrorCode.OUT_OF_RANGE, 10)
    _ok(host, "LOAD_PLAN", pass_index=0, spot_count=10, plan_checksum=checksum, first_index=0)
    assert _nack(host, "SET_LIMITS", energy_max_uj=1, rep_rate_max_hz=1,
                 avg_power_max_mw=1) == (m.ErrorCode.ILLEGAL_STATE, m.State.READY)
    device.set_input(door=False)
    assert _nack(host, "ARM", plan_checksum=checksum + 1) == (m.ErrorCode.PLAN_MISMATCH, checksum)
    device.set_input(door=True)
    _ok(host, "ARM", plan_checksum=checksum)
    device.advance(0.5005)
    assert _nack(host, "START") == (m.ErrorCode.INDICATOR_DELAY, 1500)  # 1499.5 ms, rounded up
    device.advance(2.0)
    assert _nack(host, "START") == (m.ErrorCode.FOOTSWITCH_UP, int(m.SAFETY_INTERLOCKS))


def _authenticate(host: RawHost, key: bytes = DEV_KEY) -> None:
    nonce = bytes(_ok(host, "AUTH_BEGIN")["nonce"])
    _ok(host, "AUTH_RESPONSE", mac=hmac.new(key, m.AUTH_CONTEXT + nonce, hashlib.sha256).digest())


# -- the vectors written out in the text: each computed here by the code that implements it --


def test_the_plan_checksum_vector_is_what_co2scan_sends_and_the_device_only_compares() -> None:
    """Section 9: the records' bytes are those SPOT_BATCH carries, their CRC is co2scan's
    plan_checksum; the device compares ARM's checksum with LOAD_PLAN's and never with the
    records (records that do not match it are accepted, and so is ARM)."""
    block = written_out("checksum")
    rows = json.loads(block["records"])
    names = m.SPOT_DTYPE.names
    assert names is not None
    records = np.array([tuple(r[n] for n in names) for r in rows], m.SPOT_DTYPE)
    header = m.BY_NAME["SPOT_BATCH"].struct.size
    payload = encode_payload(message("SPOT_BATCH", 0, records=records))
    assert payload[header:] == bytes.fromhex(block["bytes"])
    checksum = int(block["plan_checksum"])
    assert PassSpots.from_records(0, records).checksum == host_plan_checksum(records) == checksum
    assert f"`{checksum.to_bytes(4, 'little').hex(' ')}`" in TEXT
    _, host = _sim()
    _ok(host, "LOAD_PLAN", pass_index=0, spot_count=len(records), plan_checksum=checksum,
        first_index=0)
    other = records.copy()
    other["energy_uj"] += 1000
    _ok(host, "SPOT_BATCH", other)
    assert _ok(host, "ARM", plan_checksum=checksum)["state"] == m.State.ARMED


def test_the_hmac_vector_is_what_co2scan_sends_and_the_device_accepts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Section 8: challenged with the vector's nonce, the simulator accepts the vector's mac,
    and co2scan's Device.authenticate sends exactly that mac; the AUTH_RESPONSE vector carries
    it (its wire bytes are checked with every vector)."""
    block = written_out("auth")
    key, nonce, mac = (bytes.fromhex(block[k]) for k in ("key", "nonce", "mac"))
    assert key == DEV_KEY and bytes.fromhex(block["input"]) == m.AUTH_CONTEXT + nonce
    assert [json.loads(v["fields"])["mac"] for v in VECTORS
            if v["message"] == "AUTH_RESPONSE" and json.loads(v["fields"])["mac"] == mac.hex()]
    challenge = [v for v in VECTORS if v["message"] == "AUTH_CHALLENGE"]
    assert [json.loads(v["fields"])["nonce"] for v in challenge] == [nonce.hex()]

    device, host = _sim()
    monkeypatch.setattr(device._rng, "randbytes", lambda n: nonce)
    assert bytes(_ok(host, "AUTH_BEGIN")["nonce"]) == nonce
    assert _ok(host, "AUTH_RESPONSE", mac=mac)["acked_type"] == m.BY_NAME["AUTH_RESPONSE"].type_id
    assert device.flags & m.DeviceFlag.SERVICE_MODE

    sent: list[bytes] = []
    with open_device("sim://") as dev:
        monkeypatch.setattr(dev.simulator.device._device._rng, "randbytes", lambda n: nonce)
        request = dev.link.request

        def spy(name: str, *args: Any, **values: Any) -> Message:
            if name == "AUTH_RESPONSE":
                sent.append(bytes(values["mac"]))
            return request(name, *args, **values)

        monkeypatch.setattr(dev.link, "request", spy)
        dev.authenticate(key)
    assert sent == [mac]


def test_the_galvo_worked_example_is_what_the_device_computes() -> None:
    """Section 3.1: the simulator, calibrated so, drives the mirrors to the example's position
    (the binary64 rounding, not the exact half) and answers the jump after the example's
    time, with that time as ACK value."""
    block = written_out("galvo")
    calibration, limits, start, command, mirror = (
        json.loads(block[k]) for k in ("calibration", "device", "from", "command", "mirror"))
    jump_us = int(block["jump_us"])
    device, host = _sim(**limits)
    assert (device.galvo.x_lsb, device.galvo.y_lsb) == (start["x"], start["y"])  # power-on
    _authenticate(host)
    _ok(host, "SET_CALIBRATION", **calibration)
    _ok(host, "AUTH_END")
    x, y = device.galvo.corrected(command["x_lsb"], command["y_lsb"])
    assert (int(x), int(y)) == (mirror["x"], mirror["y"])
    sent_at = device.now_s
    seq = host.send("GALVO_JUMP", **command)
    device.advance(sent_at + (jump_us - 1) / 1e6)
    host.poll()
    assert seq not in host.replies
    device.advance(sent_at + jump_us / 1e6)
    reply = host.reply(seq)
    assert (reply.name, reply["value"]) == ("ACK", jump_us)
    assert (device.galvo.x_lsb, device.galvo.y_lsb) == (mirror["x"], mirror["y"])


def test_the_nack_without_text_is_the_devices_refusal_of_a_pause_at_close() -> None:
    """Section 7: a device in STANDBY refuses the PAUSE every close sends with this NACK (the
    simulator adds a text, which is for people only)."""
    (vector,) = [v for v in VECTORS if v["message"] == "NACK" and "text" not in v]
    expected = json.loads(vector["fields"])
    assert expected["refused_type"] == m.BY_NAME["PAUSE"].type_id
    device, host = _sim()
    seq = host.send("PAUSE", None, int(vector["seq"]))
    reply = host.reply(seq)
    assert reply.name == "NACK" and {k: int(reply[k]) for k in expected} == expected
    assert device.state == m.State.STANDBY


# -- statements of the text checked against the simulator --


def test_the_rate_period_counts_from_the_previous_spot_not_from_entering_emitting() -> None:
    """Section 5, rule 3: a spot fires no earlier than the previous spot + 1/rate and no
    earlier than entering EMITTING; entering EMITTING starts no period."""
    device, host = _sim(rep_rate_hz=20, noise_percent=0.0)  # 50 ms period, spots of 200 µs
    spots = make_spots(10)
    checksum = plan_checksum(spots)
    _ok(host, "LOAD_PLAN", pass_index=0, spot_count=10, plan_checksum=checksum, first_index=0)
    _ok(host, "ARM", plan_checksum=checksum)
    _ok(host, "START")
    mirror = device.galvo.corrected(spots["x_lsb"], spots["y_lsb"])
    jump_s = device.galvo.jump_time_us(int(mirror[0][0]), int(mirror[1][0])) / 1e6
    _ok(host, "SPOT_BATCH", spots)
    device.advance(0.06)
    times = device.ground_truth["time_s"]
    assert times.tolist() == pytest.approx([jump_s, jump_s + 0.05])  # not entry + 1/rate
    device.advance(times[1] + 0.001)  # its pulses over: PAUSE answered at once
    _ok(host, "PAUSE")
    _ok(host, "RESUME")  # entered again 1 ms after the spot
    device.advance(times[1] + 0.051)
    times = device.ground_truth["time_s"]
    assert times[2] == pytest.approx(times[1] + 0.05)  # the previous spot + 1/rate, not entry's
    _ok(host, "PAUSE")
    device.advance(times[2] + 0.2)
    _ok(host, "RESUME")  # long after the period: at the end of its jump
    device.advance(times[2] + 0.21)
    times = device.ground_truth["time_s"]
    assert times[2] + 0.2 < times[3] < times[2] + 0.202


def test_status_report_saturates_a_rate_above_65535() -> None:
    """Section 5, rule 11: STATUS_REPORT's u16 rep_rate_hz says 65535 for a higher rate in
    use, which is unchanged."""
    device, host = _sim(rep_rate_max_hz=100_000)
    _ok(host, "PULSE_SETTINGS", rep_rate_hz=70_000)
    assert _ok(host, "STATUS_REQUEST")["rep_rate_hz"] == 65535
    assert device.nv.rep_rate_hz == 70_000
    assert "reported as 65535" in TEXT


def test_one_host_at_a_time_and_a_disconnect_changes_no_device_state() -> None:
    """Section 1: a second connection is refused while the first is open, which keeps being
    served; a disconnect leaves the device as it was, and its watchdog still runs."""
    config = SimConfig(pre_emission_ms=0, watchdog_ms=400, heartbeat_ms=100)
    spots = make_spots(10)
    checksum = plan_checksum(spots)
    with serve_tcp(config) as served:
        with serial.serial_for_url(served.url, timeout=0) as first:
            host = serial_host(first)
            host.request("LOAD_PLAN", pass_index=0, spot_count=10, plan_checksum=checksum,
                         first_index=0)
            assert host.request("ARM", plan_checksum=checksum)["state"] == m.State.ARMED
            with socket.create_connection(("127.0.0.1", served.port), timeout=2) as second:
                assert second.recv(10) == b""  # refused: closed at once
            assert host.request("STATUS_REQUEST")["state"] == m.State.ARMED
        with serial.serial_for_url(served.url, timeout=0) as again:
            host = serial_host(again)
            assert host.request("STATUS_REQUEST")["state"] == m.State.ARMED
            time.sleep(0.6)  # nobody in control: the watchdog runs out
            status = host.request("STATUS_REQUEST")
            assert (status["state"], status["fault_code"]) == (m.State.FAULT,
                                                               m.FaultCode.WATCHDOG)
