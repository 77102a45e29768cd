"""The hardware abstraction the controller uses: one ``Device``, whatever the transport."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from drivers.checks import whole
from drivers.errors import (
    DeviceClosed,
    DeviceError,
    DeviceNack,
    DeviceTimeout,
    IndicatorDelay,
    LimitError,
    PlanMismatch,
)
from drivers.galvo import GalvoScanner
from drivers.info import DeviceInfo, DeviceStatus
from drivers.link import FIRING_STATES, EventQueue, Item, Link
from drivers.protocol import Message
from drivers.protocol.messages import (
    AUTH_CONTEXT,
    BY_NAME,
    HOST_FAULTS,
    KEY_SIZE,
    PROTOCOL_VERSION,
    SPOT_DTYPE,
    ErrorCode,
    FaultCode,
    State,
)
from drivers.pulse import PulseGenerator
from drivers.spots import PassSpots
from drivers.stream import PassStreamer, Progress
from drivers.transports.base import Transport

log = logging.getLogger(__name__)

#: The least time stopping emission waits for the device's replies (s), whatever its watchdog.
STOP_BUDGET_MIN_S = 0.25
#: The pass indices LOAD_PLAN carries (a u8 on the wire).
PASS_INDEX_RANGE: tuple[int, int] = next(
    f for f in BY_NAME["LOAD_PLAN"].fields if f.name == "pass_index").bounds() or (0, 0)


class Device:
    """A connected laser device: identity, scanner, pulse generator, arming and streaming.

    Use as a context manager (``with open_device(url) as dev:``); closing stops emission (best
    effort), then the link's threads, and closes the transport. Every value is checked against
    the limits the device reported before it is sent; the device checks them again.
    """

    def __init__(self, transport: Transport, request_timeout_s: float = 1.0) -> None:
        #: True once :meth:`close` has begun (from any thread): the host closed it
        self.closed = False
        #: whether close() had the device confirm emission stopped (None: not closed, or
        #: closed read-only); set once close() is done (:meth:`wait_closed`)
        self.stop_confirmed: bool | None = None
        self._close_done = threading.Event()
        self._closing = threading.Lock()  # close() waits for an ARM, START or RESUME under way
        self.transport = transport
        self.link = Link(transport, request_timeout_s=request_timeout_s)
        try:
            self.info = self.identify()
        except BaseException:
            self.link.close()
            raise
        limits = self.info.limits
        self.link.heartbeat_s = limits.heartbeat_ms / 1000.0
        self.link.watchdog_s = limits.watchdog_ms / 1000.0
        self.link.spot_s = self.longest_spot_s()
        self.scanner = GalvoScanner(self.link, limits, self.info.capabilities,
                                    refresh=self._read_limits)
        self.laser = PulseGenerator(self.link, limits)

    @property
    def url(self) -> str:
        """The URL the device was opened with (its transport's)."""
        return self.transport.url

    @property
    def simulator(self) -> Any:
        """The simulator's handle (``.device``, ``.faults``) behind ``sim://`` or the simulated
        USB backend; None for real hardware."""
        return getattr(self.transport, "simulator", None)

    # -- queries ----------------------------------------------------------------------------
    def identify(self) -> DeviceInfo:
        """Identity, capabilities and limits; refuses a device of another protocol version."""
        info = DeviceInfo.from_message(self.link.request("IDENTIFY"))
        if info.protocol_version != PROTOCOL_VERSION:
            raise DeviceError(f"device speaks protocol {info.protocol_version}, "
                              f"co2scan speaks {PROTOCOL_VERSION}")
        return info

    def status(self) -> DeviceStatus:
        """The device's state, interlocks, loaded pass and counts (STATUS_REPORT)."""
        return DeviceStatus.from_message(self.link.request("STATUS_REQUEST"))

    def subscribe(self, callback: Callable[[Item], None],
                  on_error: Callable[[Exception], None] | None = None) -> Callable[[], None]:
        """Receive every asynchronous event (and DeviceLost) on a thread of this callback's
        own; returns an unsubscribe function. An exception the callback raises is handed to
        ``on_error`` (else only logged). See :meth:`Link.subscribe`."""
        return self.link.subscribe(callback, on_error)

    def caught_up(self, callback: Callable[[Item], None], timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until ``callback`` (subscribed) has handled every event
        received so far: whether it did (:meth:`Link.caught_up`)."""
        return self.link.caught_up(callback, timeout_s)

    @contextlib.contextmanager
    def events(self) -> Iterator[EventQueue]:
        """A queue receiving every event from now on, in wire order with the replies of what
        :meth:`stream` sends (events, runs of delivered reports, the link's loss); released on
        leaving the block. Open it before a START or RESUME and hand it to :meth:`stream`, so
        that no report sent in between is missed."""
        events = self.link.queue_events()
        try:
            yield events
        finally:
            self.link.unqueue_events(events)

    # -- a pass -----------------------------------------------------------------------------
    def prepare_pass(self, pass_index: int, x_um: ArrayLike, y_um: ArrayLike,
                     energy_uj: ArrayLike, pulse_us: ArrayLike, stack: ArrayLike,
                     rep_rate_hz: int | None = None) -> PassSpots:
        """Convert and check one pass's spots; raises LimitError naming the bad field (and
        the spot, for a value that is not a whole number). ``y_um``, ``energy_uj``,
        ``pulse_us`` and ``stack`` are one value for every spot or one per spot."""
        pass_index = whole("pass_index", pass_index, *PASS_INDEX_RANGE, "")
        x = np.asarray(x_um, dtype=np.float64)
        n = x.size
        if n == 0:
            raise LimitError("spot count", 0, "at least 1")
        given = {"y_um": y_um, "energy_uj": energy_uj, "pulse_us": pulse_us, "stack": stack}
        for name, values in given.items():
            if (size := np.size(values)) != 1 and np.shape(values) != x.shape:
                raise LimitError(name, f"{size} values (x_um has {n})",
                                 f"one value for every spot, or {n}: one per spot")
        energy, pulse, stacks = (np.broadcast_to(np.asarray(given[name]), (n,))
                                 for name in ("energy_uj", "pulse_us", "stack"))
        self.laser.check(energy, pulse, stacks, rep_rate_hz)  # numbers within the limits
        lim = self.laser.limits
        for name, values, lo, hi, unit in (
                ("energy_uj", energy, lim.energy_min_uj, lim.energy_max_uj, "µJ"),
                ("pulse_us", pulse, lim.pulse_min_us, lim.pulse_max_us, "µs"),
                ("stack", stacks, 1, lim.max_stack, "")):
            if bad := np.flatnonzero(values != np.rint(values)).tolist():
                raise LimitError(f"{name}[{bad[0]}]" if np.ndim(given[name]) else name,
                                 values[bad[0]].item(),
                                 f"whole numbers {lo}..{hi} {unit}".rstrip())
        x_lsb, y_lsb = self.scanner.to_lsb(x, y_um)
        records = np.zeros(n, SPOT_DTYPE)
        records["index"] = np.arange(n)
        records["x_lsb"], records["y_lsb"] = x_lsb, y_lsb
        records["energy_uj"], records["pulse_us"], records["stack"] = energy, pulse, stacks
        return PassSpots.from_records(pass_index, records)

    def load_plan(self, spots: PassSpots, first_index: int = 0) -> Message:
        """Announce the pass; the device's echo must match the spot count and checksum."""
        if not 0 <= first_index < spots.count:
            raise LimitError("first_index", first_index, f"0..{spots.count - 1}")
        reply = self.link.request("LOAD_PLAN", pass_index=spots.pass_index,
                                  spot_count=spots.count, plan_checksum=spots.checksum,
                                  first_index=first_index)
        echo = (int(reply["spot_count"]), int(reply["plan_checksum"]), int(reply["next_index"]))
        if echo != (spots.count, spots.checksum, first_index):
            raise PlanMismatch("LOAD_PLAN", int(ErrorCode.PLAN_MISMATCH), echo[1],
                               int(State.READY), f"device echoed {echo}, host sent "
                               f"{(spots.count, spots.checksum, first_index)}")
        return reply

    def arm(self, spots: PassSpots) -> None:
        """Arm for ``spots`` (checksum confirmed by the device); emission indicator on."""
        self._reconciled("ARM", State.READY, plan_checksum=spots.checksum)

    def start(self, wait_indicator: bool = True) -> None:
        """Start emission; waits out the pre-emission delay when ``wait_indicator``."""
        deadline = time.monotonic() + self.info.limits.pre_emission_ms / 1000.0 + 1.0
        while True:
            try:
                self._reconciled("START", State.ARMED)
                return
            except IndicatorDelay as exc:
                if not wait_indicator or time.monotonic() > deadline:
                    raise
                time.sleep(min(exc.detail, 1000) / 1000.0 + 0.001)

    def longest_spot_s(self) -> float:
        """The longest a spot's pulses may last on this device (s): ``max_stack`` x
        ``pulse_max_us`` (IDENTIFY_REPLY). A PAUSE that arrives mid-spot is answered only once
        that spot has ended (firmware_protocol.md section 2), so its reply may take this long
        on top of the usual 20 ms."""
        limits = self.info.limits
        return limits.max_stack * limits.pulse_max_us / 1e6

    def pause(self) -> None:
        """Stop emitting once the spot under way (if any) has completed (EMITTING -> PAUSED);
        refused when not emitting. The device answers when that spot's last pulse has ended,
        so the reply is waited for the link's request timeout plus :meth:`longest_spot_s`
        (an ABORT or a fault, by contrast, cuts the spot at once)."""
        self.link.request("PAUSE",
                          timeout_s=self.link.request_timeout_s + self.longest_spot_s())

    def resume(self) -> None:
        """Emit again (PAUSED -> EMITTING); needs the footswitch down."""
        self._reconciled("RESUME", State.PAUSED)

    def disarm(self) -> None:
        """Emission indicator off, the spot buffer kept (ARMED or PAUSED -> READY)."""
        self.link.request("DISARM")

    def abort(self) -> None:
        """End the pass at once: emission off, buffer cleared, plan unloaded."""
        self.link.request("ABORT")

    def reset_fault(self) -> None:
        """Operator reset of a fault (needs every safety interlock closed)."""
        self.link.request("RESET_FAULT")

    def raise_fault(self, code: FaultCode) -> None:
        """Put the device into FAULT for a host-detected reason (e.g. energy deviation)."""
        if code not in HOST_FAULTS:
            raise LimitError("fault_code", code.name, ", ".join(c.name for c in HOST_FAULTS))
        self.link.request("RAISE_FAULT", fault_code=int(code))

    def stream(self, spots: PassSpots, known_through: int | None = None,
               events: EventQueue | None = None,
               report_gap_s: float | None = None) -> Iterator[Progress]:
        """Send the pass from the device's ``next_index`` under credit flow control.

        Yields Progress as spots are confirmed (and at least every 0.1 s); ends after the
        pass completes, pauses, faults or is aborted (the last Progress has ``done``).
        ``known_through`` is the last index the caller already holds as delivered; every
        later index the device confirms is reported exactly once (None: trust the device's
        count at the start). ``events`` is a queue of :meth:`events` opened before a RESUME
        or START, so no report sent in between is missed (the stream releases it when it
        ends). ``report_gap_s``: the longest an emitting device may go without a report for
        this pass (its longest spot interval plus the 10 ms report delay; at least 0.25 s,
        default the request timeout): silence beyond it makes the stream ask for the status,
        and no answer stops the pass.
        """
        return PassStreamer(self, spots, known_through, events, report_gap_s).run()

    # -- service mode -----------------------------------------------------------------------
    def authenticate(self, key: bytes) -> None:
        """Enter service mode by HMAC-SHA256 challenge-response; the key never leaves here."""
        if len(key) != KEY_SIZE:
            raise LimitError("service key length", len(key), f"{KEY_SIZE} bytes")
        nonce = bytes(self.link.request("AUTH_BEGIN")["nonce"])
        mac = hmac.new(key, AUTH_CONTEXT + nonce, hashlib.sha256).digest()
        self.link.request("AUTH_RESPONSE", mac=mac)

    def end_service(self) -> None:
        """Leave service mode (AUTH_END)."""
        self.link.request("AUTH_END")

    def set_limits(self, energy_max_uj: int, rep_rate_max_hz: int,
                   avg_power_max_mw: int) -> None:
        """Lower the device's working limits (service mode)."""
        self.link.request("SET_LIMITS", energy_max_uj=energy_max_uj,
                          rep_rate_max_hz=rep_rate_max_hz, avg_power_max_mw=avg_power_max_mw)
        self._read_limits()

    def _read_limits(self) -> None:
        """Identify again after a service change of the limits or the field calibration: the
        host converts and checks with the device's values as they now are."""
        self.info = self.identify()
        self.scanner.limits = self.laser.limits = self.info.limits

    def set_device_key(self, key: bytes) -> None:
        """Replace the service key (service mode)."""
        if len(key) != KEY_SIZE:
            raise LimitError("service key length", len(key), f"{KEY_SIZE} bytes")
        self.link.request("SET_DEVICE_KEY", key=key)

    # -- plumbing ---------------------------------------------------------------------------
    def _reconciled(self, name: str, before: State, **values: int) -> None:
        """Send a request that moves the device out of ``before``; after a timeout, ask
        instead of re-sending. Still in ``before``: it did not arrive (DeviceTimeout). Any
        other state: it took effect (and what followed, e.g. a completed pass, is the
        stream's to report). Once :meth:`close` has begun, DeviceClosed and nothing sent: it
        stops emission after a request under way here has its reply, and none follows."""
        with self._closing:
            if self.closed:
                raise DeviceClosed(f"{name} not sent: the device was closed by the host")
            try:
                self.link.request(name, **values)
            except DeviceTimeout:
                state = self.status().state
                if state is before:
                    raise DeviceTimeout(f"{name}: no reply; device is still "
                                        f"{state.name}") from None

    def close(self, stop_emission: bool = True) -> None:
        """Stop emission (:meth:`stop_emission`, which logs it when not confirmed), then close
        the link (idempotent). From another thread too: from then on ARM, START and RESUME are
        refused, and the link sends only what stops emission or asks the state
        (:data:`drivers.link.WHILE_CLOSING`; anything else raises DeviceClosed unsent, whoever
        sends it: these methods, a stream's SPOT_BATCH, a raw ``link.request``); what the
        link's users get is :class:`DeviceClosed`, not taken for a pulled cable.
        ``stop_emission=False`` is for read-only use only (a Device opened to identify it,
        never armed by this host): it sends nothing, leaving a pass that another host runs on
        the device as it is."""
        with self._closing:
            self.closed = True
            self.link.begin_close()  # whoever sends: only what stops emission goes out
        try:
            if stop_emission:
                self.stop_confirmed = self.stop_emission()
        finally:
            self.link.close()
            self._close_done.set()

    def wait_closed(self, timeout_s: float | None = None) -> bool:
        """Wait until a close() under way (on another thread) is done, at most ``timeout_s``
        (None: as long as its stop of emission may take, two rounds of its budget, and 1 s
        more); whether it is."""
        if timeout_s is None:
            timeout_s = 2.0 * self._stop_budget_s() + 1.0
        return self._close_done.wait(timeout_s)

    def _stop_budget_s(self) -> float:
        """How long :meth:`stop_emission` waits for its replies: one watchdog period, plus
        the longest spot a PAUSE's reply may wait for (:meth:`longest_spot_s`)."""
        return (max(self.info.limits.watchdog_ms / 1000.0, STOP_BUDGET_MIN_S)
                + self.longest_spot_s())

    def stop_emission(self) -> bool:
        """Stop emission, best effort: PAUSE (an emitting device stops once the spot under
        way, if any, has completed), then DISARM if ARMED or PAUSED, then the device's state.
        Returns True when the device confirmed it is neither ARMED nor EMITTING, False when
        that is not confirmed: the link is lost or closed (not asked), a step got no reply in
        time or failed (logged), or the device still says it may fire. Never raises: callers
        that must know (a session records it) use the result. On a link that stops answering
        the steps give up after one watchdog period plus the longest spot a PAUSE may wait
        for (:meth:`longest_spot_s`; a device that no longer hears the host stops emission
        itself by then), so it returns fast; they wait for their replies within that budget
        whatever the link's request timeout: a short one does not cut them short."""
        if self.link.lost is not None:
            return False
        deadline = time.monotonic() + self._stop_budget_s()

        def request(name: str) -> Message:
            timeout_s = deadline - time.monotonic()
            if timeout_s <= 0.0:
                raise DeviceTimeout(f"{name}: not sent, no time left to stop emission")
            return self.link.request(name, timeout_s=timeout_s, retries=0)

        def state() -> State:
            return DeviceStatus.from_message(request("STATUS_REQUEST")).state

        try:
            now = None
            for _ in range(2):  # again if it went from ARMED to EMITTING meanwhile
                with contextlib.suppress(DeviceNack):  # refused: not emitting
                    request("PAUSE")
                now = state()
                if now in (State.ARMED, State.PAUSED):
                    with contextlib.suppress(DeviceNack):  # refused: it moved meanwhile
                        request("DISARM")
                    now = state()
                if now not in FIRING_STATES:
                    return True
            log.warning("stopping emission on %s: emission not confirmed stopped (the device "
                        "is still %s)", self.url, now.name if now is not None else "unknown")
        except DeviceError as exc:
            log.warning("stopping emission on %s: emission not confirmed stopped (%s); the "
                        "device's watchdog stops it once it no longer hears the host",
                        self.url, exc)
        except Exception:
            log.exception("stopping emission on %s failed", self.url)
        return False

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

