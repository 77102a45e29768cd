"""Typed errors raised by the drivers; each message says what was wrong and what is allowed."""

from __future__ import annotations

from drivers.protocol.messages import SAFETY_INTERLOCKS, ErrorCode, Interlock, State


class DeviceError(Exception):
    """Base of every error the drivers raise about the device or the link."""


class DeviceLost(DeviceError):
    """The link to the device is gone (port closed, socket reset, USB error)."""


class DeviceClosed(DeviceLost):
    """The host closed the Device (``Device.close()``, perhaps from another thread): no cable
    was pulled, and nothing is to reconnect and fire on after it."""


class DeviceTimeout(DeviceError):
    """A request got no reply within its timeout."""


class InvalidReply(DeviceTimeout):
    """A request's reply broke the protocol (a field out of range, limits that contradict each
    other): no valid reply, its outcome unknown as after a timeout (firmware_protocol.md
    section 2)."""


class DeviceMisreport(DeviceError):
    """The device reported something it cannot have done, such as firing a spot beyond the
    loaded pass: it is not to be trusted with emission (the session stops it)."""


class TransportURLError(DeviceError, ValueError):
    """A device URL that no registered transport accepts."""


class LimitError(DeviceError, ValueError):
    """A value outside the device's reported limits, refused before it was sent."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        super().__init__(f"{field} = {value} is outside the allowed range {allowed}")
        self.field = field
        self.value = value
        self.allowed = allowed


class DeviceNack(DeviceError):
    """The device refused a request (NACK); carries its error code, detail and text."""

    code: ErrorCode | None = None

    def __init__(self, request: str, code: int, detail: int, state: int, text: str) -> None:
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = f"error {code}"
        try:
            state_name = State(state).name
        except ValueError:
            state_name = str(state)
        super().__init__(f"{request} refused: {name} ({self._explain(detail)}) in {state_name}: "
                         f"{text}")
        self.request = request
        self.error = code
        self.detail = detail
        self.state = state
        self.text = text

    @classmethod
    def _explain(cls, detail: int) -> str:
        """The ``detail`` field in the message; per code in words where a subclass says it."""
        return f"detail {detail}"


#: In words, each interlock whose bit is clear: what keeps the device from emitting. The one
#: table the host words interlocks with (errors, the session's refusals, the progress line).
INTERLOCK_WORDS: dict[Interlock, str] = {
    Interlock.KEY_ON: "key switch off",
    Interlock.DOOR_CLOSED: "door open",
    Interlock.ESTOP_RELEASED: "emergency stop pressed",
    Interlock.FOOTSWITCH_DOWN: "footswitch not pressed",
}
#: The safety interlocks' words: those INTERLOCK_OPEN names (the footswitch has FOOTSWITCH_UP).
OPEN_INTERLOCK_WORDS: dict[Interlock, str] = {
    bit: words for bit, words in INTERLOCK_WORDS.items() if bit & SAFETY_INTERLOCKS}


# One class per NACK code that callers tell apart, each with its code: NACK_TYPES is built
# from these class statements (any other code raises DeviceNack itself).


class IllegalState(DeviceNack):
    """NACK ILLEGAL_STATE."""

    code = ErrorCode.ILLEGAL_STATE


class InterlockOpen(DeviceNack):
    """NACK INTERLOCK_OPEN."""

    code = ErrorCode.INTERLOCK_OPEN

    @classmethod
    def _explain(cls, detail: int) -> str:
        # detail: the interlock bits, a set bit a condition that permits emission
        open_ = [words for bit, words in OPEN_INTERLOCK_WORDS.items() if not detail & bit]
        return f"detail {detail}: {', '.join(open_)}" if open_ else f"detail {detail}"


class BufferFull(DeviceNack):
    """NACK BUFFER_FULL."""

    code = ErrorCode.BUFFER_FULL


class NotAuthenticated(DeviceNack):
    """NACK NOT_AUTHENTICATED."""

    code = ErrorCode.NOT_AUTHENTICATED


class AuthFailed(DeviceNack):
    """NACK AUTH_FAILED."""

    code = ErrorCode.AUTH_FAILED


class PlanMismatch(DeviceNack):
    """NACK PLAN_MISMATCH."""

    code = ErrorCode.PLAN_MISMATCH


class BadIndex(DeviceNack):
    """NACK BAD_INDEX."""

    code = ErrorCode.BAD_INDEX


class IndicatorDelay(DeviceNack):
    """NACK INDICATOR_DELAY."""

    code = ErrorCode.INDICATOR_DELAY


class FootswitchUp(DeviceNack):
    """NACK FOOTSWITCH_UP."""

    code = ErrorCode.FOOTSWITCH_UP


class OutOfRange(DeviceNack):
    """NACK OUT_OF_RANGE."""

    code = ErrorCode.OUT_OF_RANGE


#: The class raised for each NACK code with one of its own (from the classes above).
NACK_TYPES: dict[int, type[DeviceNack]] = {
    int(cls.code): cls for cls in DeviceNack.__subclasses__() if cls.code is not None
}


def nack_error(request: str, code: int, detail: int, state: int, text: str) -> DeviceNack:
    """The typed exception for a NACK with ``code``."""
    return NACK_TYPES.get(code, DeviceNack)(request, code, detail, state, text)
