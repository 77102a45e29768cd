"""Typed errors raised by the drivers; each message says what was wrong and what is allowed."""

from __future__ import annotations

from drivers.protocol.messages import ErrorCode, State


class DeviceError(Exception):
    """Base of every error the drivers raise about the device or the link."""


class DeviceLost(DeviceError):
    """The link to the device is gone (port closed, socket reset, USB error)."""


class DeviceTimeout(DeviceError):
    """A request got no reply within its timeout."""


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
        super().__init__(f"{request} refused: {name} (detail {detail}) in {state_name}: {text}")
        self.request = request
        self.error = code
        self.detail = detail
        self.state = state
        self.text = text


def _nack(name: str, code: ErrorCode) -> type[DeviceNack]:
    return type(name, (DeviceNack,), {"code": code, "__doc__": f"NACK {code.name}."})


IllegalState = _nack("IllegalState", ErrorCode.ILLEGAL_STATE)
InterlockOpen = _nack("InterlockOpen", ErrorCode.INTERLOCK_OPEN)
BufferFull = _nack("BufferFull", ErrorCode.BUFFER_FULL)
NotAuthenticated = _nack("NotAuthenticated", ErrorCode.NOT_AUTHENTICATED)
AuthFailed = _nack("AuthFailed", ErrorCode.AUTH_FAILED)
PlanMismatch = _nack("PlanMismatch", ErrorCode.PLAN_MISMATCH)
BadIndex = _nack("BadIndex", ErrorCode.BAD_INDEX)
IndicatorDelay = _nack("IndicatorDelay", ErrorCode.INDICATOR_DELAY)
FootswitchUp = _nack("FootswitchUp", ErrorCode.FOOTSWITCH_UP)
OutOfRange = _nack("OutOfRange", ErrorCode.OUT_OF_RANGE)

NACK_TYPES: dict[int, type[DeviceNack]] = {
    int(cls.code): cls  # type: ignore[arg-type]
    for cls in (IllegalState, InterlockOpen, BufferFull, NotAuthenticated, AuthFailed,
                PlanMismatch, BadIndex, IndicatorDelay, FootswitchUp, OutOfRange)
}


def nack_error(request: str, code: int, detail: int, state: int, text: str) -> DeviceNack:
    """The typed exception for a NACK with ``code``."""
    return NACK_TYPES.get(code, DeviceNack)(request, code, detail, state, text)
