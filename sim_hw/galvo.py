"""Galvo scanner model: calibrated positions, distance-dependent jump time, a stuck fault."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from drivers.protocol.messages import GALVO_CENTRE_LSB, GALVO_FULL_SCALE_LSB
from sim_hw.config import SimConfig


@dataclass
class Calibration:
    """SET_CALIBRATION: field size over the full LSB range, gain (ppm) and offset (LSB) per axis."""

    field_size_um: int
    x_gain_ppm: int = 0
    y_gain_ppm: int = 0
    x_offset_lsb: int = 0
    y_offset_lsb: int = 0


def _correct(lsb: np.ndarray | int, gain_ppm: int, offset_lsb: int) -> np.ndarray:
    host = np.asarray(lsb, np.int64)
    if gain_ppm == 0:  # the scaling below would give the host position back exactly
        return host + offset_lsb if offset_lsb else host
    centred = host - GALVO_CENTRE_LSB
    return np.rint(centred * (1 + gain_ppm / 1e6)).astype(np.int64) + GALVO_CENTRE_LSB + offset_lsb


class Galvo:
    """Two mirrors driven to calibrated positions.

    A jump takes ``distance / jump_speed + settle`` where the distance is the larger of the two
    axis moves (the mirrors move independently); a zero move takes no time. A stuck galvo never
    reaches its target; the device sees that when the move should have completed.
    """

    def __init__(self, config: SimConfig, calibration: Calibration | None = None) -> None:
        self.usable_lsb = (config.usable_lsb_min, config.usable_lsb_max)
        self.speed_um_per_ms = config.jump_speed_um_per_ms
        self.settle_us = config.settle_us
        #: the device's (in its non-volatile memory), else the factory one
        self.calibration = calibration or Calibration(config.field_size_um)
        self.x_lsb = GALVO_CENTRE_LSB
        self.y_lsb = GALVO_CENTRE_LSB
        self.stuck = False

    def corrected(self, x_lsb: np.ndarray | int, y_lsb: np.ndarray | int) -> tuple[
            np.ndarray, np.ndarray]:
        """Mirror positions for host positions, after the device's calibration (vectorised)."""
        cal = self.calibration
        return (_correct(x_lsb, cal.x_gain_ppm, cal.x_offset_lsb),
                _correct(y_lsb, cal.y_gain_ppm, cal.y_offset_lsb))

    def reachable_axis(self, lsb: np.ndarray | int, axis: str) -> np.ndarray:
        """Per target on one axis ("x" or "y"): the host position and the corrected position
        both lie in the usable range."""
        cal = self.calibration
        gain_ppm, offset_lsb = ((cal.x_gain_ppm, cal.x_offset_lsb) if axis == "x"
                                else (cal.y_gain_ppm, cal.y_offset_lsb))
        lo, hi = self.usable_lsb
        host = np.asarray(lsb, np.int64)
        mirror = _correct(host, gain_ppm, offset_lsb)
        return (host >= lo) & (host <= hi) & (mirror >= lo) & (mirror <= hi)

    def reachable(self, x_lsb: np.ndarray | int, y_lsb: np.ndarray | int) -> np.ndarray:
        """Per target: both axes reachable."""
        return self.reachable_axis(x_lsb, "x") & self.reachable_axis(y_lsb, "y")

    def all_reachable(self, x_range: tuple[int, int], y_range: tuple[int, int],
                      mirror_x_lsb: np.ndarray, mirror_y_lsb: np.ndarray) -> bool:
        """``reachable(x_lsb, y_lsb).all()`` from the host positions' (lowest, highest) per
        axis, given the corrected (mirror) positions."""
        lo, hi = self.usable_lsb
        cal = self.calibration
        ranges = [x_range, y_range]
        if cal.x_gain_ppm or cal.y_gain_ppm or cal.x_offset_lsb or cal.y_offset_lsb:
            ranges += [(int(v.min()), int(v.max())) for v in (mirror_x_lsb, mirror_y_lsb)]
        return all(lo <= low and high <= hi for low, high in ranges)

    def jump_time_us(self, mirror_x_lsb: int, mirror_y_lsb: int) -> int:
        """Time to reach and settle on a mirror position from where the mirrors are now."""
        move_lsb = max(abs(mirror_x_lsb - self.x_lsb), abs(mirror_y_lsb - self.y_lsb))
        if move_lsb == 0:
            return 0
        move_um = move_lsb * self.calibration.field_size_um / GALVO_FULL_SCALE_LSB
        return math.ceil(move_um * 1000 / self.speed_um_per_ms) + self.settle_us

    def path_times_us(self, mirror_x_lsb: np.ndarray, mirror_y_lsb: np.ndarray) -> np.ndarray:
        """Per consecutive pair of mirror positions: time to jump from one to the next and
        settle (``len - 1`` values), as :meth:`jump_time_us` would give it."""
        move_lsb = np.maximum(np.abs(mirror_x_lsb[1:] - mirror_x_lsb[:-1]),
                              np.abs(mirror_y_lsb[1:] - mirror_y_lsb[:-1]))
        return self._travel_us(move_lsb)

    def _travel_us(self, move_lsb: np.ndarray) -> np.ndarray:
        """:meth:`jump_time_us` for many moves: the same operations, element by element."""
        move_um = move_lsb * self.calibration.field_size_um / GALVO_FULL_SCALE_LSB
        travel_us = np.ceil(move_um * 1000 / self.speed_um_per_ms).astype(np.int64)
        return np.where(move_lsb == 0, 0, travel_us + self.settle_us)

    def move(self, mirror_x_lsb: int, mirror_y_lsb: int) -> bool:
        """Drive the mirrors to a (corrected) position; False when they did not get there."""
        if self.stuck:
            return False
        self.x_lsb, self.y_lsb = mirror_x_lsb, mirror_y_lsb
        return True
