"""The host's safety mirror and the energy-monitor check."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from controller.safety import SafetyMirror, Transition, check_energy
from drivers.errors import INTERLOCK_WORDS, nack_error
from drivers.info import DeviceStatus
from drivers.protocol import Message, message
from drivers.protocol.messages import (
    SAFETY_INTERLOCKS,
    Cause,
    DeviceFlag,
    ErrorCode,
    FaultCode,
    Interlock,
    State,
)

ALL_OK = int(SAFETY_INTERLOCKS | Interlock.FOOTSWITCH_DOWN)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state_event(old: State, new: State, cause: Cause = Cause.HOST_COMMAND,
                fault: FaultCode = FaultCode.NONE) -> Message:
    return message("EVT_STATE", old_state=int(old), new_state=int(new), cause=int(cause),
                   fault_code=int(fault))


def test_emission_needs_armed_interlocks_footswitch_and_delay() -> None:
    clock = FakeClock()
    seen: list[Transition] = []
    mirror = SafetyMirror(2.0, seen.append, clock)
    mirror.on_event(message("EVT_INTERLOCK", old=0, new=ALL_OK))
    assert "not ARMED" in mirror.refusals()[0]
    mirror.on_event(state_event(State.READY, State.ARMED))
    assert mirror.refusals() == [
        "emission indicator on for 2.00 s more (pre-emission delay 2.00 s)"
    ]
    clock.now += 2.0
    assert mirror.refusals() == []
    mirror.on_event(message("EVT_INTERLOCK", old=ALL_OK, new=ALL_OK & ~int(Interlock.DOOR_CLOSED)))
    assert mirror.refusals() == ["door open"]
    assert [t.new for t in seen] == [State.ARMED] and seen[0].cause == "host_command"


def test_fault_is_recorded_with_its_code() -> None:
    seen: list[Transition] = []
    mirror = SafetyMirror(0.0, seen.append, FakeClock())
    mirror.on_event(state_event(State.EMITTING, State.FAULT, Cause.INTERLOCK, FaultCode.ESTOP))
    assert seen[-1].fault is FaultCode.ESTOP and mirror.indicator_since is None


class MirrorMachine(RuleBasedStateMachine):
    """Whatever the device reports, the mirror never permits emission unsafely."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.mirror = SafetyMirror(1.0, clock=self.clock)

    @rule(new=st.sampled_from(list(State)))
    def state(self, new: State) -> None:
        self.mirror.on_event(state_event(self.mirror.state or State.STANDBY, new))

    @rule(bits=st.integers(0, 15))
    def interlocks(self, bits: int) -> None:
        self.mirror.on_event(message("EVT_INTERLOCK", old=0, new=bits))

    @rule(dt=st.floats(0, 3))
    def wait(self, dt: float) -> None:
        self.clock.now += dt

    @invariant()
    def permitted_only_when_safe(self) -> None:
        if not self.mirror.refusals():
            assert self.mirror.state is State.ARMED
            assert self.mirror.interlocks == ALL_OK
            assert self.mirror.indicator_since is not None  # on since ARMED
            assert self.clock.now - self.mirror.indicator_since >= 1.0


TestMirrorMachine = MirrorMachine.TestCase


def test_energy_within_20_percent_passes_and_beyond_fails() -> None:
    index = np.arange(10, 14)
    verdict = check_energy(index, np.full(4, 1000), np.array([1190, 810, -1, 1000]))
    assert verdict.ok and verdict.checked == 3 and verdict.unknown == 1
    verdict = check_energy(index, np.full(4, 1000), np.array([1000, 1000, 1201, 700]))
    assert not verdict.ok and verdict.first_violation == 12
    assert abs(verdict.worst_deviation - 0.3) < 1e-9


@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=50), st.floats(0, 0.5))
def test_energy_verdict_matches_definition(set_values: list[int], skew: float) -> None:
    set_uj = np.array(set_values)
    measured = np.rint(set_uj * (1 + skew)).astype(np.int64)
    verdict = check_energy(np.arange(len(set_uj)), set_uj, measured)
    deviations = np.abs(measured / set_uj - 1)
    assert verdict.ok == bool((deviations <= 0.2).all())


def test_a_status_outside_fault_records_no_fault() -> None:
    """After a reset the device keeps the last fault's code (rule 8); a state adopted from a
    status report outside FAULT is not caused by it (the record showed ``ARMED`` with
    ``fault WATCHDOG``)."""
    seen: list[Transition] = []
    mirror = SafetyMirror(2.0, seen.append)

    def status(state: State, fault: FaultCode) -> DeviceStatus:
        return DeviceStatus(state, SAFETY_INTERLOCKS, DeviceFlag(0), fault, 0, 0, 0, 0, 0, 0,
                            None, 0, 25.0, 100)

    mirror.on_status(status(State.FAULT, FaultCode.WATCHDOG))
    mirror.on_status(status(State.ARMED, FaultCode.WATCHDOG))
    assert [(t.new, t.fault) for t in seen] == [(State.FAULT, FaultCode.WATCHDOG),
                                                (State.ARMED, FaultCode.NONE)]
    assert mirror.fault is FaultCode.NONE


def test_the_mirror_and_the_drivers_word_open_interlocks_alike() -> None:
    """The session said "door (remote interlock) open" where INTERLOCK_OPEN said "door
    open": two tables. One now, in drivers; every combination of open safety interlocks
    reads the same in the mirror's refusals and the device's refusal."""
    mirror = SafetyMirror(0.0)
    for bits in range(16):
        closed = Interlock(bits) | Interlock.FOOTSWITCH_DOWN
        mirror.on_event(message("EVT_INTERLOCK", old=0, new=int(closed)))
        exc = nack_error("ARM", int(ErrorCode.INTERLOCK_OPEN), int(closed), int(State.READY), "")
        words = mirror.open_interlocks()
        assert (f"detail {int(closed)}: {', '.join(words)})" in str(exc)) if words else \
            f"(detail {int(closed)})" in str(exc)
    mirror.on_event(message("EVT_INTERLOCK", old=0, new=0))
    assert mirror.open_interlocks()[-1] == INTERLOCK_WORDS[Interlock.FOOTSWITCH_DOWN]
