"""Types of the compiled framing in ``_framing.pyx`` (same signatures as the reference,
:mod:`drivers.protocol.framing_ref`)."""

from drivers.protocol.errors import FrameError
from drivers.protocol.framing_ref import RawFrame

#: As messages.HEADER.size, CRC.size, MAX_FRAME, framing_ref.MIN_FRAME and
#: messages.MAX_WIRE_FRAME.
header_size: int
crc_size: int
raw_capacity: int
min_frame_size: int
max_wire_frame_size: int

def encode_frame(type_id: int, seq: int, payload: bytes, version: int = 1) -> bytes: ...
def decode_frame(encoded: bytes) -> RawFrame: ...

class FrameDecoder:
    frames: int
    errors: int
    last_error: FrameError | None
    def __init__(self) -> None: ...
    def feed(self, chunk: bytes) -> list[RawFrame]: ...
