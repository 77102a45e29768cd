"""co2scan run and demo off a terminal: the thermal screen's plain lines name the spots
screened (run passes its plans), the delivery's plain lines follow, and -q/--quiet silences
both, not the outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli import main
from controller.commands.plan import load_and_plan
from tests.test_cli_run import FAST, SCRIPT


@pytest.mark.parametrize("command", ["run", "demo"])
def test_run_and_demo_log_the_screen_and_the_delivery_unless_quiet(
        tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "s.toml"
    script.write_text(SCRIPT, encoding="utf-8")
    total = sum(m.spot_count for plan in load_and_plan(str(script))[1]
                for m in plan.metrics.passes)
    for k, quiet in enumerate(([], ["--quiet"], ["-q"])):
        args = ([command, str(script), "--device", FAST, "--yes", "--record",
                 str(tmp_path / f"t{k}.db")] if command == "run" else
                [command, "--script", str(script), "--device", FAST, "--out",
                 str(tmp_path / f"out{k}")])
        assert main(args + quiet) == 0
        stdout, err = capsys.readouterr()
        assert "completed" in stdout
        screen = f"thermal screen: plan 1, pass 1 of 2 (model run 1, 0/{total} spots, "
        if quiet:
            assert "thermal screen:" not in err and "pass 1 of 2:" not in err, err
        else:
            assert err.startswith(screen), err
            assert "pass 1 of 2: " in err and "pass 2 of 2: " in err


def test_report_logs_its_steps_unless_quiet(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A 100k-spot session's report takes about 20 s, most of it one model run: it was
    silent, then said only that the model ran."""
    script, db = tmp_path / "s.toml", tmp_path / "t.db"
    script.write_text(SCRIPT, encoding="utf-8")
    assert main(["run", str(script), "--device", FAST, "--yes", "-q", "--record", str(db)]) == 0
    capsys.readouterr()
    spots = sum(m.spot_count for plan in load_and_plan(str(script))[1]
                for m in plan.metrics.passes)
    for k, quiet in enumerate(([], ["-q"], ["--quiet"])):
        png = tmp_path / f"r{k}.png"
        assert main(["report", "1", "--record", str(db), "-o", str(png), *quiet]) == 0
        out, err = capsys.readouterr()
        assert out == f"wrote {png}\n"
        if quiet:
            assert err == ""
            continue
        steps = [f"verifying {db}", "reading session 1",
                 f"thermal model of session 1, delivered heat of {spots} spots",
                 f"drawing {png}", "done"]
        lines = err.splitlines()
        assert [line.rsplit(" (", 1)[0] for line in lines] == [f"report: {s}" for s in steps]
        assert all(line.endswith(" s)") for line in lines), err
