"""Fault injection: damage on the link (drop, corrupt, duplicate, delay, disconnect) and faults
of the device (reset, galvo stuck, energy drift, over-temperature), deterministic with a seed.

Link faults act on whole frames: the byte stream is cut after every 0x00 delimiter and each
cut piece that holds frame bytes is one frame. A delayed frame stalls the link (later bytes
wait behind it), because a real link delays but never reorders bytes. The faults of a
direction may be narrowed to frames of some message types (:meth:`Faults.only`): e.g. every
EVT_DELIVERED lost while ACKs and every other frame still pass.
"""

from __future__ import annotations

import random
import textwrap
import threading
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

from cobs import cobs

from drivers.protocol.messages import BY_NAME
from sim_hw.config import DRIFT_PERCENT, in_range, number
from sim_hw.device import SimDevice

ACTIONS = ("drop", "corrupt", "duplicate", "delay")
DIRECTIONS = ("in", "out")  # in = host -> device, out = device -> host
#: What each action does to a frame it hits.
_VERBS = {"drop": "lost", "corrupt": "damaged (one bit flipped)", "duplicate": "sent twice",
          "delay": "held back delay_ms"}
#: Per-frame probability of an action; how many next frames it may be scripted for; how long
#: a delayed frame is held (ms).
PROBABILITY = (0.0, 1.0)
NEXT_FRAMES_MAX = 1_000_000
DELAY_MS = (0.0, 60_000.0)


@dataclass
class LinkFaults:
    """Fault settings of one direction: probabilities per frame, and scripted next-N frames."""

    probability: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0.0))
    next_frames: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    delay_ms: float = 20.0
    applied: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    #: message type ids the faults act on; None: every frame
    only: frozenset[int] | None = None

    @property
    def active(self) -> bool:
        """Some fault is set in this direction (else bytes pass through without being framed)."""
        return any(self.probability.values()) or any(self.next_frames.values())

    def hits(self, piece: bytes) -> bool:
        """Whether the faults act on this frame (``piece``: its wire bytes, with delimiter):
        always without ``only``; else when its message type is one of them (a frame that does
        not decode is let through, its type unknown)."""
        if self.only is None:
            return True
        try:
            raw = cobs.decode(piece.strip(b"\0"))
        except cobs.DecodeError:
            return False
        return len(raw) > 1 and raw[1] in self.only


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
        if has_frame and self.settings.hits(piece):
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


def _check_action(action: str) -> None:
    """ValueError unless ``action`` is a link fault (drop, corrupt, ...)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown link fault {action!r}; allowed: {', '.join(ACTIONS)}")


def _type_ids(names: tuple[str, ...]) -> frozenset[int]:
    """The type ids of message names (``EVT_DELIVERED``); ValueError naming an unknown one."""
    for name in names:
        if name not in BY_NAME:
            raise ValueError(f"unknown message {name!r}; messages: {', '.join(BY_NAME)}")
    return frozenset(BY_NAME[name].type_id for name in names)


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
            _check_action(action)
            in_range(action, p, PROBABILITY)
        if delay_ms is not None:
            in_range("delay_ms", delay_ms, DELAY_MS)
        self._directions(direction)
        with self._lock:
            for d in self._directions(direction):
                d.settings.probability.update(probabilities)
                if delay_ms is not None:
                    d.settings.delay_ms = delay_ms

    def only(self, messages: Collection[str], direction: str = "both") -> None:
        """Narrow the link faults of ``direction`` (probabilities and next frames) to frames of
        these messages, other frames passing untouched; set it before the fault, e.g.
        ``only(["EVT_DELIVERED"], "out")`` then ``link("out", drop=1.0)``: every delivery
        report lost, ACKs and other events still arriving. No messages: every frame again
        (as after :meth:`clear`)."""
        type_ids = _type_ids(tuple(messages))
        self._directions(direction)
        with self._lock:
            for d in self._directions(direction):
                d.settings.only = type_ids or None

    def next_frames(self, action: str, count: int, direction: str = "in") -> None:
        """Apply ``action`` to the next ``count`` frames, e.g. drop the next 3 host frames."""
        _check_action(action)
        if not 0 <= count <= NEXT_FRAMES_MAX:
            raise ValueError(f"{action}_next={count} outside 0..{NEXT_FRAMES_MAX}")
        self._directions(direction)
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
        """Reset the device (:meth:`SimDevice.reset`): FAULT with DEVICE_RESET, plan restored."""
        self._on_device(self._device.reset)

    def galvo_stuck(self, stuck: bool = True) -> None:
        """Stick the galvo (or free it, ``stuck=False``); the device faults when it notices."""
        self._on_device(self._device.set_galvo_stuck, stuck)

    def drift(self, percent: float) -> None:
        """Energy monitor reads ``percent`` off the delivered energy."""
        in_range("drift", percent, DRIFT_PERCENT)
        self._on_device(self._device.set_drift, percent)

    def over_temperature(self, hot: bool = True) -> None:
        """The laser head at its over-temperature limit, or back to the configured temperature
        (just below the limit when the configured one is not)."""
        limit_dc = self._device.laser.over_temperature_dc
        target = limit_dc if hot else min(self._device.config.temperature_dc, limit_dc - 1)
        self._on_device(self._device.set_temperature, target)

    def clear(self) -> None:
        """Stop every link fault, on frames of any type (queued delays still drain); device faults
        stay as they are."""
        with self._lock:
            for d in self._dirs.values():
                d.settings.probability = dict.fromkeys(ACTIONS, 0.0)
                d.settings.next_frames = dict.fromkeys(ACTIONS, 0)
                d.settings.only = None

    def _on_device(self, action: Callable[..., None], *args: object) -> None:
        with self._lock:
            action(*args)
        self._wake()

    # -- used by the serving loop (under the lock) -------------------------------------------

    def take_disconnect(self) -> bool:
        """Whether a disconnect was asked for since the last call (the loop then drops the host)."""
        pending, self._disconnect = self._disconnect, False
        return pending

    def carry(self, direction: str, data: bytes, real_s: float) -> bytes:
        """Pass bytes through one direction; returns what is due now."""
        d = self._dirs[direction]
        if data:
            d.process(data, real_s)
        return d.release(real_s)

    def next_release_s(self) -> float | None:
        """Real time (s) at which the next delayed frame is due, either direction; None if none."""
        times = [t for d in self._dirs.values() if (t := d.next_release_s()) is not None]
        return min(times) if times else None

    # -- text commands (control channel, CLI) ------------------------------------------------

    def command(self, words: list[str]) -> str:
        """Apply fault words (:data:`FAULT_WORDS`, e.g. ``drop=0.01 corrupt_next=3 drift=25``)
        and return a one-line summary. Every word is checked before any is applied: a bad one
        raises ValueError naming it and what it takes, and changes nothing."""
        for step in parse_fault_words(words):
            step(self)
        return self.summary()

    def summary(self) -> str:
        """``ok applied in:drop=0,... out:...``: how many frames each link fault hit."""
        return "ok applied " + " ".join(
            f"{d}:" + ",".join(f"{k}={v}" for k, v in self.applied(d).items()) for d in DIRECTIONS)


# -- the fault words -------------------------------------------------------------------------

#: One checked fault word, to apply to a :class:`Faults`.
Step = Callable[[Faults], None]


def _range(bounds: tuple[float, float]) -> str:
    return f"{bounds[0]:g}..{bounds[1]:g}"


class FaultWord(NamedTuple):
    """A word of :meth:`Faults.command`: the values it takes ("" for none), what kind of value
    that is, and what it does."""

    takes: str
    kind: str
    does: str


FAULT_WORDS: dict[str, FaultWord] = {
    **{action: FaultWord(_range(PROBABILITY), "a probability per frame",
                         f"each frame is {_VERBS[action]} with this probability")
       for action in ACTIONS},
    **{f"{action}_next": FaultWord(f"0..{NEXT_FRAMES_MAX}", "a number of frames",
                                   f"the next N frames are {_VERBS[action]}")
       for action in ACTIONS},
    "delay_ms": FaultWord(_range(DELAY_MS), "milliseconds",
                          "how long a delayed frame is held, later bytes waiting behind it; "
                          "default 20"),
    "direction": FaultWord("in|out|both", "in: host to device, out: device to host",
                           "the link words after it act on this direction (default both; "
                           "*_next: in)"),
    "drift": FaultWord(_range(DRIFT_PERCENT), "percent",
                       "the energy monitor reads this many percent off"),
    "overtemp": FaultWord("on|off", "", "the laser head at its over-temperature limit, the "
                          "device faults; off: back below it"),
    "galvo": FaultWord("stuck|ok", "", "the galvo stuck, the device faults before the next "
                       "spot; ok: working again"),
    "reset": FaultWord("", "", "reset the device: FAULT, DEVICE_RESET, as after a power loss"),
    "disconnect": FaultWord("", "", "cut the host's connection"),
    "clear": FaultWord("", "", "stop every link fault; device faults stay as they are"),
}


def fault_word(name: str) -> str:
    """``drop=0..1``, ``galvo=stuck|ok``, ``reset``: a word and the values it takes."""
    takes = FAULT_WORDS[name].takes
    return f"{name}={takes}" if takes else name


def fault_words_line() -> str:
    """Every fault word with its values, on one line (for an error)."""
    return ", ".join(fault_word(name) for name in FAULT_WORDS)


def fault_words_help() -> str:
    """Every fault word with its values and what it does, one a line (for --help)."""
    width = max(len(fault_word(name)) for name in FAULT_WORDS)
    return "\n".join(textwrap.fill(FAULT_WORDS[name].does, 92,
                                   initial_indent=f"  {fault_word(name):<{width}}  ",
                                   subsequent_indent=" " * (width + 4))
                     for name in FAULT_WORDS)


def _set_probability(faults: Faults, direction: str, action: str, probability: float) -> None:
    faults.link(direction, **{action: probability})


def parse_fault_words(words: list[str]) -> list[Step]:
    """Check fault words (:data:`FAULT_WORDS`) and return what they do, in order; a word
    that is unknown, lacks its value or has one it does not take raises ValueError naming
    the word and what it takes."""
    steps: list[Step] = []
    direction = "both"
    for word in words:
        key, has_value, text = word.partition("=")
        if key not in FAULT_WORDS:
            raise ValueError(f"unknown fault {word!r}; faults: {fault_words_line()}")
        takes, kind, _ = FAULT_WORDS[key]
        wrong = ValueError(f"fault {word!r}: expected {fault_word(key)}"
                           + (f" ({kind})" if kind else "" if takes else ", without a value"))
        if not takes:
            if has_value:
                raise wrong
            steps.append({"reset": Faults.reset_device, "disconnect": Faults.disconnect,
                          "clear": Faults.clear}[key])
        elif "|" in takes:
            if text not in takes.split("|"):
                raise wrong
            if key == "direction":
                direction = text
            elif key == "overtemp":
                steps.append(partial(Faults.over_temperature, hot=text == "on"))
            else:
                steps.append(partial(Faults.galvo_stuck, stuck=text == "stuck"))
        elif key.endswith("_next"):
            if not (text.isascii() and text.isdigit()) or int(text) > NEXT_FRAMES_MAX:
                raise wrong
            steps.append(partial(Faults.next_frames, action=key[:-5], count=int(text),
                                 direction="in" if direction == "both" else direction))
        else:
            bounds = {"delay_ms": DELAY_MS, "drift": DRIFT_PERCENT}.get(key, PROBABILITY)
            value = number(text)
            if value is None or not bounds[0] <= value <= bounds[1]:
                raise wrong
            if key == "drift":
                steps.append(partial(Faults.drift, percent=value))
            elif key == "delay_ms":
                steps.append(partial(Faults.link, direction=direction, delay_ms=value))
            else:
                steps.append(partial(_set_probability, direction=direction, action=key,
                                     probability=value))
    return steps
