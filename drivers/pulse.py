"""Pulse generator driver: energy, pulse width, stacking, repetition rate, aiming beam."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from drivers.checks import check_range, whole
from drivers.errors import DeviceError, DeviceTimeout, LimitError
from drivers.info import DeviceLimits, average_power_mw
from drivers.link import Link

#: STATUS_REPORT ``rep_rate_hz`` for a rate in use above what its u16 holds (rule 11).
_RATE_ABOVE_U16 = 0xFFFF


class PulseGenerator:
    """Checks pulse settings against the device limits and sets the spot rate.

    ``rep_rate_hz`` is the spot rate the device uses: the one ``set_rep_rate`` last set, else
    the one the device's STATUS_REPORT gave when it was opened (a device that never got a
    PULSE_SETTINGS uses 100 Hz, not 0: firmware_protocol.md section 5, rule 11), lowered with
    the limits as the device lowers it; None when unknown (no answer to that request).
    """

    def __init__(self, link: Link, limits: DeviceLimits) -> None:
        self._link = link
        self._limits = limits
        self.rep_rate_hz: int | None = self._rate_in_use() if link is not None else None

    @property
    def limits(self) -> DeviceLimits:
        """The device's limits as last read or set; setting them lowers ``rep_rate_hz`` to a new
        maximum below it, as the device does."""
        return self._limits

    @limits.setter
    def limits(self, limits: DeviceLimits) -> None:
        # SET_LIMITS lowers the rate in use to a new maximum below it (rule 11)
        self._limits = limits
        if self.rep_rate_hz is not None:
            self.rep_rate_hz = min(self.rep_rate_hz, limits.rep_rate_max_hz)

    def _rate_in_use(self) -> int | None:
        """The device's spot rate in use, from its STATUS_REPORT; None if it gave none."""
        try:
            rate = int(self._link.request("STATUS_REQUEST")["rep_rate_hz"])
        except DeviceError:
            return None
        if rate >= _RATE_ABOVE_U16 or rate < 1:
            return self._limits.rep_rate_max_hz  # "65535 if higher": at most the maximum
        return min(rate, self._limits.rep_rate_max_hz)

    def check(self, energy_uj: ArrayLike, pulse_us: ArrayLike, stack: ArrayLike,
              rep_rate_hz: float | None = None) -> None:
        """Raise LimitError naming the first value outside the device's limits.

        The average power (energy x stack x rate) is checked at ``rep_rate_hz``, else at the
        rate in use (``self.rep_rate_hz``); when that is unknown, at the device's
        ``rep_rate_max_hz``, the highest rate it could fire at (the conservative choice).
        """
        lim = self.limits
        energy = np.asarray(energy_uj)
        stacks = np.asarray(stack)
        check_range("energy_uj", energy, lim.energy_min_uj, lim.energy_max_uj, "µJ")
        check_range("pulse_us", np.asarray(pulse_us), lim.pulse_min_us, lim.pulse_max_us, "µs")
        check_range("stack", stacks, 1, lim.max_stack, "")
        if rep_rate_hz is not None:
            rate = whole("rep_rate_hz", rep_rate_hz, 1, lim.rep_rate_max_hz, "Hz")
        elif self.rep_rate_hz is not None:
            rate = self.rep_rate_hz
        else:
            rate = lim.rep_rate_max_hz
        if energy.size:
            power_mw = average_power_mw(energy.astype(np.float64), stacks, rate)
            check_range("average power (energy_uj x stack x rep_rate_hz)", power_mw, 0,
                         lim.avg_power_max_mw, "mW")

    def set_rep_rate(self, rep_rate_hz: int) -> None:
        """Spot rate while emitting: a whole number of Hz, 1..``limits.rep_rate_max_hz`` (a
        float of integral value is taken; anything else raises LimitError naming the range)."""
        rate = whole("rep_rate_hz", rep_rate_hz, 1, self.limits.rep_rate_max_hz, "Hz")
        try:
            self._link.request("PULSE_SETTINGS", rep_rate_hz=rate)
        except DeviceTimeout:
            self.rep_rate_hz = None  # the device may or may not have taken it
            raise
        self.rep_rate_hz = rate

    def aiming_beam(self, on: bool) -> None:
        """Switch the visible aiming beam on (True) or off (False); anything but a bool (a
        string such as "off", a number) raises LimitError and switches nothing."""
        if not isinstance(on, bool | np.bool_):
            raise LimitError("aiming_beam(on)", repr(on), "True or False")
        self._link.request("AIMING_BEAM", on=int(bool(on)))
