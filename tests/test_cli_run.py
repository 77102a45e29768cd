"""co2scan run / log / report / demo, and a host SIGKILLed mid-pass that resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from controller.cli import main
from controller.record import TreatmentRecord
from sim_hw.config import SimConfig
from sim_hw.pty_server import PtyServer, serve_pty

SCRIPT = """
operator = "Dr Test"
patient_ref = "T-1"
[[pass]]
pattern = "square"
size_mm = 4.0
density_percent = 5.0
depth_um = 200.0
[[pass]]
pattern = "square"
size_mm = 4.0
density_percent = 5.0
depth_um = 200.0
"""
FAST = "sim://?footswitch=down&pre_emission_ms=20&seed=2"


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "treatment.toml"
    path.write_text(SCRIPT, encoding="utf-8")
    return path


def co2scan(*args: str) -> int:
    return main(list(args))


def test_run_log_export_report(tmp_path: Path, script: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.db")
    assert co2scan("run", str(script), "--device", FAST, "--yes", "--record", db) == 0
    out = capsys.readouterr().out
    assert "session 1: completed" in out and "chain verified" in out
    assert co2scan("log", "list", "--record", db) == 0
    assert "Dr Test" in capsys.readouterr().out
    assert co2scan("log", "verify", "--record", db) == 0
    csv_path = tmp_path / "s.csv"
    assert co2scan("log", "export", "1", "--format", "csv", "-o", str(csv_path),
                   "--record", db) == 0
    rows = csv_path.read_text().splitlines()
    with TreatmentRecord(db) as record:
        total = sum(record.delivered_spots(1, p)[0].size for p in (0, 1))
    assert len(rows) == total + 1 and total > 0
    png = tmp_path / "report.png"
    assert co2scan("report", "1", "-o", str(png), "--record", db) == 0
    assert png.stat().st_size > 10_000


def test_rejected_plan_exits_3_and_fires_nothing(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dense.toml"
    path.write_text(SCRIPT.replace("density_percent = 5.0", "density_percent = 45.0"))
    assert co2scan("run", str(path), "--device", FAST, "--yes",
                   "--record", str(tmp_path / "t.db")) == 3
    assert "coverage_percent" in capsys.readouterr().err


def test_not_confirmed_exits_1(tmp_path: Path, script: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115 - not a terminal
    assert co2scan("run", str(script), "--device", FAST, "--record",
                   str(tmp_path / "t.db")) == 1
    assert "nothing was fired" in capsys.readouterr().err


def test_footswitch_never_pressed_exits_5(tmp_path: Path, script: Path) -> None:
    url = "sim://?footswitch=up&pre_emission_ms=20"
    assert co2scan("run", str(script), "--device", url, "--yes", "--start-wait", "0.3",
                   "--record", str(tmp_path / "t.db")) == 5


def test_unreachable_device_exits_6(tmp_path: Path, script: Path) -> None:
    assert co2scan("run", str(script), "--device", "/dev/does-not-exist", "--yes",
                   "--record", str(tmp_path / "t.db")) == 6


NO_PATIENT = SCRIPT.replace('patient_ref = "T-1"\n', "")


def test_a_run_without_a_patient_is_refused_before_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "template.toml"
    path.write_text(NO_PATIENT, encoding="utf-8")
    db = tmp_path / "t.db"
    for blank in ([], ["--patient", "  "]):
        assert co2scan("run", str(path), "--device", FAST, "--yes", "--record", str(db),
                       *blank) == 3
        out, err = capsys.readouterr()
        err = " ".join(err.split())
        assert out == "" and err.startswith("error: patient_ref = ")
        assert "--patient REF, or patient_ref = in the script" in err
    assert not db.exists()  # nothing recorded (and the device never reached)


def test_patient_option_names_the_patient(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--patient fills a template script's gap, and wins over the script's, as --operator."""
    db = str(tmp_path / "t.db")
    for text in (NO_PATIENT, SCRIPT):
        path = tmp_path / "s.toml"
        path.write_text(text, encoding="utf-8")
        assert co2scan("run", str(path), "--device", FAST, "--yes", "--record", db,
                       "--patient", "P-7") == 0
        assert "operator Dr Test, patient P-7" in capsys.readouterr().out
    with TreatmentRecord(db) as record:
        assert [e.body["patient_ref"] for e in record.sessions()] == ["P-7", "P-7"]


def test_a_resume_keeps_the_recorded_patient(tmp_path: Path, script: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.db")
    assert co2scan("run", str(script), "--device", "sim://?footswitch=up&pre_emission_ms=20",
                   "--yes", "--start-wait", "0.2", "--record", db) == 5  # session 1 open
    capsys.readouterr()
    resume = ("run", str(script), "--device", FAST, "--yes", "--record", db, "--resume", "1")
    assert co2scan(*resume, "--patient", "T-2") == 3
    err = " ".join(capsys.readouterr().err.split())
    assert "error: patient_ref = 'T-2' rejected (a resumed session continues the treatment of " \
           "its patient); allowed: 'T-1', the patient session 1 was recorded for" in err
    template = tmp_path / "template.toml"
    template.write_text(NO_PATIENT, encoding="utf-8")
    assert co2scan(*resume[:1], str(template), *resume[2:]) == 0  # none given: kept
    assert "operator Dr Test, patient T-1 (session 1, resumed)" in capsys.readouterr().out
    with TreatmentRecord(db) as record:
        assert [e.body["patient_ref"] for e in record.sessions()] == ["T-1"]


def _delivered(db: Path) -> int:
    if not db.exists():
        return 0
    with TreatmentRecord(db) as record:
        return sum(e.body["count"] for e in record.entries(kind="delivered"))


BIG = SCRIPT.replace("size_mm = 4.0", "size_mm = 12.0")  # ~1.6 s per pass at 1 kHz


@contextmanager
def host_mid_pass(tmp_path: Path, *options: str) -> Iterator[tuple[PtyServer, list[str],
                                                                    subprocess.Popen[str]]]:
    """A ``co2scan run`` (its command and process) of a 2-pass script on a simulated device
    (pty, real time), once it has recorded 80 spots of pass 1; stderr is piped."""
    db = tmp_path / "t.db"
    script = tmp_path / "big.toml"
    script.write_text(BIG, encoding="utf-8")
    config = SimConfig(footswitch=True, pre_emission_ms=20, clock="realtime", seed=4)
    with serve_pty(config) as served:
        cmd = [sys.executable, "-m", "controller.cli", "run", str(script), "--device",
               served.path, "--yes", "--record", str(db), *options]
        host = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 30
            while _delivered(db) < 80 and time.monotonic() < deadline and host.poll() is None:
                time.sleep(0.02)
            assert host.poll() is None, "the host ended too soon:\n" + host.communicate()[0]
            yield served, cmd, host
        finally:
            if host.poll() is None:
                host.kill()
            host.communicate()


def assert_resumed_as_fired(db: Path, cmd: list[str], served: PtyServer,
                            *options: str) -> list[str]:
    """``cmd --resume 1`` completes session 1, and the record holds every spot the device
    fired, once, with its measured energy where known; returns the session's entry kinds."""
    resumed = subprocess.run([*cmd, "--resume", "1", *options], capture_output=True,
                             text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    truth = served.device.ground_truth
    with TreatmentRecord(db) as record:
        assert record.verify().ok
        for p in (0, 1):
            fired = truth[truth["pass_index"] == p]
            assert len(np.unique(fired["index"])) == len(fired), "a spot fired twice"
            index, measured = record.delivered_spots(1, p)
            assert index.tolist() == fired["index"].tolist()
            known = measured >= 0
            assert np.array_equal(measured[known], fired["measured_uj"][known])
        kinds = [e.kind for e in record.entries(1)]
    assert kinds[-1] == "session_end"
    return kinds


def test_sigkill_mid_pass_loses_nothing_and_resumes(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with host_mid_pass(tmp_path) as (served, cmd, host):
        os.kill(host.pid, signal.SIGKILL)
        host.wait()
        killed_at = _delivered(db)
        assert killed_at >= 80
        time.sleep(0.7)  # the device's watchdog (500 ms) stops emission on its own
        fired_alone = len(served.device.ground_truth)
        time.sleep(0.3)
        assert len(served.device.ground_truth) == fired_alone, "kept firing without a host"
        kinds = assert_resumed_as_fired(db, cmd, served, "--reset-fault", "1")
    assert "operator_reset" in kinds


def test_demo_writes_pictures_and_a_verified_record(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert co2scan("demo", "--out", str(out), "--device",
                   "sim://?footswitch=down&pre_emission_ms=20&seed=1") == 0
    text = capsys.readouterr().out
    assert "hash chain verified" in text and "completed" in text
    for name in ("plan.png", "report.png", "treatments.db", "demo.toml"):
        assert (out / name).stat().st_size > 0
