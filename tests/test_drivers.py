"""One driver suite, run over every transport against the simulator.

pty (real pyserial on a pseudo-terminal), socket (pyserial socket://), usb (real pyusb over
the simulated backend) and the in-process link. Assertions use the simulator's ground truth.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from drivers import DeviceLost, DeviceTimeout, LimitError, open_device
from drivers.device import Device
from drivers.errors import AuthFailed, InterlockOpen, NotAuthenticated, OutOfRange
from drivers.protocol.messages import FaultCode, Interlock, State
from drivers.spots import PassSpots
from drivers.stream import Progress
from sim_hw.config import DEV_KEY, SimConfig
from sim_hw.pty_server import serve_pty
from sim_hw.server import Served
from sim_hw.tcp_server import serve_tcp

TRANSPORTS = ["inproc", "pty", "socket", "usb"]
OPTIONS = {"pre_emission_ms": "20", "footswitch": "down", "seed": "7", "rep_rate_max_hz": "1000"}


@dataclass
class Rig:
    kind: str
    dev: Device
    sim: Any  # served handle: .device (SyncedDevice) and .faults

    @property
    def truth(self) -> np.ndarray:
        return self.sim.device.ground_truth


def _query(options: dict[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in options.items())


@pytest.fixture(params=TRANSPORTS)
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    marker = request.node.get_closest_marker("sim_options")
    options = {**OPTIONS, **(marker.kwargs if marker else {})}
    kind = request.param
    served: Served | None = None
    if kind == "inproc":
        dev = open_device(f"sim://?{_query(options)}")
    elif kind == "usb":
        dev = open_device(f"usb://1209:C025?backend=sim&{_query(options)}")
    else:
        config = SimConfig.from_query(options)
        if kind == "pty":
            pty = serve_pty(config)
            served, url = pty, pty.path
        else:
            tcp = serve_tcp(config)
            served, url = tcp, tcp.url
        dev = open_device(url)
    try:
        yield Rig(kind, dev, served or dev.simulator)
    finally:
        dev.close()
        if served is not None:
            served.stop()


def line_pass(dev: Device, n: int, pass_index: int = 0, energy_uj: int = 10_000) -> PassSpots:
    x = np.linspace(-5000, 5000, n)
    return dev.prepare_pass(pass_index, x, np.zeros(n), energy_uj, 200, 1)


def run_to_end(dev: Device, spots: PassSpots, first_index: int = 0
               ) -> tuple[np.ndarray, np.ndarray, Progress]:
    """Load, arm, start and stream; returns (indices, measured, final progress)."""
    begin(dev, spots, first_index)
    return collect(dev, spots)


def begin(dev: Device, spots: PassSpots, first_index: int = 0) -> None:
    """Load, arm and start a pass at 1 kHz."""
    dev.laser.set_rep_rate(1000)
    dev.load_plan(spots, first_index)
    dev.arm(spots)
    dev.start()


def quiet_link(dev: Device) -> None:
    """Short timeouts, pre-emission delay over, no heartbeat in flight: the next frame each
    way belongs to the next request."""
    dev.link.request_timeout_s = 0.3
    dev.link.heartbeat_s = 0.4  # still inside the 500 ms watchdog
    time.sleep(0.05)


def collect(dev: Device, spots: PassSpots) -> tuple[np.ndarray, np.ndarray, Progress]:
    index: list[np.ndarray] = []
    measured: list[np.ndarray] = []
    last: Progress | None = None
    for progress in dev.stream(spots):
        index.append(progress.index)
        measured.append(progress.measured_uj)
        last = progress
    assert last is not None  # as np.concatenate: at least one progress
    return np.concatenate(index), np.concatenate(measured), last


def test_identify_reports_the_simulators_limits(rig: Rig) -> None:
    info = rig.dev.info
    assert info.serial == "SIM-0001" and info.protocol_version == 1
    assert info.limits.pre_emission_ms == 20 and info.limits.buffer_spots == 4096
    assert rig.dev.status().state is State.STANDBY


def test_every_spot_fires_once_and_the_reports_match_ground_truth(rig: Rig) -> None:
    spots = line_pass(rig.dev, 1500)
    index, measured, last = run_to_end(rig.dev, spots)
    assert last.done and last.reason == "complete"
    truth = rig.truth
    assert truth["index"].tolist() == list(range(1500)) == index.tolist()
    assert np.array_equal(truth["measured_uj"], measured)
    assert np.all(np.abs(measured / 10_000 - 1) < 0.1)  # 2 % noise in the simulator
    assert np.array_equal(truth["x_lsb"], spots.records["x_lsb"])


def test_jump_returns_a_time_that_grows_with_distance(rig: Rig) -> None:
    near = rig.dev.scanner.jump(100.0, 0.0)
    far = rig.dev.scanner.jump(-9000.0, 0.0)
    assert 0 < near < far
    with pytest.raises(LimitError, match=r"x_um = 12000\.0"):
        rig.dev.scanner.jump(12000.0, 0.0)


def test_nack_becomes_a_typed_error_with_code_and_text(rig: Rig) -> None:
    spots = line_pass(rig.dev, 10)
    rig.dev.load_plan(spots)
    rig.sim.device.set_input(door="open")
    with pytest.raises(InterlockOpen) as info:
        rig.dev.arm(spots)
    assert info.value.detail & Interlock.DOOR_CLOSED == 0
    assert "INTERLOCK_OPEN" in str(info.value)
    assert rig.dev.status().state is State.READY


def test_events_reach_subscribers(rig: Rig) -> None:
    seen: list[int] = []
    got = threading.Event()

    def on_event(item: Any) -> None:
        if getattr(item, "name", "") == "EVT_INTERLOCK":
            seen.append(int(item["new"]))
            got.set()

    rig.dev.subscribe(on_event)
    rig.sim.device.set_input(key="off")
    assert got.wait(5.0)
    assert seen[-1] & Interlock.KEY_ON == 0


def test_service_commands_need_the_handshake(rig: Rig) -> None:
    with pytest.raises(NotAuthenticated):
        rig.dev.set_limits(100_000, 500, 20_000)
    with pytest.raises(AuthFailed):
        rig.dev.authenticate(b"x" * 32)
    rig.dev.authenticate(DEV_KEY)
    rig.dev.set_limits(100_000, 500, 20_000)
    assert rig.dev.info.limits.energy_max_uj == 100_000
    with pytest.raises(LimitError, match="energy_uj = 150000"):
        line_pass(rig.dev, 5, energy_uj=150_000)


def test_a_new_field_calibration_is_what_positions_are_converted_with(rig: Rig) -> None:
    """After set_calibration the host kept converting with the old field size: a script's
    next pass landed at 0.75x its size (1.78x its density) and its record named the old one."""
    rig.dev.authenticate(DEV_KEY)
    rig.dev.scanner.set_calibration(15_000)
    rig.dev.end_service()
    assert rig.dev.info.limits.field_size_um == rig.dev.scanner.limits.field_size_um == 15_000
    x, _ = rig.dev.scanner.to_lsb([5_000.0], [0.0])
    assert int(x[0]) == round(32768 + 5_000 * 65536 / 15_000)


def test_a_pass_the_device_refuses_for_good_ends_the_stream(rig: Rig) -> None:
    """Every batch refused (OUT_OF_RANGE: spots above limits lowered since they were
    prepared): the stream asked for the status and sent them again, about 3,800 times a
    second, for ever, the device EMITTING with its shutter open."""
    spots = line_pass(rig.dev, 5, energy_uj=150_000)
    rig.dev.authenticate(DEV_KEY)
    rig.dev.set_limits(100_000, 1000, 30_000)  # energy only
    rig.dev.end_service()
    begin(rig.dev, spots)
    deadline = time.monotonic() + 10.0
    with pytest.raises(OutOfRange, match="SPOT_BATCH"):
        for _ in rig.dev.stream(spots):
            assert time.monotonic() < deadline, "the stream never ended"
    assert len(rig.truth) == 0


def test_lost_delivered_report_is_filled_not_skipped(rig: Rig) -> None:
    spots = line_pass(rig.dev, 800)
    rig.sim.faults.next_frames("drop", 2, direction="out")  # replies or reports vanish
    begin(rig.dev, spots)
    index, measured, last = collect(rig.dev, spots)
    assert last.reason == "complete"
    assert index.tolist() == rig.truth["index"].tolist() == list(range(800))
    unknown = measured == -1
    assert np.array_equal(measured[~unknown], rig.truth["measured_uj"][~unknown])


def test_start_whose_reply_is_lost_is_reconciled_not_resent(rig: Rig) -> None:
    spots = line_pass(rig.dev, 300)
    rig.dev.laser.set_rep_rate(1000)
    rig.dev.load_plan(spots)
    rig.dev.arm(spots)
    quiet_link(rig.dev)
    rig.sim.faults.next_frames("drop", 1, direction="out")  # START's ACK
    rig.dev.start()  # status says EMITTING: success without re-sending
    assert rig.dev.status().state is State.EMITTING
    index, _, last = collect(rig.dev, spots)
    assert last.reason == "complete" and index.tolist() == list(range(300))


def test_start_that_never_arrived_raises_timeout_with_the_state(rig: Rig) -> None:
    spots = line_pass(rig.dev, 10)
    rig.dev.load_plan(spots)
    rig.dev.arm(spots)
    quiet_link(rig.dev)
    rig.sim.faults.next_frames("drop", 1, direction="in")  # START itself
    with pytest.raises(DeviceTimeout, match="device is still ARMED"):
        rig.dev.start()
    assert len(rig.truth) == 0


@pytest.mark.sim_options(clock="realtime")
def test_interlock_mid_stream_faults_and_resume_continues_without_repeats(rig: Rig) -> None:
    spots = line_pass(rig.dev, 600)
    begin(rig.dev, spots)
    delivered: list[np.ndarray] = []
    for progress in rig.dev.stream(spots):
        delivered.append(progress.index)
        if sum(map(len, delivered)) >= 100 and progress.state is State.EMITTING:
            rig.sim.device.set_input(door="open")
        last = progress
    assert last.reason == "fault" and last.fault_code is FaultCode.INTERLOCK_OPEN
    fired_before = len(rig.truth)
    assert 100 <= fired_before < 600
    rig.sim.device.set_input(door="closed")
    rig.dev.reset_fault()
    rig.dev.arm(spots)
    rig.dev.start()
    index, _, last = collect(rig.dev, spots)
    assert last.reason == "complete"
    all_delivered = np.concatenate([*delivered, index])
    assert all_delivered.tolist() == list(range(600)) == rig.truth["index"].tolist()


def stream_in_thread(dev: Device, spots: PassSpots, on_progress: Callable[[Progress], None],
                     timeout_s: float, hang: str) -> Progress | BaseException:
    """Stream on a worker thread, calling ``on_progress`` for each Progress; the last Progress
    or the exception it ended with. Fails with ``hang`` if it has not ended by the timeout."""
    outcome: list[Progress | BaseException] = []

    def consume() -> None:
        try:
            for progress in dev.stream(spots):
                on_progress(progress)
                last = progress
            outcome.append(last)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    worker.join(timeout=timeout_s)
    assert not worker.is_alive(), hang
    return outcome[0]


@pytest.mark.sim_options(clock="realtime")
def test_a_lost_pause_event_ends_the_stream_by_asking_for_status(rig: Rig) -> None:
    """The device pauses but its EVT_STATE (PAUSED) is lost on the link: after a request
    timeout of silence the stream asks for the status and ends, paused, instead of waiting
    forever."""
    spots = line_pass(rig.dev, 5000)
    begin(rig.dev, spots)
    rig.dev.link.request_timeout_s = 0.3
    device = rig.sim.device._device
    send_event = device._event

    def lose_pause(name: str, records: Any = None, **values: int) -> None:
        if name == "EVT_STATE" and values["new_state"] == State.PAUSED:
            device._send_events(b"")  # numbered and sent, then lost on the link
        else:
            send_event(name, records, **values)

    device._event = lose_pause
    paused: list[bool] = []

    def pause_once(progress: Progress) -> None:
        if progress.last_delivered is not None and not paused:
            paused.append(True)
            rig.dev.pause()

    last = stream_in_thread(rig.dev, spots, pause_once, 20,
                            "stream hung after the PAUSED event was lost")
    assert isinstance(last, Progress) and last.done and last.reason == "paused"
    assert rig.dev.status().state is State.PAUSED
    assert last.last_delivered == len(rig.truth) - 1 < 4999


@pytest.mark.sim_options(clock="realtime")
def test_mid_stream_disconnect_raises_device_lost_and_never_hangs(rig: Rig) -> None:
    spots = line_pass(rig.dev, 5000)
    begin(rig.dev, spots)

    def disconnect(progress: Progress) -> None:
        if len(progress.index):
            rig.sim.faults.disconnect()

    outcome = stream_in_thread(rig.dev, spots, disconnect, 30,
                               "stream hung after the device vanished")
    assert isinstance(outcome, DeviceLost)
    with pytest.raises(DeviceLost):
        rig.dev.status()
