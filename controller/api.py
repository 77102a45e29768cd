"""The scripting API for service scripts: everything a treatment needs, from one module.

Example (runs against the in-process simulator)::

    from controller.api import (DensitySpec, Pattern, PassSettings, TreatmentSettings,
                                get_handpiece, open_device, plan_for_device, treat)

    with open_device("sim://?footswitch=down") as dev:
        settings = TreatmentSettings(get_handpiece("spot120"), Pattern("square", 5.0),
                                     DensitySpec(coverage_pct=5.0), depth_um=200.0,
                                     passes=PassSettings(count=2))
        plan = plan_for_device(settings, dev.info.limits)
        outcome = treat(dev, [plan], "service.db", operator="service", patient_ref="bench",
                        on_progress=lambda p: print(f"pass {p.pass_number + 1}:",
                                                    p.delivered, p.total))
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.errors import SettingsError
from controller.handpiece import available_handpieces, get_handpiece, load_handpiece
from controller.outcomes import (
    AUTO_RESETS,
    FAULT_CAUSES,
    NOT_RESETTABLE,
    OUTCOMES,
    RESUMABLE,
    resumable_sessions,
    session_outcomes,
)
from controller.record import RecordError, RecordLocked, TreatmentRecord
from controller.scanpath import Plan, build_plan
from controller.script import load_script
from controller.session import (
    SessionBusy,
    SessionOutcome,
    SessionProgress,
    TreatmentSession,
    WarningsNotAcknowledged,
    plan_for_device,
    timing_for,
)
from controller.settings import (
    DensitySpec,
    Feathering,
    PassSettings,
    Pattern,
    ScanOrder,
    TreatmentSettings,
)
from controller.validation import ClinicalEnvelope, PlanRejected, validate_plans
from drivers import (
    AuthFailed,
    BadIndex,
    BufferFull,
    Device,
    DeviceClosed,
    DeviceError,
    DeviceLost,
    DeviceMisreport,
    DeviceNack,
    DeviceTimeout,
    FootswitchUp,
    IllegalState,
    IndicatorDelay,
    InterlockOpen,
    InvalidReply,
    LimitError,
    MessageError,
    NotAuthenticated,
    OutOfRange,
    PlanMismatch,
    TransportURLError,
    open_device,
)
from drivers.protocol.messages import FaultCode, Interlock, State


def treat(device: Device, plans: list[Plan], record_path: str | Path, *, operator: str,
          patient_ref: str, on_progress: Callable[[SessionProgress], None] | None = None,
          acknowledge_warnings: bool = False, pass_wait_s: float = 0.0,
          on_session: Callable[[TreatmentSession], None] | None = None,
          start_wait_s: float | None = None,
          envelope: ClinicalEnvelope | None = None) -> SessionOutcome:
    """Validate ``plans`` and deliver them, recording everything in ``record_path``, every
    pass starting at least ``pass_wait_s`` after the previous one ended (the thermal screen
    assumes that cooling wait). ``operator`` and ``patient_ref`` name who treats and whom
    (SettingsError when blank; a service pass names what it fires at, e.g. "test card").

    ``on_session`` is called with the TreatmentSession once it is recorded, before anything
    is sent to the device: a GUI keeps it to call ``request_pause()`` or
    ``request_abort()`` from its own thread while treat() delivers on another. If it raises,
    the session is recorded as cancelled (nothing fired) and the exception raised.
    ``start_wait_s`` (None: the session's default, 30 s) is how long a pass waits for the
    footswitch and emission permission; ``envelope`` the clinical envelope held to (None: the
    installed one, ``controller/data/envelope.toml``).

    Raises PlanRejected for a plan outside the limits; borderline warnings raise
    WarningsNotAcknowledged unless ``acknowledge_warnings`` (recorded with the operator's name).
    Faults are not reset here: inspect the outcome (``cause`` in NOT_RESETTABLE: no reset
    helps) and call ``TreatmentSession.operator_reset`` deliberately.
    """
    waits: dict[str, Any] = {} if start_wait_s is None else {"start_wait_s": start_wait_s}
    with TreatmentRecord(record_path) as record:
        session = TreatmentSession(device, plans, record, operator=operator,
                                   patient_ref=patient_ref, on_progress=on_progress,
                                   pass_wait_s=pass_wait_s, envelope=envelope, **waits)
        try:
            if on_session is not None:
                try:
                    on_session(session)
                except BaseException:
                    with contextlib.suppress(RecordError, SettingsError):
                        session.cancel()  # not left open in the record: nothing fired
                    raise
            if acknowledge_warnings and session.warnings:
                session.acknowledge_warnings(by=operator)
            return session.run()
        finally:
            session.close()


__all__ = [
    "AUTO_RESETS",
    "FAULT_CAUSES",
    "NOT_RESETTABLE",
    "OUTCOMES",
    "RESUMABLE",
    "AuthFailed",
    "BadIndex",
    "BufferFull",
    "ClinicalEnvelope",
    "DensitySpec",
    "Device",
    "DeviceClosed",
    "DeviceError",
    "DeviceLost",
    "DeviceMisreport",
    "DeviceNack",
    "DeviceTimeout",
    "FaultCode",
    "Feathering",
    "FootswitchUp",
    "IllegalState",
    "IndicatorDelay",
    "Interlock",
    "InterlockOpen",
    "InvalidReply",
    "LimitError",
    "MessageError",
    "NotAuthenticated",
    "OutOfRange",
    "PassSettings",
    "Pattern",
    "Plan",
    "PlanMismatch",
    "PlanRejected",
    "RecordError",
    "RecordLocked",
    "ScanOrder",
    "SessionBusy",
    "SessionOutcome",
    "SessionProgress",
    "SettingsError",
    "State",
    "TransportURLError",
    "TreatmentRecord",
    "TreatmentSession",
    "TreatmentSettings",
    "WarningsNotAcknowledged",
    "available_handpieces",
    "build_plan",
    "get_handpiece",
    "load_handpiece",
    "load_script",
    "open_device",
    "plan_for_device",
    "resumable_sessions",
    "session_outcomes",
    "timing_for",
    "treat",
    "validate_plans",
]
