"""Serve the simulator on a pseudo-terminal that ``serial.Serial(path)`` opens like a USB-serial
adapter.

``path`` is a symlink that always points at the current pty slave, so it stays valid across an
injected disconnect (which replaces the pty, like unplugging and replugging the adapter).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import tty

from sim_hw.config import SimConfig
from sim_hw.server import PendingOutput, Served
from sim_hw.state_file import StateFile

log = logging.getLogger("sim_hw")


class PtyTransport:
    """The master side of a raw-mode pty; the simulator keeps the slave open as well, so reads
    never fail while the host has it closed (EIO is still treated as "host gone")."""

    def __init__(self, name: str = "pty") -> None:
        self.name = name
        self._dir = tempfile.mkdtemp(prefix="co2scan-sim-")
        self.path = os.path.join(self._dir, "tty")
        self._out = PendingOutput(name)
        self._master = self._slave = -1
        self.tty_path = ""
        self._open()

    def _open(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.tty_path = os.ttyname(self._slave)
        link = self.path + ".new"
        os.symlink(self.tty_path, link)
        os.replace(link, self.path)
        log.info("%s: serving on %s -> %s", self.name, self.path, self.tty_path)

    def read_fds(self) -> list[int]:
        """The master, always: the host's bytes arrive on it."""
        return [self._master]

    def write_fds(self) -> list[int]:
        """The master while output is pending."""
        return [self._master] if self._out.pending else []

    def on_readable(self, fd: int) -> bytes | None:
        """Bytes the host wrote (b"" if none yet); None when the pty reports the host gone (EIO)."""
        try:
            return os.read(self._master, 1 << 16)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            log.info("%s: host disconnected", self.name)
            return None

    def on_writable(self, fd: int) -> None:
        """Write what the pty takes of the pending output; on an error the backlog is dropped."""
        try:
            self._out.flush(lambda data: os.write(self._master, data))
        except OSError:
            self._out.clear()

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the host and write what the pty takes now."""
        self._out.add(data)
        self.on_writable(self._master)

    def _close_pty(self, fds: tuple[int, int] | None = None) -> None:
        self._out.clear()
        for fd in fds or (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def drop_host(self) -> None:
        """Unplug: the host's port fails; ``path`` then leads to a fresh pty.

        The new pty is linked before the old one closes, so ``path`` never dangles."""
        old = (self._master, self._slave)
        self._open()
        self._close_pty(old)

    def close(self) -> None:
        """Close the pty and remove the directory holding ``path``."""
        self._close_pty()
        shutil.rmtree(self._dir, ignore_errors=True)


class PtyServer(Served):
    """A simulator served on a pty; ``path`` is what the host opens."""

    transport: PtyTransport

    @property
    def path(self) -> str:
        """The symlink the host opens; it follows the pty across injected disconnects."""
        return self.transport.path


def serve_pty(config: SimConfig | None = None, control_port: int | None = 0,
              state: StateFile | None = None) -> PtyServer:
    """Start serving a simulator on a new pty (and a control port unless ``None``), its
    non-volatile memory in ``state`` if given."""
    return PtyServer(config or SimConfig(), PtyTransport(), "pty", control_port,
                     state).start()
