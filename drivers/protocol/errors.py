"""The codec's own error types: decoding untrusted bytes raises nothing else."""


class ProtocolError(Exception):
    """Bytes from the link that do not form a valid frame or message."""


class FrameError(ProtocolError):
    """A frame failed COBS decoding, length checks or its CRC."""


class MessageError(ProtocolError, ValueError):
    """A well-framed message with an unknown type, a bad length or a field out of range.

    Also raised before anything is sent, for a request whose field does not fit its wire
    type (``Device.set_limits(100000, 500, -1)``: "SET_LIMITS.avg_power_max_mw = -1 outside
    1..4294967295"; a float: "expected an integer"), so it is a ``ValueError`` too, as the
    scripting API's other bad-input errors are."""
