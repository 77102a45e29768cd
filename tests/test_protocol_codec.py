"""Properties of the frame and message codec: round trips and rejection of damaged frames."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.protocol import (
    FrameDecoder,
    FrameError,
    Message,
    MessageError,
    ProtocolError,
    decode,
    decode_payload,
    encode,
    encode_frame,
    message,
)
from drivers.protocol import messages as m
from tests.strategies import messages


def decoded_all(wire: bytes) -> list:
    return FrameDecoder().feed(wire)


@given(messages())
def test_every_message_round_trips(msg: Message) -> None:
    wire = encode(msg)
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    assert decode(wire[1:-1]) == msg
    (frame,) = decoded_all(wire)
    assert decode_payload(frame) == msg


@given(messages(), st.data())
def test_any_single_bit_flip_is_rejected(msg: Message, data: st.DataObject) -> None:
    wire = bytearray(encode(msg))
    pos = data.draw(st.integers(1, len(wire) - 2))
    wire[pos] ^= 1 << data.draw(st.integers(0, 7))
    assert decoded_all(bytes(wire)) == []


@given(messages(), st.data())
def test_truncated_frame_is_rejected(msg: Message, data: st.DataObject) -> None:
    wire = encode(msg)
    cut = data.draw(st.integers(1, len(wire) - 2))
    assert decoded_all(wire[:cut] + b"\x00") == []


@given(messages(), st.data())
def test_duplicated_or_inserted_byte_is_rejected(msg: Message, data: st.DataObject) -> None:
    wire = encode(msg)
    pos = data.draw(st.integers(2, len(wire) - 2))  # strictly inside the COBS body
    extra = data.draw(st.one_of(st.just(wire[pos]), st.integers(0, 255)))
    damaged = wire[:pos] + bytes([extra]) + wire[pos:]
    assert decoded_all(damaged) == []


@given(messages(), messages(), st.binary(max_size=300))
def test_decoder_resynchronises_after_garbage(first: Message, second: Message,
                                            garbage: bytes) -> None:
    decoder = FrameDecoder()
    frames = decoder.feed(garbage) + decoder.feed(encode(first) + encode(second))
    assert [decode_payload(f) for f in frames] == [first, second]


@given(messages(), st.data())
def test_decoder_accepts_arbitrary_chunking(msg: Message, data: st.DataObject) -> None:
    wire = encode(msg) * 3
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    decoder = FrameDecoder()
    frames = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        frames += decoder.feed(wire[a:b])
    assert [decode_payload(f) for f in frames] == [msg] * 3


@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_codec_errors(data: bytes) -> None:
    for frame in FrameDecoder().feed(data):
        with contextlib.suppress(ProtocolError):
            decode_payload(frame)
    with contextlib.suppress(ProtocolError):
        decode(data)


@given(st.integers(0, 255), st.binary(max_size=64))
def test_valid_frame_with_arbitrary_payload_raises_only_message_error(type_id: int,
                                                                       payload: bytes) -> None:
    (frame,) = FrameDecoder().feed(encode_frame(type_id, 1, payload))
    with contextlib.suppress(MessageError):
        decode_payload(frame)


def test_overlong_run_is_discarded_and_next_frame_decoded() -> None:
    decoder = FrameDecoder()
    ping = message("HEARTBEAT", 9)
    frames = decoder.feed(b"\x01" * (m.MAX_WIRE_FRAME + 10)) + decoder.feed(encode(ping))
    assert [decode_payload(f) for f in frames] == [ping]
    assert decoder.errors == 1


def test_field_out_of_range_is_refused_on_encode_and_decode() -> None:
    with pytest.raises(MessageError, match=r"AIMING_BEAM\.on = 2 outside 0\.\.1"):
        encode(message("AIMING_BEAM", 1, on=2))
    payload = bytes([2])
    (frame,) = FrameDecoder().feed(encode_frame(m.BY_NAME["AIMING_BEAM"].type_id, 1, payload))
    with pytest.raises(MessageError, match=r"outside 0\.\.1"):
        decode_payload(frame)


def test_wrong_version_and_unknown_type_are_message_errors() -> None:
    (frame,) = FrameDecoder().feed(encode_frame(0x02, 1, b"", version=2))
    with pytest.raises(MessageError, match="protocol version 2"):
        decode_payload(frame)
    (frame,) = FrameDecoder().feed(encode_frame(0x7F, 1, b""))
    with pytest.raises(MessageError, match="unknown message type 0x7F"):
        decode_payload(frame)


def test_record_count_must_match_payload() -> None:
    spots = np.zeros(3, m.SPOT_DTYPE)
    spots["energy_uj"] = spots["pulse_us"] = spots["stack"] = 1
    payload = bytes(message("SPOT_BATCH", records=spots).definition.struct.pack(4, 0))
    (frame,) = FrameDecoder().feed(encode_frame(0x21, 1, payload + spots.tobytes()))
    with pytest.raises(MessageError, match="4 records need 64 bytes, got 48"):
        decode_payload(frame)


def test_oversized_payload_is_refused() -> None:
    with pytest.raises(FrameError, match="exceeds MAX_PAYLOAD"):
        encode_frame(1, 1, bytes(m.MAX_PAYLOAD + 1))
    assert m.MAX_BATCH_SPOTS == 255
