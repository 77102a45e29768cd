"""The thermal screen's texts: a density suggestion that holds when typed in, a cut that
still fails named with its numbers, and damaged shares shown with the digits that tell them
from the limit (audit helper-49)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from controller import thermal_screen
from controller.commands.plan import pass_rows, thermal_cell
from controller.script import parse_script
from controller.thermal_screen import screen_plan
from controller.validation import ThermalCheck, check_thermal

#: Two back-to-back passes of a dense, deep 3 mm circle: four density cuts (78 %, to 6.6 %)
#: still failed pass 2, and "not enough" was said of a cut that a fifth would have found.
HOT = """
[handpiece]
name = "spot120"
[[pass]]
pattern = "circle"
size_mm = 3
density_percent = 30
depth_um = 300
order = "thermal-spread"
[[pass]]
pattern = "circle"
size_mm = 3
density_percent = 30
depth_um = 300
order = "thermal-spread"
"""


def checks(text: str) -> list[ThermalCheck]:
    return check_thermal(parse_script(text, Path("hot.toml")).plans())


def density_line(check: ThermalCheck) -> str:
    lines = [r for r in check.rejections if "density" in r]
    assert len(lines) == 1, check.rejections
    return lines[0]


def test_the_density_suggested_passes_when_typed_into_the_script() -> None:
    line = density_line(checks(HOT)[0])
    found = re.search(r"density_percent = ([\d.]+)", line)
    assert found and "evaluated: within the limit" in line, line
    typed = HOT.replace("density_percent = 30", f"density_percent = {found.group(1)}")
    assert not checks(typed)[0].rejected  # the value as printed, not a rounded-up neighbour


def test_a_cut_that_still_fails_names_its_coverage_pass_and_damage(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(thermal_screen, "MAX_DENSITY_SCREENS", 1)
    line = density_line(checks(HOT)[0]).strip()
    found = re.fullmatch(r"a density cut of (\d+) % \(to coverage ([\d.]+) %\), the last of 1 "
                         r"cut screened, still fails pass (\d) \(([\d.]+) % damaged\); lower "
                         r"the energy or split the area", line)
    assert found, line
    cut, coverage, failing, damaged = found.groups()
    assert int(cut) == round(100 * (1 - float(coverage) / 30))
    typed = HOT.replace("density_percent = 30", f"density_percent = {coverage}")
    screen = checks(typed)[0].screen
    assert screen is not None and not screen.ok
    bad = screen.passes[-1]
    assert bad.pass_index + 1 == int(failing)
    assert float(damaged) == pytest.approx(100 * bad.damaged_reservoir_fraction, abs=0.05)


def test_a_damaged_share_just_over_its_limit_reads_over_it() -> None:
    """5.04 % over a 5 % limit read "5.0 %" beside "allows 5.0 %"."""
    plan = parse_script(HOT, Path("hot.toml")).plans()[0]
    first = screen_plan(plan, plan.settings.handpiece, until_failure=True)
    damaged_pct = 100 * first.passes[0].damaged_reservoir_fraction
    limit_pct = damaged_pct - 0.004  # reads the same as the damage to one decimal
    assert f"{limit_pct:.1f}" == f"{damaged_pct:.1f}"
    handpiece = replace(plan.settings.handpiece, max_reservoir_damage_fraction=limit_pct / 100)
    screen = screen_plan(plan, handpiece, first.params, until_failure=True)
    assert not screen.ok
    head = screen.rejection_reasons()[0]
    found = re.search(r": ([\d.]+) % of the reservoir .* the handpiece allows ([\d.]+) %$", head)
    assert found, head
    assert found.group(1) != found.group(2)
    assert float(found.group(1)) == pytest.approx(damaged_pct, abs=0.0005)
    assert float(found.group(2)) == pytest.approx(limit_pct, abs=0.0005)
    cell = thermal_cell(pass_rows([plan], [ThermalCheck(0, screen)])[0])
    assert cell == f"FAIL {found.group(1)} %"


@pytest.mark.parametrize("scale", [0.0, -0.5, float("inf"), float("nan")])
def test_a_heat_scale_that_estimates_nothing_still_gives_a_density_suggestion(
        monkeypatch: pytest.MonkeyPatch, scale: float) -> None:
    """The heat scale estimate can read no limit or a negative rise; taken as the density
    cut, its logarithm raised (ValueError, OverflowError) from the rejection's explanation
    (review of session 15). It now cuts by CUT_STEP and screens on."""
    monkeypatch.setattr(thermal_screen, "_heat_scale", lambda screen: scale)
    monkeypatch.setattr(thermal_screen, "MAX_DENSITY_SCREENS", 2)
    line = density_line(checks(HOT)[0])
    assert "density" in line and "%" in line
