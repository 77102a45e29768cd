"""USB bulk transport over pyusb: ``usb://VID:PID[?serial=SN][&backend=libusb|sim]``."""

from __future__ import annotations

import array
import contextlib
from collections.abc import Callable
from typing import Any

import usb.core
import usb.util

from drivers.errors import DeviceLost
from drivers.protocol.messages import USB_EP_IN, USB_EP_OUT
from drivers.transports.base import Transport

NO_BACKEND_HELP = (
    "pyusb found no USB backend (libusb is missing): install the system libusb-1.0 package "
    "or `pip install libusb-package`"
)


def libusb_backend() -> Any:
    """The libusb backend, from the system or the ``libusb-package`` wheel; None if neither."""
    import usb.backend.libusb1

    backend = usb.backend.libusb1.get_backend()
    if backend is None:
        try:
            import libusb_package
        except ImportError:
            return None
        backend = libusb_package.get_libusb1_backend()
    return backend


class UsbTransport(Transport):
    """Bulk OUT/IN endpoints of interface 0 of the first matching device.

    ``backend_factory`` returns ``(pyusb backend, owner)``; ``owner.stop()`` (if given) is
    called on close, which is how the simulated backend is shut down.
    """

    def __init__(self, url: str, vid: int, pid: int, serial_number: str | None,
                 backend_factory: Callable[[], tuple[Any, Any]]) -> None:
        self.url = url
        backend, self._owner = backend_factory()
        if backend is None:
            raise DeviceLost(NO_BACKEND_HELP)

        def match(dev: Any) -> bool:
            if serial_number is None:
                return True
            return bool(usb.util.get_string(dev, dev.iSerialNumber) == serial_number)

        try:
            self._dev = usb.core.find(idVendor=vid, idProduct=pid, backend=backend,
                                      custom_match=match)
            if self._dev is None:
                raise DeviceLost(f"no USB device {vid:04X}:{pid:04X}"
                                 + (f" with serial {serial_number}" if serial_number else ""))
            self._dev.set_configuration()
            usb.util.claim_interface(self._dev, 0)
        except usb.core.USBError as exc:
            self._stop_owner()
            raise DeviceLost(f"cannot open {url}: {exc}") from exc
        self._buffer = array.array("B", bytes(16384))

    @property
    def simulator(self) -> Any:
        """The simulator's handle behind the ``sim`` backend (None for real hardware)."""
        return self._owner

    def write(self, data: bytes) -> None:
        """Write ``data`` to the bulk OUT endpoint (2 s timeout); DeviceLost on a USB error."""
        try:
            self._dev.write(USB_EP_OUT, data, timeout=2000)
        except usb.core.USBError as exc:
            raise DeviceLost(f"USB write to {self.url} failed: {exc}") from exc

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        """One bulk IN transfer, waiting up to ``timeout_s`` (at least 1 ms; ``b""`` on timeout), at
        most ``max_bytes`` of it; DeviceLost on a USB error."""
        size = min(max_bytes, len(self._buffer))
        try:
            n = self._dev.read(USB_EP_IN, self._buffer, timeout=max(1, int(timeout_s * 1000)))
        except usb.core.USBTimeoutError:
            return b""
        except usb.core.USBError as exc:
            raise DeviceLost(f"USB read from {self.url} failed: {exc}") from exc
        return self._buffer[: min(n, size)].tobytes()

    def close(self) -> None:
        """Release the USB device (errors ignored) and stop the simulated backend, if it is one."""
        with contextlib.suppress(usb.core.USBError):
            usb.util.dispose_resources(self._dev)
        self._stop_owner()

    def _stop_owner(self) -> None:
        stop = getattr(self._owner, "stop", None)
        if stop is not None:
            stop()
