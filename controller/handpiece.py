"""Handpiece data files (TOML): one file per handpiece in ``controller/data/handpieces``.

A file holds the scalar fields of :class:`controller.settings.Handpiece` at top level, an
optional ``default = true`` (exactly one file is the default) and a ``[calibration]`` table
with equal-length columns ``energy_mj``, ``depth_um`` and ``coag_um``.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

from controller.errors import SettingsError
from controller.settings import Handpiece

HANDPIECE_DIR = Path(__file__).parent / "data" / "handpieces"
CALIBRATION_COLUMNS = ("energy_mj", "depth_um", "coag_um")
_SCALARS = tuple(f.name for f in fields(Handpiece) if f.name not in CALIBRATION_COLUMNS)
_REQUIRED = tuple(f for f in _SCALARS if f != "calibration_source")


def _read(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"handpiece file {path}", None, "a readable TOML file",
                            str(exc)) from exc


def load_handpiece(path: Path) -> Handpiece:
    """Parse and validate one handpiece file; errors name the file and the field."""
    data = _read(path)
    data.pop("default", None)
    calibration = data.pop("calibration", None)
    where = f"{path.name}:"
    if not isinstance(calibration, dict) or set(calibration) != set(CALIBRATION_COLUMNS):
        raise SettingsError(where + "calibration", calibration,
                            "a [calibration] table with columns " + ", ".join(CALIBRATION_COLUMNS))
    unknown = sorted(set(data) - set(_SCALARS))
    if unknown:
        raise SettingsError(where + unknown[0], data[unknown[0]],
                            "known fields: " + ", ".join((*_SCALARS, "default", "calibration")))
    missing = [f for f in _REQUIRED if f not in data]
    if missing:
        raise SettingsError(where + missing[0], None, "present (required field)")
    for col in CALIBRATION_COLUMNS:
        if not isinstance(calibration[col], list):
            raise SettingsError(where + col, calibration[col], "a list of numbers")
    return Handpiece(**data, energy_mj=tuple(calibration["energy_mj"]),
                     depth_um=tuple(calibration["depth_um"]), coag_um=tuple(calibration["coag_um"]))


def available_handpieces(directory: Path = HANDPIECE_DIR) -> dict[str, Path]:
    """Handpiece name -> data file, for every ``*.toml`` in ``directory``."""
    found: dict[str, Path] = {}
    for path in sorted(directory.glob("*.toml")):
        name = _read(path).get("name")
        if name in found:
            raise SettingsError("handpiece.name", name, "unique across handpiece files",
                                f"in {found[name].name} and {path.name}")
        found[str(name)] = path
    return found


def get_handpiece(name: str | None = None, directory: Path = HANDPIECE_DIR) -> Handpiece:
    """The named handpiece, or the one whose file says ``default = true``."""
    paths = available_handpieces(directory)
    if name is None:
        defaults = [n for n, p in paths.items() if _read(p).get("default") is True]
        if len(defaults) != 1:
            raise SettingsError("handpiece default", defaults,
                                f"exactly one file in {directory} with default = true")
        name = defaults[0]
    if name not in paths:
        raise SettingsError("handpiece.name", name, "one of " + ", ".join(sorted(paths)))
    return load_handpiece(paths[name])
