"""co2scan drivers: transports, the framed protocol codec and the device abstraction.

Scripting entry point::

    from drivers import open_device
    with open_device("sim://") as dev:
        print(dev.info)
"""

from drivers.device import Device
from drivers.errors import (
    AuthFailed,
    BadIndex,
    BufferFull,
    DeviceClosed,
    DeviceError,
    DeviceLost,
    DeviceMisreport,
    DeviceNack,
    DeviceTimeout,
    FootswitchUp,
    IllegalState,
    IndicatorDelay,
    InterlockOpen,
    InvalidReply,
    LimitError,
    NotAuthenticated,
    OutOfRange,
    PlanMismatch,
    TransportURLError,
)
from drivers.info import DeviceInfo, DeviceLimits, DeviceStatus, InterlockEvent, StateEvent
from drivers.link import EventQueue
from drivers.link import Item as DeviceEvent
from drivers.protocol.errors import MessageError
from drivers.spots import PassSpots
from drivers.stream import Progress
from drivers.transports.registry import open_transport


def open_device(url: str, request_timeout_s: float = 1.0) -> Device:
    """Open and identify the device at ``url`` (see drivers.transports.registry for forms)."""
    transport = open_transport(url)
    try:
        return Device(transport, request_timeout_s=request_timeout_s)
    except BaseException:
        transport.close()
        raise


def identify(url: str, request_timeout_s: float = 1.0) -> DeviceInfo:
    """Identity, capabilities and limits of the device at ``url``, read only: opening sends
    queries only (IDENTIFY, STATUS_REQUEST), and closing sends nothing (no PAUSE or DISARM to
    a device this host never armed, which another host may be running). Raises DeviceError
    when it cannot be reached."""
    device = open_device(url, request_timeout_s=request_timeout_s)
    try:
        return device.info
    finally:
        device.close(stop_emission=False)


__all__ = [
    "AuthFailed",
    "BadIndex",
    "BufferFull",
    "Device",
    "DeviceClosed",
    "DeviceError",
    "DeviceEvent",
    "DeviceInfo",
    "DeviceLimits",
    "DeviceLost",
    "DeviceMisreport",
    "DeviceNack",
    "DeviceStatus",
    "DeviceTimeout",
    "EventQueue",
    "FootswitchUp",
    "IllegalState",
    "IndicatorDelay",
    "InterlockEvent",
    "InterlockOpen",
    "InvalidReply",
    "LimitError",
    "MessageError",
    "NotAuthenticated",
    "OutOfRange",
    "PassSpots",
    "PlanMismatch",
    "Progress",
    "StateEvent",
    "TransportURLError",
    "identify",
    "open_device",
]
