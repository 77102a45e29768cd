"""suggest_fix: the wait, heat scale and reorderings it reports are checked by the model."""

from __future__ import annotations

import numpy as np
import pytest

from controller.errors import SettingsError
from controller.thermal import TissueParams, simulate_pass, suggest_fix

PITCH_UM = 250.0
N_SIDE = 5


def spots() -> tuple[np.ndarray, ...]:
    col, row = np.meshgrid(np.arange(N_SIDE), np.arange(N_SIDE))
    x, y = col.ravel() * PITCH_UM, row.ravel() * PITCH_UM
    n = len(x)
    return x, y, np.arange(n) / 300.0, np.full(n, 2500.0), np.full(n, 70.0)


def two_passes(wait_s: float, params: TissueParams) -> float:
    x, y, t, heat, radius = spots()
    t2 = np.concatenate([t, t + t.max() + wait_s])
    twice = [np.tile(a, 2) for a in (x, y, heat, radius)]
    return simulate_pass(twice[0], twice[1], t2, twice[2], twice[3],
                         params).peak_reservoir_rise_k


@pytest.fixture(scope="module")
def params() -> TissueParams:
    """Threshold between the one-pass and the back-to-back two-pass peaks."""
    x, y, t, heat, radius = spots()
    one = simulate_pass(x, y, t, heat, radius, TissueParams()).peak_reservoir_rise_k
    two = two_passes(0.0, TissueParams())
    assert two > 1.2 * one
    return TissueParams(damage_rise_k=0.5 * (one + two))


def test_wait_found_is_the_shortest_that_passes(params: TissueParams) -> None:
    fix = suggest_fix(*spots(), params, max_damaged_fraction=0.0, passes=2,
                      wait_tolerance_s=0.25)
    assert not fix.passes_as_is and fix.wait_s is not None
    assert two_passes(fix.wait_s, params) < params.damage_rise_k
    assert two_passes(fix.wait_s - 0.25, params) >= params.damage_rise_k
    assert f"wait {fix.wait_s:.1f} s" in fix.message


def test_heat_scale_is_the_largest_that_passes(params: TissueParams) -> None:
    x, y, t, heat, radius = spots()
    fix = suggest_fix(x, y, t, heat, radius, params, max_damaged_fraction=0.01, passes=2)
    twice = [np.tile(a, 2) for a in (x, y, heat, radius)]
    t2 = np.concatenate([t, t + t.max()])

    def fraction(scale: float) -> float:
        return simulate_pass(twice[0], twice[1], t2, scale * twice[2], twice[3],
                             params).damaged_reservoir_fraction

    assert fraction(fix.heat_scale) <= 0.01 < fraction(1.01 * fix.heat_scale)


def test_orderings_are_tried_and_reported(params: TissueParams) -> None:
    n = N_SIDE * N_SIDE
    orders = {"reversed": np.arange(n)[::-1], "shuffled": np.random.default_rng(1).permutation(n)}
    fix = suggest_fix(*spots(), params, max_damaged_fraction=0.0, passes=2, orderings=orders)
    names = [t.name for t in fix.trials]
    assert "order reversed" in names and "order shuffled" in names
    assert "tried order shuffled" in fix.message


def test_single_pass_failing_gets_no_wait() -> None:
    x, y, t, heat, radius = spots()
    low = TissueParams(damage_rise_k=1.0)
    fix = suggest_fix(x, y, t, heat, radius, low, max_damaged_fraction=0.0, passes=3)
    assert fix.wait_s is None and "no wait between passes can help" in fix.message
    assert fix.heat_scale < 1.0


def test_plan_within_limit_passes_as_is() -> None:
    fix = suggest_fix(*spots(), TissueParams(damage_rise_k=150.0), max_damaged_fraction=0.0)
    assert fix.passes_as_is and fix.heat_scale > 1.0 and len(fix.trials) == 1


def test_bad_ordering_rejected(params: TissueParams) -> None:
    with pytest.raises(SettingsError) as info:
        suggest_fix(*spots(), params, max_damaged_fraction=0.0, passes=2,
                    orderings={"dup": np.zeros(N_SIDE * N_SIDE, dtype=np.intp)})
    assert info.value.field == "orderings['dup']"
