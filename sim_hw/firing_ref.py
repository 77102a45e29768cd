"""Fire times of consecutive buffered spots, numpy: the reference for the compiled
:func:`sim_hw._firing.fire_times`, which gives the same float64 values bit for bit."""

from __future__ import annotations

import numpy as np

from sim_hw.galvo import Galvo
from sim_hw.laser import Laser


def fire_times(first_s: float, mirror_x: np.ndarray, mirror_y: np.ndarray,
               pulse_us: np.ndarray, stack: np.ndarray, period_s: float,
               galvo: Galvo) -> np.ndarray:
    """Fire times of spots at mirror positions ``mirror_x``/``mirror_y`` (n values), the first
    at ``first_s``: each next one after ``period_s`` and after the previous spot's pulses
    (``pulse_us``/``stack``, n - 1 values) plus the galvo jump to it, summed in order."""
    jump_s = galvo.path_times_us(mirror_x, mirror_y) / 1e6
    busy_s = Laser.spot_duration_s(pulse_us, stack) + jump_s
    return np.cumsum(np.concatenate(([first_s], np.maximum(period_s, busy_s))))
