"""``co2scan sim serve --state FILE``: the simulator's non-volatile memory survives a kill.

A simulator killed (SIGKILL) and started again with the same file is a device after a power
loss (firmware_protocol.md section 5, rule 9): FAULT with DEVICE_RESET, the pass record
restored, the fired-index memory refusing delivered spots, lowered limits still lowered. A
file it cannot use is refused, never replaced by a blank memory.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import serial

from controller.cli import main
from drivers import BadIndex, Device, DeviceError, open_device
from drivers.protocol import message
from drivers.protocol.messages import NO_INDEX, Cause, DeviceFlag, FaultCode, State
from drivers.spots import PassSpots
from sim_hw.config import DEV_KEY, SimConfig
from sim_hw.device import SimDevice
from sim_hw.nvm import STATE_VERSION, NonVolatile
from sim_hw.probe import attach, make_spots, plan_checksum
from sim_hw.state_file import StateFile, StateFileError
from sim_hw.tcp_server import serve_tcp
from tests.test_sim_transports import serial_host

FIRED = 200  # spots delivered before the kill (one batch)
LOWERED = {"energy_max_uj": 150_000, "rep_rate_max_hz": 800, "avg_power_max_mw": 25_000}


class Simulator:
    """``co2scan sim serve --tcp 0 --state FILE`` in a process of its own."""

    def __init__(self, state: Path) -> None:
        cmd = [sys.executable, "-m", "controller.cli", "sim", "serve", "--tcp", "0",
               "--state", str(state), "--footswitch", "down", "--option", "pre_emission_ms=0"]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        assert self.process.stdout is not None
        self.lines: dict[str, str] = {}
        while "state" not in self.lines:  # the announcement ends with the state line
            line = self.process.stdout.readline()
            if not line:
                self.kill()
                pytest.fail(f"sim serve ended: {self.process.stderr.read()}")  # type: ignore[union-attr]
            key, _, value = line.partition(": ")
            self.lines[key] = value.strip()
        self.url = self.lines["url"]

    def kill(self) -> None:
        """Power loss: SIGKILL, nothing is written on the way out."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def simulators() -> Iterator[list[Simulator]]:
    """Started simulators, killed at the end whatever happened."""
    started: list[Simulator] = []
    yield started
    for sim in started:
        sim.kill()


def open_when_free(url: str, timeout_s: float = 10.0) -> Device:
    """The simulator serves one host at a time: retry while the previous one is still seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return open_device(url)
        except DeviceError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_killed_simulator_restarts_as_after_a_power_loss(
        tmp_path: Path, simulators: list[Simulator]) -> None:
    state = tmp_path / "nvm.json"
    first = Simulator(state)
    simulators.append(first)
    assert first.lines["state"].endswith("(new: a blank memory, the first power-on)")
    records = make_spots(1000)
    with open_device(first.url) as dev:
        dev.authenticate(DEV_KEY)
        dev.set_limits(**LOWERED)
        dev.end_service()
        spots = PassSpots.from_records(7, records)
        dev.load_plan(spots)
        (batch,) = dev.link.send([message("SPOT_BATCH", records=records[:FIRED])])
        batch.wait(2.0)
        dev.arm(spots)
        dev.start()
        deadline = time.monotonic() + 10
        while dev.status().delivered_count < FIRED:  # all buffered spots fire, then it waits
            assert time.monotonic() < deadline, "the buffered spots did not fire"
            time.sleep(0.01)
        first.kill()  # mid-pass, emitting, the host still connected

    second = Simulator(state)
    simulators.append(second)
    assert second.lines["state"].endswith("(loaded: started as after a power loss)")
    with serial.serial_for_url(second.url, timeout=0) as port:  # first contact, raw frames
        host = serial_host(port)
        report = host.request("STATUS_REQUEST")
        power_on = host.events[0]
        assert (power_on.name, power_on.seq) == ("EVT_STATE", 0)
        assert (power_on["old_state"], power_on["new_state"], power_on["cause"],
                power_on["fault_code"]) == (State.FAULT, State.FAULT, Cause.POWER_ON,
                                            FaultCode.DEVICE_RESET)
        assert (report["state"], report["fault_code"]) == (State.FAULT, FaultCode.DEVICE_RESET)
        assert int(report["flags"]) & DeviceFlag.PLAN_LOADED
        assert (report["pass_index"], report["plan_checksum"], report["spot_count"],
                report["next_index"], report["delivered_count"], report["last_delivered"]) == (
            7, plan_checksum(records), 1000, FIRED, FIRED, FIRED - 1)
    with open_when_free(second.url) as dev:
        limits = dev.info.limits
        assert (limits.energy_max_uj, limits.rep_rate_max_hz, limits.avg_power_max_mw) == (
            LOWERED["energy_max_uj"], LOWERED["rep_rate_max_hz"], LOWERED["avg_power_max_mw"])
        dev.reset_fault()
        for first_index in (0, FIRED - 1):  # a delivered spot is never loaded again
            with pytest.raises(BadIndex) as refused:
                dev.load_plan(spots, first_index=first_index)
            assert refused.value.detail == FIRED
        dev.load_plan(spots, first_index=FIRED)
        assert dev.status().next_index == FIRED


def image(without: str = "", **changes: object) -> str:
    """A state file's text: a blank memory's image with ``changes``, ``without`` a key."""
    document = json.loads(NonVolatile.factory(SimConfig()).to_json("SIM-0001"))
    document.update(changes)
    document.pop(without, None)
    return json.dumps(document)


def never_served(*args: object) -> NoReturn:
    pytest.fail("the simulator was started")


def record(**changes: int) -> dict[str, int]:
    """A pass record of 10 spots (plan 1, pass 0) as a state file holds it, with ``changes``."""
    return {"pass_index": 0, "spot_count": 10, "plan_checksum": 1, "first_index": 0,
            "delivered_count": 0, "last_delivered": NO_INDEX, **changes}


@pytest.mark.parametrize(("text", "what"), [
    ("{\"format\": ", "not valid JSON"),
    ("[]", "not a simulator state file"),
    (image(format="something-else"), "not a simulator state file"),
    (image(version=STATE_VERSION + 1), f"format version {STATE_VERSION + 1}; this co2scan "
                                       f"reads version {STATE_VERSION} only"),
    (image(without="fired"), "the file: missing fired"),
    (image(extra=1), "the file: unknown extra"),
    (image(serial="SIM-0002"), "it belongs to device 'SIM-0002', this simulator is 'SIM-0001'"),
    (image(limits={"energy_max_uj": 250_000, "rep_rate_max_hz": 1000,
                   "avg_power_max_mw": 30_000}),
     "limits.energy_max_uj = 250000: expected an integer 1..200000"),
    (image(rep_rate_hz="100"), "rep_rate_hz = '100': expected an integer 1..1000"),
    (image(device_key="00"), "device_key: expected 64 hex digits"),
    (image(pass_record=record(delivered_count=3, last_delivered=NO_INDEX)),
     "pass_record.delivered_count = 3: expected 0 (last_delivered is NO_INDEX: nothing fired)"),
    (image(pass_record=record(delivered_count=10, last_delivered=4), fired=[[1, 0, 4]]),
     "pass_record.delivered_count = 10: expected 5 (last_delivered - first_index + 1: a pass "
     "fires its spots in order from first_index)"),
    (image(pass_record=record(first_index=6, delivered_count=1, last_delivered=4),
           fired=[[1, 0, 4]]),
     f"pass_record.last_delivered = 4: expected {NO_INDEX} (nothing fired) or 6..9 "
     "(first_index..spot_count-1)"),
    (image(pass_record=record(delivered_count=10, last_delivered=10), fired=[[1, 0, 10]]),
     f"pass_record.last_delivered = 10: expected {NO_INDEX} (nothing fired) or 0..9"),
    (image(pass_record=record(delivered_count=5, last_delivered=4)),
     "fired: plan 0x00000001 pass 0 (the pass record's): no entry; expected 4, the pass "
     "record's last_delivered"),
    (image(pass_record=record(delivered_count=5, last_delivered=4), fired=[[1, 0, 7]]),
     "fired: plan 0x00000001 pass 0 (the pass record's): 7; expected 4"),
    (image(pass_record=record(first_index=3), fired=[[1, 0, 5]]),
     "fired: plan 0x00000001 pass 0 (the pass record's): 5; expected none or below the pass "
     "record's first_index 3"),
    (image(pass_record=record(delivered_count=5, last_delivered=4),
           fired=[[1, 0, 4], [2, 0, 3]]),
     "fired: plan 0x00000001 pass 0 (the pass record's): at fired[0]; expected last, fired[1] "
     "(the list runs from the least to the most recently fired pair"),
    (image(fired=[[1, 0, 5], [1, 0, 6]]), "fired[1]: plan 0x00000001 pass 0 listed twice"),
    (image(fired=[[1, 0, -1]]), "fired[0][2] = -1: expected an integer 0..4294967294"),
    (image(fired=[[1, 0, NO_INDEX]]), "fired[0][2] = 4294967295: expected an integer"),
    (image(fired=[[1, 0, True]]), "fired[0][2] = True: expected an integer"),
])
def test_a_state_file_it_cannot_use_is_refused_and_kept(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        text: str, what: str) -> None:
    state = tmp_path / "nvm.json"
    state.write_text(text, encoding="utf-8")
    monkeypatch.setattr("sim_hw.cli._start", never_served)  # a file taken fails, not hangs
    assert main(["sim", "serve", "--tcp", "0", "--state", str(state)]) == 2
    out, err = capsys.readouterr()
    assert out == "", "nothing is served"
    assert f"error: state file {state}: {what}" in " ".join(err.split())
    assert "refused" in err
    assert state.read_text(encoding="utf-8") == text, "the file is left as it was"
    assert list(tmp_path.iterdir()) == [state], "and nothing else: no lock file"


def test_an_unreadable_or_shared_state_file_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert main(["sim", "serve", "--tcp", "0", "--state", str(folder)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"state file {folder}: cannot read it (Is a directory)" in err
    assert list(tmp_path.iterdir()) == [folder], "a refused start leaves no a-folder.lock"
    state = tmp_path / "nvm.json"
    held = StateFile(state, SimConfig())
    try:
        assert main(["sim", "serve", "--tcp", "0", "--state", str(state)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and "in use by another simulator" in err
        assert (tmp_path / "nvm.json.lock").exists(), "the holder's lock is not ours to remove"
    finally:
        held.close()
    assert not state.exists(), "a refused start writes nothing"


def test_a_start_refused_after_the_first_power_on_leaves_no_state_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The device writes a new file at its first power-on (the memory initialised); left
    there by a start refused for another reason (the control port taken), it would make the
    next start one after a power loss, with nothing ever served."""
    state = tmp_path / "nvm.json"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["sim", "serve", "--tcp", "0", "--control-port", port, "--state",
                     str(state)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "error: cannot serve" in err
    assert list(tmp_path.iterdir()) == [], "neither nvm.json nor its lock"


def test_a_lock_file_removed_while_being_taken_is_taken_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused start removes the lock file it created, holding the lock: a simulator that
    opened that file just before must not take a lock nobody else can see."""
    state, config = tmp_path / "nvm.json", SimConfig()
    refused = StateFile(state, config)  # created nvm.json.lock and holds it
    flock = fcntl.flock

    def refused_meanwhile(fd: int, operation: int) -> None:
        refused.discard()  # between this opener's open and its flock
        flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", refused_meanwhile)
    taker = StateFile(state, config)
    monkeypatch.undo()
    try:
        lock = tmp_path / "nvm.json.lock"
        assert os.fstat(taker._lock_fd).st_ino == lock.stat().st_ino
        with pytest.raises(StateFileError, match="in use by another simulator"):
            StateFile(state, config)
    finally:
        taker.close()


def test_the_image_round_trips_and_progress_is_written_before_the_spots_fire() -> None:
    config = SimConfig(pre_emission_ms=0, footswitch=True)
    written: list[str] = []
    device: SimDevice

    def keep(nv: NonVolatile) -> None:
        written.append(nv.to_json(config.serial))
        record = nv.pass_record
        if record is not None and record.last_delivered != NO_INDEX:
            fired = device.ground_truth["index"]
            assert not len(fired) or fired.max() < record.last_delivered, (
                "progress written after its spots fired")

    device = SimDevice(config, on_nv_write=keep)
    host = attach(device)
    spots = make_spots(600)
    checksum = plan_checksum(spots)
    replies = [host.request("LOAD_PLAN", pass_index=3, spot_count=600, plan_checksum=checksum,
                            first_index=0),
               host.request("PULSE_SETTINGS", rep_rate_hz=400),
               host.request("SPOT_BATCH", spots[:255]), host.request("SPOT_BATCH", spots[255:510]),
               host.request("ARM", plan_checksum=checksum), host.request("START")]
    assert "NACK" not in [reply.name for reply in replies]
    device.advance(0.5)
    fired = device.fired_count
    assert 0 < fired < 510 and len(written) > 2
    restored = NonVolatile.from_json(written[-1], config)
    assert restored == device.nv
    assert restored.to_json(config.serial) == written[-1]
    after = SimDevice(config, restored)  # a power cycle
    assert (after.state, after.fault_code) == (State.FAULT, FaultCode.DEVICE_RESET)
    assert after.status_values()["next_index"] == fired
    assert after.nv.rep_rate_hz == 400


@pytest.mark.parametrize(("fired", "last_delivered"), [
    ([[2, 0, 3], [1, 0, 4]], 4),  # the record's pair fired last
    ([[1, 0, 4], [2, 0, 3]], NO_INDEX),  # loaded again above spot 4, nothing of it fired yet
])
def test_a_memory_in_the_order_the_device_writes_is_taken(
        fired: list[list[int]], last_delivered: int) -> None:
    delivered = 0 if last_delivered == NO_INDEX else last_delivered + 1
    first = 5 if last_delivered == NO_INDEX else 0
    text = image(pass_record=record(first_index=first, delivered_count=delivered,
                                    last_delivered=last_delivered), fired=fired)
    assert list(NonVolatile.from_json(text, SimConfig()).fired) == [tuple(f[:2]) for f in fired]


def test_every_memory_the_device_writes_is_one_it_takes_back() -> None:
    """Passes fired, aborted and resumed in turn: each image written, the fired pass last
    in the memory's order, is accepted on a restart (none refused as out of order)."""
    config = SimConfig(pre_emission_ms=0, footswitch=True)
    written: list[str] = []
    device = SimDevice(config, on_nv_write=lambda nv: written.append(nv.to_json(config.serial)))
    host = attach(device)
    passes = {pass_index: make_spots(300) for pass_index in range(3)}
    resume = dict.fromkeys(passes, 0)
    for turn, pass_index in enumerate((0, 1, 2, 0, 1), start=1):
        spots, first = passes[pass_index], resume[pass_index]
        checksum = plan_checksum(spots)
        replies = [host.request("LOAD_PLAN", pass_index=pass_index, spot_count=len(spots),
                                plan_checksum=checksum, first_index=first),
                   host.request("SPOT_BATCH", spots[first:first + 60]),
                   host.request("ARM", plan_checksum=checksum), host.request("START")]
        assert "NACK" not in [reply.name for reply in replies]
        device.advance(0.1 * turn)  # the device's clock: 0.1 s each
        host.request("ABORT")
        resume[pass_index] = device.nv.fired_through(checksum, pass_index) + 1
        assert resume[pass_index] > first
    assert len(device.nv.fired) == 3 and len(written) > 10
    for text in written:
        NonVolatile.from_json(text, config)


def test_a_memory_it_cannot_write_stops_the_simulator(tmp_path: Path) -> None:
    """Serving on with a memory that no longer reaches the file would forget fired spots at
    the next restart: the serving loop ends instead, the request unanswered (laser off)."""
    folder = tmp_path / "gone"
    folder.mkdir()
    config = SimConfig()
    with serve_tcp(config, state=StateFile(folder / "nvm.json", config),
                   control_port=None) as served, serial.serial_for_url(served.url,
                                                                      timeout=0) as port:
        host = serial_host(port)
        assert host.request("IDENTIFY").name == "IDENTIFY_REPLY"
        shutil.rmtree(folder)
        spots = make_spots(10)
        seq = host.send("LOAD_PLAN", pass_index=0, spot_count=10,
                        plan_checksum=plan_checksum(spots), first_index=0)
        deadline = time.monotonic() + 5
        while served.failure is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert isinstance(served.failure, StateFileError)
        assert f"state file {folder / 'nvm.json'}: cannot write it" in str(served.failure)
        with pytest.raises(TimeoutError):
            host.reply(seq, timeout_s=0.2)
