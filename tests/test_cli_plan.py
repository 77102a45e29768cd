"""``co2scan plan``, ``preview`` and ``sim``: output, exit codes, help examples, colour."""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from controller.cli import build_parser, main
from controller.commands.plan import EXIT_REJECTED, WIDTH, load_and_plan, paint
from controller.scanpath import build_plan
from controller.script import load_script
from controller.settings import PassSettings
from controller.timing import GalvoTiming
from controller.validation import ClinicalEnvelope, PlanRejected, validate_plans
from sim_hw.config import SimConfig
from sim_hw.tcp_server import serve_tcp

EXAMPLES = Path(__file__).parent.parent / "examples"
DEEP = str(EXAMPLES / "deep_scar.toml")


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return str(path)


def test_the_cooling_wait_is_shown_and_screened(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    demo = Path(__file__).parent.parent / "controller" / "data" / "demo.toml"
    assert main(["plan", str(demo)]) == 0  # 5 s apart: accepted
    assert "passes 5 s apart (pass_wait_s)" in capsys.readouterr().out
    back_to_back = demo.read_text().replace("pass_wait_s = 5", "pass_wait_s = 0")
    assert main(["plan", write(tmp_path, back_to_back)]) == 3
    captured = capsys.readouterr()
    assert "passes back to back" in captured.out and "pass_wait_s = " in captured.err


def test_plan_json_matches_build_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", DEEP, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    script = load_script(DEEP)
    groups = script.groups()
    assert [d["passes"] for d in doc["plans"]] == [[p.index for p in g] for g in groups]
    for group, plan_doc in zip(groups, doc["plans"], strict=True):
        settings = replace(group[0].settings, passes=PassSettings(count=len(group)))
        plan = build_plan(settings, GalvoTiming(), group[0].seed)
        assert plan_doc["metrics"] == json.loads(json.dumps(asdict(plan.metrics)))
        assert plan_doc["checksum"] == plan.checksum
    assert doc["accepted"] and doc["violations"] == []
    assert doc["pass_wait_s"] == script.pass_wait_s == 0.0
    assert doc["total_spots"] == sum(p["spot_count"] for p in doc["passes"])
    assert [p["stack"] for p in doc["passes"]] == [[2, 2], [2, 2], [1, 1]]


@pytest.mark.parametrize("output", [[], ["--json"]], ids=["text", "json"])
def test_plan_computes_the_session_coverage_once(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 output: list[str]) -> None:
    """co2scan plan of several plans computed what they cover together twice: for the
    envelope's check (validate_plans) and again for its summary line (or JSON). It is
    computed once and both use it."""
    import controller.commands.plan as plan_command
    import controller.validation as validation

    computed: list[tuple[float, int]] = []
    real = validation.session_coverage

    def counted(plans: Any) -> tuple[float, int]:
        computed.append(real(plans))
        return (12.25, 1)  # what both must show: the one value computed

    monkeypatch.setattr(validation, "session_coverage", counted)
    monkeypatch.setattr(plan_command, "session_coverage", counted)
    assert main(["plan", DEEP, "--quiet", *output]) == 0
    out = capsys.readouterr().out
    assert len(computed) == 1 and computed[0][1] == 0  # deep_scar: 2 plans, on plan 1's area
    if output:
        assert json.loads(out)["session_coverage"] == {"coverage_pct": 12.25,
                                                       "reservoir_pct": 87.75, "on_plan": 1}
    else:
        assert "all plans together on plan 2's area: coverage 12.2 %, reservoir 87.8 %" in out


def test_validate_plans_checks_the_session_coverage_it_is_given() -> None:
    """A caller that computed the plans' session coverage passes it: the envelope's
    combined limit is checked on that value, not a second computation."""
    _, plans = load_and_plan(DEEP)
    envelope = ClinicalEnvelope.load()
    assert validate_plans(plans, envelope, thermal=[]) == []
    with pytest.raises(PlanRejected) as rejected:
        validate_plans(plans, envelope, thermal=[], coverage=(61.5, 1))
    [finding] = rejected.value.violations
    assert (finding.field, finding.value) == (
        "combined_coverage_percent of plans 1-2 on plan 2's area", 61.5)


def test_plan_table_has_a_row_per_pass_within_100_columns(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", DEEP]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= WIDTH
    lines = [line for line in out.splitlines() if line[:1].isdigit()]
    found = [re.search(r" (ok \d+ K|FAIL \S+ %)$", line) for line in lines]
    thermal = [m for m in found if m is not None]
    assert len(thermal) == len(found)  # the thermal check column, last
    rows = [line[:m.start()].split() for line, m in zip(lines, thermal, strict=True)]
    assert [r[0] for r in rows] == ["1", "2", "3"]  # passes numbered from 1
    assert [r[-2] for r in rows] == ["1000", "1000", "120"]  # the depth column
    assert "\033[" not in out  # no colour when not on a terminal
    assert "plan accepted" in out


def test_the_fluence_column_spans_a_feathered_pass_like_its_energy(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A feathered edge lowers the energy of its spots, and so their fluence (per spot)."""
    assert main(["plan", str(EXAMPLES / "surface_texture.toml"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["passes"][0]
    plan = load_script(EXAMPLES / "surface_texture.toml").plans(lambda s: GalvoTiming())[0]
    dose_j = plan.energy_uj * plan.stack * 1e-6
    area_cm2 = plan.settings.handpiece.spot_area_um2 * 1e-8
    assert row["fluence_j_cm2"] == pytest.approx([dose_j.min() / area_cm2,
                                                  dose_j.max() / area_cm2])
    assert row["fluence_j_cm2"][0] < 0.9 * row["fluence_j_cm2"][1]  # a real span
    assert main(["plan", str(EXAMPLES / "surface_texture.toml")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("1 "))
    lo, hi = row["fluence_j_cm2"]
    assert f" {lo:.0f}-{hi:.0f} " in line


def test_a_long_pattern_text_is_cut_to_fit(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    vertices = ", ".join(f"[{x}, {y}]" for x, y in ((0, 0), (3, 0), (3, 3), (0, 3)))
    path = write(tmp_path, f'[[pass]]\npattern = "polygon"\nvertices_mm = [{vertices}]\n'
                           'rotation_deg = 12.5\ngrid = "hex"\norder = "thermal-spread"\n'
                           'depth_um = 1600\nfeather_mm = 0.5\nmin_step_um = 400\n'
                           'neighbour_um = 400\n')
    assert main(["plan", path]) == 0
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= WIDTH


def test_invalid_script_exits_3_with_the_reason_on_stderr(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[[pass]]\ndensity_percent = 90\n")
    assert main(["plan", path, "--json"]) == EXIT_REJECTED
    out, err = capsys.readouterr()
    assert out == "" and f"{path}:2: pass 1: density_percent = 90 rejected" in " ".join(
        err.split())
    assert max(len(line) for line in err.splitlines()) <= WIDTH


def test_a_plan_the_envelope_rejects_exits_3_and_still_prints(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[[pass]]\ndensity_percent = 40\n")
    assert main(["plan", path, "--json"]) == EXIT_REJECTED
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert not doc["accepted"] and "coverage_percent" in doc["violations"][0]
    assert "plan rejected" in err


def test_preview_writes_the_picture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.png"
    assert main(["preview", str(EXAMPLES / "rapid_recovery.toml"), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in capsys.readouterr().out


def test_preview_without_matplotlib_says_how_to_install_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["preview", DEEP, "-o", str(tmp_path / "x.png")]) == 1
    assert "co2scan[plot]" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def command_parsers(parser: argparse.ArgumentParser, name: str = "co2scan"
                    ) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                found += command_parsers(sub, f"{name} {sub_name}")
    return found


def test_every_command_has_an_example_in_its_help() -> None:
    parsers = command_parsers(build_parser())
    names = [name for name, _ in parsers]
    assert {"co2scan plan", "co2scan preview", "co2scan sim serve", "co2scan sim set"} <= set(
        names)
    for name, parser in parsers:
        text = parser.format_help()
        assert "example" in text and f"\n  {name}" in text, name


def test_sim_set_talks_to_a_running_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    with serve_tcp(SimConfig()) as served:
        closed = served.device.interlocks
        assert main(["sim", "set", "--control", str(served.control_port), "door=open"]) == 0
        assert capsys.readouterr().out.startswith("ok")
        assert served.device.interlocks != closed


def test_paint_colours_only_terminals(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert paint("x", "31", Tty()) == "\033[31mx\033[0m"
    assert paint("x", "31", io.StringIO()) == "x"
    monkeypatch.setenv("NO_COLOR", "1")
    assert paint("x", "31", Tty()) == "x"


def test_coverage_far_from_the_density_set_is_pointed_out_not_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """25 spots of 300 µm on a 5 mm square cover about 7 % for the 5 % asked: a note
    (audit)."""
    small = ('[handpiece]\nname = "spot300"\n[[pass]]\npattern = "square"\nsize_mm = 5\n'
             'density_percent = 5\ndepth_um = 300\norder = "raster"\n')
    assert main(["plan", "-q", write(tmp_path, small), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)["passes"]
    assert row["spot_count"] == 25 and row["coverage_pct"] > 1.1 * 5
    assert main(["plan", "-q", write(tmp_path, small)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (f"coverage: pass 1: coverage {row['coverage_pct']:.3g} % where the density set "
            f"gives 5 % ({100 * (row['coverage_pct'] / 5 - 1):+.1f} %): the pattern holds 25 "
            "whole lattice spots at pitch 1189 µm") in out
    assert "a pattern holds whole lattice spots only" in out and "plan accepted" in out
    assert main(["plan", "-q", write(tmp_path, small.replace("size_mm = 5", "size_mm = 20")),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["coverage_notes"] == []  # 20 mm: within 10 %
