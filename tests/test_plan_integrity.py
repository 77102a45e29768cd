"""Plans changed after planning, and spot sets too large for the thermal model, are refused
before anything is allocated, sent or fired."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controller.errors import SettingsError
from controller.record import TreatmentRecord
from controller.scanpath import Plan
from controller.session import TreatmentSession, plan_for_device
from controller.thermal import MAX_MAP_CELLS, MAX_SPAN_S, TissueParams, simulate_pass
from controller.validation import PlanRejected
from drivers import open_device
from tests.test_session import FAST, settings


def changed(plan: Plan, field: str) -> None:
    """Change one entry of a spot array in place, keeping its dtype."""
    values = getattr(plan, field)
    values[len(values) // 2] += 1


@pytest.mark.parametrize("field", Plan.CHECKSUM_FIELDS)
def test_a_plan_changed_after_planning_is_refused_and_nothing_fires(tmp_path: Path, field: str
                                                                     ) -> None:
    with open_device(f"sim://?{FAST}") as dev, TreatmentRecord(tmp_path / "t.db") as record:
        plan = plan_for_device(settings(passes=2), dev.info.limits)
        assert plan.intact
        changed(plan, field)
        assert not plan.intact
        with pytest.raises(PlanRejected, match="changed after it was planned"):
            TreatmentSession(dev, [plan], record, operator="t", patient_ref="p")
        assert len(dev.simulator.device.ground_truth) == 0


def spots(x_um: np.ndarray, t_s: np.ndarray) -> dict[str, np.ndarray]:
    n = len(x_um)
    return {"x_um": x_um, "y_um": np.zeros(n), "t_s": t_s, "heat_uj": np.full(n, 100.0),
            "lesion_radius_um": np.full(n, 70.0)}


def test_a_map_too_large_is_refused_before_it_is_allocated() -> None:
    p = TissueParams()
    side_um = np.sqrt(MAX_MAP_CELLS) * p.grid_um
    far_apart = np.array([0.0, 1.5 * side_um, 0.0, 1.5 * side_um])
    square = spots(far_apart, np.arange(4) * 1e-3)
    square["y_um"] = np.array([0.0, 0.0, 1.5 * side_um, 1.5 * side_um])
    with pytest.raises(SettingsError) as caught:
        simulate_pass(**square, params=p)
    assert caught.value.field == "x_um, y_um" and f"{MAX_MAP_CELLS:,} cells" in caught.value.allowed
    simulate_pass(**spots(np.array([0.0, 0.5 * side_um]), np.array([0.0, 1e-3])), params=p)


def test_a_time_span_too_long_is_refused() -> None:
    with pytest.raises(SettingsError) as caught:
        simulate_pass(**spots(np.array([0.0, 200.0]), np.array([0.0, 1.01 * MAX_SPAN_S])),
                      params=TissueParams())
    assert caught.value.field == "t_s" and f"{MAX_SPAN_S:g} s" in caught.value.allowed


@pytest.mark.parametrize("plans", [[], ["plan"], [None]])
def test_a_session_needs_plans(tmp_path: Path, plans: list) -> None:
    with open_device(f"sim://?{FAST}") as dev, TreatmentRecord(tmp_path / "t.db") as record:
        with pytest.raises(SettingsError) as caught:
            TreatmentSession(dev, plans, record, operator="t", patient_ref="p")
        assert caught.value.field == "plans" and "at least one Plan" in caught.value.allowed
        assert record.sessions() == [] and len(dev.simulator.device.ground_truth) == 0


@pytest.mark.parametrize("wait_s", [float("nan"), -1.0, float("inf")])
def test_a_session_needs_a_finite_start_wait(tmp_path: Path, wait_s: float) -> None:
    """A NaN wait never ended (every comparison with it is false)."""
    with open_device(f"sim://?{FAST}") as dev, TreatmentRecord(tmp_path / "t.db") as record:
        plan = plan_for_device(settings(passes=1), dev.info.limits)
        with pytest.raises(SettingsError) as caught:
            TreatmentSession(dev, [plan], record, operator="t", patient_ref="p",
                             start_wait_s=wait_s)
        assert caught.value.field == "start_wait_s"
