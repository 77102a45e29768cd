"""Types of the compiled fire times in ``_firing.pyx`` (same signature as the reference,
:func:`sim_hw.firing_ref.fire_times`; the positions int64, ``pulse_us`` uint16 and
``stack`` uint8 arrays)."""

import numpy as np

from sim_hw.galvo import Galvo

def fire_times(first_s: float, mirror_x: np.ndarray, mirror_y: np.ndarray,
               pulse_us: np.ndarray, stack: np.ndarray, period_s: float,
               galvo: Galvo) -> np.ndarray: ...
