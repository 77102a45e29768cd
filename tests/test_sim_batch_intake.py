"""Consecutive SPOT_BATCH requests taken in one go give the same replies, buffer and plan as
taking them one at a time, for good batches and for every kind of refusal among them."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.protocol import FrameDecoder, decode_payload, encode, encode_frame, message
from drivers.protocol import messages as m
from sim_hw.config import SimConfig
from sim_hw.device import SimDevice
from sim_hw.probe import make_spots, plan_checksum

PLAN = make_spots(900)
CHECKSUM = plan_checksum(PLAN)
BATCH = m.BY_NAME["SPOT_BATCH"]


def loaded_device(emitting: bool) -> SimDevice:
    """A device with PLAN loaded (READY, or EMITTING with nothing buffered yet), output
    drained; a small buffer, so that credits run out."""
    device = SimDevice(SimConfig(pre_emission_ms=0, footswitch=True, buffer_spots=600))
    requests = [message("LOAD_PLAN", 1, pass_index=0, spot_count=len(PLAN),
                        plan_checksum=CHECKSUM, first_index=0)]
    if emitting:
        requests += [message("SPOT_BATCH", 2, records=PLAN[:1]),
                     message("ARM", 3, plan_checksum=CHECKSUM), message("START", 4)]
    device.receive(b"".join(encode(r) for r in requests))
    device.transmit()
    return device


def damaged(batch: np.ndarray, damage: str) -> bytes:
    """The wire bytes of one SPOT_BATCH of ``batch``, with ``damage`` done to it."""
    records = batch.copy()
    if damage == "energy":
        records["energy_uj"][-1] = 10**6  # above the device's limit
    elif damage == "index":
        records["index"][0] += 1
    elif damage == "stack":
        records["stack"][0] = 0  # outside the record layout's range
    count = len(records) + (damage == "length")  # the count field disagrees with the records
    return encode_frame(BATCH.type_id, 0, BATCH.struct.pack(count, 0) + records.tobytes())


@st.composite
def requests(draw: st.DrawFn, start: int) -> list[bytes]:
    """Batches continuing the plan from ``start`` (some damaged, some beyond the credits),
    now and then another request between them."""
    wires = []
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["batch"] * 6 + ["status", "heartbeat"]))
        if kind != "batch":
            wires.append(encode(message(kind.upper() if kind == "heartbeat" else
                                        "STATUS_REQUEST", 0)))
            continue
        size = draw(st.integers(1, m.MAX_BATCH_SPOTS))
        batch = PLAN[start:start + size]
        if not len(batch):
            break
        damage = draw(st.sampled_from(["none"] * 8 + ["energy", "index", "stack", "length"]))
        wires.append(damaged(batch, damage))
        if damage == "none" or draw(st.booleans()):  # a refused batch may be sent again
            start += len(batch)
    return wires


def numbered(wires: list[bytes]) -> list[bytes]:
    """Each request with its own sequence number (the frames re-encoded)."""
    out = []
    for seq, wire in enumerate(wires, start=10):
        (frame,) = FrameDecoder().feed(wire)
        out.append(encode_frame(frame.type_id, seq, frame.payload))
    return out


def state_of(device: SimDevice) -> tuple[object, ...]:
    buffered = device._buffer.ahead()
    plan = device.plan
    return (bytes(device.transmit()), buffered.spot.tobytes(), buffered.mirror_x.tolist(),
            buffered.mirror_y.tolist(), None if plan is None else plan.next_index,
            dict(device.counters), device.state, device._next_fire_s)


@settings(max_examples=60, deadline=None)
@given(st.booleans(), st.data())
def test_batches_taken_together_are_taken_as_one_by_one(emitting: bool,
                                                        data: st.DataObject) -> None:
    wires = numbered(data.draw(requests(1 if emitting else 0)))  # emitting: spot 0 sent
    together, one_by_one = loaded_device(emitting), loaded_device(emitting)
    together.receive(b"".join(wires))
    for wire in wires:
        one_by_one.receive(wire)
    assert state_of(together) == state_of(one_by_one)


def test_good_batches_sent_together_are_acknowledged_each() -> None:
    device = loaded_device(emitting=False)
    wires = numbered([encode(message("SPOT_BATCH", 0, records=PLAN[a:a + 100]))
                      for a in range(0, 300, 100)])
    device.receive(b"".join(wires))
    replies = [decode_payload(f) for f in FrameDecoder().feed(device.transmit())]
    assert [(r.name, r.seq, r["credits"], r["value"]) for r in replies] == [
        ("ACK", 10, 500, 100), ("ACK", 11, 400, 200), ("ACK", 12, 300, 300)]
    assert device.plan is not None and device.plan.next_index == 300
