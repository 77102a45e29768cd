"""A minimal raw-frame host for tests and the CLI self-check: no retries, no hidden state.

It builds requests with the protocol codec, writes each frame in one call, and sorts what
comes back into replies (matched by sequence number) and events.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable

import numpy as np

from drivers.protocol import FrameDecoder, Message, decode_payload, encode, message
from drivers.protocol.messages import SPOT_DTYPE, Direction
from sim_hw.device import SimDevice


class RawHost:
    """Talks to a device through ``write(bytes)`` and ``read(max_bytes, timeout_s) -> bytes``."""

    def __init__(self, write: Callable[[bytes], object],
                 read: Callable[[int, float], bytes]) -> None:
        self._write = write
        self._read = read
        self._decoder = FrameDecoder()
        self.seq = 0
        self.replies: dict[int, Message] = {}
        self.events: list[Message] = []

    def send(self, name: str, records: np.ndarray | None = None, seq: int | None = None,
             **values: int | bytes) -> int:
        """Send one request; returns its sequence number."""
        if seq is None:
            seq, self.seq = self.seq, (self.seq + 1) & 0xFFFF
        self._write(encode(message(name, seq, records=records, text="", **values)))
        return seq

    def poll(self, timeout_s: float = 0.0) -> list[Message]:
        """Read what is there (waiting up to ``timeout_s`` for the first bytes)."""
        got = []
        data = self._read(1 << 16, timeout_s)
        while data:
            for frame in self._decoder.feed(data):
                msg = decode_payload(frame)
                got.append(msg)
                if msg.definition.direction == Direction.EVENT:
                    self.events.append(msg)
                else:
                    self.replies[msg.seq] = msg
            data = self._read(1 << 16, 0.0)
        return got

    def reply(self, seq: int, timeout_s: float = 2.0) -> Message:
        """The reply to request ``seq``; TimeoutError if none came."""
        deadline = time.monotonic() + timeout_s
        while seq not in self.replies:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply to seq {seq} within {timeout_s} s")
            self.poll(min(left, 0.05))
        return self.replies.pop(seq)

    def request(self, name: str, records: np.ndarray | None = None, timeout_s: float = 2.0,
                **values: int | bytes) -> Message:
        """Send a request and wait for its reply."""
        return self.reply(self.send(name, records, None, **values), timeout_s)

    def wait_event(self, predicate: Callable[[Message], bool], timeout_s: float = 2.0) -> Message:
        """First event so far or to come that satisfies ``predicate`` (removed from events)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for i, event in enumerate(self.events):
                if predicate(event):
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching event within {timeout_s} s")
            self.poll(min(left, 0.05))


def make_spots(count: int, first_index: int = 0, energy_uj: int = 10_000, pulse_us: int = 200,
               stack: int = 1, pitch_lsb: int = 256) -> np.ndarray:
    """A simple raster of ``count`` spot records around the field centre."""
    spots = np.zeros(count, SPOT_DTYPE)
    index = np.arange(first_index, first_index + count)
    side = max(1, int(np.ceil(np.sqrt(first_index + count))))
    spots["index"] = index
    spots["x_lsb"] = 0x8000 + (index % side - side // 2) * pitch_lsb
    spots["y_lsb"] = 0x8000 + (index // side - side // 2) * pitch_lsb
    spots["energy_uj"] = energy_uj
    spots["pulse_us"] = pulse_us
    spots["stack"] = stack
    return spots


def plan_checksum(spots: np.ndarray) -> int:
    """CRC-32 over the records of a whole pass (section 9)."""
    return zlib.crc32(np.ascontiguousarray(spots, SPOT_DTYPE).tobytes())


def attach(device: SimDevice) -> RawHost:
    """A RawHost wired straight to a pure SimDevice (no thread, no clock: tests advance it)."""
    return RawHost(device.receive, lambda max_bytes, timeout_s: device.transmit())
