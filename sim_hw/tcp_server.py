"""Serve the simulator on 127.0.0.1 for pyserial's ``socket://127.0.0.1:PORT`` URLs."""

from __future__ import annotations

import contextlib
import logging
import socket

from sim_hw.config import SimConfig
from sim_hw.server import Served
from sim_hw.sockets import SocketTransport
from sim_hw.state_file import StateFile

log = logging.getLogger("sim_hw")


class TcpTransport(SocketTransport):
    """One host at a time (a second one is refused while the first is connected); a host may
    reconnect. TCP_NODELAY is set on accepted sockets: pyserial does not set it."""

    def __init__(self, port: int = 0, name: str = "tcp") -> None:
        super().__init__(name)
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        log.info("%s: listening on 127.0.0.1:%d", name, self.port)

    def read_fds(self) -> list[int]:
        """The listener, so that a host can connect, and the connected socket."""
        return [self._listener.fileno(), *super().read_fds()]

    def on_readable(self, fd: int) -> bytes | None:
        """Accept a host on the listener (refused while one is connected; b"" then), else the
        host's bytes as :meth:`SocketTransport.on_readable`."""
        if fd != self._listener.fileno():
            return super().on_readable(fd)
        with contextlib.suppress(BlockingIOError):
            sock, (peer_host, peer_port) = self._listener.accept()
            if self._sock is not None:
                log.info("%s: refused %s:%d, a host is connected", self.name, peer_host, peer_port)
                sock.close()
            else:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._adopt(sock, f"{peer_host}:{peer_port}")
        return b""

    def close(self) -> None:
        """Drop the host and stop listening."""
        super().close()
        self._listener.close()


class TcpServer(Served):
    """A simulator served on TCP; ``url`` is what pyserial opens."""

    transport: TcpTransport

    @property
    def port(self) -> int:
        """The TCP port served on 127.0.0.1."""
        return self.transport.port

    @property
    def url(self) -> str:
        """``socket://127.0.0.1:PORT``, what pyserial (and co2scan's ``--device``) opens."""
        return f"socket://127.0.0.1:{self.port}"


def serve_tcp(config: SimConfig | None = None, port: int = 0, control_port: int | None = 0,
              state: StateFile | None = None) -> TcpServer:
    """Start serving a simulator on 127.0.0.1:``port`` (0 = any free port), its non-volatile
    memory in ``state`` if given."""
    return TcpServer(config or SimConfig(), TcpTransport(port), "tcp", control_port,
                     state).start()
