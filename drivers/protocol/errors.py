"""The codec's own error types: decoding untrusted bytes raises nothing else."""


class ProtocolError(Exception):
    """Bytes from the link that do not form a valid frame or message."""


class FrameError(ProtocolError):
    """A frame failed COBS decoding, length checks or its CRC."""


class MessageError(ProtocolError):
    """A well-framed message with an unknown type, a bad length or a field out of range."""
