"""``co2scan report`` says how the session ended: a cancelled session's report showed "0 of 925
delivered" and 925 red crosses without the word cancelled (audit)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

import controller.pictures as pictures
from controller.commands.report import draw_session_report
from controller.pictures import describe_pass
from controller.record import TreatmentRecord
from controller.session import plan_for_device
from drivers import open_device
from drivers.protocol.messages import SPOT_DTYPE
from tests.test_log_export import cli
from tests.test_record import session_args
from tests.test_session import FAST, session_for, settings


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
    ids = session_ids(sessions)
    expected = ["cancelled", "waiting", "completed"]
    for sid, outcome in zip(ids, expected, strict=True):
        (title,) = drawn_titles(sessions, sid, tmp_path / f"{sid}.png", monkeypatch)
        assert title.startswith(f"session {sid}, {outcome}: "), title
    (title,) = drawn_titles(sessions, ids[0], tmp_path / "c.png", monkeypatch)
    assert "0 of " in title and "cancelled" in title


# -- labels: spots, not pulses; whole stack or per pulse; a report with nothing delivered ------

def histogram_of(path: Path, session: int, out: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The energy histogram's axes of the report of ``session``."""
    drawn: list[Any] = []
    original = pictures._energy_histogram

    def keeping(ax: Any, *args: Any, **kwargs: Any) -> None:
        original(ax, *args, **kwargs)
        drawn.append(ax)

    monkeypatch.setattr(pictures, "_energy_histogram", keeping)
    with TreatmentRecord(path, read_only=True) as record:
        draw_session_report(record, session, out)
    (ax,) = drawn
    return ax


def set_mj_per_spot(path: Path, session: int) -> str:
    with TreatmentRecord(path, read_only=True) as record:
        spots = record.pass_spots(session, 0, SPOT_DTYPE)
    assert spots is not None
    return f"{int(spots['energy_uj'][0]) * int(spots['stack'][0]) / 1000:.1f}"


def test_the_histogram_counts_spots_and_says_its_energies_are_whole_stacks(
        sessions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ax = histogram_of(sessions, session_ids(sessions)[-1], tmp_path / "r.png",
                      monkeypatch)
    assert ax.get_ylabel() == "spots"
    label = " ".join(ax.get_xlabel().split())
    assert "whole stack" in label and "mJ per spot (all its pulses)" in label


def session_ids(path: Path) -> list[int]:
    """The record's sessions: cancelled, waiting, completed."""
    with TreatmentRecord(path, read_only=True) as record:
        return [e.seq for e in record.sessions()]


def test_a_report_with_nothing_delivered_has_a_plain_axis_and_names_the_set_energy(
        sessions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It showed counts from -0.04 to 0.04 and "set - mJ" (audit)."""
    ax = histogram_of(sessions, 1, tmp_path / "c.png", monkeypatch)
    assert tuple(ax.get_ylim()) == (0.0, 1.0)
    label = " ".join(ax.get_xlabel().split())
    assert "set -" not in label and f"set {set_mj_per_spot(sessions, 1)} mJ per spot" in label


def test_the_plan_caption_says_its_energy_is_per_pulse(tmp_path: Path) -> None:
    with open_device(f"sim://?{FAST}") as dev:
        plan = plan_for_device(settings(), dev.info.limits)
    caption = describe_pass(plan, 0)
    assert " mJ per pulse × " in caption and " pulses;" in caption


def test_show_gives_an_energy_deviation_in_percent(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.db"
    with TreatmentRecord(path) as record:
        record.new_session(**session_args())
        record.append(1, "energy_fault", pass_index=0, spot=3, worst_deviation=0.3251)
        record.append(1, "energy_drift", pass_index=0, worst_deviation=0.12)
    _, out, _ = cli(capsys, "log", "show", "1", "--record", str(path))
    assert '"worst_deviation": "32.5 %"' in out and '"worst_deviation": "12.0 %"' in out
    assert "0.3251" not in out


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_an_export_is_created_with_the_process_umask(
        sessions: Path, tmp_path: Path, umask: int) -> None:
    """mkstemp created every export 0600, unlike every other file co2scan writes (audit)."""
    old = os.umask(umask)
    try:
        with TreatmentRecord(sessions, read_only=True) as record:
            for fmt in ("csv", "json"):
                out = record.export(session_ids(sessions)[-1], fmt,
                                    tmp_path / f"s.{fmt}")
                assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    finally:
        os.umask(old)
