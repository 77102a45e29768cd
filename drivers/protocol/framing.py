"""Frames: header + payload + CRC-32, COBS-encoded, sent between two 0x00 delimiters.

The leading delimiter ends whatever garbage a receiver holds, so noise never costs the next
frame; back-to-back delimiters are idle fill. The raw frame's layout is in
:mod:`drivers.protocol.framing_ref`, the pure-Python reference of the compiled
:func:`encode_frame` and :func:`decode_frame` used here (same bytes, frames and errors).
"""

from __future__ import annotations

from drivers.protocol._framing import decode_frame, encode_frame
from drivers.protocol.errors import FrameError
from drivers.protocol.framing_ref import RawFrame
from drivers.protocol.messages import MAX_WIRE_FRAME

DELIMITER = b"\x00"

__all__ = ["DELIMITER", "FrameDecoder", "RawFrame", "decode_frame", "encode_frame"]


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
