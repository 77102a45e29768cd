"""Treatment sessions against the simulator: the record always equals the ground truth."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from controller.handpiece import get_handpiece
from controller.record import TreatmentRecord
from controller.session import (
    SessionProgress,
    TreatmentSession,
    WarningsNotAcknowledged,
    plan_for_device,
)
from controller.settings import (
    DensitySpec,
    PassSettings,
    Pattern,
    ScanOrder,
    TreatmentSettings,
)
from controller.timing import GalvoTiming
from controller.validation import ClinicalEnvelope, PlanRejected
from drivers import Device, DeviceClosed, open_device
from drivers.errors import InterlockOpen
from drivers.protocol.messages import FaultCode, State
from sim_hw.config import SimConfig
from sim_hw.pty_server import PtyServer, serve_pty
from tests.handpieces import unscreened

FAST = "pre_emission_ms=30&footswitch=down&seed=5"


def settings(size_mm: float = 5.0, passes: int = 2, coverage: float = 8.0,
             depth_um: float = 200.0) -> TreatmentSettings:
    return TreatmentSettings(unscreened(), Pattern("square", size_mm),
                             DensitySpec(coverage_pct=coverage), depth_um=depth_um,
                             passes=PassSettings(passes))


def session_for(dev: Device, rec: TreatmentRecord, **kwargs: Any) -> TreatmentSession:
    plan = plan_for_device(settings(**kwargs.pop("plan", {})), dev.info.limits)
    return TreatmentSession(dev, [plan], rec, operator=kwargs.pop("operator", "tester"),
                            patient_ref=kwargs.pop("patient_ref", "P-1"), **kwargs)


def assert_record_equals_truth(session: TreatmentSession, truth: np.ndarray) -> None:
    """Every confirmed spot is in the record, none twice, energies as measured."""
    for job in session.jobs:
        fired = truth[truth["pass_index"] == job.number]
        assert len(np.unique(fired["index"])) == len(fired), "a spot fired twice"
        index, measured = session.record.delivered_spots(session.session_id, job.number)
        assert index.tolist() == fired["index"].tolist()
        known = measured >= 0
        assert np.array_equal(measured[known], fired["measured_uj"][known])
    assert session.record.verify().ok


def test_two_pass_session_completes_and_record_equals_truth(record: TreatmentRecord) -> None:
    seen: list[SessionProgress] = []
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record, on_progress=seen.append)
        outcome = session.run()
        truth = dev.simulator.device.ground_truth
    assert outcome.status == "completed"
    assert outcome.delivered == {j.number: j.spots.count for j in session.jobs}
    assert_record_equals_truth(session, truth)
    assert seen[-1].delivered == seen[-1].total and seen[-1].pass_number == 1
    kinds = [e.kind for e in record.entries(session.session_id)]
    assert kinds[0] == "session" and kinds[-1] == "session_end"
    assert kinds.count("pass_end") == 2 and "transition" in kinds
    stored = next(record.entries(session.session_id, "session")).body["passes"]
    for job, entry in zip(session.jobs, stored, strict=True):
        assert entry["handpiece"] == job.plan.settings.handpiece.name
        assert GalvoTiming.from_record(entry["galvo"]) == job.plan.timing


def test_rejected_plan_lists_every_rule(record: TreatmentRecord) -> None:
    strict = ClinicalEnvelope("strict", 5.0, 8.0, 1, 10.0, 1.0, 1600.0)
    with open_device(f"sim://?{FAST}") as dev, pytest.raises(PlanRejected) as info:
        session_for(dev, record, envelope=strict)
    text = str(info.value)
    for rule in ("passes = 2; envelope allows at most 1", "pass 1: coverage_percent",
                 "pass 2: energy_mj", "cumulative_fluence_j_cm2"):
        assert rule in text
    assert len(list(record.entries())) == 0  # nothing recorded for a rejected plan


def demo_like(passes: int = 2) -> TreatmentSettings:
    """6 mm, 6 %, 250 µm on spot120: the thermal screen rejects two such passes back to back
    and accepts them 5 s apart (controller/data/demo.toml)."""
    return TreatmentSettings(get_handpiece("spot120"), Pattern("square", 6.0),
                             DensitySpec(coverage_pct=6.0), depth_um=250.0,
                             passes=PassSettings(passes),
                             order=ScanOrder(kind="thermal-spread"))


def test_the_thermal_screen_gates_the_session_and_the_wait_counts(
        record: TreatmentRecord) -> None:
    with open_device(f"sim://?{FAST}") as dev:
        plan = plan_for_device(demo_like(), dev.info.limits)
        with pytest.raises(PlanRejected) as info:
            TreatmentSession(dev, [plan], record, operator="t", patient_ref="p")
        assert "thermal screen of plan 1: pass 2: " in str(info.value)
        assert "pass_wait_s = " in str(info.value)  # the evaluated wait is suggested
        assert len(list(record.entries())) == 0
        session = TreatmentSession(dev, [plan], record, operator="t", patient_ref="p",
                                   pass_wait_s=5.0)
        assert session.thermal[0].screen is not None and session.thermal[0].screen.ok
        assert len(dev.simulator.device.ground_truth) == 0


def test_cooling_wait_between_passes_is_enforced_and_recorded(record: TreatmentRecord) -> None:
    seen: list[SessionProgress] = []
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record, on_progress=seen.append, pass_wait_s=0.6)
        assert session.run().status == "completed"
    sid = session.session_id
    ends = {e.body["pass_index"]: e.at for e in record.entries(sid, "pass_end")}
    starts = {e.body["pass_index"]: e.at for e in record.entries(sid, "pass_start")}
    assert starts[1] - ends[0] >= 0.6
    assert [e.body for e in record.entries(sid, "cooling_wait")] == [
        {"pass_index": 1, "wait_s": 0.6}]
    assert any(p.pass_number == 1 and p.waiting_for.startswith("cooling wait") for p in seen)
    assert not any(p.pass_number == 0 and p.waiting_for.startswith("cooling") for p in seen)


def test_a_pass_without_an_end_is_cooled_after_from_its_last_delivery(
        record: TreatmentRecord) -> None:
    """A fault that cuts a pass's last spot leaves every spot delivered and no pass_end: the
    next pass (a resume after the reset) started at once, without the cooling wait."""
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record, pass_wait_s=0.5)
        first = session.jobs[0].spots.count
        record.delivered(session.session_id, 0, np.arange(first), np.full(first, 1000))
        started = time.monotonic()
        session._cool_down(session.jobs[1])
        waited_s = time.monotonic() - started
    assert waited_s >= 0.4
    assert [e.body for e in record.entries(session.session_id, "cooling_wait")] == [
        {"pass_index": 1, "wait_s": 0.5}]


def test_abort_while_cooling_fires_nothing_more(record: TreatmentRecord) -> None:
    def abort_when_cooling(p: SessionProgress) -> None:
        if p.waiting_for.startswith("cooling wait"):
            session.request_abort()

    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record, on_progress=abort_when_cooling, pass_wait_s=60.0)
        outcome = session.run()
        truth = dev.simulator.device.ground_truth
    assert outcome.status == "aborted" and "cooling" in outcome.detail
    assert set(truth["pass_index"].tolist()) == {0}
    assert outcome.delivered[1] == 0


def test_borderline_warnings_must_be_acknowledged(record: TreatmentRecord) -> None:
    envelope = ClinicalEnvelope("tight", 9.5, 60.0, 4, 150.0, 100.0, 1600.0)
    with open_device(f"sim://?{FAST}") as dev:
        session = session_for(dev, record, envelope=envelope)
        assert any("coverage_percent" in str(w) for w in session.warnings)
        with pytest.raises(WarningsNotAcknowledged, match="must be acknowledged"):
            session.run()
        assert len(dev.simulator.device.ground_truth) == 0
        session.acknowledge_warnings(by="dr tester")
        assert session.run().status == "completed"


def test_interlock_mid_pass_faults_and_needs_an_operator_reset(record: TreatmentRecord) -> None:
    with open_device(f"sim://?{FAST}&clock=realtime") as dev:
        sim = dev.simulator.device

        def open_door(p: SessionProgress) -> None:
            if p.delivered >= 50 and p.state is State.EMITTING:
                sim.set_input(door="open")

        session = session_for(dev, record, on_progress=open_door, plan={"passes": 1})
        outcome = session.run()
        assert outcome.status == "fault" and "INTERLOCK_OPEN" in outcome.detail
        fired = len(sim.ground_truth)
        assert 50 <= fired < session.jobs[0].spots.count
        with pytest.raises(InterlockOpen):
            session.operator_reset()
        session.on_progress = lambda p: None
        sim.set_input(door="closed")
        session.operator_reset()
        assert session.run().status == "completed"
        assert_record_equals_truth(session, sim.ground_truth)
    transitions = [e.body for e in record.entries(kind="transition")]
    assert any(t["new"] == "FAULT" and t["fault"] == "INTERLOCK_OPEN" for t in transitions)


def test_footswitch_release_pauses_and_press_resumes(record: TreatmentRecord) -> None:
    with open_device(f"sim://?{FAST}&clock=realtime") as dev:
        sim = dev.simulator.device
        released = threading.Event()

        def release(p: SessionProgress) -> None:
            if p.delivered >= 40 and not released.is_set():
                released.set()
                sim.set_input(footswitch="up")
                threading.Timer(0.2, lambda: sim.set_input(footswitch="down")).start()

        session = session_for(dev, record, on_progress=release, plan={"passes": 1})
        assert session.run().status == "completed"
        assert_record_equals_truth(session, sim.ground_truth)
    causes = [e.body["cause"] for e in record.entries(kind="transition")]
    assert "footswitch" in causes


def test_operator_pause_then_resume_and_abort(record: TreatmentRecord) -> None:
    with open_device(f"sim://?{FAST}&clock=realtime") as dev:
        session = session_for(dev, record, plan={"passes": 2})
        session.on_progress = lambda p: session.request_pause() if p.delivered >= 30 else None
        outcome = session.run()
        assert outcome.status == "paused"
        assert dev.status().state is State.PAUSED
        session.on_progress = lambda p: session.request_abort() if p.pass_number == 1 else None
        outcome = session.run()
        assert outcome.status == "aborted"
        assert dev.status().state is State.STANDBY
        assert outcome.delivered[0] == session.jobs[0].spots.count
        assert outcome.delivered[1] < session.jobs[1].spots.count
        assert_record_equals_truth(session, dev.simulator.device.ground_truth)
    ends = [e.body for e in record.entries(kind="pass_end")]
    assert ends[-1] == {"pass_index": 1, "status": "aborted"}


@pytest.mark.parametrize(("drift", "status"), [(12.0, "completed"), (30.0, "fault")])
def test_energy_monitor_drift(record: TreatmentRecord, drift: float, status: str) -> None:
    with open_device(f"sim://?{FAST}&noise_percent=0.5&drift_percent={drift}") as dev:
        session = session_for(dev, record, plan={"passes": 1})
        outcome = session.run()
        assert outcome.status == status
        kinds = {e.kind for e in record.entries(session.session_id)}
        if status == "fault":
            assert "ENERGY_DEVIATION" in outcome.detail and "energy_fault" in kinds
            assert dev.status().fault_code is FaultCode.ENERGY_DEVIATION
        else:
            assert "energy_drift" in kinds
        assert_record_equals_truth(session, dev.simulator.device.ground_truth)


def test_device_reset_mid_pass_resumes_without_repeats(record: TreatmentRecord) -> None:
    with open_device(f"sim://?{FAST}&clock=realtime") as dev:
        sim = dev.simulator

        def reset(p: SessionProgress) -> None:
            if p.delivered >= 60 and sim.device.state is State.EMITTING:
                sim.faults.reset_device()

        session = session_for(dev, record, on_progress=reset, plan={"passes": 1})
        outcome = session.run()
        assert outcome.status == "fault" and "DEVICE_RESET" in outcome.detail
        session.on_progress = lambda p: None
        session.operator_reset()
        assert session.run().status == "completed"
        assert_record_equals_truth(session, sim.device.ground_truth)


def unplug_after(served: PtyServer, spots: int) -> Callable[[SessionProgress], None]:
    """A progress callback that disconnects ``served`` once ``spots`` are delivered."""
    unplugged = threading.Event()

    def unplug(p: SessionProgress) -> None:
        if p.delivered >= spots and not unplugged.is_set():
            unplugged.set()
            served.faults.disconnect()

    return unplug


def test_lost_link_reconnects_reconciles_and_resumes(record: TreatmentRecord) -> None:
    config = SimConfig.from_query(dict(kv.split("=") for kv in f"{FAST}&clock=realtime"
                                       .split("&")))
    with serve_pty(config) as served:
        dev = open_device(served.path)
        session = session_for(dev, record, on_progress=unplug_after(served, 60),
                              plan={"passes": 1},
                              reconnect=lambda: open_device(served.path))
        outcome = session.run()
        for _ in range(3):  # the watchdog may fault the device while the link is down
            if outcome.status != "fault":
                break
            session.operator_reset()
            outcome = session.run()
        assert outcome.status == "completed"
        kinds = [e.kind for e in record.entries(session.session_id)]
        assert "link_lost" in kinds and "reconnected" in kinds
        assert_record_equals_truth(session, served.device.ground_truth)
        replacement = session.device
        session.close()  # closes the Device it opened (its threads and port stayed open)
        assert replacement is not dev and not dev.closed  # the caller's is the caller's
        with pytest.raises(DeviceClosed):
            replacement.status()
        dev.close()


def test_waiting_for_the_footswitch_times_out_without_emission(record: TreatmentRecord) -> None:
    with open_device("sim://?pre_emission_ms=30&footswitch=up") as dev:
        session = session_for(dev, record, start_wait_s=0.3, plan={"passes": 1})
        started = time.monotonic()
        outcome = session.run()
        assert outcome.status == "waiting" and "footswitch not pressed" in outcome.detail
        assert time.monotonic() - started >= 0.3
        assert len(dev.simulator.device.ground_truth) == 0
        assert dev.status().state is State.READY
