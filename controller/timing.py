"""Galvo and pulse timing model used to estimate when each spot fires and how long a pass takes.

Model (per spot, in firing order): the mirrors jump from the previous spot (a bang-bang move
under ``jump_accel_um_per_us2`` capped at ``jump_speed_um_per_us``: 2*sqrt(d/a) for short
jumps, d/v + v/a for long ones), settle for ``settle_us``, then fire ``stack`` pulses back to
back. Two spots are at least one spot period (1 / spot rate) apart: a spot fires at the later
of the previous one + the period and the end of the previous one's pulses + the jump and
settling (firmware_protocol.md section 5, rule 4, as the device fires). The first spot jumps
from the field centre. The defaults are placeholders; the session fills the values from
the device's identify reply.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from numpy.typing import NDArray

from controller import _scanpath
from controller.errors import SettingsError
from controller.settings import number


@dataclass(frozen=True)
class GalvoTiming:
    """Device limits that bound timing and pattern size."""

    max_spot_rate_hz: float = 1000.0
    jump_speed_um_per_us: float = 10.0
    jump_accel_um_per_us2: float = 0.05
    settle_us: float = 100.0
    field_um: float = 20_000.0

    def __post_init__(self) -> None:
        number("timing.max_spot_rate_hz", self.max_spot_rate_hz, 0, 1e6, lo_open=True,
               unit="Hz")
        number("timing.jump_speed_um_per_us", self.jump_speed_um_per_us, 0, math.inf,
               lo_open=True, unit="µm/µs")
        number("timing.jump_accel_um_per_us2", self.jump_accel_um_per_us2, 0, math.inf,
               lo_open=True, unit="µm/µs^2")
        number("timing.settle_us", self.settle_us, 0, 1e6, unit="µs")
        number("timing.field_um", self.field_um, 0, math.inf, lo_open=True, unit="µm")

    def to_record(self) -> dict[str, float]:
        """The timing as the treatment record stores it (see :meth:`from_record`)."""
        return asdict(self)

    @classmethod
    def from_record(cls, stored: object) -> GalvoTiming:
        """The timing a treatment record stored; anything else (not a mapping, unknown or
        missing keys, values out of range) raises SettingsError naming it."""
        expected = {f.name for f in fields(cls)}
        if not isinstance(stored, dict) or set(stored) != expected:
            raise SettingsError("galvo", stored, f"a mapping of {', '.join(sorted(expected))}")
        return cls(**stored)


def fire_times_us(
    x_um: NDArray[np.float64], y_um: NDArray[np.float64], pulse_us: NDArray[np.int32],
    stack: NDArray[np.int32], spot_rate_hz: float, timing: GalvoTiming,
) -> tuple[NDArray[np.float64], float, float]:
    """Start time of each spot's first pulse (µs from pass start), pass duration (µs) and
    galvo travel (µm), for spots given in firing order at ``spot_rate_hz``."""
    return _scanpath.fire_times(
        np.ascontiguousarray(x_um), np.ascontiguousarray(y_um), pulse_us, stack,
        1e6 / spot_rate_hz, timing.jump_speed_um_per_us, timing.jump_accel_um_per_us2,
        timing.settle_us)
