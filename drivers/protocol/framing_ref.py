"""Frames, pure Python: the reference for the compiled kernels of ``_framing.pyx``.

Raw frame (before COBS)::

    offset 0  u8   protocol version (1)
    offset 1  u8   message type id
    offset 2  u16  sequence number
    offset 4  u16  payload length n (0..MAX_PAYLOAD)
    offset 6  n    payload
    offset 6+n u32 CRC-32 (zlib.crc32, ISO-HDLC) over bytes 0 .. 6+n-1

The compiled kernels give the same bytes and frames, and hand every frame that fails a check
to :func:`decode_frame` here, so malformed input raises exactly these errors.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

from cobs import cobs

from drivers.protocol.errors import FrameError
from drivers.protocol.messages import CRC, HEADER, MAX_FRAME, MAX_PAYLOAD, MAX_WIRE_FRAME

MIN_FRAME = HEADER.size + CRC.size


class RawFrame(NamedTuple):
    """A frame whose COBS, length and CRC checks passed; the payload is not interpreted yet.

    (A named tuple: immutable like a frozen dataclass, and about three times cheaper to make,
    which counts at one per received frame.)
    """

    version: int
    type_id: int
    seq: int
    payload: bytes


def encode_frame(type_id: int, seq: int, payload: bytes, version: int = 1) -> bytes:
    """Wire bytes of one frame: 0x00, COBS(raw frame), 0x00."""
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD {MAX_PAYLOAD}")
    body = HEADER.pack(version, type_id, seq & 0xFFFF, len(payload)) + payload
    return b"\0%b\0" % cobs.encode(body + CRC.pack(zlib.crc32(body)))


def decode_frame(encoded: bytes) -> RawFrame:
    """Check and unpack one COBS-encoded frame (without its delimiter)."""
    if len(encoded) > MAX_WIRE_FRAME:
        raise FrameError(f"frame of {len(encoded)} bytes exceeds {MAX_WIRE_FRAME}")
    try:
        raw = cobs.decode(encoded)
    except cobs.DecodeError as exc:
        raise FrameError(f"COBS: {exc}") from None
    if cobs.encode(raw) != encoded:
        raise FrameError("non-canonical COBS encoding")
    size = len(raw)
    if not MIN_FRAME <= size <= MAX_FRAME:
        raise FrameError(f"frame length {size} outside {MIN_FRAME}..{MAX_FRAME}")
    end = size - CRC.size
    if zlib.crc32(memoryview(raw)[:end]) != CRC.unpack_from(raw, end)[0]:
        raise FrameError("CRC mismatch")
    version, type_id, seq, length = HEADER.unpack_from(raw)
    if length != end - HEADER.size:
        raise FrameError(f"length field {length} but {end - HEADER.size} payload bytes")
    return RawFrame(version, type_id, seq, raw[HEADER.size:end])
