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

#: Energy monitor drift (fault injection) and noise, percent of the delivered energy.
DRIFT_PERCENT = (-100.0, 100.0)
NOISE_PERCENT = (0.0, 100.0)
_WIRE = {(message, f.name): f for message in ("IDENTIFY_REPLY", "STATUS_REPORT")
         for f in BY_NAME[message].fields}
#: The laser head temperature as STATUS_REPORT carries it (0.1 °C).
TEMPERATURE_DC = _WIRE["STATUS_REPORT", "temperature_dc"].bounds() or (0, 0)
#: What IDENTIFY_REPLY's serial field carries: printable ASCII, NUL padded to this size.
SERIAL_SIZE = _WIRE["IDENTIFY_REPLY", "serial"].size
#: Ranges of the numeric settings IDENTIFY_REPLY does not carry (the over-temperature limit
#: stays above the lowest temperature: fault overtemp=off sets the one just below it).
BOUNDS: dict[str, tuple[float, float]] = {
    "noise_percent": NOISE_PERCENT,
    "drift_percent": DRIFT_PERCENT,
    "temperature_dc": TEMPERATURE_DC,
    "over_temperature_dc": (TEMPERATURE_DC[0] + 1, TEMPERATURE_DC[1]),
    "seed": (0, 0xFFFFFFFF),
}
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)

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
        if not (0 < len(self.serial) <= SERIAL_SIZE and self.serial.isascii()
                and self.serial.isprintable()):
            raise ValueError(f"serial={self.serial!r}: expected 1..{SERIAL_SIZE} printable "
                             "ASCII characters (IDENTIFY_REPLY)")
        if len(self.fw_version) != 3 or not all(0 <= v <= 0xFF for v in self.fw_version):
            raise ValueError(f"fw_version={self.fw_version!r}: expected (major, minor, patch), "
                             "each 0..255 (IDENTIFY_REPLY)")
        kinds = {f.name: f.type for f in dataclasses.fields(self)}
        for name, bounds in self.bounds().items():
            value = getattr(self, name)
            if not _within(value, bounds, integer=kinds[name] == "int"):
                raise ValueError(f"{name}={value!r} outside {_range_text(bounds)}"
                                 + (" (IDENTIFY_REPLY)" if name in _IDENTIFIED else ""))
        for small, large, strict in BY_NAME["IDENTIFY_REPLY"].order:
            a, b = getattr(self, small), getattr(self, large)
            if a >= b if strict else a > b:
                raise ValueError(f"{small}={a} must be {'below' if strict else 'at most'} "
                                 f"{large}={b} (IDENTIFY_REPLY)")

    def bounds(self) -> dict[str, tuple[float, float]]:
        """The range of each numeric setting: what IDENTIFY_REPLY can carry, :data:`BOUNDS`,
        and the spot rate up to the configured maximum."""
        return {**FIXED_BOUNDS, "rep_rate_hz": (1, self.rep_rate_max_hz)}

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
                values[key] = _scalar(key, str(scalars[key].type), text)
            else:
                raise ValueError(f"unknown option {key!r}; allowed: "
                                 f"{', '.join(cls.option_names())}")
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def option_names(cls) -> list[str]:
        """The keys :meth:`from_query` takes."""
        scalars = {f.name for f in dataclasses.fields(cls) if f.type in ("int", "float", "str")}
        return sorted({*scalars, *INPUT_WORDS, *INPUT_ALIASES})


#: The settings IDENTIFY_REPLY reports, so bounded by its fields.
_IDENTIFIED = frozenset(f.name for f in dataclasses.fields(SimConfig)
                        if ("IDENTIFY_REPLY", f.name) in _WIRE and f.name != "serial")


#: The range of each numeric setting but the spot rate (whose maximum is a setting too).
FIXED_BOUNDS: dict[str, tuple[float, float]] = {
    **{name: _WIRE["IDENTIFY_REPLY", name].bounds() or (0, 0) for name in _IDENTIFIED},
    **BOUNDS}


def _within(value: object, bounds: tuple[float, float], integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if integer and not isinstance(value, int):
        return False
    return math.isfinite(value) and bounds[0] <= value <= bounds[1]


def _range_text(bounds: tuple[float, float]) -> str:
    return f"{bounds[0]:g}..{bounds[1]:g}" if isinstance(bounds[0], float) else (
        f"{bounds[0]}..{bounds[1]}")


def _scalar(key: str, kind: str, text: str) -> int | float | str:
    """An option's text as its field's type; ValueError names the option and, for a number,
    its range."""
    if kind == "str":
        return text
    bounds = FIXED_BOUNDS.get(key)
    allowed = (f" {_range_text(bounds)}" if bounds else
               " 1..rep_rate_max_hz" if key == "rep_rate_hz" else "")
    if kind == "int":
        if not _INTEGER.fullmatch(text):
            raise ValueError(f"{key}={text!r}: expected an integer{allowed}")
        return int(text)
    value = number(text)
    if value is None:
        raise ValueError(f"{key}={text!r}: expected a number{allowed}")
    return value
