"""Fault injection does what it says: link damage, disconnects and device faults."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from drivers.protocol import FrameDecoder, encode, message
from drivers.protocol.messages import Cause, ErrorCode, FaultCode, State
from sim_hw.config import SimConfig
from sim_hw.device import SimDevice
from sim_hw.faults import Faults
from sim_hw.link import SimLink, open_link
from sim_hw.probe import RawHost, make_spots, plan_checksum

CONFIG = SimConfig(pre_emission_ms=0, footswitch=True, rep_rate_hz=1000, noise_percent=0.0)


def quiet(host: RawHost, name: str, **values: int) -> None:
    """Send a request that must get no reply."""
    seq = host.send(name, records=None, seq=None, **values)
    with pytest.raises(TimeoutError):
        host.reply(seq, timeout_s=0.2)


@pytest.fixture
def link() -> Iterator[SimLink]:
    with open_link(CONFIG) as opened:
        yield opened


def test_drop_next_inbound_frames(link: SimLink) -> None:
    host = RawHost(link.write, link.read)
    link.faults.next_frames("drop", 2, "in")
    quiet(host, "IDENTIFY")
    quiet(host, "IDENTIFY")
    assert host.request("IDENTIFY").name == "IDENTIFY_REPLY"
    assert link.device.counters["frames_received"] == 1
    assert link.faults.applied("in")["drop"] == 2


def test_corrupt_next_inbound_frame_is_dropped_and_counted(link: SimLink) -> None:
    host = RawHost(link.write, link.read)
    link.faults.next_frames("corrupt", 1, "in")
    quiet(host, "LOAD_PLAN", pass_index=0, spot_count=5, plan_checksum=1, first_index=0)
    assert link.device.frames_dropped == 1 and link.device.state == State.STANDBY
    assert host.request("IDENTIFY").name == "IDENTIFY_REPLY"


def test_duplicated_spot_batch_is_refused_and_fires_once(link: SimLink) -> None:
    host = RawHost(link.write, link.read)
    spots = make_spots(40)
    host.request("LOAD_PLAN", pass_index=0, spot_count=40, plan_checksum=plan_checksum(spots),
                 first_index=0)
    link.faults.next_frames("duplicate", 1, "in")
    seq = host.send("SPOT_BATCH", spots)
    time.sleep(0.1)
    first, second = [msg for msg in host.poll() if msg.seq == seq and "ACK" in msg.name]
    assert (first.name, second.name, second["error"]) == ("ACK", "NACK", ErrorCode.BAD_INDEX)
    host.request("ARM", plan_checksum=plan_checksum(spots))
    host.request("START")
    host.wait_event(lambda e: e.name == "EVT_STATE" and e["new_state"] == State.STANDBY)
    np.testing.assert_array_equal(link.device.ground_truth["index"], np.arange(40))


def test_delay_stalls_the_link_without_reordering(link: SimLink) -> None:
    host = RawHost(link.write, link.read)
    link.faults.link("in", delay_ms=200)
    link.faults.next_frames("delay", 1, "in")
    started = time.monotonic()
    delayed = host.send("IDENTIFY")
    following = host.send("STATUS_REQUEST")
    assert host.reply(delayed).name == "IDENTIFY_REPLY"
    assert time.monotonic() - started >= 0.19
    got = host.reply(following)
    assert got.name == "STATUS_REPORT"


def test_outbound_drop_and_corrupt(link: SimLink) -> None:
    host = RawHost(link.write, link.read)
    link.faults.next_frames("drop", 1, "out")
    quiet(host, "LOAD_PLAN", pass_index=0, spot_count=5, plan_checksum=1, first_index=0)
    assert link.device.state == State.READY  # the request was executed; only the reply was lost
    link.faults.next_frames("corrupt", 1, "out")
    seq = host.send("STATUS_REQUEST")
    with pytest.raises(TimeoutError):
        host.reply(seq, timeout_s=0.2)
    assert host._decoder.errors == 1
    assert host.request("STATUS_REQUEST")["state"] == State.READY


def test_link_fault_probabilities_are_seeded() -> None:
    answered = []
    for _ in range(2):
        with open_link(SimConfig(seed=11)) as opened:
            opened.faults.link("in", drop=0.3)
            host = RawHost(opened.write, opened.read)
            seqs = [host.send("HEARTBEAT") for _ in range(60)]
            time.sleep(0.1)
            host.poll()
            answered.append(sorted(set(seqs) & set(host.replies)))
            assert opened.faults.applied("in")["drop"] == 60 - len(answered[-1])
    assert answered[0] == answered[1] and 20 < len(answered[0]) < 60


def test_device_reset_announces_power_on(link: SimLink) -> None:
    host = RawHost(link.write, link.read)
    host.request("HEARTBEAT")
    link.faults.reset_device()
    report = host.request("STATUS_REQUEST")
    assert (report["state"], report["fault_code"]) == (State.FAULT, FaultCode.DEVICE_RESET)
    (event,) = host.events
    assert (event.seq, event["cause"], event["fault_code"]) == (
        0, Cause.POWER_ON, FaultCode.DEVICE_RESET)


def test_galvo_stuck_drift_and_over_temperature() -> None:
    device = SimDevice(CONFIG)
    faults = Faults(device, seed=1)
    host = RawHost(device.receive, lambda n, t: device.transmit())
    spots = make_spots(20)
    host.request("LOAD_PLAN", pass_index=0, spot_count=20, plan_checksum=plan_checksum(spots),
                 first_index=0)
    host.request("SPOT_BATCH", spots)
    faults.drift(-10)
    host.request("ARM", plan_checksum=plan_checksum(spots))
    host.request("START")
    device.advance(0.003)
    fired = device.ground_truth
    assert len(fired) >= 2
    np.testing.assert_array_equal(fired["measured_uj"], fired["energy_uj"] * 0.9)
    faults.galvo_stuck()
    device.advance(1.0)
    assert device.fault_code == FaultCode.GALVO_STUCK and device.fired_count == len(fired)
    faults.galvo_stuck(False)
    faults.over_temperature()
    assert device.status_values()["temperature_dc"] == CONFIG.over_temperature_dc
    assert host.request("RESET_FAULT")["error"] == ErrorCode.FAULT_ACTIVE
    faults.over_temperature(False)
    assert host.request("RESET_FAULT").name == "ACK"
    faults.over_temperature()
    assert device.fault_code == FaultCode.OVER_TEMPERATURE  # faults in any state


def test_fault_commands() -> None:
    device = SimDevice(CONFIG)
    faults = Faults(device, seed=1)
    assert faults.command(["direction=out", "drop=0.5", "corrupt_next=2", "delay_ms=5"]).startswith(
        "ok applied")
    wire = encode(message("HEARTBEAT", 1))
    out = faults.carry("out", wire * 4, 0.0)
    decoder = FrameDecoder()
    assert len(decoder.feed(out)) <= 2 and decoder.errors == 2
    faults.command(["clear", "drift=25", "galvo=stuck", "overtemp=on"])
    assert device.laser.drift_percent == 25 and device.galvo.stuck
    assert device.state == State.FAULT
    faults.command(["reset"])
    assert device.fault_code == FaultCode.DEVICE_RESET
    assert faults.carry("in", wire, 0.0) == wire  # cleared: bytes pass unchanged
    for bad in (["drop=2"], ["explode"], ["direction=sideways"], ["overtemp=warm"]):
        with pytest.raises(ValueError):
            faults.command(bad)
