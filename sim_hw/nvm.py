"""The simulated device's non-volatile memory (firmware_protocol.md section 5, rules 1 and 9).

One :class:`NonVolatile` holds everything that survives a reset and a power loss: the working
limits, the calibration, the device key, the spot rate in use, the pass record and the
fired-index memory. The device works on it directly (the laser shares its ``limits``, the galvo
its ``calibration``), so there is no second copy to keep in step. :meth:`NonVolatile.to_json`
and :meth:`NonVolatile.from_json` give its image for a state file (``sim_hw.state_file``).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from drivers.protocol.messages import BY_NAME, KEY_SIZE, NO_INDEX
from sim_hw.config import SimConfig
from sim_hw.galvo import Calibration
from sim_hw.laser import WorkingLimits

#: Recent (plan checksum, pass index) pairs whose highest fired index is kept (rule 1).
NV_FIRED_PLANS = 16
#: What a state file says it is, and the version of its layout this code reads and writes.
STATE_FORMAT = "co2scan-sim-nvm"
STATE_VERSION = 1
_U32 = (0, 0xFFFFFFFF)


@dataclass
class PassRecord:
    """The pass record of rule 9: the loaded pass and how far it got."""

    pass_index: int
    spot_count: int
    plan_checksum: int
    first_index: int
    delivered_count: int = 0
    last_delivered: int = NO_INDEX

    def resume_index(self) -> int:
        """The index a resumed pass continues at: after the last one fired."""
        return self.first_index if self.last_delivered == NO_INDEX else self.last_delivered + 1


@dataclass
class NonVolatile:
    """Everything the device keeps across a reset and a power loss.

    ``initialised`` is False only for a blank (factory) memory: the device sets it at its
    first power-on, so every later start knows it is one (rule 9).
    """

    limits: WorkingLimits
    calibration: Calibration
    device_key: bytes
    rep_rate_hz: int
    pass_record: PassRecord | None = None
    #: highest index fired per (plan checksum, pass index), least recently fired first
    fired: OrderedDict[tuple[int, int], int] = field(default_factory=OrderedDict)
    initialised: bool = False

    @classmethod
    def factory(cls, config: SimConfig) -> NonVolatile:
        """A blank memory: factory limits, calibration and key, no pass, nothing fired."""
        return cls(WorkingLimits(config.energy_max_uj, config.rep_rate_max_hz,
                                 config.avg_power_max_mw),
                   Calibration(config.field_size_um), config.device_key, config.rep_rate_hz)

    def fired_through(self, plan_checksum: int, pass_index: int) -> int:
        """The highest index fired of a pass, or NO_INDEX."""
        return self.fired.get((plan_checksum, pass_index), NO_INDEX)

    def remember_fired(self, plan_checksum: int, pass_index: int, index: int) -> None:
        """Spot ``index`` of the pass fired: the pair becomes the most recent one, and the
        least recent is forgotten beyond :data:`NV_FIRED_PLANS`."""
        key = (plan_checksum, pass_index)
        fired = self.fired
        fired[key] = max(fired.get(key, index), index)
        fired.move_to_end(key)
        while len(fired) > NV_FIRED_PLANS:
            fired.popitem(last=False)

    # -- the image in a state file ----------------------------------------------------------

    def to_json(self, serial: str) -> str:
        """The memory as a versioned JSON document, for the device ``serial``."""
        image = {
            "format": STATE_FORMAT, "version": STATE_VERSION, "serial": serial,
            "limits": asdict(self.limits), "calibration": asdict(self.calibration),
            "device_key": self.device_key.hex(), "rep_rate_hz": self.rep_rate_hz,
            "pass_record": None if self.pass_record is None else asdict(self.pass_record),
            "fired": [[checksum, pass_index, index]
                      for (checksum, pass_index), index in self.fired.items()],
        }
        return json.dumps(image, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, config: SimConfig) -> NonVolatile:
        """The memory of a document :meth:`to_json` wrote, for the device ``config``
        describes (an initialised memory). ValueError says what is wrong: not JSON, another
        format or version, another device's serial, a key missing or unknown, a value of the
        wrong type or outside what the device could have stored, a pass record that does not
        fit itself or the fired-index memory (its highest index, its place in the memory's
        order)."""
        try:
            image = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
        if not isinstance(image, dict) or image.get("format") != STATE_FORMAT:
            raise ValueError(f"not a simulator state file (no \"format\": \"{STATE_FORMAT}\")")
        if image.get("version") != STATE_VERSION:
            raise ValueError(f"format version {image.get('version')!r}; this co2scan reads "
                             f"version {STATE_VERSION} only")
        _keys("the file", image, ("format", "version", "serial", "limits", "calibration",
                                  "device_key", "rep_rate_hz", "pass_record", "fired"))
        if image["serial"] != config.serial:
            raise ValueError(f"it belongs to device {image['serial']!r}, this simulator is "
                             f"{config.serial!r} (--option serial=...)")
        factory = cls.factory(config)
        limits = WorkingLimits(**_ints("limits", image["limits"], {
            name: (1, getattr(factory.limits, name)) for name in _names(WorkingLimits)}))
        energy_floor = min(config.energy_min_uj, factory.limits.energy_max_uj)
        if limits.energy_max_uj < energy_floor:
            raise ValueError(f"limits.energy_max_uj = {limits.energy_max_uj} below "
                             f"energy_min_uj {energy_floor}")
        calibration = Calibration(**_ints("calibration", image["calibration"], {
            f.name: _or_factory(f.bounds(), getattr(factory.calibration, f.name))
            for f in BY_NAME["SET_CALIBRATION"].fields}))
        key = image["device_key"]
        try:
            device_key = bytes.fromhex(key) if isinstance(key, str) else b""
        except ValueError:
            device_key = b""
        if len(device_key) != KEY_SIZE:
            raise ValueError(f"device_key: expected {2 * KEY_SIZE} hex digits")
        rep_rate_hz = _int("rep_rate_hz", image["rep_rate_hz"], (1, limits.rep_rate_max_hz))
        record, fired = _pass_record(image["pass_record"]), _fired(image["fired"])
        if record is not None:
            _fired_fits(record, fired)
        return cls(limits, calibration, device_key, rep_rate_hz, record, fired,
                   initialised=True)


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _or_factory(bounds: tuple[int, int] | None, factory: int) -> tuple[int, int]:
    """The range a stored calibration value may take: what SET_CALIBRATION accepts, widened
    to the factory value (a configuration may set one outside it)."""
    lo, hi = bounds or _U32
    return min(lo, factory), max(hi, factory)


def _keys(where: str, value: object, names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object with {', '.join(names)}")
    missing = [n for n in names if n not in value]
    unknown = [k for k in value if k not in names]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown {', '.join(map(str, unknown))}")
    if problems:
        raise ValueError(f"{where}: {'; '.join(problems)}")
    return value


def _int(where: str, value: object, bounds: tuple[int, int]) -> int:
    lo, hi = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{where} = {value!r}: expected an integer {lo}..{hi}")
    return value


def _ints(where: str, value: object, bounds: dict[str, tuple[int, int]]) -> dict[str, int]:
    values = _keys(where, value, tuple(bounds))
    return {name: _int(f"{where}.{name}", values[name], b) for name, b in bounds.items()}


def _pass_record(value: object) -> PassRecord | None:
    """The pass record as the device writes it: a pass fires its spots in order from
    ``first_index``, so ``last_delivered`` is NO_INDEX (nothing fired) or within
    first_index..spot_count-1, and ``delivered_count`` counts the spots from ``first_index``
    through it."""
    if value is None:
        return None
    values = _keys("pass_record", value, _names(PassRecord))
    spot_count = _int("pass_record.spot_count", values["spot_count"], (1, _U32[1]))
    record = PassRecord(**_ints("pass_record", values, {
        "pass_index": (0, 0xFF), "spot_count": (1, _U32[1]), "plan_checksum": _U32,
        "first_index": (0, spot_count - 1), "delivered_count": (0, spot_count),
        "last_delivered": _U32}))
    first, last = record.first_index, record.last_delivered
    if last != NO_INDEX and not first <= last < spot_count:
        raise ValueError(f"pass_record.last_delivered = {last}: expected {NO_INDEX} (nothing "
                         f"fired) or {first}..{spot_count - 1} (first_index..spot_count-1)")
    fired = 0 if last == NO_INDEX else last - first + 1
    if record.delivered_count != fired:
        why = ("last_delivered is NO_INDEX: nothing fired" if last == NO_INDEX else
               "last_delivered - first_index + 1: a pass fires its spots in order from "
               "first_index")
        raise ValueError(f"pass_record.delivered_count = {record.delivered_count}: expected "
                         f"{fired} ({why})")
    return record


def _fired(value: object) -> OrderedDict[tuple[int, int], int]:
    if not isinstance(value, list) or len(value) > NV_FIRED_PLANS:
        raise ValueError(f"fired: expected a list of at most {NV_FIRED_PLANS} "
                         "[plan_checksum, pass_index, highest index fired]")
    fired: OrderedDict[tuple[int, int], int] = OrderedDict()
    for position, entry in enumerate(value):
        where = f"fired[{position}]"
        if not isinstance(entry, list) or len(entry) != 3:
            raise ValueError(f"{where}: expected [plan_checksum, pass_index, highest index]")
        key = (_int(f"{where}[0]", entry[0], _U32), _int(f"{where}[1]", entry[1], (0, 0xFF)))
        if key in fired:
            raise ValueError(f"{where}: plan {key[0]:#010x} pass {key[1]} listed twice")
        fired[key] = _int(f"{where}[2]", entry[2], (0, NO_INDEX - 1))
    return fired


def _fired_fits(record: PassRecord, fired: OrderedDict[tuple[int, int], int]) -> None:
    """The fired-index memory is written with the pass record's progress (rule 1): the pass
    that fired has its last spot there, as the most recent pair (every spot fired moves its
    pair to the end, and only a LOAD_PLAN, which resets the record, lets another pair fire),
    and one that has not fired starts above any spot of it fired before (LOAD_PLAN refuses
    to start at or below one). The order matters: the least recent pair is the first
    forgotten, so a fired pass listed early would be forgotten first and could fire again."""
    key = (record.plan_checksum, record.pass_index)
    where = f"fired: plan {key[0]:#010x} pass {key[1]} (the pass record's)"
    last, highest = record.last_delivered, fired.get(key)
    if last != NO_INDEX and highest != last:
        raise ValueError(f"{where}: {'no entry' if highest is None else highest}; expected "
                         f"{last}, the pass record's last_delivered")
    if last != NO_INDEX and next(reversed(fired)) != key:
        raise ValueError(f"{where}: at fired[{list(fired).index(key)}]; expected last, "
                         f"fired[{len(fired) - 1}] (the list runs from the least to the most "
                         "recently fired pair, and the pass record's last_delivered fired "
                         "after every other pair's spots)")
    if last == NO_INDEX and highest is not None and highest >= record.first_index:
        raise ValueError(f"{where}: {highest}; expected none or below the pass record's "
                         f"first_index {record.first_index} (nothing of it fired yet)")
