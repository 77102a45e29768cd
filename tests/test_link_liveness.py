"""Liveness on the link (firmware_protocol.md section 7): the heartbeats keep the gap between
requests the device accepts within ``heartbeat_ms``, measured on the wire; a device the host no
longer hears is lost within its watchdog period; and the state an ACK reports (section 4) is
one its request can lead to."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import pytest

from drivers import DeviceLost, InvalidReply, open_device
from drivers.device import Device
from drivers.link import ACK_STATES, Link
from drivers.protocol import encode, message
from drivers.protocol.framing import FrameDecoder
from drivers.protocol.messages import BY_ID, BY_NAME, Direction, ErrorCode, FaultCode, State
from tests.test_drivers import begin, collect, line_pass

HEARTBEAT = BY_NAME["HEARTBEAT"].type_id


@dataclass
class Wire:
    """What crossed a link: each request written (when, seq, name) and the seqs the device
    accepted (answered with anything but NACK)."""

    sent: list[tuple[float, int, str]] = field(default_factory=list)
    accepted: set[int] = field(default_factory=set)
    refused: set[int] = field(default_factory=set)
    _out: FrameDecoder = field(default_factory=FrameDecoder)
    _in: FrameDecoder = field(default_factory=FrameDecoder)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wrote(self, data: bytes) -> None:
        now = time.monotonic()
        with self._lock:
            for frame in self._out.feed(data):
                self.sent.append((now, frame.seq, BY_ID[frame.type_id].name))

    def read(self, data: bytes) -> None:
        with self._lock:
            for frame in self._in.feed(data):
                definition = BY_ID.get(frame.type_id)
                if definition is not None and definition.direction is Direction.DEVICE:
                    (self.refused if definition.name == "NACK" else self.accepted).add(frame.seq)

    def accepted_gaps(self, since: float, until: float) -> list[float]:
        """Gaps between consecutive accepted requests sent within [since, until]."""
        with self._lock:
            times = [t for t, seq, _ in self.sent if seq in self.accepted and since <= t <= until]
        return [b - a for a, b in pairwise(times)]


class Tapped:
    """A transport passing everything through, noting it on a :class:`Wire`."""

    def __init__(self, inner: object, wire: Wire) -> None:
        self.inner = inner
        self.wire = wire

    def write(self, data: bytes) -> None:
        self.wire.wrote(data)
        self.inner.write(data)  # type: ignore[attr-defined]

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        data: bytes = self.inner.read(max_bytes, timeout_s)  # type: ignore[attr-defined]
        self.wire.read(data)
        return data

    def close(self) -> None:
        self.inner.close()  # type: ignore[attr-defined]


def tap(dev: Device) -> Wire:
    wire = Wire()
    dev.link.transport = Tapped(dev.link.transport, wire)
    return wire


@pytest.fixture(params=[(400, 500), (499, 500)], ids=["hb400-wd500", "hb499-wd500"])
def slow_heartbeat(request: pytest.FixtureRequest) -> Iterator[Device]:
    heartbeat_ms, watchdog_ms = request.param
    with open_device(f"sim://?clock=realtime&footswitch=down&seed=3&pre_emission_ms=300"
                     f"&rep_rate_max_hz=1000&heartbeat_ms={heartbeat_ms}"
                     f"&watchdog_ms={watchdog_ms}") as dev:
        yield dev


def test_a_device_whose_heartbeat_is_close_to_its_watchdog_completes_a_pass(
        slow_heartbeat: Device) -> None:
    """heartbeat_ms 400 (or 499) of a 500 ms watchdog is valid (heartbeat_ms < watchdog_ms).
    The host sent a heartbeat once heartbeat_ms had passed since its last write, checked every
    heartbeat_ms / 2: gaps of heartbeat_ms to 1.5 x heartbeat_ms (0.507 s measured at 400
    ms), and the device faulted WATCHDOG mid-pass. It now sends one heartbeat_ms / 2 after the
    last accepted request: on the wire no gap exceeds heartbeat_ms, and the pass completes."""
    dev = slow_heartbeat
    wire = tap(dev)
    heartbeat_s = dev.info.limits.heartbeat_ms / 1000
    assert heartbeat_s == dev.link.heartbeat_s
    spots = line_pass(dev, 1500)  # 1.5 s at 1 kHz, after a 0.3 s pre-emission delay
    armed_at = time.monotonic()
    begin(dev, spots)
    _, _, last = collect(dev, spots)
    ended_at = time.monotonic()
    assert last.done and last.reason == "complete", last
    status = dev.status()
    assert status.state is State.STANDBY and status.fault_code is FaultCode.NONE, status
    gaps = wire.accepted_gaps(armed_at, ended_at)
    assert len(gaps) >= 4
    assert max(gaps) <= heartbeat_s, f"largest gap {max(gaps):.3f} s"


class RefusingDevice:
    """A device behind a transport: HEARTBEAT gets an ACK, any other request a NACK."""

    def __init__(self) -> None:
        self.replies: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.decoder = FrameDecoder()

    def write(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            if frame.type_id == HEARTBEAT:
                reply = message("ACK", frame.seq, acked_type=HEARTBEAT, state=State.EMITTING,
                                credits=0, value=0)
            else:
                reply = message("NACK", frame.seq, refused_type=frame.type_id,
                                error=ErrorCode.ILLEGAL_STATE, state=State.EMITTING, detail=0,
                                text="refused for the test")
            self.replies.put(encode(reply))

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        try:
            return self.replies.get(timeout=timeout_s)
        except queue.Empty:
            return b""

    def close(self) -> None:
        pass


def test_refused_requests_do_not_put_off_the_heartbeat() -> None:
    """A NACKed request does not feed the device's watchdog (section 7), but the heartbeat
    loop counted every write: a host sending only refused requests, one every 50 ms, sent no
    heartbeat at all for as long as it went on. Only accepted requests count now: the
    heartbeats go on, never more than heartbeat_s apart."""
    wire = Wire()
    link = Link(Tapped(RefusingDevice(), wire), heartbeat_s=0.2)
    try:
        time.sleep(0.1)
        since = time.monotonic()
        while time.monotonic() < since + 1.2:
            handles = link.send([message("STATUS_REQUEST")])
            time.sleep(0.05)
            link.forget(handles)
        until = time.monotonic()
    finally:
        link.close()
    assert wire.refused
    beats = [t for t, _, name in wire.sent if name == "HEARTBEAT" and since <= t <= until]
    assert len(beats) >= 4
    gaps = wire.accepted_gaps(since, until)
    assert gaps and max(gaps) <= 0.2, f"largest gap {max(gaps):.3f} s"


class FakeDevice:
    """A device behind a transport that ACKs every request, ``delay_s`` after it, until
    ``gag()``: from then on nothing reaches the host, though the device still hears it (what
    it heard is in ``heard``, with when)."""

    def __init__(self, delay_s: float = 0.0, state: State = State.EMITTING) -> None:
        self.delay_s = delay_s
        self.state = state  # what its ACKs report
        self.decoder = FrameDecoder()
        self.heard: list[tuple[float, str]] = []
        self.gagged_at: float | None = None
        self._replies: list[tuple[float, bytes]] = []
        self._ready = threading.Condition()

    def gag(self) -> None:
        with self._ready:
            self.gagged_at = time.monotonic()
            self._replies.clear()

    def heard_since(self, since: float) -> list[str]:
        with self._ready:
            return [name for t, name in self.heard if t >= since]

    def write(self, data: bytes) -> None:
        now = time.monotonic()
        with self._ready:
            for frame in self.decoder.feed(data):
                self.heard.append((now, BY_ID[frame.type_id].name))
                if self.gagged_at is None:
                    reply = message("ACK", frame.seq, acked_type=frame.type_id,
                                    state=self.state, credits=0, value=0)
                    self._replies.append((now + self.delay_s, encode(reply)))
            self._ready.notify_all()

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        with self._ready:
            while True:
                now = time.monotonic()
                due = [wire for at, wire in self._replies if at <= now]
                if due:
                    self._replies = self._replies[len(due):]
                    return b"".join(due)
                if now >= deadline:
                    return b""
                wake = min([deadline] + [at for at, _ in self._replies[:1]])
                self._ready.wait(wake - now)

    def close(self) -> None:
        pass


def answered(link: Link) -> None:
    """The device answers a first request, as IDENTIFY at open: the heartbeats start."""
    link.send([message("HEARTBEAT")])[0].wait(5.0)


def test_a_device_no_longer_heard_is_lost_within_its_watchdog_and_told_to_stop() -> None:
    """The heartbeats' ACKs were dropped unread: a device that still heard the host (and
    fired, fed by the heartbeats) while the host heard nothing went unnoticed until a request
    timed out. Now a device silent for its watchdog period while it owes replies is lost for
    every user of the link; PAUSE and DISARM go out unanswered and the heartbeats stop."""
    device = FakeDevice()
    watchdog_s, heartbeat_s = 0.3, 0.1
    link = Link(device, heartbeat_s=heartbeat_s, watchdog_s=watchdog_s)
    events = link.queue_events()
    try:
        answered(link)
        time.sleep(0.5)
        assert link.lost is None and device.heard_since(0.0).count("HEARTBEAT") >= 5
        device.gag()
        assert device.gagged_at is not None
        deadline = device.gagged_at + watchdog_s + 2.0  # generous: a loaded machine
        while link.lost is None and time.monotonic() < deadline:
            time.sleep(0.01)
        lost_after_s = time.monotonic() - device.gagged_at
        assert link.lost is not None, "no loss noticed"
        assert "nothing from the device" in str(link.lost)
        assert lost_after_s >= watchdog_s - heartbeat_s  # not before a watchdog of silence
        assert isinstance(events.get(timeout=1.0), DeviceLost)
        with pytest.raises(DeviceLost):
            link.request("STATUS_REQUEST")
        time.sleep(2 * heartbeat_s)
        after_gag = device.heard_since(device.gagged_at)
        assert after_gag[-2:] == ["PAUSE", "DISARM"]  # nothing after them: no heartbeat
        assert set(after_gag[:-2]) <= {"HEARTBEAT"}
    finally:
        link.close()


def test_a_device_that_answers_late_but_within_its_watchdog_is_not_lost() -> None:
    """Replies 0.3 s late (the device promises 20 ms) with a 1 s watchdog: never a watchdog
    period without a frame, so the link stays up."""
    link = Link(FakeDevice(delay_s=0.3), heartbeat_s=0.1, watchdog_s=1.0)
    try:
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            link.request("STATUS_REQUEST", timeout_s=2.0)
        assert link.lost is None
    finally:
        link.close()


def test_a_silent_device_that_owes_nothing_is_not_lost() -> None:
    """The lease holder hangs while the device may fire: no heartbeat goes out (so that its
    watchdog runs out), nothing is owed, and the device's silence is no loss of the link."""
    device = FakeDevice()
    link = Link(device, heartbeat_s=0.05, watchdog_s=0.2)
    try:
        answered(link)
        time.sleep(0.2)
        assert device.heard_since(0.0).count("HEARTBEAT") >= 3  # heartbeats went out
        link.lease_heartbeats(0.05)  # and alive() is never called
        time.sleep(0.2)
        stopped_at = time.monotonic()
        time.sleep(0.8)
        assert device.heard_since(stopped_at) == []
        assert link.lost is None
    finally:
        link.close()


def test_a_galvo_jump_longer_than_the_watchdog_is_no_silence() -> None:
    """A GALVO_JUMP is answered once the mirrors settle, the requests behind it held until
    then: silence is expected while one is pending, whatever the watchdog."""
    with open_device("sim://?clock=realtime&jump_speed_um_per_ms=15&watchdog_ms=300"
                     "&heartbeat_ms=100") as dev:
        jump_us = dev.scanner.jump(-9000.0, 0.0)  # 0.6 s from the centre
        jump_us += dev.scanner.jump(9000.0, 0.0)  # 1.2 s
        assert jump_us > 1_500_000
        assert dev.link.lost is None
        assert dev.status().state is State.STANDBY


@pytest.mark.parametrize("name", sorted(ACK_STATES))
def test_an_ack_reporting_a_state_its_request_cannot_lead_to_is_an_invalid_reply(
        name: str) -> None:
    """The state in the ACK of a state-changing request was ignored: a device ACKing START
    while it reported READY, or PAUSE while it stayed EMITTING, was taken at its word. Such an
    ACK is now an invalid reply naming the request, the state it reports and those expected;
    an ACK reporting an expected state is the reply."""
    values = {"ARM": {"plan_checksum": 1}, "RAISE_FAULT": {"fault_code": 8}}.get(name, {})
    for state in State:
        link = Link(FakeDevice(state=state), heartbeat_s=60.0)
        try:
            if state in ACK_STATES[name]:
                assert link.request(name, **values)["state"] == state
                continue
            with pytest.raises(InvalidReply) as refused:
                link.request(name, **values)
            expected = " or ".join(sorted(s.name for s in ACK_STATES[name]))
            assert (f"{name} (seq 0): invalid reply from the device: its ACK reports state "
                    f"{state.name}, where {name} leads to {expected}") in str(refused.value)
            assert link.bad_messages == 1
        finally:
            link.close()


def test_the_simulators_acks_report_the_states_their_requests_lead_to() -> None:
    """Every state-changing request in turn on the simulator: each ACK passes the check."""
    with open_device("sim://?pre_emission_ms=20&footswitch=down&seed=3") as dev:
        spots = line_pass(dev, 2000)
        dev.laser.set_rep_rate(100)
        dev.load_plan(spots)
        dev.arm(spots)
        dev.start()
        dev.pause()
        dev.resume()
        dev.pause()
        dev.disarm()
        dev.arm(spots)
        dev.abort()
        dev.raise_fault(FaultCode.ENERGY_DEVIATION)
        dev.reset_fault()
        assert dev.link.bad_messages == 0
        assert dev.status().state is State.STANDBY


def test_a_pause_held_behind_a_spot_longer_than_the_watchdog_is_no_silence() -> None:
    """Spots of 16 x 60 ms (valid limits; the watchdog 500 ms): a PAUSE mid-spot is answered
    once the spot has ended (section 2, rule 5), the device silent meanwhile. The host took
    that silence for a lost link and stopped a device that was pausing as asked."""
    url = ("sim://?clock=realtime&pulse_max_us=60000&max_stack=16&watchdog_ms=500"
           "&heartbeat_ms=100&pre_emission_ms=20&footswitch=down&rep_rate_max_hz=1000"
           "&avg_power_max_mw=30000")
    with open_device(url) as dev:
        spots = dev.prepare_pass(0, np.linspace(-5000, 5000, 5), np.zeros(5), 1000, 60000, 16)
        dev.laser.set_rep_rate(1)
        dev.load_plan(spots)
        dev.arm(spots)
        dev.start()
        ended: list[str] = []
        streaming = threading.Thread(
            target=lambda: ended.extend(p.reason for p in dev.stream(spots)), daemon=True)
        streaming.start()
        device = dev.simulator.device
        deadline = time.monotonic() + 10.0
        while device.fired_count < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert device.fired_count == 1
        time.sleep(0.1)  # 0.1 s into a 0.96 s spot
        assert dev.link.request("PAUSE", timeout_s=3.0)["state"] == State.PAUSED
        streaming.join(5.0)
        assert dev.link.lost is None
        assert ended[-1] == "paused" and dev.status().state is State.PAUSED
