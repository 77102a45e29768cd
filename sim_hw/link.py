"""In-process link to a served simulator: the transport behind ``sim://`` URLs."""

from __future__ import annotations

import select

from sim_hw.config import SimConfig
from sim_hw.server import Served, SyncedDevice
from sim_hw.sockets import PairTransport


class SimLink:
    """The host end of an in-process link: bytes in, bytes out, like a serial port.

    ``device`` (thread-safe view of the SimDevice) and ``faults`` are for tests. After an
    injected disconnect, reads and writes raise ConnectionResetError until :meth:`reconnect`.
    """

    def __init__(self, config: SimConfig) -> None:
        self._transport = PairTransport("sim link")
        self._served = Served(config, self._transport, "sim link")
        self._sock = self._transport.connect()
        self._served.start()
        self.device: SyncedDevice = self._served.device
        self.faults = self._served.faults

    def write(self, data: bytes) -> None:
        """Send bytes to the device."""
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise ConnectionResetError("simulated device disconnected") from exc

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        """Up to ``max_bytes`` from the device; b"" when nothing came within ``timeout_s``."""
        try:
            ready, _, _ = select.select([self._sock], [], [], timeout_s)
            if not ready:
                return b""
            data = self._sock.recv(max_bytes)
        except (OSError, ValueError) as exc:
            raise ConnectionResetError("simulated device disconnected") from exc
        if not data:
            raise ConnectionResetError("simulated device disconnected")
        return data

    def reconnect(self) -> None:
        """Plug the cable back in (after an injected disconnect)."""
        old = self._sock
        with self._served.lock:
            self._sock = self._transport.connect()
            self._served.device.disconnect()
        old.close()

    def close(self) -> None:
        """Close the link and stop the simulator behind it (idempotent)."""
        self._served.stop()
        self._sock.close()

    def __enter__(self) -> SimLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_link(config: SimConfig | dict[str, str] | None = None) -> SimLink:
    """Start a simulator in this process and return the host end of its link.

    ``config`` may be a SimConfig or URL query options (``{"door": "open", "seed": "3"}``).
    """
    if config is None:
        config = SimConfig()
    elif isinstance(config, dict):
        config = SimConfig.from_query(config)
    return SimLink(config)


__all__ = ["SimLink", "open_link"]
