"""Passes (and the plans they group into) are numbered from 1 wherever people read them: the
plan table and its plan lines, CLI progress and results, script errors, envelope and device
findings, the record's problems. The record's own fields (``pass_index``, ``pass``) and the
JSON stay indices from 0."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from controller.api import plan_for_device, treat
from controller.cli import main
from controller.record import TreatmentRecord
from controller.scanpath import build_plan
from controller.script import ScriptError, parse_script
from controller.settings import DensitySpec, PassSettings, Pattern, TreatmentSettings
from controller.validation import ClinicalEnvelope, PlanRejected, validate_plans
from drivers import open_device
from tests.handpieces import unscreened
from tests.test_cli_run import FAST, SCRIPT

DEEP = str(Path(__file__).resolve().parents[1] / "examples" / "deep_scar.toml")


def test_the_plan_table_and_its_plan_lines_number_passes_from_1(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", DEEP]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines if line[:1].isdigit()] == ["1", "2", "3"]
    assert any(line.startswith("plan 1 = passes 1-2 (seed 0") for line in lines)
    assert any(line.startswith("plan 2 = pass 3 (seed 7") for line in lines)


def test_run_progress_and_result_number_passes_from_1(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    script = tmp_path / "s.toml"
    script.write_text(SCRIPT, encoding="utf-8")
    db = tmp_path / "t.db"
    assert main(["run", str(script), "--device", FAST, "--yes", "--record", str(db)]) == 0
    out, err = capsys.readouterr()
    assert "pass 1 of 2: " in err and "pass 2 of 2: " in err  # progress, not a terminal
    assert "pass 0" not in err
    with TreatmentRecord(db) as record:  # the record keeps its indices
        counts = [record.delivered_summary(1, index)[0] for index in (0, 1)]
    assert f"delivered pass 1: {counts[0]}, pass 2: {counts[1]}" in " ".join(out.split())


def test_a_script_error_names_the_pass_from_1() -> None:
    text = SCRIPT.replace("size_mm = 4.0\ndensity_percent = 5.0\ndepth_um = 200.0\n[[pass]]",
                          "size_mm = 4.0\ndensity_percent = 5.0\ndepth_um = 200.0\nstack = 3\n"
                          "[[pass]]")
    with pytest.raises(ScriptError) as caught:
        parse_script(text, Path("t.toml"))
    assert str(caught.value).startswith("t.toml:9: pass 1: stack = 3 rejected")


def test_findings_name_the_pass_of_the_session_from_1() -> None:
    """A borderline envelope warning, and a device limit broken by the second plan's pass
    (it was named by its index within its plan: pass[0])."""
    hp = unscreened()
    shallow = TreatmentSettings(hp, Pattern("square", 10.0), DensitySpec(coverage_pct=33.0),
                                depth_um=100.0)  # about 33 %: above 90 % of the 35 % allowed
    deep = replace(shallow, density=DensitySpec(coverage_pct=5.0), depth_um=500.0)
    plans = [build_plan(shallow), build_plan(deep)]
    envelope = ClinicalEnvelope.load()
    warnings = validate_plans(plans, envelope)
    assert [w.field for w in warnings] == ["pass 1: coverage_percent"]
    coverage_pct = plans[0].metrics.passes[0].coverage_pct
    assert 0.9 * 35 < coverage_pct < 35
    assert str(warnings[0]).startswith(f"pass 1: coverage_percent = {coverage_pct:.2f} %")
    with open_device("sim://") as dev:
        deep_uj = int(plans[1].energy_uj.max())
        limits = replace(dev.info.limits, energy_max_uj=deep_uj - 1)
    with pytest.raises(PlanRejected) as caught:
        validate_plans(plans, envelope, limits)
    fields = [v.field for v in caught.value.violations]
    assert "pass 2: energy_uj" in fields and all(f.startswith("pass 2: ") for f in fields)


def test_the_records_problems_name_the_pass_from_1_and_its_index(tmp_path: Path) -> None:
    settings = TreatmentSettings(unscreened(), Pattern("square", 3.0),
                                 DensitySpec(coverage_pct=5.0), depth_um=200.0,
                                 passes=PassSettings(count=2))
    with open_device("sim://?footswitch=down&pre_emission_ms=20") as dev:
        treat(dev, [plan_for_device(settings, dev.info.limits)], tmp_path / "t.db",
              operator="t", patient_ref="p")
    with sqlite3.connect(tmp_path / "t.db") as db:
        db.execute("UPDATE pass_spots SET checksum = checksum + 1 WHERE pass_index = 1")
    db.close()
    with TreatmentRecord(tmp_path / "t.db") as record:
        assert record.verify().problems == [
            "stored spots of session 1 pass 2 (pass_index 1) do not match the checksum the "
            "record names"]
