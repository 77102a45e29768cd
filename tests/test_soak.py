"""Soak: a long multi-pass treatment streamed over the pty with a random fault every ~10,000
spots, resumed under the operator policy; at the end the ground truth equals the record, no
spot fired twice, no spot fired while an interlock was open, and memory stayed flat.

``make test`` runs SOAK_SPOTS_SHORT spots; ``make soak`` (``CO2SCAN_SOAK=long``) runs a
1,000,000-spot treatment (48 passes of ~21,000 spots); ``CO2SCAN_SOAK_SPOTS=N`` sets the size.
The simulator's virtual clock skips the machine's own waits, so the run is CPU-bound; it prints
spots/s, faults, resumes and the peak RSS at the start and the end.

Faults (one every 8,000-12,000 confirmed spots, from a fixed seed): frames dropped, corrupted
or duplicated in both directions, the pty unplugged, the device reset, an interlock blip (door
open for a moment) and a footswitch blip. Operator policy: after ``fault`` remove the cause and
``operator_reset``; after ``paused``/``waiting`` or a device error run again; a lost link is
reconnected by the session.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from controller.record import TreatmentRecord
from controller.scanpath import Plan
from controller.session import SessionProgress, TreatmentSession, plan_for_device
from controller.settings import DensitySpec, PassSettings, Pattern, TreatmentSettings
from controller.validation import ClinicalEnvelope
from drivers import Device, open_device
from drivers.errors import DeviceError
from drivers.info import DeviceLimits
from drivers.protocol.messages import State
from sim_hw.config import SimConfig
from sim_hw.pty_server import PtyServer, serve_pty
from tests.handpieces import unscreened

LONG = os.environ.get("CO2SCAN_SOAK") == "long"
SOAK_SPOTS = int(os.environ.get("CO2SCAN_SOAK_SPOTS", 1_000_000 if LONG else 50_000))
#: Spots between two faults (the short run injects more often, so every kind occurs).
FAULT_EVERY = (8_000, 12_000) if SOAK_SPOTS >= 200_000 else (4_000, 7_000)
FAULT_KINDS = ("drop", "corrupt", "duplicate", "disconnect", "device_reset", "interlock_blip",
               "footswitch_blip")
PITCH_UM = 130.0  # jitter up to (pitch - spot) / 2 = 5 µm makes every plan's spots its own
PASSES_PER_PLAN = 10  # MAX_PASSES
#: Soak only: no clinical limit on how much one area receives.
ENVELOPE = ClinicalEnvelope("soak", 100.0, 1000.0, 1000, 1000.0, 1e9, 1e9)


def rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB, from /proc/self/status."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def soak_plans(limits: DeviceLimits, spots: int) -> list[Plan]:
    """Plans of up to 10 passes each, about ``spots`` spots in all, every pass different."""
    per_pass = max(1000, min(21_000, math.ceil(spots / PASSES_PER_PLAN)))
    size_mm = round(math.sqrt(per_pass) * PITCH_UM / 1000.0, 2)
    passes = max(1, math.ceil(spots / per_pass))
    plans = []
    for seed, start in enumerate(range(0, passes, PASSES_PER_PLAN)):
        count = min(PASSES_PER_PLAN, passes - start)
        settings = TreatmentSettings(unscreened(), Pattern("square", size_mm),
                                     DensitySpec(pitch_um=PITCH_UM), depth_um=200.0,
                                     passes=PassSettings(count), jitter_um=5.0)
        plans.append(plan_for_device(settings, limits, seed=seed))
    return plans


class Soak:
    """The fault schedule, the operator, and the counts."""

    def __init__(self, served: PtyServer, seed: int = 1) -> None:
        self.served = served
        self.rng = random.Random(seed)
        self.kinds: list[str] = []
        self.next_fault = self.rng.randint(*FAULT_EVERY)
        self.done_before = 0  # spots of the passes before the current one
        self.pass_number = 0
        self.faults: Counter[str] = Counter()
        self.windows: list[tuple[float, int, float, int]] = []
        self.lock = threading.Lock()

    def on_progress(self, p: SessionProgress) -> None:
        if p.pass_number != self.pass_number:
            self.done_before += self.pass_total
            self.pass_number = p.pass_number
        self.pass_total = p.total
        if self.done_before + p.delivered >= self.next_fault and p.state is State.EMITTING:
            self.next_fault += self.rng.randint(*FAULT_EVERY)
            if not self.kinds:  # every kind once per round, in a random order
                self.kinds = self.rng.sample(FAULT_KINDS, len(FAULT_KINDS))
            self.inject(self.kinds.pop())

    pass_total = 0

    def inject(self, kind: str) -> None:
        faults, sim = self.served.faults, self.served.device
        self.faults[kind] += 1
        if kind in ("drop", "corrupt", "duplicate"):
            faults.next_frames(kind, self.rng.randint(1, 3), "both")
        elif kind == "disconnect":
            faults.disconnect()
        elif kind == "device_reset":
            faults.reset_device()
        elif kind == "interlock_blip":
            sim.set_input(door="open")
            start = (self.served.clock.now_s(), sim.fired_count)
            time.sleep(0.02)
            end = (self.served.clock.now_s(), sim.fired_count)
            sim.set_input(door="closed")
            self.windows.append((*start, *end))
        else:
            sim.set_input(footswitch="up")
            threading.Timer(0.05, lambda: sim.set_input(footswitch="down")).start()

    def remove_causes(self) -> None:
        self.served.faults.clear()
        self.served.device.set_input(door="closed", footswitch="down")


def test_soak(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = SimConfig(footswitch=True, pre_emission_ms=20, clock="virtual", seed=3,
                       noise_percent=1.0)
    served = serve_pty(config, control_port=None)
    record = TreatmentRecord(tmp_path / "soak.db")
    soak = Soak(served)

    def connect() -> Device:
        return open_device(served.path, request_timeout_s=0.5)

    device = connect()
    plans = soak_plans(device.info.limits, SOAK_SPOTS)
    session = TreatmentSession(device, plans, record, operator="soak", patient_ref="SOAK",
                               envelope=ENVELOPE, on_progress=soak.on_progress,
                               reconnect=connect, start_wait_s=10.0)
    total = sum(j.spots.count for j in session.jobs)
    rss_start = rss_kib()
    started = time.perf_counter()
    outcomes: Counter[str] = Counter()
    details: list[str] = []
    try:
        for _ in range(10 * len(FAULT_KINDS) + total // FAULT_EVERY[0] * 3):
            try:
                outcome = session.run()
                status, detail = outcome.status, outcome.detail
            except DeviceError as exc:
                status, detail = "device_error", str(exc)
            outcomes[status] += 1
            details.append(detail)
            if status == "completed":
                break
            soak.remove_causes()
            if session.device.status().state is State.FAULT:
                session.operator_reset()
        else:
            pytest.fail(f"soak did not complete: {outcomes} {details[-3:]}")
        elapsed = time.perf_counter() - started
        rss_end = rss_kib()
        truth = served.device.ground_truth
        # -- the judgement -------------------------------------------------------------------
        for job in session.jobs:
            fired = truth[truth["pass_index"] == job.number]
            assert len(np.unique(fired["index"])) == len(fired), "a spot fired twice"
            index, measured = record.delivered_spots(session.session_id, job.number)
            assert index.tolist() == fired["index"].tolist() == list(range(job.spots.count))
            known = measured >= 0
            assert np.array_equal(measured[known], fired["measured_uj"][known])
        for start_s, start_n, end_s, end_n in soak.windows:
            assert start_n == end_n, "fired with the door open"
            assert not np.any((truth["time_s"] > start_s) & (truth["time_s"] < end_s))
        assert record.verify().ok
        assert len(truth) == total
    finally:
        session.close()
        session.device.close()
        record.close()
        served.stop()
    resumes = sum(outcomes.values()) - 1
    # Memory flat: growth beyond the simulator's own ground truth (which holds every spot by
    # design) stays below 1 KiB per 10 spots, i.e. nothing of the host grows per spot.
    truth_kib = truth.nbytes // 1024
    growth_kib = rss_end[0] - rss_start[0] - truth_kib
    with capsys.disabled():
        print(f"\nsoak: {total:,} spots in {len(session.jobs)} passes, {elapsed:.1f} s "
              f"({total / elapsed:,.0f} spots/s); faults {sum(soak.faults.values())} "
              f"({', '.join(f'{k} {n}' for k, n in sorted(soak.faults.items()))}); "
              f"runs {dict(outcomes)}, resumes {resumes}; RSS start {rss_start[0] / 1024:.0f} MiB "
              f"(peak {rss_start[1] / 1024:.0f}), end {rss_end[0] / 1024:.0f} MiB (peak "
              f"{rss_end[1] / 1024:.0f}), ground truth {truth_kib / 1024:.0f} MiB")
        if os.environ.get("CO2SCAN_SOAK_DETAILS"):
            print("\n".join(details))
    assert sum(soak.faults.values()) >= total // FAULT_EVERY[1] - 1
    assert growth_kib < max(64 * 1024, total // 10), f"RSS grew {growth_kib} KiB beyond truth"
