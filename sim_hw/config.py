"""Simulator configuration: identity, limits, timing, noise and the initial interlock inputs."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from drivers.protocol.messages import BY_NAME, KEY_SIZE

#: The simulator's documented development key (never a real device's key).
DEV_KEY = b"co2scan-sim-dev-key".ljust(KEY_SIZE, b"\0")

CLOCK_MODES = ("virtual", "realtime")

#: Input name -> (word meaning "permits emission", word meaning "blocks emission").
INPUT_WORDS: dict[str, tuple[str, str]] = {
    "key": ("on", "off"),
    "door": ("closed", "open"),
    "estop": ("released", "pressed"),
    "footswitch": ("down", "up"),
}
#: ``interlock`` is the remote interlock, wired to the door input.
INPUT_ALIASES = {"interlock": "door"}

#: Energy monitor drift (fault injection), percent of the delivered energy.
DRIFT_PERCENT = (-100.0, 100.0)

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def inputs_text() -> str:
    """The inputs and their words, for messages: ``key=on|off, door=closed|open, ...``."""
    words = {**INPUT_WORDS, **{alias: INPUT_WORDS[name] for alias, name in INPUT_ALIASES.items()}}
    return ", ".join(f"{name}={permit}|{block}" for name, (permit, block) in words.items())


def number(text: str) -> float | None:
    """A decimal number written out (``25``, ``-0.5``, ``1e-3``), else None: ``nan``, ``inf``,
    ``1_0`` and digits of other scripts are no settings anyone means."""
    return float(text) if _NUMBER.fullmatch(text) else None


def in_range(name: str, value: float, bounds: tuple[float, float]) -> float:
    """``value`` when it is finite and within ``bounds``; else ValueError naming ``name``
    and the range."""
    lo, hi = bounds
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{name}={value!r} outside {lo:g}..{hi:g}")
    return value


def parse_input(name: str, value: bool | str) -> tuple[str, bool]:
    """Normalise an input setting to (input name, True when it permits emission).

    Accepts booleans or the words of :data:`INPUT_WORDS` (``door=open``, ``footswitch=down``).
    """
    given, name = name, INPUT_ALIASES.get(name, name)
    if name not in INPUT_WORDS:
        raise ValueError(f"unknown input {given!r}; inputs: {inputs_text()}")
    if isinstance(value, bool):
        return name, value
    permit, block = INPUT_WORDS[name]
    if value not in (permit, block):
        raise ValueError(f"input {given}={value!r}: expected {given}={permit}|{block}")
    return name, value == permit


@dataclass
class SimConfig:
    """Everything that makes one simulated device; every field may be overridden.

    Limits are the factory limits reported by IDENTIFY_REPLY (SET_LIMITS may lower the working
    limits at run time). Inputs are True when they permit emission (key on, door closed,
    e-stop released, footswitch down).
    """

    serial: str = "SIM-0001"
    fw_version: tuple[int, int, int] = (1, 0, 0)
    field_size_um: int = 20_000
    usable_lsb_min: int = 1024
    usable_lsb_max: int = 64511
    energy_min_uj: int = 1000
    energy_max_uj: int = 200_000
    pulse_min_us: int = 10
    pulse_max_us: int = 2000
    rep_rate_max_hz: int = 1000
    rep_rate_hz: int = 100
    avg_power_max_mw: int = 30_000
    buffer_spots: int = 4096
    max_stack: int = 5
    watchdog_ms: int = 500
    heartbeat_ms: int = 100
    pre_emission_ms: int = 2000
    jump_speed_um_per_ms: int = 5000
    settle_us: int = 150
    noise_percent: float = 2.0
    drift_percent: float = 0.0
    temperature_dc: int = 250
    over_temperature_dc: int = 450
    seed: int = 0
    key: bool = True
    door: bool = True
    estop: bool = True
    footswitch: bool = False
    device_key: bytes = DEV_KEY
    clock: str = "virtual"

    def __post_init__(self) -> None:
        if self.clock not in CLOCK_MODES:
            raise ValueError(f"clock={self.clock!r}: expected one of {', '.join(CLOCK_MODES)}")
        if len(self.device_key) != KEY_SIZE:
            raise ValueError(f"device_key must be {KEY_SIZE} bytes, got {len(self.device_key)}")
        if not 1 <= self.rep_rate_hz <= self.rep_rate_max_hz:
            raise ValueError(f"rep_rate_hz={self.rep_rate_hz} outside 1..{self.rep_rate_max_hz}")
        for f in BY_NAME["IDENTIFY_REPLY"].fields:  # what the device reports must fit the wire
            bounds, value = f.bounds(), getattr(self, f.name, None)
            if bounds is None or not isinstance(value, int):
                continue
            if not bounds[0] <= value <= bounds[1]:
                raise ValueError(f"{f.name}={value} outside {bounds[0]}..{bounds[1]} "
                                 "(IDENTIFY_REPLY)")
        for small, large, strict in BY_NAME["IDENTIFY_REPLY"].order:
            a, b = getattr(self, small), getattr(self, large)
            if a >= b if strict else a > b:
                raise ValueError(f"{small}={a} must be {'below' if strict else 'at most'} "
                                 f"{large}={b} (IDENTIFY_REPLY)")

    @classmethod
    def from_query(cls, query: dict[str, str]) -> SimConfig:
        """Build a config from URL query options (``door=open``, ``seed=3``, ``clock=virtual``).

        Inputs take words (``key=off``, ``interlock=open``, ``footswitch=down``); scalar fields
        take their value; an unknown key raises ValueError listing the allowed keys.
        """
        scalars = {f.name: f for f in dataclasses.fields(cls) if f.type in ("int", "float", "str")}
        values: dict[str, object] = {}
        for key, text in query.items():
            if key in INPUT_WORDS or key in INPUT_ALIASES:
                name, permits = parse_input(key, text)
                values[name] = permits
            elif key in scalars:
                kind = {"int": int, "float": float, "str": str}[str(scalars[key].type)]
                try:
                    values[key] = kind(text)
                except ValueError:
                    raise ValueError(f"{key}={text!r}: expected {kind.__name__}") from None
            else:
                allowed = sorted({*scalars, *INPUT_WORDS, *INPUT_ALIASES})
                raise ValueError(f"unknown option {key!r}; allowed: {', '.join(allowed)}")
        return cls(**values)  # type: ignore[arg-type]
