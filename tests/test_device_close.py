"""Closing a device stops emission first, best effort, and stays fast when the link is gone.

Run against the in-process simulator (``sim://``, which stops with the link) and a simulator
served on TCP (``socket://``, which keeps running after the host leaves, as real hardware does:
there an emitting device left alone fires on until its watchdog faults it). Device time runs in
real time, so the device fires spot by spot while the test watches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import drivers
from drivers import Device, DeviceClosed, open_device
from drivers.link import Link
from drivers.protocol import FrameDecoder, Message, message
from drivers.protocol.messages import BY_ID, FaultCode, State
from drivers.spots import PassSpots
from sim_hw.config import SimConfig
from sim_hw.device import SimDevice
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


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of each request the simulator received, in order (whatever the transport: the
    sim:// one and the TCP server both hand the simulator the bytes that arrived)."""
    names: list[str] = []
    decoder = FrameDecoder()
    receive = SimDevice.receive

    def spy(self: SimDevice, data: bytes) -> None:
        names.extend(BY_ID[frame.type_id].name for frame in decoder.feed(data))
        receive(self, data)

    monkeypatch.setattr(SimDevice, "receive", spy)
    return names


def buffer(dev: Device, spots: PassSpots, n: int = 100) -> None:
    """Send the pass's first ``n`` spots."""
    (handle,) = dev.link.send([message("SPOT_BATCH", records=spots.records[:n])])
    handle.wait(1.0)


def ready_with_plan(dev: Device) -> list[Message]:
    """A plan loaded and spots buffered, not armed: the ARM it takes."""
    spots = armed(dev)
    buffer(dev, spots)
    dev.disarm()  # the buffer kept
    return [message("ARM", plan_checksum=spots.checksum)]


def armed_for_start(dev: Device) -> list[Message]:
    """ARMED, spots buffered, the pre-emission delay over: a START fires them."""
    buffer(dev, armed(dev))
    time.sleep(2 * float(OPTIONS["pre_emission_ms"]) / 1000)
    return [message("START")]


def paused(dev: Device) -> list[Message]:
    """PAUSED mid-batch: a RESUME fires the rest."""
    buffer(dev, emitting(dev))
    dev.pause()
    return [message("RESUME")]


def emitting_with_an_empty_buffer(dev: Device) -> list[Message]:
    """EMITTING, no spot sent yet: a device fires the spots of any SPOT_BATCH that arrives."""
    spots = emitting(dev)
    return [message("SPOT_BATCH", records=spots.records[:100])]


#: Each sets the device up where one request arms it or makes it fire, and returns that request.
LEADS_TO_EMISSION = [ready_with_plan, armed_for_start, paused, emitting_with_an_empty_buffer]


@pytest.mark.parametrize("setup", LEADS_TO_EMISSION, ids=lambda f: f.__name__)
def test_nothing_that_leads_to_emission_leaves_the_link_once_close_has_begun(
        rig: Rig, received: list[str], monkeypatch: pytest.MonkeyPatch,
        setup: Callable[[Device], list[Message]]) -> None:
    """Device.close() refused ARM, START and RESUME in Device's own methods only: while it
    stopped emission (until it closed the link, up to a watchdog period on a slow link) another
    thread's dev.link.request("START"), or a stream's SPOT_BATCH, still went out, and the
    device armed, emitted, or fired the batch after the host had closed it. The link now sends
    only what stops emission or asks the state once close() has begun."""
    requests = setup(rig.dev)
    fired = rig.sim.device.fired_count
    attempts: list[BaseException | None] = []
    began: list[int] = []
    stop_emission = Device.stop_emission

    def another_thread_sends() -> None:
        try:
            for handle in rig.dev.link.send(requests):
                handle.wait(1.0)
            attempts.append(None)
        except BaseException as exc:
            attempts.append(exc)

    def stop_racing(self: Device) -> bool:  # close() has begun: closed is set
        began.append(len(received))
        sender = threading.Thread(target=another_thread_sends)
        sender.start()
        sender.join()
        time.sleep(0.2)  # what the request would have started
        return stop_emission(self)

    monkeypatch.setattr(Device, "stop_emission", stop_racing)
    rig.dev.close()
    assert len(attempts) == 1 and isinstance(attempts[0], DeviceClosed), attempts
    name = requests[0].name
    assert name not in received[began[0]:], received[began[0]:]
    assert rig.sim.device.fired_count == fired, "the device fired after close() began"
    assert rig.sim.device.state is State.READY
    with pytest.raises(DeviceClosed):  # and after close(), as before
        rig.dev.link.send(requests)


def test_a_closing_link_sends_only_what_stops_emission(rig: Rig, received: list[str]) -> None:
    """Link.begin_close(): requests that stop emission or ask the state still go out (close()
    needs them); any other raises DeviceClosed unsent."""
    spots = emitting(rig.dev)
    rig.dev.link.begin_close()
    began = len(received)
    for name, values in [("START", {}), ("RESUME", {}), ("ARM", {"plan_checksum": 0}),
                         ("LOAD_PLAN", {"pass_index": 0, "spot_count": 1, "plan_checksum": 0,
                                        "first_index": 0}),
                         ("RESET_FAULT", {}), ("AIMING_BEAM", {"on": 1}),
                         ("PULSE_SETTINGS", {"rep_rate_hz": 500})]:
        with pytest.raises(DeviceClosed, match=f"{name} not sent"):
            rig.dev.link.request(name, **values)
    with pytest.raises(DeviceClosed, match="SPOT_BATCH not sent"):  # one refused: none sent
        rig.dev.link.send([message("STATUS_REQUEST"),
                           message("SPOT_BATCH", records=spots.records[:10])])
    assert rig.dev.stop_emission() is True  # PAUSE, STATUS_REQUEST, DISARM
    rig.dev.link.request("ABORT")
    rig.dev.link.request("HEARTBEAT")
    assert rig.dev.status().state is State.STANDBY  # aborted: the plan unloaded
    assert set(received[began:]) <= {"PAUSE", "DISARM", "ABORT", "STATUS_REQUEST",
                                     "HEARTBEAT"}, received[began:]
    assert {"PAUSE", "DISARM", "ABORT"} <= set(received[began:])
    assert rig.sim.device.fired_count == 0
