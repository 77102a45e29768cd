"""The serving loop shared by every transport: one thread per served device.

The loop owns the device and the clock; it moves bytes between a transport and the device
(through the link faults), runs the device up to the clock's time, and sleeps until the next
deadline or the next byte. Anything else touching the device (tests, the control channel)
goes through the same lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable
from typing import Any, Protocol, Self

from sim_hw.clock import SimClock
from sim_hw.config import SimConfig
from sim_hw.control import ControlChannel, execute
from sim_hw.device import SimDevice
from sim_hw.faults import Faults
from sim_hw.state_file import StateFile

log = logging.getLogger("sim_hw")

#: Output the host has not read beyond this is dropped (a host that stopped reading).
MAX_PENDING_OUT_BYTES = 4 << 20


class Transport(Protocol):
    """How bytes reach one host: file descriptors the loop selects on, and what to do."""

    def read_fds(self) -> list[int]:
        """Descriptors to select on for reading."""
    def write_fds(self) -> list[int]:
        """Descriptors to select on for writing: only while output is pending."""
    def on_readable(self, fd: int) -> bytes | None:
        """Bytes from the host; None when the host went away."""
    def on_writable(self, fd: int) -> None:
        """Write pending output, as much as the host takes now."""
    def send(self, data: bytes) -> None:
        """Queue bytes for the host and write what it takes now, never blocking the loop."""
    def drop_host(self) -> None:
        """Cut the host off, as an unplugged cable (an injected disconnect)."""
    def close(self) -> None:
        """Release what the transport holds (the server stopped, or refused to start)."""


class PendingOutput:
    """Non-blocking writer with a bounded backlog, so a host that stops reading never blocks
    the loop (the watchdog must keep running)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pending = bytearray()
        self.dropped_bytes = 0

    def add(self, data: bytes) -> None:
        """Queue ``data``; beyond MAX_PENDING_OUT_BYTES the whole backlog is dropped (and counted
        in ``dropped_bytes``)."""
        self.pending += data
        if len(self.pending) > MAX_PENDING_OUT_BYTES:
            log.warning("%s: host not reading, %d bytes dropped", self.name, len(self.pending))
            self.dropped_bytes += len(self.pending)
            self.pending.clear()

    def flush(self, write: Callable[[bytes], int]) -> None:
        """Write as much as the peer takes now."""
        while self.pending:
            try:
                sent = write(bytes(self.pending[:1 << 16]))
            except (BlockingIOError, InterruptedError):
                return
            del self.pending[:sent]

    def clear(self) -> None:
        """Drop the backlog (the host went away)."""
        self.pending.clear()


class SyncedDevice:
    """Thread-safe view of a served device: attribute reads and calls run under the loop's
    lock, and calls wake the loop so their effects (events, state) go out at once."""

    def __init__(self, device: SimDevice, lock: threading.RLock,
                 wake: Callable[[], None]) -> None:
        object.__setattr__(self, "_device", device)
        object.__setattr__(self, "_lock", lock)
        object.__setattr__(self, "_wake", wake)

    def __getattr__(self, name: str) -> Any:
        with self._lock:
            value = getattr(self._device, name)
        if not callable(value):
            return value

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                result = value(*args, **kwargs)
            self._wake()
            return result

        return locked

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("set device state through its methods")


class Served:
    """One device served over one transport by one thread; a context manager.

    ``device`` (thread-safe view) and ``faults`` are for tests; ``control_port`` (when a
    control channel was asked for) takes text commands, see :mod:`sim_hw.control`. With
    ``state``, the device's non-volatile memory comes from that file and goes back to it
    (:mod:`sim_hw.state_file`); the file is closed with the server. ``stop()`` is idempotent
    and joins the thread; ``failure`` is what ended the loop, if anything did.
    """

    def __init__(self, config: SimConfig, transport: Transport, name: str,
                 control_port: int | None = None, state: StateFile | None = None) -> None:
        self.config = config
        self.name = name
        self.lock = threading.RLock()
        self.clock = SimClock(config.clock)
        self.state = state
        self.failure: Exception | None = None
        self.control: ControlChannel | None = None
        try:  # the control port first: a port taken is refused before the memory is written
            if control_port is not None:
                self.control = ControlChannel(
                    control_port, lambda line: execute(self._device, self.faults, line), name)
            self._device = (SimDevice(config) if state is None else
                            SimDevice(config, state.loaded, on_nv_write=state.write))
        except BaseException:  # serve nothing, and leave nothing behind
            transport.close()
            if self.control is not None:
                self.control.close()
            if state is not None:
                state.discard()
            raise
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.device = SyncedDevice(self._device, self.lock, self.wake)
        self.faults = Faults(self._device, config.seed, self.lock, self.wake)
        self.transport = transport
        self._stopping = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"sim_hw-{name}", daemon=True)

    @property
    def control_port(self) -> int | None:
        """The control channel's TCP port on 127.0.0.1; None without one."""
        return None if self.control is None else self.control.port

    def start(self) -> Self:
        """Start the serving thread; returns ``self``, so ``Served(...).start()`` chains."""
        self._thread.start()
        return self

    def wake(self) -> None:
        """Wake the loop from its select, so a change made from another thread takes effect now."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def stop(self) -> None:
        """Stop serving: the thread ends, the transport and control port close."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self.wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self.lock:
            self.transport.close()
            if self.control is not None:
                self.control.close()
            if self.state is not None:
                self.state.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                with self.lock:
                    timeout_s = self._step()
                    rfds = [self._wake_r, *self.transport.read_fds()]
                    if self.control is not None:
                        rfds += self.control.read_fds()
                    wfds = self.transport.write_fds()
                readable, writable, _ = select.select(rfds, wfds, [], timeout_s)
                with self.lock:
                    self._handle_ready(readable, writable)
        except Exception as exc:  # e.g. its state file could not be written: laser off
            self.failure = exc
            log.exception("%s: serving loop failed; device no longer served", self.name)

    def _step(self) -> float | None:
        """Run the device to now, move bytes; return the select timeout."""
        device, faults = self._device, self.faults
        now_s, real_s = self.clock.now_s(), self.clock.real_s()
        device.advance(now_s, real_s)
        if faults.take_disconnect():
            log.info("%s: injected disconnect", self.name)
            self.transport.drop_host()
            device.disconnect()
        inbound = faults.carry("in", b"", real_s)
        if inbound:
            device.receive(inbound)
        outbound = faults.carry("out", device.transmit(), real_s)
        if outbound:
            self.transport.send(outbound)
        deadlines = [t - now_s for t in (device.next_deadline(),) if t is not None]
        deadlines += [t - real_s for t in (faults.next_release_s(),) if t is not None]
        timeout_s = max(0.0, min(deadlines)) if deadlines else None
        if self.clock.virtual and device.skippable_deadline() is not None:
            return 0.0  # only look for host bytes, then skip
        return timeout_s

    def _handle_ready(self, readable: list[int], writable: list[int]) -> None:
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
        for fd in writable:
            self.transport.on_writable(fd)
        for fd in readable:
            if fd == self._wake_r:
                continue
            if self.control is not None and fd in self.control.read_fds():
                self.control.on_readable(fd)
                continue
            data = self.transport.on_readable(fd)
            if data is None:
                self._device.disconnect()
            elif data:
                real_s = self.clock.real_s()
                self._device.advance(self.clock.now_s(), real_s)
                self._device.receive(self.faults.carry("in", data, real_s))
        if self.clock.virtual:  # after what just came in: the device may wait for the host now
            skip_to_s = self._device.skippable_deadline()
            if skip_to_s is not None:
                self.clock.skip_to(skip_to_s)
