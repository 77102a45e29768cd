"""One registry from URL scheme to transport: ``open_transport(url)``.

Accepted forms::

    /dev/ttyACM0                          a serial device path (also COM3 on Windows)
    serial:///dev/ttyACM0?baudrate=921600 the same, with options
    socket://127.0.0.1:PORT               TCP (pyserial's socket:// handler)
    usb://VID:PID[?serial=SN]             USB bulk endpoints through pyusb (hex ids)
    usb://VID:PID?backend=sim             the same against the simulated USB backend
    sim://[?door=open&seed=3...]          the in-process simulated device
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit

from drivers.errors import TransportURLError
from drivers.transports.base import Transport
from drivers.transports.serial_port import SerialTransport
from drivers.transports.simulated import SimTransport, load
from drivers.transports.usb_bulk import UsbTransport, libusb_backend

ACCEPTED_FORMS = __doc__.split("::", 1)[1].rstrip()

#: Named pyusb backends for usb:// URLs; values make ``(backend, owner-with-stop-or-None)``.
USB_BACKENDS: dict[str, Callable[[dict[str, str]], tuple[Any, Any]]] = {
    "libusb": lambda options: (libusb_backend(), None),
    "sim": lambda options: load("sim_hw.usb_backend:get_backend")(
        load("sim_hw.config:SimConfig").from_query(options)),
}


def _bad(url: str, why: str) -> TransportURLError:
    return TransportURLError(f"cannot open {url!r}: {why}; accepted forms:{ACCEPTED_FORMS}")


def _options(url: str, query: str, allowed: set[str] | None) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise _bad(url, f"malformed query {query!r}") from exc
    options = dict(pairs)
    if len(options) < len(pairs):  # footswitch=down&footswitch=up: the last one won
        repeated = sorted({k for k, _ in pairs if [p for p, _ in pairs].count(k) > 1})
        raise _bad(url, f"option(s) {repeated} given more than once")
    if allowed is not None and set(options) - allowed:
        raise _bad(url, f"unknown option(s) {sorted(set(options) - allowed)}, "
                        f"allowed: {sorted(allowed)}")
    return options


def _serial_path(url: str, path: str, query: str) -> Transport:
    options = _options(url, query, {"baudrate"})
    if not path:
        raise _bad(url, "no device path")
    try:
        baudrate = int(options.get("baudrate", "921600"))
    except ValueError as exc:
        raise _bad(url, f"baudrate {options['baudrate']!r} is not an integer") from exc
    return SerialTransport(path, baudrate)


def _serial(url: str, parts: SplitResult) -> Transport:
    return _serial_path(url, parts.netloc + parts.path, parts.query)


def _socket(url: str, parts: SplitResult) -> Transport:
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.hostname is None or port is None:
        raise _bad(url, "expected socket://HOST:PORT")
    return SerialTransport(url)


def _usb(url: str, parts: SplitResult) -> Transport:
    options = _options(url, parts.query, None)
    vid_text, sep, pid_text = parts.netloc.partition(":")
    try:
        vid, pid = int(vid_text, 16), int(pid_text, 16)
    except ValueError:
        vid = pid = -1
    if not sep or not (0 <= vid <= 0xFFFF and 0 <= pid <= 0xFFFF):
        raise _bad(url, f"expected usb://VID:PID with hex ids, got {parts.netloc!r}")
    backend_name = options.pop("backend", "libusb")
    if backend_name not in USB_BACKENDS:
        raise _bad(url, f"unknown USB backend {backend_name!r}, known: {sorted(USB_BACKENDS)}")
    serial_number = options.pop("serial", None)
    if backend_name != "sim" and options:
        raise _bad(url, f"unknown option(s) {sorted(options)}, allowed: backend, serial")
    return UsbTransport(url, vid, pid, serial_number,
                        lambda: USB_BACKENDS[backend_name](options))


def _sim(url: str, parts: SplitResult) -> Transport:
    if parts.netloc or parts.path:  # sim://host/path?...: taken, and ignored
        raise _bad(url, f"sim:// takes no host or path, got {parts.netloc + parts.path!r}")
    return SimTransport(url, _options(url, parts.query, None))


#: Scheme -> factory(url, split URL). Extend with :func:`register_transport`.
TRANSPORTS: dict[str, Callable[[str, SplitResult], Transport]] = {
    "serial": _serial,
    "socket": _socket,
    "usb": _usb,
    "sim": _sim,
}


def register_transport(scheme: str, factory: Callable[[str, SplitResult], Transport]) -> None:
    """Add a transport for ``scheme://`` URLs (plug-ins, test doubles)."""
    TRANSPORTS[scheme.lower()] = factory


def open_transport(url: str) -> Transport:
    """Open the transport that ``url`` names; raises TransportURLError for unknown forms."""
    if not isinstance(url, str) or not url.strip():
        raise _bad(str(url), "empty URL")
    if "://" not in url:  # a plain device path such as /dev/ttyACM0 or COM3
        return _serial_path(url, url, "")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced "[" in the host
        raise _bad(url, str(exc)) from None
    factory = TRANSPORTS.get(parts.scheme.lower())
    if factory is None:
        raise _bad(url, f"unknown scheme {parts.scheme!r}")
    return factory(url, parts)
