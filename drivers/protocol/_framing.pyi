"""Types of the compiled framing in ``_framing.pyx`` (same signatures as the reference,
:mod:`drivers.protocol.framing_ref`)."""

from drivers.protocol.errors import FrameError
from drivers.protocol.framing_ref import RawFrame

def encode_frame(type_id: int, seq: int, payload: bytes, version: int = 1) -> bytes: ...
def decode_frame(encoded: bytes) -> RawFrame: ...

class FrameDecoder:
    frames: int
    errors: int
    last_error: FrameError | None
    def __init__(self) -> None: ...
    def feed(self, chunk: bytes) -> list[RawFrame]: ...
