"""Plan thermal screen: inputs from the handpiece, passes in sequence, checked suggestions,
and the injury-map picture."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from controller.handpiece import get_handpiece
from controller.numbers import distinct_digits
from controller.scanpath import Plan, build_plan
from controller.settings import (
    DensitySpec,
    Handpiece,
    OrderKind,
    PassSettings,
    Pattern,
    TreatmentSettings,
)
from controller.thermal import TissueParams, simulate_pass
from controller.thermal_screen import default_params, screen_plan, spot_heat


@pytest.fixture(scope="module")
def handpiece() -> Handpiece:
    return get_handpiece("spot120")


def small_plan(handpiece: Handpiece, passes: int = 2, kind: OrderKind = "raster") -> Plan:
    from controller.settings import ScanOrder

    return build_plan(TreatmentSettings(
        handpiece=handpiece, pattern=Pattern("square", width_mm=3.0),
        density=DensitySpec(coverage_pct=10.0), depth_um=300.0,
        passes=PassSettings(count=passes), order=ScanOrder(kind=kind)))


def test_spot_inputs_come_from_the_handpiece_and_the_pass_sequence(handpiece: Handpiece) -> None:
    plan = small_plan(handpiece)
    spots = spot_heat(plan, handpiece, inter_pass_gap_s=2.5)
    energy_mj = plan.energy_uj * 1e-3
    np.testing.assert_allclose(spots.heat_uj, handpiece.residual_heat_fraction * plan.energy_uj
                               * plan.stack)
    np.testing.assert_allclose(spots.lesion_radius_um,
                               60.0 + np.interp(energy_mj, handpiece.energy_mj,
                                                handpiece.coag_um))
    second = plan.pass_slice(1)
    start_s = plan.metrics.passes[0].duration_s + 2.5
    np.testing.assert_allclose(spots.t_s[second], start_s + plan.fire_time_us[second] * 1e-6)
    params = default_params(spots, plan.settings.resolved_density.pitch_um)
    assert params.thickness_um == pytest.approx(300.0, rel=0.02)  # the column depth
    assert params.depth_loss


def test_later_passes_carry_earlier_heat_and_lesions(handpiece: Handpiece) -> None:
    plan = small_plan(handpiece)
    screen = screen_plan(plan, handpiece)
    first, second = screen.passes
    assert second.start_s == pytest.approx(plan.metrics.passes[0].duration_s)
    assert second.result.reservoir.sum() < first.result.reservoir.sum()
    assert second.peak_reservoir_rise_k > first.peak_reservoir_rise_k
    assert second.result.heat_deposited_j == pytest.approx(
        1e-6 * float((handpiece.residual_heat_fraction * plan.energy_uj * plan.stack).sum()))
    later = screen_plan(plan, handpiece, inter_pass_gap_s=60.0).passes[1]
    assert later.peak_reservoir_rise_k < second.peak_reservoir_rise_k


def test_earlier_plans_of_the_session_count(handpiece: Handpiece) -> None:
    """A plan fired right after another on the same area carries that plan's heat."""
    before, plan = small_plan(handpiece, passes=1), small_plan(handpiece, passes=1)
    alone = screen_plan(plan, handpiece).passes[0]
    after = screen_plan(plan, handpiece, earlier=[before]).passes[0]
    assert after.start_s == pytest.approx(before.metrics.passes[0].duration_s)
    assert after.peak_reservoir_rise_k > alone.peak_reservoir_rise_k
    assert after.result.heat_deposited_j == pytest.approx(2.0 * alone.result.heat_deposited_j)
    cooled = screen_plan(plan, handpiece, inter_pass_gap_s=600.0, earlier=[before]).passes[0]
    assert cooled.peak_reservoir_rise_k < after.peak_reservoir_rise_k


def test_earlier_plans_keep_their_own_handpiece(handpiece: Handpiece) -> None:
    """In a session that changes handpiece, an earlier plan's heat and lesions come from the
    handpiece it is fired with, not from the later plan's."""
    wide = get_handpiece("spot300")
    assert wide.residual_heat_fraction != handpiece.residual_heat_fraction
    before = build_plan(TreatmentSettings(
        handpiece=wide, pattern=Pattern("square", width_mm=3.0),
        density=DensitySpec(coverage_pct=10.0), depth_um=300.0))
    plan = small_plan(handpiece, passes=1)
    spots = spot_heat(plan, handpiece, earlier=[before])
    n = len(before.x_um)
    assert spots.first == n
    np.testing.assert_allclose(spots.heat_uj[:n], wide.residual_heat_fraction
                               * before.energy_uj * before.stack)
    np.testing.assert_allclose(spots.lesion_radius_um[:n], wide.spot_diameter_um / 2.0
                               + wide.coag_for_energy_um(before.energy_uj * 1e-3, "t"))
    np.testing.assert_allclose(spots.heat_uj[n:], handpiece.residual_heat_fraction
                               * plan.energy_uj * plan.stack)


@pytest.fixture(scope="module")
def strict(handpiece: Handpiece) -> tuple[Plan, Handpiece, TissueParams]:
    """A 2-pass plan whose first pass passes and whose back-to-back second fails (damage
    threshold: the 99th percentile of the first pass's reservoir damage integrals)."""
    plan = small_plan(handpiece)
    loose = screen_plan(plan, handpiece)
    one = loose.passes[0].result
    threshold = float(np.quantile(one.damage[one.reservoir], 0.99))
    assert threshold > 0.0
    params = replace(loose.params, damage_omega=threshold)
    return plan, replace(handpiece, max_reservoir_damage_fraction=0.05), params


def test_failing_plan_gets_numbers_and_checked_suggestions(
        strict: tuple[Plan, Handpiece, TissueParams]) -> None:
    plan, handpiece, params = strict
    screen = screen_plan(plan, handpiece, params)
    assert screen.passes[0].ok and not screen.passes[1].ok and not screen.ok
    reasons = screen.rejection_reasons()
    assert reasons[0].startswith("pass 2: ")  # numbered from 1 across the session
    damaged = distinct_digits(100 * screen.passes[1].damaged_reservoir_fraction, 5.0, 3)[0]
    assert f"{damaged} %" in reasons[0]
    assert "the handpiece allows 5 %" in reasons[0]
    assert any(r.startswith("fewer passes: the first 1 of 2") for r in reasons)
    wait = [r for r in reasons if r.startswith("or wait ")]
    assert len(wait) == 1
    wait_s = float(wait[0].split()[2])
    assert screen_plan(plan, handpiece, params, inter_pass_gap_s=wait_s).ok
    assert not screen_plan(plan, handpiece, params, inter_pass_gap_s=wait_s - 0.5).ok
    assert any("thermal-spread order" in r for r in reasons)
    density = [r for r in reasons if "density" in r]
    assert len(density) == 1 and "evaluated: within the limit" in density[0]


def test_plan_within_limit_has_no_reasons(handpiece: Handpiece) -> None:
    plan = small_plan(handpiece, passes=1)
    params = replace(screen_plan(plan, handpiece).params, damage_omega=1e9)
    screen = screen_plan(plan, handpiece, params)
    assert screen.ok and screen.rejection_reasons() == []


@pytest.mark.parametrize("name", ["spot120", "spot300"])
def test_residual_heat_agrees_with_the_calibrated_coagulation_rim(name: str) -> None:
    """The handpiece's residual heat fraction is consistent with its coagulation rim: a lone
    spot at any calibrated energy damages no tissue outside its rim, but 1.5x that heat
    would (the rim would have to be wider than calibrated at some energy)."""
    hp = get_handpiece(name)

    def worst_outside_rim(fraction: float) -> float:
        worst = 0.0
        for energy_mj, depth_um, coag_um in zip(hp.energy_mj, hp.depth_um, hp.coag_um,
                                                strict=True):
            radius_um = hp.spot_diameter_um / 2.0 + coag_um
            window_um = max(150.0, 2.0 * radius_um)
            params = TissueParams(thickness_um=depth_um, window_um=window_um,
                                  far_grid_um=max(400.0, 1.2 * window_um))
            res = simulate_pass(np.zeros(1), np.zeros(1), np.zeros(1),
                                np.array([fraction * energy_mj * 1000.0]),
                                np.array([radius_um]), params)
            worst = max(worst, float(res.damage[res.reservoir].max()))
        return worst

    assert worst_outside_rim(hp.residual_heat_fraction) < 1.0
    assert worst_outside_rim(1.5 * hp.residual_heat_fraction) >= 1.0


def test_injury_map_renders(handpiece: Handpiece, tmp_path: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from controller.thermal_plot import draw_injury_map

    result = screen_plan(small_plan(handpiece, passes=1), handpiece).passes[0].result
    fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
    draw_injury_map(ax, result, "pass 1")
    fig.colorbar(ax.images[-1], ax=ax, label="peak rise (K)")
    path = tmp_path / "injury.png"
    fig.savefig(path)
    plt.close(fig)
    pixels = matplotlib.image.imread(path)[..., :3]
    assert ax.get_xlabel() == "x (mm)"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # an image, not a blank frame
    xmin, xmax, _, _ = ax.images[-1].get_extent()
    assert xmax - xmin == pytest.approx((result.extent_um[1] - result.extent_um[0]) * 1e-3)


def test_a_variant_is_screened_until_its_first_failing_pass(
        strict: tuple[Plan, Handpiece, TissueParams]) -> None:
    _, handpiece, params = strict
    plan = small_plan(handpiece, passes=3)
    full = screen_plan(plan, handpiece, params)
    fails = [p.ok for p in full.passes].index(False)
    assert fails < 2  # a later pass exists that the early stop skips
    early = screen_plan(plan, handpiece, params, until_failure=True)
    assert len(early.passes) == fails + 1 and not early.ok and not full.ok
    for a, b in zip(early.passes, full.passes, strict=False):
        assert a.ok == b.ok
        np.testing.assert_allclose(a.result.damage, b.result.damage, rtol=1e-12)  # threads
    loose = replace(params, damage_omega=1e9)
    assert len(screen_plan(plan, handpiece, loose, until_failure=True).passes) == 3


def test_thermal_spread_that_fires_the_same_way_is_not_screened(
        strict: tuple[Plan, Handpiece, TissueParams]) -> None:
    from controller.settings import ScanOrder

    _, handpiece, params = strict
    plan = build_plan(replace(small_plan(handpiece).settings, order=ScanOrder(kind="interlaced"),
                              density=DensitySpec(coverage_pct=25.0),
                              pattern=Pattern("square", width_mm=4.0)))
    spread = build_plan(replace(plan.settings, order=ScanOrder(kind="thermal-spread")))
    # 3x3 sub-grids at this pitch as well, and the neighbours far enough apart in time
    assert np.array_equal(spread.order, plan.order)
    assert np.array_equal(spread.fire_time_us, plan.fire_time_us)
    screen = screen_plan(plan, handpiece, params)
    assert not screen.ok
    assert "thermal-spread order fires this pattern in the same order and times here" in \
        screen.rejection_reasons()


def test_a_variant_gets_the_parameters_it_would_get_on_its_own(handpiece: Handpiece) -> None:
    from controller.thermal_screen import _rescreen

    plan = small_plan(handpiece, passes=1)
    sparser = build_plan(replace(plan.settings, density=DensitySpec(coverage_pct=4.0)))
    auto = screen_plan(plan, handpiece)
    assert auto.params_auto
    own = screen_plan(sparser, handpiece).params
    assert own.window_um > auto.params.window_um  # sized from the sparser pitch
    assert _rescreen(auto, sparser).params == own
    given = screen_plan(plan, handpiece, auto.params)
    assert not given.params_auto and _rescreen(given, sparser).params == auto.params
