"""Hypothesis state machine: operator actions, interlocks, footswitch, link faults and device
resets in any order, against the simulator. The invariants are checked on its ground truth."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from controller.errors import SettingsError
from controller.record import TreatmentRecord
from controller.session import SessionProgress, TreatmentSession, plan_for_device
from controller.settings import DensitySpec, PassSettings, Pattern, TreatmentSettings
from drivers import DeviceError, open_device
from tests.handpieces import unscreened

INPUTS = {"door": ("closed", "open"), "key": ("on", "off"), "estop": ("released", "pressed"),
          "footswitch": ("down", "up")}


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.dev = open_device("sim://?footswitch=down&pre_emission_ms=5&seed=9")
        self.sim = self.dev.simulator
        self.record = TreatmentRecord(Path(self.tmp.name) / "r.db")
        plan = plan_for_device(
            TreatmentSettings(unscreened(), Pattern("square", 3.0),
                              DensitySpec(coverage_pct=8.0), depth_um=200.0,
                              passes=PassSettings(2)), self.dev.info.limits)
        self.session = TreatmentSession(self.dev, [plan], self.record, operator="fuzz",
                                        patient_ref="S", start_wait_s=0.05)
        self.inputs = {name: words[0] for name, words in INPUTS.items()}
        self.unsafe_since: float | None = None
        self.unsafe_intervals: list[tuple[float, float]] = []
        self.mid_run: tuple[int, str, str] | None = None

    def teardown(self) -> None:
        self.session.close()
        self.dev.close()
        self.record.close()
        self.tmp.cleanup()

    # -- the world --------------------------------------------------------------------------
    def _set(self, name: str, value: str) -> None:
        self.inputs[name] = value
        self.sim.device.set_input(**{name: value})
        safe = all(self.inputs[n] == INPUTS[n][0] for n in ("door", "key", "estop"))
        now = self.sim.device.now_s
        if not safe and self.unsafe_since is None:
            self.unsafe_since = now
        elif safe and self.unsafe_since is not None:
            self.unsafe_intervals.append((self.unsafe_since, now))
            self.unsafe_since = None

    @rule(name=st.sampled_from(sorted(INPUTS)), closed=st.booleans())
    def set_input(self, name: str, closed: bool) -> None:
        self._set(name, INPUTS[name][0 if closed else 1])

    @rule(drop=st.sampled_from([0.0, 0.0, 0.02, 0.1]),
          corrupt=st.sampled_from([0.0, 0.02]), duplicate=st.sampled_from([0.0, 0.05]))
    def link_faults(self, drop: float, corrupt: float, duplicate: float) -> None:
        self.sim.faults.link(drop=drop, corrupt=corrupt, duplicate=duplicate)

    @rule()
    def device_reset(self) -> None:
        self.sim.faults.reset_device()

    @rule(after=st.integers(1, 150), name=st.sampled_from(sorted(INPUTS)),
          action=st.sampled_from(["toggle", "pause", "abort"]))
    def plan_mid_run_event(self, after: int, name: str, action: str) -> None:
        self.mid_run = (after, name, action)

    # -- the operator -----------------------------------------------------------------------
    @rule()
    def run(self) -> None:
        event = self.mid_run
        self.mid_run = None

        def on_progress(p: SessionProgress) -> None:
            nonlocal event
            if event is not None and p.delivered >= event[0]:
                _, name, action = event
                event = None
                if action == "toggle":
                    self._set(name, INPUTS[name][1])
                elif action == "pause":
                    self.session.request_pause()
                else:
                    self.session.request_abort()

        self.session.on_progress = on_progress
        if list(self.record.entries(self.session.session_id, "session_end")):
            fired = len(self.sim.device.ground_truth)
            with pytest.raises(SettingsError):  # an ended session does not run again
                self.session.run()
            assert len(self.sim.device.ground_truth) == fired
            return
        with contextlib.suppress(DeviceError):
            outcome = self.session.run()
            assert outcome.status in ("completed", "paused", "aborted", "fault", "waiting")

    @precondition(lambda self: True)
    @rule()
    def operator_reset(self) -> None:
        with contextlib.suppress(DeviceError):
            self.session.operator_reset()

    # -- invariants (on the simulator's ground truth) -----------------------------------------
    @invariant()
    def never_fired_with_an_interlock_open(self) -> None:
        times = self.sim.device.ground_truth["time_s"]
        intervals = list(self.unsafe_intervals)
        if self.unsafe_since is not None:
            intervals.append((self.unsafe_since, np.inf))
        for start, end in intervals:
            assert not np.any((times > start) & (times < end)), "fired with an interlock open"

    @invariant()
    def no_spot_twice_and_record_is_truth(self) -> None:
        truth = self.sim.device.ground_truth
        for job in self.session.jobs:
            fired = truth[truth["pass_index"] == job.number]
            assert len(np.unique(fired["index"])) == len(fired), "a spot fired twice"
            index, measured = self.record.delivered_spots(self.session.session_id, job.number)
            position = {int(i): k for k, i in enumerate(fired["index"])}
            assert all(int(i) in position for i in index), "record holds an unfired spot"
            known = measured >= 0
            rows = [position[int(i)] for i in index[known]]
            assert np.array_equal(measured[known], fired["measured_uj"][rows])

    @invariant()
    def record_verifies(self) -> None:
        assert self.record.verify().ok


TestSessionMachine = SessionMachine.TestCase
TestSessionMachine.settings = settings(max_examples=25, stateful_step_count=15, deadline=None,
                                       suppress_health_check=list(HealthCheck))
