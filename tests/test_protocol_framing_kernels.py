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


@st.composite
def chunked_streams(draw: st.DrawFn) -> list[bytes]:
    """A byte stream of good, damaged and overlong frames, idle fill and garbage, cut into
    chunks at random places (chunks large enough to be checked without the GIL, too)."""
    pieces = draw(st.lists(st.one_of(
        st.builds(lambda t, s, p: ref.encode_frame(t, s, p), st.integers(0, 255),
                  st.integers(0, 0xFFFF), payloads),
        damaged_frames().map(lambda f: f + b"\0"),
        st.binary(max_size=64),
        st.just(b"\0\0"),
        st.integers(MAX_WIRE_FRAME - 2, MAX_WIRE_FRAME + 300).map(lambda n: b"\x01" * n),
    ), max_size=12))
    stream = b"".join(pieces)
    delimiters = [i for i, byte in enumerate(stream) if byte == 0]
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=6))
    if delimiters:  # chunks that end just before, or begin just after, a delimiter
        cuts += draw(st.lists(st.tuples(st.sampled_from(delimiters), st.integers(0, 1)).map(sum),
                              max_size=4))
    cuts.sort()
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


def decoded(decoder: cy.FrameDecoder | ref.FrameDecoder, chunks: list[bytes]) -> list[object]:
    """Frames of every feed, then the counters and the last error."""
    out: list[object] = [decoder.feed(chunk) for chunk in chunks]
    error = decoder.last_error
    return [*out, decoder.frames, decoder.errors, None if error is None else str(error)]


@given(chunked_streams())
def test_frame_decoder_same_frames_counts_and_errors(chunks: list[bytes]) -> None:
    assert decoded(cy.FrameDecoder(), chunks) == decoded(ref.FrameDecoder(), chunks)
    # bytearray chunks on purpose (feed is annotated bytes): the compiled decoder takes them
    as_bytearrays = [bytearray(c) for c in chunks]
    assert decoded(cy.FrameDecoder(), as_bytearrays) == decoded(  # type: ignore[arg-type]
        ref.FrameDecoder(), chunks)


def test_frame_decoder_refuses_what_is_not_bytes() -> None:
    with pytest.raises(TypeError):
        cy.FrameDecoder().feed("text")  # type: ignore[arg-type]
