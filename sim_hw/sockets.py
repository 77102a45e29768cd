"""Socket transports: one connected host socket, and the in-process socket pair."""

from __future__ import annotations

import contextlib
import logging
import socket

from sim_hw.server import PendingOutput

log = logging.getLogger("sim_hw")


class SocketTransport:
    """Serves the device to one connected, non-blocking socket at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._sock: socket.socket | None = None
        self._out = PendingOutput(name)

    def _adopt(self, sock: socket.socket, peer: str) -> None:
        self.drop_host()
        sock.setblocking(False)
        self._sock = sock
        log.info("%s: host connected (%s)", self.name, peer)

    def read_fds(self) -> list[int]:
        """The connected socket, if any."""
        return [] if self._sock is None else [self._sock.fileno()]

    def write_fds(self) -> list[int]:
        """The connected socket while output is pending."""
        return [self._sock.fileno()] if self._sock is not None and self._out.pending else []

    def on_readable(self, fd: int) -> bytes | None:
        """Bytes the host sent (b"" if none yet); None when it disconnected (it is dropped)."""
        assert self._sock is not None
        try:
            data = self._sock.recv(1 << 16)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:
            log.info("%s: host disconnected", self.name)
            self.drop_host()
            return None
        return data

    def on_writable(self, fd: int) -> None:
        """Send what the socket takes of the pending output; a send error drops the host."""
        if self._sock is None:
            return
        try:
            self._out.flush(self._sock.send)
        except OSError:
            log.info("%s: host disconnected", self.name)
            self.drop_host()

    def send(self, data: bytes) -> None:
        """Queue ``data`` and send what the socket takes now; with no host the bytes are lost."""
        if self._sock is None:
            return  # nobody listening: the bytes are lost, as on an unplugged cable
        self._out.add(data)
        self.on_writable(self._sock.fileno())

    def drop_host(self) -> None:
        """Close the host's socket and drop its pending output."""
        self._out.clear()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def close(self) -> None:
        """Drop the host; a socket transport holds nothing else."""
        self.drop_host()


class PairTransport(SocketTransport):
    """The device end of an in-process ``socket.socketpair`` (``sim://`` links and USB)."""

    def connect(self) -> socket.socket:
        """Drop any current host and return the host end of a new connection."""
        host_end, device_end = socket.socketpair()
        self._adopt(device_end, "in-process")
        return host_end
