"""A device's reply that breaks the protocol fails its request at once, naming the field: a
device reporting limits it cannot have (no spot buffer, a heartbeat slower than its watchdog)
is refused when it is opened instead of being driven (firmware_protocol.md section 2)."""

from __future__ import annotations

import time

import pytest

from drivers import Device, DeviceTimeout, InvalidReply
from drivers.protocol import MessageError, decode_payload, encode, encode_frame
from drivers.protocol.framing import FrameDecoder
from drivers.protocol.messages import BY_NAME
from drivers.protocol.spec import example_messages
from tests.test_link_events import ScriptedTransport

IDENTIFY_REPLY = BY_NAME["IDENTIFY_REPLY"]
GOOD = next(m for m in example_messages() if m.name == "IDENTIFY_REPLY")


def identify_reply(seq: int, **changes: int) -> bytes:
    """An IDENTIFY_REPLY frame with the example's values and ``changes``, packed as is (the
    host's encoder would refuse an invalid one)."""
    values = {**GOOD.values, **changes}
    payload = IDENTIFY_REPLY.struct.pack(*(values[f.name] for f in IDENTIFY_REPLY.fields))
    return encode_frame(IDENTIFY_REPLY.type_id, seq, payload)


class IdentifyResponder(ScriptedTransport):
    """A device that answers every IDENTIFY with the given reply, and nothing else."""

    url = "test://identify"

    def __init__(self, **changes: int) -> None:
        super().__init__()
        self.changes = changes
        self.decoder = FrameDecoder()
        self.identifies = 0

    def write(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            if decode_payload(frame).name == "IDENTIFY":
                self.identifies += 1
                self.chunks.put(identify_reply(frame.seq, **self.changes))


@pytest.mark.parametrize(("changes", "says"), [
    ({"buffer_spots": 0}, "IDENTIFY_REPLY.buffer_spots = 0 outside 1..65535"),
    ({"max_stack": 17}, "IDENTIFY_REPLY.max_stack = 17 outside 1..16"),
    ({"jump_speed_um_per_ms": 0}, "jump_speed_um_per_ms = 0 outside 1..65535"),
    ({"field_size_um": 0}, "field_size_um = 0 outside 1000..100000"),
    ({"energy_min_uj": 300_000}, "energy_min_uj = 300000 must be at most energy_max_uj = 200000"),
    ({"heartbeat_ms": 500}, "heartbeat_ms = 500 must be below watchdog_ms = 500"),
    ({"usable_lsb_min": 64511}, "usable_lsb_min = 64511 must be below usable_lsb_max = 64511"),
])
def test_a_device_reporting_impossible_limits_is_refused_at_once(changes: dict[str, int],
                                                                  says: str) -> None:
    transport = IdentifyResponder(**changes)
    start = time.monotonic()
    with pytest.raises(InvalidReply, match=r"IDENTIFY .*invalid reply") as caught:
        Device(transport, request_timeout_s=5.0)  # type: ignore[arg-type]
    assert says in str(caught.value)
    assert isinstance(caught.value, DeviceTimeout)  # its outcome unknown, as after a timeout
    assert time.monotonic() - start < 5.0  # not after the request timeout
    assert transport.identifies == 3  # IDENTIFY is idempotent: tried again, refused each time


def test_a_device_reporting_possible_limits_opens() -> None:
    device = Device(IdentifyResponder(), request_timeout_s=5.0)  # type: ignore[arg-type]
    try:
        assert device.info.limits.buffer_spots == GOOD["buffer_spots"]
        assert device.info.serial == "SIM-0001"
    finally:
        device.link.close()


@pytest.mark.parametrize(("small", "large", "strict"), IDENTIFY_REPLY.order)
def test_the_field_relations_are_checked_both_ways(small: str, large: str, strict: bool) -> None:
    """Equal values: allowed where the relation is <=, refused where it is <, by the encoder
    (a device cannot send it) and by the decoder (a host does not act on it)."""
    equal = {small: int(GOOD[large])}
    (frame,) = FrameDecoder().feed(identify_reply(0, **equal))
    values = {**GOOD.values, **equal}
    if strict:
        with pytest.raises(MessageError, match=f"{small} = .* must be below {large}"):
            decode_payload(frame)
        with pytest.raises(MessageError, match=f"{small} = .* must be below {large}"):
            encode(type(GOOD)("IDENTIFY_REPLY", 0, values))
    else:
        assert decode_payload(frame).values == values
        bigger = {small: int(GOOD[large]) + 1}
        (frame,) = FrameDecoder().feed(identify_reply(0, **bigger))
        with pytest.raises(MessageError, match=f"{small} = .* must be at most {large}"):
            decode_payload(frame)
