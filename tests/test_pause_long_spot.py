"""A PAUSE that arrives mid-spot is answered once the spot's last pulse has ended
(firmware_protocol.md section 2; section 5, rule 5): up to 20 ms + max_stack x pulse_max_us
after it arrives. The host waits that long for the reply, in Device.pause() and in
stop_emission(), instead of taking a slow-spot device's late reply as lost.

The simulator runs in real time (a pause waits for the spot in device time, which the virtual
clock would skip), with spots of 16 pulses of 25 ms: 0.4 s, longer than the request timeout
these tests give the link, and shorter than the device's watchdog period (0.5 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from drivers import Device, open_device
from drivers.protocol import message
from drivers.protocol.messages import State

PULSE_US = 25_000
STACK = 16
SPOT_S = PULSE_US * STACK / 1e6
REQUEST_TIMEOUT_S = 0.1
OPTIONS = {"clock": "realtime", "footswitch": "down", "pre_emission_ms": "20",
           "pulse_max_us": str(PULSE_US), "max_stack": str(STACK), "noise_percent": "0"}


def _url(**more: str) -> str:
    return "sim://?" + "&".join(f"{k}={v}" for k, v in {**OPTIONS, **more}.items())


@pytest.fixture
def dev() -> Iterator[Device]:
    device = open_device(_url(), request_timeout_s=REQUEST_TIMEOUT_S)
    try:
        yield device
    finally:
        device.link.close()


def _emit_mid_spot(dev: Device, pulse_us: int = PULSE_US) -> Any:
    """Start a pass of long spots at 1 Hz; return the simulator as soon as its first spot
    has begun to fire, its pulses still under way for most of their time."""
    spots = dev.prepare_pass(0, [0.0, 100.0, 200.0], 0.0, 1000, pulse_us, STACK,
                             rep_rate_hz=1)
    dev.laser.set_rep_rate(1)
    dev.load_plan(spots)
    (batch,) = dev.link.send([message("SPOT_BATCH", records=spots.records)])
    assert batch.wait(1.0).name == "ACK"
    dev.arm(spots)
    dev.start()
    sim = dev.simulator.device
    deadline = time.monotonic() + 10.0
    while sim.fired_count < 1:
        assert time.monotonic() < deadline, "the first spot never fired"
        time.sleep(0.001)
    return sim


def test_the_longest_spot_is_max_stack_pulses_of_the_longest_pulse(dev: Device) -> None:
    assert dev.longest_spot_s() == pytest.approx(SPOT_S)


def test_a_pause_mid_spot_is_waited_for_until_the_spot_has_ended(dev: Device) -> None:
    """The reply comes up to SPOT_S after the PAUSE, beyond the link's request timeout:
    pause() returns (no DeviceTimeout) with the device PAUSED, the spot complete."""
    sim = _emit_mid_spot(dev)
    dev.pause()
    assert dev.status().state is State.PAUSED
    assert sim.fired_count == 1


def test_stop_emission_budget_covers_a_spot_longer_than_the_watchdog() -> None:
    """A device whose spot (16 x 40 ms) outlasts its watchdog period (0.3 s): the PAUSE is
    answered after the spot, and stop_emission() still confirms the stop."""
    device = open_device(_url(pulse_max_us="40000", watchdog_ms="300", heartbeat_ms="60"),
                         request_timeout_s=REQUEST_TIMEOUT_S)
    try:  # the link's silence rule allows a pending PAUSE the longest spot more
        _emit_mid_spot(device, 40_000)
        assert device.stop_emission() is True
        assert device.status().state is State.READY
    finally:
        device.link.close()
