"""Progress of a thermal screen: every model run is announced, and a terminal shows it."""

from __future__ import annotations

import io

from controller.handpiece import get_handpiece
from controller.progress import screen_display
from controller.scanpath import build_plan
from controller.settings import DensitySpec, PassSettings, Pattern, TreatmentSettings
from controller.thermal_screen import screen_progress
from controller.validation import check_thermal


def screen_hot_plan() -> None:
    """Screen a 2-pass plan that fails, and its suggestions."""
    plan = build_plan(TreatmentSettings(get_handpiece("spot120"), Pattern("square", 3.0),
                                        DensitySpec(coverage_pct=30.0), depth_um=100.0,
                                        passes=PassSettings(count=2)))
    assert check_thermal([plan])[0].rejections  # computed here: the suggestions' screens


def hot_plan_checks() -> tuple[list[str], int]:
    """The announcements of screening the hot plan, and how many passes it has."""
    seen: list[str] = []
    with screen_progress(seen.append):
        screen_hot_plan()
    return seen, 2


def test_every_model_run_is_announced_with_what_it_evaluates() -> None:
    seen, passes = hot_plan_checks()
    screened = [s for s in seen if not s.startswith("plan 1, suggestion ")]
    # the plan's screen, in pass order until its first failing pass, then the suggestions
    assert screened == [f"plan 1, pass {k + 1} of {passes}" for k in range(len(screened))]
    assert screened and seen[:len(screened)] == screened
    suggestions = seen[len(screened):]
    assert "plan 1, suggestion thermal-spread order, pass 1 of 2" in suggestions
    assert any(s.startswith("plan 1, suggestion coverage ") for s in suggestions)
    assert all(s.startswith("plan 1, suggestion ") for s in suggestions)


def test_nothing_is_announced_outside_the_block() -> None:
    seen: list[str] = []
    with screen_progress(seen.append):
        pass
    screen_hot_plan()
    assert seen == []


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_shows_the_screen_and_a_log_does_not() -> None:
    terminal, log = Terminal(), io.StringIO()
    with screen_display(terminal, refresh_s=0.0):
        screen_hot_plan()
    seen, _ = hot_plan_checks()
    assert "thermal screen: plan 1, pass 1 of 2 (1 model runs," in terminal.getvalue()
    assert f"thermal screen: {seen[-1]} ({len(seen)} model runs," in terminal.getvalue()
    with screen_display(log):
        screen_hot_plan()
    assert log.getvalue() == ""
