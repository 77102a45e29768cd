"""The simulated device: firmware_protocol.md's device side, pure and single-threaded.

``SimDevice`` does no I/O and reads no clock: bytes go in with :meth:`SimDevice.receive`,
come out with :meth:`SimDevice.transmit`, and time moves only with :meth:`SimDevice.advance`.
Everything a cautious firmware checks is checked here: every request is validated against its
layout, the state machine, the service-mode rule and the device limits before anything changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from typing import NamedTuple

import numpy as np

from drivers.protocol import (
    FrameDecoder,
    Message,
    MessageError,
    RawFrame,
    decode_payload,
    first_out_of_sequence,
    joined_records,
    record_extremes,
)
from drivers.protocol import encode as encode_message
from drivers.protocol import message as make_message
from drivers.protocol.codec import narrow_record_bounds
from drivers.protocol.framing import encode_frame
from drivers.protocol.messages import (
    ACTIVE,
    AUTH_CONTEXT,
    BY_ID,
    BY_NAME,
    DELIVERED_DTYPE,
    MESSAGES,
    NO_INDEX,
    NONCE_SIZE,
    PROTOCOL_VERSION,
    SAFETY_INTERLOCKS,
    SPOT_DTYPE,
    Capability,
    Cause,
    DeviceFlag,
    Direction,
    ErrorCode,
    FaultCode,
    Interlock,
    MessageDef,
    State,
)
from sim_hw._firing import fire_times
from sim_hw._reports import delivered_reports
from sim_hw.config import SimConfig, parse_input
from sim_hw.galvo import Galvo
from sim_hw.laser import Laser
from sim_hw.nvm import NonVolatile, PassRecord
from sim_hw.truth import GroundTruth

_STATUS_REQUEST = BY_NAME["STATUS_REQUEST"].type_id
_PAUSE = BY_NAME["PAUSE"].type_id
_DELIVERED = BY_NAME["EVT_DELIVERED"]
_SPOT_BATCH_DEF = BY_NAME["SPOT_BATCH"]
_SPOT_BATCH = _SPOT_BATCH_DEF.type_id
_ACK = BY_NAME["ACK"]
assert [f.name for f in _ACK.fields] == ["acked_type", "state", "credits", "value"]
CAPABILITIES = Capability.AIMING_BEAM | Capability.ENERGY_MONITOR | Capability.SERVICE_AUTH
_INPUT_BITS = {"key": Interlock.KEY_ON, "door": Interlock.DOOR_CLOSED,
               "estop": Interlock.ESTOP_RELEASED, "footswitch": Interlock.FOOTSWITCH_DOWN}
#: Inputs that must all be set for a spot to fire.
_EMIT_BITS = int(SAFETY_INTERLOCKS | Interlock.FOOTSWITCH_DOWN)
#: Under a virtual clock, emission skips ahead at most this many spots at a time, so that
#: host requests still arrive between chunks of emission: the default buffer, one chunk per
#: buffer a host streaming at full rate refills (a smaller step only adds simulator work).
VIRTUAL_SKIP_SPOTS = 4096


class Buffered(NamedTuple):
    """Buffered spots (views): the SPOT_BATCH records and their calibrated mirror positions."""

    spot: np.ndarray
    mirror_x: np.ndarray
    mirror_y: np.ndarray


class SpotBuffer:
    """The device's spot buffer: buffered spots in firing order, in preallocated arrays (the
    records in one, each mirror axis in another, so that appending copies whole rows)."""

    def __init__(self, capacity: int) -> None:
        size = 2 * capacity  # room to append before compacting
        self._spots = np.empty(size, SPOT_DTYPE)
        self._spot_bytes = self._spots.view(np.uint8)
        self._mirror_x = np.empty(size, np.int64)
        self._mirror_y = np.empty(size, np.int64)
        self._head = self._tail = 0  # spots before _head have fired

    def __len__(self) -> int:
        return self._tail - self._head

    def extend(self, spots: np.ndarray, mirror_x: np.ndarray, mirror_y: np.ndarray) -> None:
        """Append SPOT records with their calibrated mirror positions (the caller keeps the
        buffer within its capacity)."""
        count = len(spots)
        head, tail = self._head, self._tail
        stores = (self._spots, self._mirror_x, self._mirror_y)
        if tail + count > len(self._spots):
            for store in stores:
                store[:tail - head] = store[head:tail]
            head, tail = self._head, self._tail = 0, tail - head
        if spots.dtype == SPOT_DTYPE and spots.flags.c_contiguous:  # as bytes: ~4x faster
            size = SPOT_DTYPE.itemsize
            self._spot_bytes[tail * size:(tail + count) * size] = spots.view(np.uint8)
        else:
            self._spots[tail:tail + count] = spots
        self._mirror_x[tail:tail + count] = mirror_x
        self._mirror_y[tail:tail + count] = mirror_y
        self._tail = tail + count

    def ahead(self, count: int | None = None) -> Buffered:
        """The next ``count`` spots to fire (all when None), as views."""
        end = self._tail if count is None else min(self._tail, self._head + count)
        head = self._head
        return Buffered(self._spots[head:end], self._mirror_x[head:end],
                        self._mirror_y[head:end])

    def pop(self, count: int) -> None:
        """Take ``count`` fired spots off the front."""
        self._head += count

    def clear(self) -> None:
        """Empty the buffer: spots not yet fired are dropped."""
        self._head = self._tail = 0


class Stop(NamedTuple):
    """Rules 5 and 6: leaving EMITTING once the spot under way has ended: for PAUSED (footswitch
    released, PAUSE) or, cause PLAN_COMPLETE, for STANDBY (the pass's last spot); its end
    (device time), the cause, and the PAUSE to answer then (None when the footswitch alone
    stops it; requests received after a PAUSE wait behind it; a PAUSE during the last spot
    waits in the inbox, to be refused in STANDBY)."""

    end_s: float
    cause: Cause
    request: Message | None


class Refused(Exception):
    """A request the device answers with NACK; raised before anything changed."""

    def __init__(self, error: ErrorCode, detail: int = 0, text: str = "") -> None:
        super().__init__(text)
        self.error = error
        self.detail = detail & 0xFFFFFFFF
        self.text = text


@dataclass
class Plan(PassRecord):
    """The loaded pass and its progress: the pass record (which rule 9 keeps in non-volatile
    memory) and where the spot buffer has got to."""

    next_index: int = 0
    loaded: bool = True

    @classmethod
    def restored(cls, record: PassRecord) -> Plan:
        """The plan a start restores from the pass record: buffer empty, so the next index is
        the one after the last fired."""
        return cls(**dataclasses.asdict(record), next_index=record.resume_index())

    def record(self) -> PassRecord:
        """The pass record alone (no buffer progress), as non-volatile memory keeps it."""
        return PassRecord(**{f.name: getattr(self, f.name)
                             for f in dataclasses.fields(PassRecord)})


class SimDevice:
    """A co2scan device: state machine, spot buffer, galvo, laser, interlocks and watchdog.

    ``nv`` is its non-volatile memory (blank when None: the very first power-on); a memory
    already initialised makes this start a later one, as after a power loss (rule 9).
    ``on_nv_write`` is called with the memory whenever the device writes it, the progress of a
    pass before its spots fire (a state file keeps it, see ``sim_hw.state_file``).
    """

    def __init__(self, config: SimConfig | None = None, nv: NonVolatile | None = None,
                 on_nv_write: Callable[[NonVolatile], None] | None = None) -> None:
        self.config = config or SimConfig()
        cfg = self.config
        self._rng = random.Random(cfg.seed)
        #: Non-volatile memory (rule 9); its fired-index memory (rule 1) survives ABORT,
        #: completion, reload, reset and power loss, so no path can re-fire a delivered spot.
        self.nv = NonVolatile.factory(cfg) if nv is None else nv
        self._on_nv_write = on_nv_write
        self.galvo = Galvo(cfg, self.nv.calibration)
        self.laser = Laser(cfg, np.random.default_rng(cfg.seed + 1), self.nv.limits)
        self.truth = GroundTruth()
        self._inputs = sum(int(bit) for name, bit in _INPUT_BITS.items() if getattr(cfg, name))
        self._now_s = 0.0
        self._host_now_s = 0.0
        self._frames_dropped_before = 0
        self.counters = {"frames_received": 0, "nacks_sent": 0, "replies_sent": 0,
                         "events_sent": 0, "resets": 0}
        later = self.nv.initialised
        self.nv.initialised = True
        self._power_on(later)
        self._nv_written()

    # -- power-on and reset ------------------------------------------------------------------

    def _power_on(self, later: bool) -> None:
        """Rule 9: the very first start in STANDBY, or in FAULT with OVER_TEMPERATURE when the
        laser head is already too hot (rule 8); every later one in FAULT with DEVICE_RESET,
        the pass restored from the pass record. A start in FAULT sends EVT_STATE (POWER_ON)
        once a host talks to it."""
        record = self.nv.pass_record
        if later:
            plan = None if record is None else Plan.restored(record)
            self._boot(State.FAULT, FaultCode.DEVICE_RESET, plan)
        elif self.laser.over_temperature:
            self._boot(State.FAULT, FaultCode.OVER_TEMPERATURE, plan=None)
        else:
            self._boot(State.STANDBY, FaultCode.NONE, plan=None)
        self._announce_power_on = self.state == State.FAULT

    def _boot(self, state: State, fault_code: FaultCode, plan: Plan | None) -> None:
        """Volatile state after power-on: nothing buffered, nothing pending, counters at 0."""
        self.state = state
        self.fault_code = fault_code
        self.plan = plan
        self._buffer = SpotBuffer(self.config.buffer_spots)
        self._decoder = FrameDecoder()
        self._out = bytearray()
        self._event_seq = 0
        self._service = False
        self._nonce: bytes | None = None
        self._boot_s = self._now_s
        self._last_rx_host_s = self._host_now_s
        self._armed_at_s = 0.0
        self._next_fire_s: float | None = None
        self._fire_times_s: np.ndarray | None = None  # of buffered spots, from _next_fire_s
        self._period_ready_s = 0.0
        self._galvo_free_s = 0.0
        self._delivered = b""  # DELIVERED_DTYPE records not yet reported
        self._flush_at_s: float | None = None
        self._jump: tuple[float, Message, int] | None = None  # (done at, request, time µs)
        self._stop: Stop | None = None  # PAUSED once the spot under way has ended (rule 5)
        #: requests held behind a GALVO_JUMP or a PAUSE, with their arrival (host time, for the
        #: watchdog)
        self._inbox: deque[tuple[RawFrame, float]] = deque()
        #: (lowest, highest) per record field of the request being handled (_validate)
        self._record_extremes: dict[str, tuple[int, int]] = {}
        self._deferred_events: list[bytes] | None = None
        self.laser.shutter_open = False
        self.laser.aiming_beam = False

    def reset(self) -> None:
        """Device reset (rule 9): FAULT with DEVICE_RESET, plan restored from non-volatile
        memory, buffer empty, the mirrors where they were; EVT_STATE (POWER_ON) once a host
        talks to it."""
        self._frames_dropped_before += self._decoder.errors
        self._power_on(later=True)
        self.counters["resets"] += 1

    def disconnect(self) -> None:
        """The host went away: drop unsent bytes and any partial frame."""
        self._frames_dropped_before += self._decoder.errors
        self._decoder = FrameDecoder()
        self._out.clear()

    # -- I/O ---------------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Bytes from the host, in any chunking; frames are handled at the current device time.

        Consecutive SPOT_BATCH requests that all pass every check are taken in one go
        (:meth:`_accept_batches`), with the replies one by one would give; otherwise, and for
        every other request, one at a time."""
        for batches, grouped in groupby(self._decoder.feed(data),
                                        key=lambda f: f.type_id == _SPOT_BATCH):
            frames = list(grouped)
            self.counters["frames_received"] += len(frames)
            if self._announce_power_on:
                self._announce_power_on = False
                self._event("EVT_STATE", old_state=State.FAULT, new_state=State.FAULT,
                            cause=Cause.POWER_ON, fault_code=self.fault_code)
            if batches and len(frames) > 1 and self._accept_batches(frames):
                self._feed_watchdog(self._host_now_s)
                continue
            for frame in frames:
                if self._holding or (frame.type_id == _PAUSE and self.completing):
                    # requests are handled in order, after the jump or pause; a PAUSE during
                    # the pass's last spot once the pass is complete (rule 6)
                    self._inbox.append((frame, self._host_now_s))
                else:
                    self._handle(frame, self._host_now_s)

    def transmit(self) -> bytes:
        """Drain the bytes waiting for the host."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def now_s(self) -> float:
        """Device time reached by the last :meth:`advance`."""
        return self._now_s

    @property
    def ground_truth(self) -> np.ndarray:
        """Every spot actually fired, in firing order (see :data:`sim_hw.truth.TRUTH_DTYPE`)."""
        return self.truth.array

    @property
    def fired_count(self) -> int:
        """Spots fired by this simulator so far, resets included (rows of :attr:`ground_truth`)."""
        return len(self.truth)

    @property
    def pausing(self) -> bool:
        """A footswitch release or PAUSE waits for the spot under way to end (rule 5): the
        state is still EMITTING, the spot's pulses still firing, and no further spot fires."""
        return self._stop is not None and self._stop.cause != Cause.PLAN_COMPLETE

    @property
    def completing(self) -> bool:
        """The pass's last spot has fired and its pulses are still firing (rule 6): the state
        is still EMITTING; STANDBY (PLAN_COMPLETE) once they have ended."""
        return self._stop is not None and self._stop.cause == Cause.PLAN_COMPLETE

    @property
    def frames_dropped(self) -> int:
        """Frames discarded as undecodable since the simulator started, over every connection."""
        return self._frames_dropped_before + self._decoder.errors

    # -- time --------------------------------------------------------------------------------

    def advance(self, now_s: float, host_now_s: float | None = None) -> None:
        """Run the device up to ``now_s`` on its clock.

        ``host_now_s`` is the time on which host silence is measured (the watchdog); it
        defaults to ``now_s`` and differs only under the virtual clock, which skips machine
        waits without letting the host's time run.
        """
        host_now_s = now_s if host_now_s is None else host_now_s
        self._host_now_s = host_now_s
        offset_s = now_s - host_now_s
        while True:
            due = self._next_due(offset_s, now_s)
            if due is None or due[0] > now_s:
                break
            t_s, action = due
            self._now_s = max(self._now_s, t_s)
            action()
        self._now_s = max(self._now_s, now_s)

    def _next_due(self, offset_s: float, now_s: float = math.inf
                  ) -> tuple[float, Callable[[], None]] | None:
        """The next action and its time; on a tie the earlier candidate goes first.

        Emission fires, in one chunk, every spot due by ``now_s`` and before the next other
        action (a galvo move completing, the watchdog; delivered reports are sent within the
        chunk): nothing else can happen in between.
        """
        candidates: list[tuple[float, Callable[[], None]]] = []
        if self._flush_at_s is not None:
            candidates.append((self._flush_at_s, self._flush_delivered))
        limit_s = now_s
        if self._jump is not None:
            candidates.append((self._jump[0], self._finish_jump))
            limit_s = min(limit_s, math.nextafter(self._jump[0], -math.inf))
        if self._stop is not None:  # nothing fires meanwhile (_next_fire_s is None)
            candidates.append((self._stop.end_s, self._finish_stop))
        watchdog_s = self._watchdog_deadline_host_s()
        if watchdog_s is not None:
            limit_s = min(limit_s, watchdog_s + offset_s)
        if self._next_fire_s is not None:
            candidates.append((self._next_fire_s, lambda: self._fire_chunk(limit_s)))
        if watchdog_s is not None:
            candidates.append((watchdog_s + offset_s, self._watchdog_expired))
        return min(candidates, key=lambda c: c[0]) if candidates else None

    def next_deadline(self) -> float | None:
        """Device time at which :meth:`advance` next has something to do, if any."""
        due = self._next_due(self._now_s - self._host_now_s)
        return None if due is None else due[0]

    def skippable_deadline(self) -> float | None:
        """Device time a virtual clock may skip to, or None when the device waits for the host
        or for real time: until then the device only waits for itself (spots, a galvo move,
        the end of a spot a pause waits for, delivered reports). Emission is skipped over at
        most :data:`VIRTUAL_SKIP_SPOTS` spots ahead, so that host requests still interleave
        with it."""
        machine = [t for t in (self._flush_at_s,
                               None if self._jump is None else self._jump[0],
                               None if self._stop is None else self._stop.end_s)
                   if t is not None]
        if self._next_fire_s is not None:
            machine.append(float(self._fire_times(VIRTUAL_SKIP_SPOTS)[-1]))
        return max(machine) if machine else None

    def _watchdog_deadline_host_s(self) -> float | None:
        """Section 7: ``watchdog_ms`` after the last accepted request, while something needs a
        host in control (emission armed, service mode, the aiming beam); not while requests
        wait behind a GALVO_JUMP (one of them may feed it as of its arrival once taken up)."""
        if (self.state in ACTIVE or self._service or self.laser.aiming_beam) and not self._inbox:
            return self._last_rx_host_s + self.config.watchdog_ms / 1000
        return None

    def _feed_watchdog(self, arrival_host_s: float) -> None:
        """An accepted request, received at ``arrival_host_s`` (section 7): the host is in
        control. A refused one proves only that something on the link computes a CRC."""
        self._last_rx_host_s = max(self._last_rx_host_s, arrival_host_s)

    def _watchdog_expired(self) -> None:
        self._service = False
        self.laser.aiming_beam = False
        if self.state in ACTIVE:
            self._fault(FaultCode.WATCHDOG, Cause.WATCHDOG)
            self._take_up_held()

    # -- inputs and injected conditions ------------------------------------------------------

    @property
    def interlocks(self) -> Interlock:
        """The interlock inputs as the device reports them: a set bit permits emission."""
        return Interlock(self._inputs)

    def set_input(self, **inputs: bool | str) -> None:
        """Change interlock inputs (``key``, ``door``/``interlock``, ``estop``, ``footswitch``):
        True or ``on``/``closed``/``released``/``down`` permit emission."""
        new = self._inputs
        for name, value in inputs.items():
            input_name, permits = parse_input(name, value)
            bit = _INPUT_BITS[input_name]
            new = (new | bit) if permits else (new & ~bit & 0xF)
        old, self._inputs = self._inputs, int(new)
        if old != new:
            self._event("EVT_INTERLOCK", old=int(old), new=int(new))
        self._check_interlocks(estop_pressed=bool(old & ~new & Interlock.ESTOP_RELEASED))
        self._take_up_held()  # a fault that cut a spot a PAUSE waited for: its reply has gone

    def _check_interlocks(self, estop_pressed: bool = False) -> None:
        """Rule 8 on the inputs as they are: the e-stop faults on its press (``estop_pressed``:
        released -> pressed just now) in any state, and whenever it is pressed in ARMED,
        EMITTING or PAUSED; an e-stop already pressed at power-on is no fault (ARM and
        RESET_FAULT refuse it)."""
        bits = self._inputs
        if not bits & Interlock.ESTOP_RELEASED and (estop_pressed or self.state in ACTIVE):
            self._fault(FaultCode.ESTOP, Cause.INTERLOCK)
        elif self.state in ACTIVE and not bits & Interlock.KEY_ON:
            self._fault(FaultCode.KEY_OFF, Cause.INTERLOCK)
        elif self.state in ACTIVE and not bits & Interlock.DOOR_CLOSED:
            self._fault(FaultCode.INTERLOCK_OPEN, Cause.INTERLOCK)
        elif self.state == State.EMITTING and not bits & Interlock.FOOTSWITCH_DOWN:
            self._pause(Cause.FOOTSWITCH)

    def set_temperature(self, temperature_dc: int) -> None:
        """Laser head temperature (0.1 °C); at or above the limit the device faults."""
        self.laser.temperature_dc = temperature_dc
        if self.laser.over_temperature:
            self._fault(FaultCode.OVER_TEMPERATURE, Cause.DEVICE_FAULT)
            self._take_up_held()

    def set_galvo_stuck(self, stuck: bool) -> None:
        """A stuck galvo never reaches its next target; the device faults when it notices."""
        self.galvo.stuck = stuck

    def set_drift(self, drift_percent: float) -> None:
        """Energy monitor reading off by ``drift_percent`` from the delivered energy."""
        self.laser.drift_percent = drift_percent

    # -- state changes -----------------------------------------------------------------------

    def _set_state(self, new: State, cause: Cause) -> None:
        old = self.state
        if old == new:
            return
        if old == State.EMITTING:
            self._end_emission(new, cause)
        if old == State.STANDBY:
            self._service = False
            self._nonce = None
        self.state = new
        self.laser.shutter_open = new == State.EMITTING
        if new == State.FAULT:  # everything the device emits goes off (rule 12)
            self.laser.aiming_beam = False
        if new == State.ARMED:
            self._armed_at_s = self._now_s
        self._event("EVT_STATE", old_state=old, new_state=new, cause=cause,
                    fault_code=self.fault_code if new == State.FAULT else FaultCode.NONE)
        if new == State.EMITTING:
            self._period_ready_s = max(self._period_ready_s, self._now_s)
            self._galvo_free_s = max(self._galvo_free_s, self._now_s)
            self._schedule_next()

    def _end_emission(self, new: State, cause: Cause) -> None:
        """Leaving EMITTING for ``new`` (rules 5, 6, 7, 8, 10): a spot under way is cut (ABORT,
        a fault) or over (a pause or the pass's completion waited for it); a PAUSE waiting for
        it is answered, then the delivered records are flushed (EVT_STATE follows)."""
        stop, self._stop = self._stop, None
        self._galvo_free_s = min(self._galvo_free_s, self._now_s)  # its pulses end here
        if stop is not None and stop.request is not None:
            request = stop.request
            self._reply(request, make_message(
                "ACK", acked_type=request.definition.type_id, state=new, credits=self.credits,
                value=0))
        self._flush_delivered()
        self._next_fire_s = None

    def _pause(self, cause: Cause, request: Message | None = None) -> bool:
        """Rule 5 (EMITTING): no further spot; PAUSED now when no spot is under way (True),
        else once its last pulse has ended, answering ``request`` (a PAUSE) then (False)."""
        if self._stop is not None:  # already stopping: the first cause stands
            if request is not None:
                self._stop = self._stop._replace(request=request)
            return False
        if self._galvo_free_s > self._now_s:  # the last spot's pulses have not ended
            self._stop = Stop(self._galvo_free_s, cause, request)
            self._next_fire_s = None
            self._fire_times_s = None
            return False
        self._set_state(State.PAUSED, cause)
        return True

    def _complete(self) -> None:
        """Rule 6: the pass's last spot has fired; STANDBY (PLAN_COMPLETE) once its last pulse
        has ended (at once when it has no duration). Until then the state is EMITTING and no
        spot fires (none is left)."""
        if self._galvo_free_s > self._now_s:
            self._stop = Stop(self._galvo_free_s, Cause.PLAN_COMPLETE, None)
            self._next_fire_s = None
            self._fire_times_s = None
        else:
            self._finish_complete()

    def _finish_complete(self) -> None:
        self._unload_plan()
        self._set_state(State.STANDBY, Cause.PLAN_COMPLETE)

    def _finish_stop(self) -> None:
        """The spot under way at a PAUSE or footswitch release has ended: PAUSED; or the pass's
        last spot has: STANDBY. Then the requests that waited."""
        assert self._stop is not None
        if self._stop.cause == Cause.PLAN_COMPLETE:
            self._finish_complete()
        else:
            self._set_state(State.PAUSED, self._stop.cause)
        self._take_up_held()

    @property
    def _holding(self) -> bool:
        """Requests wait (in order) for a GALVO_JUMP's end, for a PAUSE's reply, or behind a
        PAUSE received during the pass's last spot (rule 6)."""
        return self._jump is not None or (self._stop is not None and (
            self._stop.request is not None or bool(self._inbox)))

    def _take_up_held(self) -> None:
        """Handle, in order, the requests that waited behind a jump or a pause now over."""
        while self._inbox and not self._holding:
            self._handle(*self._inbox.popleft())

    def _fault(self, code: FaultCode, cause: Cause) -> None:
        """Rule 8: emission off at once (the spot under way is cut), buffer cleared, no
        automatic restart."""
        if self.state == State.FAULT:
            return
        self.fault_code = code
        self._clear_buffer()
        if self.plan is not None and self.plan.loaded:
            self.plan.next_index = self.plan.resume_index()
        self._set_state(State.FAULT, cause)

    def _persist(self, plan: Plan) -> None:
        """Write the plan's progress and its fired index to non-volatile memory (rules 1, 9)."""
        record = self.nv.pass_record
        if record is None:
            self.nv.pass_record = plan.record()
        else:
            record.delivered_count = plan.delivered_count
            record.last_delivered = plan.last_delivered
        self.nv.remember_fired(plan.plan_checksum, plan.pass_index, plan.last_delivered)
        self._nv_written()

    def _nv_written(self) -> None:
        """The non-volatile memory changed: hand it to whoever keeps it (a state file)."""
        if self._on_nv_write is not None:
            self._on_nv_write(self.nv)

    def _clear_buffer(self) -> None:
        self._buffer.clear()
        self._fire_times_s = None
        self._next_fire_s = None

    def _unload_plan(self) -> None:
        if self.plan is not None:
            self.plan.loaded = False
        self.nv.pass_record = None
        self._nv_written()
        self._clear_buffer()

    @property
    def credits(self) -> int:
        """Free places in the spot buffer: how many more spots the host may send now."""
        return self.config.buffer_spots - len(self._buffer)

    @property
    def plan_loaded(self) -> bool:
        """A pass is loaded (``plan`` may still hold an unloaded one, for its progress)."""
        return self.plan is not None and self.plan.loaded

    @property
    def flags(self) -> DeviceFlag:
        """The status flags as the device reports them, from its state, laser and service mode."""
        flags = DeviceFlag(0)
        if self.state in ACTIVE:
            flags |= DeviceFlag.EMISSION_INDICATOR
        if self.laser.aiming_beam:
            flags |= DeviceFlag.AIMING_BEAM
        if self.laser.shutter_open:
            flags |= DeviceFlag.SHUTTER_OPEN | DeviceFlag.LASER_ON
        if self._service:
            flags |= DeviceFlag.SERVICE_MODE
        if self.plan_loaded:
            flags |= DeviceFlag.PLAN_LOADED
        if self.laser.over_temperature:
            flags |= DeviceFlag.OVER_TEMPERATURE
        return flags

    # -- emission ----------------------------------------------------------------------------

    def _schedule_next(self) -> None:
        """When the next buffered spot fires: after the rep-rate period and the galvo jump."""
        if self.state != State.EMITTING or self._stop is not None or not len(self._buffer):
            self._next_fire_s = None
            return
        spot = self._buffer.ahead(1)
        self._galvo_free_s = max(self._galvo_free_s, self._now_s)
        jump_s = self.galvo.jump_time_us(int(spot.mirror_x[0]), int(spot.mirror_y[0])) / 1e6
        self._next_fire_s = max(self._period_ready_s, self._galvo_free_s + jump_s)
        self._fire_times_s = None

    def _fire_times(self, count: int) -> np.ndarray:
        """Fire times of the next ``count`` (at most) buffered spots, the first at
        ``_next_fire_s``: each after the rep-rate period and after the previous spot's pulses
        plus the galvo jump to it, as :meth:`_schedule_next` would schedule them one by one."""
        assert self._next_fire_s is not None
        count = min(count, len(self._buffer))
        known = self._fire_times_s  # valid until the next _schedule_next or _clear_buffer
        if known is None:
            known = np.array([self._next_fire_s])
        if len(known) < count:  # continue the sum from the last time known
            spots = self._buffer.ahead(count)
            skip = len(known) - 1
            record = spots.spot[skip:-1]
            known = np.concatenate((known[:-1], fire_times(
                float(known[-1]), spots.mirror_x[skip:], spots.mirror_y[skip:],
                record["pulse_us"], record["stack"], 1 / self.nv.rep_rate_hz, self.galvo)))
        self._fire_times_s = known
        return known[:count]

    def _fire_chunk(self, limit_s: float) -> None:
        """Fire, in order, every buffered spot due by ``limit_s`` (rule 4).

        The inputs, the temperature and the galvo change only between :meth:`advance` calls
        (and act at once when they do), so checking them before the chunk checks them before
        every spot of it: an interlock that opens is seen before the next spot fires.
        """
        if self._inputs & _EMIT_BITS != _EMIT_BITS:  # rule 4: re-checked before every spot
            self._check_interlocks()
            return
        plan = self.plan
        assert plan is not None and self._next_fire_s is not None
        if self.laser.over_temperature:
            self._fault(FaultCode.OVER_TEMPERATURE, Cause.DEVICE_FAULT)
            return
        if self.galvo.stuck:  # the mirrors do not reach the first spot
            self._fault(FaultCode.GALVO_STUCK, Cause.DEVICE_FAULT)
            return
        times_s = self._fire_times(VIRTUAL_SKIP_SPOTS)  # usually known already
        if times_s[-1] <= limit_s:  # more may be due: each takes at least the rep-rate period
            times_s = self._fire_times(
                int((limit_s - self._next_fire_s) * self.nv.rep_rate_hz) + 2)
        count = int(np.searchsorted(times_s, limit_s, side="right"))
        times_s = times_s[:count]
        buffered = self._buffer.ahead(count)
        spots = buffered.spot
        last = spots[-1]
        index = int(last["index"])
        plan.delivered_count += count
        plan.last_delivered = index
        self._persist(plan)  # before the spots fire: a power loss may lose one, never re-fire it
        self.galvo.move(int(buffered.mirror_x[-1]), int(buffered.mirror_y[-1]))
        measured_uj = self.laser.fire(spots["energy_uj"], spots["stack"])
        self.truth.extend_fired(spots, measured_uj, times_s, plan.pass_index)
        delivered = np.empty(count, DELIVERED_DTYPE)
        delivered["index"], delivered["measured_uj"] = spots["index"], measured_uj
        self._report(delivered, times_s + spots["pulse_us"] * spots["stack"] / 1e6)  # ends
        t_s = float(times_s[-1])
        self._now_s = max(self._now_s, t_s)
        self._period_ready_s = t_s + 1 / self.nv.rep_rate_hz
        self._galvo_free_s = t_s + int(last["pulse_us"]) * int(last["stack"]) / 1e6  # as
        # Laser.spot_duration_s gives it, without numpy for one spot
        known = self._fire_times_s
        assert known is not None
        if index == plan.spot_count - 1:
            self._complete()
        elif len(known) > count:  # the next spot's time is known: as _schedule_next gives it
            self._next_fire_s = float(known[count])
            self._fire_times_s = known[count:]
        else:
            self._schedule_next()

    def _report(self, records: np.ndarray, times_s: np.ndarray) -> None:
        """Take fired spots off the buffer and into delivered reports (section 6.1, see
        :func:`sim_hw.reports_ref.delivered_reports`; built by its compiled twin). ``times_s``
        are the spots' ends (their last pulse), from which the 10 ms deadline counts."""
        credits = self.credits  # before any of these spots leave the buffer
        self._buffer.pop(len(records))
        size = DELIVERED_DTYPE.itemsize
        data = self._delivered + records.tobytes()
        wire, reports, unsent, self._flush_at_s = delivered_reports(
            data, times_s, len(self._delivered) // size, self._flush_at_s, credits,
            self._event_seq)
        if reports:
            self._send_events(wire, reports)
        self._delivered = data[unsent * size:]

    def _flush_delivered(self) -> None:
        self._flush_at_s = None
        if self._delivered:
            records, self._delivered = self._delivered, b""
            payload = _DELIVERED.struct.pack(len(records) // DELIVERED_DTYPE.itemsize,
                                             self.credits) + records
            self._send_events(encode_frame(_DELIVERED.type_id, self._event_seq, payload))

    def _finish_jump(self) -> None:
        assert self._jump is not None
        _, request, jump_us = self._jump
        self._jump = None
        mirror_x, mirror_y = (int(v) for v in self.galvo.corrected(int(request["x_lsb"]),
                                                                   int(request["y_lsb"])))
        self._deferred_events = []  # rule 10: the reply goes out before the fault's events
        try:
            if self.galvo.move(mirror_x, mirror_y):
                self._reply(request, self._ack(request, jump_us))
            else:
                self._fault(FaultCode.GALVO_STUCK, Cause.DEVICE_FAULT)
                self._nack(request.definition.type_id, request.seq, Refused(
                    ErrorCode.FAULT_ACTIVE, FaultCode.GALVO_STUCK, "galvo did not reach target"))
        finally:
            self._send_deferred_events()
        self._take_up_held()

    # -- output ------------------------------------------------------------------------------

    def _write(self, msg: Message) -> None:
        self._out += encode_message(msg)

    def _event(self, name: str, records: np.ndarray | None = None, **values: int) -> None:
        msg = make_message(name, self._event_seq, records=records, text="", **values)
        self._send_events(encode_message(msg))

    def _send_events(self, wire: bytes, count: int = 1) -> None:
        """Send the frames of ``count`` events, numbered from the current event sequence on;
        while a request is handled, after its reply."""
        self._event_seq = (self._event_seq + count) & 0xFFFF
        self.counters["events_sent"] += count
        if self._deferred_events is not None:
            self._deferred_events.append(wire)
        else:
            self._out += wire

    def _send_deferred_events(self) -> None:
        """Send the events held back while a request was answered (after its reply)."""
        events, self._deferred_events = self._deferred_events, None
        for event in events or ():
            self._out += event

    def _ack(self, request: Message, value: int = 0) -> Message:
        return make_message("ACK", request.seq, acked_type=request.definition.type_id,
                            state=self.state, credits=self.credits, value=value)

    def _reply(self, request: Message, reply: Message) -> None:
        reply.seq = request.seq
        self.counters["replies_sent"] += 1
        self._write(reply)

    def _nack(self, type_id: int, seq: int, refusal: Refused) -> None:
        self.counters["nacks_sent"] += 1
        self.counters["replies_sent"] += 1
        self._write(make_message("NACK", seq, text=refusal.text[:64], refused_type=type_id,
                                 error=refusal.error, state=self.state, detail=refusal.detail))

    # -- request handling --------------------------------------------------------------------

    def _handle(self, frame: RawFrame, arrival_host_s: float) -> None:
        """Validate and execute one request; its reply goes out before the events it caused.
        Accepted (not refused), it feeds the watchdog as of its arrival.

        Delivered records still pending go out before a STATUS_REPORT (spec section 6.1), so
        every spot the report counts has been reported first."""
        if frame.type_id == _STATUS_REQUEST:
            self._flush_delivered()
        self._deferred_events = []
        try:
            request = self._validate(frame)
            reply = getattr(self, _HANDLERS[request.name])(request)
        except Refused as refusal:
            self._nack(frame.type_id, frame.seq, refusal)
        else:
            self._feed_watchdog(arrival_host_s)
            if reply is not None:
                self._reply(request, reply)
        finally:
            self._send_deferred_events()

    def _validate(self, frame: RawFrame) -> Message:
        """Section 2.1 checks in order: version, type, length, ranges, state, service mode."""
        if frame.version != PROTOCOL_VERSION:
            raise Refused(ErrorCode.BAD_VERSION, PROTOCOL_VERSION,
                          f"version {frame.version}, device speaks {PROTOCOL_VERSION}")
        definition = BY_ID.get(frame.type_id)
        if definition is None or definition.direction != Direction.HOST:
            raise Refused(ErrorCode.UNKNOWN_MESSAGE, frame.type_id,
                          f"type 0x{frame.type_id:02X} is not a host request")
        self._record_extremes = _check_layout(definition, frame.payload)
        try:
            request = decode_payload(frame, records_checked=True)  # by _check_layout
        except MessageError as exc:  # every cause was checked above; refuse anything left
            raise Refused(ErrorCode.OUT_OF_RANGE, 0, str(exc)[:64]) from None
        if self.state not in definition.legal_in:
            raise Refused(ErrorCode.ILLEGAL_STATE, self.state,
                          f"{definition.name} not legal in {self.state.name}")
        if definition.service and not self._service:
            raise Refused(ErrorCode.NOT_AUTHENTICATED, 0, f"{definition.name} needs service mode")
        return request

    def _on_identify(self, request: Message) -> Message:
        cfg, limits = self.config, self.laser.limits
        major, minor, patch = cfg.fw_version
        return make_message(
            "IDENTIFY_REPLY", protocol_version=PROTOCOL_VERSION, fw_major=major, fw_minor=minor,
            fw_patch=patch, serial=cfg.serial.encode("ascii")[:16].ljust(16, b"\0"),
            capabilities=int(CAPABILITIES),
            field_size_um=self.galvo.calibration.field_size_um,
            usable_lsb_min=cfg.usable_lsb_min, usable_lsb_max=cfg.usable_lsb_max,
            energy_min_uj=cfg.energy_min_uj, energy_max_uj=limits.energy_max_uj,
            pulse_min_us=cfg.pulse_min_us, pulse_max_us=cfg.pulse_max_us,
            rep_rate_max_hz=limits.rep_rate_max_hz, avg_power_max_mw=limits.avg_power_max_mw,
            buffer_spots=cfg.buffer_spots, max_stack=cfg.max_stack, watchdog_ms=cfg.watchdog_ms,
            heartbeat_ms=cfg.heartbeat_ms, pre_emission_ms=cfg.pre_emission_ms,
            jump_speed_um_per_ms=cfg.jump_speed_um_per_ms, settle_us=cfg.settle_us)

    def _on_heartbeat(self, request: Message) -> Message:
        return self._ack(request)

    def status_values(self) -> dict[str, int]:
        """The fields of a STATUS_REPORT as of now."""
        plan = self.plan
        return {
            "state": self.state, "interlocks": int(self._inputs), "flags": int(self.flags),
            "fault_code": self.fault_code, "pass_index": plan.pass_index if plan else 0,
            "credits": self.credits, "plan_checksum": plan.plan_checksum if plan else 0,
            "spot_count": plan.spot_count if plan else 0,
            "next_index": plan.next_index if plan else 0,
            "delivered_count": plan.delivered_count if plan else 0,
            "last_delivered": plan.last_delivered if plan else NO_INDEX,
            "uptime_ms": int((self._now_s - self._boot_s) * 1000) & 0xFFFFFFFF,
            "temperature_dc": self.laser.temperature_dc,
            "rep_rate_hz": min(self.nv.rep_rate_hz, 0xFFFF),
        }

    def _on_status_request(self, request: Message) -> Message:
        return make_message("STATUS_REPORT", text="", **self.status_values())

    def _on_auth_begin(self, request: Message) -> Message:
        self._nonce = self._rng.randbytes(NONCE_SIZE)
        return make_message("AUTH_CHALLENGE", nonce=self._nonce)

    def _on_auth_response(self, request: Message) -> Message:
        nonce, self._nonce = self._nonce, None  # consumed by the first response, right or wrong
        if nonce is None:
            raise Refused(ErrorCode.AUTH_FAILED, 0, "no challenge outstanding")
        expected = hmac.new(self.nv.device_key, AUTH_CONTEXT + nonce, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, bytes(request["mac"])):
            raise Refused(ErrorCode.AUTH_FAILED, 0, "wrong response")
        self._service = True
        return self._ack(request)

    def _on_auth_end(self, request: Message) -> Message:
        self._service = False
        self._nonce = None
        return self._ack(request)

    def _on_set_calibration(self, request: Message) -> Message:
        for name, value in request.values.items():  # the galvo's calibration
            setattr(self.nv.calibration, name, int(value))
        self._nv_written()
        return self._ack(request)

    def _on_set_limits(self, request: Message) -> Message:
        factory = self.laser.factory
        for name in ("energy_max_uj", "rep_rate_max_hz", "avg_power_max_mw"):
            if int(request[name]) > getattr(factory, name):
                raise Refused(ErrorCode.OUT_OF_RANGE, getattr(factory, name),
                              f"{name} {int(request[name])} above factory limit")
        if int(request["energy_max_uj"]) < self.config.energy_min_uj:
            raise Refused(ErrorCode.OUT_OF_RANGE, int(request["energy_max_uj"]),
                          f"energy_max_uj below energy_min_uj {self.config.energy_min_uj}")
        for name in ("energy_max_uj", "rep_rate_max_hz", "avg_power_max_mw"):
            setattr(self.nv.limits, name, int(request[name]))  # the laser's limits
        self.nv.rep_rate_hz = min(self.nv.rep_rate_hz, self.nv.limits.rep_rate_max_hz)
        self._nv_written()
        return self._ack(request)

    def _on_set_device_key(self, request: Message) -> Message:
        self.nv.device_key = bytes(request["key"])
        self._nv_written()
        return self._ack(request)

    def _on_galvo_jump(self, request: Message) -> None:
        x, y = int(request["x_lsb"]), int(request["y_lsb"])
        for axis, value in (("x", x), ("y", y)):
            if not self.galvo.reachable_axis(value, axis):
                raise Refused(ErrorCode.OUT_OF_RANGE, value, f"{axis}_lsb outside the field")
        jump_us = self.galvo.jump_time_us(*(int(v) for v in self.galvo.corrected(x, y)))
        self._jump = (self._now_s + jump_us / 1e6, request, jump_us)  # ACK once settled

    def _on_aiming_beam(self, request: Message) -> Message:
        self.laser.aiming_beam = bool(request["on"])
        return self._ack(request)

    def _on_pulse_settings(self, request: Message) -> Message:
        rate_hz = int(request["rep_rate_hz"])
        limits = self.laser.limits
        if rate_hz > limits.rep_rate_max_hz:
            raise Refused(ErrorCode.OUT_OF_RANGE, rate_hz,
                          f"rep rate above {limits.rep_rate_max_hz} Hz")
        if len(self._buffer):
            buffered = self._buffer.ahead().spot
            peak_uj = int(np.multiply(buffered["energy_uj"], buffered["stack"],
                                      dtype=np.int64).max())
            if peak_uj * rate_hz > limits.avg_power_max_mw * 1000:
                raise Refused(ErrorCode.OUT_OF_RANGE, rate_hz,
                              "buffered spots would exceed the average power limit")
        self.nv.rep_rate_hz = rate_hz
        self._nv_written()
        return self._ack(request)

    def _on_load_plan(self, request: Message) -> Message:
        spot_count, first = int(request["spot_count"]), int(request["first_index"])
        checksum = int(request["plan_checksum"])
        if first >= spot_count:
            raise Refused(ErrorCode.OUT_OF_RANGE, first, f"first_index >= spot_count {spot_count}")
        floor = self.nv.fired_through(checksum, int(request["pass_index"]))
        if floor != NO_INDEX and first <= floor:
            raise Refused(ErrorCode.BAD_INDEX, floor + 1, f"spot {floor} already delivered")
        self._clear_buffer()
        self.plan = Plan(int(request["pass_index"]), spot_count, checksum, first,
                         next_index=first)
        self.nv.pass_record = self.plan.record()
        self._nv_written()
        self._set_state(State.READY, Cause.HOST_COMMAND)
        return make_message("PLAN_LOADED", pass_index=self.plan.pass_index,
                            spot_count=spot_count, plan_checksum=checksum, next_index=first,
                            credits=self.credits)

    def _on_spot_batch(self, request: Message) -> Message:
        plan = self.plan
        assert plan is not None and plan.loaded
        spots = request.records
        assert spots is not None
        extremes = self._record_extremes  # of these records, by _check_layout in _validate
        wrong = first_out_of_sequence(spots, plan.next_index)
        if wrong >= 0:
            raise Refused(ErrorCode.BAD_INDEX, plan.next_index + wrong,
                          f"batch must continue at {plan.next_index}")
        if len(spots) > self.credits:
            raise Refused(ErrorCode.BUFFER_FULL, self.credits,
                          f"{len(spots)} spots, {self.credits} credits")
        x, y = spots["x_lsb"], spots["y_lsb"]
        mirror_x, mirror_y = self.galvo.corrected(x, y)
        rate_hz = self.nv.rep_rate_hz
        if not self._all_within_limits(spots, extremes, mirror_x, mirror_y):
            indices = spots["index"].astype(np.int64)
            ok = ((indices < plan.spot_count) & self.galvo.reachable(x, y)
                  & self.laser.spots_allowed(spots["energy_uj"], spots["pulse_us"],
                                             spots["stack"], rate_hz))
            bad = np.flatnonzero(~ok)
            raise Refused(ErrorCode.OUT_OF_RANGE, int(indices[bad[0]]),
                          f"spot {indices[bad[0]]} outside the device limits")
        self._buffer.extend(spots, mirror_x, mirror_y)
        plan.next_index += len(spots)
        if self._next_fire_s is None:
            self._schedule_next()
        return self._ack(request, plan.next_index)

    def _all_within_limits(self, spots: np.ndarray, extremes: dict[str, tuple[int, int]],
                           mirror_x: np.ndarray, mirror_y: np.ndarray) -> bool:
        """Every spot of a batch continuing the plan lies within it, and within the galvo's
        and the laser's limits (from the records' extremes)."""
        plan = self.plan
        assert plan is not None
        # indices are consecutive here: the last is the largest
        return (plan.next_index + len(spots) - 1 < plan.spot_count
                and self.galvo.all_reachable(extremes["x_lsb"], extremes["y_lsb"],
                                             mirror_x, mirror_y)
                and self.laser.all_allowed(extremes, spots["energy_uj"], spots["stack"],
                                           self.nv.rep_rate_hz))

    def _accept_batches(self, frames: list[RawFrame]) -> bool:
        """Take consecutive SPOT_BATCH requests at once when every one of them would be
        acknowledged (their records together continue the plan, fit the credits and the
        device limits): the same buffer, plan and replies as :meth:`_on_spot_batch` one by
        one. False, changing nothing, when any check would refuse one (or a galvo jump is
        under way): then they are handled one by one, for the refusal's exact reply."""
        plan = self.plan
        if (self._holding or self.state not in _SPOT_BATCH_DEF.legal_in
                or (_SPOT_BATCH_DEF.service and not self._service)
                or plan is None or not plan.loaded):
            return False
        joined = joined_records(frames)
        if joined is None:
            return False
        spots = joined[0]
        total = len(spots)
        if total > self.credits or first_out_of_sequence(spots, plan.next_index) >= 0:
            return False
        extremes = record_extremes(_SPOT_BATCH_DEF, spots, _EXTREME_FIELDS["SPOT_BATCH"])
        mirror_x, mirror_y = self.galvo.corrected(spots["x_lsb"], spots["y_lsb"])
        if not self._all_within_limits(spots, extremes, mirror_x, mirror_y):
            return False
        credits, next_index = self.credits, plan.next_index
        self._buffer.extend(spots, mirror_x, mirror_y)
        plan.next_index += total
        if self._next_fire_s is None:
            self._schedule_next()
        record_size = spots.dtype.itemsize
        for frame in frames:
            taken = (len(frame.payload) - _SPOT_BATCH_DEF.struct.size) // record_size
            credits -= taken
            next_index += taken
            # packed straight from its layout, as _ack would give it (the batch intake test
            # compares these bytes with one request at a time): the most frequent reply
            self._out += encode_frame(_ACK.type_id, frame.seq, _ACK.struct.pack(
                _SPOT_BATCH, self.state, credits, next_index))
        self.counters["replies_sent"] += len(frames)
        return True

    def _on_arm(self, request: Message) -> Message:
        assert self.plan is not None
        if int(request["plan_checksum"]) != self.plan.plan_checksum:
            raise Refused(ErrorCode.PLAN_MISMATCH, self.plan.plan_checksum,
                          "checksum differs from LOAD_PLAN")
        if self._inputs & SAFETY_INTERLOCKS != SAFETY_INTERLOCKS:
            raise Refused(ErrorCode.INTERLOCK_OPEN, int(self._inputs), "safety interlock open")
        self._set_state(State.ARMED, Cause.HOST_COMMAND)
        return self._ack(request)

    def _on_disarm(self, request: Message) -> Message:
        self._set_state(State.READY, Cause.HOST_COMMAND)
        return self._ack(request)

    def _require_footswitch(self) -> None:
        if not self._inputs & Interlock.FOOTSWITCH_DOWN:
            raise Refused(ErrorCode.FOOTSWITCH_UP, int(self._inputs), "footswitch up")

    def _on_start(self, request: Message) -> Message:
        on_us = round((self._now_s - self._armed_at_s) * 1e6)
        left_ms = math.ceil((self.config.pre_emission_ms * 1000 - on_us) / 1000)
        if left_ms > 0:
            raise Refused(ErrorCode.INDICATOR_DELAY, left_ms, f"indicator on for {left_ms} ms more")
        self._require_footswitch()
        self._set_state(State.EMITTING, Cause.HOST_COMMAND)
        return self._ack(request)

    def _on_pause(self, request: Message) -> Message | None:
        """Rule 5: answered once the spot under way, if any, has ended (requests after it wait)."""
        return self._ack(request) if self._pause(Cause.HOST_COMMAND, request) else None

    def _on_resume(self, request: Message) -> Message:
        self._require_footswitch()
        self._set_state(State.EMITTING, Cause.HOST_COMMAND)
        return self._ack(request)

    def _on_abort(self, request: Message) -> Message:
        self._unload_plan()
        self._set_state(State.STANDBY, Cause.HOST_COMMAND)
        return self._ack(request)

    def _on_reset_fault(self, request: Message) -> Message:
        if self._inputs & SAFETY_INTERLOCKS != SAFETY_INTERLOCKS:
            raise Refused(ErrorCode.INTERLOCK_OPEN, int(self._inputs), "safety interlock open")
        if self.laser.over_temperature:
            raise Refused(ErrorCode.FAULT_ACTIVE, FaultCode.OVER_TEMPERATURE, "still too hot")
        if self.galvo.stuck:
            raise Refused(ErrorCode.FAULT_ACTIVE, FaultCode.GALVO_STUCK, "galvo still stuck")
        self._set_state(State.READY if self.plan_loaded else State.STANDBY, Cause.HOST_COMMAND)
        return self._ack(request)

    def _on_raise_fault(self, request: Message) -> Message:
        self._fault(FaultCode(int(request["fault_code"])), Cause.HOST_COMMAND)
        return self._ack(request)


def _narrow_field_bounds(definition: MessageDef) -> tuple[tuple[int, str, int, int], ...]:
    """(position, name, lo, hi) of the fixed fields whose bounds are narrower than their wire
    type: the only ones an unpacked value can fail."""
    narrow = []
    for position, f in enumerate(definition.fields):
        bounds = f.bounds()
        if bounds is not None and bounds != dataclasses.replace(f, lo=None, hi=None).bounds():
            narrow.append((position, f.name, *bounds))
    return tuple(narrow)


_NARROW_FIELDS = {definition.name: _narrow_field_bounds(definition) for definition in MESSAGES}
#: The SimDevice method that handles each request.
_HANDLERS = {definition.name: f"_on_{definition.name.lower()}" for definition in MESSAGES
             if definition.direction == Direction.HOST}
#: The record fields whose extremes the device compares (layout bounds, then its limits).
_EXTREME_FIELDS = {"SPOT_BATCH": ("x_lsb", "y_lsb", "energy_uj", "pulse_us", "stack", "flags")}
_COUNT_POSITION = {definition.name: [f.name for f in definition.fields].index(definition.count)
                   for definition in MESSAGES if definition.count}


def _check_layout(definition: MessageDef, payload: bytes) -> dict[str, tuple[int, int]]:
    """BAD_LENGTH (detail = expected length) and OUT_OF_RANGE (detail = value, or the spot
    index for a record) against the message's layout, before the payload is decoded.

    Returns the (lowest, highest) of every record field (empty without records), which the
    device's limit checks use instead of scanning the records again."""
    fixed = definition.struct.size
    expected = fixed
    values = definition.struct.unpack_from(payload) if len(payload) >= fixed else ()
    if definition.record_dtype is not None and values:
        count = values[_COUNT_POSITION[definition.name]]
        expected += int(count) * definition.record_dtype.itemsize
    if len(payload) != expected:
        raise Refused(ErrorCode.BAD_LENGTH, expected,
                      f"{definition.name} payload {len(payload)} bytes, expected {expected}")
    for position, name, lo, hi in _NARROW_FIELDS[definition.name]:
        value = values[position]
        if not lo <= value <= hi:
            raise Refused(ErrorCode.OUT_OF_RANGE, value, f"{name}={value} outside {lo}..{hi}")
    if definition.record_dtype is None:
        return {}
    records = np.frombuffer(payload, definition.record_dtype, offset=fixed)
    if not len(records):
        return {}
    extremes = record_extremes(definition, records, _EXTREME_FIELDS.get(definition.name))
    if all((lo is None or extremes[name][0] >= lo) and (hi is None or extremes[name][1] <= hi)
           for name, lo, hi in narrow_record_bounds(definition)):
        return extremes
    bad = np.zeros(len(records), bool)
    for f in definition.record:
        lo, hi = f.bounds() or (0, 0)
        bad |= (records[f.name] < lo) | (records[f.name] > hi)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise Refused(ErrorCode.OUT_OF_RANGE, int(records["index"][first]),
                      f"spot {records['index'][first]} has a field outside its range")
    return extremes
