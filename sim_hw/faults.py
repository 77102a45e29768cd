"""Fault injection: damage on the link (drop, corrupt, duplicate, delay, disconnect) and faults
of the device (reset, galvo stuck, energy drift, over-temperature), deterministic with a seed.

Link faults act on whole frames: the byte stream is cut after every 0x00 delimiter and each
cut piece that holds frame bytes is one frame. A delayed frame stalls the link (later bytes
wait behind it), because a real link delays but never reorders bytes.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sim_hw.device import SimDevice

ACTIONS = ("drop", "corrupt", "duplicate", "delay")
DIRECTIONS = ("in", "out")  # in = host -> device, out = device -> host


@dataclass
class LinkFaults:
    """Fault settings of one direction: probabilities per frame, and scripted next-N frames."""

    probability: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0.0))
    next_frames: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    delay_ms: float = 20.0
    applied: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))

    @property
    def active(self) -> bool:
        return any(self.probability.values()) or any(self.next_frames.values())


class _Direction:
    """The frame cutter, fault settings and delay queue of one direction."""

    def __init__(self, rng: random.Random) -> None:
        self.settings = LinkFaults()
        self._rng = rng
        self._partial = bytearray()
        self._queue: deque[tuple[float, bytes]] = deque()

    def process(self, data: bytes, real_s: float) -> None:
        if not self.settings.active and not self._partial and not self._queue:
            self._queue.append((real_s, data))
            return
        self._partial += data
        *pieces, rest = bytes(self._partial).split(b"\0")
        self._partial = bytearray(rest)
        for piece in pieces:
            self._frame(piece + b"\0", real_s, has_frame=bool(piece))

    def _frame(self, piece: bytes, real_s: float, has_frame: bool) -> None:
        release_s = max(real_s, self._queue[-1][0]) if self._queue else real_s
        if has_frame:
            chosen = [a for a in ACTIONS if self._choose(a)]
            if "drop" in chosen:
                return
            if "corrupt" in chosen:
                piece = self._corrupt(piece)
            if "delay" in chosen:
                release_s += self.settings.delay_ms / 1000
            if "duplicate" in chosen:
                piece += piece
        self._queue.append((release_s, piece))

    def _choose(self, action: str) -> bool:
        settings = self.settings
        if settings.next_frames[action] > 0:
            settings.next_frames[action] -= 1
            hit = True
        else:
            hit = self._rng.random() < settings.probability[action]
        settings.applied[action] += hit
        return hit

    def _corrupt(self, piece: bytes) -> bytes:
        """Flip one bit of one frame byte, never turning it into a delimiter."""
        damaged = bytearray(piece)
        pos = self._rng.randrange(len(damaged) - 1)
        bit = self._rng.randrange(8)
        if damaged[pos] ^ (1 << bit) == 0:
            bit = (bit + 1) % 8
        damaged[pos] ^= 1 << bit
        return bytes(damaged)

    def release(self, real_s: float) -> bytes:
        queue = self._queue
        if len(queue) == 1 and queue[0][0] <= real_s:  # the usual case: pass the bytes on
            return queue.popleft()[1]
        out = bytearray()
        while self._queue and self._queue[0][0] <= real_s:
            out += self._queue.popleft()[1]
        return bytes(out)

    def next_release_s(self) -> float | None:
        return self._queue[0][0] if self._queue else None


class Faults:
    """Scriptable faults of one served device; thread-safe (runs under the server's lock)."""

    def __init__(self, device: SimDevice, seed: int, lock: threading.RLock | None = None,
                 wake: Callable[[], None] = lambda: None) -> None:
        self._device = device
        self._lock = lock or threading.RLock()
        self._wake = wake
        rng = random.Random(seed ^ 0x5EED)
        self._dirs = {d: _Direction(random.Random(rng.random())) for d in DIRECTIONS}
        self._disconnect = False

    def _directions(self, direction: str) -> list[_Direction]:
        if direction == "both":
            return list(self._dirs.values())
        if direction not in self._dirs:
            raise ValueError(f"direction {direction!r}: expected in, out or both")
        return [self._dirs[direction]]

    def link(self, direction: str = "both", delay_ms: float | None = None,
             **probabilities: float) -> None:
        """Per-frame probabilities, e.g. ``link(drop=0.01, corrupt=0.001, direction="in")``."""
        for action, p in probabilities.items():
            if action not in ACTIONS or not 0.0 <= p <= 1.0:
                raise ValueError(f"{action}={p}: expected one of {ACTIONS} with 0 <= p <= 1")
        with self._lock:
            for d in self._directions(direction):
                d.settings.probability.update(probabilities)
                if delay_ms is not None:
                    d.settings.delay_ms = delay_ms

    def next_frames(self, action: str, count: int, direction: str = "in") -> None:
        """Apply ``action`` to the next ``count`` frames, e.g. drop the next 3 host frames."""
        if action not in ACTIONS or count < 0:
            raise ValueError(f"{action} x{count}: expected one of {ACTIONS} and count >= 0")
        with self._lock:
            for d in self._directions(direction):
                d.settings.next_frames[action] = count

    def applied(self, direction: str) -> dict[str, int]:
        """How many frames each action hit so far in one direction."""
        with self._lock:
            return dict(self._dirs[direction].settings.applied)

    def disconnect(self) -> None:
        """Cut the host's connection (the host sees the device vanish; it may reconnect)."""
        with self._lock:
            self._disconnect = True
        self._wake()

    def reset_device(self) -> None:
        self._on_device(self._device.reset)

    def galvo_stuck(self, stuck: bool = True) -> None:
        self._on_device(self._device.set_galvo_stuck, stuck)

    def drift(self, percent: float) -> None:
        """Energy monitor reads ``percent`` off the delivered energy."""
        self._on_device(self._device.set_drift, percent)

    def over_temperature(self, hot: bool = True) -> None:
        """The laser head at its over-temperature limit, or back to the configured temperature
        (just below the limit when the configured one is not)."""
        limit_dc = self._device.laser.over_temperature_dc
        target = limit_dc if hot else min(self._device.config.temperature_dc, limit_dc - 1)
        self._on_device(self._device.set_temperature, target)

    def clear(self) -> None:
        """Stop every link fault (queued delays still drain); device faults stay as they are."""
        with self._lock:
            for d in self._dirs.values():
                d.settings.probability = dict.fromkeys(ACTIONS, 0.0)
                d.settings.next_frames = dict.fromkeys(ACTIONS, 0)

    def _on_device(self, action: Callable[..., None], *args: object) -> None:
        with self._lock:
            action(*args)
        self._wake()

    # -- used by the serving loop (under the lock) -------------------------------------------

    def take_disconnect(self) -> bool:
        pending, self._disconnect = self._disconnect, False
        return pending

    def carry(self, direction: str, data: bytes, real_s: float) -> bytes:
        """Pass bytes through one direction; returns what is due now."""
        d = self._dirs[direction]
        if data:
            d.process(data, real_s)
        return d.release(real_s)

    def next_release_s(self) -> float | None:
        times = [t for d in self._dirs.values() if (t := d.next_release_s()) is not None]
        return min(times) if times else None

    # -- text commands (control channel, CLI) ------------------------------------------------

    def command(self, words: list[str]) -> str:
        """Apply ``drop=0.01``, ``corrupt_next=3``, ``delay_ms=50``, ``direction=in`` (applies to
        the words after it), ``reset``, ``disconnect``, ``drift=25``, ``overtemp=on|off``,
        ``galvo=stuck|ok``, ``clear``; returns a one-line summary."""
        direction = "both"
        for word in words:
            key, _, value = word.partition("=")
            if key == "direction":
                self._directions(value)
                direction = value
            elif key in ACTIONS:
                self.link(direction, **{key: float(value)})
            elif key.endswith("_next") and key[:-5] in ACTIONS:
                self.next_frames(key[:-5], int(value), "in" if direction == "both" else direction)
            elif key == "delay_ms":
                self.link(direction, delay_ms=float(value))
            elif word in ("reset", "disconnect", "clear"):
                {"reset": self.reset_device, "disconnect": self.disconnect,
                 "clear": self.clear}[word]()
            elif key == "drift":
                self.drift(float(value))
            elif key == "overtemp" and value in ("on", "off"):
                self.over_temperature(value == "on")
            elif key == "galvo" and value in ("stuck", "ok"):
                self.galvo_stuck(value == "stuck")
            else:
                raise ValueError(f"unknown fault {word!r}; see Faults.command")
        return "ok applied " + " ".join(
            f"{d}:" + ",".join(f"{k}={v}" for k, v in self.applied(d).items()) for d in DIRECTIONS)
