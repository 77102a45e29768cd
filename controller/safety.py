"""Host-side safety: a mirror of the device state machine and the energy-monitor check.

The mirror is driven only by what the device reports (STATUS_REPORT, EVT_STATE,
EVT_INTERLOCK), never by what the host assumes its commands did. Every transition is handed to
a recorder with its cause. ``refusals`` lists every reason emission may not start now.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from drivers.errors import INTERLOCK_WORDS
from drivers.info import DeviceStatus, InterlockEvent, StateEvent
from drivers.protocol import Message
from drivers.protocol.messages import ACTIVE, DeviceFlag, FaultCode, Interlock, State

#: Medical lasers: delivered level within +/-20 % of the set value (IEC 60601-2-22).
ENERGY_TOLERANCE = 0.20
#: A batch whose worst deviation from the set energy is beyond this (yet within
#: ENERGY_TOLERANCE) is recorded as an ``energy_drift`` entry: a monitor or source drifting.
ENERGY_DRIFT_NOTED = 0.10

#: Each interlock that does not permit emission, in words (the drivers' one table).
INTERLOCK_NAMES: dict[Interlock, str] = INTERLOCK_WORDS


@dataclass(frozen=True)
class Transition:
    """One state change of the device as the host saw it."""

    at: float
    old: State | None
    new: State
    cause: str
    fault: FaultCode = FaultCode.NONE


class SafetyMirror:
    """The host's view of the device's state, interlocks and emission indicator."""

    def __init__(self, pre_emission_s: float,
                 on_transition: Callable[[Transition], None] = lambda t: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pre_emission_s = pre_emission_s
        self.on_transition = on_transition
        self.clock = clock
        self.state: State | None = None
        self.interlocks = Interlock(0)
        self.fault = FaultCode.NONE
        self.indicator_since: float | None = None

    def _set_state(self, new: State, cause: str, fault: FaultCode = FaultCode.NONE) -> None:
        if new is self.state:
            return
        old, self.state, self.fault = self.state, new, fault
        if new in ACTIVE:
            if self.indicator_since is None:
                self.indicator_since = self.clock()
        else:
            self.indicator_since = None
        self.on_transition(Transition(time.time(), old, new, cause, fault))

    def on_status(self, status: DeviceStatus) -> None:
        """Adopt a STATUS_REPORT (after connecting or reconciling)."""
        self.interlocks = status.interlocks
        if not status.flags & DeviceFlag.EMISSION_INDICATOR:
            self.indicator_since = None
        # outside FAULT the code is the last fault's (rule 8), not a cause of this state
        self._set_state(status.state, "status report",
                        status.fault_code if status.state is State.FAULT else FaultCode.NONE)

    def on_event(self, msg: Message) -> None:
        """Adopt an EVT_STATE or EVT_INTERLOCK (other messages are ignored)."""
        if msg.name == "EVT_STATE":
            event = StateEvent.from_message(msg)
            self._set_state(event.new_state, event.cause.name.lower(), event.fault_code)
        elif msg.name == "EVT_INTERLOCK":
            self.interlocks = InterlockEvent.from_message(msg).new

    def open_interlocks(self) -> list[str]:
        """Human-readable list of every interlock that does not permit emission."""
        return [text for bit, text in INTERLOCK_NAMES.items() if not self.interlocks & bit]

    def refusals(self) -> list[str]:
        """Every reason emission may not start now; empty when it may."""
        reasons = []
        if self.state is not State.ARMED:
            reasons.append(f"device is {self.state.name if self.state else 'unknown'}, "
                           "not ARMED")
        reasons += self.open_interlocks()
        if self.indicator_since is None:
            reasons.append("emission indicator is off")
        else:
            left = self.pre_emission_s - (self.clock() - self.indicator_since)
            if left > 0:
                reasons.append(f"emission indicator on for {left:.2f} s more "
                               f"(pre-emission delay {self.pre_emission_s:.2f} s)")
        return reasons


@dataclass(frozen=True)
class EnergyVerdict:
    """Energy-monitor check of a batch of delivered spots."""

    checked: int
    unknown: int
    worst_deviation: float
    first_violation: int | None

    @property
    def ok(self) -> bool:
        """True when no spot with a reading was beyond the tolerance (spots without one,
        ``unknown``, do not fail it)."""
        return self.first_violation is None


def check_energy(index: np.ndarray, set_uj: np.ndarray, measured_uj: np.ndarray,
                 tolerance: float = ENERGY_TOLERANCE) -> EnergyVerdict:
    """Compare measured with set energy (both totals per spot); -1 means no reading."""
    measured = np.asarray(measured_uj, np.float64)
    known = measured >= 0
    if not known.any():
        return EnergyVerdict(0, int(measured.size), 0.0, None)
    deviation = np.abs(measured[known] / np.asarray(set_uj, np.float64)[known] - 1.0)
    bad = np.flatnonzero(deviation > tolerance)
    first = int(np.asarray(index)[known][bad[0]]) if bad.size else None
    return EnergyVerdict(int(known.sum()), int((~known).sum()), float(deviation.max()), first)
