"""Pulse generator driver: energy, pulse width, stacking, repetition rate, aiming beam."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from drivers.errors import LimitError
from drivers.info import DeviceLimits
from drivers.link import Link


def _check_range(name: str, values: np.ndarray, lo: float, hi: float, unit: str) -> None:
    bad = (values < lo) | (values > hi)
    if bad.any():
        raise LimitError(name, values[bad].flat[0].item(), f"{lo}..{hi} {unit}".rstrip())


class PulseGenerator:
    """Checks pulse settings against the device limits and sets the spot rate."""

    def __init__(self, link: Link, limits: DeviceLimits) -> None:
        self._link = link
        self.limits = limits
        self.rep_rate_hz = 0

    def check(self, energy_uj: ArrayLike, pulse_us: ArrayLike, stack: ArrayLike,
              rep_rate_hz: float | None = None) -> None:
        """Raise LimitError naming the first value outside the device's limits."""
        lim = self.limits
        energy = np.asarray(energy_uj)
        stacks = np.asarray(stack)
        _check_range("energy_uj", energy, lim.energy_min_uj, lim.energy_max_uj, "µJ")
        _check_range("pulse_us", np.asarray(pulse_us), lim.pulse_min_us, lim.pulse_max_us, "µs")
        _check_range("stack", stacks, 1, lim.max_stack, "")
        rate = self.rep_rate_hz if rep_rate_hz is None else rep_rate_hz
        if rate and energy.size:
            power_mw = energy.astype(np.float64) * stacks * rate / 1000.0
            _check_range("average power (energy_uj x stack x rep_rate_hz)", power_mw, 0,
                         lim.avg_power_max_mw, "mW")

    def set_rep_rate(self, rep_rate_hz: int) -> None:
        """Spot rate while emitting."""
        if not 1 <= rep_rate_hz <= self.limits.rep_rate_max_hz:
            raise LimitError("rep_rate_hz", rep_rate_hz, f"1..{self.limits.rep_rate_max_hz} Hz")
        self._link.request("PULSE_SETTINGS", rep_rate_hz=int(rep_rate_hz))
        self.rep_rate_hz = int(rep_rate_hz)

    def aiming_beam(self, on: bool) -> None:
        """Switch the visible aiming beam."""
        self._link.request("AIMING_BEAM", on=int(bool(on)))
