"""Find devices: serial ports (pyserial) and USB devices with co2scan's ids (pyusb)."""

from __future__ import annotations

from dataclasses import dataclass

import usb.core
import usb.util
from serial.tools import list_ports

from drivers.protocol.messages import USB_PRODUCT_ID, USB_VENDOR_ID
from drivers.transports.usb_bulk import NO_BACKEND_HELP, libusb_backend


@dataclass(frozen=True)
class Found:
    """One candidate device: the URL to open it and what the system says about it."""

    url: str
    description: str
    serial_number: str | None


def serial_ports() -> list[Found]:
    """Every serial port the OS lists."""
    return [Found(p.device, p.description or "", p.serial_number)
            for p in sorted(list_ports.comports(), key=lambda p: p.device)]


def usb_devices() -> tuple[list[Found], str | None]:
    """USB devices with co2scan's VID:PID, and a problem description (None when fine)."""
    try:
        backend = libusb_backend()
    except (OSError, usb.core.USBError) as exc:
        return [], f"{NO_BACKEND_HELP} ({exc})"
    if backend is None:
        return [], NO_BACKEND_HELP
    found = []
    try:
        for dev in usb.core.find(find_all=True, idVendor=USB_VENDOR_ID, idProduct=USB_PRODUCT_ID,
                                 backend=backend):
            try:
                serial = usb.util.get_string(dev, dev.iSerialNumber)
            except (usb.core.USBError, ValueError):
                serial = None  # no permission to open: still worth listing
            query = f"?serial={serial}" if serial else ""
            found.append(Found(f"usb://{USB_VENDOR_ID:04X}:{USB_PRODUCT_ID:04X}{query}",
                               f"bus {dev.bus} address {dev.address}", serial))
    except usb.core.USBError as exc:
        return found, f"USB enumeration failed: {exc}"
    return found, None
