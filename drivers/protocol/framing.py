"""Frames: header + payload + CRC-32, COBS-encoded, sent between two 0x00 delimiters.

The leading delimiter ends whatever garbage a receiver holds, so noise never costs the next
frame; back-to-back delimiters are idle fill. The raw frame's layout is in
:mod:`drivers.protocol.framing_ref`, the pure-Python reference of the compiled
:func:`encode_frame`, :func:`decode_frame` and :class:`FrameDecoder` used here (same bytes,
frames, counts and errors).
"""

from __future__ import annotations

from drivers.protocol._framing import FrameDecoder, decode_frame, encode_frame
from drivers.protocol.framing_ref import DELIMITER, RawFrame

__all__ = ["DELIMITER", "FrameDecoder", "RawFrame", "decode_frame", "encode_frame"]
