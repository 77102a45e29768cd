"""Control channel of a running simulator: one text line in, one line out, on 127.0.0.1.

Commands::

    set footswitch=down door=closed key=on estop=released   change interlock inputs
    fault drop=0.01 | corrupt_next=3 | reset | drift=25 ...  inject faults (fault help lists them)
    status                                                   state, fault, inputs, progress
    truth                                                    summary of the spots fired
    help

A command is checked whole before it acts: a bad word gets ``error: ...`` naming it and what
it takes, and changes nothing; so does ``set`` or ``fault`` without a word (it would change
nothing, yet answer ``ok``)."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable

from drivers.protocol.messages import FaultCode, State
from sim_hw.config import inputs_text, parse_input
from sim_hw.device import SimDevice
from sim_hw.faults import Faults, fault_words_line, parse_fault_words

log = logging.getLogger("sim_hw")

MAX_LINE_BYTES = 4096
TOO_LONG = f"error: a command line is at most {MAX_LINE_BYTES} bytes"


def execute(device: SimDevice, faults: Faults, line: str) -> str:
    """Run one command line against a device (caller holds the device's lock)."""
    command, *words = line.split()
    if command in ("set", "fault") and not words:
        takes = (f"INPUT=VALUE; inputs: {inputs_text()}" if command == "set" else
                 f"fault word; faults: {fault_words_line()}")
        return f"error: {command} needs at least one {takes}"
    if command == "set":
        try:
            inputs = parse_inputs(words)
        except ValueError as exc:
            return f"error: {exc}"
        device.set_input(**inputs)
        return "ok " + describe(device)
    if command == "fault":
        if words == ["help"]:
            return f"faults: {fault_words_line()}"
        try:
            steps = parse_fault_words(words)
        except ValueError as exc:
            return f"error: {exc}"
        for step in steps:
            step(faults)
        return faults.summary()
    if command == "status" and not words:
        return describe(device)
    if command == "truth" and not words:
        return device.truth.summary()
    if command == "help":
        return ("commands: set INPUT=VALUE... (inputs: " + inputs_text() + "), "
                "fault WORD... (fault help lists them), status, truth")
    if command in ("status", "truth"):
        return f"error: {command} takes no words, got {' '.join(words)!r}"
    return f"error: unknown command {command!r}; commands: set, fault, status, truth, help"


def parse_inputs(words: list[str]) -> dict[str, bool]:
    """``door=closed footswitch=down`` as input name -> permits emission; ValueError names a
    word that is not INPUT=VALUE, an unknown input or value, or an input given twice."""
    inputs: dict[str, bool] = {}
    for word in words:
        name, has_value, value = word.partition("=")
        if not has_value:
            raise ValueError(f"set {word!r}: expected INPUT=VALUE; inputs: {inputs_text()}")
        input_name, permits = parse_input(name, value)
        if input_name in inputs:
            raise ValueError(f"set {word!r}: input {input_name} given twice")
        inputs[input_name] = permits
    return inputs


def describe(device: SimDevice) -> str:
    """One line of the device's status (state, fault, interlocks, flags, indices, credits, spots
    fired), the reply to ``status`` and ``set``."""
    values = device.status_values()
    return (f"state={State(values['state']).name} fault={FaultCode(values['fault_code']).name} "
            f"interlocks=0x{values['interlocks']:X} flags=0x{values['flags']:X} "
            f"next_index={values['next_index']} last_delivered={values['last_delivered']} "
            f"credits={values['credits']} fired={device.fired_count}")


class ControlChannel:
    """Listening socket plus short-lived clients, served by the simulator's loop."""

    def __init__(self, port: int, run: Callable[[str], str], name: str) -> None:
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._run = run
        self._name = name
        self._clients: dict[int, tuple[socket.socket, bytearray]] = {}
        log.info("%s: control channel on 127.0.0.1:%d", name, self.port)

    def read_fds(self) -> list[int]:
        """The listener's and the open clients' descriptors, for the serving loop to select on."""
        return [self._listener.fileno(), *self._clients]

    def on_readable(self, fd: int) -> None:
        """Accept a client, or run each whole line a client sent and reply with one line; a client
        that hung up or sent a line over MAX_LINE_BYTES is closed."""
        if fd == self._listener.fileno():
            with contextlib.suppress(BlockingIOError):
                client, _ = self._listener.accept()
                client.setblocking(True)
                client.settimeout(1.0)
                self._clients[client.fileno()] = (client, bytearray())
            return
        client, pending = self._clients[fd]
        try:
            data = client.recv(MAX_LINE_BYTES)
        except OSError:
            data = b""
        pending += data
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            if len(line) > MAX_LINE_BYTES:
                reply = TOO_LONG
            else:
                reply = self._run(line.decode("utf-8", "replace")) if line.strip() else ""
            log.info("%s: control %r -> %s", self._name, line[:200].decode(errors="replace"),
                     reply)
            with contextlib.suppress(OSError):
                client.sendall(reply.encode() + b"\n")
        too_long = len(pending) > MAX_LINE_BYTES  # and no end in sight: answer, hang up
        if too_long:
            with contextlib.suppress(OSError):
                client.sendall(TOO_LONG.encode() + b"\n")
        if not data or too_long:
            del self._clients[fd]
            client.close()

    def close(self) -> None:
        """Close every client and the listening port."""
        for client, _ in self._clients.values():
            client.close()
        self._clients.clear()
        self._listener.close()


def command_line(words: list[str]) -> str:
    """The line that sends ``words`` (a command and its words); ValueError names a word that
    would not arrive as written (a line break in it would start a second command) or a line
    the channel does not take."""
    for word in words:
        if not word.isprintable():  # surrogates (bytes that were not text) included
            raise ValueError(f"word {word!r}: expected printable text (no control characters: "
                             "a line break would start another command)")
    line = " ".join(words)
    if len(line.encode()) > MAX_LINE_BYTES:
        raise ValueError(f"the command is {len(line.encode())} bytes; the control channel "
                         f"takes at most {MAX_LINE_BYTES}")
    return line


def send(port: int, line: str, timeout_s: float = 5.0) -> str:
    """Send one command to a running simulator's control port; returns its one-line reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(line.strip().encode() + b"\n")
        reply = bytearray()
        while not reply.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.decode().strip()
