"""Treatment scripts: one TOML file names the device, handpiece, operator, patient and passes.

Format (``tomllib``); every key is optional except at least one ``[[pass]]`` table::

    operator = "Dr A. Example"      # top-level keys come before the first table
    patient_ref = "2024-0117"
    pass_wait_s = 20                # cooling wait between passes (default 0)
    [device]
    url = "sim://"                  # default: the embedded simulator
    [handpiece]
    name = "spot120"                # default: the handpiece marked default
    [[pass]]                        # one table per pass, fired in file order
    pattern = "square"              # square, rectangle, circle, hexagon, line, polygon
    size_mm = 10                    # [width, height] for a rectangle
    density_percent = 5             # or pitch_um, or spots_per_cm2 (exactly one)
    depth_um = 300                  # or energy_mj (one pulse's energy)

Pass keys: ``pattern``, ``size_mm``, ``vertices_mm`` (polygon: [[x, y], ...]),
``rotation_deg``, ``grid`` (square, hex), ``density_percent`` | ``pitch_um`` |
``spots_per_cm2``, ``depth_um`` | ``energy_mj``, ``stack`` (pulses per spot: with ``energy_mj``
the depth is stack x one pulse's depth; the planner fires the fewest pulses reaching the depth
and a ``stack`` it would not fire is refused), ``order`` (raster, serpentine, random,
interlaced + ``interlace_k``, thermal-spread + ``min_step_um``, ``neighbour_um``,
``relax_ms``), ``feather_mm`` (+ ``feather_edge_density``, ``feather_edge_depth`` fractions),
``jitter_um``, ``seed`` and ``offset``. ``pattern``/``size_mm``/``vertices_mm``, the density,
the depth and ``order`` left out of a pass come from the handpiece's table in
``data/pass_defaults.toml`` (a group given in the pass replaces the whole default group); the
rest take the planner's defaults.

Passes and plans: a ``[[pass]]`` table with the same settings (seed included) as the one before
it continues that pass's :class:`~controller.scanpath.Plan` as its next pass, and its spots land
in the reservoirs the earlier passes left (the planner's offset mode). ``offset = false``
starts a new plan instead (same settings then fire the same positions again); ``offset =
true`` insists, and is refused when the settings differ. :meth:`TreatmentScript.plans` returns
one Plan per such group, so the passes of all plans, in order, are the ``[[pass]]`` tables.

Errors are :class:`ScriptError` naming ``pass n: key`` (``n`` counts ``[[pass]]`` tables from
1, as ``co2scan plan`` numbers the passes), the line, the value and what is allowed. A script names
no files: the device URL is limited to the simulator, TCP, USB and serial devices, so a script
cannot make the host open any other path.
"""

from __future__ import annotations

import difflib
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from controller.errors import SettingsError, pass_field
from controller.handpiece import get_handpiece
from controller.scanpath import Plan, build_plan
from controller.settings import (
    MAX_PASS_WAIT_S,
    MAX_PASSES,
    DensitySpec,
    Feathering,
    Handpiece,
    PassSettings,
    Pattern,
    ScanOrder,
    TreatmentSettings,
    density_allowed,
    integer,
    number,
    printable,
)
from controller.timing import GalvoTiming
from controller.validation import ClinicalEnvelope

#: Largest treatment script read (a 1,000-vertex polygon takes about 30 kB).
MAX_SCRIPT_BYTES = 1_000_000
PASS_DEFAULTS_FILE = Path(__file__).parent / "data" / "pass_defaults.toml"
DEFAULT_DEVICE_URL = "sim://"

TOP_KEYS = ("operator", "patient_ref", "pass_wait_s", "device", "handpiece", "pass")
DEVICE_KEYS = ("url",)
HANDPIECE_KEYS = ("name",)
INTERLACE_KEYS = ("interlace_k",)
SPREAD_KEYS = ("min_step_um", "neighbour_um", "relax_ms")
FEATHER_KEYS = ("feather_edge_density", "feather_edge_depth")
PASS_KEYS = ("pattern", "size_mm", "vertices_mm", "rotation_deg", "grid", "density_percent",
             "pitch_um", "spots_per_cm2", "depth_um", "energy_mj", "stack", "order",
             *INTERLACE_KEYS, *SPREAD_KEYS, "feather_mm", *FEATHER_KEYS, "jitter_um", "seed",
             "offset")
DENSITY_KEYS = ("density_percent", "pitch_um", "spots_per_cm2")
DEPTH_KEYS = ("depth_um", "energy_mj")
#: Keys a pass gives together: a default is used only when the pass gives none of its group.
DEFAULT_GROUPS = (("pattern", "size_mm", "vertices_mm"), DENSITY_KEYS, DEPTH_KEYS)

#: Setting field (as the settings classes name it in a SettingsError) -> script key.
FIELD_KEYS = {
    "pattern.shape": "pattern", "pattern.width_mm": "size_mm", "pattern.height_mm": "size_mm",
    "pattern.vertices_mm": "vertices_mm", "pattern.rotation_deg": "rotation_deg",
    "density.coverage_pct": "density_percent", "density.pitch_um": "pitch_um",
    "density.spots_per_cm2": "spots_per_cm2", "feathering.width_um": "feather_mm",
    "feathering.edge_density_fraction": "feather_edge_density",
    "feathering.edge_depth_fraction": "feather_edge_depth", "order.kind": "order",
    **{f"order.{k}": k for k in (*INTERLACE_KEYS, *SPREAD_KEYS)},
}
#: Serial device paths a script may name (anything else only through the operator's --device).
SERIAL_PATH = re.compile(
    r"/dev/tty[A-Za-z]+\d+|/dev/cu\.[\w.-]+|/dev/serial/by-(id|path)/[\w.:+-]+|COM\d+")
SCRIPT_SCHEMES = ("sim", "socket", "usb")

#: One part of a TOML key: bare, "basic" (with escapes) or 'literal'.
_KEY_PART = r"""(?:[\w-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_HEADER = re.compile(r"\s*\[\[?\s*([\w.-]+)\s*\]\]?\s*(#.*)?$")
#: A key line: its first part (a dotted key ``a.b = 1`` sets the table ``a``), then ``=``.
_KEY = re.compile(rf"\s*({_KEY_PART})(?:\s*\.\s*{_KEY_PART})*\s*=")
_TOML_LINE = re.compile(r"at line (\d+)")


class ScriptError(SettingsError):
    """A treatment script is unreadable or invalid; ``field`` is the script key
    (e.g. ``pass 2: density_percent``, of the second ``[[pass]]`` table), ``line`` its 1-based
    line when known."""

    def __init__(self, path: Path, line: int | None, field: str, value: object, allowed: str,
                 reason: str = "") -> None:
        super().__init__(field, value, allowed, reason)
        self.path = path
        self.line = line
        self.args = (f"{path}{f':{line}' if line else ''}: {self.args[0]}",)


@dataclass(frozen=True)
class PassSource:
    """Where one ``[[pass]]`` table's values came from, to point errors at the script."""

    index: int
    line: int | None
    key_lines: Mapping[str, int]
    values: Mapping[str, Any]
    defaulted: frozenset[str]
    handpiece: str

    def blame(self, path: Path, exc: SettingsError) -> ScriptError:
        """``exc`` (named by a settings field or a script key) as this pass's script key."""
        key = FIELD_KEYS.get(exc.field, exc.field)
        allowed, reason, name = exc.allowed, exc.reason, exc.field.rsplit(".", 1)[-1]
        if key == "depth_um" and "energy_mj" in self.values:
            key = "energy_mj"
        elif "_" in name and name != key:  # the range and reason in the script's own words
            allowed, reason = (re.sub(rf"\b{re.escape(name)}\b", key, text)
                               for text in (allowed, reason))
        line = self.key_lines.get(key)
        if key in self.defaulted:
            reason += "; " * bool(reason) + (f"from the {self.handpiece} defaults in "
                                             f"{PASS_DEFAULTS_FILE.name}")
        elif key not in self.values and key in FEATHER_KEYS:  # the planner's default
            reason = "the default, not set in the script" + "; " * bool(reason) + reason
            line = self.key_lines.get(next((k for k in (*DEPTH_KEYS, "feather_mm")
                                            if k in self.key_lines), ""))
        return ScriptError(path, line or self.line, pass_field(self.index, key), exc.value,
                           allowed, reason)


@dataclass(frozen=True)
class ScriptPass:
    """One ``[[pass]]`` table: its settings (one pass), seed and ``offset`` wish."""

    settings: TreatmentSettings
    seed: int
    offset: bool | None
    source: PassSource

    @property
    def index(self) -> int:
        """Position among the script's passes (0 = first [[pass]] table)."""
        return self.source.index


@dataclass(frozen=True)
class TreatmentScript:
    """A validated treatment script; :meth:`plans` turns its passes into plans."""

    path: Path
    device_url: str
    handpiece: Handpiece
    operator: str
    patient_ref: str
    passes: tuple[ScriptPass, ...]
    pass_wait_s: float = 0.0

    def groups(self) -> list[tuple[ScriptPass, ...]]:
        """The passes split into plans: a pass joins the previous one's plan when it repeats
        its settings and does not say ``offset = false``."""
        groups: list[list[ScriptPass]] = []
        for p in self.passes:
            if groups and p.offset is not False and _same(p, groups[-1][-1]) is None:
                groups[-1].append(p)
            else:
                groups.append([p])
        return [tuple(g) for g in groups]

    def plans(self, timing: GalvoTiming | Callable[[TreatmentSettings], GalvoTiming] | None = None
              ) -> list[Plan]:
        """One Plan per group of passes (see :meth:`groups`), in firing order.

        ``timing`` is one GalvoTiming for every plan, or a function of each plan's settings
        (e.g. the device's limits with the spot rate kept under its average power); None
        plans with the default timing. Raises ScriptError for settings the device geometry
        cannot honour (pattern outside the galvo field, a pass without spots, thermal-spread
        rules that cannot hold).
        """
        plans = []
        for group in self.groups():
            first = group[0]
            settings = replace(first.settings, passes=PassSettings(count=len(group)))
            try:
                limits = timing(settings) if callable(timing) else timing
                plans.append(build_plan(settings, limits, first.seed))
            except SettingsError as exc:
                raise first.source.blame(self.path, exc) from exc
        return plans


def _same(a: ScriptPass, b: ScriptPass) -> str | None:
    """None if the two passes have the same settings, else which key differs."""
    va, vb = a.source.values, b.source.values
    key = next((k for k in sorted({*va, *vb} - {"offset"}) if va.get(k) != vb.get(k)), None)
    return None if key is None else f"{key} differs from pass {b.index + 1}"


def _suggest(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f"unknown key, did you mean {close[0]!r}?" if close else "unknown key"


def key_lines(text: str) -> dict[tuple[str, int, str], int]:
    """1-based line of each table header (key ``""``) and each key, by (table, index, key).

    ``index`` counts repeated headers (``[[pass]]``) from 0. A light scan, not a parser: the
    text has already parsed, and multi-line strings are skipped.
    """
    lines: dict[tuple[str, int, str], int] = {}
    seen: dict[str, int] = {}
    table, index, quote = "", 0, ""
    for n, line in enumerate(text.splitlines(), 1):
        if quote:
            if line.count(quote) % 2:
                quote = ""
            continue
        if header := _HEADER.match(line):
            table = header.group(1)
            index = seen.get(table, 0)
            seen[table] = index + 1
            lines.setdefault((table, index, ""), n)
        elif key := _KEY.match(line):
            lines.setdefault((table, index, _key_name(key.group(1))), n)
        quote = next((q for q in ('"""', "'''") if line.count(q) % 2), "")
    return lines


def _key_name(part: str) -> str:
    """A key part as the parsed table names it: a quoted one unquoted, its escapes read."""
    if part[0] not in "\"'":
        return part
    try:
        return next(iter(tomllib.loads(f"{part} = 0")))
    except tomllib.TOMLDecodeError:  # not a key after all (the text parsed as a whole)
        return part


def _check_keys(path: Path, lines: dict, table: tuple[str, int], prefix: str, data: dict,
                allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise ScriptError(path, lines.get((*table, key)), prefix + key, data[key],
                              "keys " + ", ".join(allowed), _suggest(key, allowed))


def _device_url(url: object) -> str:
    allowed = ("sim://[?options], socket://HOST:PORT, usb://VID:PID[?options], or a serial "
               "device (/dev/ttyUSB0-like, /dev/cu.*, /dev/serial/by-id/*, COMn; serial:// too); "
               "other paths only through the operator's --device option")
    url = printable("device.url", url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced "[" in the host
        raise SettingsError("device.url", url, allowed, str(exc)) from None
    scheme = parts.scheme.lower() if "://" in url else ""
    if scheme in SCRIPT_SCHEMES:
        return url
    path = parts.netloc + parts.path if scheme == "serial" else url
    if scheme not in ("", "serial") or not SERIAL_PATH.fullmatch(path):
        raise SettingsError("device.url", url, allowed)
    return url


def _pass_defaults(handpiece: str) -> dict[str, object]:
    """The handpiece's table of ``pass_defaults.toml`` (empty if it has none)."""
    with PASS_DEFAULTS_FILE.open("rb") as fh:
        table = tomllib.load(fh).get(handpiece, {})
    unknown = sorted(set(table) - set(PASS_KEYS) | set(table) & {"seed", "offset"})
    if unknown:
        raise SettingsError(f"{PASS_DEFAULTS_FILE.name}:[{handpiece}].{unknown[0]}",
                            table[unknown[0]], "pass keys other than seed and offset")
    return table


def _with_defaults(given: dict, defaults: dict) -> tuple[dict, frozenset[str]]:
    groups = {k: g for g in DEFAULT_GROUPS for k in g}
    used = {k for k in defaults if not any(g in given for g in groups.get(k, (k,)))}
    return {**{k: defaults[k] for k in used}, **given}, frozenset(used)


def _given(values: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """``values`` renamed from script keys to dataclass fields, for the keys present."""
    return {field: values[key] for key, field in names.items() if key in values}


def _one_of(values: dict, group: tuple[str, ...], handpiece: str) -> None:
    given = [k for k in group if k in values]
    if len(given) > 1:
        raise SettingsError(given[1], values[given[1]], "exactly one of " + ", ".join(group),
                            f"{given[0]} is given too")
    if not given:
        raise SettingsError(group[0], None, "one of " + ", ".join(group),
                            f"missing, and handpiece {handpiece} has no default")


def _only_with(values: dict, keys: tuple[str, ...], condition: bool, needs: str) -> None:
    for k in keys:
        if k in values and not condition:
            raise SettingsError(k, values[k], f"only with {needs}")


def _pattern(values: dict) -> Pattern:
    shape = values.get("pattern", Pattern.shape)
    fields = _given(values, {"pattern": "shape", "rotation_deg": "rotation_deg"})
    if "vertices_mm" in values:
        vertices = values["vertices_mm"]
        if not isinstance(vertices, list) or not all(
                isinstance(v, list) and len(v) == 2 for v in vertices):
            raise SettingsError("vertices_mm", vertices, "a list of [x, y] points in mm")
        fields["vertices_mm"] = tuple((v[0], v[1]) for v in vertices)
    if "size_mm" in values:
        size = values["size_mm"]
        if shape == "polygon":
            raise SettingsError("size_mm", size, "no size_mm for a polygon (vertices_mm give it)")
        if shape == "rectangle":
            if not isinstance(size, list) or len(size) != 2:
                raise SettingsError("size_mm", size, "[width, height] in mm for a rectangle")
            fields["width_mm"], fields["height_mm"] = size
        else:
            if isinstance(size, list):
                raise SettingsError("size_mm", size, f"one number (mm) for a {shape}; "
                                                     "[width, height] only for a rectangle")
            fields["width_mm"] = size
    elif shape != "polygon":
        raise SettingsError("size_mm", None, f"a size in mm for a {shape} ([width, height] for"
                            " a rectangle)", "missing: a pass naming its pattern gives its size")
    return Pattern(**fields)


def _depth_um(values: dict, hp: Handpiece) -> float:
    stack = integer("stack", values["stack"], 1, hp.max_stack) if "stack" in values else 1
    if "energy_mj" not in values:
        return values["depth_um"]
    energy_mj = number("energy_mj", values["energy_mj"], 0, float("inf"), lo_open=True,
                       unit="mJ")
    return float(hp.depth_for_energy_um([energy_mj], "energy_mj")[0]) * stack


def _usable_density(exc: SettingsError, hp: Handpiece, grid: str) -> SettingsError:
    """``exc`` (a density beyond the geometry) with the range a pass can use in the end: the
    clinical envelope caps one pass's coverage below the spots touching (35 % against 78.5 %
    for spot120 on a square grid), and naming the geometric range would invite values that
    only the plan check refuses."""
    try:
        cap_pct = ClinicalEnvelope.load().max_coverage_percent
    except SettingsError:  # an unreadable envelope is reported where it is used
        return exc
    name = exc.field.rsplit(".", 1)[-1]
    return SettingsError(exc.field, exc.value,
                         density_allowed(name, hp.spot_diameter_um, grid, cap_pct), exc.reason)


def _check_stack(values: dict, settings: TreatmentSettings) -> None:
    if "stack" not in values:
        return
    hp = settings.handpiece
    planned = int(hp.dose_for_depth([settings.depth_um])[2][0])
    if planned != values["stack"]:
        raise SettingsError(
            "stack", values["stack"],
            f"{planned} for {settings.depth_um:.0f} µm with handpiece {hp.name}",
            f"the planner fires the fewest pulses that reach the depth, each at most "
            f"{hp.single_pulse_depth_um[1]:.0f} µm")


def pass_settings(values: dict, hp: Handpiece) -> tuple[TreatmentSettings, int, bool | None]:
    """Settings (one pass), seed and ``offset`` of one ``[[pass]]`` table with its defaults
    filled in; SettingsError names the script key."""
    for group in (DENSITY_KEYS, DEPTH_KEYS):
        _one_of(values, group, hp.name)
    order = values.get("order", ScanOrder.kind)
    _only_with(values, INTERLACE_KEYS, order == "interlaced", "order = 'interlaced'")
    _only_with(values, SPREAD_KEYS, order == "thermal-spread", "order = 'thermal-spread'")
    _only_with(values, FEATHER_KEYS, "feather_mm" in values, "feather_mm")
    feathering = None
    if "feather_mm" in values:
        width_mm = number("feather_mm", values["feather_mm"], 0, float("inf"), lo_open=True,
                          unit="mm")
        feathering = Feathering(width_um=width_mm * 1000.0, **_given(values, {
            "feather_edge_density": "edge_density_fraction",
            "feather_edge_depth": "edge_depth_fraction"}))
    pattern = _pattern(values)
    density = DensitySpec(**_given(values, {"density_percent": "coverage_pct",
                                            "pitch_um": "pitch_um",
                                            "spots_per_cm2": "spots_per_cm2"}))
    depth_um = _depth_um(values, hp)
    order = ScanOrder(**_given(values, {"order": "kind", **{k: k for k in
                                                           (*INTERLACE_KEYS, *SPREAD_KEYS)}}))
    try:
        settings = TreatmentSettings(hp, pattern, density, depth_um, feathering=feathering,
                                     order=order, **_given(values, {"grid": "grid",
                                                                    "jitter_um": "jitter_um"}))
    except SettingsError as exc:
        if exc.field.startswith("density."):  # beyond what the spots' geometry permits
            raise _usable_density(exc, hp, values.get("grid", "square")) from exc
        raise
    _check_stack(values, settings)
    seed = integer("seed", values.get("seed", 0), 0, 2**64 - 1)
    offset = values.get("offset")
    if offset is not None and not isinstance(offset, bool):
        raise SettingsError("offset", offset, "true or false")
    return settings, seed, offset


def _table(path: Path, lines: dict, data: dict, name: str, keys: tuple[str, ...]) -> dict:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ScriptError(path, lines.get(("", 0, name)), name, table,
                          f"a [{name}] table with keys " + ", ".join(keys))
    _check_keys(path, lines, (name, 0), f"{name}.", table, keys)
    return table


def _header(path: Path, lines: dict, data: dict) -> tuple[str, Handpiece, str, str, float]:
    """Device URL, handpiece, operator, patient reference and pass wait of a parsed script."""
    device = _table(path, lines, data, "device", DEVICE_KEYS)
    handpiece = _table(path, lines, data, "handpiece", HANDPIECE_KEYS)
    where = {"device.url": ("device", 0, "url"), "handpiece.name": ("handpiece", 0, "name"),
             "operator": ("", 0, "operator"), "patient_ref": ("", 0, "patient_ref"),
             "pass_wait_s": ("", 0, "pass_wait_s")}
    try:
        url = _device_url(device.get("url", DEFAULT_DEVICE_URL))
        hp = get_handpiece(printable("handpiece.name", handpiece["name"])
                           if "name" in handpiece else None)
        operator = printable("operator", data.get("operator", ""))
        patient_ref = printable("patient_ref", data.get("patient_ref", ""))
        wait_s = number("pass_wait_s", data.get("pass_wait_s", 0.0), 0.0, MAX_PASS_WAIT_S,
                        unit="s")
    except SettingsError as exc:
        raise ScriptError(path, lines.get(where.get(exc.field, ("", 0, ""))), exc.field,
                          exc.value, exc.allowed, exc.reason) from exc
    return url, hp, operator, patient_ref, wait_s


def parse_script(text: str, path: Path) -> TreatmentScript:
    """Validate a script's text (``path`` only names it in errors)."""
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:  # deep nesting: RecursionError
        found = _TOML_LINE.search(str(exc))
        line = int(found.group(1)) if found else None
        rows = text.splitlines()
        source = rows[line - 1].strip() if line and line <= len(rows) else None
        raise ScriptError(path, line, "toml", source, "TOML syntax (https://toml.io)",
                          str(exc)) from exc
    lines = key_lines(text)
    _check_keys(path, lines, ("", 0), "", data, TOP_KEYS)
    url, hp, operator, patient_ref, wait_s = _header(path, lines, data)
    tables = data.get("pass")
    if not isinstance(tables, list) or not 1 <= len(tables) <= MAX_PASSES or not all(
            isinstance(t, dict) for t in tables):
        raise ScriptError(path, lines.get(("", 0, "pass")), "pass", tables,
                          f"1..{MAX_PASSES} [[pass]] tables",
                          "the script has no [[pass]] table" if tables is None else "")
    defaults = _pass_defaults(hp.name)
    passes: list[ScriptPass] = []
    for i, table in enumerate(tables):
        _check_keys(path, lines, ("pass", i), pass_field(i, ""), table, PASS_KEYS)
        values, defaulted = _with_defaults(table, defaults)
        pass_source = PassSource(
            i, lines.get(("pass", i, "")),
            {k: n for (t, j, k), n in lines.items() if t == "pass" and j == i and k},
            values, defaulted, hp.name)
        try:
            p = ScriptPass(*pass_settings(values, hp), pass_source)
            differ = _same(p, passes[-1]) if passes else "the first pass has no pass before it"
            if p.offset and differ is not None:
                raise SettingsError("offset", True, "true only on a pass with the same settings"
                                    " as the pass before", differ)
        except SettingsError as exc:
            raise pass_source.blame(path, exc) from exc
        passes.append(p)
    return TreatmentScript(path, url, hp, operator, patient_ref, tuple(passes), wait_s)


def load_script(path: str | Path) -> TreatmentScript:
    """Read and validate a treatment script; raises ScriptError (key, line, value, allowed)."""
    path = Path(path)
    allowed = f"a readable UTF-8 TOML file of at most {MAX_SCRIPT_BYTES:,} bytes"
    try:
        if stat.S_ISFIFO(mode := path.stat().st_mode) or stat.S_ISSOCK(mode):
            raise OSError(f"{path} is a FIFO or socket, not a file")  # open() would block
        with open(path, "rb") as f:
            data = f.read(MAX_SCRIPT_BYTES + 1)  # /dev/zero, a huge file: no further
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptError(path, None, "script", str(path), allowed, str(exc)) from exc
    if len(data) > MAX_SCRIPT_BYTES:
        raise ScriptError(path, None, "script", str(path), allowed, "larger")
    return parse_script(text, path)


def describe_pattern(pattern: Pattern) -> str:
    """Short text of a pattern's shape and size, e.g. ``rectangle 12×8 mm``."""
    if pattern.shape == "polygon":
        assert pattern.vertices_mm is not None
        text = f"polygon {len(pattern.vertices_mm)} pts"
    elif pattern.shape == "rectangle":
        text = f"rectangle {pattern.width_mm:g}×{pattern.height_mm:g} mm"
    else:
        text = f"{pattern.shape} {pattern.width_mm:g} mm"
    return text + (f" {pattern.rotation_deg:g}°" if pattern.rotation_deg else "")


def span(lo: float, hi: float, fmt: str) -> str:
    """``lo-hi`` formatted with ``fmt``, or one value when both print the same."""
    return f"{lo:{fmt}}" if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}}-{hi:{fmt}}"
