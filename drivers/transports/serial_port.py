"""Serial transport over pyserial: device paths, ``serial://`` and ``socket://`` URLs."""

from __future__ import annotations

import contextlib
import select
import socket

import serial

from drivers.errors import DeviceLost
from drivers.transports.base import Transport


class SerialTransport(Transport):
    """A pyserial port (any URL ``serial.serial_for_url`` accepts), read without busy waiting.

    The port is non-blocking (timeout 0); ``read`` waits on ``select`` for the first byte and
    then takes everything available, so one call returns whole bursts of frames.
    """

    def __init__(self, url: str, baudrate: int = 921_600) -> None:
        self.url = url
        try:
            self._port = serial.serial_for_url(url, baudrate=baudrate, timeout=0,
                                               write_timeout=2.0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceLost(f"cannot open {url}: {exc}") from exc
        sock = getattr(self._port, "_socket", None)
        if isinstance(sock, socket.socket):  # pyserial's socket:// leaves Nagle on
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data: bytes) -> None:
        """Write ``data`` to the port (pyserial's 2 s write timeout); DeviceLost on an error."""
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise DeviceLost(f"write to {self.url} failed: {exc}") from exc

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        """Wait on select up to ``timeout_s`` for the first byte, then take what is there, at most
        ``max_bytes`` (``b""`` on timeout); DeviceLost on an error or when the other end closed."""
        try:
            ready, _, _ = select.select([self._port.fileno()], [], [], timeout_s)
            if not ready:
                return b""
            data = self._port.read(max_bytes)
        except (serial.SerialException, OSError, ValueError, TypeError) as exc:
            raise DeviceLost(f"read from {self.url} failed: {exc}") from exc
        if not data:  # readable but empty: the other end has gone
            raise DeviceLost(f"{self.url} closed by the device")
        return data

    def close(self) -> None:
        """Close the port; errors of a port already gone are ignored."""
        with contextlib.suppress(serial.SerialException, OSError):
            self._port.close()
