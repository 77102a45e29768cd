"""Link layer: sequence numbers, request/reply matching, timeouts, events and heartbeat.

One reader thread decodes frames from the transport. Replies complete the request with the
same sequence number; events go, in wire order, to every event queue (``queue_events``) and to
the callbacks registered with ``subscribe``, each run by a thread of its own so that a slow
subscriber blocks neither the reader nor another subscriber. Consecutive EVT_DELIVERED reports
read together reach the event queues as one :class:`DeliveredRun` (an emitting device sends
one every 64 spots or 10 ms: one item per read instead of one per report), and the callbacks
one by one. A broken link fails every waiter with ``DeviceLost``; so does a device that sends
nothing for its watchdog period while it owes replies (:meth:`Link._silent_for`)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby

import numpy as np

from drivers.checks import real
from drivers.errors import DeviceClosed, DeviceLost, DeviceTimeout, InvalidReply, nack_error
from drivers.protocol import (
    FrameDecoder,
    Message,
    MessageError,
    ProtocolError,
    RawFrame,
    decode_payload,
    encode,
    joined_records,
    message,
)
from drivers.protocol.messages import BY_ID, BY_NAME, Direction, State

log = logging.getLogger(__name__)

#: Requests that may be re-sent after a timeout: they change nothing, or nothing twice.
IDEMPOTENT = frozenset({"IDENTIFY", "HEARTBEAT", "STATUS_REQUEST", "GALVO_JUMP", "AIMING_BEAM",
                        "PULSE_SETTINGS"})

#: What a link still sends once the host has begun closing it (:meth:`Link.begin_close`): the
#: requests that stop emission or ask the state, as closing needs them. Any other (ARM, START,
#: RESUME, a SPOT_BATCH that an emitting device would fire, a LOAD_PLAN to fire later) could
#: lead to emission: it raises DeviceClosed, unsent, whoever sends it.
WHILE_CLOSING = frozenset({"HEARTBEAT", "STATUS_REQUEST", "PAUSE", "DISARM", "ABORT",
                           "RAISE_FAULT"})

#: A PAUSE is answered within this long of the end of the spot under way (section 2, s).
PAUSE_AFTER_S = 0.02
READ_CHUNK = 65536
POLL_S = 0.05
#: The request timeouts a link takes (s): a reply within a poll at least, a silent device
#: noticed within half a minute at most.
REQUEST_TIMEOUT_RANGE_S = (0.05, 30.0)

_DELIVERED = BY_NAME["EVT_DELIVERED"].type_id
#: States in which a device fires by itself (ARMED: after its pre-emission delay).
FIRING_STATES = frozenset({State.ARMED, State.EMITTING})


#: The states a state-changing request leaves the device in (firmware_protocol.md section 5),
#: which its ACK reports ("device state after the request"): an ACK reporting another is an
#: invalid reply (InvalidReply), its outcome unknown as after a timeout.
ACK_STATES: dict[str, frozenset[State]] = {
    "ARM": frozenset({State.ARMED}),
    "START": frozenset({State.EMITTING}),
    "RESUME": frozenset({State.EMITTING}),
    "PAUSE": frozenset({State.PAUSED, State.FAULT}),  # FAULT: a fault cut the spot it waited for
    "DISARM": frozenset({State.READY}),
    "ABORT": frozenset({State.STANDBY}),
    "RESET_FAULT": frozenset({State.READY, State.STANDBY}),
    "RAISE_FAULT": frozenset({State.FAULT}),
}


def _unexpected_state(request: Message, reply: Message) -> InvalidReply | None:
    """Why ``reply`` is invalid when it is an ACK of a state-changing ``request`` reporting a
    state that request cannot lead to; else None."""
    expected = ACK_STATES.get(request.name)
    if expected is None or reply.name != "ACK" or int(reply["state"]) in expected:
        return None
    return InvalidReply(
        f"{request.name} (seq {reply.seq}): invalid reply from the device: its ACK reports "
        f"state {State(int(reply['state'])).name}, where {request.name} leads to "
        f"{' or '.join(sorted(s.name for s in expected))} (firmware_protocol.md section 5)")


@dataclass(frozen=True, slots=True)
class DeliveredRun:
    """Consecutive EVT_DELIVERED reports (two or more, each checked as decoding would), in wire
    order: their records joined, and the last report (its credits are the latest)."""

    frames: tuple[RawFrame, ...]
    records: np.ndarray
    last: Message

    @classmethod
    def of(cls, frames: list[RawFrame]) -> DeliveredRun | None:
        """The run of ``frames``, or None when one of them would not decode."""
        joined = joined_records(frames)
        return None if joined is None else cls(tuple(frames), *joined)

    def messages(self) -> list[Message]:
        """Each report as its own message."""
        return [decode_payload(frame) for frame in self.frames]


Item = Message | DeviceLost
#: What a request's handle receives: its reply, the link's loss, or why the reply was invalid.
Reply = Message | DeviceLost | InvalidReply
Subscriber = Callable[[Item], None]
#: Told, on the subscriber's thread, of an exception its callback raised (see ``subscribe``).
SubscriberErrorHandler = Callable[[Exception], None]


@dataclass(eq=False)
class Subscription:
    """One ``subscribe``: its callback (and who is told when it raises), the events not yet
    handed to it (None: no more), and the thread that calls it."""

    callback: Subscriber
    on_error: SubscriberErrorHandler | None = None
    thread: threading.Thread = field(init=False)
    pending: queue.SimpleQueue[Item | DeliveredRun | threading.Event | None] = field(
        default_factory=queue.SimpleQueue)
    #: False once it unsubscribed from its own callback: no further call
    active: bool = True

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="co2scan-events", daemon=True)

    def _run(self) -> None:
        while (item := self.pending.get()) is not None:
            if isinstance(item, threading.Event):  # a caught_up() marker: all before handled
                item.set()
                continue
            for event in item.messages() if isinstance(item, DeliveredRun) else (item,):
                if not self.active:
                    return
                try:
                    self.callback(event)
                except Exception as exc:  # a subscriber's bug must not stop event delivery,
                    # and its owner must hear of it: what the callback keeps may be stale
                    log.exception("event subscriber %r failed", self.callback)
                    self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        if self.on_error is None:
            return
        try:
            self.on_error(exc)
        except Exception:
            log.exception("error handler %r of event subscriber %r failed", self.on_error,
                          self.callback)

    def end(self) -> None:
        """No events after those already pending."""
        self.pending.put(None)


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(slots=True)
class Pending:
    """A request awaiting its reply; the reader thread calls :meth:`complete` once."""

    request: Message
    sent_at: float = 0.0
    reply: Reply | None = None
    target: queue.SimpleQueue[Queued] | None = None
    #: held until the reply is in (a bare lock: a handle is made per request sent)
    _arrived: threading.Lock = field(default_factory=_held_lock)

    def complete(self, reply: Reply) -> None:
        """Hand over the reply (or the loss of the link): wakes the waiter, queues the handle."""
        self.reply = reply
        self._arrived.release()
        if self.target is not None:
            self.target.put(self)

    def wait(self, timeout_s: float) -> Message:
        """The reply (ACK or specific reply); raises typed errors for NACK, loss and timeout
        (a timeout of 0 or less: at once, if the reply is not in)."""
        if not self._arrived.acquire(timeout=max(timeout_s, 0.0)):
            raise DeviceTimeout(f"{self.request.name} (seq {self.request.seq}): "
                                f"no reply within {timeout_s:.3f} s")
        self._arrived.release()  # arrived for good: a later wait returns at once
        return self.result()

    def result(self) -> Message:
        """The reply that has arrived (after :meth:`wait`, or once the handle is queued): ACK or the
        specific reply; raises DeviceLost, InvalidReply or the NACK's typed error."""
        reply = self.reply
        if isinstance(reply, DeviceLost | InvalidReply):
            raise reply
        assert reply is not None
        if reply.name == "NACK":
            raise nack_error(self.request.name, int(reply["error"]), int(reply["detail"]),
                             int(reply["state"]), reply.text)
        return reply


#: What an event queue holds: events (reports joined into runs), the link's loss, and the
#: handles of requests sent with that queue as their target.
Queued = Item | DeliveredRun | Pending
#: A queue of :meth:`Link.queue_events` (``Device.events()`` hands one out).
EventQueue = queue.SimpleQueue[Queued]


class Link:
    """Frames over a transport, with requests matched to replies by sequence number."""

    def __init__(self, transport: object, request_timeout_s: float = 1.0,
                 heartbeat_s: float = 0.1, watchdog_s: float | None = None) -> None:
        self.request_timeout_s = request_timeout_s  # checked before any thread starts
        self.transport = transport
        self.heartbeat_s = heartbeat_s
        #: the device's watchdog period (s; Device sets it from IDENTIFY): a device that sends
        #: nothing that long while it owes replies is lost (None: not checked)
        self.watchdog_s = watchdog_s
        #: the device's longest spot (s; Device sets it from IDENTIFY, max_stack x
        #: pulse_max_us): a PAUSE waits for the spot under way, the requests behind it held,
        #: so while one is pending the device may be silent that much (+ 20 ms) longer
        self.spot_s = 0.0
        self.lost: DeviceLost | None = None
        self.decoder = FrameDecoder()
        self.bad_messages = 0
        self._seq = 0
        self._lock = threading.Lock()  # seq and pending; never held while writing
        self._write_lock = threading.Lock()
        self._pending: dict[int, Pending] = {}
        #: set by begin_close (under the write lock): only WHILE_CLOSING requests go out
        self.closing = False
        #: when the latest request the device accepted was sent (ACK or its own reply; a NACK
        #: does not count, section 7): what the heartbeats are scheduled from
        self._accepted_at = time.monotonic()
        #: the device has answered a request of this link (ACK, NACK or its own reply): until
        #: then no heartbeat goes out, so a device the host cannot hear is not kept fed
        self._answered = False
        #: while set, heartbeats only within this long of the owner's last alive()
        self._lease_s: float | None = None
        self._alive_at = self._accepted_at
        #: since when the device owes a reply without having sent a byte (None: nothing owed
        #: since it was last heard)
        self._owed_since: float | None = None
        #: the device may fire (its last reported state ARMED or EMITTING; unknown: yes)
        self._may_fire = True
        self._event_queues: list[queue.SimpleQueue[Queued]] = []
        self._subscriptions: list[Subscription] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read_loop, name="co2scan-reader", daemon=True),
            threading.Thread(target=self._heartbeat_loop, name="co2scan-heartbeat", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def request_timeout_s(self) -> float:
        """How long a request waits for its reply by default (s)."""
        return self._request_timeout_s

    @request_timeout_s.setter
    def request_timeout_s(self, value: float) -> None:
        self._request_timeout_s = real("request_timeout_s", value, *REQUEST_TIMEOUT_RANGE_S, "s")

    # -- sending ----------------------------------------------------------------------------
    def send(self, requests: list[Message],
             target: queue.SimpleQueue[Queued] | None = None) -> list[Pending]:
        """Number and send ``requests`` in one write; their replies complete the handles.

        With ``target``, each completed handle is also put on that queue, in wire order with
        the events of ``queue_events``. Once :meth:`begin_close` has run, a write with a request
        not in :data:`WHILE_CLOSING` raises DeviceClosed and sends none of ``requests``.
        """
        if self.lost is not None:
            raise self.lost
        handles = []
        with self._write_lock:  # frames leave in seq order; the reader never needs this lock
            if self.lost is not None:  # closed meanwhile: never write to a closed transport
                raise self.lost
            if self.closing:
                refused = next((r.name for r in requests if r.name not in WHILE_CLOSING), None)
                if refused is not None:
                    raise DeviceClosed(f"{refused} not sent: the link is being closed by the "
                                       f"host (only {', '.join(sorted(WHILE_CLOSING))} go out)")
            with self._lock:
                now = time.monotonic()
                owed_from_now = self._owed_since is None
                if owed_from_now:
                    self._owed_since = now
                for request in requests:
                    request.seq = self._seq
                    self._seq = (self._seq + 1) & 0xFFFF
                    handle = Pending(request, now, target=target)
                    self._pending[request.seq] = handle
                    handles.append(handle)
            try:
                wire = b"".join(encode(r) for r in requests)
            except MessageError:
                self.forget(handles)
                raise
            try:
                self.transport.write(wire)  # type: ignore[attr-defined]
                failure = None
            except DeviceLost as exc:
                failure = exc
            if owed_from_now:  # owed once the bytes have left, not while a slow write runs
                with self._lock:
                    if self._owed_since == now:
                        self._owed_since = time.monotonic()
        if failure is not None:
            self._fail(failure)  # takes the lock itself
            raise self.lost or failure
        return handles

    def forget(self, handles: list[Pending]) -> None:
        """Stop waiting for ``handles``; a late reply to them is ignored."""
        with self._lock:
            for handle in handles:
                self._pending.pop(handle.request.seq, None)

    def request(self, name: str, timeout_s: float | None = None, retries: int | None = None,
                **values: int | bytes) -> Message:
        """Send one request and wait for its reply.

        Idempotent requests are retried (up to ``retries``, default 2) after a timeout; any
        other request raises ``DeviceTimeout`` at once so the caller can reconcile.
        """
        timeout_s = self.request_timeout_s if timeout_s is None else timeout_s
        attempts = 1 + ((2 if retries is None else retries) if name in IDEMPOTENT else 0)
        for attempt in range(attempts):
            (handle,) = self.send([message(name, seq=0, text="", **values)])
            try:
                return handle.wait(timeout_s)
            except DeviceTimeout:
                self.forget([handle])
                if attempt == attempts - 1:
                    raise
                log.warning("%s timed out, retrying (%d/%d)", name, attempt + 1, attempts - 1)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- events -----------------------------------------------------------------------------
    def queue_events(self) -> queue.SimpleQueue[Queued]:
        """A queue receiving every event (and DeviceLost) in wire order, from now on;
        consecutive EVT_DELIVERED reports come as one :class:`DeliveredRun`."""
        q: queue.SimpleQueue[Queued] = queue.SimpleQueue()
        with self._lock:
            self._event_queues = [*self._event_queues, q]
        return q

    def unqueue_events(self, q: queue.SimpleQueue[Queued]) -> None:
        """Stop feeding ``q`` (a queue of :meth:`queue_events`); what it holds stays in it."""
        with self._lock:
            self._event_queues = [x for x in self._event_queues if x is not q]

    def subscribe(self, callback: Subscriber,
                  on_error: SubscriberErrorHandler | None = None) -> Callable[[], None]:
        """Call ``callback`` for every event, in wire order, on a thread of its own (a slow
        callback delays only itself); returns unsubscribe. Unsubscribe returns once every
        event received before it has been handed to ``callback`` and that call has returned
        (so what it uses can then be closed); it waits for no other subscriber's callback.
        From ``callback`` itself it returns at once, and no further call follows.

        An exception ``callback`` raises is logged and handed to ``on_error`` (on the same
        thread, before the next event): whatever the callback keeps up to date (a mirror of
        the device's state) may be stale from then on, and its owner must act on that. The
        following events are still handed to ``callback``."""
        subscription = Subscription(callback, on_error)
        with self._lock:
            if self._stop.is_set():  # closed: no event will come
                return lambda: None
            self._subscriptions = [*self._subscriptions, subscription]
        subscription.thread.start()

        def unsubscribe() -> None:
            with self._lock:  # as _event hands events out: none after the end marker
                self._subscriptions = [s for s in self._subscriptions if s is not subscription]
                subscription.end()
            if threading.current_thread() is subscription.thread:
                subscription.active = False
            else:
                subscription.thread.join()

        return unsubscribe

    def caught_up(self, callback: Subscriber, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until ``callback``'s subscriptions have handled every
        event the link received before this call: whether they did. A request's reply
        arrives after the events the device sent before it, so a round trip and then this
        orders what the callback records (a transition) before what its caller writes next."""
        markers = []
        with self._lock:  # as _event hands events out: the marker goes in after them
            for subscription in self._subscriptions:
                if (subscription.callback == callback and subscription.active
                        and subscription.thread.is_alive()):
                    marker = threading.Event()
                    subscription.pending.put(marker)
                    markers.append((subscription, marker))
        deadline = time.monotonic() + timeout_s
        for subscription, marker in markers:
            if threading.current_thread() is subscription.thread:
                continue  # from the callback itself: what came before it has been handled
            if not marker.wait(max(deadline - time.monotonic(), 0.0)):
                return False
        return True

    # -- liveness ---------------------------------------------------------------------------
    def lease_heartbeats(self, lease_s: float | None) -> None:
        """From now on, while the device may fire (ARMED or EMITTING as it last reported),
        heartbeat it only within ``lease_s`` of the last :meth:`alive` (None: always). A loop
        that drives emission holds a lease and calls ``alive`` every turn: if it hangs (a
        blocked callback, a stalled disk), the heartbeats stop and the device's watchdog
        stops emission, as for a silent host."""
        self._alive_at = time.monotonic()
        self._lease_s = lease_s

    def alive(self) -> None:
        """The owner of the heartbeat lease is still running."""
        self._alive_at = time.monotonic()

    # -- lifecycle --------------------------------------------------------------------------
    def begin_close(self) -> None:
        """The host is closing the link (``Device.close()``, from any thread): from now on it
        sends only :data:`WHILE_CLOSING` requests (stopping emission needs them), whoever asks;
        any other raises DeviceClosed unsent. Returns once a write under way has left: anything
        sent before is on the wire ahead of what closing sends. Idempotent; :meth:`close` does
        it too."""
        with self._write_lock:
            self.closing = True

    def close(self) -> None:
        """Stop the threads and close the transport; idempotent. Every waiter, event queue
        and subscriber then gets :class:`DeviceClosed` (a request of another thread that
        fails meanwhile too: the host closed the link, no cable was pulled). Subscribers get
        the events received before; their threads are waited for up to 2 s together (a
        callback that blocks longer ends on its own)."""
        self.begin_close()
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        with self._write_lock:  # no write runs into the closing transport, none follows
            self.transport.close()  # type: ignore[attr-defined]
            self._fail(DeviceClosed("link closed by the host"))
        with self._lock:
            subscriptions, self._subscriptions = self._subscriptions, []
        deadline = time.monotonic() + 2.0
        for subscription in subscriptions:
            subscription.end()
        for subscription in subscriptions:
            if subscription.thread is not threading.current_thread():
                subscription.thread.join(timeout=max(0.0, deadline - time.monotonic()))

    # -- threads ----------------------------------------------------------------------------
    def _read_loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                data = self.transport.read(READ_CHUNK, POLL_S)  # type: ignore[attr-defined]
            except DeviceLost as exc:
                if not self._stop.is_set():
                    self._fail(exc)
                return
            if data:
                errors = self.decoder.errors
                frames = self.decoder.feed(data)
                self._handle_frames(frames)
                if frames or (data[-1] != 0 and self.decoder.errors == errors):
                    self._heard()  # frames, or one under way (not delimiters or damage alone)
            silent_s = self._silent_for(started)
            if silent_s is not None and not self._stop.is_set():
                self._lost_in_silence(*silent_s)
                return

    def _heard(self) -> None:
        """Bytes of frames came from the device: it owes nothing from before, except the
        replies still pending, owed from now on."""
        with self._lock:
            self._owed_since = time.monotonic() if self._pending else None

    def _silent_for(self, read_at: float) -> tuple[float, float] | None:
        """How long the device has sent nothing while it owed a reply, and its watchdog
        period, when the silence exceeds that period; else None.

        ``read_at`` is when the read that just returned began: whatever the device had sent
        by then was in that read, so the silence is proven up to it however late this thread
        ran (a host under load sees no silence that was not there). The device answers every
        request within 20 ms (firmware_protocol.md section 2), except a GALVO_JUMP (answered
        once the mirrors settle, the requests behind it held until then: while one is
        pending, silence is expected and not counted) and a PAUSE (answered within 20 ms of
        the end of the spot under way, the requests behind it held: while one is pending, the
        longest spot, :attr:`spot_s`, + 20 ms more)."""
        owed, watchdog_s = self._owed_since, self.watchdog_s
        if owed is None or watchdog_s is None or read_at - owed <= watchdog_s:
            return None
        with self._lock:
            names = {h.request.name for h in self._pending.values()}
        if "GALVO_JUMP" in names or (
                "PAUSE" in names and read_at - owed <= watchdog_s + self.spot_s + PAUSE_AFTER_S):
            return None
        return read_at - owed, watchdog_s

    def _lost_in_silence(self, silent_s: float, watchdog_s: float) -> None:
        """The device sent nothing for its watchdog period while it owed replies: the link
        from it is gone, though it may still hear the host (and fire, fed by the heartbeats,
        unseen). PAUSE and DISARM go out without waiting for their replies (what stopping
        emission sends; refused harmlessly where they do not apply), then the link is lost
        for all its users, and the heartbeats stop: a device that heard neither stops
        emission by its watchdog."""
        try:
            self.forget(self.send([message("PAUSE"), message("DISARM")]))
            halt = "PAUSE and DISARM sent unanswered"
        except DeviceLost as exc:
            halt = f"PAUSE and DISARM not sent: {exc}"
        self._fail(DeviceLost(
            f"nothing from the device for {silent_s:.2f} s while it owed replies (it answers "
            f"within 20 ms, a PAUSE within 20 ms of the spot under way; its watchdog period "
            f"is {watchdog_s:.2f} s): the link from the "
            f"device is lost; {halt}"))

    def _handle_frames(self, frames: list[RawFrame]) -> None:
        """Each frame in order; a run of EVT_DELIVERED frames as one :class:`DeliveredRun`."""
        for delivered, grouped in groupby(frames, key=lambda f: f.type_id == _DELIVERED):
            group = list(grouped)
            run = DeliveredRun.of(group) if delivered and len(group) > 1 else None
            if run is not None:
                self._event(run)
                continue
            for frame in group:
                try:
                    self._handle(decode_payload(frame))
                except ProtocolError as exc:
                    self.bad_messages += 1
                    log.warning("ignored bad message from device: %s", exc)
                    self._invalid_reply(frame, exc)

    def _invalid_reply(self, frame: RawFrame, exc: ProtocolError) -> None:
        """An invalid reply (a reply type with the seq of a pending request) fails that
        request at once: it will get no valid reply."""
        definition = BY_ID.get(frame.type_id)
        if definition is None or definition.direction is not Direction.DEVICE:
            return
        with self._lock:
            handle = self._pending.pop(frame.seq, None)
        if handle is not None:
            handle.complete(InvalidReply(f"{handle.request.name} (seq {frame.seq}): invalid "
                                         f"reply from the device: {exc}"))

    def _event(self, event: Message | DeliveredRun) -> None:
        with self._lock:  # an unsubscribe's end marker comes after every event handed out
            for q in self._event_queues:
                q.put(event)
            for subscription in self._subscriptions:
                subscription.pending.put(event)

    def _handle(self, msg: Message) -> None:
        definition = msg.definition
        handle = None
        if definition.direction is Direction.DEVICE:
            with self._lock:
                handle = self._pending.pop(msg.seq, None)
        invalid = None if handle is None else _unexpected_state(handle.request, msg)
        state = msg.values.get("new_state", msg.values.get("state"))  # events and replies
        if invalid is not None:
            self._may_fire = True  # its state is not to be believed: unknown, so it may
        elif state is not None:
            self._may_fire = int(state) in FIRING_STATES
        if definition.direction is Direction.EVENT:
            self._event(msg)
            return
        if definition.direction is not Direction.DEVICE:
            self.bad_messages += 1
            return
        if handle is None:
            return  # a late reply to a forgotten request
        if invalid is not None:
            self.bad_messages += 1
            log.warning("ignored bad message from device: %s", invalid)
            handle.complete(invalid)
            return
        self._answered = True
        if msg.name != "NACK":  # accepted: it fed the watchdog (a refused one did not)
            self._accepted_at = max(self._accepted_at, handle.sent_at)
        handle.complete(msg)

    def _fail(self, exc: DeviceLost) -> None:
        if self._stop.is_set() and not isinstance(exc, DeviceClosed):
            exc = DeviceClosed(f"link closed by the host ({exc})")
        if self.lost is None:
            self.lost = exc
            if not self._stop.is_set():
                log.error("device lost: %s", exc)
        with self._lock:
            pending, self._pending = self._pending, {}
            queues = list(self._event_queues)
            subscriptions = list(self._subscriptions)
        for handle in pending.values():
            handle.complete(exc)
        for q in queues:
            q.put(exc)
        for subscription in subscriptions:
            subscription.pending.put(exc)

    def _heartbeat_loop(self) -> None:
        """Keep the device's watchdog fed (firmware_protocol.md section 7).

        Guarantee: two requests the device accepts are never more than ``heartbeat_s`` apart
        on the wire. The loop sends a HEARTBEAT (accepted in every state) once ``heartbeat_s /
        2`` has passed since the send of the latest request the device accepted (an ACK or its
        own reply came back; a NACKed request does not feed the watchdog and does not count;
        one without a reply yet does not count either), and sleeps until that deadline. So
        the next accepted request leaves at most ``heartbeat_s / 2`` after the last, plus the
        thread's wake-up delay; the other ``heartbeat_s / 2`` is the margin for that delay
        and for the link's transit, and the device's ``watchdog_ms - heartbeat_ms`` comes on
        top. Idle, that is one heartbeat per ``heartbeat_s / 2``; requests the device accepts
        meanwhile (a stream's batches) push the deadline back, so no heartbeat goes out then.
        A heartbeat still unanswered after ``heartbeat_s / 2`` does not delay the next.

        Two exceptions are deliberate, so that a device's watchdog runs out: no heartbeat goes
        out before the device has answered a request of this link (a new link, a session's
        reconnect: a device whose replies cannot be heard is not kept firing by heartbeats
        while its IDENTIFY times out), nor while the lease holder hangs and the device may
        fire (:meth:`lease_heartbeats`)."""
        sent: list[Pending] = []  # this loop's heartbeats, until answered or forgotten
        delay = self.heartbeat_s / 2
        while not self._stop.wait(delay):
            if self.lost is not None:
                return
            now = time.monotonic()
            half = self.heartbeat_s / 2
            delay = half
            sent = self._heartbeats_unanswered(sent, now)
            if not self._answered:
                continue  # a device not yet heard from: none until it answers
            if (self._lease_s is not None and now - self._alive_at > self._lease_s
                    and self._may_fire):
                continue  # the lease holder hangs while the device may fire: let its
                # watchdog run out
            due = self._accepted_at + half
            if now < due:
                delay = max(due - now, 0.001)
                continue
            try:
                sent += self.send([message("HEARTBEAT")])
            except DeviceLost:
                return

    def _heartbeats_unanswered(self, sent: list[Pending], now: float) -> list[Pending]:
        """Those of ``sent`` still awaiting their reply; those older than the request timeout
        are forgotten (their late reply is ignored, as for any request). A refused heartbeat
        is logged: it fed no watchdog."""
        waiting = []
        for handle in sent:
            reply = handle.reply
            if reply is None:
                if now - handle.sent_at <= self.request_timeout_s:
                    waiting.append(handle)
                else:
                    self.forget([handle])
            elif isinstance(reply, Message) and reply.name == "NACK":
                log.warning("HEARTBEAT (seq %d) refused by the device (error %d): it did not "
                            "feed the watchdog", handle.request.seq, int(reply["error"]))
        return waiting
