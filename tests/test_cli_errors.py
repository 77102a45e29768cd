"""Bad command-line input ends with one clear error and an exit status, never a traceback."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from controller import record as record_module
from controller.cli import main
from controller.record import TreatmentRecord
from tests.test_cli_run import FAST, SCRIPT
from tests.test_record_writers import flock_held

EXAMPLE = str(Path(__file__).parents[1] / "examples" / "surface_texture.toml")



def error_of(capsys: pytest.CaptureFixture[str], argv: list[str], status: int) -> str:
    """Run the CLI; it must return ``status`` (argparse's own errors exit 2) with an error."""
    capsys.readouterr()
    try:
        got = main(argv)
    except SystemExit as exc:
        got = int(exc.code or 0)
    err = " ".join(capsys.readouterr().err.split())
    assert got == status, err
    assert "error:" in err and "Traceback" not in err
    return err


def test_unwritable_outputs(tmp_path: Path, run_record: str, capsys: pytest.CaptureFixture[str]
                            ) -> None:
    missing = tmp_path / "no" / "such"
    assert "cannot write" in error_of(capsys, ["preview", EXAMPLE, "-o", str(missing / "p.png")],
                                      1)
    assert "cannot write" in error_of(capsys, ["report", "1", "--record", run_record, "-o",
                                               str(missing / "r.png")], 3)
    assert "cannot write" in error_of(capsys, ["log", "export", "1", "--record", run_record, "-o",
                                               str(missing / "x.json")], 1)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "cannot create" in error_of(capsys, ["demo", "--out", str(blocker / "demo")], 1)
    assert not missing.exists()


def test_demo_with_a_bad_script_or_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    out = str(tmp_path / "demo")
    assert "script = " in error_of(capsys, ["demo", "--out", out, "--script",
                                            str(tmp_path / "none.toml")], 3)
    assert "cannot reach the device" in error_of(capsys, ["demo", "--out", out, "--device",
                                                          "bogus://x"], 6)


def test_demo_names_who_treats_and_whom(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    """A template script without operator and patient (examples/rapid_recovery.toml): the
    demo refuses before reaching the device, as run does, or takes --operator/--patient."""
    template = str(Path(EXAMPLE).with_name("rapid_recovery.toml"))
    out = tmp_path / "demo"
    err = error_of(capsys, ["demo", "--out", str(out), "--script", template,
                            "--device", "bogus://never-reached"], 3)
    assert "operator" in err and "--operator" in err and not (out / "treatments.db").exists()
    err = error_of(capsys, ["demo", "--out", str(out), "--script", template, "--operator",
                            "Dr A", "--device", "bogus://never-reached"], 3)
    assert "patient_ref" in err and "--patient" in err
    assert main(["demo", "--out", str(out), "--script", template, "--operator", "Dr A",
                 "--patient", "test card", "--device",
                 "sim://?footswitch=down&pre_emission_ms=20&seed=1"]) == 0
    with TreatmentRecord(out / "treatments.db") as record:
        (entry,) = record.sessions()
    assert (entry.body["operator"], entry.body["patient_ref"]) == ("Dr A", "test card")


@pytest.mark.parametrize(("option", "value", "allowed"), [
    ("--start-wait", "nan", "a number 0..3600"),
    ("--start-wait", "-1", "a number 0..3600"),
    ("--start-wait", "soon", "a number 0..3600"),
    ("--reset-fault", "-1", "an integer 0..100"),
    ("--reset-fault", "1.5", "an integer 0..100"),
])
def test_run_options_out_of_range(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  option: str, value: str, allowed: str) -> None:
    err = error_of(capsys, ["run", EXAMPLE, "--device", FAST, "--yes", "--record",
                            str(tmp_path / "t.db"), option, value], 2)
    assert f"argument {option}: '{value}' rejected; allowed: {allowed}" in err
    assert not (tmp_path / "t.db").exists()


def test_an_operator_name_with_control_characters_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of(capsys, ["run", EXAMPLE, "--device", FAST, "--yes", "--record",
                            str(tmp_path / "t.db"), "--operator", "\x1b[2JDr"], 3)
    assert "operator = '\\x1b[2JDr' rejected" in err
    assert not (tmp_path / "t.db").exists()  # refused before the record is opened


def test_simulator_ports(capsys: pytest.CaptureFixture[str]) -> None:
    for port in ("99999", "-1", "x"):
        assert "a port 0..65535" in error_of(capsys, ["sim", "serve", "--tcp", port], 2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert "cannot serve" in error_of(capsys, ["sim", "serve", "--tcp", port], 1)
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = str(closed.getsockname()[1])
        assert "no simulator control port" in error_of(capsys, ["sim", "status", "--control",
                                                                port], 1)


def test_ctrl_c_outside_a_delivery_exits_130(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("controller.commands.plan.check_thermal", interrupted)
    assert main(["plan", EXAMPLE]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_report_refuses_a_tampered_record_and_names_an_unknown_session(
        tmp_path: Path, run_record: str, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil
    import sqlite3

    png = tmp_path / "r.png"
    assert "session 9: not in the record" in error_of(capsys, ["report", "9", "--record",
                                                               run_record, "-o", str(png)], 3)
    copy = tmp_path / "t.db"
    shutil.copy(run_record, copy)
    shutil.copy(run_record + ".head", str(copy) + ".head")
    with sqlite3.connect(copy) as db:  # a malformed body, as an edit by hand would leave it
        db.execute("UPDATE entries SET body = ? WHERE seq = 1", ('{"field_size_um": "huge"}',))
    err = error_of(capsys, ["report", "1", "--record", str(copy), "-o", str(png)], 4)
    assert "does not verify (TAMPERED)" in err and "row 1 (session): content was edited" in err
    assert not png.exists()


def test_sim_serve_with_an_unknown_fault_announces_nothing(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A script reading `url:` must not see a simulator that then stops on a bad --fault."""
    assert main(["sim", "serve", "--tcp", "0", "--fault", "bogus=1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "unknown fault 'bogus=1'" in err


def test_a_pass_planned_below_one_spot_per_second_is_rejected(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A thermal-spread pass with a long relax_ms is planned (and screened) below 1 Hz, the
    slowest rate a device takes: it was accepted and fired at 1 Hz, its neighbours 1 s apart
    instead of 10 (audit)."""
    script = tmp_path / "slow.toml"
    script.write_text('operator = "t"\npatient_ref = "t"\n[[pass]]\nsize_mm = 3\n'
                      'density_percent = 5\ndepth_um = 100\norder = "thermal-spread"\n'
                      'neighbour_um = 80000\nrelax_ms = 10000\nmin_step_um = 0\n',
                      encoding="utf-8")
    err = error_of(capsys, ["plan", str(script)], 3)
    assert "pass 1: spot_rate_hz = 0.1 Hz; device allows at least 1 Hz" in err


@pytest.mark.parametrize("argv", [
    ["log", "show", "99999999999999999999999"], ["log", "export", "0"],
    ["report", "99999999999999999999999", "-o", "r.png"],
    ["run", EXAMPLE, "--device", FAST, "--resume", "-3"],
    ["run", EXAMPLE, "--device", FAST, "--resume", "٣"],
])
def test_a_session_id_out_of_range_is_refused_by_argparse(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """A session id past SQLite's integers was an OverflowError traceback (audit)."""
    err = error_of(capsys, [*argv, "--record", str(tmp_path / "t.db")], 2)
    assert "rejected; allowed: a session id 1..9223372036854775807" in err
    assert not (tmp_path / "t.db").exists()


def test_a_fifo_as_script_or_record_head_does_not_hang(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """plan and log verify blocked for ever on a FIFO (audit); a 2 GB head was read whole."""
    fifo = tmp_path / "script.toml"
    os.mkfifo(fifo)
    assert "is a FIFO or socket, not a file" in error_of(capsys, ["plan", str(fifo)], 3)
    db = str(tmp_path / "t.db")
    assert main(["run", EXAMPLE, "--device", FAST, "--yes", "--record", db]) == 0
    head = tmp_path / "t.db.head"
    head.unlink()
    os.mkfifo(head)
    capsys.readouterr()
    assert main(["log", "verify", "--record", db]) == 4
    assert "TAMPERED" in capsys.readouterr().out
    os.unlink(head)
    with open(head, "wb") as f:
        f.truncate(50_000_000)  # sparse: 50 MB of zeros, read no further than a head line
    assert main(["log", "verify", "--record", db]) == 4


@pytest.mark.parametrize("flag", ["--operator", "--patient"])
def test_an_explicitly_empty_operator_or_patient_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str) -> None:
    """``--patient ""`` fell back to the script's patient (audit): given, it is the one
    recorded, so an empty one is refused like a blank script value."""
    db = tmp_path / "t.db"
    err = error_of(capsys, ["run", EXAMPLE, "--device", FAST, "--yes", "--record", str(db),
                            flag, ""], 3)
    assert ("operator = '' rejected" if flag == "--operator" else "patient_ref = '' rejected") \
        in " ".join(err.split())
    assert not db.exists()


@pytest.mark.parametrize(("url", "says"), [
    ("sim://?footswitch=down&footswitch=up", "option(s) ['footswitch'] given more than once"),
    ("sim://host/path?footswitch=down", "sim:// takes no host or path, got 'host/path'"),
])
def test_a_sim_url_with_repeated_options_or_a_path_is_refused(url: str, says: str) -> None:
    """The last of a repeated option won, and a host or path was ignored (audit)."""
    from drivers import TransportURLError, open_device

    with pytest.raises(TransportURLError, match=re.escape(says)):
        open_device(url)


def test_an_error_follows_the_output_it_ends_on_one_file(tmp_path: Path) -> None:
    """stdout is buffered off a terminal: with ``2>&1`` the error came first, or mid-line."""
    script = tmp_path / "s.toml"
    script.write_text('[[pass]]\npattern = "square"\nsize_mm = 5\ndensity_percent = 5\n'
                      'energy_mj = 150.01\n')  # over the envelope's 150 mJ: plan printed, rejected
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run([sys.executable, "-m", "controller.cli", "plan", "-q", str(script)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                          check=False)
    assert done.returncode == 3
    lines = done.stdout.splitlines()
    error = next(k for k, line in enumerate(lines) if line.startswith("error: plan rejected"))
    assert lines[0].startswith(str(script)) and any(line.startswith("total: ")
                                                    for line in lines[:error])
    assert "energy_mj = 150.01 mJ; envelope allows at most 150 mJ" in lines[error + 1]


def test_a_record_whose_lock_a_stalled_writer_holds_is_an_error_not_a_hang(
        tmp_path: Path, run_record: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process stalled while holding the record's writers' lock (a writer on a hung
    network share): run, log and report waited for as long as it held it. They now give up
    after the lock timeout with an error naming the lock file, exit 3, nothing fired."""
    monkeypatch.setattr(record_module, "LOCK_TIMEOUT_S", 0.1)
    for name in ("t.db", "t.db.head"):
        shutil.copy(Path(run_record).with_name(name), tmp_path / name)
    db = str(tmp_path / "t.db")
    script = tmp_path / "s.toml"
    script.write_text(SCRIPT, encoding="utf-8")
    fd = flock_held(tmp_path / "t.db.lock")
    try:
        for argv in (["log", "list"], ["log", "show", "1"], ["log", "verify"],
                     ["log", "export", "1", "--format", "csv", "-o", str(tmp_path / "x.csv")],
                     ["report", "1", "-o", str(tmp_path / "r.png")],
                     ["run", str(script), "--device", FAST, "--yes"]):
            err = error_of(capsys, [*argv, "--record", db], 3)
            assert f"its lock file {tmp_path / 't.db.lock'} was held" in err, argv
    finally:
        os.close(fd)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "r.png").exists()
    with TreatmentRecord(db) as record:
        assert record.verify().ok and len(record.sessions()) == 1
