"""Events on the link: runs of delivered reports joined for the event queues, one by one for
subscribers, and the same records, credits and errors as decoding each report."""

from __future__ import annotations

import contextlib
import queue
import threading
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.link import DeliveredRun, Link, Queued
from drivers.protocol import (
    Message,
    MessageError,
    decode_payload,
    encode,
    encode_frame,
    joined_records,
    message,
)
from drivers.protocol.framing import FrameDecoder
from drivers.protocol.messages import BY_NAME, DELIVERED_DTYPE, Cause, FaultCode, State

DELIVERED = BY_NAME["EVT_DELIVERED"]


class ScriptedTransport:
    """Hands the link the chunks it is given, one per read."""

    def __init__(self) -> None:
        self.chunks: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        try:
            return self.chunks.get(timeout=timeout_s)
        except queue.Empty:
            return b""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def report(first: int, count: int, credits: int, seq: int) -> bytes:
    records = np.zeros(count, DELIVERED_DTYPE)
    records["index"] = np.arange(first, first + count)
    records["measured_uj"] = 1000 + records["index"]
    return encode(message("EVT_DELIVERED", seq, records=records, credits=credits))


def state_event(seq: int) -> bytes:
    return encode(message("EVT_STATE", seq, old_state=State.EMITTING, new_state=State.PAUSED,
                          cause=Cause.HOST_COMMAND, fault_code=FaultCode.NONE))


def damaged_count(wire: bytes, count: int) -> bytes:
    """The report re-framed with its count field set to ``count`` (records unchanged)."""
    (frame,) = FrameDecoder().feed(wire)
    payload = DELIVERED.struct.pack(count, 7) + frame.payload[DELIVERED.struct.size:]
    return encode_frame(frame.type_id, frame.seq, payload)


def read_through_link(chunks: list[bytes], expected: int) -> tuple[list[Queued], list[Message],
                                                                   int]:
    """What an event queue and a subscriber get from ``chunks``, and the bad message count."""
    transport = ScriptedTransport()
    link = Link(transport, heartbeat_s=60.0)
    try:
        events = link.queue_events()
        heard: list[Message] = []
        done = threading.Event()

        def on_event(item: object) -> None:
            assert isinstance(item, Message)
            heard.append(item)
            if len(heard) == expected:
                done.set()

        link.subscribe(on_event)
        for chunk in chunks:
            transport.chunks.put(chunk)
        assert done.wait(5.0), f"subscriber heard {len(heard)} of {expected}"
        got: list[Queued] = []
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and sum(
                len(g.frames) if isinstance(g, DeliveredRun) else 1 for g in got) < expected:
            with contextlib.suppress(queue.Empty):
                got.append(events.get(timeout=0.1))
        return got, heard, link.bad_messages
    finally:
        link.close()


def test_reports_read_together_reach_queues_as_one_run_and_subscribers_one_by_one() -> None:
    wires = [report(0, 40, 100, 1), report(40, 40, 90, 2), report(80, 5, 80, 3), state_event(4)]
    got, heard, bad = read_through_link([b"".join(wires)], expected=4)
    assert bad == 0
    assert [type(g) for g in got] == [DeliveredRun, Message]
    run = got[0]
    assert isinstance(run, DeliveredRun)
    singles = [decode_payload(frame) for wire in wires for frame in FrameDecoder().feed(wire)]
    assert run.messages() == singles[:3] and run.last == singles[2]
    np.testing.assert_array_equal(run.records, np.concatenate([m.records for m in singles[:3]]))
    assert got[1] == singles[3]
    assert heard == singles  # subscribers: every event, one by one, in wire order


def test_a_report_that_would_not_decode_splits_the_run_into_single_messages() -> None:
    good = [report(0, 10, 100, 1), report(10, 10, 90, 3)]
    bad_wire = damaged_count(report(99, 4, 0, 2), 5)  # says 5 records, carries 4
    got, heard, bad = read_through_link([good[0] + bad_wire + good[1]], expected=2)
    assert bad == 1
    assert all(isinstance(g, Message) for g in got)
    firsts: list[object] = []
    for g in got:
        assert isinstance(g, Message) and g.records is not None  # reports carry records
        firsts.append(g.records["index"][0])
    assert firsts == [0, 10]
    assert heard == got


reports = st.lists(st.tuples(st.integers(1, 64), st.integers(0, 0xFFFF)), min_size=1,
                   max_size=8)


@given(reports, st.integers(0, 2**31), st.data())
def test_joined_records_are_the_decoded_reports_joined(sizes: list[tuple[int, int]], first: int,
                                                       data: st.DataObject) -> None:
    wires, start = [], first
    for seq, (count, credits) in enumerate(sizes):
        wires.append(report(start, count, credits, seq))
        start += count
    damage = data.draw(st.sampled_from(["none", "count", "zero", "version"]))
    if damage != "none":
        at = data.draw(st.integers(0, len(wires) - 1))
        count = sizes[at][0]
        wires[at] = damaged_count(wires[at], {"count": count + 1, "zero": 0,
                                              "version": count}[damage])
    frames = [frame for wire in wires for frame in FrameDecoder().feed(wire)]
    if damage == "version":
        frames[at] = frames[at]._replace(version=2)
    joined = joined_records(frames)
    if damage == "none":
        assert joined is not None
        records, last = joined
        decoded = [decode_payload(frame) for frame in frames]
        np.testing.assert_array_equal(records, np.concatenate([m.records for m in decoded]))
        assert last == decoded[-1]
    else:
        assert joined is None
        with pytest.raises(MessageError):
            decode_payload(frames[at])


def test_unsubscribe_returns_once_a_running_callback_has_finished() -> None:
    """A session closed its record right after unsubscribing while the event thread was still
    writing a transition into it: SQLite used after close, a segmentation fault (about 1 run
    in 10 of an API script whose progress callback raised)."""
    transport = ScriptedTransport()
    link = Link(transport, heartbeat_s=60.0)
    entered, finished = threading.Event(), threading.Event()

    def slow(item: object) -> None:
        entered.set()
        time.sleep(0.3)
        finished.set()

    try:
        unsubscribe = link.subscribe(slow)
        transport.chunks.put(state_event(1))
        assert entered.wait(5.0)
        unsubscribe()
        assert finished.is_set()
        entered.clear()
        transport.chunks.put(state_event(2))
        time.sleep(0.3)
        assert not entered.is_set()  # and no later event reaches it
    finally:
        link.close()


def test_a_blocked_subscriber_delays_neither_another_nor_its_unsubscribe() -> None:
    """One callback blocked on an event: the other still gets every event, and its
    unsubscribe returns at once, after the events received before it (both waited for the
    blocked callback, whose dispatcher they shared)."""
    transport = ScriptedTransport()
    link = Link(transport, heartbeat_s=60.0)
    blocked, release = threading.Event(), threading.Event()
    heard: list[int] = []
    counted = {n: threading.Event() for n in (3, 4)}

    def stuck(item: object) -> None:
        blocked.set()
        release.wait(10.0)

    def fast(item: object) -> None:
        assert isinstance(item, Message)
        heard.append(item.seq)
        if len(heard) in counted:
            counted[len(heard)].set()

    try:
        link.subscribe(stuck)
        unsubscribe = link.subscribe(fast)
        transport.chunks.put(b"".join(state_event(seq) for seq in (1, 2, 3)))
        assert blocked.wait(5.0)
        assert counted[3].wait(5.0), f"heard {heard} while the other callback was blocked"
        transport.chunks.put(state_event(4))
        assert counted[4].wait(5.0)
        transport.chunks.put(state_event(5))
        unsubscribe()
        assert not release.is_set()  # returned while the other callback still blocks
        assert heard[:4] == [1, 2, 3, 4]
    finally:
        release.set()
        link.close()


def test_an_event_being_handed_out_when_unsubscribe_runs_still_reaches_the_callback() -> None:
    """The reader fed the event queues, then the subscriptions, without the link's lock: an
    unsubscribe between the two put its end marker before the event, which was dropped
    (review of session 15). An event queue that takes its time holds the reader there."""
    transport = ScriptedTransport()
    link = Link(transport, heartbeat_s=60.0)
    heard: list[int] = []
    handing_out = threading.Event()

    class SlowQueue(queue.SimpleQueue):
        def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
            handing_out.set()
            time.sleep(0.2)

    try:
        unsubscribe = link.subscribe(lambda item: heard.append(item.seq))  # type: ignore[union-attr]
        link._event_queues.append(SlowQueue())
        transport.chunks.put(state_event(7))
        assert handing_out.wait(5.0)  # received: the reader is handing it out
        unsubscribe()
        assert heard == [7]
    finally:
        link.close()


def test_unsubscribe_hands_over_the_events_received_before_it() -> None:
    """A session recorded the transitions its callback had not yet been handed when it closed:
    they were dropped."""
    transport = ScriptedTransport()
    link = Link(transport, heartbeat_s=60.0)
    gate = threading.Event()
    heard: list[int] = []
    events = link.queue_events()

    def gated(item: object) -> None:
        gate.wait(10.0)
        assert isinstance(item, Message)
        heard.append(item.seq)

    try:
        unsubscribe = link.subscribe(gated)
        transport.chunks.put(b"".join(state_event(seq) for seq in (1, 2, 3)))
        for _ in range(3):  # the reader has passed all three on
            events.get(timeout=5.0)
        threading.Timer(0.05, gate.set).start()
        unsubscribe()
        assert heard == [1, 2, 3]
    finally:
        gate.set()
        link.close()


def test_a_callback_may_unsubscribe_itself() -> None:
    transport = ScriptedTransport()
    link = Link(transport, heartbeat_s=60.0)
    heard: list[object] = []

    def once(item: object) -> None:
        heard.append(item)
        unsubscribe()

    try:
        unsubscribe = link.subscribe(once)
        for seq in (1, 2):
            transport.chunks.put(state_event(seq))
        deadline = time.monotonic() + 5.0
        while not heard and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert len(heard) == 1
    finally:
        link.close()


class WriteTimes(ScriptedTransport):
    """Notes when each write happened; with ``answer``, ACKs every request it is sent, in
    ``state`` (a device the host hears: heartbeats go out only once it has answered)."""

    def __init__(self, answer: bool = True) -> None:
        super().__init__()
        self.times: list[float] = []
        self.answer = answer
        self.state = State.EMITTING
        self.decoder = FrameDecoder()

    def write(self, data: bytes) -> None:
        self.times.append(time.monotonic())
        for frame in self.decoder.feed(data) if self.answer else ():
            self.chunks.put(encode(message("ACK", frame.seq, acked_type=frame.type_id,
                                           state=self.state, credits=0, value=0)))


def heard_once(link: Link, transport: WriteTimes) -> None:
    """The device answers a first request, as IDENTIFY at open: from then on it is heard."""
    link.send([message("HEARTBEAT")])[0].wait(5.0)
    transport.times.clear()


def test_no_heartbeat_goes_out_before_the_device_has_answered() -> None:
    """A new link (a session's reconnect) to a device whose replies do not reach the host must
    not keep its watchdog fed: heartbeats start once the device has answered a request."""
    transport = WriteTimes(answer=False)
    link = Link(transport, heartbeat_s=0.02)
    try:
        time.sleep(0.3)  # 30 heartbeat periods
        assert transport.times == []
        transport.answer = True
        link.send([message("HEARTBEAT")])[0].wait(5.0)
        sent = len(transport.times)
        time.sleep(0.3)
        assert len(transport.times) >= sent + 5
    finally:
        link.close()


def test_heartbeats_stop_when_the_lease_holder_stops_turning() -> None:
    """A streaming loop that hangs must let the device's watchdog run out."""
    transport = WriteTimes()
    link = Link(transport, heartbeat_s=0.02)
    lease_s = 0.2
    try:
        heard_once(link, transport)
        link.lease_heartbeats(lease_s)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # the loop turns
            link.alive()
            time.sleep(0.01)
        hung_at = time.monotonic()
        time.sleep(0.6)  # ... and hangs
        fed = [t for t in transport.times if t < hung_at]
        assert len(fed) >= 5
        assert all(t <= hung_at + lease_s + 0.15 for t in transport.times)
        link.lease_heartbeats(None)  # no lease: heartbeats whatever the owner does
        sent = len(transport.times)
        time.sleep(0.2)
        assert len(transport.times) > sent
    finally:
        link.close()


def test_a_device_that_cannot_fire_is_heartbeated_while_the_lease_holder_hangs() -> None:
    """Paused (here by its footswitch or another thread), it fires nothing: a slow callback
    then must not make its watchdog fault the pass."""
    transport = WriteTimes()
    link = Link(transport, heartbeat_s=0.02)
    heard = threading.Event()
    transport.state = State.PAUSED
    try:
        heard_once(link, transport)
        link.subscribe(lambda item: heard.set())
        link.lease_heartbeats(0.1)
        transport.chunks.put(state_event(1))  # EMITTING -> PAUSED
        assert heard.wait(5.0)
        hung_at = time.monotonic()
        time.sleep(0.5)
        assert any(t > hung_at + 0.3 for t in transport.times)
    finally:
        link.close()


def test_a_subscriber_that_raises_is_reported_to_its_owner_and_still_called() -> None:
    """A callback's exception was only logged: its owner (a session's safety mirror) never
    knew its view had gone stale. ``on_error`` now gets it, on the callback's thread, before
    the next event; later events still reach the callback."""
    transport = ScriptedTransport()
    link = Link(transport, heartbeat_s=60.0)
    heard: list[int] = []
    errors: list[tuple[Exception, list[int]]] = []
    done = threading.Event()

    def buggy(item: object) -> None:
        assert isinstance(item, Message)
        heard.append(item.seq)
        if item.seq == 2:
            raise ValueError("mirror bug")
        if item.seq == 3:
            done.set()

    try:
        link.subscribe(buggy, on_error=lambda exc: errors.append((exc, list(heard))))
        transport.chunks.put(b"".join(state_event(seq) for seq in (1, 2, 3)))
        assert done.wait(5.0)
        assert heard == [1, 2, 3]
        ((error, heard_then),) = errors
        assert isinstance(error, ValueError) and str(error) == "mirror bug"
        assert heard_then == [1, 2]  # told before the next event was handed over
    finally:
        link.close()
