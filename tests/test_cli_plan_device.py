"""``co2scan plan --device URL`` (and ``preview``) plan for the device's limits exactly as
``co2scan run`` does, reading the device only; without it the output says the field and
timing are the defaults (audit helper-49: a 20 mm square passed plan and run refused it)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

import drivers
from controller.cli import main
from controller.commands import plan as plan_command
from controller.script import load_script
from controller.session import timing_for
from controller.validation import check_thermal
from drivers import Device, open_device
from drivers.link import Link
from drivers.protocol.messages import State

SIM = "sim://?footswitch=down"
#: A 20 mm square on spot120: within the default ±10 mm field, beyond the simulator's usable
#: 9687 µm from the centre.
WIDE = """operator = "tech"
patient_ref = "T-1"
[[pass]]
pattern = "square"
size_mm = 20
density_percent = 10
depth_um = 200
order = "interlaced"
"""
#: Two 6 mm thermal-spread passes: the simulator's power limit fires them at 943 Hz, not the
#: default 1000 Hz, and the screen's figures follow the rate.
SLOWER = """operator = "tech"
patient_ref = "T-1"
pass_wait_s = 0.5
[[pass]]
pattern = "square"
size_mm = 6.0
density_percent = 6.0
depth_um = 250.0
order = "thermal-spread"
[[pass]]
pattern = "square"
size_mm = 6.0
density_percent = 6.0
depth_um = 250.0
order = "thermal-spread"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return str(path)


def test_what_run_refuses_for_the_device_plan_refuses_with_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = write(tmp_path, WIDE)
    assert main(["plan", "-q", script]) == 0  # the default field holds it, and says so
    out = " ".join(capsys.readouterr().out.split())
    assert "planned for the default galvo field (±10 mm) and timing (up to 1000 spots/s)" in out
    assert "--device URL plans for its limits" in out
    assert main(["plan", "-q", script, "--device", SIM]) == plan_command.EXIT_REJECTED
    out, err = capsys.readouterr()
    assert "planned for device SIM-" in out and "default galvo" not in out
    refusal = "pattern reach from centre (µm) = 9753 µm; device field allows at most 9687 µm"
    assert refusal in err
    monkeypatch.chdir(tmp_path)
    assert main(["run", "-q", script, "--device", SIM, "--yes"]) == 3  # run refuses the same
    assert refusal in capsys.readouterr().err


def test_plan_with_a_device_is_the_plan_run_makes(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, SLOWER)
    assert main(["plan", "-q", path, "--device", SIM, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    with open_device(SIM) as device:
        limits = device.info.limits
    script = load_script(path)
    plans = script.plans(lambda s: timing_for(limits, s))  # as co2scan run plans it
    assert [p["checksum"] for p in doc["plans"]] == [p.checksum for p in plans]
    assert [p["timing"] for p in doc["plans"]] == [asdict(p.timing) for p in plans]
    assert doc["plans"][0]["timing"]["max_spot_rate_hz"] == 943.0  # its power limit
    assert doc["planned_for"]["limits"] == asdict(limits)
    screen = check_thermal(plans, script.pass_wait_s)[0].screen
    assert screen is not None
    assert [p["peak_reservoir_rise_k"] for p in doc["passes"]] == [
        p.peak_reservoir_rise_k for p in screen.passes]
    assert main(["plan", "-q", path, "--json"]) == 0  # the defaults fire faster
    default = json.loads(capsys.readouterr().out)
    assert default["planned_for"] is None and default["timing"]["max_spot_rate_hz"] == 1000.0
    assert default["passes"][0]["peak_reservoir_rise_k"] != doc["passes"][0][
        "peak_reservoir_rise_k"]


def test_planning_for_a_device_only_identifies_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    opened: list[Device] = []
    request = Link.request

    def spy(self: Link, name: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(name)
        return request(self, name, *args, **kwargs)

    def keep(url: str, **options: Any) -> Device:
        opened.append(open_device(url, **options))
        return opened[-1]

    monkeypatch.setattr(Link, "request", spy)
    monkeypatch.setattr(drivers, "open_device", keep)
    assert main(["plan", "-q", write(tmp_path, SLOWER), "--device", SIM]) == 0
    capsys.readouterr()
    # queries only: no LOAD_PLAN, ARM or START, nor PAUSE or DISARM at close (nothing to stop)
    assert sent and set(sent) <= {"IDENTIFY", "STATUS_REQUEST"}, sent
    simulated = opened[0].simulator.device
    assert simulated.state in (State.STANDBY, State.READY) and len(simulated.ground_truth) == 0


def test_an_unreachable_device_exits_6(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    script = write(tmp_path, SLOWER)
    assert main(["plan", script, "--device", "socket://127.0.0.1:1"]) == 6
    assert "cannot reach the device at socket://127.0.0.1:1" in capsys.readouterr().err
    assert main(["preview", script, "-o", str(tmp_path / "p.png"),
                 "--device", "nonsense://"]) == 6
    assert "cannot reach the device at nonsense://" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()
