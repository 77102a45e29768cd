"""The compiled framing kernels equal their pure-Python reference: same wire bytes, same
frames, and on malformed input the same FrameError (type and text)."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import pytest
from cobs import cobs
from hypothesis import given
from hypothesis import strategies as st

from drivers.protocol import Message, encode, encode_payload
from drivers.protocol import _framing as cy
from drivers.protocol import framing_ref as ref
from drivers.protocol.errors import FrameError
from drivers.protocol.messages import MAX_PAYLOAD, MAX_WIRE_FRAME, PROTOCOL_VERSION
from tests.strategies import messages

# payloads with long zero-free runs (COBS blocks of 254), zero runs, and random bytes
payloads = st.one_of(
    st.binary(max_size=MAX_PAYLOAD),
    st.builds(lambda n, b: bytes([b]) * n, st.integers(0, MAX_PAYLOAD), st.integers(0, 255)),
    st.lists(st.sampled_from([b"\0", b"\x01" * 253, b"\x02" * 254, b"\x03" * 255, b"ab"]),
             max_size=16).map(b"".join).filter(lambda p: len(p) <= MAX_PAYLOAD),
)


def outcome(function: Callable[..., object], *args: object) -> object:
    """The value returned, or the error raised as (type, text)."""
    try:
        return function(*args)
    except Exception as exc:  # the comparison is the point
        return type(exc), str(exc)


@given(st.integers(0, 255), st.integers(0, 0x2FFFF), payloads, st.integers(0, 255))
def test_encode_frame_same_bytes(type_id: int, seq: int, payload: bytes, version: int) -> None:
    wire = cy.encode_frame(type_id, seq, payload, version)
    assert wire == ref.encode_frame(type_id, seq, payload, version)
    assert cy.decode_frame(wire[1:-1]) == ref.decode_frame(wire[1:-1])


@given(st.binary(max_size=MAX_PAYLOAD + 300))
def test_crc_and_cobs_agree_with_zlib_and_cobs(data: bytes) -> None:
    wire = cy.encode_frame(1, 0, data[:MAX_PAYLOAD])
    raw = cobs.decode(wire[1:-1])
    assert zlib.crc32(raw[:-4]) == int.from_bytes(raw[-4:], "little")


def test_encode_frame_errors_are_the_reference_errors() -> None:
    for args in [(1, 0, bytes(MAX_PAYLOAD + 1)), (256, 0, b""), (1, 0, b"", -1),
                 (1, 0, "text"), (1.0, 0, b"")]:
        expected = outcome(ref.encode_frame, *args)
        assert isinstance(expected, tuple)
        assert outcome(cy.encode_frame, *args) == expected
    with pytest.raises(FrameError, match="exceeds MAX_PAYLOAD"):
        cy.encode_frame(1, 0, bytes(MAX_PAYLOAD + 1))


@st.composite
def damaged_frames(draw: st.DrawFn) -> bytes:
    """A valid frame, then possibly damaged: a byte changed, cut, extended or non-canonical."""
    wire = ref.encode_frame(draw(st.integers(0, 255)), draw(st.integers(0, 0xFFFF)),
                            draw(payloads))[1:-1]
    damage = draw(st.sampled_from(["none", "byte", "cut", "extend", "random", "noncanonical"]))
    if damage == "byte":
        at = draw(st.integers(0, len(wire) - 1))
        wire = wire[:at] + bytes([draw(st.integers(0, 255))]) + wire[at + 1:]
    elif damage == "cut":
        wire = wire[:draw(st.integers(0, len(wire)))]
    elif damage == "extend":
        wire += draw(st.binary(min_size=1, max_size=40))
    elif damage == "random":
        wire = draw(st.binary(max_size=MAX_WIRE_FRAME + 10))
    elif damage == "noncanonical":  # a trailing empty block after a full one
        wire = b"\xff" + bytes(range(1, 255)) + b"\x01"
    return wire


@st.composite
def cobs_blocks(draw: st.DrawFn) -> bytes:
    """Inputs made of well-formed COBS blocks (any code, full and empty ones favoured), so
    that they decode, canonically or not; some wrap a valid frame's blocks."""
    codes = draw(st.lists(st.one_of(st.sampled_from([1, 2, 0xFE, 0xFF]), st.integers(1, 255)),
                          min_size=1, max_size=24))
    blocks = b"".join(bytes([code]) + bytes(draw(st.lists(st.integers(1, 255),
                                                          min_size=code - 1,
                                                          max_size=code - 1)))
                      for code in codes)
    if draw(st.booleans()):
        frame = ref.encode_frame(draw(st.integers(0, 255)), 0, draw(payloads))[1:-1]
        blocks = frame + blocks if draw(st.booleans()) else frame
    return blocks


@given(st.one_of(damaged_frames(), cobs_blocks()))
def test_decode_frame_same_frame_or_error(encoded: bytes) -> None:
    assert outcome(cy.decode_frame, encoded) == outcome(ref.decode_frame, encoded)
    assert outcome(cy.decode_frame, bytearray(encoded)) == outcome(ref.decode_frame, encoded)


def test_decode_frame_edge_lengths() -> None:
    for encoded in [b"", b"\x01", b"\x00", bytes(MAX_WIRE_FRAME), b"\x01" * (MAX_WIRE_FRAME + 1),
                    b"\xff" * MAX_WIRE_FRAME, ref.encode_frame(1, 0, bytes(MAX_PAYLOAD))[1:-1]]:
        assert outcome(cy.decode_frame, encoded) == outcome(ref.decode_frame, encoded)


@given(messages())
def test_encode_frames_messages_as_the_reference(msg: Message) -> None:
    """codec.encode (compiled framing) gives the reference frame of the message's payload."""
    assert encode(msg) == ref.encode_frame(msg.definition.type_id, msg.seq, encode_payload(msg),
                                           PROTOCOL_VERSION)
