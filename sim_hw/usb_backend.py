"""A pyusb backend presenting the simulator as a USB device: one interface, bulk OUT 0x01 and
bulk IN 0x81, so ``usb.core.find(..., backend=backend)`` and ``dev.write``/``dev.read`` run
through real pyusb with no libusb and no hardware.
"""

from __future__ import annotations

import array
import errno
import select
import socket
from collections.abc import Iterator
from types import SimpleNamespace

import usb.backend
import usb.core

from sim_hw.config import SimConfig
from sim_hw.server import Served
from sim_hw.sockets import PairTransport
from sim_hw.state_file import StateFile

#: pid.codes test VID and the product id of the co2scan device (to move to drivers.protocol).
VENDOR_ID = 0x1209
PRODUCT_ID = 0xC025
EP_OUT = 0x01
EP_IN = 0x81
MAX_PACKET_BYTES = 512
LANGID_EN_US = 0x0409
STRINGS = {1: "co2scan", 2: "co2scan simulated laser"}  # 3 is the serial number
_GET_DESCRIPTOR = 0x06
_DESC_DEVICE, _DESC_STRING = 1, 3
_LIBUSB_ERROR_NO_DEVICE = -4
_LIBUSB_ERROR_TIMEOUT = -7
_LIBUSB_ERROR_PIPE = -9


def _descriptor(**fields: object) -> SimpleNamespace:
    return SimpleNamespace(extra_descriptors=[], **fields)


class SimUsbBackend(usb.backend.IBackend):
    """Backend for one simulated device; each ``open_device`` is a fresh host connection."""

    def __init__(self, served: Served, transport: PairTransport) -> None:
        self.served = served
        self._transport = transport
        cfg = served.config
        major, minor, _ = cfg.fw_version
        self._device = _descriptor(
            bLength=18, bDescriptorType=_DESC_DEVICE, bcdUSB=0x0200, bDeviceClass=0,
            bDeviceSubClass=0, bDeviceProtocol=0, bMaxPacketSize0=64, idVendor=VENDOR_ID,
            idProduct=PRODUCT_ID, bcdDevice=(major << 8) | minor, iManufacturer=1, iProduct=2,
            iSerialNumber=3, bNumConfigurations=1, address=1, bus=1, port_number=1,
            port_numbers=(1,), speed=3)
        self._config = _descriptor(
            bLength=9, bDescriptorType=2, wTotalLength=9 + 9 + 7 + 7, bNumInterfaces=1,
            bConfigurationValue=1, iConfiguration=0, bmAttributes=0x80, bMaxPower=50)
        self._interface = _descriptor(
            bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0,
            bNumEndpoints=2, bInterfaceClass=0xFF, bInterfaceSubClass=0, bInterfaceProtocol=0,
            iInterface=0)
        self._endpoints = [
            _descriptor(bLength=7, bDescriptorType=5, bEndpointAddress=address, bmAttributes=2,
                        wMaxPacketSize=MAX_PACKET_BYTES, bInterval=0, bRefresh=0,
                        bSynchAddress=0)
            for address in (EP_OUT, EP_IN)]
        self._strings = {**STRINGS, 3: cfg.serial}
        self._configuration = 1  # the OS configures it on enumeration, as Linux does

    # -- enumeration and descriptors ---------------------------------------------------------

    def enumerate_devices(self) -> Iterator[str]:
        """The one simulated device (pyusb hands it back as ``dev``)."""
        yield "co2scan-sim"

    def get_device_descriptor(self, dev: object) -> SimpleNamespace:
        """The device descriptor: co2scan vendor and product id, bcdDevice the firmware version."""
        return self._device

    def get_configuration_descriptor(self, dev: object, config: int) -> SimpleNamespace:
        """The one configuration's descriptor; IndexError for any other."""
        if config != 0:
            raise IndexError(f"configuration {config}: the device has one")
        return self._config

    def get_interface_descriptor(self, dev: object, intf: int, alt: int,
                                 config: int) -> SimpleNamespace:
        """Interface 0 alt 0 (vendor class, two bulk endpoints); IndexError for any other."""
        if (intf, alt, config) != (0, 0, 0):
            raise IndexError(f"interface {intf} alt {alt}: the device has interface 0 alt 0")
        return self._interface

    def get_endpoint_descriptor(self, dev: object, ep: int, intf: int, alt: int,
                                config: int) -> SimpleNamespace:
        """Bulk OUT 0x01 (``ep`` 0) or bulk IN 0x81 (``ep`` 1); IndexError for any other."""
        if (intf, alt, config) != (0, 0, 0) or not 0 <= ep < len(self._endpoints):
            raise IndexError(f"endpoint {ep}: the interface has {len(self._endpoints)}")
        return self._endpoints[ep]

    # -- handles and configuration -----------------------------------------------------------

    def open_device(self, dev: object) -> socket.socket:
        """A new host connection, its socket the handle; the previous host is dropped and the
        device loses any partial frame, as on a replug."""
        with self.served.lock:
            host_end = self._transport.connect()
            self.served.device.disconnect()
        return host_end

    def close_device(self, dev_handle: socket.socket) -> None:
        """Close the host's end; the device sees the host go away."""
        dev_handle.close()

    def set_configuration(self, dev_handle: socket.socket, config_value: int) -> None:
        """Configuration 1, or 0 (unconfigured); any other is a USBError (pipe)."""
        if config_value not in (0, 1):
            raise usb.core.USBError("no such configuration", _LIBUSB_ERROR_PIPE, errno.EPIPE)
        self._configuration = config_value

    def get_configuration(self, dev_handle: socket.socket) -> int:
        """The configuration set (1 from enumeration on)."""
        return self._configuration

    def set_interface_altsetting(self, dev_handle: socket.socket, intf: int,
                                 altsetting: int) -> None:
        """Only interface 0 alt 0 exists; any other is a USBError (pipe)."""
        if (intf, altsetting) != (0, 0):
            raise usb.core.USBError("no such alternate setting", _LIBUSB_ERROR_PIPE, errno.EPIPE)

    def claim_interface(self, dev_handle: socket.socket, intf: int) -> None:
        """Only interface 0 exists; any other is a USBError (pipe)."""
        if intf != 0:
            raise usb.core.USBError("no such interface", _LIBUSB_ERROR_PIPE, errno.EPIPE)

    def release_interface(self, dev_handle: socket.socket, intf: int) -> None:
        """Nothing to release."""

    def clear_halt(self, dev_handle: socket.socket, ep: int) -> None:
        """Endpoints never halt."""

    # -- transfers ---------------------------------------------------------------------------

    def bulk_write(self, dev_handle: socket.socket, ep: int, intf: int, data: array.array,
                   timeout: int) -> int:
        """Send ``data`` on bulk OUT; returns the bytes written, USBError (no device) once the
        host's connection is gone."""
        if ep != EP_OUT:
            raise usb.core.USBError(f"endpoint 0x{ep:02X} is not bulk OUT",
                                    _LIBUSB_ERROR_PIPE, errno.EPIPE)
        try:
            dev_handle.sendall(data.tobytes())
        except OSError:
            raise _no_device() from None
        return len(data) * data.itemsize

    def bulk_read(self, dev_handle: socket.socket, ep: int, intf: int, buff: array.array,
                  timeout: int) -> int:
        """Read into ``buff`` what bulk IN has within ``timeout`` ms (0: no limit); the byte count.
        USBTimeoutError when nothing came, USBError (no device) once the connection is gone."""
        if ep != EP_IN:
            raise usb.core.USBError(f"endpoint 0x{ep:02X} is not bulk IN",
                                    _LIBUSB_ERROR_PIPE, errno.EPIPE)
        try:
            ready, _, _ = select.select([dev_handle], [], [], timeout / 1000 if timeout else None)
            data = dev_handle.recv(len(buff)) if ready else None
        except (OSError, ValueError):
            raise _no_device() from None
        if data is None:
            raise usb.core.USBTimeoutError("Operation timed out", _LIBUSB_ERROR_TIMEOUT,
                                           errno.ETIMEDOUT)
        if not data:
            raise _no_device()
        buff[: len(data)] = array.array("B", data)
        return len(data)

    def ctrl_transfer(self, dev_handle: socket.socket, bmRequestType: int, bRequest: int,
                      wValue: int, wIndex: int, data: array.array, timeout: int) -> int:
        """Standard GET_DESCRIPTOR for the device and string descriptors; anything else stalls."""
        kind, index = wValue >> 8, wValue & 0xFF
        if bmRequestType == 0x80 and bRequest == _GET_DESCRIPTOR and kind == _DESC_STRING:
            if index == 0:
                payload = LANGID_EN_US.to_bytes(2, "little")
            elif index in self._strings:
                payload = self._strings[index].encode("utf-16-le")
            else:
                raise usb.core.USBError("no such string", _LIBUSB_ERROR_PIPE, errno.EPIPE)
            descriptor = bytes([2 + len(payload), _DESC_STRING]) + payload
        elif bmRequestType == 0x80 and bRequest == _GET_DESCRIPTOR and kind == _DESC_DEVICE:
            d = self._device
            descriptor = bytes([18, 1, 0x00, 0x02, 0, 0, 0, 64]) + b"".join(
                v.to_bytes(2, "little") for v in (d.idVendor, d.idProduct, d.bcdDevice)
            ) + bytes([1, 2, 3, 1])
        else:
            raise usb.core.USBError("request not supported", _LIBUSB_ERROR_PIPE, errno.EPIPE)
        n = min(len(data), len(descriptor))
        data[:n] = array.array("B", descriptor[:n])
        return n


def _no_device() -> usb.core.USBError:
    return usb.core.USBError("No such device (it may have been disconnected)",
                             _LIBUSB_ERROR_NO_DEVICE, errno.ENODEV)


def get_backend(config: SimConfig | None = None, control_port: int | None = None,
                state: StateFile | None = None) -> tuple[SimUsbBackend, Served]:
    """A pyusb backend for a freshly served simulator (its non-volatile memory in ``state``
    if given), and the served handle (stop it)."""
    transport = PairTransport("usb")
    served = Served(config or SimConfig(), transport, "usb", control_port, state).start()
    return SimUsbBackend(served, transport), served
