"""Progress of a thermal screen: every model run is announced; a terminal shows a status line,
a log (a pipe, a file) plain lines at a modest rate, and --quiet nothing. The steps of a
command (co2scan report) likewise."""

from __future__ import annotations

import io
import threading
import time
from itertools import count

import pytest

from controller.cli import build_parser, main
from controller.commands.plan import load_and_plan
from controller.handpiece import get_handpiece
from controller.progress import ScreenLog, screen_display, step_display
from controller.scanpath import Plan, build_plan
from controller.settings import DensitySpec, PassSettings, Pattern, TreatmentSettings
from controller.thermal_screen import announce, screen_progress
from controller.validation import check_thermal
from tests.test_cli_plan import DEEP


def hot_plan(coverage_pct: float = 30.0) -> Plan:
    """A 2-pass plan that fails the thermal screen (at the default coverage)."""
    return build_plan(TreatmentSettings(get_handpiece("spot120"), Pattern("square", 3.0),
                                        DensitySpec(coverage_pct=coverage_pct), depth_um=100.0,
                                        passes=PassSettings(count=2)))


def screen_hot_plan(plan: Plan | None = None) -> None:
    """Screen the hot plan, and its suggestions."""
    assert check_thermal([plan or hot_plan()])[0].rejections  # computed: the suggestions


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


def test_a_terminal_shows_the_screen_on_one_line() -> None:
    terminal = Terminal()
    with screen_display(terminal, refresh_s=0.0):
        screen_hot_plan()
    seen, _ = hot_plan_checks()
    assert "thermal screen: plan 1, pass 1 of 2 (1 model runs," in terminal.getvalue()
    assert f"thermal screen: {seen[-1]} ({len(seen)} model runs," in terminal.getvalue()


def test_a_terminal_keeps_counting_the_screen_s_time_through_a_long_model_run() -> None:
    """One model run can take a minute: the line must not stand still meanwhile."""
    terminal = Terminal()
    with screen_display(terminal, refresh_s=0.0, tick_s=0.01):
        announce("plan 1, pass 1 of 2")  # a model run begins, and runs on
        shown = "thermal screen: plan 1, pass 1 of 2 (1 model runs, "
        deadline = time.monotonic() + 30.0
        while terminal.getvalue().count(shown) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)  # no announcement; the line is drawn again and again
        assert terminal.getvalue().count(shown) >= 3
    text = terminal.getvalue()
    assert "\n" not in text
    assert text.rsplit(shown, 1)[1].rstrip(" \r").endswith(")")  # last drawn, then cleared
    assert text.endswith("\r")
    assert "thermal screen progress" not in [t.name for t in threading.enumerate()]


def test_a_log_gets_plain_lines_with_the_pass_the_spots_and_the_time() -> None:
    """Piped or redirected, a long screen was silent for minutes."""
    log, plan = io.StringIO(), hot_plan(coverage_pct=5.0)
    first, total = (plan.metrics.passes[0].spot_count,
                    sum(m.spot_count for m in plan.metrics.passes))
    with screen_display(log, [plan], every_s=0.0):
        (check,) = check_thermal([plan])
    assert check.screen is not None and check.screen.ok  # both passes screened
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    assert len(lines) == 3
    assert lines[0].startswith(f"thermal screen: plan 1, pass 1 of 2 (model run 1, 0/{total} "
                               "spots, ")
    assert lines[1].startswith(f"thermal screen: plan 1, pass 2 of 2 (model run 2, "
                               f"{first}/{total} spots, ")
    assert lines[2].startswith("thermal screen: 2 model runs, ")
    assert all(line.endswith(" s)") or line.endswith(" s") for line in lines)


def test_a_log_names_the_suggestions_without_a_spot_count() -> None:
    log, plan = io.StringIO(), hot_plan()
    with screen_display(log, [plan], every_s=0.0):
        screen_hot_plan(plan)
    seen, _ = hot_plan_checks()
    lines = log.getvalue().splitlines()
    assert len(lines) == len(seen) + 1 and lines[-1].startswith(f"thermal screen: {len(seen)} "
                                                                "model runs, ")
    suggestions = [line for line in lines if "suggestion" in line]
    assert suggestions and not any("spots" in line for line in suggestions)


def test_a_log_gets_a_line_at_most_every_few_seconds() -> None:
    log, seconds = io.StringIO(), count()
    screen = ScreenLog(log, every_s=5.0, clock=lambda: float(next(seconds)))  # 0 s: start
    for k in range(12):  # at 1, 2, ... 12 s
        screen(f"plan 1, pass {k + 1} of 12")
    screen.close()
    assert log.getvalue().splitlines() == [
        "thermal screen: plan 1, pass 1 of 12 (model run 1, 1.0 s)",
        "thermal screen: plan 1, pass 6 of 12 (model run 6, 6.0 s)",
        "thermal screen: plan 1, pass 11 of 12 (model run 11, 11.0 s)",
        "thermal screen: 12 model runs, 13.0 s"]


def test_quiet_shows_nothing_on_a_terminal_or_a_log() -> None:
    for stream in (Terminal(), io.StringIO()):
        with screen_display(stream, quiet=True, refresh_s=0.0, every_s=0.0):
            screen_hot_plan()
        assert stream.getvalue() == ""


def test_plan_off_a_terminal_logs_the_screen_and_quiet_does_not(
        capsys: pytest.CaptureFixture[str]) -> None:
    total = sum(m.spot_count for plan in load_and_plan(DEEP)[1] for m in plan.metrics.passes)
    assert main(["plan", DEEP]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(f"thermal screen: plan 1, pass 1 of 2 (model run 1, 0/{total} spots, ")
    assert "thermal screen: 3 model runs, " in err and "\r" not in err and "\x1b" not in err
    assert "thermal screen:" not in out
    assert main(["plan", DEEP, "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert build_parser().parse_args(["preview", DEEP, "-o", "p.png", "-q"]).quiet


def test_steps_off_a_terminal_are_plain_lines_with_the_time() -> None:
    log, seconds = io.StringIO(), count()
    with step_display(log, "report", clock=lambda: float(next(seconds))) as step:  # 0 s: start
        step("reading session 1")
        step("thermal model of session 1, delivered heat of 5 spots")
        step("done")
    assert log.getvalue().splitlines() == [
        "report: reading session 1 (1.0 s)",
        "report: thermal model of session 1, delivered heat of 5 spots (2.0 s)",
        "report: done (3.0 s)"]


def test_a_terminal_shows_the_step_on_one_line_its_time_counting_while_it_runs() -> None:
    """One model run of a 100k-spot report takes many seconds: the line must not stand still."""
    terminal = Terminal()
    with step_display(terminal, "report", refresh_s=0.01) as step:
        step("thermal model of session 1")
        shown = "report: thermal model of session 1 ("
        deadline = time.monotonic() + 30.0
        while terminal.getvalue().count(shown) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)  # the step runs on; the line is drawn again and again
        assert terminal.getvalue().count(shown) >= 3
    text = terminal.getvalue()
    assert "\n" not in text
    assert text.rsplit(shown, 1)[1].rstrip(" \r").endswith(")")  # last drawn, then cleared
    assert text.endswith("\r")


def test_quiet_steps_show_nothing_on_a_terminal_or_a_log() -> None:
    for stream in (Terminal(), io.StringIO()):
        with step_display(stream, "report", quiet=True, refresh_s=0.0) as step:
            step("reading session 1")
        assert stream.getvalue() == ""
