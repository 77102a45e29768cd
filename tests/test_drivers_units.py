"""Driver pieces that need no device: URL registry, unit conversion, limit checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import LimitError, TransportURLError
from drivers.galvo import DistortionTable, GalvoScanner
from drivers.info import DeviceLimits
from drivers.protocol.messages import SPOT_DTYPE, Capability
from drivers.pulse import PulseGenerator
from drivers.spots import PassSpots, plan_checksum
from drivers.transports.registry import open_transport

LIMITS = DeviceLimits(
    field_size_um=20000, usable_lsb_min=1024, usable_lsb_max=64511, energy_min_uj=1000,
    energy_max_uj=200000, pulse_min_us=10, pulse_max_us=2000, rep_rate_max_hz=1000,
    avg_power_max_mw=30000, buffer_spots=4096, max_stack=5, watchdog_ms=500, heartbeat_ms=100,
    pre_emission_ms=2000, jump_speed_um_per_ms=5000, settle_us=150,
)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host", "unknown scheme 'ftp'"),
        ("", "empty URL"),
        ("usb://12:zz", "expected usb://VID:PID with hex ids"),
        ("usb://1209:C025?backend=magic", "unknown USB backend 'magic'"),
        ("usb://1209:C025?speed=1", "unknown option(s) ['speed']"),
        ("socket://localhost", "expected socket://HOST:PORT"),
        ("serial://?baudrate=9600", "no device path"),
        ("serial:///dev/ttyS0?baudrate=fast", "baudrate 'fast' is not an integer"),
        ("serial:///dev/ttyS0?parity=E", "unknown option(s) ['parity']"),
    ],
)
def test_bad_urls_name_the_problem_and_list_accepted_forms(url: str, message: str) -> None:
    with pytest.raises(TransportURLError) as info:
        open_transport(url)
    assert message in str(info.value)
    assert "sim://" in str(info.value) and "usb://VID:PID" in str(info.value)


def test_centre_and_edges_convert_to_lsb() -> None:
    scanner = GalvoScanner(None, LIMITS)  # type: ignore[arg-type]
    x, y = scanner.to_lsb([0.0, 1000.0], [0.0, -1000.0])
    assert x.tolist() == [0x8000, 0x8000 + round(1000 * 65536 / 20000)]
    assert y.tolist() == [0x8000, 0x8000 - round(1000 * 65536 / 20000)]


def test_point_outside_usable_field_is_refused_with_the_range() -> None:
    scanner = GalvoScanner(None, LIMITS)  # type: ignore[arg-type]
    with pytest.raises(LimitError, match=r"y_um = 9900.0 is outside the allowed range "
                                         r"-9687.5..9687.1 µm"):
        scanner.to_lsb([0.0], [9900.0])
    scanner.to_lsb([-9687.5, 9687.1], [9687.1, -9687.5])  # the range it names is accepted
    with pytest.raises(LimitError):  # (9687.2, shown before, was not)
        scanner.to_lsb([0.0], [9687.2])
    with pytest.raises(LimitError, match="x_um = nan"):
        scanner.to_lsb([float("nan")], [0.0])


@given(st.floats(-9000, 9000), st.floats(-9000, 9000))
def test_lsb_round_trip_within_half_lsb(x_um: float, y_um: float) -> None:
    scanner = GalvoScanner(None, LIMITS)  # type: ignore[arg-type]
    x, y = scanner.to_um(*scanner.to_lsb([x_um], [y_um]))
    half_lsb_um = 0.5 * 20000 / 65536
    assert abs(x[0] - x_um) <= half_lsb_um + 1e-9 and abs(y[0] - y_um) <= half_lsb_um + 1e-9


def test_distortion_table_shifts_by_interpolated_offsets() -> None:
    scanner = GalvoScanner(None, LIMITS)  # type: ignore[arg-type]
    dx = np.array([[0.0, 100.0], [0.0, 100.0]])
    scanner.correction = DistortionTable(dx, np.zeros((2, 2)))
    x, _ = scanner.to_um(*scanner.to_lsb([0.0], [0.0]))
    assert abs(x[0] - 50.0) < 0.2  # half-way between nodes: half the offset
    with pytest.raises(LimitError, match="distortion table shape"):
        DistortionTable(np.zeros((1, 2)), np.zeros((1, 2)))


def test_no_host_table_for_a_device_that_corrects_its_own_distortion() -> None:
    """Both corrections would add up (firmware_protocol.md 4.2)."""
    scanner = GalvoScanner(None, LIMITS, Capability.DISTORTION_CORRECTION)  # type: ignore[arg-type]
    with pytest.raises(LimitError, match="DISTORTION_CORRECTION"):
        scanner.correction = DistortionTable(np.zeros((2, 2)), np.zeros((2, 2)))
    assert scanner.correction is None
    scanner.correction = None  # none is always fine


def test_pulse_limits_name_field_value_and_range() -> None:
    laser = PulseGenerator(None, LIMITS)  # type: ignore[arg-type]
    laser.check([5000], [100], [1], rep_rate_hz=100)
    with pytest.raises(LimitError, match=r"energy_uj = 250000 .* 1000..200000 µJ"):
        laser.check([250000], [100], [1])
    with pytest.raises(LimitError, match=r"stack = 6 .* 1..5"):
        laser.check([5000], [100], [6])
    with pytest.raises(LimitError, match=r"average power .* = 40000.0 .* 0..30000 mW"):
        laser.check([200000], [100], [1], rep_rate_hz=200)
    with pytest.raises(LimitError, match=r"rep_rate_hz = 5000 .* 1..1000 Hz"):
        laser.set_rep_rate(5000)


def test_plan_checksum_covers_every_record_byte() -> None:
    from drivers.protocol.messages import SPOT_DTYPE

    records = np.zeros(3, SPOT_DTYPE)
    records["index"] = np.arange(3)
    spots = PassSpots.from_records(0, records)
    changed = records.copy()
    changed["energy_uj"][2] = 1
    assert plan_checksum(changed) != spots.checksum
    with pytest.raises(ValueError, match=r"indexed 0\.\.2 in order: record 0 has index 2"):
        PassSpots.from_records(0, records[::-1])


class _Link:
    """Records what a PulseGenerator sends; answers STATUS_REQUEST with ``rate``."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.sent: list[tuple[str, dict[str, object]]] = []

    def request(self, name: str, **values: object) -> dict[str, int]:
        self.sent.append((name, values))
        return {"rep_rate_hz": self.rate}


def test_pulse_arguments_of_the_wrong_kind_are_refused_before_sending() -> None:
    """aiming_beam("off") switched the beam on; set_rep_rate(100.5) was truncated and
    set_rep_rate("100") gave a bare TypeError (service audit)."""
    link = _Link(100)
    laser = PulseGenerator(link, LIMITS)  # type: ignore[arg-type]
    link.sent.clear()
    for on in ("off", "on", 0, 1, None):
        with pytest.raises(LimitError, match=r"aiming_beam\(on\) = .* True or False"):
            laser.aiming_beam(on)  # type: ignore[arg-type]
    for rate in (100.5, "100", True, float("nan"), None, 0, 1001):
        with pytest.raises(LimitError, match=r"rep_rate_hz = .* whole numbers 1..1000 Hz"):
            laser.set_rep_rate(rate)  # type: ignore[arg-type]
        if rate is not None:  # None: the rate in use
            with pytest.raises(LimitError, match=r"rep_rate_hz = .* 1..1000 Hz"):
                laser.check([5000], [100], [1], rep_rate_hz=rate)  # type: ignore[arg-type]
    assert link.sent == []
    laser.aiming_beam(False)
    laser.aiming_beam(np.bool_(True))  # type: ignore[arg-type]
    laser.set_rep_rate(200.0)  # type: ignore[arg-type]
    laser.set_rep_rate(np.int64(300))  # type: ignore[arg-type]
    assert link.sent == [("AIMING_BEAM", {"on": 0}), ("AIMING_BEAM", {"on": 1}),
                         ("PULSE_SETTINGS", {"rep_rate_hz": 200}),
                         ("PULSE_SETTINGS", {"rep_rate_hz": 300})]
    assert laser.rep_rate_hz == 300 and type(laser.rep_rate_hz) is int
    for values in (["5000"], [float("nan")], [True]):
        with pytest.raises(LimitError, match="energy_uj"):
            laser.check(values, [100], [1])


def test_average_power_is_checked_at_the_rate_the_device_uses() -> None:
    """A fresh device fires at 100 Hz before any PULSE_SETTINGS (firmware_protocol.md rule 11):
    the generator reads that rate at open; with none known it assumes rep_rate_max_hz. At a
    rate of 0 the check was skipped and a pass of 100 W passed against a 30 W limit."""
    laser = PulseGenerator(_Link(100), LIMITS)  # type: ignore[arg-type]
    assert laser.rep_rate_hz == 100
    laser.check([200000], [100], [1])  # 20 W at 100 Hz
    with pytest.raises(LimitError, match=r"average power .* = 100000.0 .* 0..30000 mW"):
        laser.check([200000], [100], [5])
    assert PulseGenerator(_Link(0xFFFF), LIMITS).rep_rate_hz == 1000  # type: ignore[arg-type]
    unknown = PulseGenerator(None, LIMITS)  # type: ignore[arg-type]
    assert unknown.rep_rate_hz is None
    with pytest.raises(LimitError, match=r"average power .* = 200000.0 .* 0..30000 mW"):
        unknown.check([200000], [100], [1])  # at 1000 Hz, the most the device could fire at
    laser.set_rep_rate(800)
    laser.limits = dataclasses.replace(LIMITS, rep_rate_max_hz=500)  # SET_LIMITS lowers it
    assert laser.rep_rate_hz == 500


def test_a_fresh_simulated_device_reports_its_rate_in_use() -> None:
    from drivers import open_device

    with open_device("sim://") as dev:
        assert dev.laser.rep_rate_hz == dev.status().rep_rate_hz == 100
        n = 10
        with pytest.raises(LimitError, match="average power"):
            dev.prepare_pass(0, np.linspace(-5000, 5000, n), np.zeros(n), 200000, 200, 5)


@pytest.mark.parametrize(
    ("args", "field", "value", "allowed"),
    [
        ((0, [0, 1, 2], [0, 1], 10_000, 200, 1), "y_um", "2 values (x_um has 3)",
         "one value for every spot, or 3: one per spot"),
        ((0, [0, 1, 2], [0, 1, 2], [10_000, 20_000], 200, 1), "energy_uj",
         "2 values (x_um has 3)", "one value for every spot, or 3: one per spot"),
        ((0, [0, 1, 2, 3], [0] * 4, [10_000, 10_000, 10_000, 1000.5], 200, 1), "energy_uj[3]",
         1000.5, "whole numbers 1000..200000 µJ"),
        ((0, [0], [0], 1000.5, 200, 1), "energy_uj", 1000.5, "whole numbers 1000..200000 µJ"),
        ((0, [0, 1], [0, 1], 10_000, [200, 200.25], 1), "pulse_us[1]", 200.25,
         "whole numbers 10..2000 µs"),
        ((300, [0], [0], 10_000, 200, 1), "pass_index", 300, "whole numbers 0..255"),
        ((1.5, [0], [0], 10_000, 200, 1), "pass_index", 1.5, "whole numbers 0..255"),
    ],
)
def test_prepare_pass_names_the_field_the_spot_and_the_allowed_values(
        args: tuple[object, ...], field: str, value: object, allowed: str) -> None:
    """Arrays of different lengths were a numpy broadcast error, a fraction "a non-integer
    value" without the spot, and pass index 300 a MessageError only at LOAD_PLAN."""
    from drivers import open_device

    with open_device("sim://") as dev, pytest.raises(LimitError) as caught:
        dev.prepare_pass(*args)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.value, caught.value.allowed) == (
        field, value, allowed)


@pytest.mark.parametrize("timeout_s", [-1, 0, 0.01, 31, float("nan"), float("inf"), "x", True,
                                       None])
def test_a_request_timeout_outside_its_range_is_refused_when_the_device_is_opened(
        timeout_s: object) -> None:
    """-1 made a request wait for ever (and treat() leave the device emitting), "x" was a bare
    TypeError, 0 timed out every request."""
    from drivers import open_device

    with pytest.raises(LimitError) as caught:
        open_device("sim://", request_timeout_s=timeout_s)  # type: ignore[arg-type]
    assert caught.value.field == "request_timeout_s"
    assert caught.value.allowed == "numbers 0.05..30.0 s"


def test_a_request_timeout_set_later_is_checked_too() -> None:
    from drivers import open_device

    with open_device("sim://", request_timeout_s=0.05) as dev:
        with pytest.raises(LimitError, match="request_timeout_s = -1"):
            dev.link.request_timeout_s = -1
        assert dev.link.request_timeout_s == 0.05


def test_spot_records_out_of_order_are_refused_naming_the_first_bad_one() -> None:
    """The message said only "must be indexed 0..n-1 in order": not which record, nor what
    it held."""
    records = np.zeros(5, SPOT_DTYPE)
    records["index"] = [0, 1, 3, 2, 4]
    with pytest.raises(ValueError, match=r"indexed 0\.\.4 in order: record 2 has index 3, "
                                         r"expected 2$"):
        PassSpots.from_records(0, records)
    records["index"] = np.arange(5)
    assert PassSpots.from_records(0, records).count == 5
