"""``co2scan log export`` gives, per delivered spot, what was fired: where (mm on the skin, as
the host converted the plan to galvo LSB), how (set energy per pulse and per stack, stack,
pulse length), what the monitor measured and when the batch was recorded; checked against
the simulator's ground truth (audit: the CSV had only pass_index, index, measured_uj)."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.api import (
    DensitySpec,
    PassSettings,
    Pattern,
    TreatmentRecord,
    TreatmentSettings,
    get_handpiece,
    open_device,
    plan_for_device,
    treat,
)
from controller.cli import main
from controller.record import EXPORT_COLUMNS, EXPORT_UNITS
from drivers.protocol.messages import GALVO_FULL_SCALE_LSB
from tests.test_log_export import treat_two_passes

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def fired(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, Any, float]:
    """A two-pass session (id 1) on the in-process simulator: the record, the simulator's
    ground truth with each row's pass_index mapped to the record's, the plan and the field
    size (µm)."""
    path = tmp_path_factory.mktemp("export") / "t.db"
    plan, truth, field_um = treat_two_passes(path, Pattern("circle", 3.0), 6.0, 250.0, 7,
                                             "Dr Truth", "GT-1")
    with TreatmentRecord(path, read_only=True) as record:
        head = next(record.entries(1, "session"))
        device_pass = {p.get("device_pass_index", p["pass"]): p["pass"]
                       for p in head.body["passes"]}
    truth["pass_index"] = [device_pass[int(k)] for k in truth["pass_index"]]
    return path, truth, plan, field_um


def export(record: Path, fmt: str, out: Path) -> Path:
    assert main(["log", "export", "1", "--record", str(record), "--format", fmt, "-o",
                 str(out)]) == 0
    return out


def check_against_truth(rows: Sequence[Mapping[str, Any]], truth: np.ndarray, plan: Any,
                        field_um: float) -> None:
    """Every fired spot exactly once; positions within half an LSB of the truth and of the
    planned µm; set energies, stack, pulse length and measured energies equal."""
    half_lsb_mm = field_um / GALVO_FULL_SCALE_LSB / 2 / 1000
    got = {(int(r["pass_index"]), int(r["spot_index"])): r for r in rows}
    assert len(got) == len(rows) == len(truth)
    for t in truth:
        r = got[(int(t["pass_index"]), int(t["index"]))]
        assert int(r["pass"]) == int(t["pass_index"]) + 1
        for axis in ("x", "y"):
            truth_mm = (int(t[f"{axis}_lsb"]) - 0x8000) * field_um / GALVO_FULL_SCALE_LSB / 1000
            assert abs(float(r[f"{axis}_mm"]) - truth_mm) < half_lsb_mm / 100
        assert int(r["set_pulse_uj"]) == int(t["energy_uj"])
        assert int(r["stack"]) == int(t["stack"])
        assert int(r["set_stack_uj"]) == int(t["energy_uj"]) * int(t["stack"])
        assert int(r["pulse_us"]) == int(t["pulse_us"])
        assert int(r["measured_stack_uj"]) == int(t["measured_uj"])
        assert r["reading"] == "ok"
        assert str(r["batch_recorded_utc"]).endswith("Z")
    # the planned positions, as the host converted them (rint to the LSB): within half an LSB
    for k in (0, 1):
        planned = plan.pass_slice(k)
        count = planned.stop - planned.start
        xs = np.array([float(got[(k, i)]["x_mm"]) for i in range(count)])
        ys = np.array([float(got[(k, i)]["y_mm"]) for i in range(count)])
        assert np.abs(xs - plan.x_um[planned] / 1000).max() <= half_lsb_mm + 1e-6
        assert np.abs(ys - plan.y_um[planned] / 1000).max() <= half_lsb_mm + 1e-6


def test_csv_export_holds_every_fired_spot_as_the_simulator_fired_it(
        fired: tuple[Path, np.ndarray, Any, float], tmp_path: Path) -> None:
    record, truth, plan, field_um = fired
    with open(export(record, "csv", tmp_path / "s.csv"), newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == EXPORT_COLUMNS
        rows = list(reader)
    assert {r["session"] for r in rows} == {"1"}
    assert {r["pass"] for r in rows} == {"1", "2"}
    check_against_truth(rows, truth, plan, field_um)


def test_json_export_holds_the_same_spots_the_passes_the_units_and_the_entries(
        fired: tuple[Path, np.ndarray, Any, float], tmp_path: Path) -> None:
    record, truth, plan, field_um = fired
    data = json.loads(export(record, "json", tmp_path / "s.json").read_text(encoding="utf-8"))
    assert data["session"] == 1 and data["units"] == EXPORT_UNITS
    assert [(p["pass"], p["pass_index"]) for p in data["passes"]] == [(1, 0), (2, 1)]
    assert [p["delivered_spots"] for p in data["passes"]] == \
        [p["planned_spots"] for p in data["passes"]] == \
        [int((truth["pass_index"] == k).sum()) for k in (0, 1)]
    assert data["entries"][0]["kind"] == "session"
    assert data["entries"][0]["body"]["operator"] == "Dr Truth"
    assert all(tuple(spot) == EXPORT_COLUMNS for spot in data["delivered_spots"])
    check_against_truth(data["delivered_spots"], truth, plan, field_um)


def test_a_lost_reading_is_exported_as_lost(tmp_path: Path) -> None:
    """A spot the device confirmed but whose reading was lost (reconciled after a lost link)
    is recorded with measured_uj -1: exported as such, and named lost."""
    path = tmp_path / "lost.db"
    with open_device("sim://?footswitch=down&pre_emission_ms=20&seed=3") as dev:
        settings = TreatmentSettings(get_handpiece("spot120"), Pattern("square", 2.0),
                                     DensitySpec(coverage_pct=5.0), depth_um=200.0,
                                     passes=PassSettings(count=1))
        plan = plan_for_device(settings, dev.info.limits)
        assert treat(dev, [plan], path, operator="o", patient_ref="p").status == "completed"
    with TreatmentRecord(path) as record:
        record.delivered(1, 0, np.array([0]), np.array([-1]))  # as a reconciliation writes it
        rows = record.delivered_spot_rows(1)
    lost = [r for r in rows if r["measured_stack_uj"] == -1]
    assert len(lost) == 1 and lost[0]["reading"] == "lost" and lost[0]["spot_index"] == 0


def test_readme_documents_the_export_columns() -> None:
    readme = README.read_text(encoding="utf-8")
    for column in EXPORT_COLUMNS:
        assert f"`{column}`" in readme, column
    assert "`pass` counts from 1" in readme and "-1" in readme
