"""Every transport carries the protocol through real code paths: in-process, pty via pyserial,
TCP via pyserial's socket:// handler, USB via real pyusb with the simulated backend."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypedDict

import numpy as np
import pytest
import serial
import usb.core
import usb.util

from drivers.protocol.messages import Cause, FaultCode, State
from sim_hw.clock import SimClock
from sim_hw.config import SimConfig
from sim_hw.control import send
from sim_hw.link import SimLink, open_link
from sim_hw.probe import RawHost, make_spots, plan_checksum
from sim_hw.pty_server import serve_pty
from sim_hw.server import Served
from sim_hw.tcp_server import serve_tcp
from sim_hw.usb_backend import EP_IN, EP_OUT, PRODUCT_ID, VENDOR_ID, get_backend


class Options(TypedDict, total=False):
    """SimConfig keyword arguments the tests share."""

    pre_emission_ms: int
    footswitch: bool
    rep_rate_hz: int


CONFIG: Options = {"pre_emission_ms": 0, "footswitch": True, "rep_rate_hz": 1000}


def serial_host(port: serial.SerialBase) -> RawHost:
    def read(max_bytes: int, timeout_s: float) -> bytes:
        port.timeout = timeout_s
        return port.read(min(max_bytes, max(1, port.in_waiting)))

    return RawHost(port.write, read)


def usb_host(dev: usb.core.Device) -> RawHost:
    def read(max_bytes: int, timeout_s: float) -> bytes:
        try:
            return bytes(dev.read(EP_IN, max_bytes, max(1, round(timeout_s * 1000))))
        except usb.core.USBTimeoutError:
            return b""

    return RawHost(lambda data: dev.write(EP_OUT, data), read)


@contextmanager
def connected(kind: str, config: SimConfig) -> Iterator[tuple[RawHost, SimLink | Served]]:
    """A RawHost on ``kind`` and the served handle (with .device and .faults)."""
    if kind == "inprocess":
        with open_link(config) as link:
            yield RawHost(link.write, link.read), link
    elif kind == "pty":
        with serve_pty(config) as pty, serial.Serial(pty.path, timeout=0) as port:
            yield serial_host(port), pty
    elif kind == "tcp":
        with serve_tcp(config) as tcp:
            port = serial.serial_for_url(tcp.url, timeout=0)
            with port:
                yield serial_host(port), tcp
    else:
        backend, served = get_backend(config)
        with served:
            dev = usb.core.find(idVendor=VENDOR_ID, idProduct=PRODUCT_ID, backend=backend)
            assert dev is not None
            yield usb_host(dev), served
            usb.util.dispose_resources(dev)


def sim_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sim_hw-")]


@pytest.mark.parametrize("kind", ["inprocess", "pty", "tcp", "usb"])
def test_identify_and_short_emission(kind: str) -> None:
    spots = make_spots(300)
    with connected(kind, SimConfig(serial="SIM-T", **CONFIG)) as (host, served):
        assert host.request("IDENTIFY")["serial"] == b"SIM-T".ljust(16, b"\0")
        host.request("LOAD_PLAN", pass_index=0, spot_count=300,
                     plan_checksum=plan_checksum(spots), first_index=0)
        for start in range(0, 300, 255):
            assert host.request("SPOT_BATCH", spots[start:start + 255]).name == "ACK"
        assert host.request("ARM", plan_checksum=plan_checksum(spots)).name == "ACK"
        assert host.request("START").name == "ACK"
        done = host.wait_event(lambda e: e.name == "EVT_STATE" and e["new_state"] == State.STANDBY)
        assert done["cause"] == Cause.PLAN_COMPLETE
        truth = served.device.ground_truth
        np.testing.assert_array_equal(truth["index"], np.arange(300))
        reported = np.concatenate([e.records for e in host.events if e.name == "EVT_DELIVERED"])
        np.testing.assert_array_equal(reported["index"], truth["index"])
        np.testing.assert_array_equal(reported["measured_uj"], truth["measured_uj"])
    assert sim_threads() == []


def test_served_watchdog_runs_on_real_time() -> None:
    with connected("inprocess", SimConfig(**CONFIG)) as (host, _link):
        spots = make_spots(5)
        host.request("LOAD_PLAN", pass_index=0, spot_count=5, plan_checksum=plan_checksum(spots),
                     first_index=0)
        started = time.monotonic()
        host.request("ARM", plan_checksum=plan_checksum(spots))
        event = host.wait_event(lambda e: e.name == "EVT_STATE" and e["new_state"] == State.FAULT)
        elapsed_s = time.monotonic() - started
        assert event["fault_code"] == FaultCode.WATCHDOG and event["cause"] == Cause.WATCHDOG
        assert 0.45 <= elapsed_s < 1.0


def test_virtual_clock_outruns_real_time_and_realtime_does_not() -> None:
    spots = make_spots(100)
    walls = {}
    for mode in ("virtual", "realtime"):
        with connected("inprocess", SimConfig(clock=mode, **(CONFIG | {"rep_rate_hz": 400}))) as (
                host, link):
            host.request("LOAD_PLAN", pass_index=0, spot_count=100,
                         plan_checksum=plan_checksum(spots), first_index=0)
            host.request("SPOT_BATCH", spots)
            host.request("ARM", plan_checksum=plan_checksum(spots))
            started = time.monotonic()
            host.request("START")
            host.wait_event(lambda e: e.name == "EVT_STATE" and e["new_state"] == State.STANDBY)
            walls[mode] = time.monotonic() - started
            times_s = link.device.ground_truth["time_s"]
            assert np.diff(times_s).min() >= 1 / 400 - 1e-9
    assert walls["virtual"] < 0.2 < 0.24 <= walls["realtime"]


def test_clock_skip() -> None:
    virtual, realtime = SimClock("virtual"), SimClock("realtime")
    for clock in (virtual, realtime):
        clock.skip_to(clock.now_s() + 100)
    assert virtual.now_s() - virtual.real_s() > 99.9
    assert realtime.now_s() - realtime.real_s() < 0.1
    with pytest.raises(ValueError, match="clock mode"):
        SimClock("fast")


def test_open_link_takes_query_options() -> None:
    with open_link({"door": "open", "seed": "3"}) as link:
        host = RawHost(link.write, link.read)
        assert host.request("STATUS_REQUEST")["interlocks"] == 0b0101
    with pytest.raises(ValueError, match=r"allowed: .*door"):
        open_link({"colour": "red"})


def test_in_process_disconnect_and_reconnect() -> None:
    with open_link(SimConfig(**CONFIG)) as link:
        host = RawHost(link.write, link.read)
        host.request("LOAD_PLAN", pass_index=0, spot_count=5, plan_checksum=1, first_index=0)
        link.faults.disconnect()
        with pytest.raises(ConnectionResetError):
            link.read(100, 1.0)
        link.reconnect()
        host = RawHost(link.write, link.read)
        assert host.request("STATUS_REQUEST")["state"] == State.READY


def test_pty_reopen_and_injected_unplug() -> None:
    with serve_pty(SimConfig(**CONFIG)) as served:
        for _ in range(2):  # the path can be opened again after the host closed it
            with serial.Serial(served.path, timeout=0) as port:
                assert serial_host(port).request("IDENTIFY").name == "IDENTIFY_REPLY"
        with serial.Serial(served.path, timeout=1) as port:
            served.faults.disconnect()
            with pytest.raises(serial.SerialException):
                for _ in range(20):
                    port.read(1)
        with serial.Serial(served.path, timeout=0) as port:
            assert serial_host(port).request("IDENTIFY").name == "IDENTIFY_REPLY"
    assert sim_threads() == []


def test_tcp_one_host_at_a_time_reconnect_and_nodelay() -> None:
    with serve_tcp(SimConfig(**CONFIG)) as served:
        assert served.url == f"socket://127.0.0.1:{served.port}"
        with serial.serial_for_url(served.url, timeout=0) as first:
            assert serial_host(first).request("IDENTIFY").name == "IDENTIFY_REPLY"
            accepted = served.transport._sock
            assert accepted is not None
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            with socket.create_connection(("127.0.0.1", served.port), timeout=2) as second:
                assert second.recv(10) == b""  # refused while the first host is connected
        with serial.serial_for_url(served.url, timeout=0) as again:
            assert serial_host(again).request("IDENTIFY").name == "IDENTIFY_REPLY"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", served.port), timeout=1)


def test_usb_descriptors_timeout_and_unplug() -> None:
    backend, served = get_backend(SimConfig(serial="SIM-USB"))
    with served:
        dev = usb.core.find(idVendor=VENDOR_ID, idProduct=PRODUCT_ID, backend=backend)
        assert dev.serial_number == "SIM-USB" and dev.manufacturer == "co2scan"
        assert usb.core.find(idVendor=VENDOR_ID, idProduct=0x0001, backend=backend) is None
        (interface,) = dev.get_active_configuration()
        assert [ep.bEndpointAddress for ep in interface] == [EP_OUT, EP_IN]
        assert [usb.util.endpoint_type(ep.bmAttributes) for ep in interface] == [
            usb.util.ENDPOINT_TYPE_BULK] * 2
        with pytest.raises(usb.core.USBTimeoutError):
            dev.read(EP_IN, 64, 50)
        assert usb_host(dev).request("IDENTIFY")["serial"] == b"SIM-USB".ljust(16, b"\0")
        served.faults.disconnect()
        with pytest.raises(usb.core.USBError) as lost:
            dev.read(EP_IN, 64, 1000)
        assert not isinstance(lost.value, usb.core.USBTimeoutError)
        usb.util.dispose_resources(dev)
        dev = usb.core.find(idVendor=VENDOR_ID, idProduct=PRODUCT_ID, backend=backend)
        assert usb_host(dev).request("IDENTIFY").name == "IDENTIFY_REPLY"
        usb.util.dispose_resources(dev)
    served.stop()  # idempotent
    assert sim_threads() == []


def test_control_channel() -> None:
    with serve_tcp(SimConfig(**CONFIG)) as served:
        port = served.control_port
        assert port is not None
        assert send(port, "set door=open").startswith("ok state=STANDBY")
        assert served.device.interlocks == 0b1101
        assert send(port, "set key=maybe").startswith("error: input key")
        assert send(port, "fault estop").startswith("error: unknown fault")
        assert send(port, "fault reset").startswith("ok")
        assert send(port, "status").startswith("state=FAULT fault=DEVICE_RESET")
        assert send(port, "truth") == "fired=0"
        assert send(port, "launch").startswith("error: unknown command")
