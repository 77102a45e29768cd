"""Closing a device stops emission first, best effort, and stays fast when the link is gone.

Run against the in-process simulator (``sim://``, which stops with the link) and a simulator
served on TCP (``socket://``, which keeps running after the host leaves, as real hardware does:
there an emitting device left alone fires on until its watchdog faults it). Device time runs in
real time, so the device fires spot by spot while the test watches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import drivers
from drivers import Device, open_device
from drivers.link import Link
from drivers.protocol.messages import FaultCode, State
from drivers.spots import PassSpots
from sim_hw.config import SimConfig
from sim_hw.tcp_server import serve_tcp

OPTIONS = {"pre_emission_ms": "20", "footswitch": "down", "seed": "7",
           "rep_rate_max_hz": "1000", "clock": "realtime"}
WATCHDOG_S = SimConfig().watchdog_ms / 1000
SPOTS = 5000  # 5 s at 1 kHz: still firing when the test closes the device


class OperatorBug(Exception):
    """Raised by the test inside the ``with`` block."""


@dataclass
class Rig:
    kind: str
    dev: Device
    sim: Any  # .device (thread-safe SimDevice view) and .faults


@pytest.fixture(params=["inproc", "socket"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    served = None
    if request.param == "inproc":
        dev = open_device("sim://?" + "&".join(f"{k}={v}" for k, v in OPTIONS.items()))
        sim = dev.simulator
    else:
        served = serve_tcp(SimConfig.from_query(OPTIONS))
        dev = open_device(served.url)
        sim = served
    try:
        yield Rig(request.param, dev, sim)
    finally:
        dev.link.close()  # the link only: what close() itself does is under test
        if served is not None:
            served.stop()


def armed(dev: Device) -> PassSpots:
    """A long line pass, loaded and armed at 1 kHz."""
    spots = dev.prepare_pass(0, np.linspace(-5000, 5000, SPOTS), np.zeros(SPOTS), 10_000, 200, 1)
    dev.laser.set_rep_rate(1000)
    dev.load_plan(spots)
    dev.arm(spots)
    return spots


def emitting(dev: Device) -> PassSpots:
    spots = armed(dev)
    dev.start()
    return spots


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_leaving_the_with_block_by_an_exception_stops_emission(rig: Rig) -> None:
    device = rig.sim.device
    with pytest.raises(OperatorBug), rig.dev as dev:
        spots = emitting(dev)
        for progress in dev.stream(spots):
            if progress.last_delivered is not None and progress.last_delivered >= 100:
                assert progress.state is State.EMITTING
                raise OperatorBug("a bug in the caller's code while the laser fires")
    fired = device.fired_count
    time.sleep(2 * WATCHDOG_S)  # longer than the watchdog: a device left emitting faults
    assert device.state in (State.READY, State.STANDBY), device.state
    assert device.fault_code is FaultCode.NONE
    assert device.fired_count == fired, "the device fired on after close()"
    assert 100 <= fired < SPOTS


def test_close_disarms_an_armed_device(rig: Rig) -> None:
    armed(rig.dev)
    assert rig.dev.status().state is State.ARMED
    rig.dev.close()
    assert rig.sim.device.state is State.READY
    time.sleep(2 * WATCHDOG_S)  # no watchdog fault either: it is no longer armed
    assert rig.sim.device.state is State.READY
    assert rig.sim.device.fired_count == 0
    rig.dev.close()  # idempotent


#: A patient link (slow hardware): a close() that waited out its requests would take seconds.
PATIENT_TIMEOUT_S = 3.0
#: What closing the link itself may take (pyserial's socket:// close alone takes ~0.3 s).
TEARDOWN_S = 0.7


def test_close_after_the_link_was_lost_returns_at_once(rig: Rig) -> None:
    emitting(rig.dev)
    rig.dev.link.request_timeout_s = PATIENT_TIMEOUT_S
    rig.sim.faults.disconnect()
    wait_for(lambda: rig.dev.link.lost is not None, 5.0, "the host never saw the link go")
    began = time.monotonic()
    rig.dev.close()  # must not raise
    assert time.monotonic() - began < TEARDOWN_S


def test_close_on_a_link_gone_silent_gives_up_within_the_watchdog(rig: Rig) -> None:
    """Nothing gets through either way and the link has not noticed: close() must not wait
    out its requests' timeouts (the device's own watchdog stops the laser meanwhile)."""
    emitting(rig.dev)
    rig.dev.link.request_timeout_s = PATIENT_TIMEOUT_S
    rig.sim.faults.link(drop=1.0, direction="both")
    began = time.monotonic()
    rig.dev.close()  # must not raise
    assert time.monotonic() - began < WATCHDOG_S + TEARDOWN_S
    if rig.kind == "socket":  # the served device lives on: its watchdog stopped it
        wait_for(lambda: rig.sim.device.state is State.FAULT, 2.0, "still emitting")
        assert rig.sim.device.fault_code is FaultCode.WATCHDOG


def test_close_waits_for_slow_replies_whatever_the_request_timeout(rig: Rig) -> None:
    """Replies slower than the link's request timeout: stopping emission waits for them within
    its own budget (it gave up on each step after the request timeout, and a negative timeout
    skipped every step, leaving the device armed or emitting)."""
    armed(rig.dev)
    rig.dev.link.request_timeout_s = 0.05  # the shortest a link takes
    rig.sim.faults.link(delay=1.0, delay_ms=60, direction="out")
    rig.dev.close()
    assert rig.sim.device.state is State.READY
    assert rig.sim.device.fired_count == 0


def test_stop_emission_says_whether_the_device_confirmed_it(rig: Rig) -> None:
    """It returned nothing and only logged a failure: a caller could not tell a device that
    stopped from one that never answered PAUSE or DISARM."""
    spots = emitting(rig.dev)
    assert rig.dev.stop_emission() is True
    assert rig.sim.device.state is State.READY  # paused, then disarmed: the pass kept
    rig.dev.arm(spots)
    rig.dev.start()
    rig.sim.faults.link(drop=1.0, direction="in")  # PAUSE, DISARM, STATUS never arrive
    assert rig.dev.stop_emission() is False
    rig.sim.faults.disconnect()
    wait_for(lambda: rig.dev.link.lost is not None, 5.0, "the host never saw the link go")
    assert rig.dev.stop_emission() is False  # a lost link is not asked, nor confirmed


def test_a_read_only_close_and_identify_send_nothing_that_changes_the_device(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """co2scan plan closed only the link of the Device it opened to skip close()'s PAUSE and
    DISARM; drivers now has that read-only way itself."""
    sent: list[str] = []
    request = Link.request

    def spy(self: Link, name: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(name)
        return request(self, name, *args, **kwargs)

    armed(rig.dev)
    monkeypatch.setattr(Link, "request", spy)
    rig.dev.close(stop_emission=False)
    assert sent == []  # no PAUSE, DISARM, nor STATUS_REQUEST
    assert rig.dev.closed and rig.dev.link.lost is not None
    if rig.kind == "socket":  # one connection at a time: now free for another
        info = drivers.identify(rig.dev.url)
        assert info == rig.dev.info
        assert set(sent) == {"IDENTIFY", "STATUS_REQUEST"}, sent
