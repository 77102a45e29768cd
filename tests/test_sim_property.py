"""Properties: whatever a host sends, in whatever order, and whatever the operator does with the
inputs (and the laser head's temperature, and power losses), the device never fires with an
interlock open, never fires a spot index twice, and emits nothing, aiming beam included, in
FAULT."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from drivers.protocol import Message, encode, encode_frame, message
from drivers.protocol import messages as m
from drivers.protocol.messages import SAFETY_INTERLOCKS, DeviceFlag, FaultCode, Interlock, State
from sim_hw.config import INPUT_WORDS, SimConfig
from sim_hw.device import SimDevice
from sim_hw.nvm import NonVolatile
from sim_hw.probe import RawHost, attach, make_spots, plan_checksum
from tests.strategies import messages

PLANS = [make_spots(60), make_spots(60, energy_uj=20_000)]
CHECKSUMS = [plan_checksum(spots) for spots in PLANS]
HOST_NAMES = [d.name for d in m.MESSAGES if d.direction == m.Direction.HOST]
EMIT_BITS = SAFETY_INTERLOCKS | Interlock.FOOTSWITCH_DOWN


class HostChaos(RuleBasedStateMachine):
    """Random requests (well-formed, random and duplicated), input changes, resets and time."""

    def __init__(self) -> None:
        super().__init__()
        self.device = SimDevice(SimConfig(pre_emission_ms=20, footswitch=True, rep_rate_hz=500,
                                          buffer_spots=300))
        self.host: RawHost = attach(self.device)
        self.last_wire = b""
        self.seq = 0
        self.fired: set[int] = set()  # indices fired while the same plan stays loaded
        self.tracked_checksum: int | None = None
        self.checked = 0

    def _send(self, wire: bytes) -> None:
        self.last_wire = wire
        self.device.receive(wire)
        self.device.transmit()

    def _request(self, name: str, records: np.ndarray | None = None, **values: int) -> None:
        self.seq = (self.seq + 1) & 0xFFFF
        self._send(encode(message(name, self.seq, records=records, text="", **values)))

    @rule(plan=st.integers(0, 1), first=st.integers(0, 59))
    def load_plan(self, plan: int, first: int) -> None:
        self._request("LOAD_PLAN", pass_index=plan, spot_count=60, plan_checksum=CHECKSUMS[plan],
                      first_index=first)

    @rule(count=st.integers(1, 80), shift=st.sampled_from([0, 0, 0, -1, 1]))
    def spot_batch(self, count: int, shift: int) -> None:
        plan = self.device.plan
        if plan is None:
            return
        start = max(0, plan.next_index + shift)
        source = PLANS[CHECKSUMS.index(plan.plan_checksum)] if (
            plan.plan_checksum in CHECKSUMS) else PLANS[0]
        batch = source[start:start + count]
        if len(batch):
            self._request("SPOT_BATCH", batch)

    @rule(right=st.booleans())
    def arm(self, right: bool) -> None:
        plan = self.device.plan
        checksum = plan.plan_checksum if plan is not None and right else 12345
        self._request("ARM", plan_checksum=checksum)

    @rule(name=st.sampled_from(["START", "PAUSE", "RESUME", "DISARM", "ABORT", "RESET_FAULT",
                                "HEARTBEAT", "STATUS_REQUEST", "IDENTIFY"]))
    def command(self, name: str) -> None:
        self._request(name)

    @rule(msg=messages(HOST_NAMES))
    def random_request(self, msg: Message) -> None:
        self._send(encode(msg))

    @rule(type_id=st.integers(0, 255), payload=st.binary(max_size=40))
    def random_frame(self, type_id: int, payload: bytes) -> None:
        self._send(encode_frame(type_id, 0, payload))

    @precondition(lambda self: bool(self.last_wire))
    @rule()
    def duplicate_last_frame(self) -> None:
        self._send(self.last_wire)

    @rule()
    def progress(self) -> None:
        """What a cooperative host and operator do, so that random sequences reach emission."""
        for _ in range(4):
            self._step_toward_emission()
        self.advance(0.05)

    def _step_toward_emission(self) -> None:
        state, plan = self.device.state, self.device.plan
        if state == State.STANDBY:
            self.load_plan(0, 0)
        elif state == State.READY:
            assert plan is not None
            self.spot_batch(60, 0)
            self._request("ARM", plan_checksum=plan.plan_checksum)
        elif state in (State.ARMED, State.PAUSED):
            self.device.set_input(footswitch=True)
            self.device.advance(self.device.now_s + 0.021)
            self._request("START" if state == State.ARMED else "RESUME")
        elif state == State.FAULT:
            self.device.set_input(key=True, door=True, estop=True)
            self._request("RESET_FAULT")

    @rule(name=st.sampled_from(sorted(INPUT_WORDS)),
          permits=st.sampled_from([True, True, True, False]))
    def set_input(self, name: str, permits: bool) -> None:
        self.device.set_input(**{name: permits})

    @rule(dt_s=st.floats(0.0, 0.4))
    def advance(self, dt_s: float) -> None:
        emitting_allowed = self.device.interlocks & EMIT_BITS == EMIT_BITS
        before = self.device.fired_count
        self.device.advance(self.device.now_s + dt_s)
        self.device.transmit()
        if not emitting_allowed:
            assert self.device.fired_count == before, "fired with an interlock open"

    @rule()
    def reset(self) -> None:
        self.device.reset()

    @rule()
    def power_cycle(self) -> None:
        """Power loss: a new device on the image of the memory (what a state file holds)."""
        config = self.device.config
        nv = NonVolatile.from_json(self.device.nv.to_json(config.serial), config)
        self.device = SimDevice(config, nv)
        self.host = attach(self.device)
        self.checked = 0  # the new device's ground truth starts empty

    @rule(hot=st.booleans())
    def temperature(self, hot: bool) -> None:
        config = self.device.config
        self.device.set_temperature(config.over_temperature_dc if hot else config.temperature_dc)

    @rule(on=st.booleans())
    def aiming_beam(self, on: bool) -> None:
        self._request("AIMING_BEAM", on=int(on))

    @rule(code=st.sampled_from([FaultCode.HOST_REQUEST, FaultCode.ENERGY_DEVIATION]))
    def raise_fault(self, code: FaultCode) -> None:
        self._request("RAISE_FAULT", fault_code=int(code))

    @invariant()
    def never_fires_an_index_twice(self) -> None:
        truth = self.device.ground_truth
        new = truth["index"][self.checked:].tolist()
        self.checked = len(truth)
        plan = self.device.plan
        checksum = None if plan is None else plan.plan_checksum
        if checksum != self.tracked_checksum:
            self.fired, self.tracked_checksum = set(), checksum
        for index in new:
            assert index not in self.fired, f"spot {index} fired twice"
            self.fired.add(index)
        if plan is None or not plan.loaded:  # unloaded: the spec allows the pass again
            self.fired, self.tracked_checksum = set(), None

    @invariant()
    def laser_off_unless_emitting(self) -> None:
        if self.device.state != State.EMITTING:
            assert not self.device.laser.shutter_open
        if self.device.state == State.EMITTING:  # or the footswitch's pause, or the pass's
            # completion, waits for the spot under way to end (rules 5, 6)
            waiting = self.device.pausing or self.device.completing
            bits = EMIT_BITS & ~Interlock.FOOTSWITCH_DOWN if waiting else EMIT_BITS
            assert self.device.interlocks & bits == bits

    @invariant()
    def nothing_emitted_in_fault_and_no_over_temperature_outside_it(self) -> None:
        flags = self.device.flags
        if self.device.state == State.FAULT:
            assert not flags & DeviceFlag.AIMING_BEAM, "aiming beam on in FAULT"
        elif flags & DeviceFlag.OVER_TEMPERATURE:
            raise AssertionError(f"over temperature in {self.device.state.name}")


TestHostChaos = HostChaos.TestCase
TestHostChaos.settings = settings(stateful_step_count=40, deadline=None)


@pytest.mark.parametrize("inputs", [{"door": "open"}, {"key": "off"}, {"estop": "pressed"}])
def test_no_emission_from_power_on_with_an_interlock_open(inputs: dict[str, str]) -> None:
    device = SimDevice(SimConfig.from_query({"pre_emission_ms": "0", "footswitch": "down",
                                             **inputs}))
    host = attach(device)
    spots = PLANS[0]
    host.request("LOAD_PLAN", pass_index=0, spot_count=60, plan_checksum=CHECKSUMS[0],
                 first_index=0)
    host.request("SPOT_BATCH", spots)
    assert host.request("ARM", plan_checksum=CHECKSUMS[0])["error"] == m.ErrorCode.INTERLOCK_OPEN
    assert host.request("START")["error"] == m.ErrorCode.ILLEGAL_STATE
    device.advance(1.0)
    assert device.fired_count == 0
