"""Rules that several layers apply live in one place in drivers: its users agree."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from controller.record import lsb_to_mm
from controller.session import timing_for
from controller.thermal_delivered import spot_positions_um
from controller.validation import _device_findings
from drivers.errors import LimitError
from drivers.galvo import GalvoScanner, lsb_to_um, usable_half_field_um
from drivers.info import average_power_mw, power_limited_rate_hz
from drivers.protocol.messages import SPOT_DTYPE
from drivers.pulse import PulseGenerator
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
