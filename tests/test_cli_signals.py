"""SIGTERM and SIGHUP to ``co2scan run`` mid-pass: emission pauses at once, the record says
which signal stopped the session and what the device fired, the run exits 128 + the signal's
number with a message, and ``--resume`` neither repeats nor drops a spot. At the confirmation
question they, and Ctrl-C, are a "no"."""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from controller.cli import main
from controller.commands.run import Signals, deliver
from controller.record import TreatmentRecord
from controller.session import SessionOutcome
from tests.test_cli_run import FAST, SCRIPT, _delivered, assert_resumed_as_fired, host_mid_pass


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_mid_pass_pauses_records_it_and_resumes(tmp_path: Path,
                                                              signum: int) -> None:
    db, name = tmp_path / "t.db", signal.Signals(signum).name
    with host_mid_pass(tmp_path) as (served, cmd, host):
        os.kill(host.pid, signum)
        out = host.communicate(timeout=30)[0]
        assert host.returncode == 128 + signum, out
        assert f"stopped by {name}: emission is off; session 1 stays open" in out
        assert "chain verified" in out and "Traceback" not in out
        # the resume as a line to copy: the same device and record (it named neither)
        resume = next(line.strip() for line in out.splitlines() if " --resume " in line)
        assert resume.startswith("co2scan run ") and resume.endswith(f"--record {db} --resume 1")
        assert "--device " in resume
        assert f"session 1: paused (stopped by {name})" in out and "by the operator" not in out
        fired = len(served.device.ground_truth)
        assert 80 <= _delivered(db) == fired < 441  # paused in pass 1, all of it recorded
        time.sleep(0.3)
        assert len(served.device.ground_truth) == fired, "kept firing after the signal"
        with TreatmentRecord(db) as record:
            assert record.verify().ok
            entries = list(record.entries(1))
        kinds = [e.kind for e in entries]
        assert "session_end" not in kinds and kinds[-1] == "interrupted"
        assert entries[-1].body == {"reason": name}
        assert "pass_confirmed" in kinds  # the device's count, for the resume
        assert_resumed_as_fired(db, cmd, served)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_at_the_confirmation_is_a_no(tmp_path: Path, signum: int,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C at "deliver this treatment?" left the session open (nothing fired); it is now
    cancelled as a "no" would, and the run exits 128 + the signal's number."""
    script = tmp_path / "s.toml"
    script.write_text(SCRIPT, encoding="utf-8")
    db = tmp_path / "t.db"

    def interrupted_answer(prompt: str) -> str:
        os.kill(os.getpid(), signum)
        time.sleep(5.0)  # the handler raises here
        return "yes"

    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr("builtins.input", interrupted_answer)
    assert main(["run", str(script), "--device", FAST, "--record", str(db)]) == 128 + signum
    err = capsys.readouterr().err
    assert f"not confirmed ({signal.Signals(signum).name}): nothing was fired" in err
    assert "session 1: cancelled" in err
    with TreatmentRecord(db) as record:
        assert [e.body["status"] for e in record.entries(kind="session_end")] == ["cancelled"]
        assert not list(record.entries(kind="delivered")) and record.verify().ok


class PausedSession:
    """Stands in for a session whose delivery the operator paused."""

    def __init__(self) -> None:
        self.runs = 0

    def run(self) -> SessionOutcome:
        self.runs += 1
        return SessionOutcome("paused", 1, "paused by the operator in pass 1")

    def request_pause(self) -> None:
        pass


def test_ctrl_c_at_the_resume_question_ends_the_run_as_it_stands(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """It was ignored there: the question went on waiting, and an answer then resumed."""
    def interrupted_answer(prompt: str) -> str:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5.0)  # the handler raises here
        return "resume"

    monkeypatch.setattr("builtins.input", interrupted_answer)
    session, signals = PausedSession(), Signals()
    with signals.installed():
        outcome = deliver(session, True, 0, signals)  # type: ignore[arg-type]
    assert outcome.status == "paused" and session.runs == 1  # not resumed
    assert signals.received == signal.SIGINT
