"""Treatment sessions: take validated plans to the device and deliver them safely.

A session flattens its plans into passes (pass g of the session is pass ``g`` on the device),
then for each pass: load and confirm the plan checksum, arm, wait for the emission indicator
and the operator's footswitch, start, and stream under credit flow control. Every batch of
spots the device confirms is committed to the treatment record before it is reported upward.

Faults are never cleared automatically: ``run`` returns ``fault`` and only an explicit
``operator_reset`` (key on, interlocks closed) lets a later ``run`` resume. Resume continues at
the first spot the device has not confirmed, after reconciling the record with the device.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from controller.errors import SessionBusy, SettingsError
from controller.record import RecordError, TreatmentRecord
from controller.safety import ENERGY_DRIFT_NOTED, SafetyMirror, Transition, check_energy
from controller.scanpath import Plan, build_plan
from controller.settings import MAX_PASS_WAIT_S, TreatmentSettings, number, printable
from controller.timing import GalvoTiming
from controller.validation import ClinicalEnvelope, Finding, check_thermal, validate_plans
from drivers import (
    Device,
    DeviceClosed,
    DeviceEvent,
    DeviceLost,
    DeviceTimeout,
    EventQueue,
    PassSpots,
    Progress,
)
from drivers.errors import (
    BadIndex,
    DeviceError,
    DeviceMisreport,
    DeviceNack,
    FootswitchUp,
    IllegalState,
    LimitError,
)
from drivers.info import DeviceLimits, DeviceStatus, power_limited_rate_hz
from drivers.protocol import Message
from drivers.protocol.messages import Capability, Cause, DeviceFlag, FaultCode, Interlock, State

log = logging.getLogger(__name__)

POLL_S = 0.05
#: Spots of a pass confirmed in a row without an energy reading (their reports lost) after
#: which the session raises a fault: the monitor no longer guards the pass. Above two
#: damaged reports' worth (a report holds up to 64 spots, firmware_protocol.md 6.1).
MAX_UNREAD_SPOTS = 129
#: How long a run's end waits for the link's thread to record the transitions received
#: before it (s).
EVENTS_CATCH_UP_S = 2.0
#: The longest detail a run_stopped entry keeps (an error's text may be long).
RUN_DETAIL_CHARS = 500
#: What a stop's detail says when the device did not confirm that emission stopped.
NOT_CONFIRMED_STOPPED = ("emission not confirmed stopped (the device did not confirm PAUSE, "
                         "DISARM or its state): check the device")
#: An emitting device reports a fired spot within this long (firmware_protocol.md 6.1).
REPORT_DELAY_S = 0.010


def timing_for(limits: DeviceLimits, settings: TreatmentSettings) -> GalvoTiming:
    """Galvo timing from the device's limits, with the spot rate kept under average power."""
    energy_uj, _, stack = settings.handpiece.dose_for_depth([settings.depth_um])
    power_rate_hz = math.floor(power_limited_rate_hz(float(energy_uj[0]), float(stack[0]),
                                                     limits.avg_power_max_mw))
    return GalvoTiming(
        max_spot_rate_hz=float(max(1, min(limits.rep_rate_max_hz, power_rate_hz))),
        jump_speed_um_per_us=limits.jump_speed_um_per_ms / 1000.0,
        settle_us=float(limits.settle_us),
        field_um=float(limits.field_size_um),
    )


def plan_for_device(settings: TreatmentSettings, limits: DeviceLimits, seed: int = 0) -> Plan:
    """Plan ``settings`` with the device's own timing and power limits."""
    return build_plan(settings, timing_for(limits, settings), seed)


@dataclass(frozen=True)
class PassJob:
    """One pass of the session: its plan, the pass within the plan, and device spots."""

    number: int
    plan: Plan
    plan_pass: int
    spots: PassSpots
    set_energy_uj: np.ndarray  # per spot, whole stack
    rep_rate_hz: int

    @property
    def report_gap_s(self) -> float:
        """How long the device, emitting this pass, may go without a delivered report: twice
        its longest planned spot interval plus the report delay (firmware_protocol.md 6.1)."""
        times_us = self.plan.fire_time_us[self.plan.pass_slice(self.plan_pass)]
        return 2.0 * float(np.diff(times_us).max(initial=0.0)) * 1e-6 + REPORT_DELAY_S


@dataclass(frozen=True)
class SessionProgress:
    """What the operator's display shows. ``pass_number`` is the pass's index in the session
    (from 0, as the record's ``pass_index``); a display shows ``pass_number + 1`` of
    ``passes``, as people number passes."""

    pass_number: int
    passes: int
    delivered: int
    total: int
    rate_spots_s: float
    eta_s: float
    state: State | None
    interlocks: Interlock
    waiting_for: str = ""


@dataclass
class SessionOutcome:
    """Result of :meth:`TreatmentSession.run`: ``completed``, ``paused``, ``aborted``,
    ``fault`` or ``waiting`` (emission not permitted before the wait ran out); ``cancelled``
    from :meth:`TreatmentSession.cancel`."""

    status: str
    session_id: int
    detail: str = ""
    delivered: dict[int, int] = field(default_factory=dict)
    #: For ``fault``, what kind: ``device_fault`` (the device is in FAULT), ``refused`` (a
    #: command was NACKed), ``timeout`` (no reply), ``link_lost``, ``closed_by_host`` (the
    #: Device was closed, e.g. from a GUI's thread: nothing reconnects), ``device_mismatch``
    #: (not the device the session was planned for), ``stopped_elsewhere`` (disarmed, aborted
    #: or paused by someone else), ``count_mismatch`` (the device's count is behind the
    #: record), ``record_error``, ``device_error`` (other); empty for the other statuses.
    cause: str = ""


def who_and_whom(operator: object, patient_ref: object, resuming: bool = False
                 ) -> tuple[str, str]:
    """The operator and patient reference a session records: printable text, not blank (a
    service or test pass names what it fires at); a resumed session's patient may be empty
    (it keeps the recorded one). SettingsError naming the field, and how ``co2scan run``
    gives it, otherwise."""
    operator = printable("operator", operator)
    if not operator.strip():
        raise SettingsError("operator", operator, "the operator's name (printable text)",
                            "empty: name who treats (co2scan run or demo: --operator "
                            "NAME, or operator = in the script)")
    patient_ref = printable("patient_ref", patient_ref)
    if not resuming and not patient_ref.strip():
        raise SettingsError("patient_ref", patient_ref,
                            "the patient's reference (printable text); for a service or test "
                            "pass, what is fired at, e.g. 'test card'",
                            "empty: name whom the session treats (co2scan run or demo: "
                            "--patient REF, or patient_ref = in the script)")
    return operator, patient_ref


#: Longest wait for the footswitch and interlocks before a pass starts (s).
MAX_START_WAIT_S = 3600.0


#: The session whose run(), abort(), cancel() or operator_reset() is under way on a Device:
#: one at a time (another's quiesce paused it mid-pass, and each recorded the other's
#: transitions).
_claims: weakref.WeakKeyDictionary[Device, TreatmentSession] = weakref.WeakKeyDictionary()
_claims_lock = threading.Lock()


def _under_way(device: Device, what: str, session: TreatmentSession | None = None) -> None:
    """SessionBusy naming the session under way on ``device``, if it is not ``session``."""
    other = _claims.get(device)
    if other is not None and other is not session:
        raise SessionBusy(f"{what} refused: session {other.session_id} of {other.record.path} is "
                          f"under way on this device ({device.url}); one session at a time "
                          "per device")


class WarningsNotAcknowledged(DeviceError):
    """run() before the operator acknowledged the plan's borderline warnings (nothing sent).
    A DeviceError for callers that caught that before this class existed."""


class MirrorFailed(DeviceError):
    """The session's safety mirror raised on a device event: its view of the device's state
    and interlocks is stale from then on, so the run stops emission as for any device error
    (recorded as ``device_error``)."""


class SessionStop(Exception):
    """Internal: the pass ended for a reason that ends ``run``."""

    def __init__(self, status: str, detail: str, cause: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.cause = cause


class TreatmentSession:
    """Deliver validated plans to one device, with a durable record.

    ``operator`` and ``patient_ref`` (printable, not blank) are who treats and whom: the
    record names both, a service or test pass too (``patient_ref="test card"``). A resumed
    session (``session_id``) keeps the patient it was recorded for: ``patient_ref`` is that
    one or empty. ``reconnect`` (optional) returns a fresh Device for the same URL after the
    link was lost (not after the Device was closed: that stops the run); a Device it returns
    is the session's, closed when the session closes, while the one given stays the caller's
    to close. ``on_progress`` is called after every committed batch and while waiting.
    """

    def __init__(self, device: Device, plans: list[Plan], record: TreatmentRecord, *,
                 operator: str, patient_ref: str, envelope: ClinicalEnvelope | None = None,
                 on_progress: Callable[[SessionProgress], None] | None = None,
                 reconnect: Callable[[], Device] | None = None,
                 session_id: int | None = None, start_wait_s: float = 30.0,
                 pass_wait_s: float = 0.0) -> None:
        if not plans or not all(isinstance(p, Plan) for p in plans):
            raise SettingsError("plans", plans if not plans else [type(p).__name__ for p in plans],
                                "a list of at least one Plan (from build_plan or plan_for_device)")
        _under_way(device, "a new TreatmentSession")  # before anything is recorded
        if Capability.ENERGY_MONITOR not in device.info.capabilities:
            raise LimitError("device capabilities", repr(device.info.capabilities),
                             "ENERGY_MONITOR set: co2scan checks every spot's measured energy "
                             "(firmware_protocol.md 4.2), and cannot with this device")
        self.device = device
        self._given = device  # the caller's; those from reconnect are the session's to close
        self.plans = plans
        self.record = record
        self.envelope = envelope or ClinicalEnvelope.load()
        self.on_progress = on_progress or (lambda p: None)
        self.reconnect = reconnect
        self.start_wait_s = number("start_wait_s", start_wait_s, 0.0, MAX_START_WAIT_S, unit="s")
        self.pass_wait_s = number("pass_wait_s", pass_wait_s, 0.0, MAX_PASS_WAIT_S, unit="s")
        operator, patient_ref = who_and_whom(operator, patient_ref,
                                             resuming=session_id is not None)
        self.thermal = check_thermal(plans, self.pass_wait_s)  # for the plan table, pictures
        self.warnings: list[Finding] = validate_plans(plans, self.envelope, device.info.limits,
                                                      thermal=self.thermal)
        self.jobs = self._jobs(self._device_pass_indices(session_id))
        if session_id is not None:
            patient_ref = self._check_resumable(session_id, patient_ref)
        #: Whom the session treats (a resumed session's as recorded).
        self.patient_ref = patient_ref
        self._pause = threading.Event()
        self._abort = threading.Event()
        self._delivering = threading.Lock()  # run(), abort() and operator_reset() exclusive
        self._ended_monotonic: dict[int, float] = {}  # pass number -> time.monotonic() at end
        self._identity = (device.info.serial, device.info.limits)  # the device planned for
        self._delivering_thread: int | None = None  # the thread in run(), while it runs
        self._closed = False
        self._stop_unconfirmed = False  # this run's halt of emission was not confirmed
        #: spots of pass _unread_pass confirmed in a row without a reading (_check_readings)
        self._unread_run, self._unread_pass = 0, -1
        #: what the mirror raised on an event (on the link's thread); the run checks it
        self._mirror_failure: Exception | None = None
        #: a transition the record refused (on the link's thread); the run checks it
        self._unrecorded: RecordError | None = None
        self.mirror = SafetyMirror(device.info.limits.pre_emission_ms / 1000.0,
                                   self._on_transition)
        if session_id is None:
            session_id = record.new_session(  # the spots sent, stored with the entry
                {j.number: j.spots.records for j in self.jobs},
                operator=operator, patient_ref=patient_ref, device_url=device.url,
                device_serial=device.info.serial, firmware=device.info.firmware,
                field_size_um=device.info.limits.field_size_um,
                handpieces=sorted({p.settings.handpiece.name for p in plans}),
                passes=[{"pass": j.number, "spots": j.spots.count,
                         "device_checksum": j.spots.checksum,
                         "device_pass_index": j.spots.pass_index,
                         "plan_checksum": j.plan.checksum,
                         "rep_rate_hz": j.rep_rate_hz,
                         "handpiece": j.plan.settings.handpiece.name,
                         "galvo": j.plan.timing.to_record()} for j in self.jobs],
                warnings=[str(w) for w in self.warnings])
        else:  # who resumed, on which device (the session entry names who started it)
            record.append(session_id, "session_resumed", operator=operator,
                          device_url=device.url, device_serial=device.info.serial,
                          firmware=device.info.firmware)
        self.session_id = session_id
        # events once the record holds the session (a refused one leaves no listener behind)
        self._unsubscribe = device.subscribe(self._on_event, self._on_event_error)

    def _check_resumable(self, session_id: object, patient_ref: str) -> str:
        """A resumed session must be one of the record's, not ended, and planned exactly as
        now (every pass's plan, device checksum and spot count); else SettingsError naming
        ``resume`` and the sessions that could be resumed. It keeps the patient it was
        recorded for: ``patient_ref`` must be that one or empty, else SettingsError naming
        ``patient_ref``. Nothing is written or fired. Returns the recorded patient."""
        entries = {e.session: e for e in self.record.sessions()}
        ended = {e.session: e.body.get("status") for e in self.record.entries(kind="session_end")}
        planned = [{"pass": j.number, "spots": j.spots.count,
                    "device_checksum": j.spots.checksum, "plan_checksum": j.plan.checksum}
                   for j in self.jobs]

        def differences(entry_id: int) -> list[str]:
            recorded = entries[entry_id].body.get("passes", [])
            if len(recorded) != len(planned):
                return [f"{len(recorded)} passes recorded, {len(planned)} planned now"]
            return [f"pass {now['pass'] + 1} {key} {was.get(key)} recorded, {now[key]} now"
                    for was, now in zip(recorded, planned, strict=True)
                    for key in ("spots", "plan_checksum", "device_checksum")
                    if was.get(key) != now[key]]

        open_ids = [k for k in entries if k not in ended and not differences(k)]
        allowed = (f"an unfinished session of {self.record.path} planned as this script "
                   f"({', '.join(map(str, open_ids)) or 'none'})")
        if isinstance(session_id, bool) or not isinstance(session_id, int):
            raise SettingsError("resume", session_id, allowed, "not a session id")
        if session_id not in entries:
            raise SettingsError("resume", session_id, allowed, "no such session")
        if session_id in ended:
            raise SettingsError("resume", session_id, allowed, f"it ended: {ended[session_id]}")
        if diff := differences(session_id):
            raise SettingsError("resume", session_id, allowed,
                                "planned differently: " + "; ".join(diff))
        body = entries[session_id].body
        was = (body.get("device_serial"), body.get("field_size_um"))
        now = (self.device.info.serial, self.device.info.limits.field_size_um)
        if was != now:  # its fired-index memory is what keeps a spot from firing twice
            raise SettingsError("resume", session_id,
                                f"the device session {session_id} was recorded on (serial "
                                f"{was[0]}, field {was[1]} µm)",
                                f"this device is serial {now[0]}, field {now[1]} µm: only the "
                                "device that fired the session's spots knows which fired")
        recorded = str(body.get("patient_ref", ""))
        if patient_ref.strip() and patient_ref != recorded:
            raise SettingsError("patient_ref", patient_ref,
                                f"{recorded!r}, the patient session {session_id} was recorded "
                                "for, or none (it is kept)",
                                "a resumed session continues the treatment of its patient")
        return recorded

    # -- construction -----------------------------------------------------------------------
    def _device_pass_indices(self, session_id: object) -> list[int]:
        """The pass index the device knows each pass by (its fired-index memory is keyed by
        plan checksum and pass index). A resumed session keeps the recorded ones. A new session
        numbers its passes on (mod 256) from the last index this record gave a pass on this
        device, else from the pass the device loaded last (0 on a device with no plan): a plan
        delivered again for the next patient is then a new pass to the device, not one it has
        fired (which it would refuse to load, and whose count must not be taken for this
        session's); identical passes of one session differ by number."""
        count = sum(len(plan.metrics.passes) for plan in self.plans)
        sessions = self.record.sessions()
        if session_id is not None:
            recorded: list[object] = next((e.body.get("passes", []) for e in sessions
                                           if e.session == session_id), [])
            indices = [entry.get("device_pass_index", number) if isinstance(entry, dict)
                       else number for number, entry in enumerate(recorded)]
            indices += list(range(len(indices), count))
            renumbered = (self.record.entries(session_id, "device_pass_index")
                          if type(session_id) is int else [])  # else refused below
            for e in renumbered:
                if 0 <= (number := e.body["pass_index"]) < count:
                    indices[number] = e.body["device_pass_index"]
            return indices
        given = [entry["device_pass_index"] for e in sessions
                 if e.body.get("device_serial") == self.device.info.serial
                 for entry in e.body.get("passes", [])
                 if isinstance(entry, dict) and isinstance(entry.get("device_pass_index"), int)]
        if given:
            first = (given[-1] + 1) % 256
        else:
            status = self.device.status()
            first = (status.pass_index + 1) % 256 if status.plan_checksum else 0
        return [(first + k) % 256 for k in range(count)]

    def _jobs(self, device_pass_index: list[int]) -> list[PassJob]:
        jobs: list[PassJob] = []
        for plan in self.plans:
            for k, metrics in enumerate(plan.metrics.passes):
                part = plan.pass_slice(k)
                rate = max(1, math.floor(metrics.spot_rate_hz))
                spots = self.device.prepare_pass(
                    device_pass_index[len(jobs)], plan.x_um[part], plan.y_um[part],
                    plan.energy_uj[part], plan.pulse_us[part], plan.stack[part],
                    rep_rate_hz=rate)
                set_uj = plan.energy_uj[part].astype(np.int64) * plan.stack[part]
                jobs.append(PassJob(len(jobs), plan, k, spots, set_uj, rate))
        return jobs

    # -- operator actions (any thread) ------------------------------------------------------
    def request_pause(self) -> None:
        """Pause after the current spot (Ctrl-C, or the operator's pause button); a run() not
        yet started stops before emission. From another thread than run()'s (a GUI), PAUSE is
        also sent at once, so a slow progress callback does not delay it."""
        self._pause.set()
        self._pause_now_from_another_thread()

    def request_abort(self) -> None:
        """End the current pass at once; it is closed as aborted (a run() not yet started
        fires nothing). From another thread than run()'s, emission is paused at once."""
        self._abort.set()
        self._pause_now_from_another_thread()

    def _pause_now_from_another_thread(self) -> None:
        """PAUSE now, best effort, unless called on the delivering thread (a signal handler
        there may interrupt it mid-request: it only sets the flag, which run() acts on)."""
        if self._delivering_thread not in (None, threading.get_ident()):
            with contextlib.suppress(DeviceError):  # not emitting (IllegalState), link gone
                self.device.pause()

    def acknowledge_warnings(self, by: str) -> None:
        """The operator accepts the borderline warnings; recorded with who accepted them."""
        self.record.append(self.session_id, "warnings_acknowledged", by=printable("by", by),
                           warnings=[str(w) for w in self.warnings])
        self.warnings = []

    @contextlib.contextmanager
    def _exclusive(self, what: str) -> Iterator[None]:
        """One of run(), abort(), cancel(), operator_reset() at a time, of one session on a
        Device: a second caller (another thread, a double click, another session) is refused
        (SessionBusy) instead of commanding the device alongside; after close(), SettingsError.
        """
        if self._closed:
            raise SettingsError(what.rstrip("()"), self.session_id, "a session not closed",
                                "it was closed: a new TreatmentSession (session_id=) resumes it")
        if not self._delivering.acquire(blocking=False):
            raise SessionBusy(f"{what} refused: this session is delivering in run() "
                              "(use request_pause() or request_abort())")
        device = self.device
        try:
            with _claims_lock:
                _under_way(device, what, self)
                _claims[device] = self
            try:
                with self.record.in_use(f"session {self.session_id}'s {what}"):
                    yield
            finally:
                with _claims_lock:
                    del _claims[device]
        finally:
            self._delivering.release()

    def cancel(self) -> SessionOutcome:
        """End a session that has delivered nothing (the operator did not confirm it): the
        record says ``cancelled``; nothing is sent to the device. A session that has delivered
        spots is not cancelled (SettingsError naming ``cancel``): resume it, or :meth:`abort`."""
        with self._exclusive("cancel()"):
            self._refuse_if_ended("cancel")
            delivered = {j.number: self.delivered_count(j) for j in self.jobs}
            if any(delivered.values()):
                raise SettingsError("cancel", self.session_id, "a session that delivered nothing",
                                    "it has delivered spots: resume or abort it")
            self.record.append(self.session_id, "session_end", status="cancelled")
            return SessionOutcome("cancelled", self.session_id, "nothing fired", delivered)

    def abort(self) -> SessionOutcome:
        """End the session now (e.g. after an operator pause): emission off, pass aborted. A
        session that has ended is not aborted again (SettingsError naming ``abort``)."""
        with self._exclusive("abort()"):
            self._refuse_if_ended("abort")
            return self._abort_now()

    def _refuse_if_ended(self, what: str) -> None:
        ended = [e.body.get("status") for e in self.record.entries(self.session_id, "session_end")]
        if ended:
            raise SettingsError(what, self.session_id, "a session that has not ended",
                                f"it ended: {ended[-1]}")

    def _abort_now(self) -> SessionOutcome:
        status = self._status()
        ours = status.plan_checksum in {j.spots.checksum for j in self.jobs}
        if ours and status.state in (State.READY, State.ARMED, State.EMITTING, State.PAUSED):
            self.device.abort()  # this session's pass (not another session's on the device)
        for job in self.jobs:
            if self.delivered_count(job) < job.spots.count:
                self._end_pass(job, "aborted")
                break
        self.record.append(self.session_id, "session_end", status="aborted")
        return SessionOutcome("aborted", self.session_id, "aborted by the operator",
                              {j.number: self.delivered_count(j) for j in self.jobs})

    def operator_reset(self) -> None:
        """Explicit operator reset of a device fault (needs key on and interlocks closed)."""
        with self._exclusive("operator_reset()"):
            self._reset_fault()

    def _reset_fault(self) -> None:
        self.record.append(self.session_id, "operator_reset")
        try:
            self.device.reset_fault()
        except DeviceError as exc:  # refused (an interlock open, the cause persisting)
            self.record.append(self.session_id, "operator_reset_refused", error=str(exc))
            raise
        self.mirror.on_status(self.device.status())

    # -- events -----------------------------------------------------------------------------
    def _on_event(self, item: DeviceEvent) -> None:
        if isinstance(item, Message):
            self.mirror.on_event(item)

    def _on_event_error(self, exc: Exception) -> None:
        """The mirror (or its recorder) raised on an event: the run stops at its next check."""
        if self._mirror_failure is None:
            self._mirror_failure = exc

    def _check_events(self) -> None:
        """MirrorFailed once the mirror raised on an event: what it says of the device's state
        and interlocks can no longer be trusted, and no spot fires on it. RecordError once a
        transition could not be recorded: the record must hold every one."""
        if self._unrecorded is not None:
            raise self._unrecorded
        exc = self._mirror_failure
        if exc is not None:
            raise MirrorFailed(f"the session's safety mirror failed on a device event "
                               f"({type(exc).__name__}: {exc}): its view of the device's "
                               "state and interlocks is stale")

    def _on_transition(self, t: Transition) -> None:
        if _claims.get(self.device, self) is not self:  # another session's, on this device
            return
        try:
            self.record.append(self.session_id, "transition",
                               old=t.old.name if t.old is not None else None, new=t.new.name,
                               cause=t.cause, fault=t.fault.name)
        except RecordError as exc:  # on the link's event thread: the run stops at its next
            # check (a lock held a moment too long lets its next write through, which would
            # have hidden the lost entry); here it would only be a traceback per event
            log.warning("transition %s not recorded: %s", t.new.name, exc)
            if self._unrecorded is None:
                self._unrecorded = RecordError(f"the transition to {t.new.name} could not be "
                                               f"recorded: {exc}")

    # -- running ----------------------------------------------------------------------------
    def delivered_count(self, job: PassJob) -> int:
        """Spots of ``job`` the record holds as delivered."""
        return self.record.delivered_summary(self.session_id, job.number)[0]

    def run(self) -> SessionOutcome:
        """Deliver every pass not yet complete; returns why it stopped."""
        with self._exclusive("run()"):
            return self._run()

    def _run(self) -> SessionOutcome:
        self._refuse_if_ended("run")
        if self.warnings:
            raise WarningsNotAcknowledged("borderline warnings must be acknowledged first: "
                                          + "; ".join(str(w) for w in self.warnings))
        if self._abort.is_set():  # requested before this run: nothing fires
            return self._abort_now()
        self._delivering_thread = threading.get_ident()
        try:
            return self._deliver()
        finally:
            self._delivering_thread = None
            self._pause.clear()  # a pause applies to one run (or, asked between, the next)

    def _deliver(self) -> SessionOutcome:
        with contextlib.ExitStack() as stopped:  # what is written once delivery stopped
            return self._deliver_in(stopped)

    def _deliver_in(self, stopped: contextlib.ExitStack) -> SessionOutcome:
        status = "completed"
        detail = cause = ""
        lying = suspect = False  # suspect: a device error; its answers are not waited for
        # what ended an earlier run; each pass below adopts the device's status into the
        # mirror before it fires
        self._mirror_failure = self._unrecorded = None
        self._stop_unconfirmed = False
        try:
            for job in self.jobs:
                if self.delivered_count(job) < job.spots.count:
                    self._cool_down(job)
                    self._run_pass(job)
        except SessionStop as stop:
            self._share_one_wait(stopped, time.monotonic())
            status, detail, cause = stop.status, stop.detail, stop.cause
        except DeviceError as exc:  # uncertain state: stop; the next run() reconciles first
            # A device that does not answer may still fire (its reports lost, our frames
            # arriving): stop it now, not when it is closed (best effort; a lost link is
            # not asked). A device that misreports confirms nothing either (below).
            since = time.monotonic()
            self._halt_emission()
            self._share_one_wait(stopped, since)
            lying, suspect = isinstance(exc, DeviceMisreport), True
            status, detail = "fault", f"device error: {exc}"
            cause = ("refused" if isinstance(exc, DeviceNack) else
                     "timeout" if isinstance(exc, DeviceTimeout) else
                     "link_lost" if isinstance(exc, DeviceLost) else "device_error")
            self.record.append(self.session_id, "device_error", error=str(exc))
        except RecordError as exc:  # what fires now could not be recorded: stop emission
            since = time.monotonic()
            halted = self._halt_emission()  # not confirmed: the note below says so
            self._share_one_wait(stopped, since)
            status, detail = "fault", (f"{exc}{'; emission stopped' if halted else ''} (a "
                                       "resume records what the device fired meanwhile)")
            cause = "record_error"
            with contextlib.suppress(RecordError):
                self.record.append(self.session_id, "record_error", error=str(exc))
        except BaseException as exc:  # a bug, the caller's callback, KeyboardInterrupt:
            since = time.monotonic()
            self._halt_emission()  # the laser stops first
            self._share_one_wait(stopped, since)
            self.record_interruption((f"{type(exc).__name__}: {exc}" if str(exc)
                                      else type(exc).__name__) + self._stop_note())
            raise
        else:
            self._share_one_wait(stopped, time.monotonic())
        note = self._stop_note()
        if status not in ("completed", "aborted") and not lying and cause != "device_mismatch":
            self._confirm_stopped()
        try:
            delivered = {j.number: self.delivered_count(j) for j in self.jobs}
        except RecordError:
            delivered = {}
        if not suspect:
            # The device's state changes (after the last spot; the stop's own PAUSE, DISARM,
            # ABORT) arrive as events after their replies; a status round trip (ordered after
            # them on the link) receives them, and they are recorded before the run's end.
            with contextlib.suppress(DeviceError):
                self._status()
        self._transitions_recorded()
        if status in ("completed", "aborted"):
            self.record.append(self.session_id, "session_end", status=status)
        else:  # a stop it can resume from: why, for the record's readers (log list, report)
            with contextlib.suppress(RecordError):
                self.record.append(self.session_id, "run_stopped", status=status, cause=cause,
                                   detail=detail[:RUN_DETAIL_CHARS - len(note)] + note)
        return SessionOutcome(status, self.session_id, detail + note, delivered, cause)

    def _transitions_recorded(self) -> None:
        """Before the run's last entry: wait until the link's thread has recorded the
        transitions received so far (those of the stop's own PAUSE, DISARM or ABORT, received
        by the status round trip before it). Their entries landed after session_end or
        run_stopped under load, and an aborted session read "open" (resumable), a paused one
        "waiting". At most :data:`EVENTS_CATCH_UP_S`; a slow record is only logged."""
        if not self.device.caught_up(self._on_event, EVENTS_CATCH_UP_S):
            log.warning("session %s: the device's last transitions were not recorded within "
                        "%g s; they may follow the run's end in the record", self.session_id,
                        EVENTS_CATCH_UP_S)

    def _share_one_wait(self, stopped: contextlib.ExitStack, since: float) -> None:
        """From here until run() returns, the writes to the record (why the run stopped, the
        pass confirmed, the device's transitions on the link's thread) share one wait for
        its writers' lock: lock_timeout_s from ``since``, when delivery stopped; each still
        takes the lock if it is free. Behind a stalled writer each waited lock_timeout_s in
        turn: run() returned 4 x 5 s after the stall began, 3 x 5 s after emission stopped."""
        stopped.enter_context(self.record.lock_waits_end_by(since + self.record.lock_timeout_s))

    def record_interruption(self, reason: str) -> None:
        """After delivery was interrupted (``reason``: an exception run() re-raises, a signal
        that stopped co2scan run) with emission halted: record the spots the device confirms
        beyond the record (``reconciled``), an ``interrupted`` entry with ``reason``, and the
        device's count (``pass_confirmed``), so that a resume neither repeats nor drops a spot.
        Best effort: never raises (the first error is what the caller must see)."""
        try:
            starts = list(self.record.entries(self.session_id, "pass_start"))
            if starts and self._status().state is not State.EMITTING:  # its count is final
                self._reconcile(self.jobs[starts[-1].body["pass_index"]])
        except (DeviceError, RecordError, SessionStop) as exc:
            log.warning("session %s: what the device fired is not reconciled: %s",
                        self.session_id, exc)
        with contextlib.suppress(RecordError):
            self.record.append(self.session_id, "interrupted", reason=reason)
        self._confirm_stopped()

    def close(self) -> None:
        """Stop listening to the device's events once those already received are recorded,
        and close a Device the session opened itself (``reconnect``); the Device it was given
        and the record stay open. Then run(), abort(), cancel() and operator_reset() raise
        SettingsError. From another thread while run() delivers: SessionBusy (request_abort()
        first, and let run() return)."""
        if self._delivering_thread not in (None, threading.get_ident()):
            raise SessionBusy("close() refused: this session is delivering in run() on another "
                              "thread (use request_abort() and let run() return first)")
        self._closed = True
        self._unsubscribe()
        if self.device is not self._given:
            self.device.close()

    def _status(self) -> DeviceStatus:
        """The device's status, adopted by the mirror after the events the device sent before
        it: those are handed to the mirror on the link's thread, which may lag (under load a
        status ahead of them recorded STANDBY -> ARMED, then the events' transitions after)."""
        status = self.device.status()
        self.device.caught_up(self._on_event, EVENTS_CATCH_UP_S)
        self.mirror.on_status(status)
        return status

    def _halt_emission(self) -> bool:
        """Stop emission at once, best effort, without the record (it may be what failed);
        whether the device confirmed it. Not confirmed, the run's stop says so
        (:meth:`_stop_note`)."""
        stopped = self.device.stop_emission()
        if not stopped:
            self._stop_unconfirmed = True
        return stopped

    def _stop_note(self) -> str:
        """What a stop's detail adds when this run's halt was not confirmed: nothing, or
        :data:`NOT_CONFIRMED_STOPPED`."""
        return f"; {NOT_CONFIRMED_STOPPED}" if self._stop_unconfirmed else ""

    def _quiesce(self) -> None:
        """Stop emission left running (e.g. across a lost link) and come back to READY."""
        status = self._status()
        if status.state is State.FAULT:
            raise SessionStop("fault", f"device in FAULT ({status.fault_code.name}): "
                              "operator reset needed",
                              cause="device_fault")
        if status.state is State.EMITTING:
            with contextlib.suppress(IllegalState):  # it may stop by itself meanwhile
                self.device.pause()
            status = self._status()
        if status.state in (State.ARMED, State.PAUSED):
            self.device.disarm()

    @staticmethod
    def _is_this_pass(status: DeviceStatus, job: PassJob) -> bool:
        """The device's pass data are this pass's (identical passes differ by number)."""
        return (status.plan_checksum == job.spots.checksum
                and status.pass_index == job.spots.pass_index)

    def _started(self, job: PassJob) -> bool:
        """Has this session loaded the pass onto the device (recorded before arming)?"""
        return any(e.body.get("pass_index") == job.number
                   for e in self.record.entries(self.session_id, "pass_start"))

    def _confirm_stopped(self) -> None:
        """After a run that stopped mid-session: for the pass this session started last, if
        the device still holds it, is not emitting and has fired what the record holds, say
        so (``pass_confirmed``). A later resume may then trust the record for that pass even
        if the device no longer holds it; without it (a crash, a lost link) it may not. Best
        effort: nothing is recorded if the device or the record cannot say."""
        with contextlib.suppress(DeviceError, RecordError):
            starts = list(self.record.entries(self.session_id, "pass_start"))
            if not starts:
                return
            job = self.jobs[starts[-1].body["pass_index"]]
            status = self._status()
            recorded = self.record.delivered_summary(self.session_id, job.number)[1]
            fired = -1 if status.last_delivered is None else status.last_delivered
            if (self._is_this_pass(status, job) and status.state is not State.EMITTING
                    and fired == recorded):
                self.record.append(self.session_id, "pass_confirmed", pass_index=job.number,
                                   last=recorded)

    def _confirmed(self, job: PassJob, recorded: int) -> bool:
        """Did the device confirm the record's count of ``job`` since it was last loaded?"""
        last = None
        for e in self.record.entries(self.session_id):
            if e.kind in ("pass_start", "pass_confirmed") and \
                    e.body.get("pass_index") == job.number:
                last = e
        return (last is not None and last.kind == "pass_confirmed"
                and last.body.get("last") == recorded)

    def _reconcile(self, job: PassJob) -> int:
        """Align the record with the device; returns the first spot still to fire. Only a
        pass this session started can have fired: the device's count of a pass with the same
        data that this session never loaded (another record's, say) is not taken."""
        status = self._status()
        recorded = self.record.delivered_summary(self.session_id, job.number)[1]
        if not self._started(job):
            return recorded + 1
        if not self._is_this_pass(status, job):  # another pass loaded, or a power loss after
            # the pass ended: unless the device confirmed the record's count when this
            # session stopped, what it fired beyond the record is unknown
            if self._confirmed(job, recorded):
                return recorded + 1
            raise SessionStop("fault", f"pass {job.number + 1} was loaded onto the device, "
                              f"which no longer holds it (it holds pass index "
                              f"{status.pass_index}, checksum {status.plan_checksum:#010x}): "
                              f"how far it got beyond the {recorded + 1} spots recorded cannot "
                              "be confirmed, so none of it is fired again",
                              cause="count_mismatch")
        if status.last_delivered is not None:
            confirmed = status.last_delivered
            if confirmed > recorded:  # fired, but the reports were lost with the link
                missing = np.arange(recorded + 1, confirmed + 1)
                self.record.append(self.session_id, "reconciled", pass_index=job.number,
                                   first=int(missing[0]), count=int(missing.size))
                self.record.delivered(self.session_id, job.number, missing,
                                      np.full(missing.size, -1))
                recorded = confirmed
            elif confirmed < recorded:
                raise SessionStop("fault", f"device reports spot {confirmed} as last fired but "
                                  f"the record holds {recorded}: refusing to continue",
                                  cause="count_mismatch")
        return recorded + 1

    def _end_pass(self, job: PassJob, status: str) -> None:
        """Record the pass's end; keep this process's monotonic time of it for the cooling
        wait (a wall-clock step forward must not shorten the wait)."""
        self.record.append(self.session_id, "pass_end", pass_index=job.number, status=status)
        self._ended_monotonic[job.number] = time.monotonic()

    def _cool_down(self, job: PassJob) -> None:
        """Before a pass not yet begun, wait until ``pass_wait_s`` have passed since the
        previous pass ended (recorded time, so a resumed session waits too; a pass whose last
        spot a fault cut has no end: since its last recorded delivery): the tissue cools as
        the thermal screen assumed. Pause or abort end the wait without emission."""
        if self.pass_wait_s <= 0.0 or job.number == 0 or self.delivered_count(job) > 0:
            return
        ended = [e.at for e in self.record.entries(self.session_id, "pass_end")
                 if e.body["pass_index"] == job.number - 1]
        if not ended:  # it never ended (a fault cut its last spot): from its last delivery
            ended = [e.at for kind in ("delivered", "reconciled")
                     for e in self.record.entries(self.session_id, kind)
                     if e.body["pass_index"] == job.number - 1]
        if not ended:  # nothing of it fired
            return
        until = max(ended) + self.pass_wait_s
        until_monotonic = self._ended_monotonic.get(job.number - 1, -math.inf) + self.pass_wait_s
        while (left := max(until - time.time(), until_monotonic - time.monotonic())) > 0.0:
            if self._abort.is_set():
                self._end_pass(job, "aborted")
                raise SessionStop("aborted", f"pass {job.number + 1} aborted while cooling")
            if self._pause.is_set():
                raise SessionStop("paused",
                                  f"paused by the operator before pass {job.number + 1}")
            self._report(job, 0, 0.0, waiting_for=f"cooling wait, {left:.0f} s left")
            time.sleep(min(POLL_S, left))
        self.record.append(self.session_id, "cooling_wait", pass_index=job.number,
                           wait_s=self.pass_wait_s)

    def _run_pass(self, job: PassJob) -> None:
        while True:
            try:
                self._attempt_pass(self.jobs[job.number])  # as renumbered by a first load
                return
            except DeviceLost as exc:
                if isinstance(exc, DeviceClosed) or self._closed_by_host():
                    raise self._stopped_by_close(job) from exc
                self.record.append(self.session_id, "link_lost", pass_index=job.number,
                                   error=str(exc))
                self._reconnect(job)

    def _closed_by_host(self) -> bool:
        """Has the host closed the Device the session was given, or the one it delivers on?"""
        return self._given.closed or self.device.closed

    def _stopped_by_close(self, job: PassJob) -> SessionStop:
        """The run's end after the host closed the Device: emission stopped (by its close(),
        whose answer it waits for; on a Device the session opened, by the session), nothing
        reconnected; resumable as other stops are."""
        if not self.device.closed:
            stopped = self._halt_emission()
        else:
            stopped = self.device.wait_closed() and self.device.stop_confirmed is True
            self._stop_unconfirmed |= not stopped
        return SessionStop("fault", f"the device was closed by the host (Device.close()) in "
                           f"pass {job.number + 1}: emission "
                           f"{'stopped' if stopped else 'not confirmed stopped'}, nothing "
                           "reconnected; resume the session to continue", cause="closed_by_host")

    def _reconnect(self, job: PassJob) -> None:
        if self.reconnect is None:
            raise SessionStop("fault", "link to the device lost; no reconnect configured",
                              cause="link_lost")
        deadline = time.monotonic() + 10.0
        while True:
            if self._given.closed:
                raise self._stopped_by_close(job)
            try:
                self._unsubscribe()
                lost, self.device = self.device, self.reconnect()
                if lost is not self._given:  # one the session opened (the caller closes its)
                    lost.close()
                self._unsubscribe = self.device.subscribe(self._on_event, self._on_event_error)
                self._check_identity()
                self.record.append(self.session_id, "reconnected", device_url=self.device.url)
                return
            except DeviceError as exc:
                if time.monotonic() > deadline:
                    raise SessionStop("fault", f"cannot reconnect: {exc}",
                                      cause="link_lost") from exc
                time.sleep(0.2)

    def _load(self, job: PassJob, first: int) -> PassJob:
        """LOAD_PLAN. A pass this session never loaded that the device refuses as fired
        before (BAD_INDEX: its checksum and pass index are a pair the device has fired, under
        another record's numbering, or this record's after it was started afresh) is new to
        this session: it gets the next index no pass of the session uses, recorded
        (``device_pass_index``, which a resume keeps), and is loaded again. The device
        remembers 16 pairs, so 17 tries find a free one. Returns the job as loaded."""
        for _ in range(17):
            try:
                self.device.load_plan(job.spots, first)
                return job
            except BadIndex:
                if first != 0 or self._started(job):
                    raise
                taken = {j.spots.pass_index for j in self.jobs}
                index = next(k % 256 for k in range(job.spots.pass_index + 1,
                                                    job.spots.pass_index + 257)
                             if k % 256 not in taken)
                self.record.append(self.session_id, "device_pass_index", pass_index=job.number,
                                   device_pass_index=index, was=job.spots.pass_index)
                job = replace(job, spots=replace(job.spots, pass_index=index))
                self.jobs[job.number] = job
        raise SessionStop("fault", f"pass {job.number + 1}: the device refused 17 pass indices "
                          "as fired before", cause="refused")

    def _check_identity(self) -> None:
        """The device must be the one the spots were converted for (serial and limits: the
        field size scales every position); else nothing more is fired."""
        found = (self.device.info.serial, self.device.info.limits)
        if found != self._identity:
            self.record.append(self.session_id, "device_mismatch", device_url=self.device.url,
                               serial=found[0])
            raise SessionStop("fault", f"the device at {self.device.url} (serial {found[0]}, "
                              f"limits {found[1]}) is not the one this session was planned for "
                              f"(serial {self._identity[0]}, limits {self._identity[1]}): "
                              "nothing more is fired",
                              cause="device_mismatch")

    def _attempt_pass(self, job: PassJob) -> None:
        if self._closed_by_host():
            raise self._stopped_by_close(job)
        self._check_identity()
        dev = self.device
        self._quiesce()
        first = self._reconcile(job)  # emission is off: the device's count is final
        raised = self._unreset_fault()  # in an attempt or a run before, the link then lost
        if raised is not None:
            self._stop_for_raised_fault(job, raised)
        if first >= job.spots.count:
            return
        status = self._status()
        loaded = (status.state is State.READY and self._is_this_pass(status, job)
                  and status.flags & DeviceFlag.PLAN_LOADED and status.next_index == first)
        dev.laser.set_rep_rate(job.rep_rate_hz)
        if not loaded:
            job = self._load(job, first)
        self.record.append(self.session_id, "pass_start", pass_index=job.number,
                           first_index=first, device_checksum=job.spots.checksum)
        dev.arm(job.spots)
        self._status()
        command: Callable[[], None] = self.device.start
        ready, what = (lambda: not self.mirror.refusals(),
                       lambda: "; ".join(self.mirror.refusals()))
        while True:
            with self._emitting(job, first, command, ready, what) as events:
                ending = self._stream(job, first, events)
            if ending.reason == "complete":
                self._end_pass(job, "complete")
                raised = self._unreset_fault()
                if raised is not None:  # on the pass's last spots, the device already done
                    # with it: the run stops here, as for that fault mid-pass
                    raise SessionStop("fault", f"device fault {raised.name} raised on "
                                      f"pass {job.number + 1}'s last spots (the pass fired "
                                      "completely, every spot recorded): operator reset needed",
                                      cause="device_fault")
                return
            if self._closed_by_host():
                raise self._stopped_by_close(job)
            if ending.reason == "aborted":
                if not self._abort.is_set():  # not the operator: the device was disarmed or
                    # aborted by something else (another host); resumable
                    status = self._status()
                    raise SessionStop("fault", f"pass {job.number + 1} stopped, not by this "
                                      "session "
                                      f"(device {status.state.name}): resume to continue",
                                      cause="stopped_elsewhere")
                self._end_pass(job, "aborted")
                raise SessionStop("aborted", f"pass {job.number + 1} aborted")
            if ending.reason == "fault":
                status = self._status()
                raise SessionStop("fault", f"device fault {status.fault_code.name} in pass "
                                  f"{job.number + 1}",
                                  cause="device_fault")
            # paused: by the operator (Ctrl-C), for an abort, by the footswitch, or by
            # someone else (another thread's Device.pause(), another host)
            if self._abort.is_set():
                dev.abort()
                self._end_pass(job, "aborted")
                raise SessionStop("aborted", f"pass {job.number + 1} aborted")
            if self._pause.is_set():
                raise SessionStop("paused", f"paused by the operator in pass {job.number + 1}")
            if ending.cause is not Cause.FOOTSWITCH:  # only the footswitch's is resumed here
                why = ending.cause.name.lower() if ending.cause else "cause not reported"
                raise SessionStop("fault", f"pass {job.number + 1} paused, not by this session "
                                  f"nor the footswitch ({why}): emission stays paused; resume "
                                  "to continue", cause="stopped_elsewhere")
            command, ready, what = (
                dev.resume, lambda: bool(self.mirror.interlocks & Interlock.FOOTSWITCH_DOWN),
                lambda: "footswitch (press to resume)")

    def _wait_for(self, job: PassJob, first: int, ready: Callable[[], bool],
                  what: Callable[[], str]) -> None:
        """Wait until ``ready`` (at most ``start_wait_s``), reporting ``what`` is awaited as it
        stands at each poll."""
        deadline = time.monotonic() + self.start_wait_s
        while True:  # an abort or a pause asked for wins over a device ready to emit
            if self._closed_by_host():
                raise self._stopped_by_close(job)
            if self._abort.is_set():
                self.device.abort()
                self._end_pass(job, "aborted")
                raise SessionStop("aborted", f"pass {job.number + 1} aborted while waiting")
            if self._pause.is_set():
                self.device.disarm()
                raise SessionStop("paused", f"paused by the operator before emission in pass "
                                  f"{job.number + 1}")
            self._check_events()
            if ready():
                return
            waiting_for = what() or "emission permission"
            if time.monotonic() > deadline:
                self.device.disarm()
                raise SessionStop("waiting", f"emission not started: waiting for {waiting_for}")
            self._report(job, first, 0.0, waiting_for=waiting_for)
            time.sleep(POLL_S)
            status = self._status()
            if status.state is State.FAULT:
                raise SessionStop("fault", f"device fault {status.fault_code.name} while "
                                  f"waiting for {waiting_for}",
                                  cause="device_fault")

    @contextlib.contextmanager
    def _emitting(self, job: PassJob, first: int, command: Callable[[], None],
                  ready: Callable[[], bool], what: Callable[[], str]) -> Iterator[EventQueue]:
        """Wait until ``ready``, then START or RESUME; yields the device's event queue opened
        just before the command, so the stream misses no report sent after it (released on
        leaving the block, whatever ends it)."""
        while True:
            self._wait_for(job, first, ready, what)
            with self.device.events() as events:
                try:
                    command()
                except FootswitchUp:  # released between our check and the command: wait again
                    self._status()
                    continue
                except DeviceTimeout as exc:
                    raise SessionStop("fault", f"emission not confirmed: {exc}",
                                      cause="timeout") from exc
                yield events
                return

    def _stream(self, job: PassJob, first: int, events: EventQueue) -> Progress:
        """Stream the pass, committing what fires; its last Progress (``done``)."""
        started = time.monotonic()
        done_before, known_through = self.record.delivered_summary(self.session_id, job.number)
        delivered_now = 0
        stop_sent = False
        for progress in self.device.stream(job.spots, known_through, events,
                                           report_gap_s=job.report_gap_s):
            if len(progress.index):
                self._commit(job, progress)
                delivered_now += len(progress.index)
            self._check_events()
            wanted = self._abort.is_set() or self._pause.is_set() or self._closed_by_host()
            if wanted and not stop_sent and progress.state is State.EMITTING:
                stop_sent = True  # pause first; an abort follows once the device is paused
                with contextlib.suppress(IllegalState):  # the footswitch got there first
                    self.device.pause()
            elapsed = max(time.monotonic() - started, 1e-6)
            self._report(job, first, delivered_now / elapsed, done=done_before + delivered_now)
            if progress.done:
                return progress
        raise AssertionError("the stream ended without a done Progress")  # pragma: no cover

    def _commit(self, job: PassJob, progress: Progress) -> None:
        """Record confirmed spots (durably) and check the energy monitor."""
        self.record.delivered(self.session_id, job.number, progress.index, progress.measured_uj)
        set_uj = job.set_energy_uj[progress.index]
        verdict = check_energy(progress.index, set_uj, progress.measured_uj)
        if not verdict.ok:
            self.record.append(self.session_id, "energy_fault", pass_index=job.number,
                               spot=verdict.first_violation,
                               worst_deviation=round(verdict.worst_deviation, 4))
            self.device.raise_fault(FaultCode.ENERGY_DEVIATION)
        elif verdict.checked and verdict.worst_deviation > ENERGY_DRIFT_NOTED:
            self.record.append(self.session_id, "energy_drift", pass_index=job.number,
                               worst_deviation=round(verdict.worst_deviation, 4))
        self._check_readings(job, progress)

    def _check_readings(self, job: PassJob, progress: Progress) -> None:
        """Raise ENERGY_DEVIATION (an ``energy_fault`` entry with ``unread``) once
        :data:`MAX_UNREAD_SPOTS` spots of a pass in a row were confirmed without a reading
        (their reports lost while the device's replies still came: confirmed by its status,
        energy unknown): the energy monitor no longer guards the pass. In whatever state the
        device is: after a pass that ended so (the limit reached only by the status after its
        last spot), the run ends as a fault, and the next pass does not fire blind."""
        unread = progress.measured_uj < 0
        run = self._unread_run if self._unread_pass == job.number else 0
        if unread.all():
            run += int(unread.size)
        else:
            run = int(unread.size - 1 - np.flatnonzero(~unread)[-1])
        self._unread_pass, self._unread_run = job.number, run
        if run >= MAX_UNREAD_SPOTS:
            self.record.append(self.session_id, "energy_fault", pass_index=job.number,
                               spot=int(progress.index[-1]), unread=run)
            self._unread_run = 0
            self.device.raise_fault(FaultCode.ENERGY_DEVIATION)

    def _unreset_fault(self) -> FaultCode | None:
        """ENERGY_DEVIATION if the record holds an ``energy_fault`` of this session after its
        last ``operator_reset``: the fault the session raised then may never have reached the
        device (the link lost as it was raised, and no reconnect, or it failed), and nothing
        more fires until the operator resets it."""
        last = {kind: max((e.seq for e in self.record.entries(self.session_id, kind)),
                          default=0) for kind in ("energy_fault", "operator_reset")}
        # (every ENERGY_DEVIATION the session raises follows its energy_fault entry: the
        # record is the latch, read where a pass starts or ends)
        return (FaultCode.ENERGY_DEVIATION if last["energy_fault"] > last["operator_reset"]
                else None)

    def _stop_for_raised_fault(self, job: PassJob, code: FaultCode) -> None:
        """A fault this session raised, in this pass before a reconnect or in an earlier run,
        that no operator reset followed (the command may never have reached the device): the
        device is put in FAULT again unless it is, and the run stops as a fault; nothing more
        fires."""
        if self._status().state is not State.FAULT:
            self.device.raise_fault(code)
        raise SessionStop("fault", f"device fault {code.name} raised by the session (pass "
                          f"{job.number + 1}) and not reset by the operator since, the device "
                          "may not have received it: operator reset needed",
                          cause="device_fault")

    def _report(self, job: PassJob, first: int, rate: float, done: int | None = None,
                waiting_for: str = "") -> None:
        delivered = self.delivered_count(job) if done is None else done
        remaining = job.spots.count - delivered
        self.on_progress(SessionProgress(
            job.number, len(self.jobs), delivered, job.spots.count, rate,
            remaining / rate if rate > 0 else math.inf, self.mirror.state,
            self.mirror.interlocks, waiting_for))
