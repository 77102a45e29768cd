"""Handpiece data files: loading, calibration interpolation, stacking, and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controller.errors import SettingsError
from controller.handpiece import available_handpieces, get_handpiece, load_handpiece

GOOD = """
name = "test"
default = true
spot_diameter_um = 120.0
spot_definition = "1/e^2"
peak_power_w = 100.0
energy_min_mj = 10.0
energy_max_mj = 40.0
pulse_min_us = 50
pulse_max_us = 1000
max_stack = 2
residual_heat_fraction = 0.3
max_reservoir_damage_fraction = 0.05

[calibration]
energy_mj = [10.0, 20.0, 40.0]
depth_um = [100.0, 180.0, 300.0]
coag_um = [20.0, 30.0, 40.0]
"""


def write(tmp_path: Path, text: str, name: str = "hp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_handpieces_load_and_default_is_120_um() -> None:
    names = available_handpieces()
    assert {"spot120", "spot300"} <= set(names)
    assert get_handpiece().spot_diameter_um == 120.0
    hp300 = get_handpiece("spot300")
    assert hp300.spot_diameter_um == 300.0
    # domain.md: Lutronic eCO2 300 µm, 100 -> 180 mJ gives 200 -> 550 µm
    assert hp300.depth_for_energy_um([100.0, 180.0]).tolist() == [200.0, 550.0]


def test_calibration_interpolates_inside_the_table(tmp_path: Path) -> None:
    hp = load_handpiece(write(tmp_path, GOOD))
    assert hp.depth_for_energy_um([10.0, 15.0, 30.0]).tolist() == [100.0, 140.0, 240.0]
    assert hp.coag_for_energy_um([15.0]).tolist() == [25.0]
    energy_uj, pulse_us, stack = hp.dose_for_depth([140.0, 300.0])
    assert energy_uj.tolist() == [15000, 40000]
    assert pulse_us.tolist() == [150, 400]  # energy / 100 W
    assert stack.tolist() == [1, 1]


def test_depth_beyond_one_pulse_is_stacked_evenly(tmp_path: Path) -> None:
    hp = load_handpiece(write(tmp_path, GOOD))
    energy_uj, _, stack = hp.dose_for_depth([360.0, 600.0])
    assert stack.tolist() == [2, 2]
    # 360 µm = 2 x 180 µm = 2 pulses of 20 mJ; 600 = 2 x 300 µm at 40 mJ
    assert energy_uj.tolist() == [20000, 40000]


@pytest.mark.parametrize(("depth_um", "why"), [(601.0, "too deep"), (99.0, "too shallow"),
                                              (float("nan"), "not finite")])
def test_depth_outside_the_handpiece_range_is_refused(
    tmp_path: Path, depth_um: float, why: str
) -> None:
    hp = load_handpiece(write(tmp_path, GOOD))
    with pytest.raises(SettingsError) as err:
        hp.dose_for_depth([depth_um])
    assert err.value.field == "depth_um"
    assert err.value.allowed.startswith("100..600 µm")
    assert why in str(err.value)


def test_energy_outside_the_limits_is_refused(tmp_path: Path) -> None:
    hp = load_handpiece(write(tmp_path, GOOD))
    with pytest.raises(SettingsError, match=r"energy_mj = 45.0 .* 10..40 mJ"):
        hp.depth_for_energy_um([20.0, 45.0])


@pytest.mark.parametrize(("edit", "field"), [
    (("depth_um = [100.0, 180.0, 300.0]", "depth_um = [100.0, 90.0, 300.0]"), "depth_um"),
    (("energy_max_mj = 40.0", "energy_max_mj = 50.0"), "energy_max_mj"),
    (("pulse_max_us = 1000", "pulse_max_us = 300"), "energy_max_mj"),
    (("max_stack = 2", "max_stack = 0"), "max_stack"),
    (("spot_diameter_um = 120.0", "spot_diameter_um = -120.0"), "spot_diameter_um"),
    (("coag_um = [20.0, 30.0, 40.0]", "coag_um = [20.0, 30.0]"), "coag_um"),
    (("residual_heat_fraction = 0.3", "residual_heat_fraction = nan"), "residual_heat_fraction"),
    (("peak_power_w = 100.0", "peak_power_w = 100.0\ncolour = 'red'"), "colour"),
    (("max_stack = 2\n", ""), "max_stack"),
])
def test_bad_handpiece_files_name_the_field(
    tmp_path: Path, edit: tuple[str, str], field: str
) -> None:
    assert edit[0] in GOOD
    with pytest.raises(SettingsError) as err:
        load_handpiece(write(tmp_path, GOOD.replace(*edit)))
    assert err.value.field.endswith(field)


def test_unreadable_file_and_missing_default(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="TOML"):
        load_handpiece(write(tmp_path, "name = ["))
    write(tmp_path, GOOD.replace("default = true\n", ""))
    with pytest.raises(SettingsError, match="default"):
        get_handpiece(directory=tmp_path)
    with pytest.raises(SettingsError, match="one of test"):
        get_handpiece("nope", directory=tmp_path)


def test_calibration_columns_are_monotone_in_shipped_files() -> None:
    for name in available_handpieces():
        hp = get_handpiece(name)
        assert np.all(np.diff(hp.energy_mj) > 0) and np.all(np.diff(hp.depth_um) > 0)
        lo, hi = hp.single_pulse_depth_um
        assert hp.dose_for_depth([lo, hi])[2].tolist() == [1, 1]
