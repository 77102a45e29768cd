"""A campaign of random planner plans screened by the thermal model and checked against the
exact superposition (``tests.test_thermal.exact_at``) on sampled reservoir cells.

``make test`` screens CI_PLANS plans; ``make fuzz`` (``CO2SCAN_FUZZ=long``) LONG_PLANS;
``CO2SCAN_FUZZ_PLANS=N`` overrides both. Plan k draws from its own seed, so
``CO2SCAN_FUZZ_PLAN=k`` screens plan k alone (as the campaign names it in its messages).
What must hold, cell by cell: the damage integral at least the exact one wherever that is
0.01 or more (so a screen never reads damaged tissue as spared), and the peak at least
PEAK_FLOOR of the exact one (it reads low beyond the outermost spots of some slow plans:
docs/thermal_model.md, Limits). The campaign prints its count, its smallest ratios and where
they were read.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np

from controller.errors import SettingsError
from controller.handpiece import get_handpiece
from controller.scanpath import Plan, build_plan
from controller.settings import DensitySpec, PassSettings, Pattern, ScanOrder, TreatmentSettings
from controller.thermal_screen import screen_plan, spot_heat
from tests.test_thermal import cell_centres, exact_at

LONG = os.environ.get("CO2SCAN_FUZZ") == "long"
CI_PLANS, LONG_PLANS = 3, 60
PLANS = int(os.environ.get("CO2SCAN_FUZZ_PLANS", LONG_PLANS if LONG else CI_PLANS))
ONLY = os.environ.get("CO2SCAN_FUZZ_PLAN")
SEED = 2026_11_26
#: Cells sampled per plan: near the damage threshold, the hottest, and any.
NEAR_THRESHOLD, HOTTEST, ANY = 20, 4, 6
PEAK_FLOOR = 0.75
SHAPES: tuple[Literal["square", "circle", "hexagon"], ...] = ("square", "circle", "hexagon")
ORDERS: tuple[Literal["raster", "random", "thermal-spread", "interlaced"], ...] = (
    "raster", "random", "thermal-spread", "interlaced")


def random_plan(rng: np.random.Generator) -> tuple[Plan, float, str] | None:
    """A small plan (2 to 6 mm, 1 to 4 passes) of random settings, its pass gap (s) and what
    it is; None when the planner refuses the settings. Gaps of 6 and 12 s reach past the
    windows' lookahead (8 far-grid blocks), where a later pass's heat is left to the snapshots."""
    hp = get_handpiece(str(rng.choice(["spot120", "spot300"])))
    shape, width_mm = SHAPES[int(rng.integers(len(SHAPES)))], rng.uniform(2.0, 6.0)
    coverage, depth_um = rng.uniform(5.0, 25.0), rng.uniform(150.0, 700.0)
    passes, seed = int(rng.integers(1, 5)), int(rng.integers(0, 1000))
    order = ORDERS[int(rng.integers(len(ORDERS)))]
    gap_s = float(rng.choice([0.0, 0.0, 1.0, 3.0, 6.0, 12.0]))
    what = (f"{hp.name} {shape} {width_mm:.2f} mm, {coverage:.1f} %, {depth_um:.0f} um, "
            f"{order}, {passes} passes {gap_s:g} s apart, seed {seed}")
    try:
        plan = build_plan(TreatmentSettings(
            handpiece=hp, pattern=Pattern(shape, width_mm=float(width_mm)),
            density=DensitySpec(coverage_pct=float(coverage)), depth_um=float(depth_um),
            passes=PassSettings(count=passes), order=ScanOrder(kind=order)), seed=seed)
    except SettingsError:
        return None
    return plan, gap_s, what


def test_fuzz_thermal_screen_on_random_plans_against_the_exact_superposition() -> None:
    omega_min, peak_min, cells = np.inf, np.inf, 0
    omega_at = peak_at = ""
    numbers = [int(ONLY)] if ONLY is not None else range(PLANS)
    for number in numbers:
        rng = np.random.default_rng((SEED, number))
        drawn = None
        while drawn is None:
            drawn = random_plan(rng)
        plan, gap_s, what = drawn
        what = f"plan {number}: {what}"
        hp = plan.settings.handpiece
        screen = screen_plan(plan, hp, inter_pass_gap_s=gap_s)
        res, p = screen.passes[-1].result, screen.params
        spots = spot_heat(plan, hp, gap_s)
        xc, yc = cell_centres(res, p)
        rows, cols = np.nonzero(res.reservoir)
        omega, peak = res.damage[rows, cols], res.peak_rise_k[rows, cols]
        near = np.nonzero((omega > 0.05) & (omega < 20.0))[0]
        pick = np.concatenate([
            rng.choice(near, min(NEAR_THRESHOLD, len(near)), replace=False),
            np.argsort(peak)[-HOTTEST:], rng.choice(len(rows), ANY)]).astype(int)
        for k in pick:
            exact_peak, exact_omega = exact_at(spots.x_um, spots.y_um, spots.t_s,
                                               spots.heat_uj, spots.lesion_radius_um, p,
                                               float(xc[cols[k]]), float(yc[rows[k]]))
            where = f"{what}; cell ({xc[cols[k]]:.0f}, {yc[rows[k]]:.0f}) um"
            if exact_omega >= 0.01:
                assert omega[k] >= exact_omega, (
                    f"damage {omega[k]:.4g} against the exact {exact_omega:.4g}: {where}")
                if omega[k] / exact_omega < omega_min:
                    omega_min = omega[k] / exact_omega
                    omega_at = f"{where}, exact {exact_omega:.3g}"
            assert peak[k] >= PEAK_FLOOR * exact_peak, (
                f"peak {peak[k]:.3g} K against the exact {exact_peak:.3g} K: {where}")
            if peak[k] / exact_peak < peak_min:
                peak_min, peak_at = peak[k] / exact_peak, f"{where}, exact {exact_peak:.3g} K"
            cells += 1
    print(f"\nfuzz thermal screen vs exact: {len(numbers)} plans, {cells} cells; damage at least "
          f"{omega_min:.3f}x ({omega_at}), peak at least {peak_min:.3f}x ({peak_at}) the exact "
          "superposition")
