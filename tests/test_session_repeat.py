"""The same plan delivered again on the same device, for the next patient: a new pass to the
device, fired and recorded in full; a session never takes another session's count."""

from __future__ import annotations

import numpy as np
import pytest

from controller.record import TreatmentRecord
from controller.session import TreatmentSession, plan_for_device
from drivers import Device, open_device
from tests.test_session import FAST, settings


def patient(dev: Device, rec: TreatmentRecord, ref: str, session_id: int | None = None,
            start_wait_s: float = 30.0, passes: int = 2) -> TreatmentSession:
    """A session of the same plan (seed 0) for patient ``ref`` (new, or resumed)."""
    plan = plan_for_device(settings(passes=passes), dev.info.limits)
    return TreatmentSession(dev, [plan], rec, operator="tester", patient_ref=ref,
                            session_id=session_id, start_wait_s=start_wait_s)


def fired_by(session: TreatmentSession, truth: np.ndarray) -> dict[int, list[int]]:
    """What the device fired under each of the session's device pass indices."""
    return {job.number: truth["index"][truth["pass_index"] == job.spots.pass_index].tolist()
            for job in session.jobs}


@pytest.mark.parametrize("passes", [1, 2])
def test_the_same_plan_for_the_next_patient_fires_again_and_records_what_fired(
        record: TreatmentRecord, passes: int) -> None:
    with open_device(f"sim://?{FAST}") as dev:
        first = patient(dev, record, "A", passes=passes)
        assert first.run().status == "completed"
        first.close()
        fired_first = len(dev.simulator.device.ground_truth)
        second = patient(dev, record, "B", passes=passes)
        outcome = second.run()
        second.close()
        truth = dev.simulator.device.ground_truth
    assert outcome.status == "completed"
    total = sum(job.spots.count for job in second.jobs)
    assert fired_first == total and len(truth) == 2 * total  # fired again, in full
    assert [j.spots.checksum for j in second.jobs] == [j.spots.checksum for j in first.jobs]
    assert {j.spots.pass_index for j in second.jobs}.isdisjoint(
        {j.spots.pass_index for j in first.jobs})
    for session in (first, second):
        for number, indices in fired_by(session, truth).items():
            recorded, measured = record.delivered_spots(session.session_id, number)
            assert recorded.tolist() == indices == list(range(session.jobs[number].spots.count))
            assert (measured >= 0).all()  # every spot measured, none taken over unmeasured
    assert not list(record.entries(second.session_id, "reconciled"))
    stored = next(record.entries(second.session_id, "session")).body["passes"]
    assert [p["device_pass_index"] for p in stored] == [j.spots.pass_index for j in second.jobs]
    assert record.verify().ok


def test_a_pass_the_session_never_loaded_is_not_taken_from_the_device(
        record: TreatmentRecord, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session numbering its passes from 0 (as a record written before the device pass
    indices, another record, or a device that lost its numbering in a power loss) meets the
    device still holding the completed pass of the same plan: the session must not count
    that pass's spots as its own. The device refuses the pair as fired (BAD_INDEX); the pass,
    never loaded by this session, takes the next free index and fires in full (the new
    patient is treated; the session was a fault until the pass was renumbered)."""
    with open_device(f"sim://?{FAST}") as dev:
        first = patient(dev, record, "A", passes=1)
        assert first.run().status == "completed"
        first.close()
        assert [j.spots.pass_index for j in first.jobs] == [0]
        monkeypatch.setattr(TreatmentSession, "_device_pass_indices",
                            lambda self, session_id: [0], raising=False)
        second = patient(dev, record, "B", passes=1)
        outcome = second.run()
        second.close()
        truth = dev.simulator.device.ground_truth
    assert outcome.status == "completed"
    (job,) = second.jobs
    assert job.spots.pass_index == 1
    (renumbered,) = record.entries(second.session_id, "device_pass_index")
    assert renumbered.body == {"pass_index": 0, "device_pass_index": 1, "was": 0}
    assert len(truth) == 2 * job.spots.count  # fired again in full, each pass once
    for session in (first, second):
        for number, indices in fired_by(session, truth).items():
            recorded, measured = record.delivered_spots(session.session_id, number)
            assert recorded.tolist() == indices == list(range(job.spots.count))
            assert (measured >= 0).all()  # its own firing, none taken over
    assert not list(record.entries(second.session_id, "reconciled"))
    assert record.verify().ok


def test_a_renumbered_pass_resumes_under_its_new_index(
        record: TreatmentRecord, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_device(f"sim://?{FAST}") as dev:
        assert patient(dev, record, "A", passes=1).run().status == "completed"
        monkeypatch.setattr(TreatmentSession, "_device_pass_indices",
                            lambda self, session_id: [0], raising=False)
        dev.simulator.device.set_input(footswitch="up")
        waiting = patient(dev, record, "B", passes=1, start_wait_s=0.2)
        assert waiting.run().status not in ("completed", "aborted")  # loaded, then waited
        waiting.close()
        monkeypatch.undo()
        dev.simulator.device.set_input(footswitch="down")
        resumed = patient(dev, record, "B", session_id=waiting.session_id, passes=1)
        assert [j.spots.pass_index for j in resumed.jobs] == [1]
        assert resumed.run().status == "completed"
        resumed.close()
        truth = dev.simulator.device.ground_truth
    assert fired_by(resumed, truth) == {0: list(range(resumed.jobs[0].spots.count))}
    assert record.verify().ok


def test_a_resumed_session_keeps_its_device_pass_indices(record: TreatmentRecord) -> None:
    """Numbered on from the device's last pass, a paused session resumes under the indices it
    recorded, after another session used the device meanwhile."""
    with open_device(f"sim://?{FAST}") as dev:
        earlier = patient(dev, record, "A")
        assert earlier.run().status == "completed"
        earlier.close()
        waiting = patient(dev, record, "B", start_wait_s=0.2)
        dev.simulator.device.set_input(footswitch="up")
        assert waiting.run().status not in ("completed", "aborted")
        waiting.close()
        dev.simulator.device.set_input(footswitch="down")
        between = patient(dev, record, "C")
        assert between.run().status == "completed"
        between.close()
        resumed = patient(dev, record, "B", session_id=waiting.session_id)
        assert [j.spots.pass_index for j in resumed.jobs] == [
            j.spots.pass_index for j in waiting.jobs]
        assert resumed.run().status == "completed"
        resumed.close()
        truth = dev.simulator.device.ground_truth
    assert [j.spots.pass_index for j in waiting.jobs] == [2, 3]
    for number, indices in fired_by(resumed, truth).items():
        assert indices == list(range(resumed.jobs[number].spots.count))
        assert record.delivered_spots(resumed.session_id, number)[0].tolist() == indices
    assert record.verify().ok
