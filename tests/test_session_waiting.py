"""Before emission: the reason shown while waiting is the current one; an unconfirmed run
ends its new session as cancelled; a pause on a terminal asks, with --yes too."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

import controller.commands.run as run_command
from controller.cli import main
from controller.errors import SettingsError
from controller.record import TreatmentRecord
from controller.session import SessionProgress
from drivers import open_device
from tests.test_cli_run import FAST as CLI_FAST
from tests.test_cli_run import SCRIPT
from tests.test_session import FAST, session_for


def test_the_waiting_reason_is_the_current_one(record: TreatmentRecord) -> None:
    """The emission indicator's delay runs out while the footswitch stays up: the progress
    and the outcome say what is still awaited, not what was at the start."""
    seen: list[SessionProgress] = []
    with open_device("sim://?pre_emission_ms=300&footswitch=up&seed=5") as dev:
        session = session_for(dev, record, on_progress=seen.append, start_wait_s=0.8)
        outcome = session.run()
        session.close()
    reasons = [p.waiting_for for p in seen if p.waiting_for]
    assert any("emission indicator on for" in r for r in reasons)
    assert reasons[-1] == "footswitch not pressed"
    assert outcome.status == "waiting"
    assert outcome.detail == "emission not started: waiting for footswitch not pressed"


def test_cancel_ends_a_session_that_delivered_nothing(record: TreatmentRecord) -> None:
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record)
        outcome = session.cancel()
        session.close()
        assert len(dev.simulator.device.ground_truth) == 0
    assert outcome.status == "cancelled" and outcome.delivered == {0: 0, 1: 0}
    ends = [e.body["status"] for e in record.entries(session.session_id, "session_end")]
    assert ends == ["cancelled"] and record.verify().ok


def test_cancel_refuses_a_session_that_delivered(record: TreatmentRecord) -> None:
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record)
        assert session.run().status == "completed"
        with pytest.raises(SettingsError) as caught:
            session.cancel()
        session.close()
    assert caught.value.field == "cancel" and caught.value.reason == "it ended: completed"
    ends = [e.body["status"] for e in record.entries(session.session_id, "session_end")]
    assert ends == ["completed"]


def test_cancel_of_an_aborted_session_says_it_ended(record: TreatmentRecord) -> None:
    """Not "resume or abort it": an aborted session can be neither."""
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record)
        assert session.abort().status == "aborted"
        with pytest.raises(SettingsError, match="it ended: aborted"):
            session.cancel()
        session.close()


def test_an_unconfirmed_run_records_its_new_session_as_cancelled(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "t.toml"
    script.write_text(SCRIPT, encoding="utf-8")
    db = str(tmp_path / "t.db")
    assert main(["run", str(script), "--device", CLI_FAST, "--record", db]) == 1  # no tty
    assert "session 1: cancelled" in capsys.readouterr().err
    assert main(["log", "list", "--record", db]) == 0
    assert "cancelled" in capsys.readouterr().out
    with TreatmentRecord(db) as record:
        assert [e.body["status"] for e in record.entries(kind="session_end")] == ["cancelled"]
        assert not list(record.entries(kind="delivered")) and record.verify().ok


def test_a_pause_on_a_terminal_asks_with_yes_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--yes confirms the plan; an operator pause (Ctrl-C) still asks resume or abort."""
    script = tmp_path / "t.toml"
    script.write_text(SCRIPT, encoding="utf-8")
    asked: list[str] = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)

    def ask(question: str, choices: tuple[str, ...]) -> str:
        asked.append(question)
        return "resume"

    monkeypatch.setattr(run_command, "ask", ask)
    real_update = run_command.ProgressDisplay.update
    sent = False

    def ctrl_c_once(display: run_command.ProgressDisplay, p: SessionProgress) -> None:
        nonlocal sent
        if not sent and p.delivered > 0:  # the operator presses Ctrl-C mid-pass
            sent = True
            os.kill(os.getpid(), signal.SIGINT)
        real_update(display, p)

    monkeypatch.setattr(run_command.ProgressDisplay, "update", ctrl_c_once)
    db = str(tmp_path / "t.db")
    realtime = CLI_FAST + "&clock=realtime"  # spots at the pulse rate: Ctrl-C lands mid-pass
    assert main(["run", str(script), "--device", realtime, "--yes", "--record", db]) == 0
    assert sent and asked == ["resume or abort?"]


def test_an_empty_device_url_is_refused_not_replaced(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """--device '' is a mistake to report, not a reason to use the script's device."""
    script = tmp_path / "t.toml"
    script.write_text(SCRIPT + '[device]\nurl = "sim://?footswitch=down"\n', encoding="utf-8")
    assert main(["run", str(script), "--device", "", "--yes",
                 "--record", str(tmp_path / "t.db")]) == 6
    assert "empty URL" in capsys.readouterr().err
    assert not (tmp_path / "t.db").exists()
