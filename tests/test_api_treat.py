"""What an integrator (a GUI) needs from ``controller.api``: treat() hands it the session to
pause or abort from its own thread, and the types, causes and outcomes that progress reports
and outcomes are read with are exported, from the one place the CLI uses them from too."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

import controller.api as api
import controller.commands.log
import controller.commands.report
import controller.commands.run
import controller.outcomes
from drivers.protocol import messages
from tests.test_session_halts import REALTIME

README = Path(__file__).resolve().parents[1] / "README.md"
WAITING = "sim://?pre_emission_ms=20&footswitch=up&seed=5"


def plan_for(dev: api.Device, size_mm: float = 5.0, passes: int = 1) -> api.Plan:
    settings = api.TreatmentSettings(api.get_handpiece("spot120"), api.Pattern("square", size_mm),
                                     api.DensitySpec(coverage_pct=5.0), depth_um=200.0,
                                     passes=api.PassSettings(count=passes))
    return api.plan_for_device(settings, dev.info.limits)


def test_progress_and_outcomes_are_read_with_exported_names() -> None:
    """SessionProgress.state and .interlocks are State and Interlock, which integrators had
    to import from drivers.protocol.messages; the resets and outcomes lived in the CLI."""
    assert api.State is messages.State and api.Interlock is messages.Interlock
    assert api.FaultCode is messages.FaultCode
    for name in ("NOT_RESETTABLE", "AUTO_RESETS", "FAULT_CAUSES", "OUTCOMES", "RESUMABLE",
                 "session_outcomes", "resumable_sessions"):
        assert getattr(api, name) is getattr(controller.outcomes, name), name
    # one source of truth: the CLI decides and shows with the same objects
    assert controller.commands.run.NOT_RESETTABLE is api.NOT_RESETTABLE
    assert controller.commands.run.AUTO_RESETS is api.AUTO_RESETS
    assert controller.commands.log.session_outcomes is api.session_outcomes
    assert controller.commands.report.session_outcomes is api.session_outcomes
    assert set(api.NOT_RESETTABLE) < set(api.FAULT_CAUSES)
    assert set(api.RESUMABLE) < set(api.OUTCOMES)


def test_the_fault_causes_are_those_the_readme_names() -> None:
    text = " ".join(README.read_text(encoding="utf-8").split())
    listed = re.search(r"`\.cause` says which kind: (.*?); `\.detail`", text)
    assert listed is not None
    assert re.findall(r"`(\w+)`", listed[1]) == list(api.FAULT_CAUSES)


def test_a_gui_aborts_a_delivery_from_its_own_thread(tmp_path: Path) -> None:
    """treat() gave no way to reach the session it delivers: a GUI could not pause or abort.
    on_session hands it over before anything is sent; request_abort() from the GUI's thread
    ends the pass mid-way, recorded."""
    sessions: list[api.TreatmentSession] = []
    outcomes: list[api.SessionOutcome] = []
    seen: list[api.SessionProgress] = []
    delivering = threading.Event()
    sent_before: list[int] = []

    def on_session(session: api.TreatmentSession) -> None:
        sent_before.append(len(dev.simulator.device.ground_truth))
        sessions.append(session)

    def on_progress(p: api.SessionProgress) -> None:
        seen.append(p)
        if p.delivered > 20 and p.state is api.State.EMITTING:
            delivering.set()

    record = tmp_path / "gui.db"
    with api.open_device(REALTIME) as dev:
        plan = plan_for(dev, size_mm=8.0)
        worker = threading.Thread(target=lambda: outcomes.append(api.treat(
            dev, [plan], record, operator="Dr A", patient_ref="P-1",
            on_session=on_session, on_progress=on_progress)))
        worker.start()
        assert delivering.wait(30.0)
        sessions[0].request_abort()
        worker.join(60.0)
        fired = len(dev.simulator.device.ground_truth)
    assert sent_before == [0] and len(sessions) == 1
    [outcome] = outcomes
    assert outcome.status == "aborted" and outcome.session_id == sessions[0].session_id
    assert 20 < outcome.delivered[0] == fired < plan.metrics.passes[0].spot_count
    assert all(isinstance(p.interlocks, api.Interlock) for p in seen)
    assert all(p.state is None or isinstance(p.state, api.State) for p in seen)
    with api.TreatmentRecord(record) as rec:
        assert rec.verify().ok
        assert api.session_outcomes(rec)[outcome.session_id] == ("aborted", "")
        assert api.resumable_sessions(rec) == {}


def test_treat_passes_the_start_wait_and_envelope_on(tmp_path: Path) -> None:
    kept: list[api.TreatmentSession] = []
    with api.open_device(WAITING) as dev:
        plan = plan_for(dev)
        outcome = api.treat(dev, [plan], tmp_path / "r.db", operator="o", patient_ref="p",
                            on_session=kept.append, start_wait_s=0.2)
        assert outcome.status == "waiting" and kept[0].start_wait_s == 0.2

        def keep_and_abort(session: api.TreatmentSession) -> None:
            kept.append(session)
            session.request_abort()  # nothing fired

        api.treat(dev, [plan], tmp_path / "r.db", operator="o", patient_ref="p",
                  on_session=keep_and_abort)
        assert kept[1].start_wait_s == 30.0  # the session's default, as before
        strict = replace(api.ClinicalEnvelope.load(), max_coverage_percent=1.0)
        with pytest.raises(api.PlanRejected, match="coverage_percent"):
            api.treat(dev, [plan], tmp_path / "r.db", operator="o", patient_ref="p",
                      envelope=strict)
        assert len(dev.simulator.device.ground_truth) == 0
    with api.TreatmentRecord(tmp_path / "r.db") as rec:
        assert len(rec.sessions()) == 2  # the rejected plan recorded nothing


def test_a_failing_on_session_cancels_the_session_and_is_raised(tmp_path: Path) -> None:
    def broken(session: api.TreatmentSession) -> None:
        raise RuntimeError("the GUI could not show the session")

    with api.open_device(WAITING) as dev:
        with pytest.raises(RuntimeError, match="could not show"):
            api.treat(dev, [plan_for(dev)], tmp_path / "r.db", operator="o",
                      patient_ref="p", on_session=broken)
        assert len(dev.simulator.device.ground_truth) == 0
    with api.TreatmentRecord(tmp_path / "r.db") as rec:
        assert api.session_outcomes(rec) == {1: ("cancelled", "")}  # not left open


def test_resumable_sessions_are_those_not_ended(tmp_path: Path) -> None:
    """Paused, waiting, never run (open): resumable; completed, aborted, cancelled: not."""
    path = tmp_path / "r.db"
    with api.open_device(WAITING) as dev:
        plan = plan_for(dev)

        def treat(**kwargs: object) -> api.SessionOutcome:
            return api.treat(dev, [plan], path, operator="o", patient_ref="p",
                             **kwargs)  # type: ignore[arg-type]

        waiting = treat(start_wait_s=0.1)
        paused = treat(on_session=lambda s: s.request_pause())
        aborted = treat(on_session=lambda s: s.request_abort())
        with api.TreatmentRecord(path) as record:
            never_run = api.TreatmentSession(dev, [plan], record, operator="o", patient_ref="p")
            never_run.close()
            cancelled = api.TreatmentSession(dev, [plan], record, operator="o",
                                             patient_ref="p")
            cancelled.cancel()
            cancelled.close()
    dev_done = api.open_device("sim://?footswitch=down&pre_emission_ms=20")
    with dev_done:
        completed = api.treat(dev_done, [plan_for(dev_done)], path, operator="o",
                              patient_ref="p")
    assert [o.status for o in (waiting, paused, aborted, completed)] == [
        "waiting", "paused", "aborted", "completed"]
    with api.TreatmentRecord(path, read_only=True) as record:
        assert api.resumable_sessions(record) == {
            waiting.session_id: ("waiting", ""), paused.session_id: ("paused", ""),
            never_run.session_id: ("open", "")}
        assert api.session_outcomes(record)[cancelled.session_id] == ("cancelled", "")


def slow_events(monkeypatch: pytest.MonkeyPatch, delay_s: float) -> None:
    """Every session handles each device event ``delay_s`` late on the link's thread (a
    loaded machine, a slow record)."""
    handle = api.TreatmentSession._on_event

    def slowly(self: api.TreatmentSession, item: object) -> None:
        time.sleep(delay_s)
        handle(self, item)  # type: ignore[arg-type]

    monkeypatch.setattr(api.TreatmentSession, "_on_event", slowly)


@pytest.mark.parametrize("request_stop, outcome", [
    (lambda s: s.request_pause(), "paused"), (lambda s: s.request_abort(), "aborted")])
def test_a_runs_end_is_recorded_after_the_transitions_before_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        request_stop: Callable[[api.TreatmentSession], None], outcome: str) -> None:
    """The session records the device's transitions from the link's thread, each subscriber
    on a thread of its own: under load the stop's own DISARM or ABORT (and the ARM before
    it) were recorded after run_stopped or session_end, and an aborted session read "open"
    (resumable). Here the recording is slowed down; the run's end still comes last."""
    slow_events(monkeypatch, 0.2)
    path = tmp_path / "r.db"
    with api.open_device(WAITING) as dev:
        done = api.treat(dev, [plan_for(dev)], path, operator="o", patient_ref="p",
                         on_session=request_stop)
    assert done.status == outcome
    with api.TreatmentRecord(path, read_only=True) as record:
        kinds = [e.kind for e in record.entries(done.session_id)]
        assert "transition" in kinds
        assert kinds[-1] == ("session_end" if outcome == "aborted" else "run_stopped")
        assert api.session_outcomes(record)[done.session_id] == (outcome, "")


def test_transitions_are_recorded_in_order_when_the_events_thread_lags(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mirror adopts the session's status polls and the link thread's events: a status
    ahead of events not yet handled recorded STANDBY -> ARMED, then the events' transitions
    after it (seen once in CI under load). Each status now waits for the events before it."""
    slow_events(monkeypatch, 0.1)
    path = tmp_path / "r.db"
    with api.open_device("sim://?pre_emission_ms=20&footswitch=down&seed=5") as dev:
        done = api.treat(dev, [plan_for(dev)], path, operator="o", patient_ref="p")
    assert done.status == "completed"
    with api.TreatmentRecord(path, read_only=True) as record:
        steps = [(e.body["old"], e.body["new"])
                 for e in record.entries(done.session_id, "transition")]
    assert steps == [(None, "STANDBY"), ("STANDBY", "READY"), ("READY", "ARMED"),
                     ("ARMED", "EMITTING"), ("EMITTING", "STANDBY")]


def test_the_readme_gui_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"),
                                    re.S) if "on_session=" in b]
    assert len(blocks) == 1, "README lost its GUI example"
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {})  # our own documentation
    out = capsys.readouterr().out
    assert "paused - paused by the operator before emission in pass 1" in out
    assert "resumable: {1: ('paused', '')}" in out
