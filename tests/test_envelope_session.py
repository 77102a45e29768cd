"""The clinical envelope over a whole session: plans on the same area add their spots, stacked
pulses add their depth, and a refusal reads differently from its limit."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.scanpath import Plan
from controller.script import parse_script
from controller.validation import (
    ClinicalEnvelope,
    PlanRejected,
    column_depths_um,
    deepest_coinciding_um,
    deepest_column_um,
    distinct_digits,
    session_coverage,
    validate_plans,
)

#: Lax limits but for the one a test looks at (no thermal screen: ``thermal=[]``).
LAX = replace(ClinicalEnvelope.load(), max_coverage_percent=100.0, max_passes=10,
              max_cumulative_fluence_j_cm2=1e6)


def plans_of(passes: str) -> list[Plan]:
    return parse_script('operator = "t"\npatient_ref = "p"\n' + passes, Path("t.toml")).plans()


def turned_passes(density_pct: float, turns_deg: list[int]) -> list[Plan]:
    """One 10 mm square pass per turn: each its own plan (the settings differ)."""
    return plans_of("".join(
        f'[[pass]]\npattern = "square"\nsize_mm = 10\ndensity_percent = {density_pct}\n'
        f'energy_mj = 5\norder = "raster"\nrotation_deg = {turn}\n' for turn in turns_deg))


def rastered_union_pct(plans: list[Plan], size_um: float, cell_um: float = 10.0) -> float:
    """Share of the centred square of side ``size_um`` that the spots of all plans cover,
    counted on cell centres (independent of the planner's sampled estimate)."""
    radius = plans[0].settings.handpiece.spot_diameter_um / 2.0
    n = round(size_um / cell_um)
    covered = np.zeros((n, n), dtype=bool)
    x = np.concatenate([p.x_um for p in plans]) + size_um / 2.0
    y = np.concatenate([p.y_um for p in plans]) + size_um / 2.0
    reach = math.ceil(radius / cell_um) + 1
    for dj in range(-reach, reach + 1):
        for di in range(-reach, reach + 1):
            i = np.floor(x / cell_um).astype(int) + di
            j = np.floor(y / cell_um).astype(int) + dj
            near = (((i + 0.5) * cell_um - x) ** 2 + ((j + 0.5) * cell_um - y) ** 2
                    <= radius**2) & (i >= 0) & (i < n) & (j >= 0) & (j < n)
            covered[j[near], i[near]] = True
    return 100.0 * float(covered.mean())


def test_turned_plans_on_one_area_are_checked_together() -> None:
    """Four 25 % passes turned against each other are four plans, each 25 %: the session
    leaves less than 40 % of the area untouched, which the plan-by-plan check missed
    (audit, session 15)."""
    plans = turned_passes(25, [0, 22, 45, 67])
    assert len(plans) == 4
    assert all(p.metrics.combined_coverage_pct < 26 for p in plans)
    share, _ = session_coverage(plans)
    assert share == pytest.approx(rastered_union_pct(plans, 10_000.0), abs=1.0)
    assert share > LAX.max_combined_coverage_percent
    with pytest.raises(PlanRejected) as caught:
        validate_plans(plans, LAX, thermal=[])
    [finding] = caught.value.violations
    assert finding.field.startswith("combined_coverage_percent of plans 1-4 on plan ")
    assert finding.value == pytest.approx(share)
    assert finding.limit == LAX.max_combined_coverage_percent


def test_plans_within_the_combined_limit_pass_and_one_plan_is_not_counted_twice() -> None:
    plans = turned_passes(10, [0, 45])
    share, _ = session_coverage(plans)
    assert share == pytest.approx(rastered_union_pct(plans, 10_000.0), abs=1.0)
    assert share < 0.9 * LAX.max_combined_coverage_percent
    assert validate_plans(plans, LAX, thermal=[]) == []
    [alone] = turned_passes(10, [0])
    assert session_coverage([alone]) == (pytest.approx(alone.metrics.combined_coverage_pct,
                                                       abs=0.5), 0)


def test_a_smaller_plan_is_measured_on_its_own_area() -> None:
    """A touch-up plan on the centre of a larger one: the coverage that counts is the
    centre's, where both plans' spots lie."""
    plans = plans_of('[[pass]]\npattern = "square"\nsize_mm = 10\ndensity_percent = 20\n'
                     'energy_mj = 5\n[[pass]]\npattern = "square"\nsize_mm = 4\n'
                     'density_percent = 20\nenergy_mj = 5\nrotation_deg = 45\n')
    share, k = session_coverage(plans)
    assert k == 1
    big = plans[0]
    centre = (np.abs(big.x_um) <= 2000.0) & (np.abs(big.y_um) <= 2000.0)
    assert share > 100.0 * centre.sum() * math.pi * 60.0**2 / 16e6  # more than the big plan's


@pytest.mark.parametrize(("stack", "energy_mj"), [(3, 150), (2, 150)])
def test_the_deepest_stacked_column_is_held_to_the_envelope(stack: int, energy_mj: int
                                                             ) -> None:
    """The envelope limited energy per pulse only: 3 x 150 mJ planned a 2.56 mm column."""
    [plan] = plans_of(f'[[pass]]\npattern = "square"\nsize_mm = 5\ndensity_percent = 2\n'
                      f'energy_mj = {energy_mj}\nstack = {stack}\n')
    one_pulse = float(plan.settings.handpiece.depth_for_energy_um(energy_mj))
    assert deepest_column_um(plan, 0) == pytest.approx(stack * one_pulse, abs=0.05)
    envelope = replace(LAX, max_energy_mj=200.0)
    if stack * one_pulse > envelope.max_depth_um:
        with pytest.raises(PlanRejected) as caught:
            validate_plans([plan], envelope, thermal=[])
        [finding] = caught.value.violations
        assert (finding.field, finding.limit) == ("pass 1: depth_um", envelope.max_depth_um)
    else:
        warned = validate_plans([plan], replace(envelope, max_depth_um=stack * one_pulse),
                                thermal=[])
        assert [w.field for w in warned] == ["pass 1: depth_um"]


def test_a_refusal_just_over_a_limit_names_a_value_over_it() -> None:
    [plan] = plans_of('[[pass]]\npattern = "square"\nsize_mm = 5\ndensity_percent = 2\n'
                      'energy_mj = 150.01\n')
    with pytest.raises(PlanRejected, match=r"energy_mj = 150\.01 mJ; envelope allows at most "
                                           r"150 mJ"):
        validate_plans([plan], LAX, thermal=[])


@given(st.floats(-1e12, 1e12), st.floats(-1e12, 1e12))
def test_unequal_numbers_read_differently(value: float, limit: float) -> None:
    shown = distinct_digits(value, limit)
    assert (shown[0] == shown[1]) == (value == limit)
    assert float(shown[0]) == pytest.approx(value, rel=5e-4)


@given(st.floats(-3000, 3000), st.floats(-3000, 3000), st.floats(0, 90))
def test_within_outline_is_the_closed_square(x: float, y: float, turn_deg: float) -> None:
    """A point of the square or on its edge is within it, whichever way the square is
    turned; one farther than the tolerance outside is not."""
    from controller.patterns import rectangle_um, rotate, within_outline

    vx, vy = rotate(*rectangle_um(4000.0, 4000.0), math.radians(turn_deg))
    px, py = rotate(np.array([x]), np.array([y]), math.radians(turn_deg))
    edge_gap = max(abs(x), abs(y)) - 2000.0
    if abs(edge_gap) > 1e-2:
        assert bool(within_outline(vx, vy, px, py)[0]) == (edge_gap < 0)
    snapped = (np.array([2000.0 * np.sign(x or 1.0)]), np.array([min(max(y, -2000.0), 2000.0)]))
    assert within_outline(vx, vy, *rotate(*snapped, math.radians(turn_deg)))[0]


def deep_passes(offset: bool) -> list[Plan]:
    """Two 5 mm passes of 1 mm columns (two pulses each): on the same positions
    (``offset = false``, two plans) or offset into the first one's reservoirs (one plan)."""
    one = '[[pass]]\npattern = "square"\nsize_mm = 5\npitch_um = 700\ndepth_um = 1000\nstack = 2\n'
    return plans_of(one + one + ("" if offset else "offset = false\n"))


def test_passes_fired_on_the_same_spots_add_their_depth() -> None:
    """Two 1 mm passes on the same positions make 2 mm columns: each pass alone was within
    max_depth_um (review of session 15: the limit was per pass)."""
    plans = deep_passes(offset=False)
    assert len(plans) == 2
    one = deepest_column_um(plans[0], 0)
    assert deepest_coinciding_um(plans) == pytest.approx(2 * one, abs=0.2)
    with pytest.raises(PlanRejected) as caught:
        validate_plans(plans, LAX, thermal=[])
    [finding] = caught.value.violations
    assert finding.field == "depth_um of columns of several passes on one spot"
    assert finding.value == pytest.approx(2 * one, abs=0.2)


def test_offset_passes_do_not_add_their_depth() -> None:
    [plan] = deep_passes(offset=True)
    assert len(plan.metrics.passes) == 2
    assert deepest_coinciding_um([plan]) == deepest_column_um(plan, 0)
    assert validate_plans([plan], LAX, thermal=[]) == []


@given(st.lists(st.tuples(st.floats(-3000, 3000), st.floats(-3000, 3000)), min_size=1,
                max_size=40))
def test_coinciding_depth_is_the_neighbour_sum_brute_force(points: list[tuple[float, float]]
                                                           ) -> None:
    """The grid search finds every pair within a radius, as an all-pairs sum does."""
    [plan] = deep_passes(offset=True)
    xy = np.array(points)
    n = len(xy)
    fake = replace(plan, x_um=xy[:, 0], y_um=xy[:, 1], energy_uj=plan.energy_uj[:n],
                   stack=plan.stack[:n])
    depth = column_depths_um(fake)
    radius = plan.settings.handpiece.spot_diameter_um / 2
    d2 = (xy[:, None, 0] - xy[None, :, 0]) ** 2 + (xy[:, None, 1] - xy[None, :, 1]) ** 2
    expected = ((d2 < radius**2) * depth[None, :]).sum(axis=1).max()
    assert deepest_coinciding_um([fake]) == pytest.approx(round(expected, 1), abs=0.06)
