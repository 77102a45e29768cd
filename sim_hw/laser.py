"""Pulse generator, shutter, aiming beam and energy monitor of the simulated device."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from sim_hw.config import SimConfig


@dataclass
class WorkingLimits:
    """Limits in force; SET_LIMITS may lower them below the factory limits."""

    energy_max_uj: int
    rep_rate_max_hz: int
    avg_power_max_mw: int


class Laser:
    """CO2 pulse generator with an energy monitor.

    The monitor reads ``energy_uj * stack * (1 + drift) * (1 + noise)``, noise uniform within
    ``noise_percent`` (seeded), drift a fixed calibration error (fault injection).
    """

    def __init__(self, config: SimConfig, rng: np.random.Generator,
                 limits: WorkingLimits | None = None) -> None:
        self.factory = WorkingLimits(config.energy_max_uj, config.rep_rate_max_hz,
                                     config.avg_power_max_mw)
        #: the working limits: the device's (in its non-volatile memory), else the factory ones
        self.limits = limits or dataclasses.replace(self.factory)
        self.energy_min_uj = config.energy_min_uj
        self.pulse_us_range = (config.pulse_min_us, config.pulse_max_us)
        self.max_stack = config.max_stack
        self.noise_percent = config.noise_percent
        self.drift_percent = config.drift_percent
        self.temperature_dc = config.temperature_dc
        self.over_temperature_dc = config.over_temperature_dc
        self.shutter_open = False
        self.aiming_beam = False
        self._rng = rng

    @property
    def over_temperature(self) -> bool:
        """The head is at or above its over-temperature limit (the device faults)."""
        return self.temperature_dc >= self.over_temperature_dc

    def spots_allowed(self, energy_uj: np.ndarray, pulse_us: np.ndarray, stack: np.ndarray,
                      rep_rate_hz: int) -> np.ndarray:
        """Per spot: energy, pulse, stack and average power are within the working limits."""
        energy = np.asarray(energy_uj, np.int64)
        stack = np.asarray(stack, np.int64)
        pulse = np.asarray(pulse_us)
        power_uw = energy * stack * rep_rate_hz
        return ((energy >= self.energy_min_uj) & (energy <= self.limits.energy_max_uj)
                & (pulse >= self.pulse_us_range[0]) & (pulse <= self.pulse_us_range[1])
                & (stack >= 1) & (stack <= self.max_stack)
                & (power_uw <= self.limits.avg_power_max_mw * 1000))

    def all_allowed(self, extremes: dict[str, tuple[int, int]], energy_uj: np.ndarray,
                    stack: np.ndarray, rep_rate_hz: int) -> bool:
        """``spots_allowed(...).all()`` for a non-empty batch, from the (lowest, highest) of
        its ``energy_uj``, ``pulse_us`` and ``stack``; the average power needs the highest
        product only when the highest energy times the highest stack would exceed it."""
        (energy_lo, energy_hi), (pulse_lo, pulse_hi) = extremes["energy_uj"], extremes["pulse_us"]
        stack_lo, stack_hi = extremes["stack"]
        limit_uw = self.limits.avg_power_max_mw * 1000
        if not (self.energy_min_uj <= energy_lo and energy_hi <= self.limits.energy_max_uj
                and self.pulse_us_range[0] <= pulse_lo and pulse_hi <= self.pulse_us_range[1]
                and stack_lo >= 1 and stack_hi <= self.max_stack):
            return False
        if energy_hi * stack_hi * rep_rate_hz <= limit_uw:
            return True
        peak_uj = int(np.multiply(energy_uj, stack, dtype=np.int64).max())
        return peak_uj * rep_rate_hz <= limit_uw

    @staticmethod
    def spot_duration_s(pulse_us: np.ndarray | int, stack: np.ndarray | int) -> np.ndarray | float:
        """Time the stacked pulses of a spot take (per spot for arrays)."""
        return np.multiply(pulse_us, stack, dtype=np.int64) / 1e6

    def fire(self, energy_uj: np.ndarray, stack: np.ndarray) -> np.ndarray:
        """Fire spots in order; returns the monitor's readings (µJ, sum over each stack)."""
        if not self.shutter_open:
            raise RuntimeError("laser fired with the shutter closed")
        set_uj = np.multiply(energy_uj, stack, dtype=np.int64)
        if not (self.noise_percent or self.drift_percent):  # an exact monitor: the same values
            return np.minimum(set_uj, 0xFFFFFFFF)  # as below, without the float round trip
        noise = self._rng.uniform(-self.noise_percent, self.noise_percent, len(energy_uj)) / 100
        reading = set_uj * (1 + self.drift_percent / 100) * (1 + noise)
        return np.clip(np.rint(reading), 0, 0xFFFFFFFF).astype(np.int64)
