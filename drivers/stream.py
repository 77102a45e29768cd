"""Streaming a pass: credit-based flow control, delivered reports, reconciliation.

The device fires spots strictly in index order, so delivered indices are contiguous: a gap
between two EVT_DELIVERED reports means a report was lost, and those spots are reported as
delivered with an unknown measured energy (-1) instead of being skipped silently. A lost
reply, or silence with nothing outstanding (a lost EVT_STATE, say; while the device emits, for
longer than its reports may be apart, else for the link's request timeout), makes the stream
ask for the device's status and go on from it; a status request that goes unanswered raises
DeviceTimeout, so a stream never waits forever.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from drivers.errors import DeviceLost, DeviceMisreport, DeviceTimeout, PlanMismatch
from drivers.info import DeviceStatus, InterlockEvent, StateEvent
from drivers.link import DeliveredRun, Pending, Queued
from drivers.protocol import Message, first_out_of_sequence, message
from drivers.protocol.messages import (
    MAX_BATCH_SPOTS,
    Cause,
    ErrorCode,
    FaultCode,
    Interlock,
    State,
)
from drivers.spots import PassSpots

if TYPE_CHECKING:
    from drivers.device import Device

UNKNOWN_ENERGY = -1
IDLE_TICK_S = 0.1
#: A refused SPOT_BATCH the stream reconciles (asks the status, sends on from the device's
#: next_index): credits or indices out of step after a lost frame, a state change; any other
#: refusal would come back for every batch sent again, so it ends the stream.
RECONCILED_NACKS = frozenset({ErrorCode.BUFFER_FULL, ErrorCode.BAD_INDEX,
                              ErrorCode.ILLEGAL_STATE, ErrorCode.FAULT_ACTIVE,
                              ErrorCode.PLAN_MISMATCH})
#: The shortest silence of an emitting device that makes a stream ask for its status.
MIN_REPORT_GAP_S = 0.25
BATCHES_PER_WRITE = 16

SENDING_STATES = (State.READY, State.ARMED, State.EMITTING, State.PAUSED)
#: States in which a stream (begun once emission started) ends: READY means someone disarmed
#: the device (another host, a Device closed from another thread): nothing fires until the host
#: arms it again, so waiting on would wait for ever.
ENDING_STATES = (State.PAUSED, State.FAULT, State.STANDBY, State.READY)


@dataclass(frozen=True)
class Progress:
    """What happened since the previous Progress of the same stream.

    ``index``/``measured_uj`` are the spots newly confirmed as fired (measured -1 = the report
    was lost, the spot did fire). ``done`` is set on the last Progress, with ``reason`` one of
    ``complete``, ``paused``, ``fault``, ``aborted``. ``cause`` is why the device entered
    ``state`` as its EVT_STATE said (a pause: ``FOOTSWITCH`` or ``HOST_COMMAND``); None when
    the state is known from a status report only (its event lost, or before the stream).
    """

    index: np.ndarray
    measured_uj: np.ndarray
    state: State
    interlocks: Interlock
    sent: int
    last_delivered: int | None
    done: bool = False
    reason: str = ""
    fault_code: FaultCode = FaultCode.NONE
    cause: Cause | None = None


def _delivered(item: Queued) -> tuple[np.ndarray, Message] | None:
    """(records, the report with the latest credits) of delivered reports, else None."""
    if isinstance(item, DeliveredRun):
        return item.records, item.last
    if isinstance(item, Message) and item.name == "EVT_DELIVERED":
        assert item.records is not None
        return item.records, item
    return None


class PassStreamer:
    """State of one streaming run; see :meth:`Device.stream`."""

    def __init__(self, device: Device, spots: PassSpots, known_through: int | None,
                 events: queue.SimpleQueue[Queued] | None = None,
                 report_gap_s: float | None = None) -> None:
        self.device = device
        #: silence that makes an emitting stream ask for the status (see Device.stream)
        self.report_gap_s = max(report_gap_s or device.link.request_timeout_s, MIN_REPORT_GAP_S)
        self.link = device.link
        self.spots = spots
        self.queue: queue.SimpleQueue[Queued] = events or self.link.queue_events()
        self.unacked: deque[tuple[Pending, int]] = deque()
        self.status_handle: Pending | None = None
        self.index: list[np.ndarray] = []
        self.measured: list[np.ndarray] = []
        self.state = State.STANDBY
        self.cause: Cause | None = None  # of the state, from its EVT_STATE
        self.interlocks = Interlock(0)
        self.fault_code = FaultCode.NONE
        self.ending = False
        self.last_seen = -1 if known_through is None else known_through
        self.known = known_through is not None
        self.records_checked = spots.records_checked  # a bad record fails here, before sending

    # -- bookkeeping ------------------------------------------------------------------------
    def apply_status(self, st: DeviceStatus) -> None:
        """Take the device's STATUS_REPORT as the truth (state, interlocks, credits, next index);
        spots it confirms that no report brought are recorded with unknown energy. PlanMismatch
        if the device holds another pass."""
        if st.plan_checksum != self.spots.checksum or st.spot_count != self.spots.count:
            raise PlanMismatch(
                "stream", int(ErrorCode.PLAN_MISMATCH), st.plan_checksum, int(st.state),
                f"device has plan {st.plan_checksum:#010x} with {st.spot_count} spots, "
                f"host streams {self.spots.checksum:#010x} with {self.spots.count}")
        self.next_send = st.next_index
        self.credits = st.credits
        if st.state is not self.state:  # its EVT_STATE not seen: why is not known
            self.cause = None
        self.state, self.interlocks, self.fault_code = st.state, st.interlocks, st.fault_code
        buffered = self.device.info.limits.buffer_spots - st.credits
        confirmed = st.last_delivered if st.last_delivered is not None else -1
        if not self.known:  # the caller knows nothing: start from the device's count
            self.last_seen = max(confirmed, st.next_index - buffered - 1)
            self.known = True
        self.record_delivered(np.arange(self.last_seen + 1, confirmed + 1), None)
        self.ending = self.state in ENDING_STATES

    def record_delivered(self, index: np.ndarray, measured: np.ndarray | None) -> None:
        """Record spots the device confirms fired (``measured`` in µJ; None: unknown, -1 each), each
        index once: repeats are dropped, a gap before them is filled with unknown energy;
        DeviceMisreport for an index beyond the pass."""
        index = np.asarray(index)
        if not index.size:
            return
        if int(index.min()) > self.last_seen:  # the usual case: every index is new
            values = None if measured is None else np.asarray(measured)
        else:
            index = np.asarray(index, dtype=np.int64)
            keep = index > self.last_seen  # a duplicated report must not count twice
            index = index[keep]
            if not index.size:
                return
            values = None if measured is None else np.asarray(measured, np.int64)[keep]
        if (last := int(index.max())) >= self.spots.count:  # never loaded, never sent
            raise DeviceMisreport(f"the device reported spot {last} of pass "
                                  f"{self.spots.pass_index} fired; the pass has "
                                  f"{self.spots.count} spots (0..{self.spots.count - 1})")
        first = int(index[0])
        if first > self.last_seen + 1:
            self.record_delivered(np.arange(self.last_seen + 1, first), None)
        self.index.append(index)
        self.measured.append(np.full(index.size, UNKNOWN_ENERGY, np.int64) if values is None
                             else values)
        self.last_seen = int(index[-1])

    def handle_all(self, items: list[Queued]) -> None:
        """:meth:`handle` each item in order; consecutive delivered reports (runs and single
        EVT_DELIVERED) whose indices continue one another are recorded in one go, as one by
        one would record them."""
        start = 0
        count = len(items)
        while start < count:
            pieces = []
            end = start
            while end < count and (piece := _delivered(items[end])) is not None:
                pieces.append(piece)
                end += 1
            if pieces and self.record_run(pieces):
                start = end
                continue
            self.handle(items[start])
            start += 1

    def record_run(self, pieces: list[tuple[np.ndarray, Message]]) -> bool:
        """Record consecutive delivered records (each piece: records, the report with the
        latest credits) at once when their indices, together, are new and contiguous (the
        usual case); False, recording nothing, otherwise."""
        first = int(pieces[0][0]["index"][0])  # a report carries at least one record
        end = first
        if first <= self.last_seen:
            return False
        for records, _ in pieces:  # each piece's indices continue the previous one's
            if first_out_of_sequence(records, end) >= 0:
                return False
            end += len(records)
        self.credits = int(pieces[-1][1]["credits"])
        # field by field: concatenating structured arrays promotes their dtype in Python
        self.record_delivered(np.arange(first, end, dtype=np.int64), np.concatenate(
            [records["measured_uj"] for records, _ in pieces], dtype=np.int64))
        return True

    def handle(self, item: Queued) -> None:
        """Act on one queued item: a reply, an event or a run of delivered reports; the link's loss
        (DeviceLost) is raised."""
        if isinstance(item, DeviceLost):
            raise item
        if isinstance(item, Pending):
            self.handle_reply(item)
            return
        if isinstance(item, DeliveredRun):
            for msg in item.messages():
                self.handle_event(msg)
            return
        self.handle_event(item)

    def handle_reply(self, handle: Pending) -> None:
        """A STATUS_REPORT requested is applied, a SPOT_BATCH's ACK gives its credits; a refusal
        not in RECONCILED_NACKS raises its error, any other answer reconciles."""
        if handle is self.status_handle:
            self.status_handle = None
            self.apply_status(DeviceStatus.from_message(handle.result()))
            return
        if not self.unacked or self.unacked[0][0] is not handle:
            return  # reply to a batch forgotten by a reconciliation
        self.unacked.popleft()
        reply = handle.reply
        if isinstance(reply, Message) and reply.name == "ACK":
            self.credits = int(reply["credits"])
        elif (isinstance(reply, Message) and reply.name == "NACK"
              and int(reply["error"]) not in RECONCILED_NACKS):
            handle.result()  # refused for good (a spot beyond a limit): raises the NACK's error
        else:
            self.reconcile()

    def handle_event(self, msg: Message) -> None:
        """Apply one event: delivered spots and the credits, the new state (an ending one
        reconciles, so that the stream ends on the device's own count) or the interlocks."""
        if msg.name == "EVT_DELIVERED":
            assert msg.records is not None
            self.credits = int(msg["credits"])
            self.record_delivered(msg.records["index"], msg.records["measured_uj"])
        elif msg.name == "EVT_STATE":
            event = StateEvent.from_message(msg)
            self.state, self.cause, self.fault_code = event.new_state, event.cause, event.fault_code
            if self.state in ENDING_STATES:
                self.ending = True
                self.reconcile()
        elif msg.name == "EVT_INTERLOCK":
            self.interlocks = InterlockEvent.from_message(msg).new

    def reconcile(self) -> None:
        """Ask for the device's status, in order with the events; forget unacked batches."""
        self.link.forget([h for h, _ in self.unacked])
        self.unacked.clear()
        if self.status_handle is None:
            (self.status_handle,) = self.link.send([message("STATUS_REQUEST")], self.queue)

    # -- the loop ---------------------------------------------------------------------------
    def send_batches(self) -> None:
        """Send SPOT_BATCHes as the credits allow (at most BATCHES_PER_WRITE per write; none while
        a status is awaited, the stream ends or the state takes no spots); a batch cut short by
        the credits only while the device holds less than two full batches."""
        if self.state not in SENDING_STATES or self.status_handle is not None or self.ending:
            return
        records = self.spots.records
        batches: list[tuple[Message, int]] = []
        available = self.credits - sum(n for _, n in self.unacked)
        start = self.next_send
        while len(batches) < BATCHES_PER_WRITE and start < self.spots.count:
            wanted = min(MAX_BATCH_SPOTS, self.spots.count - start)
            n = min(available, wanted)
            buffered = self.device.info.limits.buffer_spots - available
            if n <= 0 or (n < wanted and buffered >= 2 * MAX_BATCH_SPOTS):
                break  # the device has plenty queued: wait for room for a full batch
            batch = message("SPOT_BATCH", records=records[start:start + n])
            batch.records_checked = self.records_checked
            batches.append((batch, n))
            start += n
            available -= n
        if batches:
            handles = self.link.send([b for b, _ in batches], self.queue)
            self.unacked.extend(zip(handles, (n for _, n in batches), strict=True))
            self.next_send = start

    def reason(self) -> str:
        """Why the stream ended: paused, fault, complete (every spot fired) or aborted."""
        if self.state is State.PAUSED:
            return "paused"
        if self.state is State.FAULT:
            return "fault"
        return "complete" if self.last_seen >= self.spots.count - 1 else "aborted"

    def progress(self, done: bool = False) -> Progress:
        """The spots confirmed since the previous Progress, and the state now; ``done`` marks the
        last, with its :meth:`reason`."""
        index = (np.concatenate(self.index, dtype=np.int64) if self.index
                 else np.empty(0, np.int64))
        measured = (np.concatenate(self.measured, dtype=np.int64) if self.measured
                    else np.empty(0, np.int64))
        self.index, self.measured = [], []
        return Progress(index, measured, self.state, self.interlocks, self.next_send,
                        self.last_seen if self.last_seen >= 0 else None, done,
                        self.reason() if done else "", self.fault_code, self.cause)

    def run(self) -> Iterator[Progress]:
        """The stream behind :meth:`Device.stream`: yields Progress until the pass ends
        (DeviceTimeout when a status request goes unanswered); releases the event queue and the
        heartbeat lease however it ends."""
        timeout_s = self.link.request_timeout_s
        try:
            self.reconcile()  # the first status, in order with the events already queued
            while self.status_handle is not None:
                try:
                    self.handle(self.queue.get(timeout=timeout_s))
                except queue.Empty:
                    raise DeviceTimeout(f"STATUS_REQUEST: no reply within {timeout_s} s") from None
            if self.ending and self.state is not State.PAUSED:
                yield self.progress(done=True)  # it ended before we looked: say how
                return
            self.ending = False
            # While it streams, the device is heartbeated only as long as the loop below
            # turns: a consumer that hangs between two Progress (a blocked callback, a stalled
            # record write) lets the watchdog stop emission within two watchdog periods.
            self.link.lease_heartbeats(self.device.info.limits.watchdog_ms / 1000.0)
            last_tick = last_heard = time.monotonic()
            while True:
                self.link.alive()
                self.send_batches()
                items: list[Queued] = []
                try:
                    items.append(self.queue.get(timeout=IDLE_TICK_S))
                    while True:
                        items.append(self.queue.get_nowait())
                except queue.Empty:
                    pass
                self.handle_all(items)
                now = time.monotonic()
                oldest = self.unacked[0][0] if self.unacked else self.status_handle
                if items:
                    last_heard = now
                elif oldest is None and now - last_heard > (
                        self.report_gap_s if self.state is State.EMITTING else timeout_s):
                    # Silence with nothing outstanding: an emitting device reports each spot
                    # within 10 ms, so a state change (PAUSED, FAULT) may have been lost, or
                    # its reports are (spots firing unseen): ask; no answer stops the pass.
                    self.reconcile()
                    last_heard = now
                elif oldest is not None and now - oldest.sent_at > timeout_s:
                    if oldest is self.status_handle:
                        raise DeviceTimeout(f"STATUS_REQUEST: no reply within {timeout_s} s")
                    self.reconcile()
                if self.ending and self.status_handle is None and not self.unacked:
                    yield self.progress(done=True)
                    return
                if self.index or now - last_tick >= IDLE_TICK_S:
                    last_tick = now
                    yield self.progress()
        finally:
            self.link.lease_heartbeats(None)
            self.link.unqueue_events(self.queue)
            self.link.forget([h for h, _ in self.unacked])
