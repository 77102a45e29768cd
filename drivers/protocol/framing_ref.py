"""Frames, pure Python: the reference for the compiled kernels of ``_framing.pyx``.

Raw frame (before COBS)::

    offset 0  u8   protocol version (1)
    offset 1  u8   message type id
    offset 2  u16  sequence number
    offset 4  u16  payload length n (0..MAX_PAYLOAD)
    offset 6  n    payload
    offset 6+n u32 CRC-32 (zlib.crc32, ISO-HDLC) over bytes 0 .. 6+n-1

The compiled kernels give the same bytes and frames, and hand every frame that fails a check
to :func:`decode_frame` here, so malformed input raises exactly these errors. The compiled
``FrameDecoder`` gives the same frames, counts and errors as :class:`FrameDecoder` here.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

from cobs import cobs

from drivers.protocol.errors import FrameError
from drivers.protocol.messages import CRC, HEADER, MAX_FRAME, MAX_PAYLOAD, MAX_WIRE_FRAME

DELIMITER = b"\x00"

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


class FrameDecoder:
    """Streaming decoder: feed arbitrary chunks, get whole valid frames back.

    Bad frames are dropped and counted; the decoder resynchronises on the next 0x00.
    A run longer than the largest legal frame is discarded up to the next delimiter.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._overflow = False
        self.frames = 0
        self.errors = 0
        self.last_error: FrameError | None = None

    def feed(self, chunk: bytes) -> list[RawFrame]:
        """Decode every complete frame in ``chunk`` (plus what was buffered before)."""
        frames: list[RawFrame] = []
        self._buffer += chunk
        if DELIMITER[0] not in chunk:
            self._check_overflow()
            return frames
        *parts, rest = bytes(self._buffer).split(DELIMITER)
        self._buffer = bytearray(rest)
        for part in parts:
            if self._overflow:
                self._overflow = False
                continue
            if not part:
                continue  # back-to-back delimiters are legal idle fill
            try:
                frames.append(decode_frame(part))
            except FrameError as exc:
                self.errors += 1
                self.last_error = exc
        self.frames += len(frames)
        self._check_overflow()
        return frames

    def _check_overflow(self) -> None:
        if len(self._buffer) > MAX_WIRE_FRAME:
            self._buffer.clear()
            if not self._overflow:
                self.errors += 1
                self.last_error = FrameError(f"no delimiter within {MAX_WIRE_FRAME} bytes")
            self._overflow = True
