"""What a session's outcome means, for ``co2scan`` and for scripts and GUIs alike: the causes
of a ``fault``, which of them an operator reset may clear and which device faults are reset
without asking, and each session's last outcome as the treatment record holds it (which
sessions can be resumed).

One source of truth: ``co2scan run`` decides its resets, ``co2scan log list`` and ``report``
name outcomes from here; ``controller.api`` re-exports it.
"""

from __future__ import annotations

from typing import Any

from controller.record import TreatmentRecord
from drivers.protocol.messages import FaultCode

#: The causes of a ``fault`` outcome (:attr:`controller.session.SessionOutcome.cause`) and
#: what each means.
FAULT_CAUSES = {
    "device_fault": "the device is in FAULT (its fault code: the device's status)",
    "refused": "the device refused (NACKed) a command",
    "timeout": "the device did not reply in time",
    "link_lost": "the link to the device was lost",
    "closed_by_host": "the Device was closed by this host while the session ran",
    "device_mismatch": "not the device the session was planned for",
    "stopped_elsewhere": "the pass was disarmed, aborted or paused by someone else",
    "count_mismatch": "the device's count of fired spots is behind the record, or cannot be "
                      "confirmed",
    "record_error": "the treatment record could not be written",
    "device_error": "another device error",
}
#: Faults of the session, not the device (:data:`FAULT_CAUSES`): an operator reset of the
#: device changes nothing there, so none is offered or used.
NOT_RESETTABLE = ("count_mismatch", "device_mismatch", "record_error", "closed_by_host",
                  "stopped_elsewhere")
#: Device faults ``co2scan run --reset-fault`` resets without asking: the host's or the link's
#: (a crash, a power cycle). A laser, galvo or interlock fault is the operator's to check.
AUTO_RESETS = (FaultCode.WATCHDOG, FaultCode.DEVICE_RESET)

#: Entries that say how a run stopped. The transitions into :data:`STOP_STATES` that follow
#: them until a run starts again (:data:`RESTARTING_KINDS`, ARMED, EMITTING) are the stop's
#: own PAUSE and DISARM, which the link's thread may record after them: they do not change
#: the outcome (a run stopped as paused, fault or interrupted read "waiting" or "paused").
STOPPING_KINDS = frozenset({"session_end", "run_stopped", "interrupted", "energy_fault",
                            "device_error", "record_error", "device_mismatch", "link_lost"})
RESTARTING_KINDS = frozenset({"session_resumed", "reconnected", "operator_reset"})
STOP_STATES = frozenset({"PAUSED", "READY", "STANDBY"})
#: The entry kinds a session's outcome is read from (:func:`session_outcomes`).
OUTCOME_KINDS = (*sorted(STOPPING_KINDS), *sorted(RESTARTING_KINDS), "transition")
#: What each outcome of :func:`session_outcomes` means (``log list --help``, README).
OUTCOMES = {
    "completed": "every spot delivered",
    "aborted": "aborted by the operator (or the footswitch, then abort)",
    "cancelled": "not confirmed, nothing fired",
    "fault": "stopped by a fault, with its cause (a device fault code, an energy deviation, "
             "a device, link or record error); resumable",
    "paused": "paused (Ctrl-C, the footswitch); resumable",
    "waiting": "armed, but emission did not start or resume within the start wait "
               "(footswitch, permission); resumable",
    "interrupted": "stopped by a signal or an error in co2scan, with its name; resumable",
    "open": "no outcome recorded: delivering now, or its co2scan stopped without one "
            "(a crash, a kill); resumable",
}
#: The outcomes of a session that has not ended: it can be resumed (``co2scan run --resume``,
#: ``TreatmentSession(..., session_id=)``). The others ended it.
RESUMABLE = ("fault", "paused", "waiting", "interrupted", "open")


def _fold_outcome(outcome: tuple[str, str], kind: str, body: dict[str, Any]
                  ) -> tuple[str, str]:
    """The outcome after one more entry of a session (in record order)."""
    status, cause = outcome
    if kind == "session_end":
        return str(body["status"]), ""
    if kind == "run_stopped":  # how a run() ended that the session can resume from
        stopped = str(body["status"])
        if stopped == status and cause:  # the entries before it named the cause more closely
            return status, cause
        return stopped, str(body["cause"]).replace("_", " ")
    if kind in ("session_resumed", "operator_reset", "reconnected"):
        return "open", ""
    if kind == "interrupted":
        return "interrupted", str(body.get("reason", ""))
    if kind == "energy_fault":
        if body.get("unread"):
            return "fault", f"energy readings lost ({body['unread']} spots in a row)"
        deviation = body.get("worst_deviation")
        return "fault", ("energy deviation" + (f" {percent(deviation)}"
                                               if isinstance(deviation, (int, float)) else ""))
    if kind in ("device_error", "record_error", "device_mismatch", "link_lost"):
        return "fault", kind.replace("_", " ")
    if kind == "transition":
        new, old = body.get("new"), body.get("old")
        if new == "FAULT":
            return ("fault", cause) if status == "fault" and cause else \
                ("fault", f"device fault {body.get('fault', '?')}")
        if new == "PAUSED":
            return "paused", ""
        if new in ("ARMED", "EMITTING"):
            return "open", ""
        if new == "READY" and old in ("ARMED", "PAUSED"):
            return "waiting", ""
    return status, cause


def percent(fraction: float) -> str:
    """A recorded deviation (a fraction: 0.3251) as a percentage (32.5 %)."""
    return f"{fraction * 100:.1f} %"


def session_outcomes(record: TreatmentRecord, session: int | None = None
                     ) -> dict[int, tuple[str, str]]:
    """Each session's last outcome and its cause (``fault``: what faulted, in words;
    ``interrupted``: the signal or exception), read from its entries (:data:`OUTCOMES`): its
    end (completed, aborted, cancelled), each stop it can resume from (``run_stopped``), and,
    in records written before those were, its last transitions and error entries. A session
    with none of these entries is not in it: its outcome is ``("open", "")``."""
    found = [e for kind in OUTCOME_KINDS for e in record.entries(session, kind)]
    outcomes: dict[int, tuple[str, str]] = {}
    stopped: set[int] = set()  # sessions whose run has recorded how it stopped
    for e in sorted(found, key=lambda e: e.seq):
        new = e.body.get("new") if e.kind == "transition" else None
        if e.session in stopped and new in STOP_STATES:
            continue  # the stop's own PAUSE / DISARM, recorded from the link's thread late
        if e.kind in STOPPING_KINDS:
            stopped.add(e.session)
        elif e.kind in RESTARTING_KINDS or new in ("ARMED", "EMITTING"):
            stopped.discard(e.session)
        outcomes[e.session] = _fold_outcome(outcomes.get(e.session, ("open", "")), e.kind,
                                            e.body)
    return outcomes


def resumable_sessions(record: TreatmentRecord) -> dict[int, tuple[str, str]]:
    """The sessions of ``record`` that have not ended, by id, with their last outcome (one of
    :data:`RESUMABLE`, and its cause), in the order they were started. A resume is still
    refused for one planned otherwise than the plans given, or on another device."""
    outcomes = session_outcomes(record)
    found = {e.session: outcomes.get(e.session, ("open", "")) for e in record.sessions()}
    return {k: outcome for k, outcome in found.items() if outcome[0] in RESUMABLE}


def outcome_text(outcome: tuple[str, str]) -> str:
    """An outcome as ``log list`` shows it: ``fault (record error)``, ``completed``."""
    status, cause = outcome
    return f"{status} ({cause})" if cause else status
