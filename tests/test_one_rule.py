"""Rules that several layers apply live in one place in drivers: its users agree."""

from __future__ import annotations

from dataclasses import replace
from itertools import product

import numpy as np
import pytest

from controller.record import lsb_to_mm
from controller.safety import SafetyMirror, Transition
from controller.session import timing_for
from controller.thermal_delivered import spot_positions_um
from controller.validation import _device_findings
from drivers.errors import LimitError
from drivers.galvo import GalvoScanner, lsb_to_um, usable_half_field_um
from drivers.info import InterlockEvent, StateEvent, average_power_mw, power_limited_rate_hz
from drivers.protocol import Message, decode, encode, message
from drivers.protocol.messages import SPOT_DTYPE, Cause, FaultCode, Interlock, State
from drivers.pulse import PulseGenerator
from drivers.stream import PassStreamer
from tests.test_drivers_units import LIMITS
from tests.test_session import plan_for_device, settings


def test_every_reader_of_galvo_lsb_converts_it_alike() -> None:
    """The record's export, the delivered-heat model and the scanner each had their own
    formula (x lsb_per_um, x field / full scale, / lsb_per_um / 1000)."""
    rng = np.random.default_rng(3)
    spots = np.zeros(500, SPOT_DTYPE)
    spots["x_lsb"] = rng.integers(LIMITS.usable_lsb_min, LIMITS.usable_lsb_max, 500)
    spots["y_lsb"] = rng.integers(LIMITS.usable_lsb_min, LIMITS.usable_lsb_max, 500)
    field_um = float(LIMITS.field_size_um)
    scanner = GalvoScanner(None, LIMITS)  # type: ignore[arg-type]
    x_um, y_um = scanner.to_um(spots["x_lsb"], spots["y_lsb"])
    assert np.array_equal(x_um, lsb_to_um(spots["x_lsb"], field_um))
    assert np.array_equal(lsb_to_mm(spots["y_lsb"], field_um), y_um / 1000.0)
    heat_x, heat_y = spot_positions_um(spots, field_um)
    assert np.array_equal(heat_x, x_um) and np.array_equal(heat_y, y_um)
    back_x, back_y = scanner.to_lsb(x_um, y_um)  # the inverse of the host's conversion
    assert np.array_equal(back_x, spots["x_lsb"]) and np.array_equal(back_y, spots["y_lsb"])


@pytest.mark.parametrize("usable", [(1024, 64511), (3000, 64511), (1024, 60000)])
def test_the_plan_check_allows_the_reach_the_scanner_takes(usable: tuple[int, int]) -> None:
    limits = replace(LIMITS, usable_lsb_min=usable[0], usable_lsb_max=usable[1])
    scanner = GalvoScanner(None, limits)  # type: ignore[arg-type]
    half = usable_half_field_um(limits)
    scanner.to_lsb([-half, half], [half, -half])  # accepted on every side
    lo, hi = scanner.usable_range_um()
    beyond = np.nextafter(half, np.inf) * (1.0 if hi <= -lo else -1.0)  # past the nearer edge
    with pytest.raises(LimitError):
        scanner.to_lsb([beyond], [0.0])
    with pytest.raises(LimitError):
        scanner.to_lsb([0.0], [beyond])


def test_the_planner_fires_at_the_highest_rate_the_power_check_accepts() -> None:
    """energy x stack x rate: the pulse generator's check, the plan validation and the
    planner's power-limited rate (its inverse) each wrote it."""
    treatment = settings(passes=1)
    energy_uj, pulse_us, stack = treatment.handpiece.dose_for_depth([treatment.depth_um])
    per_spot_uj = float(energy_uj[0]) * float(stack[0])
    limits = replace(LIMITS, avg_power_max_mw=int(per_spot_uj * 300.5 / 1000.0))
    rate = timing_for(limits, treatment).max_spot_rate_hz
    assert rate == np.floor(power_limited_rate_hz(float(energy_uj[0]), float(stack[0]),
                                                  limits.avg_power_max_mw)) == 300
    assert average_power_mw(float(energy_uj[0]), float(stack[0]), rate) <= \
        limits.avg_power_max_mw < average_power_mw(float(energy_uj[0]), float(stack[0]),
                                                   rate + 1)
    pulses = PulseGenerator(None, limits)  # type: ignore[arg-type]
    pulses.check(energy_uj, pulse_us, stack, rate)
    with pytest.raises(LimitError, match="average power"):
        pulses.check(energy_uj, pulse_us, stack, rate + 1)
    plan = plan_for_device(treatment, limits)
    findings: list = []
    _device_findings(plan, 0, 0, limits, findings)
    assert not [f for f in findings if "average_power" in str(f)]


def _decoded(msg: Message) -> Message:
    """``msg`` as the link hands it over: encoded, then decoded from the wire."""
    return decode(encode(msg)[1:-1])


def test_state_and_interlock_events_decode_to_typed_values() -> None:
    event = StateEvent.from_message(_decoded(message(
        "EVT_STATE", 7, old_state=int(State.EMITTING), new_state=int(State.FAULT),
        cause=int(Cause.INTERLOCK), fault_code=int(FaultCode.INTERLOCK_OPEN))))
    assert event == StateEvent(State.EMITTING, State.FAULT, Cause.INTERLOCK,
                               FaultCode.INTERLOCK_OPEN)
    assert type(event.new_state) is State and type(event.cause) is Cause
    assert type(event.fault_code) is FaultCode
    interlocks = InterlockEvent.from_message(_decoded(message("EVT_INTERLOCK", 8, old=0x0F,
                                                              new=0x07)))
    assert interlocks == InterlockEvent(
        Interlock(0x0F), Interlock.KEY_ON | Interlock.DOOR_CLOSED | Interlock.ESTOP_RELEASED)
    assert type(interlocks.new) is Interlock


class _Streamer(PassStreamer):
    """A PassStreamer with only the state its event handling touches; no link to reconcile
    with (an ending state asks for the status), so that is only noted."""

    def __init__(self) -> None:
        self.state, self.cause, self.fault_code = State.STANDBY, None, FaultCode.NONE
        self.interlocks, self.ending, self.reconciled = Interlock(0), False, False

    def reconcile(self) -> None:
        self.reconciled = True


def test_the_stream_and_the_safety_mirror_read_an_event_alike() -> None:
    """Both parsed EVT_STATE and EVT_INTERLOCK themselves (State(int(msg["new_state"]))...)."""
    for new, cause, fault in product(State, Cause, FaultCode):
        msg = _decoded(message("EVT_STATE", old_state=int(State.ARMED), new_state=int(new),
                               cause=int(cause), fault_code=int(fault)))
        event = StateEvent.from_message(msg)
        seen: list[Transition] = []
        mirror, stream = SafetyMirror(0.0, seen.append), _Streamer()
        mirror.on_event(msg)
        stream.handle_event(msg)
        assert (mirror.state, mirror.fault) == (stream.state, stream.fault_code) == (
            event.new_state, event.fault_code)
        assert stream.cause is event.cause and seen[-1].cause == event.cause.name.lower()
    for bits in range(16):
        msg = _decoded(message("EVT_INTERLOCK", old=0, new=bits))
        mirror, stream = SafetyMirror(0.0), _Streamer()
        mirror.on_event(msg)
        stream.handle_event(msg)
        assert mirror.interlocks == stream.interlocks == InterlockEvent.from_message(msg).new
        assert type(mirror.interlocks) is type(stream.interlocks) is Interlock
