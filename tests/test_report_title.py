"""``co2scan report`` says how the session ended: a cancelled session's report showed "0 of 925
delivered" and 925 red crosses without the word cancelled (audit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import controller.pictures as pictures
from controller.commands.report import draw_session_report
from controller.record import TreatmentRecord
from drivers import open_device
from tests.test_session import FAST, session_for


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session 1 cancelled, then one waiting (footswitch up), then one completed."""
    path = tmp_path_factory.mktemp("report") / "r.db"
    with TreatmentRecord(path) as record:
        with open_device(f"sim://?{FAST}") as dev:
            session = session_for(dev, record)
            assert session.cancel().status == "cancelled"
            session.close()
        with open_device("sim://?pre_emission_ms=20&footswitch=up&seed=5") as dev:
            session = session_for(dev, record, start_wait_s=0.3)
            assert session.run().status == "waiting"
            session.close()
        with open_device(f"sim://?{FAST}") as dev:
            session = session_for(dev, record)
            assert session.run().status == "completed"
            session.close()
    return path


def drawn_titles(path: Path, session: int, out: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> list[str]:
    """The figure titles of the report of ``session``."""
    titles: list[str] = []
    original = pictures._title

    def noting(fig: Any, title: str, width_in: float) -> float:
        titles.append(title)
        return original(fig, title, width_in)

    monkeypatch.setattr(pictures, "_title", noting)
    with TreatmentRecord(path, read_only=True) as record:
        draw_session_report(record, session, out)
    return titles


def test_the_report_title_names_the_sessions_outcome(
        sessions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with TreatmentRecord(sessions, read_only=True) as record:
        ids = [e.seq for e in record.sessions()]
    expected = ["cancelled", "waiting", "completed"]
    for sid, outcome in zip(ids, expected, strict=True):
        (title,) = drawn_titles(sessions, sid, tmp_path / f"{sid}.png", monkeypatch)
        assert title.startswith(f"session {sid}, {outcome}: "), title
    (title,) = drawn_titles(sessions, ids[0], tmp_path / "c.png", monkeypatch)
    assert "0 of " in title and "cancelled" in title
