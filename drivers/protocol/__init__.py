"""co2scan wire protocol v1: definitions (messages), framing and the message codec."""

# compiled record scans (numpy references: records_ref)
from drivers.protocol._records import first_out_of_sequence, record_extremes
from drivers.protocol.codec import (
    Message,
    decode,
    decode_payload,
    encode,
    encode_payload,
    joined_records,
    message,
)
from drivers.protocol.errors import FrameError, MessageError, ProtocolError
from drivers.protocol.framing import FrameDecoder, RawFrame, decode_frame, encode_frame

__all__ = [
    "FrameDecoder",
    "FrameError",
    "Message",
    "MessageError",
    "ProtocolError",
    "RawFrame",
    "decode",
    "decode_frame",
    "decode_payload",
    "encode",
    "encode_frame",
    "encode_payload",
    "first_out_of_sequence",
    "joined_records",
    "message",
    "record_extremes",
]
